/* Request/reply load over NATS: N requests from C threads, each waiting for its reply,
 * reported as requests per second and p50/p99 latency. With --echo it also serves the
 * subject itself (a bare echo), which is the baseline the limiter is compared with. With
 * --rate R the threads together send R requests a second on a fixed schedule (each waits
 * for its reply first), and latency counts from the scheduled time, so a stall is not
 * hidden by the requests it delays.
 *
 *   lim_bench --url nats://127.0.0.1:4222 --subject postern.limiter.auth --requests 20000
 *             --concurrency 4 [--echo] [--kind auth|send] [--rate R]
 *
 * The requester logs in as NATS_USER with NATS_PASSWORD or NATS_PASSWORD_FILE (a front
 * end's user: the limiter answers front ends' inboxes); the echo as ECHO_NATS_USER with
 * ECHO_NATS_PASSWORD_FILE (a user that may subscribe to the subject).
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus/nats_opts.h"
#include "postern.pb-c.h"

typedef struct bench {
    natsConnection *nc;
    const char *subject;
    const char *kind;
    int per_thread;
    double interval_us; /* per thread, with --rate; 0: as fast as replies come */
    int threads;        /* the threads' schedules are staggered: arrivals even in time */
    double start_us;
    double *lat_us; /* one slot per request */
} bench_t;

typedef struct worker {
    bench_t *b;
    int index;
    int failures;
} worker_t;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static size_t build_request(const bench_t *b, int worker, int i, uint8_t *buf)
{
    char addr[64], user[64], qid[32];
    /* Spread over many keys so the limiter's tables, not one hot key, are measured. */
    snprintf(addr, sizeof addr, "198.18.%d.%d", (worker * 37 + i) % 250, i % 250 + 1);
    snprintf(user, sizeof user, "bench%d@bench.test", (worker * 1000 + i) % 5000);
    snprintf(qid, sizeof qid, "B%d-%d", worker, i);
    if (strcmp(b->kind, "send") == 0) {
        Postern__SendCheck m = POSTERN__SEND_CHECK__INIT;
        m.service = POSTERN__SERVICE__SERVICE_SMTP;
        m.user = user;
        m.client_addr = addr;
        m.rcpt_count = 1;
        m.queue_id = qid;
        return protobuf_c_message_pack(&m.base, buf);
    }
    Postern__AuthCheck m = POSTERN__AUTH_CHECK__INIT;
    m.service = POSTERN__SERVICE__SERVICE_SMTP;
    m.client_addr = addr;
    m.user = user;
    return protobuf_c_message_pack(&m.base, buf);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    bench_t *b = w->b;
    uint8_t buf[256];
    for (int i = 0; i < b->per_thread; i++) {
        size_t len = build_request(b, w->index, i, buf);
        natsMsg *reply = NULL;
        double t0 = now_us();
        if (b->interval_us > 0) {
            /* Sleep until the scheduled time (no spinning: on a small machine a spinning
             * client takes the CPU the servers under test need). */
            double due = b->start_us + (i + (double)w->index / b->threads) * b->interval_us;
            time_t sec = (time_t)(due / 1e6);
            struct timespec ts = { sec, (long)((due - (double)sec * 1e6) * 1e3) };
            while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
                ;
            t0 = due;
        }
        natsStatus s = natsConnection_Request(&reply, b->nc, b->subject, buf, (int)len, 2000);
        double dt = now_us() - t0;
        if (s != NATS_OK)
            w->failures++;
        natsMsg_Destroy(reply);
        b->lat_us[w->index * b->per_thread + i] = dt;
    }
    return NULL;
}

static void echo_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)sub;
    (void)closure;
    /* Reply with a CheckReply-sized payload so both sides move comparable bytes. */
    Postern__CheckReply r = POSTERN__CHECK_REPLY__INIT;
    r.verdict = POSTERN__VERDICT__VERDICT_ALLOW;
    uint8_t buf[64];
    size_t len = protobuf_c_message_pack(&r.base, buf);
    natsConnection_Publish(nc, natsMsg_GetReply(msg), buf, (int)len);
    natsMsg_Destroy(msg);
}

/* Connects as user (password from the file, or pass) to url. NULL on failure. */
static natsConnection *connect_as(const char *url, const char *name, const char *user,
                                  const char *file, const char *pass)
{
    char password[BUS_PASSWORD_MAX + 1] = "", err[256] = "";
    if (file && *file && bus_password_file(file, password, sizeof password) < 0) {
        fprintf(stderr, "cannot read %s\n", file);
        return NULL;
    }
    bus_opts_t o = {
        .url = url, .name = name, .user = user,
        .password = *password ? password : pass, .tls_ca = getenv("NATS_TLS_CA"),
    };
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    /* Both ends send at once, as the services do (bus.c), so neither waits for the
     * libnats flusher. */
    if (natsOptions_Create(&opts) != NATS_OK ||
        bus_nats_options(opts, &o, err, sizeof err) != NATS_OK ||
        natsOptions_SetSendAsap(opts, true) != NATS_OK ||
        natsConnection_Connect(&nc, opts) != NATS_OK) {
        fprintf(stderr, "cannot connect to %s as %s: %s\n", url, user ? user : "-",
                *err ? err : nats_GetLastError(NULL));
        nc = NULL;
    }
    natsOptions_Destroy(opts);
    return nc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *url = "nats://127.0.0.1:4222", *subject = "postern.limiter.auth", *kind = "auth";
    int requests = 20000, concurrency = 4, echo = 0;
    double rate = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else if (!strcmp(argv[i], "--subject") && i + 1 < argc) subject = argv[++i];
        else if (!strcmp(argv[i], "--kind") && i + 1 < argc) kind = argv[++i];
        else if (!strcmp(argv[i], "--requests") && i + 1 < argc) requests = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--concurrency") && i + 1 < argc) concurrency = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--echo")) echo = 1;
        else if (!strcmp(argv[i], "--rate") && i + 1 < argc) rate = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--url U] [--subject S] [--kind auth|send] "
                            "[--requests N] [--concurrency C] [--echo] [--rate R]\n", argv[0]);
            return 2;
        }
    }
    if (concurrency < 1 || requests < concurrency)
        return 2;
    natsConnection *nc = NULL, *echo_nc = NULL;
    natsSubscription *sub = NULL;
    nc = connect_as(url, "lim_bench", getenv("NATS_USER"), getenv("NATS_PASSWORD_FILE"),
                    getenv("NATS_PASSWORD"));
    if (!nc)
        return 1;
    if (echo) {
        echo_nc = connect_as(url, "lim_bench-echo", getenv("ECHO_NATS_USER"),
                             getenv("ECHO_NATS_PASSWORD_FILE"), NULL);
        if (!echo_nc)
            return 1;
        natsConnection_Subscribe(&sub, echo_nc, subject, echo_cb, NULL);
        natsConnection_Flush(echo_nc);
    }
    bench_t b = { nc, subject, kind, requests / concurrency, 0, concurrency, 0, NULL };
    if (rate > 0)
        b.interval_us = 1e6 * concurrency / rate;
    b.lat_us = calloc((size_t)concurrency * (size_t)b.per_thread, sizeof *b.lat_us);
    pthread_t *th = calloc((size_t)concurrency, sizeof *th);
    worker_t *w = calloc((size_t)concurrency, sizeof *w);
    double t0 = now_us();
    b.start_us = t0 + 1000;
    for (int i = 0; i < concurrency; i++) {
        w[i].b = &b;
        w[i].index = i;
        pthread_create(&th[i], NULL, worker_main, &w[i]);
    }
    int failures = 0;
    for (int i = 0; i < concurrency; i++) {
        pthread_join(th[i], NULL);
        failures += w[i].failures;
    }
    double secs = (now_us() - t0) / 1e6;
    size_t n = (size_t)concurrency * (size_t)b.per_thread;
    qsort(b.lat_us, n, sizeof *b.lat_us, cmp_double);
    printf("subject=%s requests=%zu failures=%d seconds=%.3f rps=%.0f p50_us=%.0f p99_us=%.0f"
           " paced_rps=%.0f\n",
           subject, n, failures, secs, n / secs, b.lat_us[n / 2], b.lat_us[n * 99 / 100], rate);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(echo_nc);
    natsConnection_Destroy(nc);
    free(b.lat_us);
    free(th);
    free(w);
    nats_Close();
    return failures ? 1 : 0;
}
