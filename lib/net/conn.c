#include "net/conn.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

#define CONN_READ_CHUNK 16384
#define CONN_OUTPUT_MAX (1024 * 1024) /* stop reading while this much output waits */
#define CONN_CLOSE_GRACE_MS 10000     /* longest wait for pending output at close */

struct conn {
    uv_tcp_t tcp;
    uv_timer_t close_timer;
    uv_shutdown_t shutdown;
    conn_event_cb cb;
    void *arg;
    buf_t in;
    size_t input_max;
    size_t pending_out;
    size_t low_water;     /* CONN_WRITABLE wanted at this level */
    bool want_writable;
    uv_idle_t writable_idle; /* reports CONN_WRITABLE asked for while already writable */
    bool reading;
    bool closing;
    int open_handles;
    SSL *ssl;
    BIO *rbio; /* network -> OpenSSL */
    BIO *wbio; /* OpenSSL -> network */
    bool handshaking;
    char peer[INET6_ADDRSTRLEN];
    int local_port;
    char rbuf[CONN_READ_CHUNK];
};

typedef struct write_req {
    uv_write_t req;
    conn_t *conn;
    size_t len;
    char data[];
} write_req_t;

static void conn_update_reading(conn_t *c);
static void conn_check_writable(conn_t *c);

static void close_cb(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    if (c->cb)
        c->cb(c, CONN_CLOSED, c->arg);
    buf_free(&c->in);
    SSL_free(c->ssl); /* frees both BIOs */
    free(c);
}

static void conn_close_now(conn_t *c)
{
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, close_cb);
    if (!uv_is_closing((uv_handle_t *)&c->close_timer))
        uv_close((uv_handle_t *)&c->close_timer, close_cb);
    if (!uv_is_closing((uv_handle_t *)&c->writable_idle))
        uv_close((uv_handle_t *)&c->writable_idle, close_cb);
}

static void write_cb(uv_write_t *req, int status)
{
    write_req_t *w = (write_req_t *)req;
    conn_t *c = w->conn;
    c->pending_out -= w->len;
    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        if (!c->closing) {
            c->closing = true;
            conn_close_now(c);
        }
        return;
    }
    conn_update_reading(c);
    conn_check_writable(c);
}

static void conn_check_writable(conn_t *c)
{
    if (!c->want_writable || c->closing || c->pending_out > c->low_water)
        return;
    c->want_writable = false;
    uv_idle_stop(&c->writable_idle);
    c->cb(c, CONN_WRITABLE, c->arg);
}

static void writable_idle_cb(uv_idle_t *h)
{
    conn_t *c = h->data;
    uv_idle_stop(h);
    conn_check_writable(c);
}

void conn_notify_writable(conn_t *c, size_t low_water)
{
    if (c->closing)
        return;
    c->want_writable = true;
    c->low_water = low_water;
    if (c->pending_out <= low_water)
        uv_idle_start(&c->writable_idle, writable_idle_cb);
}

static int conn_send_raw(conn_t *c, const void *data, size_t len)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return -1;
    write_req_t *w = malloc(sizeof *w + len);
    if (!w)
        return -1;
    w->conn = c;
    w->len = len;
    memcpy(w->data, data, len);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
    if (rc < 0) {
        free(w);
        return -1;
    }
    c->pending_out += len;
    return 0;
}

/* Moves what OpenSSL produced (handshake records, encrypted data) to the socket. */
static int conn_flush_tls(conn_t *c)
{
    char tmp[CONN_READ_CHUNK];
    int n;
    while ((n = BIO_read(c->wbio, tmp, sizeof tmp)) > 0)
        if (conn_send_raw(c, tmp, (size_t)n) < 0)
            return -1;
    return 0;
}

static void conn_fail(conn_t *c, const char *why)
{
    if (why)
        log_debug("connection failed", "client=%s reason=\"%s\"", c->peer, why);
    if (c->closing)
        return;
    c->closing = true;
    conn_close_now(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    conn_t *c = h->data;
    *b = uv_buf_init(c->rbuf, sizeof c->rbuf);
}

/* Decrypts what arrived; returns -1 when the TLS session is over or broken. */
static int conn_tls_input(conn_t *c, const char *data, size_t len)
{
    if (BIO_write(c->rbio, data, (int)len) != (int)len)
        return -1;
    if (c->handshaking) {
        int r = SSL_do_handshake(c->ssl);
        if (conn_flush_tls(c) < 0)
            return -1;
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
        }
        c->handshaking = false;
        c->cb(c, CONN_TLS_READY, c->arg);
        if (c->closing)
            return 0;
    }
    char tmp[CONN_READ_CHUNK];
    for (;;) {
        int n = SSL_read(c->ssl, tmp, sizeof tmp);
        if (n > 0) {
            if (buf_append(&c->in, tmp, (size_t)n) < 0)
                return -1;
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (conn_flush_tls(c) < 0)
            return -1;
        return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
    }
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = s->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        conn_fail(c, nread == UV_EOF ? NULL : uv_strerror((int)nread));
        return;
    }
    size_t before = c->in.len;
    if (c->ssl) {
        if (conn_tls_input(c, b->base, (size_t)nread) < 0) {
            conn_fail(c, "TLS error");
            return;
        }
    } else if (buf_append(&c->in, b->base, (size_t)nread) < 0) {
        conn_fail(c, "out of memory");
        return;
    }
    if (c->closing)
        return;
    if (c->in.len > before)
        c->cb(c, CONN_DATA, c->arg);
    if (!c->closing)
        conn_update_reading(c);
}

static void conn_update_reading(conn_t *c)
{
    if (c->closing)
        return;
    bool want = c->in.len < c->input_max && c->pending_out < CONN_OUTPUT_MAX;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

static void conn_fill_addresses(conn_t *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    strcpy(c->peer, "unknown");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->peer, sizeof c->peer);
        } else if (ss.ss_family == AF_INET6) {
            struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
            if (IN6_IS_ADDR_V4MAPPED(a))
                inet_ntop(AF_INET, &a->s6_addr[12], c->peer, sizeof c->peer);
            else
                inet_ntop(AF_INET6, a, c->peer, sizeof c->peer);
        }
    }
    len = sizeof ss;
    c->local_port = 0;
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        c->local_port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                                      : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

conn_t *conn_accept(uv_stream_t *server, size_t input_max, conn_event_cb cb, void *arg)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cb = cb;
    c->arg = arg;
    c->input_max = input_max;
    buf_init(&c->in);
    uv_tcp_init(server->loop, &c->tcp);
    uv_timer_init(server->loop, &c->close_timer);
    uv_idle_init(server->loop, &c->writable_idle);
    c->tcp.data = c;
    c->close_timer.data = c;
    c->writable_idle.data = c;
    c->open_handles = 3;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        /* Nobody knows this conn yet: close quietly; close_cb frees it. */
        c->cb = NULL;
        c->closing = true;
        conn_close_now(c);
        return NULL;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_fill_addresses(c);
    conn_update_reading(c);
    return c;
}

void conn_start_tls(conn_t *c, SSL *ssl, bool keep_input)
{
    c->ssl = ssl;
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, c->rbio, c->wbio);
    SSL_set_accept_state(ssl);
    c->handshaking = true;
    buf_t early = c->in; /* plaintext sent before the handshake is never acted on */
    buf_init(&c->in);
    if (keep_input && early.len && conn_tls_input(c, early.data, early.len) < 0)
        conn_fail(c, "TLS error");
    buf_free(&early);
    if (!c->closing)
        conn_update_reading(c);
}

bool conn_is_tls(const conn_t *c)
{
    return c->ssl && !c->handshaking;
}

const char *conn_tls_version(const conn_t *c)
{
    return conn_is_tls(c) ? SSL_get_version(c->ssl) : "";
}

const char *conn_tls_cipher(const conn_t *c)
{
    return conn_is_tls(c) ? SSL_get_cipher_name(c->ssl) : "";
}

buf_t *conn_input(conn_t *c)
{
    return &c->in;
}

void conn_input_consumed(conn_t *c)
{
    conn_update_reading(c);
}

int conn_write(conn_t *c, const void *data, size_t len)
{
    if (c->closing || len == 0)
        return c->closing ? -1 : 0;
    if (!c->ssl)
        return conn_send_raw(c, data, len);
    if (c->handshaking)
        return -1;
    if (SSL_write(c->ssl, data, (int)len) <= 0)
        return -1;
    return conn_flush_tls(c);
}

int conn_printf(conn_t *c, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n >= sizeof tmp)
        n = sizeof tmp - 1;
    return conn_write(c, tmp, (size_t)n);
}

size_t conn_pending_output(const conn_t *c)
{
    return c->pending_out;
}

static void close_timeout_cb(uv_timer_t *t)
{
    conn_close_now(t->data);
}

static void shutdown_cb(uv_shutdown_t *req, int status)
{
    (void)status;
    conn_close_now(req->data);
}

void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    c->closing = true;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    if (c->ssl && !c->handshaking) {
        SSL_shutdown(c->ssl); /* close_notify; the peer's answer is not awaited */
        conn_flush_tls(c);
    }
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, shutdown_cb) < 0) {
        conn_close_now(c);
        return;
    }
    uv_timer_start(&c->close_timer, close_timeout_cb, CONN_CLOSE_GRACE_MS, 0);
}

const char *conn_peer(const conn_t *c)
{
    return c->peer;
}

int conn_local_port(const conn_t *c)
{
    return c->local_port;
}
