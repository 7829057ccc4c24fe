/* lib/store/rawcache.c: the cache of messages read whole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "store/rawcache.h"

static void put(rawcache_t *c, int64_t mailbox, uint32_t uid, size_t len, char fill)
{
    unsigned char data[256];
    memset(data, fill, sizeof data);
    rawcache_put(c, mailbox, uid, data, len);
}

/* The least recently used message goes first; a read counts as a use. */
static void test_least_recently_used_goes(void **state)
{
    (void)state;
    rawcache_t *c = rawcache_new(1000); /* messages of up to 125 bytes */
    for (uint32_t uid = 1; uid <= 9; uid++)
        put(c, 5, uid, 100, (char)('a' + uid));
    assert_int_equal(rawcache_bytes(c), 900);
    rawmsg_t *m = rawcache_get(c, 5, 1); /* 1 is now the most recent */
    assert_non_null(m);
    assert_int_equal(rawmsg_len(m), 100);
    assert_int_equal(rawmsg_data(m)[0], 'b');
    rawmsg_unref(&m);
    assert_null(m);
    put(c, 5, 10, 100, 'z');
    put(c, 5, 11, 100, 'z'); /* over 1000: the oldest unused, 2, goes */
    assert_int_equal(rawcache_bytes(c), 1000);
    assert_null(rawcache_get(c, 5, 2));
    m = rawcache_get(c, 5, 1);
    assert_non_null(m);
    rawmsg_unref(&m);
    /* The same UID of another mailbox is another message. */
    assert_null(rawcache_get(c, 6, 3));
    m = rawcache_get(c, 5, 3);
    assert_non_null(m);
    rawmsg_unref(&m);
    rawcache_unref(&c);
    assert_null(c);
}

/* A message larger than an eighth of the cache is not kept; one read outlives its
 * eviction and the cache itself. */
static void test_limits_and_references(void **state)
{
    (void)state;
    rawcache_t *c = rawcache_new(800);
    put(c, 1, 1, 101, 'x');
    assert_null(rawcache_get(c, 1, 1));
    assert_int_equal(rawcache_bytes(c), 0);
    put(c, 1, 2, 100, 'y');
    put(c, 1, 2, 100, 'q'); /* the same message again: kept once */
    assert_int_equal(rawcache_bytes(c), 100);
    rawmsg_t *held = rawcache_get(c, 1, 2);
    for (uint32_t uid = 3; uid <= 10; uid++)
        put(c, 1, uid, 100, 'w');
    assert_null(rawcache_get(c, 1, 2)); /* evicted */
    rawcache_t *ref = rawcache_ref(c);
    rawcache_unref(&c);
    rawcache_unref(&ref);
    assert_int_equal(rawmsg_len(held), 100);
    assert_int_equal(rawmsg_data(held)[99], 'y');
    rawmsg_unref(&held);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_least_recently_used_goes),
        cmocka_unit_test(test_limits_and_references),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
