/* relay_send: delivers one message with relayd's SMTP client (services/relayd/smtpc), for
 * tests/e2e/test_relayd_client.py.
 *
 *   relay_send [--tls may|encrypt|verify] [--ca FILE] [--peer-name NAME] [--helo NAME]
 *              [--timeout MS] [--count N] HOST PORT FROM RCPT... < message
 *
 * HOST is an address or a name (resolved before the session starts); FROM "" is the null
 * sender. Prints one line per recipient, "RCPT CODE STATUS TEXT local=yes|no" (STATUS "-"
 * when the reply had none), then "tls=VERSION|none verified=yes|no". --count N sends the
 * message N times over the one session (a block of lines for each; the session ending
 * early ends the run). Exit 0 when the session ran, whatever the replies; 1 when it could
 * not start; 2 on bad usage. */

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "smtpc.h"

typedef struct run {
    const smtpc_msg_t *msg;
    smtpc_t *session;
    long left; /* transactions still to run */
} run_t;

static void print_tls(const smtpc_t *c)
{
    const char *v = smtpc_tls_version(c);
    printf("tls=%s verified=%s\n", v[0] ? v : "none", smtpc_tls_verified(c) ? "yes" : "no");
}

static void print_reply(const char *rcpt, const smtpc_reply_t *r)
{
    printf("%s %d %s %s local=%s\n", rcpt, r->code, r->status[0] ? r->status : "-", r->text,
           r->local ? "yes" : "no");
}

static void done_cb(void *arg, smtpc_t *c, const smtpc_reply_t *results, size_t n)
{
    run_t *run = arg;
    for (size_t i = 0; i < n; i++)
        print_reply(run->msg->rcpts[i], &results[i]);
    print_tls(c);
    if (--run->left > 0 && smtpc_idle(c) && smtpc_send(c, run->msg, done_cb, run) == 0)
        return;
    smtpc_close(&run->session);
}

static void ready_cb(void *arg, smtpc_t *c, const smtpc_reply_t *failure)
{
    run_t *run = arg;
    if (failure) {
        for (size_t i = 0; i < run->msg->nrcpts; i++)
            print_reply(run->msg->rcpts[i], failure);
        print_tls(c);
        smtpc_close(&run->session);
        return;
    }
    if (smtpc_send(c, run->msg, done_cb, run) < 0) {
        fprintf(stderr, "relay_send: the session took no message\n");
        smtpc_close(&run->session);
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: relay_send [--tls may|encrypt|verify] [--ca FILE] [--peer-name NAME] "
                    "[--helo NAME] [--timeout MS] [--count N] HOST PORT FROM RCPT... < message\n");
    return 2;
}

static int read_all(FILE *f, buf_t *out)
{
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0)
        if (buf_append(out, tmp, n) < 0)
            return -1;
    return ferror(f) ? -1 : 0;
}

int main(int argc, char **argv)
{
    smtpc_opts_t opts = { .helo_name = "relay-send.test", .tls_policy = SMTPC_TLS_MAY };
    const char *ca = NULL;
    long count = 1;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (i + 1 >= argc)
            return usage();
        const char *opt = argv[i], *val = argv[i + 1];
        if (strcmp(opt, "--tls") == 0) {
            if (strcmp(val, "may") == 0)
                opts.tls_policy = SMTPC_TLS_MAY;
            else if (strcmp(val, "encrypt") == 0)
                opts.tls_policy = SMTPC_TLS_ENCRYPT;
            else if (strcmp(val, "verify") == 0)
                opts.tls_policy = SMTPC_TLS_VERIFY;
            else
                return usage();
        } else if (strcmp(opt, "--ca") == 0) {
            ca = val;
        } else if (strcmp(opt, "--peer-name") == 0) {
            opts.peer_name = val;
        } else if (strcmp(opt, "--helo") == 0) {
            opts.helo_name = val;
        } else if (strcmp(opt, "--timeout") == 0) {
            unsigned ms = (unsigned)strtoul(val, NULL, 10);
            if (ms == 0)
                return usage();
            opts.timeouts = (smtpc_timeouts_t){ ms, ms, ms, ms, ms, ms, ms, ms, ms };
        } else if (strcmp(opt, "--count") == 0) {
            count = strtol(val, NULL, 10);
            if (count < 1)
                return usage();
        } else {
            return usage();
        }
    }
    if (argc - i < 4)
        return usage();
    const char *host = argv[i], *port = argv[i + 1];
    smtpc_msg_t msg = {
        .sender = argv[i + 2],
        .rcpts = (const char *const *)&argv[i + 3],
        .nrcpts = (size_t)(argc - i - 3),
    };

    log_init("relay_send");
    buf_t data;
    buf_init(&data);
    if (read_all(stdin, &data) < 0) {
        fprintf(stderr, "relay_send: cannot read the message\n");
        return 1;
    }
    msg.data = data.data;
    msg.len = data.len;

    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "relay_send: %s: %s\n", host, gai_strerror(gai));
        buf_free(&data);
        return 1;
    }
    char err[256];
    tls_client_t *tls = tls_client_create(ca, err, sizeof err);
    if (!tls) {
        fprintf(stderr, "relay_send: %s\n", err);
        freeaddrinfo(ai);
        buf_free(&data);
        return 1;
    }
    opts.tls = tls;

    uv_loop_t loop;
    uv_loop_init(&loop);
    run_t run = { .msg = &msg, .left = count };
    run.session = smtpc_open(&loop, ai->ai_addr, &opts, ready_cb, &run);
    freeaddrinfo(ai);
    int rc = 0;
    if (!run.session) {
        fprintf(stderr, "relay_send: cannot start a session\n");
        rc = 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    tls_client_destroy(&tls);
    buf_free(&data);
    fflush(stdout);
    return rc;
}
