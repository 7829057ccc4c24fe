/* The bus's messages as plain C (lib/bus/events.h) over a real NATS server: every event goes
 * out through its publish helper and comes back through its subscribe helper, and the
 * callback's view is compared with what was sent; bad messages are dropped and the
 * subscription goes on; the limiter's requests go through the front ends' client
 * (lib/bus/lim.h) and are answered with ev_reply_*().
 *
 * NATS: POSTERN_TEST_NATS_URL, else a nats-server of the test's own (NATS_SERVER, else the
 * one on PATH) on a free port; without either, the tests are skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nats/nats.h>

#include "base/buf.h"
#include "bus/events.h"
#include "bus/lim.h"

extern char **environ;

typedef struct world {
    pid_t server;      /* our own nats-server, or 0 */
    char url[64];
    uv_loop_t loop;
    bus_t *bus;
    buf_t seen;        /* what the callbacks were given, one line each */
    int calls;
} world_t;

/* ---- callbacks: each writes what it was given ------------------------------------------ */

static void seen(world_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void seen(world_t *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&w->seen, fmt, ap);
    va_end(ap);
    w->calls++;
}

static void queue_added_cb(void *arg, const char *queue_id)
{
    seen(arg, "queue %s", queue_id);
}

static void config_changed_cb(void *arg, const char *what)
{
    seen(arg, "config %s", what);
}

static void auth_cb(void *arg, const ev_auth_t *e)
{
    seen(arg, "auth svc=%d user=%s client=%s mech=%s tls=%d result=%d time=%lld inst=%s digest=%zu",
         e->service, e->user, e->client_addr, e->mechanism, e->tls, e->result,
         (long long)e->time_ms, e->instance, e->attempt_digest_len);
}

static void message_cb(void *arg, const ev_message_t *e)
{
    seen(arg, "message svc=%d user=%s sender=%s rcpts=%u relay=%u size=%llu client=%s auth=%d "
         "time=%lld inst=%s id=%s", e->service, e->user, e->sender, e->rcpt_count,
         e->relay_rcpt_count, (unsigned long long)e->size, e->client_addr, e->authenticated,
         (long long)e->time_ms, e->instance, e->queue_id);
}

static void block_changed_cb(void *arg, ev_block_change_t change, const ev_block_t *b)
{
    seen(arg, "block %d %s reason=%s since=%lld until=%lld svc=%d offense=%u", change,
         b->network, b->reason, (long long)b->since_ms, (long long)b->until_ms, b->service,
         b->offense);
}

static void alert_cb(void *arg, const ev_alert_t *a)
{
    seen(arg, "alert %s user=%s clients=", a->cause, a->user);
    for (size_t i = 0; i < a->n_client_addrs; i++)
        buf_printf(&((world_t *)arg)->seen, "%s%s", i ? "," : "", a->client_addrs[i]);
    buf_printf(&((world_t *)arg)->seen, " limit=%s action=%s time=%lld detail=%s owner=%d",
               a->limit, a->action, (long long)a->time_ms, a->detail, a->notify_owner);
}

/* ---- the world ----------------------------------------------------------------------- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    close(fd);
    return ntohs(sa.sin_port);
}

static bool port_answers(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *calls reaches want or ms pass. */
static void run_until(world_t *w, int want, int ms)
{
    uv_timer_t t;
    uv_timer_init(&w->loop, &t);
    uv_timer_start(&t, tick_cb, 10, 10);
    uint64_t end = uv_now(&w->loop) + (uint64_t)ms;
    while (w->calls < want && uv_now(&w->loop) < end)
        uv_run(&w->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&w->loop, UV_RUN_NOWAIT);
}

static int setup(void **state)
{
    world_t *w = calloc(1, sizeof *w);
    buf_init(&w->seen);
    const char *url = getenv("POSTERN_TEST_NATS_URL");
    if (url && *url) {
        snprintf(w->url, sizeof w->url, "%s", url);
    } else {
        const char *exe = getenv("NATS_SERVER");
        if (!exe || !*exe)
            exe = access("/usr/sbin/nats-server", X_OK) == 0 ? "/usr/sbin/nats-server"
                                                             : "/usr/bin/nats-server";
        if (access(exe, X_OK) != 0) {
            *state = w;
            return 0; /* the tests skip */
        }
        int port = free_port();
        char p[16];
        snprintf(p, sizeof p, "%d", port);
        char *argv[] = { (char *)exe, "-a", "127.0.0.1", "-p", p, NULL };
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
        if (posix_spawn(&w->server, exe, &fa, NULL, argv, environ) != 0)
            w->server = 0;
        posix_spawn_file_actions_destroy(&fa);
        for (int i = 0; w->server && i < 100 && !port_answers(port); i++)
            usleep(50 * 1000);
        snprintf(w->url, sizeof w->url, "nats://127.0.0.1:%d", port);
    }
    uv_loop_init(&w->loop);
    w->bus = bus_create(&w->loop, w->url, "events-test");
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    world_t *w = *state;
    if (w->bus) {
        ev_release(w->bus);
        bus_destroy(&w->bus);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
    }
    if (w->server) {
        kill(w->server, SIGTERM);
        waitpid(w->server, NULL, 0);
    }
    buf_free(&w->seen);
    free(w);
    return 0;
}

static world_t *world(void **state)
{
    world_t *w = *state;
    if (!w->bus || !bus_connected(w->bus))
        skip();
    return w;
}

/* Sends with send(), waits for one callback and compares what it saw. */
static void expect_seen(world_t *w, const char *want)
{
    int before = w->calls;
    run_until(w, before + 1, 5000);
    if (w->calls != before + 1 || strcmp(w->seen.data ? w->seen.data : "", want) != 0)
        fail_msg("callbacks %d\n  saw  %s\n  want %s", w->calls - before,
                 w->seen.data ? w->seen.data : "(nothing)", want);
    buf_reset(&w->seen);
}

/* ---- round trips ---------------------------------------------------------------------- */

static void test_events_round_trip(void **state)
{
    world_t *w = world(state);
    assert_int_equal(ev_subscribe_queue_added(w->bus, queue_added_cb, w), 0);
    assert_int_equal(ev_subscribe_config_changed(w->bus, config_changed_cb, w), 0);
    assert_int_equal(ev_subscribe_auth(w->bus, auth_cb, w), 0);
    assert_int_equal(ev_subscribe_message(w->bus, message_cb, w), 0);
    assert_int_equal(ev_subscribe_block_changed(w->bus, block_changed_cb, w), 0);
    assert_int_equal(ev_subscribe_alert(w->bus, alert_cb, w), 0);

    assert_int_equal(ev_publish_queue_added(w->bus, "7KQ2ZC9XRB-N0a1b2c3d"), 0);
    expect_seen(w, "queue 7KQ2ZC9XRB-N0a1b2c3d");

    assert_int_equal(ev_publish_config_changed(w->bus, "relay"), 0);
    expect_seen(w, "config relay");

    const uint8_t digest[32] = { 1, 2, 3 };
    ev_auth_t auth = { .service = POSTERN__SERVICE__SERVICE_IMAP, .user = "alice@example.test",
                       .client_addr = "192.0.2.1", .mechanism = "PLAIN", .tls = true,
                       .result = POSTERN__AUTH_RESULT__AUTH_BAD_CREDENTIALS, .time_ms = 42,
                       .instance = "node:1", .attempt_digest = digest,
                       .attempt_digest_len = sizeof digest };
    assert_int_equal(ev_publish_auth(w->bus, &auth), 0);
    expect_seen(w, "auth svc=3 user=alice@example.test client=192.0.2.1 mech=PLAIN tls=1 "
                   "result=2 time=42 inst=node:1 digest=32");

    ev_message_t msg = { .service = POSTERN__SERVICE__SERVICE_SMTP, .user = "",
                         .sender = "bob@example.test", .rcpt_count = 3, .relay_rcpt_count = 1,
                         .size = 1234, .client_addr = "2001:db8::1", .authenticated = false,
                         .time_ms = 7, .instance = "node:2", .queue_id = "ABC" };
    assert_int_equal(ev_publish_message(w->bus, &msg), 0);
    expect_seen(w, "message svc=1 user= sender=bob@example.test rcpts=3 relay=1 size=1234 "
                   "client=2001:db8::1 auth=0 time=7 inst=node:2 id=ABC");

    ev_block_t blk = { .network = "192.0.2.0/24", .reason = "harvesting", .since_ms = 1,
                       .until_ms = 2, .service = POSTERN__SERVICE__SERVICE_POP3, .offense = 3 };
    assert_int_equal(ev_publish_block_changed(w->bus, EV_BLOCK_LIFTED, &blk), 0);
    expect_seen(w, "block 2 192.0.2.0/24 reason=harvesting since=1 until=2 svc=2 offense=3");

    const char *clients[] = { "192.0.2.7", "2001:db8::7" };
    ev_alert_t alert = { .cause = "hamr", .user = "carol@example.test", .client_addrs = clients,
                         .n_client_addrs = 2, .limit = "5 per 60 s", .action = "throttle",
                         .time_ms = 99, .detail = "text", .notify_owner = true };
    assert_int_equal(ev_publish_alert(w->bus, &alert), 0);
    expect_seen(w, "alert hamr user=carol@example.test clients=192.0.2.7,2001:db8::7 "
                   "limit=5 per 60 s action=throttle time=99 detail=text owner=1");

    /* Packed for later (the limiter's queue while the bus is down), then sent as is. */
    buf_t packed;
    buf_init(&packed);
    alert.n_client_addrs = 0;
    assert_int_equal(ev_pack_alert(&alert, &packed), 0);
    assert_int_equal(bus_publish(w->bus, BUS_SUBJECT_ALERT, packed.data, packed.len), 0);
    expect_seen(w, "alert hamr user=carol@example.test clients= limit=5 per 60 s "
                   "action=throttle time=99 detail=text owner=1");
    assert_int_equal(ev_pack_config_changed("users", &packed), 0);
    assert_int_equal(bus_publish(w->bus, BUS_SUBJECT_CONFIG_CHANGED, packed.data, packed.len), 0);
    expect_seen(w, "config users");
    buf_free(&packed);
}

static void test_bad_messages_dropped(void **state)
{
    world_t *w = world(state);
    assert_int_equal(ev_subscribe_queue_added(w->bus, queue_added_cb, w), 0);
    assert_int_equal(ev_subscribe_block_changed(w->bus, block_changed_cb, w), 0);

    /* Refused before they go out. */
    static const struct {
        const char *id;
        bool ok;
    } ids[] = {
        { "A", true },        { "has space", false }, { "", false },
        { "tab\there", false }, { NULL, false },      { "\x7f", false },
        { "caf\xc3\xa9", false },
    };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ev_queue_id_ok(ids[i].id) != ids[i].ok)
            fail_msg("ev_queue_id_ok(%s) != %d", ids[i].id ? ids[i].id : "NULL", ids[i].ok);
    char longest[EV_QUEUE_ID_MAX + 2];
    memset(longest, 'Q', sizeof longest);
    longest[EV_QUEUE_ID_MAX] = '\0';
    assert_true(ev_queue_id_ok(longest));
    longest[EV_QUEUE_ID_MAX] = 'Q';
    longest[EV_QUEUE_ID_MAX + 1] = '\0';
    assert_false(ev_queue_id_ok(longest));
    assert_int_equal(ev_publish_queue_added(w->bus, "has space"), -1);

    /* Dropped on arrival, in the subscription's order: then a good one comes through. */
    static const struct {
        const char *subject;
        const char *data;
        size_t len;
    } bad[] = {
        { BUS_SUBJECT_QUEUE_ADDED, "\xff\xff\xff", 3 },         /* not protobuf */
        { BUS_SUBJECT_QUEUE_ADDED, "\x0a\x03" "a b", 5 },        /* queue_id "a b" */
        { BUS_SUBJECT_QUEUE_ADDED, "", 0 },                      /* no queue_id */
        { BUS_SUBJECT_BLOCK_CHANGED, "\x08\x07", 2 },            /* kind 7 */
        { BUS_SUBJECT_BLOCK_CHANGED, "\x08\x01", 2 },            /* added, no block */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(bus_publish(w->bus, bad[i].subject, bad[i].data, bad[i].len), 0);
    assert_int_equal(ev_publish_queue_added(w->bus, "GOOD1"), 0);
    expect_seen(w, "queue GOOD1");
    ev_block_t blk = { .network = "198.51.100.7/32", .reason = "" };
    assert_int_equal(ev_publish_block_changed(w->bus, EV_BLOCK_ADDED, &blk), 0);
    expect_seen(w, "block 1 198.51.100.7/32 reason= since=0 until=0 svc=0 offense=0");
}

/* ---- the limiter's requests, through lib/bus/lim.h ------------------------------------- */

typedef struct limiter_side {
    world_t *w;
    int asked;
    char last[300];
} limiter_side_t;

static void serve_auth(void *arg, const ev_auth_check_t *req, const char *reply)
{
    limiter_side_t *l = arg;
    l->asked++;
    snprintf(l->last, sizeof l->last, "auth svc=%d client=%s user=%s", req->service,
             req->client_addr, req->user);
    ev_check_reply_t r = { .verdict = POSTERN__VERDICT__VERDICT_BLOCKED, .reason = "harvesting",
                           .until_ms = 123456, .delay_ms = 5 };
    assert_int_equal(ev_reply_check(l->w->bus, reply, &r), 0);
}

static void serve_send(void *arg, const ev_send_check_t *req, const char *reply)
{
    limiter_side_t *l = arg;
    l->asked++;
    snprintf(l->last, sizeof l->last, "send svc=%d user=%s client=%s rcpts=%u id=%s inst=%s",
             req->service, req->user, req->client_addr, req->rcpt_count, req->queue_id,
             req->instance);
    ev_check_reply_t r = { .verdict = POSTERN__VERDICT__VERDICT_THROTTLE, .reason = "slow down",
                           .retry_after_s = 60 };
    assert_int_equal(ev_reply_check(l->w->bus, reply, &r), 0);
}

static void serve_rcpt(void *arg, const ev_rcpt_failure_t *req, const char *reply)
{
    limiter_side_t *l = arg;
    l->asked++;
    snprintf(l->last, sizeof l->last, "rcpt svc=%d client=%s rcpt=%s", req->service,
             req->client_addr, req->recipient);
    ev_check_reply_t r = { .verdict = POSTERN__VERDICT__VERDICT_ALLOW, .delay_ms = 500 };
    assert_int_equal(ev_reply_check(l->w->bus, reply, &r), 0);
}

static void serve_release(void *arg, const char *user, const char *queue_id)
{
    limiter_side_t *l = arg;
    l->asked++;
    snprintf(l->last, sizeof l->last, "release user=%s id=%s", user, queue_id);
    l->w->calls++;
}

/* Two pages: 192.0.2.128/25, 198.51.100.0/24 (ended) and 203.0.113.0/24 with the exempt
 * network, then 2001:db8::/64, after the network the first page ended with. While it serves
 * the second page the limiter lifts 192.0.2.128/25 (in the first page) and adds
 * 198.18.0.0/24 (behind the cursor, in no page): the front end's copy must end without the
 * one and with the other. A request without paging gets nothing. */
static void serve_blocks(void *arg, const ev_block_list_request_t *req, const char *reply)
{
    limiter_side_t *l = arg;
    l->asked++;
    snprintf(l->last, sizeof l->last, "blocks paged=%d after=%s", req->paged, req->after);
    ev_block_t first[] = {
        { .network = "192.0.2.128/25", .reason = "lifted soon", .until_ms = INT64_MAX / 2 },
        { .network = "198.51.100.0/24", .reason = "old", .until_ms = 1 },
        { .network = "203.0.113.0/24", .reason = "harvesting", .until_ms = INT64_MAX / 2 },
    };
    ev_block_t second[] = {
        { .network = "2001:db8::/64", .reason = "v6", .until_ms = INT64_MAX / 2 },
    };
    const char *exempt[] = { "203.0.113.9/32" };
    ev_block_page_t page = { .blocks = first, .nblocks = 3, .exempt = exempt, .nexempt = 1,
                             .more = true, .next_after = "203.0.113.0/24", .total = 4 };
    if (!req->paged)
        return;
    if (*req->after) {
        assert_string_equal(req->after, "203.0.113.0/24");
        page = (ev_block_page_t){ .blocks = second, .nblocks = 1, .total = 4 };
        ev_block_t added = { .network = "198.18.0.0/24", .reason = "new", .until_ms = INT64_MAX / 2 };
        assert_int_equal(ev_publish_block_changed(l->w->bus, EV_BLOCK_LIFTED, &first[0]), 0);
        assert_int_equal(ev_publish_block_changed(l->w->bus, EV_BLOCK_ADDED, &added), 0);
    }
    assert_true(ev_block_list_block_size(&first[0]) > strlen(first[0].network));
    assert_int_equal(ev_block_list_exempt_size(exempt[0]), 2 + strlen(exempt[0]));
    assert_int_equal(ev_reply_block_page(l->w->bus, reply, &page), 0);
    l->w->calls++;
}

typedef struct verdict_seen {
    world_t *w;
    lim_verdict_t v;
} verdict_seen_t;

static void verdict_cb(void *arg, const lim_verdict_t *v)
{
    verdict_seen_t *s = arg;
    s->v = *v;
    s->w->calls++;
}

static void test_limiter_requests(void **state)
{
    world_t *w = world(state);
    limiter_side_t l = { .w = w };
    assert_int_equal(ev_subscribe_auth_check(w->bus, serve_auth, &l), 0);
    assert_int_equal(ev_subscribe_send_check(w->bus, serve_send, &l), 0);
    assert_int_equal(ev_subscribe_rcpt_failure(w->bus, serve_rcpt, &l), 0);
    assert_int_equal(ev_subscribe_send_release(w->bus, serve_release, &l), 0);
    assert_int_equal(ev_subscribe_block_list_request(w->bus, serve_blocks, &l), 0);
    assert_int_equal(ev_reply_check(w->bus, NULL, &(ev_check_reply_t){ 0 }), -1);

    /* lim_create() asks for the blocks at once, page by page. */
    lim_t *lim = lim_create(&w->loop, w->bus, NULL, NULL);
    for (int i = 0; i < 100 && !(lim_blocked(lim, "2001:db8::5", NULL, 0, NULL) &&
                                 lim_blocked(lim, "198.18.0.5", NULL, 0, NULL));
         i++)
        run_until(w, w->calls + 100, 50);
    assert_true(lim_blocked(lim, "203.0.113.5", NULL, 0, NULL));
    assert_true(lim_blocked(lim, "2001:db8::5", NULL, 0, NULL)); /* the second page */
    assert_true(lim_blocked(lim, "198.18.0.5", NULL, 0, NULL));  /* added meanwhile */
    assert_false(lim_blocked(lim, "192.0.2.130", NULL, 0, NULL)); /* lifted meanwhile */
    assert_int_equal(l.asked, 2);
    assert_string_equal(l.last, "blocks paged=1 after=203.0.113.0/24");
    assert_false(lim_blocked(lim, "203.0.113.9", NULL, 0, NULL));  /* exempt */
    assert_false(lim_blocked(lim, "198.51.100.5", NULL, 0, NULL)); /* over */

    verdict_seen_t s = { .w = w };
    int before = w->calls;
    assert_int_equal(lim_check_auth(lim, POSTERN__SERVICE__SERVICE_POP3, "192.0.2.1",
                                    "dave@example.test", verdict_cb, &s), 0);
    run_until(w, before + 1, 5000);
    assert_string_equal(l.last, "auth svc=2 client=192.0.2.1 user=dave@example.test");
    assert_true(s.v.answered);
    assert_int_equal(s.v.verdict, POSTERN__VERDICT__VERDICT_BLOCKED);
    assert_string_equal(s.v.reason, "harvesting");
    assert_int_equal(s.v.until_ms, 123456);
    assert_int_equal(s.v.delay_ms, 5);

    before = w->calls;
    assert_int_equal(lim_check_send(lim, POSTERN__SERVICE__SERVICE_SMTP, "erin@example.test",
                                    "192.0.2.2", 4, "QID1", "node:3", verdict_cb, &s), 0);
    run_until(w, before + 1, 5000);
    assert_string_equal(l.last, "send svc=1 user=erin@example.test client=192.0.2.2 rcpts=4 "
                                "id=QID1 inst=node:3");
    assert_int_equal(s.v.verdict, POSTERN__VERDICT__VERDICT_THROTTLE);
    assert_int_equal(s.v.retry_after_s, 60);
    assert_string_equal(s.v.reason, "slow down");

    before = w->calls;
    assert_int_equal(lim_rcpt_failure(lim, POSTERN__SERVICE__SERVICE_SMTP, "192.0.2.3",
                                      "nobody@example.test", verdict_cb, &s), 0);
    run_until(w, before + 1, 5000);
    assert_string_equal(l.last, "rcpt svc=1 client=192.0.2.3 rcpt=nobody@example.test");
    assert_int_equal(s.v.verdict, POSTERN__VERDICT__VERDICT_ALLOW);
    assert_int_equal(s.v.delay_ms, 500);

    before = w->calls;
    lim_release(lim, "erin@example.test", "QID1");
    run_until(w, before + 1, 5000);
    assert_string_equal(l.last, "release user=erin@example.test id=QID1");

    /* A block broadcast reaches the local copy. */
    ev_block_t blk = { .network = "192.0.2.0/24", .reason = "now", .until_ms = INT64_MAX / 2 };
    assert_int_equal(ev_publish_block_changed(w->bus, EV_BLOCK_ADDED, &blk), 0);
    for (int i = 0; i < 100 && !lim_blocked(lim, "192.0.2.77", NULL, 0, NULL); i++)
        run_until(w, w->calls + 100, 50);
    assert_true(lim_blocked(lim, "192.0.2.77", NULL, 0, NULL));
    lim_destroy(&lim);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_events_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_messages_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limiter_requests, setup, teardown),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    nats_Close();
    return failed;
}
