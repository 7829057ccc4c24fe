/* Outbound connections (conn_connect) against a listener in the same loop, plain and with
 * STARTTLS-style client TLS against a server conn with a self-signed certificate made for
 * the test. Every wait is on the loop; a watchdog timer fails a test that hangs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/conn.h"
#include "net/tls.h"

#define WATCHDOG_MS 10000

typedef struct files {
    char dir[64];
    char cert[128];
    char key[128];
} files_t;

/* What the listener's side does. */
typedef enum server_mode {
    SERVER_GREET,    /* "220 hi"; closes on "QUIT" */
    SERVER_STARTTLS, /* "220 ready" and a line sent early, then TLS; answers "250 tls ok" */
    SERVER_DROP,     /* "220 ready", then closes at the first byte of the client's hello */
} server_mode_t;

typedef struct test_run {
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_timer_t watchdog;
    int port;
    server_mode_t mode;
    tls_t *server_tls;
    tls_client_t *client_tls;
    const char *sni, *verify_name;
    /* what the client saw */
    bool connected, tls_ready, closed, verified, early_input_seen;
    int data_events;
    char error[256];
    char peer[64];
    int peer_port, local_port;
    char received[256];
    bool close_right_away; /* conn_close() at once after conn_connect() */
} test_run_t;

/* ---- a self-signed certificate for mx.test and 127.0.0.1 ----------------------- */

static int make_cert(files_t *f)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/test_lib_conn.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->cert, sizeof f->cert, "%s/cert.pem", f->dir);
    snprintf(f->key, sizeof f->key, "%s/key.pem", f->dir);
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"mx.test", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    const char *exts[][2] = { { "basicConstraints", "critical,CA:TRUE" },
                              { "subjectAltName", "DNS:mx.test,IP:127.0.0.1" } };
    for (size_t i = 0; i < 2; i++) {
        X509_EXTENSION *e = X509V3_EXT_nconf(NULL, &ctx, exts[i][0], exts[i][1]);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, key, EVP_sha256());
    FILE *cf = fopen(f->cert, "w"), *kf = fopen(f->key, "w");
    int ok = cf && kf && PEM_write_X509(cf, x) &&
             PEM_write_PrivateKey(kf, key, NULL, NULL, 0, NULL, NULL);
    if (cf)
        fclose(cf);
    if (kf)
        fclose(kf);
    X509_free(x);
    EVP_PKEY_free(key);
    return ok ? 0 : -1;
}

static int setup(void **state)
{
    static files_t f;
    *state = &f;
    return make_cert(&f);
}

static int teardown(void **state)
{
    files_t *f = *state;
    unlink(f->cert);
    unlink(f->key);
    rmdir(f->dir);
    return 0;
}

/* ---- the listener's side ---------------------------------------------------------- */

static void server_cb(conn_t *c, conn_event_t ev, void *arg)
{
    test_run_t *t = arg;
    buf_t *in = conn_input(c);
    if (ev == CONN_TLS_READY || ev == CONN_CLOSED || ev == CONN_WRITABLE || ev == CONN_CONNECTED)
        return;
    /* CONN_DATA */
    switch (t->mode) {
    case SERVER_GREET:
        if (strstr(in->data, "QUIT\r\n"))
            conn_close(c);
        break;
    case SERVER_STARTTLS:
        if (conn_is_tls(c) && strstr(in->data, "EHLO\r\n")) {
            buf_reset(in);
            conn_printf(c, "250 tls ok\r\n");
        }
        break;
    case SERVER_DROP:
        conn_close(c);
        break;
    }
}

static void accept_cb(uv_stream_t *s, int status)
{
    test_run_t *t = s->data;
    assert_int_equal(status, 0);
    conn_t *c = conn_accept(s, 4096, server_cb, t);
    assert_non_null(c);
    switch (t->mode) {
    case SERVER_GREET:
        conn_printf(c, "220 hi\r\n");
        break;
    case SERVER_STARTTLS:
        /* the second line must never reach the client's session: it arrives before the
         * handshake (RFC 3207 section 4.2) */
        conn_printf(c, "220 ready\r\n250 early\r\n");
        conn_start_tls(c, tls_new_ssl(t->server_tls), false);
        break;
    case SERVER_DROP:
        conn_printf(c, "220 ready\r\n");
        break;
    }
}

/* ---- the client's side ------------------------------------------------------------- */

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void client_cb(conn_t *c, conn_event_t ev, void *arg)
{
    test_run_t *t = arg;
    buf_t *in = conn_input(c);
    switch (ev) {
    case CONN_CONNECTED:
        assert_false(t->connected);
        t->connected = true;
        snprintf(t->peer, sizeof t->peer, "%s", conn_peer(c));
        t->peer_port = conn_peer_port(c);
        t->local_port = conn_local_port(c);
        break;
    case CONN_DATA:
        t->data_events++;
        if (conn_is_tls(c)) {
            snprintf(t->received, sizeof t->received, "%s", in->data);
            buf_reset(in);
            conn_input_consumed(c);
            conn_close(c);
        } else if (t->mode == SERVER_GREET && strstr(in->data, "220 hi\r\n")) {
            snprintf(t->received, sizeof t->received, "%s", in->data);
            buf_reset(in);
            conn_input_consumed(c);
            conn_printf(c, "QUIT\r\n");
        } else if (t->mode == SERVER_STARTTLS && strstr(in->data, "250 early\r\n")) {
            /* not consumed: conn_start_tls() must drop it */
            t->early_input_seen = true;
            conn_start_tls(c, tls_client_new_ssl(t->client_tls, t->sni, t->verify_name), false);
        } else if (t->mode == SERVER_DROP && strstr(in->data, "220 ready\r\n")) {
            buf_reset(in);
            conn_start_tls(c, tls_client_new_ssl(t->client_tls, t->sni, t->verify_name), false);
        }
        break;
    case CONN_TLS_READY:
        t->tls_ready = true;
        t->verified = conn_tls_verified(c);
        assert_int_equal(in->len, 0); /* the early line was discarded */
        assert_string_not_equal(conn_tls_version(c), "");
        conn_printf(c, "EHLO\r\n");
        break;
    case CONN_WRITABLE:
        break;
    case CONN_CLOSED:
        t->closed = true;
        snprintf(t->error, sizeof t->error, "%s", conn_error(c));
        close_handle((uv_handle_t *)&t->listener);
        uv_timer_stop(&t->watchdog);
        close_handle((uv_handle_t *)&t->watchdog);
        break;
    }
}

static void watchdog_cb(uv_timer_t *timer)
{
    (void)timer;
    fail_msg("no CONN_CLOSED within %d ms", WATCHDOG_MS);
}

static void run_start(test_run_t *t, server_mode_t mode)
{
    assert_int_equal(uv_loop_init(&t->loop), 0);
    t->mode = mode;
    uv_tcp_init(&t->loop, &t->listener);
    t->listener.data = t;
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    assert_int_equal(uv_tcp_bind(&t->listener, (struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&t->listener, 8, accept_cb), 0);
    int len = sizeof sin;
    uv_tcp_getsockname(&t->listener, (struct sockaddr *)&sin, &len);
    t->port = ntohs(sin.sin_port);
    uv_timer_init(&t->loop, &t->watchdog);
    uv_timer_start(&t->watchdog, watchdog_cb, WATCHDOG_MS, 0);
}

/* Connects to port (the listener's unless given) and runs the loop until everything is
 * closed. */
static void run_client(test_run_t *t, int port)
{
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", port ? port : t->port, &sin);
    conn_t *c = conn_connect(&t->loop, (struct sockaddr *)&sin, 4096, client_cb, t);
    assert_non_null(c);
    assert_false(t->connected || t->closed); /* never from inside the call */
    assert_string_equal(conn_peer(c), "127.0.0.1");
    if (t->close_right_away)
        conn_close(c);
    assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
    assert_true(t->closed);
    assert_int_equal(uv_loop_close(&t->loop), 0);
}

static void test_plain(void **state)
{
    (void)state;
    test_run_t t = { 0 };
    run_start(&t, SERVER_GREET);
    run_client(&t, 0);
    assert_true(t.connected);
    assert_string_equal(t.peer, "127.0.0.1");
    assert_int_equal(t.peer_port, t.port);
    assert_true(t.local_port > 0);
    assert_string_equal(t.received, "220 hi\r\n");
    assert_string_equal(t.error, "connection closed by peer");
}

static void test_refused(void **state)
{
    (void)state;
    test_run_t t = { 0 };
    run_start(&t, SERVER_GREET);
    int port = t.port;
    /* a port that was just listened on and is free now: nothing accepts there */
    uv_close((uv_handle_t *)&t.listener, NULL);
    uv_run(&t.loop, UV_RUN_NOWAIT);
    run_client(&t, port);
    assert_false(t.connected);
    assert_string_equal(t.error, "connection refused");
}

static void test_close_before_connected(void **state)
{
    (void)state;
    test_run_t t = { .close_right_away = true };
    run_start(&t, SERVER_GREET);
    run_client(&t, 0);
    assert_false(t.connected);
    assert_string_equal(t.error, "");
}

typedef struct tls_case {
    const char *name;
    bool trust; /* the certificate as ca_file */
    const char *sni, *verify_name;
    bool ready;    /* CONN_TLS_READY, else CONN_CLOSED with error */
    bool verified; /* conn_tls_verified() */
    const char *error;
} tls_case_t;

static const tls_case_t tls_cases[] = {
    { "untrusted, name required", false, "mx.test", "mx.test", false, false,
      "TLS handshake failed: certificate verify failed (self-signed certificate)" },
    { "untrusted, opportunistic", false, "mx.test", NULL, true, false, "" },
    { "trusted, name required", true, "mx.test", "mx.test", true, true, "" },
    { "trusted, other name required", true, "other.test", "other.test", false, false,
      "TLS handshake failed: certificate verify failed (hostname mismatch)" },
    { "trusted, opportunistic", true, "mx.test", NULL, true, true, "" },
    { "trusted, opportunistic, other name", true, "other.test", NULL, true, false, "" },
    { "trusted, opportunistic, no name", true, NULL, NULL, true, false, "" },
    { "trusted, IP address required", true, "127.0.0.1", "127.0.0.1", true, true, "" },
    { "trusted, other IP address required", true, NULL, "127.0.0.2", false, false,
      "TLS handshake failed: certificate verify failed (IP address mismatch)" },
};

static void test_tls(void **state)
{
    files_t *f = *state;
    char err[256] = "";
    tls_t *server_tls = tls_create(f->cert, f->key, err, sizeof err);
    assert_non_null(server_tls);
    for (size_t i = 0; i < sizeof tls_cases / sizeof tls_cases[0]; i++) {
        const tls_case_t *c = &tls_cases[i];
        print_message("case: %s\n", c->name);
        test_run_t t = { .server_tls = server_tls, .sni = c->sni, .verify_name = c->verify_name };
        t.client_tls = tls_client_create(c->trust ? f->cert : NULL, err, sizeof err);
        assert_non_null(t.client_tls);
        run_start(&t, SERVER_STARTTLS);
        run_client(&t, 0);
        print_message("  -> ready=%d verified=%d error=\"%s\"\n", t.tls_ready, t.verified, t.error);
        assert_true(t.early_input_seen);
        assert_int_equal(t.tls_ready, c->ready);
        assert_int_equal(t.verified, c->verified);
        assert_string_equal(t.error, c->error);
        if (c->ready)
            assert_string_equal(t.received, "250 tls ok\r\n");
        tls_client_destroy(&t.client_tls);
        assert_null(t.client_tls);
    }
    tls_destroy(&server_tls);
}

static void test_tls_peer_drops(void **state)
{
    (void)state;
    char err[256] = "";
    test_run_t t = { .sni = "mx.test" };
    t.client_tls = tls_client_create(NULL, err, sizeof err);
    assert_non_null(t.client_tls);
    run_start(&t, SERVER_DROP);
    run_client(&t, 0);
    assert_false(t.tls_ready);
    assert_string_equal(t.error, "TLS handshake failed: connection closed by peer");
    tls_client_destroy(&t.client_tls);
}

static void test_tls_client_create_errors(void **state)
{
    (void)state;
    char err[256] = "";
    assert_null(tls_client_create("/nonexistent/ca.pem", err, sizeof err));
    assert_non_null(strstr(err, "cannot load CA file /nonexistent/ca.pem"));
    tls_client_t *t = tls_client_create(NULL, err, sizeof err);
    assert_non_null(t);
    assert_null(tls_client_new_ssl(t, "mx.test", "")); /* nothing to verify against */
    SSL *ssl = tls_client_new_ssl(t, "mx.test", NULL);
    assert_non_null(ssl);
    assert_int_equal(SSL_is_server(ssl), 0);
    SSL_free(ssl);
    tls_client_destroy(&t);
    tls_client_destroy(&t); /* harmless on NULL */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_close_before_connected),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_tls_peer_drops),
        cmocka_unit_test(test_tls_client_create_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
