/* smtpd's envelope address parser and relay decision, table-driven. Each address case is
 * also fed through the line reader byte by byte as a full command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "base/line.h"
#include "smtpd.h"

typedef struct path_case {
    const char *arg;     /* what follows "RCPT TO:" */
    bool allow_null;
    int code;            /* 0 = parses; else the reply code */
    const char *address; /* normalised address when it parses */
    bool literal;
    const char *params;
} path_case_t;

static const path_case_t path_cases[] = {
    { "<alice@example.test>", false, 0, "alice@example.test", false, "" },
    { " <alice@example.test>", false, 0, "alice@example.test", false, "" },
    { "<Alice@EXAMPLE.Test>", false, 0, "Alice@example.test", false, "" },
    { "<a.b+tag@sub.example.test> SIZE=100", true, 0, "a.b+tag@sub.example.test", false, "SIZE=100" },
    { "<>", true, 0, "", false, "" },
    { "<>", false, 501, NULL, false, NULL },
    { "alice@example.test", false, 501, NULL, false, NULL },
    { "<alice@example.test", false, 501, NULL, false, NULL },
    { "<alice@example.test>extra", false, 501, NULL, false, NULL },
    { "<alice>", false, 501, NULL, false, NULL },
    { "<@relay.example:user@other.example>", false, 553, NULL, false, NULL },
    { "<@a,@b:user@other.example>", false, 553, NULL, false, NULL },
    { "<\"user@other.example\"@example.test>", false, 553, NULL, false, NULL },
    { "<\"alice\"@example.test>", false, 0, "alice@example.test", false, "" },
    { "<user@other.example.>", false, 501, NULL, false, NULL },
    { "<user@.example>", false, 501, NULL, false, NULL },
    { "<user@-bad.example>", false, 501, NULL, false, NULL },
    { "<user@exa_mple.test>", false, 501, NULL, false, NULL },
    { "<alice@example.test@other.example>", false, 501, NULL, false, NULL },
    { "<.alice@example.test>", false, 501, NULL, false, NULL },
    { "<al..ice@example.test>", false, 501, NULL, false, NULL },
    { "<user@[192.0.2.1]>", false, 0, "user@[192.0.2.1]", true, "" },
    { "<user@[IPv6:2001:db8::1]>", false, 0, "user@[ipv6:2001:db8::1]", true, "" },
    { "<user@[300.1.1.1]>", false, 501, NULL, false, NULL },
    { "<user%other.example@example.test>", false, 0, "user%other.example@example.test", false, "" },
    { "<other.example!user@example.test>", false, 0, "other.example!user@example.test", false, "" },
    { "<\xc3\xa9@example.test>", false, 501, NULL, false, NULL },
};

static void check_path(const path_case_t *c, const char *arg)
{
    smtp_path_t p;
    char err[256] = "";
    int rc = smtp_path_parse(arg, c->allow_null, &p, err, sizeof err);
    print_message("case: %s -> %s\n", c->arg, rc == 0 ? p.address : err);
    if (c->code == 0) {
        assert_int_equal(rc, 0);
        assert_string_equal(p.address, c->address);
        assert_int_equal(p.literal, c->literal);
        assert_string_equal(p.params, c->params);
    } else {
        assert_int_equal(rc, -1);
        assert_int_equal(atoi(err), c->code);
    }
}

static void test_path_whole(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof path_cases / sizeof path_cases[0]; i++)
        check_path(&path_cases[i], path_cases[i].arg);
}

/* The same cases arriving one byte at a time as "RCPT TO:...\r\n". */
static void test_path_bytewise(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof path_cases / sizeof path_cases[0]; i++) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "RCPT TO:%s\r\n", path_cases[i].arg);
        line_reader_t r;
        line_reader_init(&r, SMTP_LINE_MAX);
        buf_t in;
        buf_init(&in);
        int got = 0;
        line_t l;
        for (size_t k = 0; cmd[k]; k++) {
            buf_append(&in, &cmd[k], 1);
            got = line_read(&r, &in, &l);
            if (got)
                break;
        }
        assert_int_equal(got, 1);
        assert_int_equal(l.flags, 0);
        assert_memory_equal(l.text, "RCPT TO:", 8);
        check_path(&path_cases[i], l.text + 8);
        buf_free(&in);
    }
}

static void test_relay_decision(void **state)
{
    (void)state;
    static const struct {
        const char *mode;
        bool authenticated, listed, allowed;
    } cases[] = {
        { "none", false, false, false },   { "none", false, true, false },
        { "none", true, false, true },     { "select", false, false, false },
        { "select", false, true, true },   { "select", true, false, true },
        { "anyone", false, false, true },  { "anyone", true, true, true },
        { "bogus", false, true, false },   { NULL, false, true, false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("relay: mode=%s auth=%d listed=%d\n", cases[i].mode ? cases[i].mode : "(unset)",
                      cases[i].authenticated, cases[i].listed);
        assert_int_equal(smtp_may_relay(smtp_relay_mode(cases[i].mode), cases[i].authenticated,
                                        cases[i].listed),
                         cases[i].allowed);
    }
}

static void test_routing_local_parts(void **state)
{
    (void)state;
    assert_true(smtp_local_part_routes("user%other.example"));
    assert_true(smtp_local_part_routes("other.example!user"));
    assert_false(smtp_local_part_routes("alice"));
    assert_false(smtp_local_part_routes("a.b+tag"));
}

static void test_cidr(void **state)
{
    (void)state;
    static const struct {
        const char *cidr, *addr;
        bool inside;
    } cases[] = {
        { "192.0.2.0/24", "192.0.2.77", true },   { "192.0.2.0/24", "192.0.3.1", false },
        { "10.0.0.1", "10.0.0.1", true },         { "10.0.0.1", "10.0.0.2", false },
        { "0.0.0.0/0", "203.0.113.9", true },     { "2001:db8::/32", "2001:db8:1::5", true },
        { "2001:db8::/32", "2001:db9::1", false }, { "192.0.2.0/24", "::ffff:192.0.2.5", true },
        { "192.0.2.0/24", "2001:db8::1", false },  { "127.0.0.2/32", "127.0.0.1", false },
        { "192.0.2.128/25", "192.0.2.200", true }, { "192.0.2.128/25", "192.0.2.100", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        net_cidr_t c;
        net_addr_t a;
        assert_int_equal(net_cidr_parse(cases[i].cidr, &c), 0);
        assert_int_equal(net_addr_parse(cases[i].addr, &a), 0);
        print_message("cidr: %s contains %s\n", cases[i].cidr, cases[i].addr);
        assert_int_equal(net_cidr_contains(&c, &a), cases[i].inside);
    }
    net_cidr_t c;
    assert_int_equal(net_cidr_parse("10.0.0.0/33", &c), -1);
    assert_int_equal(net_cidr_parse("not-an-address", &c), -1);
    assert_int_equal(net_cidr_parse("10.0.0.0/", &c), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_whole),
        cmocka_unit_test(test_path_bytewise),
        cmocka_unit_test(test_relay_decision),
        cmocka_unit_test(test_routing_local_parts),
        cmocka_unit_test(test_cidr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
