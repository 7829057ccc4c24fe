#include "svc/fe.h"

#include <nats/nats.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/env.h"
#include "base/log.h"
#include "net/proxy.h"

#define FE_INPUT_MAX (256 * 1024)
#define FE_DRAIN_DEFAULT_S 10
#define FE_DRAIN_MAX_S 86400
#define FE_FLUSH_STEP_MS 50    /* at shutdown, how often to look whether queries are done */
#define FE_FLUSH_MAX_MS 3000   /* and how long to let them finish at most */

static void fe_server_shutdown(fe_server_t *srv);
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
    log_info("session idle timeout", "session=%lu client=%s", s->id, s->peer);
    if (s->srv->proto->timeout)
        s->srv->proto->timeout(s);
    fe_session_close(s);
}

static void fe_session_touch(fe_session_t *s)
{
    if (!s->closing)
        uv_timer_start(&s->idle_timer, idle_cb, (uint64_t)fe_idle_ms(s), 0);
}

static void fe_session_process(fe_session_t *s)
{
    if (s->processing)
        return;
    s->processing = true;
    fe_session_ref(s);
    const fe_protocol_t *p = s->srv->proto;
    while (!s->closing && !s->waiting && s->conn) {
        buf_t *in = conn_input(s->conn);
        if (s->bytes_left > 0) {
            if (in->len == 0)
                break;
            size_t n = in->len < s->bytes_left ? in->len : (size_t)s->bytes_left;
            s->bytes_left -= n;
            p->bytes(s, in->data, n, s->bytes_left == 0);
            buf_consume(in, n);
            continue;
        }
        line_t l;
        int r = line_read(&s->reader, in, &l);
        if (r == 0)
            break;
        if (r < 0) {
            p->line_too_long(s);
            continue;
        }
        buf_reset(&s->line);
        if (buf_append(&s->line, l.text, l.len) < 0) {
            fe_session_close(s);
            break;
        }
        unsigned flags = l.flags;
        buf_consume(in, l.consumed);
        if (s->hook)
            s->hook->line(s, s->line.data, s->line.len, flags);
        else
            p->line(s, s->line.data, s->line.len, flags);
    }
    if (s->conn && !s->closing)
        conn_input_consumed(s->conn);
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
            fe_server_shutdown(srv);
        break;
    }
    }
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

/* Ready for clients: configuration loaded, database and bus reachable. */
static bool fe_ready(void *arg, char *why, size_t why_len)
{
    fe_server_t *srv = arg;
    const char *missing = !config_loaded(srv->cfg) ? "configuration"
                          : !db_available(srv->db) ? "database"
                          : !bus_connected(srv->bus) ? "bus"
                          : srv->draining          ? "draining"
                                                   : NULL;
    if (missing)
        snprintf(why, why_len, "%s", missing);
    return missing == NULL;
}

static void walk_close_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void flush_timer_cb(uv_timer_t *t)
{
    fe_server_shutdown(t->data);
}

/* Once the sessions are closed: lets them be released and the database work they leave
 * finish (pop3d deletes its maildrop lock as a session ends), for FE_FLUSH_MAX_MS at most,
 * then stops everything. */
static void fe_server_shutdown(fe_server_t *srv)
{
    if (!srv->stopping) {
        srv->stopping = true;
        if (srv->draining)
            log_info("drain finished", "sessions=%zu finished=%zu forced=%zu",
                     srv->drain_sessions, srv->drain_sessions - srv->drain_forced,
                     srv->drain_forced);
    }
    if ((srv->nallocated > 0 || db_busy(srv->db)) && srv->flush_waited_ms < FE_FLUSH_MAX_MS) {
        srv->flush_waited_ms += FE_FLUSH_STEP_MS;
        uv_timer_start(&srv->drain_timer, flush_timer_cb, FE_FLUSH_STEP_MS, 0);
        return;
    }
    log_info("stopping", "%s", "");
    uv_timer_stop(&srv->drain_timer);
    health_stop(&srv->health);
    if (srv->proto->stop && srv->proto_data)
        srv->proto->stop(srv);
    lim_destroy(&srv->lim);
    config_destroy(&srv->cfg);
    bus_destroy(&srv->bus);
    db_destroy(&srv->db);
    tls_destroy(&srv->tls);
    uv_walk(srv->loop, walk_close_cb, NULL);
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
        fe_session_close(s);
    }
    srv->drain_forced += forced;
    log_warn("drain deadline reached, closing sessions", "deadline_s=%ld sessions=%zu "
             "forced=%zu", srv->drain_timeout_s, srv->nsessions, forced);
}

static void stop_signal_cb(uv_signal_t *h, int signum)
{
    fe_server_t *srv = h->data;
    if (srv->draining)
        return;
    srv->draining = true;
    srv->drain_sessions = srv->nsessions;
    for (size_t i = 0; i < srv->proto->nlisteners; i++)
        if (srv->listening[i])
            uv_close((uv_handle_t *)&srv->listen[i], NULL);
    /* Logged once the listening sockets are closed: new connections are refused now. */
    log_info("draining", "signal=%d sessions=%zu deadline_s=%ld", signum, srv->nsessions,
             srv->drain_timeout_s);
    uv_signal_stop(&srv->sig_term);
    uv_signal_stop(&srv->sig_int);
    if (srv->proto->drain)
        for (fe_session_t *s = srv->sessions; s; s = s->next)
            if (!s->closing && s->conn)
                srv->proto->drain(s);
    if (srv->nsessions == 0) {
        fe_server_shutdown(srv);
        return;
    }
    /* DRAIN_TIMEOUT=0: the deadline is the next loop iteration. */
    uv_timer_start(&srv->drain_timer, drain_timeout_cb, (uint64_t)srv->drain_timeout_s * 1000, 0);
}

static void hup_signal_cb(uv_signal_t *h, int signum)
{
    (void)signum;
    fe_server_t *srv = h->data;
    if (!srv->tls)
        return;
    char err[512];
    if (tls_reload(srv->tls, err, sizeof err) < 0)
        log_error("certificate reload failed, keeping the old one", "error=\"%s\"", err);
    else
        log_info("certificate reloaded", "%s", "");
}

static int fe_listen_one(fe_server_t *srv, size_t i, const char *address)
{
    const fe_listener_conf_t *lc = &srv->proto->listeners[i];
    char defport[16];
    snprintf(defport, sizeof defport, "%d", lc->default_port);
    int port = atoi(env_or(lc->port_env, defport));
    if (port <= 0)
        return 0;
    if (lc->tls == FE_TLS_IMPLICIT && !srv->tls) {
        log_warn("no certificate: implicit-TLS listener disabled", "listener=%s port=%d",
                 lc->name, port);
        return 0;
    }
    struct sockaddr_storage ss;
    if (uv_ip6_addr(address, port, (struct sockaddr_in6 *)&ss) != 0 &&
        uv_ip4_addr(address, port, (struct sockaddr_in *)&ss) != 0) {
        log_error("bad LISTEN_ADDRESS", "address=%s", address);
        return -1;
    }
    uv_tcp_t *t = &srv->listen[i];
    uv_tcp_init(srv->loop, t);
    t->data = srv;
    int rc = uv_tcp_bind(t, (struct sockaddr *)&ss, 0);
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

int fe_main(const fe_protocol_t *proto, const char *hostname_env)
{
    log_init(proto->name);
    signal(SIGPIPE, SIG_IGN);
    fe_server_t srv_storage = { 0 };
    fe_server_t *srv = &srv_storage;
    srv->proto = proto;
    srv->loop = uv_default_loop();

    const char *dburl = getenv("DATABASE_URL");
    if (!dburl || !*dburl) {
        log_error("DATABASE_URL is not set", "%s", "");
        return 2;
    }
    srv->drain_timeout_s = env_seconds("DRAIN_TIMEOUT", FE_DRAIN_DEFAULT_S, 0, FE_DRAIN_MAX_S);
    if (srv->drain_timeout_s < 0) {
        log_error("bad DRAIN_TIMEOUT", "value=\"%.64s\" expected=\"whole seconds from 0 to %d\"",
                  getenv("DRAIN_TIMEOUT"), FE_DRAIN_MAX_S);
        return 2;
    }
    const char *name = env_or(hostname_env, NULL);
    if (name)
        snprintf(srv->hostname, sizeof srv->hostname, "%s", name);
    else if (gethostname(srv->hostname, sizeof srv->hostname - 1) != 0)
        strcpy(srv->hostname, "localhost");
    /* The instance is the machine (pod) name, not the announced mail host name, which
     * every replica shares; the pid alone is 1 in every container. */
    char node[256];
    if (gethostname(node, sizeof node - 1) != 0)
        strcpy(node, srv->hostname);
    node[sizeof node - 1] = '\0';
    snprintf(srv->instance, sizeof srv->instance, "%.250s:%d", node, (int)getpid());
    RAND_bytes(srv->secret, sizeof srv->secret);

    const char *cert = getenv("TLS_CERT"), *key = getenv("TLS_KEY");
    if (cert && *cert && key && *key) {
        char err[512];
        srv->tls = tls_create(cert, key, err, sizeof err);
        if (!srv->tls) {
            log_error("TLS certificate not usable", "error=\"%s\"", err);
            return 2;
        }
    } else {
        log_warn("TLS_CERT/TLS_KEY not set: no STARTTLS, no implicit TLS", "%s", "");
    }

    srv->db = db_create(srv->loop, dburl, atoi(env_or("DB_POOL", "4")));
    srv->bus = bus_create(srv->loop, env_or("NATS_URL", "nats://127.0.0.1:4222"), proto->name);
    if (!srv->db || !srv->bus) {
        log_error("cannot start database or bus client", "%s", "");
        return 2;
    }
    srv->cfg = config_create(srv->loop, srv->db, srv->bus, atoi(env_or("CONFIG_REFRESH", "30")));
    srv->metrics = metrics_create();
    srv->lim = lim_create(srv->loop, srv->bus, srv->cfg, srv->metrics);
    if (proto->start && proto->start(srv) < 0) {
        log_error("cannot start the protocol's state", "%s", "");
        return 2;
    }
    /* A health port asked for and not served fails the start like a mail port would:
     * probes that cannot reach it would restart the service anyway. */
    int failed = 0;
    int health_port = atoi(env_or("HEALTH_PORT", "0"));
    if (health_port > 0) {
        srv->health = health_start(srv->loop, health_port, srv->metrics, fe_ready, srv);
        failed = !srv->health;
    }

    srv->listen = calloc(proto->nlisteners, sizeof *srv->listen);
    srv->listening = calloc(proto->nlisteners, sizeof *srv->listening);
    if (fe_parse_networks(env_or("PROXY_TRUSTED_NETWORKS", ""), &srv->proxy_nets, &srv->nproxy) < 0) {
        log_error("bad PROXY_TRUSTED_NETWORKS", "value=\"%s\"", getenv("PROXY_TRUSTED_NETWORKS"));
        return 2;
    }
    if (srv->nproxy)
        log_info("PROXY protocol accepted from trusted networks", "networks=%zu", srv->nproxy);
    const char *address = env_or("LISTEN_ADDRESS", "::");
    for (size_t i = 0; i < proto->nlisteners; i++)
        if (fe_listen_one(srv, i, address) < 0)
            failed = 1;

    uv_signal_init(srv->loop, &srv->sig_term);
    uv_signal_init(srv->loop, &srv->sig_int);
    uv_signal_init(srv->loop, &srv->sig_hup);
    uv_timer_init(srv->loop, &srv->drain_timer);
    srv->sig_term.data = srv->sig_int.data = srv->sig_hup.data = srv->drain_timer.data = srv;
    uv_signal_start(&srv->sig_term, stop_signal_cb, SIGTERM);
    uv_signal_start(&srv->sig_int, stop_signal_cb, SIGINT);
    uv_signal_start(&srv->sig_hup, hup_signal_cb, SIGHUP);

    if (failed) {
        fe_server_shutdown(srv);
        uv_run(srv->loop, UV_RUN_DEFAULT);
    } else {
        log_info("started", "instance=%s drain_timeout_s=%ld", srv->instance,
                 srv->drain_timeout_s);
        uv_run(srv->loop, UV_RUN_DEFAULT);
    }
    uv_loop_close(srv->loop);
    free(srv->listen);
    free(srv->listening);
    free(srv->proxy_nets);
    metrics_destroy(&srv->metrics);
    nats_Close();
    return failed ? 1 : 0;
}
