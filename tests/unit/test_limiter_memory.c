/* What a key costs: a million users with one accepted message each, a million client
 * networks with one failed login each, a million networks with one invalid recipient, and a
 * million accounts with one failed login, measured with mallinfo2() (heap in use plus
 * mmapped blocks: the table slots) and divided by the number of keys. Prints the figures
 * and checks they stay small. Under AddressSanitizer mallinfo2() says nothing: the same
 * work runs on fewer keys without figures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "policy.h"

#if defined(__SANITIZE_ADDRESS__)
#define KEYS 20000
#define MEASURE 0
#else
#define KEYS 1000000
#define MEASURE 1
#endif

static size_t heap_now(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static double ns_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

typedef enum kind { USERS, NETWORKS, RCPT_NETWORKS, ACCOUNTS } kind_t;

static const char *const kind_names[] = {
    [USERS] = "user window (HAMR, 1 message, settings cached)",
    [NETWORKS] = "network counter (failed logins, 1 with digest)",
    [RCPT_NETWORKS] = "network counter (invalid recipients, 1)",
    [ACCOUNTS] = "account counter (failed logins, 1 with digest)",
};

static void fill(limiter_t *L, kind_t kind, int i, int64_t now)
{
    char name[64], addr[64];
    uint8_t digest[32] = { 0 };
    memcpy(digest, &i, sizeof i);
    limiter_reply_t r;
    /* Distinct addresses: 10.x.y.z, then 2001:db8:x:y::1 (one /64 each). */
    if (i < (1 << 24))
        snprintf(addr, sizeof addr, "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    else
        snprintf(addr, sizeof addr, "2001:db8:%x:%x::1", (i >> 16) & 0xffff, i & 0xffff);
    switch (kind) {
    case USERS:
        snprintf(name, sizeof name, "user%07d@example.test", i);
        limiter_send_check(L, name, "192.0.2.1", 1, "", now, &r);
        assert_int_equal(r.verdict, LIMITER_ALLOW);
        break;
    case NETWORKS:
        limiter_auth_event(L, CONF_SVC_IMAP, "", addr, LIMITER_AUTH_BAD_CREDENTIALS, digest,
                           sizeof digest, now);
        break;
    case RCPT_NETWORKS:
        limiter_rcpt_failure(L, CONF_SVC_SMTP, addr, now, &r);
        assert_int_equal(r.verdict, LIMITER_ALLOW);
        break;
    case ACCOUNTS:
        snprintf(name, sizeof name, "user%07d@example.test", i);
        limiter_auth_event(L, CONF_SVC_IMAP, name, "192.0.2.1", LIMITER_AUTH_BAD_CREDENTIALS,
                           digest, sizeof digest, now);
        break;
    }
}

static void measure(kind_t kind)
{
    limiter_t *L = limiter_create(NULL);
    assert_non_null(L);
    if (kind == ACCOUNTS) { /* one address failing a million times must not block here */
        harvest_conf_t hv[CONF_NSERVICES];
        for (int s = 0; s < CONF_NSERVICES; s++) {
            harvest_conf_init(&hv[s], s);
            if (s != CONF_SVC_NONE)
                harvest_conf_apply(&hv[s], "harvest.enabled", "off");
        }
        limiter_set_conf(L, NULL, hv);
    }
    size_t before = heap_now();
    double t0 = ns_now();
    for (int i = 0; i < KEYS; i++)
        fill(L, kind, i, 1000 + i / 1000);
    double t1 = ns_now();
    size_t after = heap_now();
    limiter_stats_t st;
    limiter_stats(L, &st);
    size_t keys = kind == USERS           ? st.users
                  : kind == NETWORKS      ? st.auth_counters
                  : kind == RCPT_NETWORKS ? st.rcpt_counters
                                          : st.accounts;
    assert_int_equal(keys, KEYS);
    /* A second pass over existing keys: the steady-state time per event. */
    double t2 = ns_now();
    for (int i = 0; i < KEYS; i++)
        fill(L, kind, i, 2000 + i / 1000);
    double t3 = ns_now();
    double per_key = (double)(after - before) / KEYS;
    if (MEASURE) {
        print_message("%-50s %7.1f bytes/key  insert %5.0f ns  update %5.0f ns  (%d keys)\n",
                      kind_names[kind], per_key, (t1 - t0) / KEYS, (t3 - t2) / KEYS, KEYS);
        assert_true(per_key < (kind == USERS ? 320 : 200));
    }
    /* Everything goes once idle. */
    while (limiter_prune(L, (int64_t)1e12, 1 << 20) > 0)
        ;
    limiter_stats(L, &st);
    assert_int_equal(st.users + st.auth_counters + st.rcpt_counters + st.accounts, 0);
    limiter_destroy(&L);
}

static void test_user_windows(void **state)
{
    (void)state;
    measure(USERS);
}

static void test_network_counters(void **state)
{
    (void)state;
    measure(NETWORKS);
}

static void test_rcpt_counters(void **state)
{
    (void)state;
    measure(RCPT_NETWORKS);
}

static void test_account_counters(void **state)
{
    (void)state;
    measure(ACCOUNTS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_windows),
        cmocka_unit_test(test_network_counters),
        cmocka_unit_test(test_rcpt_counters),
        cmocka_unit_test(test_account_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
