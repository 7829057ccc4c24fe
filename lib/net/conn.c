#include "net/conn.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "base/log.h"
#include "base/net.h"

#define CONN_READ_CHUNK 16384
#define CONN_OUTPUT_MAX (1024 * 1024) /* stop reading while this much output waits */
#define CONN_CLOSE_GRACE_MS 10000     /* longest wait for pending output at close */
#define CONN_LINGER_MS 2000           /* then, how long the peer's input is read and dropped */
#define CONN_LINGER_BYTES (1024 * 1024) /* ... and how much of it at most */
#define CONN_OUT_KEEP 4096            /* an emptied output buffer larger than this is freed */
#define CONN_BIO_KEEP 1024            /* an emptied TLS memory BIO larger than this is replaced */
#define CONN_IN_KEEP 4096             /* and an emptied input buffer */
#define CONN_HOLD_MAX 65536           /* held output past this goes all the same */

/* Where every conn of the thread reads into: read_cb moves what arrived into the conn's
 * input (or OpenSSL's) before libuv reads again, so one buffer serves them all and an idle
 * conn holds none. */
static _Thread_local char read_chunk[CONN_READ_CHUNK];

struct conn {
    uv_tcp_t tcp;
    uv_timer_t close_timer;
    uv_shutdown_t shutdown;
    uv_connect_t connect_req;
    bool connecting; /* conn_connect() waits for the connection */
    conn_event_cb cb;
    void *arg;
    buf_t in;
    size_t input_max;
    /* Output is gathered while the loop runs callbacks and sent when it is about to wait
     * (flush_prepare): the lines of a multi-line reply, and the replies to a pipelined
     * batch, leave in one write, and in one TLS record. */
    buf_t out;
    uv_prepare_t flush_prepare;
    bool held; /* conn_hold(): gathered until released */
    size_t pending_out; /* handed to libuv, not yet to the kernel */
    uint64_t sent_out;    /* bytes handed to the kernel since the start */
    size_t low_water;     /* CONN_WRITABLE wanted at this level */
    bool want_writable;
    uv_idle_t writable_idle; /* reports CONN_WRITABLE asked for while already writable */
    bool reading;
    bool closing;
    size_t linger_left; /* input the peer may still send after our FIN before we close */
    int open_handles;
    SSL *ssl;
    BIO *rbio; /* network -> OpenSSL */
    BIO *wbio; /* OpenSSL -> network */
    bool handshaking;
    char peer[INET6_ADDRSTRLEN];
    int peer_port;
    int local_port;
    char error[256]; /* why it ended; "" after conn_close() */
};

typedef struct write_req {
    uv_write_t req;
    conn_t *conn;
    size_t len;
    char data[];
} write_req_t;

static void conn_update_reading(conn_t *c);
static void conn_check_writable(conn_t *c);
static void conn_fail(conn_t *c, bool log, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void close_cb(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    if (c->cb)
        c->cb(c, CONN_CLOSED, c->arg);
    buf_free(&c->in);
    buf_free(&c->out);
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
    if (!uv_is_closing((uv_handle_t *)&c->flush_prepare))
        uv_close((uv_handle_t *)&c->flush_prepare, close_cb);
}

/* Output written by the session and not yet sent, gathered or in libuv's queue. */
static size_t conn_unsent(const conn_t *c)
{
    return c->pending_out + c->out.len;
}

static void write_cb(uv_write_t *req, int status)
{
    write_req_t *w = (write_req_t *)req;
    conn_t *c = w->conn;
    c->pending_out -= w->len;
    if (status >= 0)
        c->sent_out += w->len;
    free(w);
    if (status < 0 && status != UV_ECANCELED) {
        conn_fail(c, true, "%s", uv_strerror(status));
        return;
    }
    conn_update_reading(c);
    conn_check_writable(c);
}

static void conn_check_writable(conn_t *c)
{
    if (!c->want_writable || c->closing || conn_unsent(c) > c->low_water)
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
    if (conn_unsent(c) <= low_water)
        uv_idle_start(&c->writable_idle, writable_idle_cb);
}

/* Hands bytes to the socket: what the kernel takes at once is written now, without a
 * copy; only the rest is copied into a write request queued with libuv. */
static int conn_send_raw(conn_t *c, const void *data, size_t len)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return -1;
    if (c->pending_out == 0 && !c->connecting) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n > 0) { /* an error other than EAGAIN comes again from uv_write, reported */
            c->sent_out += (size_t)n;
            data = (const char *)data + n;
            len -= (size_t)n;
            if (len == 0)
                return 0;
        }
    }
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

/* An empty memory BIO keeps the size it grew to (the handshake's flight, a large reply),
 * and OpenSSL clears all of it at every reset: a large one is replaced by a new one, so that
 * an idle session holds a few bytes there, and a flush clears only what it sent. */
static BIO *bio_renewed(BIO *bio)
{
    BUF_MEM *bm = NULL;
    if (BIO_ctrl_pending(bio) > 0 || BIO_get_mem_ptr(bio, &bm) <= 0 || !bm ||
        bm->max <= CONN_BIO_KEEP)
        return NULL;
    return BIO_new(BIO_s_mem());
}

/* Moves what OpenSSL produced (handshake records, encrypted data) to the socket, in one
 * write. */
static int conn_flush_tls(conn_t *c)
{
    char *data;
    long n = BIO_get_mem_data(c->wbio, &data);
    if (n <= 0)
        return 0;
    int rc = conn_send_raw(c, data, (size_t)n);
    (void)BIO_reset(c->wbio);
    BIO *fresh = bio_renewed(c->wbio);
    if (fresh) {
        SSL_set0_wbio(c->ssl, fresh); /* frees the old one */
        c->wbio = fresh;
    }
    return rc;
}

/* Sends the gathered output: encrypted in one go under TLS (records of up to 16 KiB, one
 * for a reply), then in one write. Calls the session back for nothing. */
static void conn_flush(conn_t *c)
{
    uv_prepare_stop(&c->flush_prepare);
    if (!c->out.len || c->closing)
        return;
    int rc;
    if (c->ssl) {
        ERR_clear_error();
        rc = SSL_write(c->ssl, c->out.data, (int)c->out.len) > 0 ? conn_flush_tls(c) : -1;
        ERR_clear_error();
    } else {
        rc = conn_send_raw(c, c->out.data, c->out.len);
    }
    if (c->out.cap > CONN_OUT_KEEP)
        buf_recycle(&c->out); /* a large reply's buffer serves the next one (buf.h) */
    else
        c->out.len = 0;
    if (rc < 0)
        conn_fail(c, true, "cannot send");
}

static void flush_prepare_cb(uv_prepare_t *h)
{
    conn_t *c = h->data;
    conn_flush(c);
    conn_update_reading(c);
    /* What went at once makes no write_cb. The session is told from the idle handle, not
     * from here: what it writes in a prepare callback would wait while the loop blocks. */
    if (c->want_writable && !c->closing && conn_unsent(c) <= c->low_water)
        uv_idle_start(&c->writable_idle, writable_idle_cb);
}

/* Records why the connection ends (the first reason wins) and closes it at once. */
static void conn_fail(conn_t *c, bool log, const char *fmt, ...)
{
    if (c->closing)
        return;
    c->closing = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
    if (log)
        log_debug("connection failed", "peer=%s reason=\"%s\"", c->peer, c->error);
    conn_close_now(c);
}

/* Explains a failed TLS operation from OpenSSL's error queue (then emptied) and, for a
 * failed certificate check, the verification result. */
static void conn_tls_fail(conn_t *c, int ssl_error)
{
    const char *stage = c->handshaking ? "TLS handshake failed" : "TLS error";
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (ssl_error == SSL_ERROR_ZERO_RETURN ||
        (!e && (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_SSL))) {
        if (c->handshaking)
            conn_fail(c, true, "%s: connection closed by peer", stage);
        else
            conn_fail(c, false, "connection closed by peer");
        return;
    }
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    char detail[128] = "";
    if (!reason) {
        ERR_error_string_n(e, detail, sizeof detail);
        reason = detail;
    }
    long verify = SSL_get_verify_result(c->ssl);
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
        verify != X509_V_OK)
        conn_fail(c, true, "%s: %s (%s)", stage, reason, X509_verify_cert_error_string(verify));
    else
        conn_fail(c, true, "%s: %s", stage, reason);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)suggested;
    (void)h;
    *b = uv_buf_init(read_chunk, sizeof read_chunk);
}

/* Advances the handshake and decrypts what OpenSSL holds. Returns -1 (after conn_fail)
 * when the TLS session is over or broken. */
static int conn_tls_process(conn_t *c)
{
    ERR_clear_error();
    if (c->handshaking) {
        int r = SSL_do_handshake(c->ssl);
        int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
        if (conn_flush_tls(c) < 0) { /* also sends the alert of a failed handshake */
            conn_fail(c, true, "TLS handshake failed: cannot send");
            return -1;
        }
        if (r != 1) {
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0;
            conn_tls_fail(c, e);
            return -1;
        }
        c->handshaking = false;
        c->cb(c, CONN_TLS_READY, c->arg);
        if (c->closing)
            return 0;
        ERR_clear_error();
    }
    char tmp[CONN_READ_CHUNK];
    for (;;) {
        int n = SSL_read(c->ssl, tmp, sizeof tmp);
        if (n > 0) {
            if (buf_append(&c->in, tmp, (size_t)n) < 0) {
                conn_fail(c, true, "out of memory");
                return -1;
            }
            continue;
        }
        int e = SSL_get_error(c->ssl, n);
        if (conn_flush_tls(c) < 0) {
            conn_fail(c, true, "TLS error: cannot send");
            return -1;
        }
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            BIO *fresh = e == SSL_ERROR_WANT_READ ? bio_renewed(c->rbio) : NULL;
            if (fresh) {
                SSL_set0_rbio(c->ssl, fresh); /* frees the old one */
                c->rbio = fresh;
            }
            return 0;
        }
        conn_tls_fail(c, e);
        return -1;
    }
}

/* Hands what arrived to OpenSSL and processes it; -1 as for conn_tls_process(). */
static int conn_tls_input(conn_t *c, const char *data, size_t len)
{
    if (BIO_write(c->rbio, data, (int)len) != (int)len) {
        conn_fail(c, true, "out of memory");
        return -1;
    }
    return conn_tls_process(c);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    conn_t *c = s->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        const char *why = nread == UV_EOF ? "connection closed by peer" : uv_strerror((int)nread);
        if (c->ssl && c->handshaking)
            conn_fail(c, true, "TLS handshake failed: %s", why);
        else
            conn_fail(c, nread != UV_EOF, "%s", why);
        return;
    }
    size_t before = c->in.len;
    if (c->ssl) {
        if (conn_tls_input(c, b->base, (size_t)nread) < 0)
            return;
    } else if (buf_append(&c->in, b->base, (size_t)nread) < 0) {
        conn_fail(c, true, "out of memory");
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
    bool want = c->in.len < c->input_max && conn_unsent(c) < CONN_OUTPUT_MAX;
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
            c->reading = true;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
}

/* addr as text (IPv4-mapped IPv6 shown as IPv4) and its port. */
static void conn_address_text(const struct sockaddr *sa, char *out, size_t len, int *port_r)
{
    net_addr_t a;
    snprintf(out, len, "unknown");
    *port_r = 0;
    if (net_addr_from_sockaddr(sa, &a) < 0)
        return;
    inet_ntop(a.family, a.bytes, out, (socklen_t)len);
    *port_r = ntohs(sa->sa_family == AF_INET ? ((const struct sockaddr_in *)sa)->sin_port
                                             : ((const struct sockaddr_in6 *)sa)->sin6_port);
}

static void conn_fill_local_port(conn_t *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char ignored[INET6_ADDRSTRLEN];
    c->local_port = 0;
    if (uv_tcp_getsockname(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        conn_address_text((struct sockaddr *)&ss, ignored, sizeof ignored, &c->local_port);
}

static void conn_fill_addresses(conn_t *c)
{
    struct sockaddr_storage ss;
    int len = sizeof ss;
    strcpy(c->peer, "unknown");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
        conn_address_text((struct sockaddr *)&ss, c->peer, sizeof c->peer, &c->peer_port);
    conn_fill_local_port(c);
}

/* A conn with its handles initialised and nothing started. */
static conn_t *conn_new(uv_loop_t *loop, size_t input_max, conn_event_cb cb, void *arg)
{
    conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->cb = cb;
    c->arg = arg;
    c->input_max = input_max;
    buf_init(&c->in);
    buf_init(&c->out);
    uv_tcp_init(loop, &c->tcp);
    uv_timer_init(loop, &c->close_timer);
    uv_idle_init(loop, &c->writable_idle);
    uv_prepare_init(loop, &c->flush_prepare);
    c->tcp.data = c;
    c->close_timer.data = c;
    c->writable_idle.data = c;
    c->flush_prepare.data = c;
    c->open_handles = 4;
    strcpy(c->peer, "unknown");
    return c;
}

conn_t *conn_accept(uv_stream_t *server, size_t input_max, conn_event_cb cb, void *arg)
{
    conn_t *c = conn_new(server->loop, input_max, cb, arg);
    if (!c)
        return NULL;
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

static void connect_cb(uv_connect_t *req, int status)
{
    conn_t *c = req->data;
    c->connecting = false;
    if (status == UV_ECANCELED || c->closing) /* conn_close() came first */
        return;
    if (status < 0) {
        conn_fail(c, true, "%s", uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_fill_local_port(c);
    c->cb(c, CONN_CONNECTED, c->arg);
    conn_update_reading(c);
}

conn_t *conn_connect(uv_loop_t *loop, const struct sockaddr *addr, size_t input_max,
                     conn_event_cb cb, void *arg)
{
    if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
        return NULL;
    conn_t *c = conn_new(loop, input_max, cb, arg);
    if (!c)
        return NULL;
    conn_address_text(addr, c->peer, sizeof c->peer, &c->peer_port);
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, connect_cb);
    if (rc < 0)
        conn_fail(c, true, "%s", uv_strerror(rc)); /* CONN_CLOSED comes from the loop */
    else
        c->connecting = true;
    return c;
}

void conn_start_tls(conn_t *c, SSL *ssl, bool keep_input)
{
    if (c->closing || c->ssl) {
        SSL_free(ssl);
        return;
    }
    if (!ssl) { /* tls_new_ssl() or tls_client_new_ssl() failed */
        conn_fail(c, true, "TLS handshake failed: no TLS session could be set up");
        return;
    }
    conn_flush(c); /* the reply that said go ahead, in plaintext */
    if (c->closing) {
        SSL_free(ssl);
        return;
    }
    c->ssl = ssl;
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->rbio || !c->wbio) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        c->rbio = c->wbio = NULL;
        conn_fail(c, true, "TLS handshake failed: out of memory");
        return;
    }
    SSL_set_bio(ssl, c->rbio, c->wbio);
    if (SSL_is_server(ssl))
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    c->handshaking = true;
    buf_t early = c->in; /* plaintext received before the handshake is never acted on */
    buf_init(&c->in);
    if (keep_input && early.len)
        conn_tls_input(c, early.data, early.len);
    else if (!SSL_is_server(ssl))
        conn_tls_process(c); /* the ClientHello */
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

bool conn_tls_verified(const conn_t *c)
{
    if (!conn_is_tls(c) || !SSL_get0_peer_certificate(c->ssl) ||
        SSL_get_verify_result(c->ssl) != X509_V_OK)
        return false;
    /* X509_V_OK covers the name check only when a name was set to check. */
    X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
    if (X509_VERIFY_PARAM_get0_host(param, 0))
        return true;
    char *ip = X509_VERIFY_PARAM_get1_ip_asc(param);
    bool named = ip != NULL;
    OPENSSL_free(ip);
    return named;
}

buf_t *conn_input(conn_t *c)
{
    return &c->in;
}

void conn_input_consumed(conn_t *c)
{
    /* An idle connection keeps no more than a short command needs: one long line (an
     * APPEND, a message) would otherwise stay in memory for as long as it is open. */
    if (c->in.len == 0 && c->in.cap > CONN_IN_KEEP)
        buf_free(&c->in);
    conn_update_reading(c);
}

int conn_write(conn_t *c, const void *data, size_t len)
{
    if (c->closing || len == 0)
        return c->closing ? -1 : 0;
    if ((c->ssl && c->handshaking) || uv_is_closing((uv_handle_t *)&c->tcp) ||
        len > INT_MAX - c->out.len)
        return -1;
    buf_from_spare(&c->out, len);
    if (buf_append(&c->out, data, len) < 0)
        return -1;
    if (!c->held || c->out.len >= CONN_HOLD_MAX)
        uv_prepare_start(&c->flush_prepare, flush_prepare_cb);
    return 0;
}

void conn_hold(conn_t *c, bool hold)
{
    if (c->held == hold || c->closing)
        return;
    c->held = hold;
    if (hold && c->out.len < CONN_HOLD_MAX)
        uv_prepare_stop(&c->flush_prepare);
    else if (!hold && c->out.len)
        uv_prepare_start(&c->flush_prepare, flush_prepare_cb);
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
    return conn_unsent(c);
}

uint64_t conn_output_delivered(const conn_t *c)
{
    /* What the kernel holds is in its send queue until the peer acknowledges it (SIOCOUTQ,
     * tcp(7)): subtracted, the figure moves as the peer reads, not only when a whole write
     * request leaves libuv, which with a large send buffer can be seconds apart. */
    uv_os_fd_t fd;
    int unsent = 0;
    if (uv_fileno((const uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, SIOCOUTQ, &unsent) == 0 &&
        unsent > 0 && (uint64_t)unsent <= c->sent_out)
        return c->sent_out - (uint64_t)unsent;
    return c->sent_out;
}

static void close_timeout_cb(uv_timer_t *t)
{
    conn_close_now(t->data);
}

/* Input after our FIN is dropped; the peer's FIN, an error or too much input ends it. */
static void linger_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    (void)b;
    conn_t *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0 || (size_t)nread >= c->linger_left) {
        conn_close_now(c);
        return;
    }
    c->linger_left -= (size_t)nread;
}

/* Everything written has gone, with our FIN after it. Closing a socket while input waits
 * unread in the kernel makes it answer with RST, and a peer still sending (commands
 * pipelined behind the one that ended the session) would lose the last replies it has not
 * read yet. So the peer's input is read and dropped until it closes its side too, for at
 * most CONN_LINGER_MS and CONN_LINGER_BYTES, and only then is the socket closed. */
static void shutdown_cb(uv_shutdown_t *req, int status)
{
    conn_t *c = req->data;
    if (status < 0 || uv_is_closing((uv_handle_t *)&c->tcp)) {
        conn_close_now(c);
        return;
    }
    c->linger_left = CONN_LINGER_BYTES;
    if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, linger_read_cb) < 0) {
        conn_close_now(c);
        return;
    }
    c->reading = true;
    uv_timer_start(&c->close_timer, close_timeout_cb, CONN_LINGER_MS, 0);
}

void conn_close(conn_t *c)
{
    if (c->closing)
        return;
    if (c->connecting) { /* the pending connect ends with UV_ECANCELED */
        c->closing = true;
        conn_close_now(c);
        return;
    }
    conn_flush(c); /* what the session wrote last still goes */
    if (c->closing) /* it could not */
        return;
    c->closing = true;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    if (c->ssl && !c->handshaking) {
        SSL_shutdown(c->ssl); /* close_notify; the peer's answer is not awaited */
        ERR_clear_error();
        conn_flush_tls(c);
    }
    c->shutdown.data = c;
    if (uv_shutdown(&c->shutdown, (uv_stream_t *)&c->tcp, shutdown_cb) < 0) {
        conn_close_now(c);
        return;
    }
    uv_timer_start(&c->close_timer, close_timeout_cb, CONN_CLOSE_GRACE_MS, 0);
}

const char *conn_error(const conn_t *c)
{
    return c->error;
}

const char *conn_peer(const conn_t *c)
{
    return c->peer;
}

int conn_peer_port(const conn_t *c)
{
    return c->peer_port;
}

int conn_local_port(const conn_t *c)
{
    return c->local_port;
}
