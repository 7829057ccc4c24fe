#include "svc/fe.h"

#include <errno.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/env.h"
#include "base/log.h"
#include "base/text.h"
#include "net/proxy.h"

#define FE_INPUT_MAX (256 * 1024)
#define FE_DRAIN_DEFAULT_S 10
#define FE_DRAIN_MAX_S 86400
#define FE_LINE_KEEP 1024 /* a line buffer grown past this is given back between commands */

static void fe_sessions_closed(fe_server_t *srv);
static void fe_session_begin(fe_session_t *s, bool after_proxy);
static void fe_session_proxy_input(fe_session_t *s);

/* ---- sessions ---------------------------------------------------------------------- */

void fe_session_ref(fe_session_t *s)
{
    s->refs++;
}

void fe_session_unref(fe_session_t *s)
{
    if (--s->refs > 0)
        return;
    if (s->hook && s->hook->release)
        s->hook->release(s);
    if (s->srv->proto->release)
        s->srv->proto->release(s);
    buf_free(&s->line);
    free(s->user);
    s->srv->nallocated--;
    free(s);
}

static void timer_close_cb(uv_handle_t *h)
{
    fe_session_t *s = h->data;
    if (h == (uv_handle_t *)&s->delay_timer && s->delay_cb) {
        s->delay_cb = NULL; /* a pending delay never fires now: drop its reference */
        fe_session_unref(s);
    }
    fe_session_unref(s);
}

static long fe_idle_ms(fe_session_t *s)
{
    long secs = s->srv->proto->idle_timeout_key
                    ? config_get_long(s->srv->cfg, s->srv->proto->idle_timeout_key)
                    : 300;
    return (secs > 0 ? secs : 300) * 1000;
}

static void idle_cb(uv_timer_t *t)
{
    fe_session_t *s = t->data;
    if (s->closing)
        return;
    /* A client still reading what it asked for (a long RETR or FETCH on a slow link) is
     * not idle: the timeout counts again from now while its reading makes progress. */
    uint64_t sent = s->conn ? conn_output_delivered(s->conn) : 0;
    if (sent != s->idle_sent) {
        s->idle_sent = sent;
        uv_timer_start(&s->idle_timer, idle_cb, (uint64_t)fe_idle_ms(s), 0);
        return;
    }
    log_info("session idle timeout", "session=%lu client=%s", s->id, s->peer);
    if (s->srv->proto->timeout)
        s->srv->proto->timeout(s);
    fe_session_close(s);
}

static void fe_session_touch(fe_session_t *s)
{
    if (s->closing)
        return;
    s->idle_sent = s->conn ? conn_output_delivered(s->conn) : 0;
    uv_timer_start(&s->idle_timer, idle_cb, (uint64_t)fe_idle_ms(s), 0);
}

/* Runs the complete commands in the input. Lines are read where they lie and the input is
 * moved once, when the loop stops: consuming each line at once moved the rest of a 16 KiB
 * read for each of its lines. */
static void fe_session_process(fe_session_t *s)
{
    if (s->processing)
        return;
    s->processing = true;
    fe_session_ref(s);
    const fe_protocol_t *p = s->srv->proto;
    size_t off = 0; /* input used, not yet consumed */
    s->input_replaced = false;
    while (!s->closing && !s->waiting && s->conn) {
        buf_t *in = conn_input(s->conn);
        if (s->bytes_left > 0) {
            if (in->len == off)
                break;
            size_t n = in->len - off < s->bytes_left ? in->len - off : (size_t)s->bytes_left;
            s->bytes_left -= n;
            p->bytes(s, in->data + off, n, s->bytes_left == 0);
            off += n;
        } else {
            line_t l;
            size_t skipped;
            int r = line_scan(&s->reader, in->data + off, in->len - off, &l, &skipped);
            off += skipped;
            if (r == 0)
                break;
            if (r < 0) {
                p->line_too_long(s);
            } else {
                buf_reset(&s->line);
                if (buf_append(&s->line, l.text, l.len) < 0) {
                    fe_session_close(s);
                    break;
                }
                off += l.consumed;
                if (s->hook)
                    s->hook->line(s, s->line.data, s->line.len, l.flags);
                else
                    p->line(s, s->line.data, s->line.len, l.flags);
            }
        }
        if (s->input_replaced) { /* STARTTLS: what was read before is gone */
            s->input_replaced = false;
            off = 0;
        }
    }
    if (s->conn && !s->closing) {
        buf_t *in = conn_input(s->conn);
        buf_consume(in, off);
        /* A session waiting (a lookup, a store) with more commands of a pipelined batch in
         * hand keeps its replies until it has answered them all, or needs more input. */
        conn_hold(s->conn, s->waiting && s->bytes_left == 0 && in->len &&
                               memchr(in->data, '\n', in->len));
        conn_input_consumed(s->conn);
    }
    /* The line is the handler's until the session stops waiting; a long one is not kept. */
    if (!s->waiting && s->line.cap > FE_LINE_KEEP)
        buf_free(&s->line);
    s->processing = false;
    fe_session_unref(s);
}

static void fe_session_unlink(fe_session_t *s)
{
    fe_server_t *srv = s->srv;
    if (s->prev)
        s->prev->next = s->next;
    else if (srv->sessions == s)
        srv->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
    srv->nsessions--;
}

static void session_conn_cb(conn_t *c, conn_event_t ev, void *arg)
{
    (void)c;
    fe_session_t *s = arg;
    switch (ev) {
    case CONN_DATA:
        fe_session_touch(s);
        if (s->awaiting_proxy)
            fe_session_proxy_input(s);
        else
            fe_session_process(s);
        break;
    case CONN_WRITABLE: {
        void (*cb)(fe_session_t *) = s->writable_cb;
        s->writable_cb = NULL;
        if (cb && !s->closing)
            cb(s);
        break;
    }
    case CONN_TLS_READY:
        log_info("tls established", "session=%lu client=%s version=%s cipher=%s", s->id, s->peer,
                 conn_tls_version(s->conn), conn_tls_cipher(s->conn));
        if (s->listener->tls == FE_TLS_IMPLICIT && !s->srv->proto->tls_ready)
            break;
        if (s->listener->tls == FE_TLS_IMPLICIT && s->want_tls) {
            s->want_tls = false; /* the greeting was held back until now */
            if (!fe_session_refuse_if_blocked(s))
                s->srv->proto->open(s);
        } else {
            s->srv->proto->tls_ready(s);
        }
        break;
    case CONN_CONNECTED: /* outbound connections only */
        break;
    case CONN_CLOSED: {
        fe_server_t *srv = s->srv;
        log_info("session closed", "session=%lu client=%s", s->id, s->peer);
        s->conn = NULL;
        s->closing = true;
        if (s->writable_cb) { /* the writer lets go of what it holds */
            void (*cb)(fe_session_t *) = s->writable_cb;
            s->writable_cb = NULL;
            cb(s);
        }
        fe_session_unlink(s);
        metrics_set(srv->metrics, "postern_sessions_active", "Client connections open", NULL,
                    (double)srv->nsessions);
        uv_close((uv_handle_t *)&s->idle_timer, timer_close_cb);
        uv_close((uv_handle_t *)&s->delay_timer, timer_close_cb);
        fe_session_unref(s);
        if (srv->draining && srv->nsessions == 0)
            fe_sessions_closed(srv);
        break;
    }
    }
}

/* Over MEMORY_BUDGET a new session costs no more than its refusal: the protocol's
 * temporary error (an implicit-TLS client gets none: a handshake is what memory is short
 * for), then the session closes. Returns true when it refused. */
static bool fe_session_refuse_if_over_budget(fe_session_t *s)
{
    fe_server_t *srv = s->srv;
    if (!svc_memory_over_budget(srv->svc))
        return false;
    /* Logged once per episode by svc_memory_over_budget(); counted here. */
    metrics_add(srv->metrics, "postern_sessions_refused_memory_total",
                "Connections refused because the process was over MEMORY_BUDGET", NULL, 1);
    if (s->listener->tls != FE_TLS_IMPLICIT && srv->proto->overloaded)
        srv->proto->overloaded(s);
    fe_session_close(s);
    return true;
}

static void accept_cb(uv_stream_t *server, int status)
{
    fe_server_t *srv = server->data;
    if (status < 0)
        return;
    size_t idx = (size_t)((uv_tcp_t *)server - srv->listen);
    const fe_listener_conf_t *lc = &srv->proto->listeners[idx];
    fe_session_t *s = calloc(1, srv->proto->session_size);
    if (!s) {
        return;
    }
    s->srv = srv;
    srv->nallocated++;
    s->listener = lc;
    s->id = ++srv->next_session_id;
    buf_init(&s->line);
    line_reader_init(&s->reader, srv->proto->line_max);
    s->conn = conn_accept(server, FE_INPUT_MAX, session_conn_cb, s);
    if (!s->conn) {
        srv->nallocated--;
        free(s);
        return;
    }
    s->refs = 3; /* the connection and the two timers */
    uv_timer_init(srv->loop, &s->idle_timer);
    uv_timer_init(srv->loop, &s->delay_timer);
    s->idle_timer.data = s;
    s->delay_timer.data = s;
    snprintf(s->peer, sizeof s->peer, "%s", conn_peer(s->conn));
    s->next = srv->sessions;
    if (srv->sessions)
        srv->sessions->prev = s;
    srv->sessions = s;
    srv->nsessions++;
    log_info("session opened", "session=%lu client=%s listener=%s", s->id, s->peer, lc->name);
    char labels[96];
    snprintf(labels, sizeof labels, "listener=\"%s\"", lc->name);
    metrics_add(srv->metrics, "postern_sessions_total", "Client connections accepted", labels, 1);
    metrics_set(srv->metrics, "postern_sessions_active", "Client connections open", NULL,
                (double)srv->nsessions);
    fe_session_touch(s);
    if (srv->draining) {
        fe_session_close(s);
        return;
    }
    if (fe_session_refuse_if_over_budget(s))
        return;
    net_addr_t peer;
    if (srv->nproxy && net_addr_parse(s->peer, &peer) == 0)
        for (size_t i = 0; i < srv->nproxy && !s->awaiting_proxy; i++)
            s->awaiting_proxy = net_cidr_contains(&srv->proxy_nets[i], &peer);
    if (!s->awaiting_proxy)
        fe_session_begin(s, false);
}

/* The client is known: TLS first on an implicit-TLS port, else the greeting. */
static void fe_session_begin(fe_session_t *s, bool after_proxy)
{
    if (s->listener->tls == FE_TLS_IMPLICIT) {
        s->want_tls = true; /* greet once the handshake is done */
        conn_start_tls(s->conn, tls_new_ssl(s->srv->tls), after_proxy);
        return;
    }
    if (!fe_session_refuse_if_blocked(s))
        s->srv->proto->open(s);
}

/* A trusted proxy's connection starts with a PROXY header naming the real client, to
 * which relay lists, limits and blocks then apply. */
static void fe_session_proxy_input(fe_session_t *s)
{
    buf_t *in = conn_input(s->conn);
    proxy_header_t h;
    size_t consumed;
    int rc = proxy_parse((const unsigned char *)in->data, in->len, &h, &consumed);
    if (rc == 0)
        return;
    if (rc < 0) {
        log_warn("bad PROXY header from a trusted proxy, closing", "session=%lu proxy=%s", s->id,
                 s->peer);
        fe_session_close(s);
        return;
    }
    buf_consume(in, consumed);
    s->awaiting_proxy = false;
    if (h.client[0]) {
        log_info("client address from PROXY header", "session=%lu proxy=%s client=%s", s->id,
                 s->peer, h.client);
        snprintf(s->peer, sizeof s->peer, "%s", h.client);
    }
    fe_session_begin(s, true);
    if (!s->closing && s->listener->tls != FE_TLS_IMPLICIT)
        fe_session_process(s); /* commands pipelined behind the header */
}

void fe_format_time(int64_t ms, char *out, size_t out_len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, out_len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

bool fe_session_refuse_if_blocked(fe_session_t *s)
{
    char reason[200], until[32];
    int64_t until_ms = 0;
    if (!lim_blocked(s->srv->lim, s->peer, reason, sizeof reason, &until_ms))
        return false;
    fe_format_time(until_ms, until, sizeof until);
    log_warn("blocked client refused", "session=%lu client=%s until=%s reason=\"%s\"", s->id,
             s->peer, until, reason);
    metrics_add(s->srv->metrics, "postern_blocked_connections_total",
                "Connections refused because the client address is blocked", NULL, 1);
    s->srv->proto->blocked(s, reason, until);
    fe_session_close(s);
    return true;
}

void fe_session_close(fe_session_t *s)
{
    if (s->closing || !s->conn)
        return;
    s->closing = true;
    uv_timer_stop(&s->idle_timer);
    conn_close(s->conn);
}

int fe_session_printf(fe_session_t *s, const char *fmt, ...)
{
    if (!s->conn || s->closing)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    char tmp[2048];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof tmp)
        return conn_write(s->conn, tmp, (size_t)n);
    buf_t big;
    buf_init(&big);
    va_start(ap, fmt);
    int rc = buf_vprintf(&big, fmt, ap);
    va_end(ap);
    if (rc == 0)
        rc = conn_write(s->conn, big.data, big.len);
    buf_free(&big);
    return rc;
}

int fe_session_reply(fe_session_t *s, const char *fmt, ...)
{
    if (!s->conn || s->closing)
        return -1;
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp - 2, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof tmp - 2) {
        text_scrub(tmp, (size_t)n);
        memcpy(tmp + n, "\r\n", 2);
        return conn_write(s->conn, tmp, (size_t)n + 2);
    }
    buf_t big;
    buf_init(&big);
    va_start(ap, fmt);
    int rc = buf_vprintf(&big, fmt, ap);
    va_end(ap);
    if (rc == 0) {
        text_scrub(big.data, big.len);
        rc = buf_append(&big, "\r\n", 2);
    }
    if (rc == 0)
        rc = conn_write(s->conn, big.data, big.len);
    buf_free(&big);
    return rc;
}

int fe_session_write(fe_session_t *s, const void *data, size_t len)
{
    if (!s->conn || s->closing)
        return -1;
    return conn_write(s->conn, data, len);
}

void fe_session_when_writable(fe_session_t *s, void (*cb)(fe_session_t *s))
{
    s->writable_cb = cb;
    if (s->conn)
        conn_notify_writable(s->conn, FE_WRITE_LOW_WATER);
}

void fe_session_read_bytes(fe_session_t *s, uint64_t n)
{
    s->bytes_left = n;
}

void fe_session_take_input(fe_session_t *s, const fe_input_hook_t *hook)
{
    s->hook = hook;
}

void fe_session_release_input(fe_session_t *s)
{
    s->hook = NULL;
}

void fe_session_wait(fe_session_t *s)
{
    s->waiting = true;
}

void fe_session_resume(fe_session_t *s)
{
    s->waiting = false;
    if (!s->closing)
        fe_session_process(s);
}

int fe_session_starttls(fe_session_t *s)
{
    SSL *ssl = tls_new_ssl(s->srv->tls);
    if (!ssl || !s->conn)
        return -1;
    line_reader_init(&s->reader, s->srv->proto->line_max);
    conn_start_tls(s->conn, ssl, false);
    s->input_replaced = true;
    return 0;
}

bool fe_session_tls(const fe_session_t *s)
{
    return s->conn && conn_is_tls(s->conn);
}

bool fe_session_tls_available(const fe_session_t *s)
{
    return s->srv->tls && !fe_session_tls(s);
}

static void delay_cb(uv_timer_t *t)
{
    fe_session_t *s = t->data;
    void (*cb)(fe_session_t *) = s->delay_cb;
    s->delay_cb = NULL;
    if (!s->closing)
        cb(s);
    fe_session_unref(s);
}

void fe_session_delay(fe_session_t *s, unsigned ms, void (*cb)(fe_session_t *s))
{
    if (s->closing || s->delay_cb)
        return;
    s->delay_cb = cb;
    fe_session_ref(s);
    uv_timer_start(&s->delay_timer, delay_cb, ms, 0);
}

/* ---- the server -------------------------------------------------------------------- */

/* A list of CIDRs separated by commas or spaces. Returns 0, or -1 on a bad entry. */
static int fe_parse_networks(const char *text, net_cidr_t **nets_r, size_t *n_r)
{
    char *copy = strdup(text);
    size_t cap = strlen(text) / 2 + 1;
    net_cidr_t *nets = calloc(cap, sizeof *nets);
    size_t n = 0;
    int rc = copy && nets ? 0 : -1;
    for (char *save = NULL, *tok = copy ? strtok_r(copy, ", ", &save) : NULL; tok && rc == 0;
         tok = strtok_r(NULL, ", ", &save))
        rc = n < cap && net_cidr_parse(tok, &nets[n++]) == 0 ? 0 : -1;
    free(copy);
    if (rc < 0) {
        free(nets);
        return -1;
    }
    *nets_r = nets;
    *n_r = n;
    return 0;
}

/* The sessions are all closed: the skeleton lets the database work they leave finish (pop3d
 * deletes its maildrop lock as a session ends) and the sessions be released (fe_busy), for
 * a bounded time, then stops. */
static void fe_sessions_closed(fe_server_t *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    uv_timer_stop(&srv->drain_timer);
    log_info("drain finished", "sessions=%zu finished=%zu forced=%zu", srv->drain_sessions,
             srv->drain_sessions - srv->drain_forced, srv->drain_forced);
    svc_stopped(srv->svc);
}

/* Closes every session still open; those already closing finish on their own. Closing
 * completes later (CONN_CLOSED), so the list stays intact while it is walked. */
static void drain_timeout_cb(uv_timer_t *t)
{
    fe_server_t *srv = t->data;
    size_t forced = 0;
    for (fe_session_t *s = srv->sessions; s; s = s->next) {
        if (s->closing || !s->conn)
            continue;
        forced++;
        /* The protocol's goodbye, unless the client has not been greeted yet or a long
         * reply is on its way out. */
        if (srv->proto->drain && !s->awaiting_proxy && !s->want_tls && !s->writable_cb)
            srv->proto->drain(s, true);
        fe_session_close(s);
    }
    srv->drain_forced += forced;
    log_warn("drain deadline reached, closing sessions", "deadline_s=%ld sessions=%zu "
             "forced=%zu", srv->drain_timeout_s, srv->nsessions, forced);
}

/* SIGTERM/SIGINT (svc_def_t.stop): stop listening, let the open sessions go on until they
 * end or DRAIN_TIMEOUT passes. */
static void fe_drain(svc_t *svc)
{
    fe_server_t *srv = svc->data;
    srv->draining = true;
    srv->drain_sessions = srv->nsessions;
    for (size_t i = 0; i < srv->proto->nlisteners; i++)
        if (srv->listening[i]) {
            srv->listening[i] = false;
            uv_close((uv_handle_t *)&srv->listen[i], NULL);
        }
    /* Logged once the listening sockets are closed: new connections are refused now. */
    log_info("draining", "sessions=%zu deadline_s=%ld", srv->nsessions, srv->drain_timeout_s);
    if (srv->proto->drain)
        for (fe_session_t *s = srv->sessions; s; s = s->next)
            if (!s->closing && s->conn)
                srv->proto->drain(s, false);
    if (srv->nsessions == 0) {
        fe_sessions_closed(srv);
        return;
    }
    /* DRAIN_TIMEOUT=0: the deadline is the next loop iteration. */
    uv_timer_start(&srv->drain_timer, drain_timeout_cb, (uint64_t)srv->drain_timeout_s * 1000, 0);
}

/* Sessions closed but not yet released wait for callbacks (a query, the limiter). */
static bool fe_busy(svc_t *svc)
{
    fe_server_t *srv = svc->data;
    return srv && srv->nallocated > 0;
}

/* SIGHUP: the certificate is read again. */
static void fe_hup(svc_t *svc)
{
    fe_server_t *srv = svc->data;
    if (!srv || !srv->tls)
        return;
    char err[512];
    if (tls_reload(srv->tls, err, sizeof err) < 0)
        log_error("certificate reload failed, keeping the old one", "error=\"%s\"", err);
    else
        log_info("certificate reloaded", "%s", "");
}

/* Listener i's port (0: off) and address. Returns 0, or -1 after logging a bad address. */
static int fe_listener_addr(const fe_listener_conf_t *lc, const char *address, int *port,
                            struct sockaddr_storage *ss)
{
    char defport[16];
    snprintf(defport, sizeof defport, "%d", lc->default_port);
    *port = atoi(env_or(lc->port_env, defport));
    if (*port <= 0)
        return 0;
    if (uv_ip6_addr(address, *port, (struct sockaddr_in6 *)ss) != 0 &&
        uv_ip4_addr(address, *port, (struct sockaddr_in *)ss) != 0) {
        log_error("bad LISTEN_ADDRESS", "address=%s", address);
        return -1;
    }
    return 0;
}

/* With workers (svc/workers.h), each listener's socket is made once, before the fork, and
 * every worker accepts from it: a new connection goes to a worker free to take it, one at a
 * time (libuv's UV_TCP_SINGLE_ACCEPT: a worker that accepted lets the others in before it
 * takes another). Separate sockets on one port (SO_REUSEPORT) would leave the choice to a
 * hash of the client's address and port: with few clients, one worker served most of them
 * while the other idled. */
#define FE_SHARED_MAX 8
static int fe_shared[FE_SHARED_MAX];
static bool fe_sharing;

/* svc_def_t.prefork. Returns 0, or -1 after logging what failed. */
static int fe_prefork(const svc_def_t *def)
{
    const fe_protocol_t *proto = def->conf;
    const char *address = env_or("LISTEN_ADDRESS", "::");
    const char *cert = getenv("TLS_CERT");
    if (proto->nlisteners > FE_SHARED_MAX)
        return -1;
    for (size_t i = 0; i < proto->nlisteners; i++) {
        const fe_listener_conf_t *lc = &proto->listeners[i];
        struct sockaddr_storage ss;
        int port, one = 1, off = 0;
        fe_shared[i] = -1;
        if (fe_listener_addr(lc, address, &port, &ss) < 0)
            return -1;
        if (port <= 0 || (lc->tls == FE_TLS_IMPLICIT && !(cert && *cert)))
            continue; /* off; an implicit-TLS one without a certificate is said at start */
        int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
            (ss.ss_family == AF_INET6 &&
             setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0) ||
            bind(fd, (struct sockaddr *)&ss,
                 ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                          : sizeof(struct sockaddr_in)) < 0 ||
            listen(fd, 511) < 0) {
            log_error("cannot listen", "listener=%s address=%s port=%d error=\"%s\"", lc->name,
                      address, port, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        fe_shared[i] = fd;
    }
    setenv("UV_TCP_SINGLE_ACCEPT", "1", 1);
    fe_sharing = true;
    return 0;
}

/* svc_def_t.forked: the parent keeps no listener; the workers hold them. */
static void fe_forked(const svc_def_t *def)
{
    const fe_protocol_t *proto = def->conf;
    for (size_t i = 0; i < proto->nlisteners && i < FE_SHARED_MAX; i++)
        if (fe_shared[i] >= 0) {
            close(fe_shared[i]);
            fe_shared[i] = -1;
        }
}

static int fe_listen_one(fe_server_t *srv, size_t i, const char *address)
{
    const fe_listener_conf_t *lc = &srv->proto->listeners[i];
    int shared = fe_sharing ? fe_shared[i] : -1;
    if (fe_sharing)
        fe_shared[i] = -1; /* this worker's from now on */
    struct sockaddr_storage ss;
    int port;
    if (fe_listener_addr(lc, address, &port, &ss) < 0) {
        if (shared >= 0)
            close(shared);
        return -1;
    }
    if (port <= 0)
        return 0;
    if (lc->tls == FE_TLS_IMPLICIT && !srv->tls) {
        log_warn("no certificate: implicit-TLS listener disabled", "listener=%s port=%d",
                 lc->name, port);
        if (shared >= 0)
            close(shared);
        return 0;
    }
    uv_tcp_t *t = &srv->listen[i];
    uv_tcp_init(srv->loop, t);
    t->data = srv;
    int rc = shared >= 0 ? uv_tcp_open(t, shared) : uv_tcp_bind(t, (struct sockaddr *)&ss, 0);
    if (rc < 0 && shared >= 0)
        close(shared);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)t, 511, accept_cb);
    if (rc < 0) {
        log_error("cannot listen", "listener=%s address=%s port=%d error=\"%s\"", lc->name,
                  address, port, uv_strerror(rc));
        uv_close((uv_handle_t *)t, NULL);
        return -1;
    }
    srv->listening[i] = true;
    log_info("listening", "listener=%s address=%s port=%d tls=%s", lc->name, address, port,
             lc->tls == FE_TLS_IMPLICIT ? "implicit" : (srv->tls ? "starttls" : "none"));
    return 0;
}

/* The drain timer and the listeners still open close last; the server goes with them. */
static void fe_server_closed_cb(uv_handle_t *h)
{
    fe_server_t *srv = h->data;
    if (--srv->closing_handles > 0)
        return;
    free(srv->listen);
    free(srv->listening);
    free(srv->proxy_nets);
    free(srv);
}

/* svc_def_t.destroy: the protocol's state, the limiter's client, the certificate and the
 * listeners go; the server's copies of the skeleton's clients are cleared first, so that
 * sessions still waiting (answered by bus_destroy and db_destroy right after) see none. The
 * server itself is freed once its timer has closed, after those answers. */
static void fe_destroy(svc_t *svc)
{
    fe_server_t *srv = svc->data;
    if (!srv)
        return;
    svc->data = NULL;
    uv_timer_stop(&srv->drain_timer);
    if (srv->proto->stop && srv->proto_data)
        srv->proto->stop(srv);
    lim_destroy(&srv->lim);
    tls_destroy(&srv->tls);
    srv->bus = NULL;
    srv->db = NULL;
    srv->cfg = NULL;
    srv->health = NULL;
    srv->closing_handles = 1;
    uv_close((uv_handle_t *)&srv->drain_timer, fe_server_closed_cb);
    for (size_t i = 0; srv->listening && i < srv->proto->nlisteners; i++)
        if (srv->listening[i]) {
            srv->listening[i] = false;
            srv->closing_handles++;
            uv_close((uv_handle_t *)&srv->listen[i], fe_server_closed_cb);
        }
}

/* svc_def_t.start: the front end's settings, the limiter's client, the protocol's state and
 * the listeners. */
static int fe_start(svc_t *svc)
{
    const fe_protocol_t *proto = svc->def->conf;
    fe_server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -1;
    svc->data = srv;
    srv->svc = svc;
    srv->proto = proto;
    srv->loop = svc->loop;
    srv->db = svc->db;
    srv->bus = svc->bus;
    srv->cfg = svc->cfg;
    srv->metrics = svc->metrics;
    srv->health = svc->health;
    snprintf(srv->hostname, sizeof srv->hostname, "%s", svc->hostname);
    snprintf(srv->instance, sizeof srv->instance, "%s", svc->instance);
    RAND_bytes(srv->secret, sizeof srv->secret);
    uv_timer_init(svc->loop, &srv->drain_timer);
    srv->drain_timer.data = srv;
    srv->listen = calloc(proto->nlisteners ? proto->nlisteners : 1, sizeof *srv->listen);
    srv->listening = calloc(proto->nlisteners ? proto->nlisteners : 1, sizeof *srv->listening);
    if (!srv->listen || !srv->listening)
        return -1;

    srv->drain_timeout_s = env_seconds("DRAIN_TIMEOUT", FE_DRAIN_DEFAULT_S, 0, FE_DRAIN_MAX_S);
    if (srv->drain_timeout_s < 0) {
        log_error("bad DRAIN_TIMEOUT", "value=\"%.64s\" expected=\"whole seconds from 0 to %d\"",
                  getenv("DRAIN_TIMEOUT"), FE_DRAIN_MAX_S);
        return -1;
    }
    const char *cert = getenv("TLS_CERT"), *key = getenv("TLS_KEY");
    if (cert && *cert && key && *key) {
        char err[512];
        srv->tls = tls_create(cert, key, err, sizeof err);
        if (!srv->tls) {
            log_error("TLS certificate not usable", "error=\"%s\"", err);
            return -1;
        }
    } else {
        log_warn("TLS_CERT/TLS_KEY not set: no STARTTLS, no implicit TLS", "%s", "");
    }
    if (fe_parse_networks(env_or("PROXY_TRUSTED_NETWORKS", ""), &srv->proxy_nets,
                          &srv->nproxy) < 0) {
        log_error("bad PROXY_TRUSTED_NETWORKS", "value=\"%s\"", getenv("PROXY_TRUSTED_NETWORKS"));
        return -1;
    }
    if (srv->nproxy)
        log_info("PROXY protocol accepted from trusted networks", "networks=%zu", srv->nproxy);

    srv->lim = lim_create(svc->loop, svc->bus, svc->cfg, svc->metrics);
    if (!srv->lim || (proto->start && proto->start(srv) < 0)) {
        log_error("cannot start the protocol's state", "%s", "");
        return -1;
    }
    const char *address = env_or("LISTEN_ADDRESS", "::");
    for (size_t i = 0; i < proto->nlisteners; i++)
        if (fe_listen_one(srv, i, address) < 0)
            return -1;
    return 0;
}

int fe_main(const fe_protocol_t *proto, const char *hostname_env)
{
    const svc_def_t def = {
        .name = proto->name,
        .db_pool = 4,
        .want_config = true,
        .hostname_env = hostname_env,
        .conf = proto,
        .start = fe_start,
        .stop = fe_drain,
        .busy = fe_busy,
        .destroy = fe_destroy,
        .hup = fe_hup,
        .workers = true,
        .prefork = fe_prefork,
        .forked = fe_forked,
    };
    return svc_main(&def);
}
