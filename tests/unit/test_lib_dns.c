/* lib/net/dns against a private dnsmasq serving the zone below on a loopback port, plus a
 * server that never answers and one where nothing listens. Skipped when dnsmasq is not
 * installed (Debian package dnsmasq-base). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/net.h"
#include "net/dns.h"

/* The zone: dnsmasq options (--local=/test/ makes unknown names under test. NXDOMAIN). */
static const char *const zone[] = {
    "--mx-host=multi.test,mx-a.test,10",
    "--mx-host=multi.test,mx-b.test,10",
    "--mx-host=multi.test,mx-c.test,5",
    "--mx-host=multi.test,mx-d.test,20",
    "--host-record=mx-a.test,192.0.2.1,2001:db8::1",
    "--host-record=mx-b.test,192.0.2.2",
    "--host-record=mx-c.test,2001:db8::3",
    "--host-record=mx-d.test,192.0.2.4",
    "--host-record=plain.test,192.0.2.10,2001:db8::10",
    "--dns-rr=nullmx.test,15,000000", /* MX 0 "." (RFC 7505) */
    "--mx-host=noaddr.test,ghost.test,10",
    "--mx-host=partial.test,ghost.test,10",
    "--mx-host=partial.test,mx-b.test,20",
    "--txt-record=txtonly.test,\"no mail here\"",
    "--local=/test/",
};
#define BIG_MX 12 /* big.test: h1.test .. h12.test, preferences 1..12 */

typedef struct host_copy {
    char name[256];
    int preference;
    char addrs[DNS_MAX_ADDRS][64];
    size_t naddrs;
} host_copy_t;

/* A result copied out of the callback. */
typedef struct outcome {
    bool called;
    dns_status_t status;
    bool implicit;
    char error[160];
    host_copy_t hosts[DNS_MAX_HOSTS];
    size_t nhosts;
    dns_t **destroy;   /* destroy this from the callback */
    dns_t *chain;      /* start a lookup of chain_name from the callback */
    const char *chain_name;
    struct outcome *chained;
} outcome_t;

typedef struct world {
    bool available;
    char dir[64];
    pid_t pid;
    int port;
    char servers[64];
    int silent_fd; /* a UDP socket nobody reads: the server that never answers */
    char silent[64];
    char refused[64]; /* a UDP port where nothing listens */
} world_t;

static void copy_result(void *arg, const dns_mx_result_t *r)
{
    outcome_t *o = arg;
    o->called = true;
    o->status = r->status;
    o->implicit = r->implicit;
    snprintf(o->error, sizeof o->error, "%s", r->error);
    o->nhosts = r->nhosts;
    for (size_t i = 0; i < r->nhosts; i++) {
        host_copy_t *h = &o->hosts[i];
        snprintf(h->name, sizeof h->name, "%s", r->hosts[i].name);
        h->preference = r->hosts[i].preference;
        h->naddrs = r->hosts[i].naddrs;
        for (size_t j = 0; j < h->naddrs; j++) {
            const struct sockaddr_storage *ss = &r->hosts[i].addrs[j];
            net_sockaddr_text((const struct sockaddr *)ss, h->addrs[j], sizeof h->addrs[j]);
            const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
            const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
            in_port_t port = ss->ss_family == AF_INET ? sin->sin_port : sin6->sin6_port;
            assert_int_equal(port, 0);
        }
    }
    if (o->chain)
        assert_int_equal(dns_resolve_mx(o->chain, o->chain_name, copy_result, o->chained), 0);
    if (o->destroy)
        dns_destroy(o->destroy);
}

/* A UDP port on 127.0.0.1 that was free a moment ago (TCP on it too, for dnsmasq). */
static int free_port(void)
{
    for (int attempt = 0; attempt < 20; attempt++) {
        int u = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in sin = { .sin_family = AF_INET };
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof sin;
        assert_int_equal(bind(u, (struct sockaddr *)&sin, sizeof sin), 0);
        assert_int_equal(getsockname(u, (struct sockaddr *)&sin, &len), 0);
        int t = socket(AF_INET, SOCK_STREAM, 0);
        int ok = bind(t, (struct sockaddr *)&sin, sizeof sin) == 0;
        close(t);
        close(u);
        if (ok)
            return ntohs(sin.sin_port);
    }
    fail_msg("no free port");
    return -1;
}

static const char *dnsmasq_path(void)
{
    static const char *const paths[] = { "/usr/sbin/dnsmasq", "/usr/bin/dnsmasq",
                                         "/usr/local/sbin/dnsmasq" };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (access(paths[i], X_OK) == 0)
            return paths[i];
    return NULL;
}

static void wait_cb(void *arg, const dns_mx_result_t *r)
{
    *(dns_status_t *)arg = r->status;
}

/* Runs one lookup to the end on loop. */
static void run_mx(uv_loop_t *loop, dns_t *d, const char *name, bool host, outcome_t *o)
{
    memset(o, 0, sizeof *o);
    int rc = host ? dns_resolve_host(d, name, copy_result, o)
                  : dns_resolve_mx(d, name, copy_result, o);
    assert_int_equal(rc, 0);
    assert_false(o->called); /* never from inside the call */
    while (!o->called)
        uv_run(loop, UV_RUN_ONCE);
}

static dns_t *make_dns(uv_loop_t *loop, const char *servers, int timeout_ms, int tries)
{
    char err[256] = "";
    dns_opts_t opts = { .timeout_ms = timeout_ms, .tries = tries };
    dns_t *d = dns_create_opts(loop, servers, &opts, err, sizeof err);
    if (!d)
        fail_msg("dns_create_opts: %s", err);
    return d;
}

static void finish(uv_loop_t *loop, dns_t **d)
{
    dns_destroy(d);
    assert_null(*d);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

static int setup(void **state)
{
    static world_t w;
    memset(&w, 0, sizeof w);
    w.pid = -1;
    w.silent_fd = -1;
    *state = &w;

    w.silent_fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sin;
    if (bind(w.silent_fd, (struct sockaddr *)&sin, sizeof sin) < 0 ||
        getsockname(w.silent_fd, (struct sockaddr *)&sin, &len) < 0)
        return -1;
    snprintf(w.silent, sizeof w.silent, "127.0.0.1:%d", ntohs(sin.sin_port));
    snprintf(w.refused, sizeof w.refused, "127.0.0.1:%d", free_port());

    const char *dnsmasq = dnsmasq_path();
    if (!dnsmasq) {
        printf("dnsmasq is not installed (Debian package dnsmasq-base): the lookups that need "
               "it are skipped\n");
        return 0;
    }
    snprintf(w.dir, sizeof w.dir, "/tmp/test_lib_dns.XXXXXX");
    if (!mkdtemp(w.dir))
        return -1;
    w.port = free_port();
    snprintf(w.servers, sizeof w.servers, "127.0.0.1:%d", w.port);

    char port_opt[32], pid_opt[128];
    snprintf(port_opt, sizeof port_opt, "--port=%d", w.port);
    snprintf(pid_opt, sizeof pid_opt, "--pid-file=%s/dnsmasq.pid", w.dir);
    const char *argv[64];
    size_t n = 0;
    argv[n++] = dnsmasq;
    argv[n++] = "--keep-in-foreground";
    argv[n++] = port_opt;
    argv[n++] = "--listen-address=127.0.0.1";
    argv[n++] = "--bind-interfaces";
    argv[n++] = "--no-resolv";
    argv[n++] = "--no-hosts";
    argv[n++] = "--no-negcache";
    argv[n++] = "--conf-file=/dev/null";
    argv[n++] = "--log-facility=/dev/null";
    argv[n++] = pid_opt;
    for (size_t i = 0; i < sizeof zone / sizeof zone[0]; i++)
        argv[n++] = zone[i];
    static char big[BIG_MX][2][64];
    for (int i = 0; i < BIG_MX; i++) {
        snprintf(big[i][0], sizeof big[i][0], "--mx-host=big.test,h%d.test,%d", i + 1, i + 1);
        snprintf(big[i][1], sizeof big[i][1], "--host-record=h%d.test,192.0.2.%d", i + 1, 100 + i);
        argv[n++] = big[i][0];
        argv[n++] = big[i][1];
    }
    argv[n] = NULL;
    assert_true(n < sizeof argv / sizeof argv[0]);

    w.pid = fork();
    if (w.pid < 0)
        return -1;
    if (w.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlives a test that crashed */
        execv(dnsmasq, (char *const *)argv);
        _exit(127);
    }

    /* Ready once it answers. */
    uv_loop_t loop;
    uv_loop_init(&loop);
    dns_t *d = make_dns(&loop, w.servers, 100, 1);
    dns_status_t st = DNS_TEMPFAIL;
    for (int attempt = 0; attempt < 100 && st != DNS_OK; attempt++) {
        int wst;
        if (waitpid(w.pid, &wst, WNOHANG) == w.pid) {
            w.pid = -1;
            fail_msg("dnsmasq exited at start (status %d)", wst);
        }
        st = DNS_CANCELLED;
        assert_int_equal(dns_resolve_host(d, "plain.test", wait_cb, &st), 0);
        while (st == DNS_CANCELLED)
            uv_run(&loop, UV_RUN_ONCE);
        if (st != DNS_OK)
            usleep(50 * 1000);
    }
    finish(&loop, &d);
    if (st != DNS_OK)
        fail_msg("dnsmasq does not answer on %s", w.servers);
    w.available = true;
    return 0;
}

static int teardown(void **state)
{
    world_t *w = *state;
    if (w->pid > 0) {
        kill(w->pid, SIGTERM);
        waitpid(w->pid, NULL, 0);
    }
    if (w->dir[0]) {
        char path[128];
        snprintf(path, sizeof path, "%s/dnsmasq.pid", w->dir);
        unlink(path);
        rmdir(w->dir);
    }
    if (w->silent_fd >= 0)
        close(w->silent_fd);
    return 0;
}

#define NEED_DNSMASQ(w)                                                                           \
    do {                                                                                          \
        if (!(w)->available)                                                                      \
            skip();                                                                               \
    } while (0)

/* ---- cases with one expected answer --------------------------------------------- */

typedef struct mx_case {
    const char *name;
    const char *query;
    bool host; /* dns_resolve_host() instead of dns_resolve_mx() */
    dns_status_t status;
    bool implicit;
    const char *hosts; /* "name pref addr addr|name pref addr" ("" for none) */
    const char *error; /* a part of the error text, or NULL */
} mx_case_t;

static const mx_case_t cases[] = {
    { "no MX: the domain itself", "plain.test", false, DNS_OK, true,
      "plain.test 0 2001:db8::10 192.0.2.10", NULL },
    { "trailing dot", "plain.test.", false, DNS_OK, true, "plain.test 0 2001:db8::10 192.0.2.10",
      NULL },
    { "NXDOMAIN", "nx.test", false, DNS_NOT_FOUND, false, "", "nx.test not found" },
    { "null MX", "nullmx.test", false, DNS_NULL_MX, false, "", "null MX" },
    { "the only MX host has no address", "noaddr.test", false, DNS_TEMPFAIL, false, "",
      "no address for any MX host of noaddr.test (ghost.test: not found)" },
    { "an MX host without address left out", "partial.test", false, DNS_OK, false,
      "mx-b.test 20 192.0.2.2", NULL },
    { "no MX and no address", "txtonly.test", false, DNS_NOT_FOUND, true, "",
      "txtonly.test has no MX record and no address" },
    { "address literal", "[192.0.2.9]", false, DNS_OK, true, "[192.0.2.9] 0 192.0.2.9", NULL },
    { "IPv6 address literal", "[IPv6:2001:db8::9]", false, DNS_OK, true,
      "[IPv6:2001:db8::9] 0 2001:db8::9", NULL },
    { "empty domain", "", false, DNS_NOT_FOUND, false, "", "invalid domain name" },
    { "host with both families", "mx-a.test", true, DNS_OK, false,
      "mx-a.test 0 2001:db8::1 192.0.2.1", NULL },
    { "host with IPv6 only", "mx-c.test", true, DNS_OK, false, "mx-c.test 0 2001:db8::3", NULL },
    { "host not found", "ghost.test", true, DNS_NOT_FOUND, false, "", "ghost.test: not found" },
    { "host without address records", "multi.test", true, DNS_NOT_FOUND, false, "",
      "multi.test: no address record" },
    { "host IP literal", "192.0.2.7", true, DNS_OK, false, "192.0.2.7 0 192.0.2.7", NULL },
    { "host IPv6 literal in brackets", "[2001:db8::7]", true, DNS_OK, false,
      "[2001:db8::7] 0 2001:db8::7", NULL },
    { "localhost", "localhost", true, DNS_OK, false, "localhost 0 ::1 127.0.0.1", NULL },
};

/* The hosts as "name pref addr addr|name pref addr". */
static void hosts_text(const outcome_t *o, char *out, size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < o->nhosts; i++) {
        used += (size_t)snprintf(out + used, len - used, "%s%s %d", i ? "|" : "", o->hosts[i].name,
                                 o->hosts[i].preference);
        for (size_t j = 0; j < o->hosts[i].naddrs; j++)
            used += (size_t)snprintf(out + used, len - used, " %s", o->hosts[i].addrs[j]);
    }
}

static void test_cases(void **state)
{
    world_t *w = *state;
    NEED_DNSMASQ(w);
    uv_loop_t loop;
    uv_loop_init(&loop);
    dns_t *d = make_dns(&loop, w->servers, 500, 2);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const mx_case_t *c = &cases[i];
        outcome_t o;
        char text[1024];
        print_message("case: %s\n", c->name);
        run_mx(&loop, d, c->query, c->host, &o);
        hosts_text(&o, text, sizeof text);
        print_message("  -> %s \"%s\" %s\n", dns_status_name(o.status), o.error, text);
        if (o.status != c->status)
            fail_msg("%s: status %s (%s), expected %s", c->name, dns_status_name(o.status), o.error,
                     dns_status_name(c->status));
        assert_int_equal(o.implicit, c->implicit);
        assert_string_equal(text, c->hosts);
        if (c->error && !strstr(o.error, c->error))
            fail_msg("%s: error \"%s\" lacks \"%s\"", c->name, o.error, c->error);
        if (c->status == DNS_OK)
            assert_string_equal(o.error, "");
    }
    finish(&loop, &d);
}

/* RFC 5321 section 5.1: by preference; equal preferences both present, in either order,
 * and over many lookups in both. */
static void test_mx_order(void **state)
{
    world_t *w = *state;
    NEED_DNSMASQ(w);
    uv_loop_t loop;
    uv_loop_init(&loop);
    dns_t *d = make_dns(&loop, w->servers, 500, 2);
    bool a_first = false, b_first = false;
    for (int round = 0; round < 64 && !(a_first && b_first); round++) {
        outcome_t o;
        run_mx(&loop, d, "multi.test", false, &o);
        assert_int_equal(o.status, DNS_OK);
        assert_false(o.implicit);
        assert_int_equal(o.nhosts, 4);
        assert_string_equal(o.hosts[0].name, "mx-c.test");
        assert_int_equal(o.hosts[0].preference, 5);
        assert_int_equal(o.hosts[1].preference, 10);
        assert_int_equal(o.hosts[2].preference, 10);
        assert_string_equal(o.hosts[3].name, "mx-d.test");
        assert_int_equal(o.hosts[3].preference, 20);
        bool ab = !strcmp(o.hosts[1].name, "mx-a.test") && !strcmp(o.hosts[2].name, "mx-b.test");
        bool ba = !strcmp(o.hosts[1].name, "mx-b.test") && !strcmp(o.hosts[2].name, "mx-a.test");
        assert_true(ab || ba);
        a_first |= ab;
        b_first |= ba;
        const host_copy_t *a = ab ? &o.hosts[1] : &o.hosts[2];
        assert_int_equal(a->naddrs, 2);
        assert_string_equal(a->addrs[0], "2001:db8::1");
        assert_string_equal(a->addrs[1], "192.0.2.1");
    }
    assert_true(a_first && b_first);
    finish(&loop, &d);
}

static void test_mx_cap(void **state)
{
    world_t *w = *state;
    NEED_DNSMASQ(w);
    uv_loop_t loop;
    uv_loop_init(&loop);
    dns_t *d = make_dns(&loop, w->servers, 500, 2);
    outcome_t o;
    run_mx(&loop, d, "big.test", false, &o);
    assert_int_equal(o.status, DNS_OK);
    assert_int_equal(o.nhosts, DNS_MAX_HOSTS);
    for (size_t i = 0; i < o.nhosts; i++) /* the most preferred ones */
        assert_int_equal(o.hosts[i].preference, (int)i + 1);
    finish(&loop, &d);
}

/* A server that never answers and one where nothing listens: temporary failures. */
static void test_unreachable_servers(void **state)
{
    world_t *w = *state;
    const char *servers[] = { w->silent, w->refused };
    for (size_t i = 0; i < 2; i++) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        dns_t *d = make_dns(&loop, servers[i], 100, 1);
        outcome_t o;
        print_message("server: %s\n", i == 0 ? "silent" : "nothing listens");
        run_mx(&loop, d, "example.test", false, &o);
        print_message("  -> %s \"%s\"\n", dns_status_name(o.status), o.error);
        assert_int_equal(o.status, DNS_TEMPFAIL);
        assert_non_null(strstr(o.error, "MX lookup for example.test failed"));
        run_mx(&loop, d, "mx.example.test", true, &o);
        assert_int_equal(o.status, DNS_TEMPFAIL);
        finish(&loop, &d);
    }
}

/* dns_destroy() with lookups in flight: their callbacks run with DNS_CANCELLED before it
 * returns, and the loop ends. */
static void test_destroy_in_flight(void **state)
{
    world_t *w = *state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    dns_t *d = make_dns(&loop, w->silent, 5000, 3);
    outcome_t mx = { 0 }, host = { 0 }, literal = { 0 };
    assert_int_equal(dns_resolve_mx(d, "example.test", copy_result, &mx), 0);
    assert_int_equal(dns_resolve_host(d, "mx.example.test", copy_result, &host), 0);
    assert_int_equal(dns_resolve_host(d, "192.0.2.1", copy_result, &literal), 0);
    uv_run(&loop, UV_RUN_NOWAIT); /* the queries are sent, nothing answers */
    assert_false(mx.called);
    assert_false(host.called);
    dns_destroy(&d);
    assert_null(d);
    assert_true(mx.called && host.called);
    assert_int_equal(mx.status, DNS_CANCELLED);
    assert_int_equal(host.status, DNS_CANCELLED);
    assert_true(literal.called); /* delivered from the loop before, or cancelled now */
    assert_int_equal(dns_resolve_mx(NULL, "x.test", copy_result, &mx), -1);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* From a callback: a new lookup, and dns_destroy() with another lookup in flight. */
static void test_callbacks_reenter(void **state)
{
    world_t *w = *state;
    NEED_DNSMASQ(w);
    uv_loop_t loop;
    uv_loop_init(&loop);
    dns_t *d = make_dns(&loop, w->servers, 500, 2);
    outcome_t first, second, third;
    memset(&first, 0, sizeof first);
    memset(&second, 0, sizeof second);
    memset(&third, 0, sizeof third);
    first.chain = d;
    first.chain_name = "multi.test";
    first.chained = &second;
    second.destroy = &d;
    assert_int_equal(dns_resolve_host(d, "192.0.2.1", copy_result, &first), 0);
    /* third never completes by itself: the destroy in second's callback cancels it */
    assert_int_equal(dns_resolve_mx(d, "partial.test", copy_result, &third), 0);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_true(first.called && second.called && third.called);
    assert_int_equal(first.status, DNS_OK);
    assert_int_equal(second.status, DNS_OK);
    assert_true(third.status == DNS_OK || third.status == DNS_CANCELLED);
    assert_null(d);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_create_errors(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256] = "";
    assert_null(dns_create(&loop, "not an address", err, sizeof err));
    assert_non_null(strstr(err, "not an address"));
    dns_t *d = dns_create(&loop, NULL, err, sizeof err); /* /etc/resolv.conf */
    assert_non_null(d);
    finish(&loop, &d);
    dns_destroy(&d); /* harmless on NULL */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_mx_order),
        cmocka_unit_test(test_mx_cap),
        cmocka_unit_test(test_unreachable_servers),
        cmocka_unit_test(test_destroy_in_flight),
        cmocka_unit_test(test_callbacks_reenter),
        cmocka_unit_test(test_create_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
