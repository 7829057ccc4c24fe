/* lib/base/blockset: the front ends' copy of the blocks. A table of networks and a table of
 * addresses to look up (blocked or not, and by which network), then changes and expiry, and
 * a set of 100,000 host blocks as a resync brings them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "base/blockset.h"

#define NOW 1000000
#define LATER (NOW + 60000)

typedef struct put_case {
    const char *network;
    int64_t until_ms;
    const char *reason;
    int rc;
} put_case_t;

static const put_case_t put_cases[] = {
    { "192.0.2.7/32", LATER, "host", 0 },
    { "192.0.2.77/24", LATER, "net24", 0 },      /* host bits ignored: 192.0.2.0/24 */
    { "198.51.100.9", LATER, "bare", 0 },        /* a bare address is a /32 */
    { "203.0.113.0/24", NOW - 1, "ended", 0 },
    { "10.0.0.0/8", LATER, "net8", 0 },
    { "2001:db8:1:2::/64", LATER, "v6-64", 0 },
    { "2001:db8:aa00::/40", LATER, "v6-40", 0 },
    { "0.0.0.0/0", NOW, "ends now", 0 },         /* until == now: not blocked */
    { "192.0.2.0/33", LATER, "bad prefix", -1 },
    { "not-an-address/24", LATER, "bad", -1 },
    { "", LATER, "empty", -1 },
};

typedef struct lookup_case {
    const char *addr;
    const char *reason; /* NULL: not blocked */
} lookup_case_t;

static const lookup_case_t lookups[] = {
    { "192.0.2.7", "host" },            /* the /32 before the /24 that also holds it */
    { "192.0.2.8", "net24" },
    { "192.0.3.1", NULL },
    { "198.51.100.9", "bare" },
    { "198.51.100.10", NULL },
    { "203.0.113.5", NULL },            /* its block has ended */
    { "10.255.0.1", "net8" },
    { "11.0.0.1", NULL },
    { "2001:db8:1:2::99", "v6-64" },
    { "2001:db8:1:3::1", NULL },
    { "2001:db8:aaff:1::1", "v6-40" },
    { "2001:db8:ab00::1", NULL },
    { "::ffff:192.0.2.7", "host" },     /* IPv4-mapped is IPv4 */
    { "::1", NULL },
};

static blockset_t *filled(void)
{
    blockset_t *s = blockset_create();
    assert_non_null(s);
    for (size_t i = 0; i < sizeof put_cases / sizeof put_cases[0]; i++) {
        const put_case_t *c = &put_cases[i];
        assert_int_equal(blockset_put(s, c->network, c->until_ms, c->reason), c->rc);
    }
    return s;
}

static void check_lookups(const blockset_t *s, const lookup_case_t *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        net_addr_t a;
        assert_int_equal(net_addr_parse(cases[i].addr, &a), 0);
        char reason[64] = "";
        int64_t until = 0;
        bool blocked = blockset_lookup(s, &a, NOW, reason, sizeof reason, &until);
        if (blocked != (cases[i].reason != NULL))
            fail_msg("%s: blocked=%d, want %s", cases[i].addr, blocked,
                     cases[i].reason ? cases[i].reason : "not blocked");
        if (cases[i].reason) {
            assert_string_equal(reason, cases[i].reason);
            assert_int_equal(until, LATER);
        }
    }
}

static void test_lookup_table(void **state)
{
    (void)state;
    blockset_t *s = filled();
    assert_int_equal(blockset_count(s), 8);
    check_lookups(s, lookups, sizeof lookups / sizeof lookups[0]);
    blockset_destroy(&s);
    assert_null(s);
    blockset_destroy(&s); /* harmless */
}

static void test_changes(void **state)
{
    (void)state;
    blockset_t *s = filled();
    /* Replacing keeps one entry and takes the new reason and end. */
    assert_int_equal(blockset_put(s, "192.0.2.7", LATER, "host again"), 0);
    assert_int_equal(blockset_count(s), 8);
    /* The /32 lifted: the /24 holds the address; then the /24 lifted too: the address is
     * free. */
    assert_false(blockset_remove(s, "192.0.2.8/32"));
    assert_true(blockset_remove(s, "192.0.2.7/32"));
    assert_false(blockset_remove(s, "192.0.2.7/32"));
    const lookup_case_t after_lift[] = { { "192.0.2.7", "net24" }, { "2001:db8:1:2::1", "v6-64" } };
    check_lookups(s, after_lift, 2);
    assert_true(blockset_remove(s, "192.0.2.0/24"));
    assert_true(blockset_remove(s, "2001:db8:1:2:ffff::/64")); /* host bits ignored */
    const lookup_case_t after_all[] = { { "192.0.2.7", NULL }, { "2001:db8:1:2::1", NULL },
                                        { "10.1.1.1", "net8" } };
    check_lookups(s, after_all, 3);
    assert_false(blockset_remove(s, "junk"));
    /* Expiry removes the ended entries (at or before now), only those. */
    assert_int_equal(blockset_expire(s, NOW), 2);
    assert_int_equal(blockset_count(s), 3);
    const lookup_case_t after_expiry[] = { { "10.1.1.1", "net8" }, { "198.51.100.9", "bare" } };
    check_lookups(s, after_expiry, 2);
    blockset_destroy(&s);
}

static void test_long_reason_cut(void **state)
{
    (void)state;
    blockset_t *s = blockset_create();
    char reason[600];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    assert_int_equal(blockset_put(s, "192.0.2.1", LATER, reason), 0);
    assert_int_equal(blockset_put(s, "192.0.2.2", LATER, NULL), 0);
    net_addr_t a;
    char got[1024];
    assert_int_equal(net_addr_parse("192.0.2.1", &a), 0);
    assert_true(blockset_lookup(s, &a, NOW, got, sizeof got, NULL));
    assert_int_equal(strlen(got), BLOCKSET_REASON_MAX);
    assert_int_equal(net_addr_parse("192.0.2.2", &a), 0);
    assert_true(blockset_lookup(s, &a, NOW, NULL, 0, NULL));
    blockset_destroy(&s);
}

/* 100,000 host blocks (50,000 IPv4 /32, 50,000 IPv6 /64), as the limiter makes them. */
static void test_many(void **state)
{
    (void)state;
    blockset_t *s = blockset_create();
    char net[64];
    for (int i = 0; i < 50000; i++) {
        snprintf(net, sizeof net, "10.%d.%d.%d/32", i >> 16, (i >> 8) & 0xff, i & 0xff);
        assert_int_equal(blockset_put(s, net, LATER, "v4"), 0);
        snprintf(net, sizeof net, "2001:db8:%x:%x::/64", i >> 16, i & 0xffff);
        assert_int_equal(blockset_put(s, net, LATER, "v6"), 0);
    }
    assert_int_equal(blockset_count(s), 100000);
    const lookup_case_t many[] = {
        { "10.0.0.0", "v4" }, { "10.0.195.79", "v4" }, { "10.0.195.80", NULL },
        { "2001:db8:0:c34f::1", "v6" }, { "2001:db8:0:c350::1", NULL },
    };
    for (size_t i = 0; i < sizeof many / sizeof many[0]; i++) {
        net_addr_t a;
        assert_int_equal(net_addr_parse(many[i].addr, &a), 0);
        char reason[8] = "";
        bool blocked = blockset_lookup(s, &a, NOW, reason, sizeof reason, NULL);
        if (blocked != (many[i].reason != NULL) || (blocked && strcmp(reason, many[i].reason)))
            fail_msg("%s: blocked=%d reason=%s", many[i].addr, blocked, reason);
    }
    for (int i = 0; i < 50000; i++) {
        snprintf(net, sizeof net, "10.%d.%d.%d", i >> 16, (i >> 8) & 0xff, i & 0xff);
        assert_true(blockset_remove(s, net));
    }
    assert_int_equal(blockset_count(s), 50000);
    assert_int_equal(blockset_expire(s, LATER), 50000);
    assert_int_equal(blockset_count(s), 0);
    blockset_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_table),
        cmocka_unit_test(test_changes),
        cmocka_unit_test(test_long_reason_cut),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
