#include "server.h"

#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <uv.h>

#include "bus/bus.h"
#include "store/db.h"
#include "net/health.h"
#include "base/log.h"
#include "policy.h"
#include "postern.pb-c.h"
#include "store.h"

#define TICK_MS 1000
#define RETRY_TICKS 5          /* dirty writes are sent again this often */
#define STATS_TICKS 600        /* the key counts are logged this often */
#define PRUNE_BUDGET 20000     /* entries looked at per table and tick */
#define ALERT_QUEUE_MAX 256    /* alerts kept while the bus is down */

typedef struct queued {
    size_t len;
    uint8_t data[];
} queued_t;

typedef struct server {
    uv_loop_t *loop;
    db_t *db;
    bus_t *bus;
    limiter_t *lim;
    store_t *store;
    uv_timer_t tick;
    uv_timer_t reload;
    uv_signal_t sig_term, sig_int;
    const server_opts_t *opts;
    int64_t last_now; /* the clock never goes back */
    unsigned long ticks;
    bool stopping;
    unsigned long long bad; /* undecodable messages dropped */
    queued_t *alerts[ALERT_QUEUE_MAX];
    size_t nalerts;
    metrics_t *metrics;
    health_t *health; /* HEALTH_PORT */
} server_t;

/* Ready once the bus is up and the first load from PostgreSQL has completed (before it,
 * checks go unanswered). */
static bool server_ready(void *arg, char *why, size_t why_len)
{
    server_t *srv = arg;
    const char *missing = !bus_connected(srv->bus)        ? "bus"
                          : !store_loaded(srv->store)     ? "first load from the database"
                          : !db_available(srv->db)        ? "database"
                                                          : NULL;
    if (missing)
        snprintf(why, why_len, "%s", missing);
    return !missing;
}

/* Wall-clock milliseconds, never less than the last reading. */
static int64_t server_now(void *arg)
{
    server_t *srv = arg;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int64_t now = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    if (now < srv->last_now)
        now = srv->last_now;
    srv->last_now = now;
    return now;
}

/* Copies text for a quoted log value. */
static const char *logq(const char *text, char *buf, size_t len)
{
    snprintf(buf, len, "%s", text ? text : "");
    for (char *c = buf; *c; c++)
        if (*c == '"' || *c == '\n' || *c == '\r')
            *c = '\'';
    return buf;
}

/* Account names are compared as PostgreSQL stores them: in lower case. */
static char *lower(char *s)
{
    for (char *c = s; c && *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return s;
}

static void dropped(server_t *srv, const char *subject, size_t len)
{
    srv->bad++;
    log_warn("bad message dropped", "subject=%s bytes=%zu dropped_total=%llu", subject, len,
             srv->bad);
}

static const char *verdict_name(limiter_verdict_t v)
{
    switch (v) {
    case LIMITER_ALLOW: return "allow";
    case LIMITER_THROTTLE: return "throttle";
    case LIMITER_DISABLED: return "disabled";
    case LIMITER_BLOCKED: return "blocked";
    }
    return "?";
}

static void send_reply(server_t *srv, const char *reply, const limiter_reply_t *r)
{
    if (!reply || !*reply || !srv->bus)
        return;
    Postern__CheckReply m = POSTERN__CHECK_REPLY__INIT;
    m.verdict = (Postern__Verdict)r->verdict;
    m.reason = (char *)r->reason;
    m.retry_after_s = r->retry_after_s;
    m.until_ms = r->until_ms;
    m.delay_ms = r->delay_ms;
    if (bus_publish_msg(srv->bus, reply, &m.base) < 0)
        log_warn("reply not sent", "subject=%s", reply);
}

/* ---- hooks: what the policy decided reaches the bus and PostgreSQL -------------------- */

static void hook_block(void *arg, block_t *b, limiter_change_t change, bool from_store)
{
    server_t *srv = arg;
    Postern__Block blk = POSTERN__BLOCK__INIT;
    blk.network = b->network;
    blk.reason = b->reason;
    blk.since_ms = b->since_ms;
    blk.until_ms = b->until_ms;
    blk.service = (Postern__Service)b->service;
    blk.offense = b->offense;
    Postern__BlockChange m = POSTERN__BLOCK_CHANGE__INIT;
    m.kind = (Postern__BlockChange__Kind)change;
    m.block = &blk;
    bool sent = srv->bus && bus_publish_msg(srv->bus, "postern.block.changed", &m.base) == 0;
    char reason[BLOCK_REASON_MAX];
    log_msg(change == LIMITER_ADDED ? LOG_WARN : LOG_INFO,
            change == LIMITER_ADDED    ? "block added"
            : change == LIMITER_LIFTED ? "block lifted"
                                       : "block expired",
            "network=%s service=%s offense=%u until_ms=%lld source=%s broadcast=%s reason=\"%s\"",
            b->network, conf_service_name(b->service), b->offense, (long long)b->until_ms,
            from_store ? "postgresql" : "limiter", sent ? "yes" : "no",
            logq(b->reason, reason, sizeof reason));
    if (from_store || !srv->store)
        return;
    if (change == LIMITER_ADDED)
        store_block_write(srv->store, b);
    else
        store_block_delete(srv->store, b, change == LIMITER_EXPIRED);
}

static void hook_account(void *arg, disabled_t *d, bool disabled, bool from_store)
{
    server_t *srv = arg;
    Postern__AccountChange m = POSTERN__ACCOUNT_CHANGE__INIT;
    m.user = d->user;
    m.send_disabled = disabled;
    m.reason = disabled ? d->reason : (char *)"enabled again by an administrator";
    bool sent = srv->bus && bus_publish_msg(srv->bus, "postern.account.changed", &m.base) == 0;
    char reason[BLOCK_REASON_MAX], user[256];
    log_msg(disabled ? LOG_WARN : LOG_INFO, disabled ? "sending disabled" : "sending enabled",
            "user=\"%s\" source=%s broadcast=%s reason=\"%s\"", logq(d->user, user, sizeof user),
            from_store ? "postgresql" : "limiter", sent ? "yes" : "no",
            logq(m.reason, reason, sizeof reason));
    if (disabled && !from_store && srv->store)
        store_disabled_write(srv->store, d);
}

/* Publishes the queued alerts, oldest first, while the bus takes them. */
static void alerts_flush(server_t *srv)
{
    size_t sent = 0;
    while (sent < srv->nalerts && srv->bus &&
           bus_publish(srv->bus, "postern.alert", srv->alerts[sent]->data,
                       srv->alerts[sent]->len) == 0)
        free(srv->alerts[sent++]);
    if (!sent)
        return;
    memmove(srv->alerts, srv->alerts + sent, (srv->nalerts - sent) * sizeof srv->alerts[0]);
    srv->nalerts -= sent;
    log_info("queued alerts sent", "count=%zu left=%zu", sent, srv->nalerts);
}

static void hook_alert(void *arg, const limiter_alert_t *a)
{
    server_t *srv = arg;
    Postern__Alert m = POSTERN__ALERT__INIT;
    m.cause = (char *)a->cause;
    m.user = (char *)(a->user ? a->user : "");
    m.client_addrs = (char **)a->client_addrs;
    m.n_client_addrs = a->n_client_addrs;
    m.limit = (char *)a->limit;
    m.action = (char *)a->action;
    m.time_ms = a->time_ms;
    m.detail = (char *)a->detail;
    m.notify_owner = a->notify_owner;
    size_t len = protobuf_c_message_get_packed_size(&m.base);
    queued_t *q = malloc(sizeof *q + len);
    if (!q)
        return;
    q->len = protobuf_c_message_pack(&m.base, q->data);
    char user[256], limit[200];
    log_warn("alert", "cause=%s action=%s user=\"%s\" limit=\"%s\"", a->cause, a->action,
             logq(a->user, user, sizeof user), logq(a->limit, limit, sizeof limit));
    if (srv->nalerts == 0 && srv->bus &&
        bus_publish(srv->bus, "postern.alert", q->data, q->len) == 0) {
        free(q);
        return;
    }
    if (srv->nalerts == ALERT_QUEUE_MAX) { /* keep the newest */
        free(srv->alerts[0]);
        memmove(srv->alerts, srv->alerts + 1, (ALERT_QUEUE_MAX - 1) * sizeof srv->alerts[0]);
        srv->nalerts--;
    }
    srv->alerts[srv->nalerts++] = q;
    log_warn("alert queued until the bus is back", "queued=%zu", srv->nalerts);
}

/* ---- requests and events -------------------------------------------------------------- */

/* Until the first load from PostgreSQL has completed the limiter knows neither the blocks
 * nor the disabled accounts: it does not answer checks then, so front ends fall back to
 * what they do when it is down (451 for messages, their local copy of blocks for logins)
 * instead of being told "allowed" or "no blocks". */
static bool not_loaded(server_t *srv, const char *what)
{
    if (store_loaded(srv->store))
        return false;
    log_debug("request left unanswered until the first load", "request=%s", what);
    return true;
}

static void auth_check_cb(void *arg, const char *subject, const void *data, size_t len,
                          const char *reply)
{
    server_t *srv = arg;
    if (not_loaded(srv, "auth"))
        return;
    Postern__AuthCheck *m = postern__auth_check__unpack(NULL, len, data);
    if (!m) {
        dropped(srv, subject, len);
        return;
    }
    limiter_reply_t r;
    limiter_auth_check(srv->lim, m->service, m->client_addr, lower(m->user), server_now(srv),
                       &r);
    send_reply(srv, reply, &r);
    log_debug("auth check", "client=%s verdict=%s delay_ms=%u", m->client_addr,
              verdict_name(r.verdict), r.delay_ms);
    postern__auth_check__free_unpacked(m, NULL);
}

/* A send check waiting for the user's settings. */
typedef struct send_wait {
    server_t *srv;
    uint32_t rcpt;
    char *reply, *user, *client, *queue_id;
} send_wait_t;

/* A throttle reply waits until hamr_throttled records it (for `mailctl hamr status`). */
typedef struct throttle_note {
    server_t *srv;
    char *reply;
    limiter_reply_t r;
} throttle_note_t;

static void throttle_noted_cb(void *arg, PGresult *res)
{
    throttle_note_t *t = arg;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_warn("throttled user not recorded", "error=\"%s\"",
                 res ? PQresultErrorMessage(res) : "database unavailable");
    if (!t->srv->stopping)
        send_reply(t->srv, t->reply, &t->r);
    free(t->reply);
    free(t);
}

static const char throttle_sql[] =
    "INSERT INTO hamr_throttled AS t (address, until, reason)"
    " VALUES ($1, now() + $2 * interval '1 second', $3)"
    " ON CONFLICT (address) DO UPDATE SET"
    "  since = CASE WHEN t.until < now() THEN now() ELSE t.since END,"
    "  refused = CASE WHEN t.until < now() THEN 1 ELSE t.refused + 1 END,"
    "  until = EXCLUDED.until, reason = EXCLUDED.reason";

static void send_decide(server_t *srv, const char *reply, const char *user, const char *client,
                        uint32_t rcpt, const char *queue_id)
{
    limiter_reply_t r;
    limiter_send_check(srv->lim, user, client, rcpt, queue_id, server_now(srv), &r);
    throttle_note_t *t = r.verdict == LIMITER_THROTTLE && db_available(srv->db)
                             ? calloc(1, sizeof *t)
                             : NULL;
    if (t && (t->reply = strdup(reply ? reply : ""))) {
        char secs[16];
        snprintf(secs, sizeof secs, "%u", r.retry_after_s);
        const char *params[3] = { user, secs, r.reason };
        t->srv = srv;
        t->r = r;
        db_query(srv->db, throttle_sql, 3, params, NULL, NULL, throttle_noted_cb, t);
    } else {
        free(t);
        send_reply(srv, reply, &r);
    }
    char u[256];
    log_msg(r.verdict == LIMITER_ALLOW ? LOG_DEBUG : LOG_INFO, "send check",
            "user=\"%s\" queue_id=%s verdict=%s retry_after_s=%u", logq(user, u, sizeof u),
            queue_id, verdict_name(r.verdict), r.retry_after_s);
}

static void send_wait_free(send_wait_t *w)
{
    free(w->reply);
    free(w->user);
    free(w->client);
    free(w->queue_id);
    free(w);
}

static void send_resolved_cb(void *arg, bool ok)
{
    (void)ok; /* without fresh settings the cached (or system) ones apply */
    send_wait_t *w = arg;
    if (!w->srv->stopping)
        send_decide(w->srv, w->reply, w->user, w->client, w->rcpt, w->queue_id);
    send_wait_free(w);
}

static void send_check_cb(void *arg, const char *subject, const void *data, size_t len,
                          const char *reply)
{
    server_t *srv = arg;
    if (not_loaded(srv, "send"))
        return;
    Postern__SendCheck *m = postern__send_check__unpack(NULL, len, data);
    if (!m) {
        dropped(srv, subject, len);
        return;
    }
    lower(m->user);
    if (!*m->user || limiter_disabled(srv->lim, m->user) ||
        limiter_user_fresh(srv->lim, m->user) || !db_available(srv->db)) {
        send_decide(srv, reply, m->user, m->client_addr, m->rcpt_count, m->queue_id);
    } else {
        send_wait_t *w = calloc(1, sizeof *w);
        if (w) {
            w->srv = srv;
            w->rcpt = m->rcpt_count;
            w->reply = strdup(reply ? reply : "");
            w->user = strdup(m->user);
            w->client = strdup(m->client_addr);
            w->queue_id = strdup(m->queue_id);
        }
        if (!w || !w->reply || !w->user || !w->client || !w->queue_id) {
            if (w)
                send_wait_free(w);
            send_decide(srv, reply, m->user, m->client_addr, m->rcpt_count, m->queue_id);
        } else {
            store_resolve_user(srv->store, m->user, send_resolved_cb, w);
        }
    }
    postern__send_check__free_unpacked(m, NULL);
}

static void release_cb(void *arg, const char *subject, const void *data, size_t len,
                       const char *reply)
{
    (void)reply;
    server_t *srv = arg;
    Postern__SendRelease *m = postern__send_release__unpack(NULL, len, data);
    if (!m) {
        dropped(srv, subject, len);
        return;
    }
    limiter_send_release(srv->lim, lower(m->user), m->queue_id, server_now(srv));
    log_debug("reservation released", "queue_id=%s", m->queue_id);
    postern__send_release__free_unpacked(m, NULL);
}

static void rcpt_cb(void *arg, const char *subject, const void *data, size_t len,
                    const char *reply)
{
    server_t *srv = arg;
    if (not_loaded(srv, "rcpt"))
        return;
    Postern__RcptFailure *m = postern__rcpt_failure__unpack(NULL, len, data);
    if (!m) {
        dropped(srv, subject, len);
        return;
    }
    limiter_reply_t r;
    limiter_rcpt_failure(srv->lim, m->service, m->client_addr, server_now(srv), &r);
    send_reply(srv, reply, &r);
    log_msg(r.delay_ms || r.verdict != LIMITER_ALLOW ? LOG_INFO : LOG_DEBUG, "invalid recipient",
            "client=%s verdict=%s delay_ms=%u", m->client_addr, verdict_name(r.verdict),
            r.delay_ms);
    postern__rcpt_failure__free_unpacked(m, NULL);
}

static void blocks_cb(void *arg, const char *subject, const void *data, size_t len,
                      const char *reply)
{
    server_t *srv = arg;
    if (not_loaded(srv, "blocks"))
        return;
    Postern__BlockListRequest *m = postern__block_list_request__unpack(NULL, len, data);
    if (!m) {
        dropped(srv, subject, len);
        return;
    }
    postern__block_list_request__free_unpacked(m, NULL);
    if (!reply || !*reply)
        return;
    blocks_t *bl = limiter_blocks(srv->lim);
    size_t n = blocks_count(bl), ne = blocks_exempt_count(bl);
    Postern__Block *items = calloc(n + 1, sizeof *items);
    Postern__Block **ptrs = calloc(n + 1, sizeof *ptrs);
    char **exempt = calloc(ne + 1, sizeof *exempt);
    if (!items || !ptrs || !exempt) {
        free(items);
        free(ptrs);
        free(exempt);
        return; /* the front end asks again */
    }
    int64_t now = server_now(srv);
    size_t k = 0, pos = 0;
    block_t *b;
    while ((b = blocks_next(bl, &pos)) && k < n) {
        if (b->until_ms <= now)
            continue;
        postern__block__init(&items[k]);
        items[k].network = b->network;
        items[k].reason = b->reason;
        items[k].since_ms = b->since_ms;
        items[k].until_ms = b->until_ms;
        items[k].service = (Postern__Service)b->service;
        items[k].offense = b->offense;
        ptrs[k] = &items[k];
        k++;
    }
    for (size_t i = 0; i < ne; i++)
        exempt[i] = (char *)blocks_exempt_at(bl, i);
    Postern__BlockList list = POSTERN__BLOCK_LIST__INIT;
    list.blocks = ptrs;
    list.n_blocks = k;
    list.exempt = exempt;
    list.n_exempt = ne;
    if (bus_publish_msg(srv->bus, reply, &list.base) < 0)
        log_warn("block list not sent", "blocks=%zu exempt=%zu", k, ne);
    free(items);
    free(ptrs);
    free(exempt);
}

static void auth_event_cb(void *arg, const char *subject, const void *data, size_t len,
                          const char *reply)
{
    (void)reply;
    server_t *srv = arg;
    Postern__AuthEvent *m = postern__auth_event__unpack(NULL, len, data);
    if (!m) {
        dropped(srv, subject, len);
        return;
    }
    limiter_auth_event(srv->lim, m->service, lower(m->user), m->client_addr, m->result,
                       m->attempt_digest.data, m->attempt_digest.len, server_now(srv));
    postern__auth_event__free_unpacked(m, NULL);
}

static void message_event_cb(void *arg, const char *subject, const void *data, size_t len,
                             const char *reply)
{
    (void)reply;
    server_t *srv = arg;
    Postern__MessageEvent *m = postern__message_event__unpack(NULL, len, data);
    if (!m) {
        dropped(srv, subject, len);
        return;
    }
    limiter_message(srv->lim, lower(m->user), m->queue_id, m->authenticated, m->rcpt_count,
                    m->client_addr, server_now(srv));
    postern__message_event__free_unpacked(m, NULL);
}

static void config_changed_cb(void *arg, const char *subject, const void *data, size_t len,
                              const char *reply)
{
    (void)reply;
    (void)subject;
    server_t *srv = arg;
    Postern__ConfigChanged *m = postern__config_changed__unpack(NULL, len, data);
    char what[64];
    log_info("configuration changed, reloading", "what=\"%s\"",
             logq(m ? m->what : "?", what, sizeof what));
    if (m)
        postern__config_changed__free_unpacked(m, NULL);
    /* Whatever changed: settings, exemptions, blocks and accounts are reloaded together. */
    limiter_invalidate(srv->lim);
    store_reload(srv->store);
}

/* ---- timers, signals, life ------------------------------------------------------------ */

static void tick_cb(uv_timer_t *t)
{
    server_t *srv = t->data;
    int64_t now = server_now(srv);
    srv->ticks++;
    limiter_expire(srv->lim, now);
    limiter_prune(srv->lim, now, PRUNE_BUDGET);
    if (srv->ticks % RETRY_TICKS == 0)
        store_retry(srv->store);
    if (srv->nalerts)
        alerts_flush(srv);
    if (srv->ticks % STATS_TICKS == 0) {
        limiter_stats_t st;
        limiter_stats(srv->lim, &st);
        log_info("keys", "users=%zu reservations=%zu disabled=%zu auth_counters=%zu "
                 "rcpt_counters=%zu accounts=%zu blocks=%zu offenders=%zu",
                 st.users, st.reservations, st.disabled, st.auth_counters, st.rcpt_counters,
                 st.accounts, st.blocks, st.offenders);
    }
}

static void reload_cb(uv_timer_t *t)
{
    server_t *srv = t->data;
    limiter_invalidate(srv->lim);
    store_reload(srv->store);
}

static void server_stop(server_t *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    log_info("stopping", "%s", "");
    health_stop(&srv->health);
    uv_timer_stop(&srv->tick);
    uv_timer_stop(&srv->reload);
    uv_signal_stop(&srv->sig_term);
    uv_signal_stop(&srv->sig_int);
    bus_destroy(&srv->bus);      /* nothing more comes in */
    store_stop(srv->store);      /* what db_destroy() still calls back finds nothing to do */
    db_destroy(&srv->db);
    store_destroy(&srv->store);
    uv_close((uv_handle_t *)&srv->tick, NULL);
    uv_close((uv_handle_t *)&srv->reload, NULL);
    uv_close((uv_handle_t *)&srv->sig_term, NULL);
    uv_close((uv_handle_t *)&srv->sig_int, NULL);
}

static void signal_cb(uv_signal_t *h, int signum)
{
    server_t *srv = h->data;
    log_info("signal", "signal=%d", signum);
    server_stop(srv);
}

static const struct {
    const char *subject;
    bus_msg_cb cb;
} subscriptions[] = {
    { "postern.limiter.auth", auth_check_cb },
    { "postern.limiter.send", send_check_cb },
    { "postern.limiter.release", release_cb },
    { "postern.limiter.rcpt", rcpt_cb },
    { "postern.limiter.blocks", blocks_cb },
    { "postern.event.auth", auth_event_cb },
    { "postern.event.message", message_event_cb },
    { "postern.config.changed", config_changed_cb },
};

int server_run(const server_opts_t *opts)
{
    server_t srv_storage = { 0 };
    server_t *srv = &srv_storage;
    srv->opts = opts;
    srv->loop = uv_default_loop();
    limiter_hooks_t hooks = {
        .arg = srv, .block = hook_block, .account = hook_account, .alert = hook_alert,
    };
    srv->lim = limiter_create(&hooks);
    srv->db = db_create(srv->loop, opts->database_url, opts->db_pool > 0 ? opts->db_pool : 4);
    srv->bus = bus_create(srv->loop, opts->nats_url, "limiter");
    if (!srv->lim || !srv->db || !srv->bus) {
        log_error("cannot start the policy, database or bus client", "%s", "");
        bus_destroy(&srv->bus);
        db_destroy(&srv->db);
        uv_run(srv->loop, UV_RUN_DEFAULT);
        limiter_destroy(&srv->lim);
        uv_loop_close(srv->loop);
        nats_Close();
        return 2;
    }
    srv->store = store_create(srv->loop, srv->db, srv->lim, server_now, srv);
    int failed = 0;
    for (size_t i = 0; i < sizeof subscriptions / sizeof subscriptions[0]; i++)
        if (bus_subscribe(srv->bus, subscriptions[i].subject, subscriptions[i].cb, srv) < 0)
            failed = 1;

    uv_timer_init(srv->loop, &srv->tick);
    uv_timer_init(srv->loop, &srv->reload);
    uv_signal_init(srv->loop, &srv->sig_term);
    uv_signal_init(srv->loop, &srv->sig_int);
    srv->tick.data = srv->reload.data = srv->sig_term.data = srv->sig_int.data = srv;

    if (failed || !srv->store) {
        log_error("cannot subscribe to the limiter's subjects", "%s", "");
        server_stop(srv);
    } else {
        uint64_t reload_ms = (uint64_t)(opts->reload_s > 0 ? opts->reload_s : 30) * 1000;
        uv_timer_start(&srv->tick, tick_cb, TICK_MS, TICK_MS);
        uv_timer_start(&srv->reload, reload_cb, reload_ms, reload_ms);
        uv_signal_start(&srv->sig_term, signal_cb, SIGTERM);
        uv_signal_start(&srv->sig_int, signal_cb, SIGINT);
        store_reload(srv->store);
        const char *hp = getenv("HEALTH_PORT");
        if (hp && atoi(hp) > 0) {
            srv->metrics = metrics_create();
            srv->health = health_start(srv->loop, atoi(hp), srv->metrics, server_ready, srv);
        }
        log_info("started", "instance=%s", opts->instance);
    }
    uv_run(srv->loop, UV_RUN_DEFAULT);

    limiter_destroy(&srv->lim);
    metrics_destroy(&srv->metrics);
    for (size_t i = 0; i < srv->nalerts; i++)
        free(srv->alerts[i]);
    if (srv->nalerts)
        log_warn("alerts lost at exit: the bus was down", "count=%zu", srv->nalerts);
    int rc = uv_loop_close(srv->loop);
    if (rc != 0)
        log_error("handles left open at exit", "error=\"%s\"", uv_strerror(rc));
    nats_Close();
    log_info("stopped", "instance=%s", opts->instance);
    return failed ? 1 : 0;
}
