/* Fills the limiter's stream with failed-login events, as front ends publish them, for the
 * replay figure of `make bench`: how long a limiter that starts takes to rebuild its
 * counters from an hour of traffic.
 *
 *   stream_fill --url nats://127.0.0.1:4222 --events 1000000 [--networks 50000]
 *
 * Credentials from NATS_USER and NATS_PASSWORD or NATS_PASSWORD_FILE (a front end's user
 * may publish postern.event.auth). Publishes, then waits until the stream holds them all,
 * and prints events, seconds and events per second. */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus/nats_opts.h"
#include "bus/subjects.h"
#include "postern.pb-c.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *url = "nats://127.0.0.1:4222";
    long events = 1000000, networks = 50000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--url") && i + 1 < argc) url = argv[++i];
        else if (!strcmp(argv[i], "--events") && i + 1 < argc) events = atol(argv[++i]);
        else if (!strcmp(argv[i], "--networks") && i + 1 < argc) networks = atol(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--url U] [--events N] [--networks M]\n", argv[0]);
            return 2;
        }
    }
    if (events < 1 || networks < 1 || networks > 250L * 250 * 250)
        return 2;
    char password[BUS_PASSWORD_MAX + 1] = "";
    const char *file = getenv("NATS_PASSWORD_FILE");
    if (file && bus_password_file(file, password, sizeof password) < 0) {
        fprintf(stderr, "cannot read %s\n", file);
        return 1;
    }
    bus_opts_t o = {
        .url = url,
        .name = "stream_fill",
        .user = getenv("NATS_USER"),
        .password = *password ? password : getenv("NATS_PASSWORD"),
        .tls_ca = getenv("NATS_TLS_CA"),
    };
    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    char err[256];
    if (natsOptions_Create(&opts) != NATS_OK ||
        bus_nats_options(opts, &o, err, sizeof err) != NATS_OK ||
        natsConnection_Connect(&nc, opts) != NATS_OK) {
        fprintf(stderr, "cannot connect to %s: %s\n", url, nats_GetLastError(NULL));
        return 1;
    }
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    jsErrCode je = 0;
    natsConnection_JetStream(&js, nc, NULL);
    uint64_t before = 0;
    if (js_GetStreamInfo(&si, js, BUS_STREAM_LIMITER, NULL, &je) == NATS_OK)
        before = si->State.Msgs;
    jsStreamInfo_Destroy(si);

    double t0 = now_s();
    uint8_t buf[256], digest[16];
    char addr[32];
    for (long i = 0; i < events; i++) {
        long n = i % networks;
        snprintf(addr, sizeof addr, "198.%ld.%ld.%ld", 18 + n / 62500, n / 250 % 250,
                 n % 250 + 1);
        for (size_t k = 0; k < sizeof digest; k++)
            digest[k] = (uint8_t)((i >> (k % 8)) ^ (k * 31));
        Postern__AuthEvent m = POSTERN__AUTH_EVENT__INIT;
        m.service = POSTERN__SERVICE__SERVICE_SMTP;
        m.user = "nobody@bench.test";
        m.client_addr = addr;
        m.mechanism = "PLAIN";
        m.result = POSTERN__AUTH_RESULT__AUTH_BAD_CREDENTIALS;
        m.instance = "stream_fill";
        m.attempt_digest.data = digest;
        m.attempt_digest.len = sizeof digest;
        size_t len = protobuf_c_message_pack(&m.base, buf);
        while (natsConnection_Publish(nc, BUS_SUBJECT_EVENT_AUTH, buf, (int)len) != NATS_OK)
            natsConnection_FlushTimeout(nc, 1000); /* the outgoing buffer is full: drain it */
    }
    natsConnection_FlushTimeout(nc, 10000);
    uint64_t held = 0;
    for (int tries = 0; tries < 600; tries++) {
        si = NULL;
        if (js_GetStreamInfo(&si, js, BUS_STREAM_LIMITER, NULL, &je) == NATS_OK)
            held = si->State.Msgs;
        jsStreamInfo_Destroy(si);
        if (held >= before + (uint64_t)events)
            break;
        nats_Sleep(100);
    }
    double secs = now_s() - t0;
    printf("events=%ld stored=%llu seconds=%.3f events_per_s=%.0f\n", events,
           (unsigned long long)(held - before), secs, events / secs);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    nats_Close();
    return held >= before + (uint64_t)events ? 0 : 1;
}
