#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"
#include "bus/events.h"
#include "logins.h"
#include "policy.h"
#include "replica.h"
#include "store.h"

#define TICK_MS 1000
#define RETRY_TICKS 5          /* dirty writes are sent again this often */
#define STATS_TICKS 600        /* the key counts are logged this often */
#define PRUNE_BUDGET 20000     /* entries looked at per table and tick */
#define ALERT_QUEUE_MAX 256    /* alerts kept while the bus is down */
#define HISTORY_TICKS 60       /* the stream's maximum age is looked at this often */
#define RECORD_ACK_MS 300      /* the stream's acknowledgement of a record, at most */
#define RECORD_TRIES 120       /* a record the stream did not take is offered this often, a tick apart */
#define RECORDS_MAX 100000     /* records kept for offering again, at most */
#define REFRESH_BURST 8.0      /* background refreshes started back to back, at most */
#define REFRESH_MIN_PER_S 10.0 /* the pace of background refreshes with few users cached */

typedef struct server {
    svc_t *svc;
    limiter_t *lim;
    store_t *store;
    logins_t *logins; /* the login history, written while this replica answers */
    replica_t *replica;
    struct unrecorded *unrecorded; /* reserved slots whose record the stream must still take */
    size_t nunrecorded;
    uv_timer_t tick;
    uv_timer_t reload;
    bool timers;      /* tick and reload are initialised */
    int open_timers;  /* not closed yet: the server is freed when none is left */
    int64_t last_now; /* the clock never goes back */
    int64_t stream_ms; /* the time of the stream message being applied */
    int64_t stream_last; /* the latest stream time applied while following */
    unsigned long ticks;
    /* Background refreshes of a round (send_check_cb) are paced: tokens, earned at
     * refresh_per_ms since refresh_at, one spent per lookup. */
    double refresh_tokens;
    double refresh_per_ms;
    int64_t refresh_at;
    buf_t alerts[ALERT_QUEUE_MAX]; /* packed Alerts, oldest first */
    size_t nalerts;
} server_t;

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

/* Account names are compared as PostgreSQL stores them: in lower case. A copy to free, or
 * NULL when memory runs out. */
static char *lower_dup(const char *s)
{
    char *copy = strdup(s ? s : "");
    for (char *c = copy; c && *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return copy;
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
    if (!reply || !*reply)
        return;
    ev_check_reply_t m = {
        .verdict = (Postern__Verdict)r->verdict,
        .reason = r->reason,
        .retry_after_s = r->retry_after_s,
        .until_ms = r->until_ms,
        .delay_ms = r->delay_ms,
    };
    if (ev_reply_check(srv->svc->bus, reply, &m) < 0)
        log_warn("reply not sent", "subject=%s", reply);
}

static ev_block_t block_event(const block_t *b)
{
    ev_block_t ev = {
        .network = b->network,
        .reason = b->reason,
        .since_ms = b->since_ms,
        .until_ms = b->until_ms,
        .service = (Postern__Service)b->service,
        .offense = b->offense,
    };
    return ev;
}

/* ---- hooks: what the policy decided reaches the bus and PostgreSQL -------------------- */

static void hook_block(void *arg, block_t *b, limiter_change_t change, bool from_store)
{
    server_t *srv = arg;
    ev_block_t ev = block_event(b);
    bool sent = ev_publish_block_changed(srv->svc->bus, (ev_block_change_t)change, &ev) == 0;
    char reason[BLOCK_REASON_MAX];
    log_msg(change == LIMITER_ADDED ? LOG_WARN : LOG_INFO,
            change == LIMITER_ADDED    ? "block added"
            : change == LIMITER_LIFTED ? "block lifted"
                                       : "block expired",
            "network=%s service=%s offense=%u until_ms=%lld source=%s broadcast=%s reason=\"%s\"",
            b->network, conf_service_name(b->service), b->offense, (long long)b->until_ms,
            from_store ? "postgresql" : "limiter", sent ? "yes" : "no",
            logq(b->reason, reason, sizeof reason));
    if (change == LIMITER_LIFTED) {
        /* The counters that led to it were forgotten here: a replica following the stream,
         * or this one replaying it after a restart, forgets them at the same point. */
        ev_limiter_log_t rec = {
            .kind = EV_LIMITER_LOG_FORGET_NETWORK, .replica = replica_id(srv->replica),
            .time_ms = server_now(srv), .client_addr = b->network,
        };
        if (ev_publish_limiter_log(srv->svc->bus, &rec) < 0)
            log_warn("lifted block not logged: a replay would count its failures again",
                     "network=%s", b->network);
    }
    if (from_store || !srv->store)
        return;
    if (change == LIMITER_ADDED) {
        char labels[48];
        snprintf(labels, sizeof labels, "service=\"%s\"", conf_service_name(b->service));
        metrics_add(srv->svc->metrics, "postern_limiter_blocks_total",
                    "Client networks blocked by the answering limiter, by the service where "
                    "the failures happened",
                    labels, 1);
        store_block_write(srv->store, b);
    } else {
        store_block_delete(srv->store, b, change == LIMITER_EXPIRED);
    }
}

static void hook_account(void *arg, disabled_t *d, bool disabled, bool from_store)
{
    server_t *srv = arg;
    const char *why = disabled ? d->reason : "enabled again by an administrator";
    bool sent = ev_publish_account_changed(srv->svc->bus, d->user, disabled, why) == 0;
    char reason[BLOCK_REASON_MAX], user[256];
    log_msg(disabled ? LOG_WARN : LOG_INFO, disabled ? "sending disabled" : "sending enabled",
            "user=\"%s\" source=%s broadcast=%s reason=\"%s\"", logq(d->user, user, sizeof user),
            from_store ? "postgresql" : "limiter", sent ? "yes" : "no",
            logq(why, reason, sizeof reason));
    if (disabled && !from_store && srv->store)
        store_disabled_write(srv->store, d);
    if (!disabled) {
        ev_limiter_log_t rec = {
            .kind = EV_LIMITER_LOG_CLEAR_USER, .replica = replica_id(srv->replica),
            .time_ms = server_now(srv), .user = d->user,
        };
        if (ev_publish_limiter_log(srv->svc->bus, &rec) < 0)
            log_warn("enabled account not logged: a replay would count its window again",
                     "user=\"%s\"", user);
    }
}

/* Publishes the queued alerts, oldest first, while the bus takes them. */
static void alerts_flush(server_t *srv)
{
    size_t sent = 0;
    while (sent < srv->nalerts &&
           bus_publish(srv->svc->bus, BUS_SUBJECT_ALERT, srv->alerts[sent].data,
                       srv->alerts[sent].len) == 0)
        buf_free(&srv->alerts[sent++]);
    if (!sent)
        return;
    memmove(srv->alerts, srv->alerts + sent, (srv->nalerts - sent) * sizeof srv->alerts[0]);
    srv->nalerts -= sent;
    log_info("queued alerts sent", "count=%zu left=%zu", sent, srv->nalerts);
}

static void hook_alert(void *arg, const limiter_alert_t *a)
{
    server_t *srv = arg;
    ev_alert_t ev = {
        .cause = a->cause,
        .user = a->user ? a->user : "",
        .client_addrs = a->client_addrs,
        .n_client_addrs = a->n_client_addrs,
        .limit = a->limit,
        .action = a->action,
        .time_ms = a->time_ms,
        .detail = a->detail,
        .notify_owner = a->notify_owner,
        .interval_s = a->interval_s,
    };
    char user[256], limit[200];
    log_warn("alert", "cause=%s action=%s user=\"%s\" limit=\"%s\"", a->cause, a->action,
             logq(a->user, user, sizeof user), logq(a->limit, limit, sizeof limit));
    buf_t packed;
    buf_init(&packed);
    if (ev_pack_alert(&ev, &packed) < 0) {
        log_error("alert lost: out of memory", "cause=%s", a->cause);
        return;
    }
    if (srv->nalerts == 0 &&
        bus_publish(srv->svc->bus, BUS_SUBJECT_ALERT, packed.data, packed.len) == 0) {
        buf_free(&packed);
        return;
    }
    if (srv->nalerts == ALERT_QUEUE_MAX) { /* keep the newest */
        buf_free(&srv->alerts[0]);
        memmove(srv->alerts, srv->alerts + 1, (ALERT_QUEUE_MAX - 1) * sizeof srv->alerts[0]);
        srv->nalerts--;
    }
    srv->alerts[srv->nalerts++] = packed;
    log_warn("alert queued until the bus is back", "queued=%zu", srv->nalerts);
}

/* ---- requests and events -------------------------------------------------------------- */

/* Until the first load from PostgreSQL has completed the limiter knows neither the blocks
 * nor the disabled accounts: it does not answer checks then, so front ends fall back to
 * what they do when it is down (451 for messages, their local copy of blocks for logins)
 * instead of being told "allowed" or "no blocks". Only the leading replica answers
 * (replica.h); the others leave every request to it. Once stopping, it takes nothing more. */
static bool not_serving(server_t *srv, const char *what)
{
    if (srv->svc->stopping || !replica_leading(srv->replica))
        return true;
    if (store_loaded(srv->store))
        return false;
    log_debug("request left unanswered until the first load", "request=%s", what);
    return true;
}

static void auth_check_cb(void *arg, const ev_auth_check_t *req, const char *reply)
{
    server_t *srv = arg;
    if (not_serving(srv, "auth"))
        return;
    char *user = lower_dup(req->user);
    if (!user)
        return; /* unanswered: the front end's timeout applies */
    limiter_reply_t r;
    limiter_auth_check(srv->lim, req->service, req->client_addr, user, server_now(srv), &r);
    send_reply(srv, reply, &r);
    log_debug("auth check", "client=%s verdict=%s delay_ms=%u", req->client_addr,
              verdict_name(r.verdict), r.delay_ms);
    free(user);
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
    if (!t->srv->svc->stopping)
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

/* A record of the leader's the stream must hold: a reserved slot (RESERVE), sent before
 * smtpd is told, so that a replica that takes over counts it. The record goes out on the
 * bus connection ahead of the answer: NATS has it before smtpd can act on the answer, and a
 * leader killed after answering has handed it over already. Its acknowledgement is not
 * waited for (that round trip would double a send check's latency); a record the stream
 * did not take (no stream leader, an election under way) is offered again once a tick
 * until it does. Offered twice, a RESERVE counts once: replicas key slots by queue id. */
typedef struct unrecorded {
    server_t *srv; /* NULL once the server is gone (the bus answers it at its destroy) */
    char *user, *queue_id;
    uint32_t rcpt_count, max_messages, interval_s;
    int64_t time_ms;
    unsigned tries;
    bool in_flight;
    struct unrecorded *prev, *next; /* the list can be long while the stream is away */
} unrecorded_t;

static void unrecorded_free(unrecorded_t *u)
{
    free(u->user);
    free(u->queue_id);
    free(u);
}

static void unrecorded_unlink(server_t *srv, unrecorded_t *u)
{
    if (u->prev)
        u->prev->next = u->next;
    else
        srv->unrecorded = u->next;
    if (u->next)
        u->next->prev = u->prev;
    srv->nunrecorded--;
}

static void record_stored_cb(void *arg, bool stored)
{
    unrecorded_t *u = arg;
    u->in_flight = false;
    if (!u->srv) {
        unrecorded_free(u);
        return;
    }
    if (stored || u->tries >= RECORD_TRIES) {
        if (!stored)
            log_warn("reserved slot not recorded: a replica that takes over will not count it",
                     "queue_id=%s tries=%u", u->queue_id, u->tries);
        unrecorded_unlink(u->srv, u);
        unrecorded_free(u);
    }
}

static void record_send(server_t *srv, unrecorded_t *u)
{
    ev_limiter_log_t rec = {
        .kind = EV_LIMITER_LOG_RESERVE, .replica = replica_id(srv->replica),
        .time_ms = u->time_ms, .user = u->user, .queue_id = u->queue_id,
        .rcpt_count = u->rcpt_count, .max_messages = u->max_messages,
        .interval_s = u->interval_s,
    };
    u->tries++;
    if (ev_record_limiter_log(srv->svc->bus, &rec, RECORD_ACK_MS, record_stored_cb, u) == 0)
        u->in_flight = true;
}

/* Offers again, once a tick, what the stream has not taken yet. */
static void records_retry(server_t *srv)
{
    unrecorded_t *next;
    for (unrecorded_t *u = srv->unrecorded; u; u = next) {
        next = u->next;
        if (u->in_flight)
            continue;
        if (u->tries >= RECORD_TRIES) {
            record_stored_cb(u, false); /* unlinks and frees it */
            continue;
        }
        record_send(srv, u);
    }
}

/* Sends the record of a slot reserved for queue_id, before the answer. */
static void reserve_record(server_t *srv, const char *user, const char *queue_id,
                           uint32_t rcpt, int64_t now, const limiter_reply_t *r)
{
    unrecorded_t *u = srv->nunrecorded < RECORDS_MAX ? calloc(1, sizeof *u) : NULL;
    if (!u || !(u->user = strdup(user)) || !(u->queue_id = strdup(queue_id ? queue_id : ""))) {
        log_warn("reserved slot not recorded: a replica that takes over will not count it",
                 "queue_id=%s unrecorded=%zu", queue_id, srv->nunrecorded);
        if (u)
            unrecorded_free(u);
        return;
    }
    u->srv = srv;
    u->time_ms = now;
    u->rcpt_count = rcpt;
    u->max_messages = r->max_messages;
    u->interval_s = r->interval_s;
    u->next = srv->unrecorded;
    if (u->next)
        u->next->prev = u;
    srv->unrecorded = u;
    srv->nunrecorded++;
    record_send(srv, u); /* not sent now (bus away): the next tick offers it again */
}

static void send_decide(server_t *srv, const char *reply, const char *user, const char *client,
                        uint32_t rcpt, const char *queue_id)
{
    limiter_reply_t r;
    int64_t now = server_now(srv);
    limiter_send_check(srv->lim, user, client, rcpt, queue_id, now, &r);
    if (r.reserved)
        reserve_record(srv, user, queue_id, rcpt, now, &r); /* on the bus ahead of the answer */
    throttle_note_t *t = r.verdict == LIMITER_THROTTLE && db_available(srv->svc->db)
                             ? calloc(1, sizeof *t)
                             : NULL;
    if (t && (t->reply = strdup(reply ? reply : ""))) {
        char secs[16];
        snprintf(secs, sizeof secs, "%u", r.retry_after_s);
        const char *params[3] = { user, secs, r.reason };
        t->srv = srv;
        t->r = r;
        db_query(srv->svc->db, throttle_sql, 3, params, NULL, NULL, throttle_noted_cb, t);
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
    if (!w->srv->svc->stopping)
        send_decide(w->srv, w->reply, w->user, w->client, w->rcpt, w->queue_id);
    send_wait_free(w);
}

static void refreshed_cb(void *arg, bool ok)
{
    (void)arg;
    (void)ok; /* not resolved: the cached settings stay (logged) */
}

/* True when a background refresh may start now. A round's lookups go at the pace that
 * asks every cached user's settings again within half of a round (tick_cb sets it), in
 * bursts of REFRESH_BURST at most: unpaced, every check after a round started one, so that
 * the limiter, PostgreSQL and the bus had twice the work per check until every active user
 * had checked once (5,000 users at 3,500 checks a second: a second and a half). */
static bool refresh_token(server_t *srv)
{
    int64_t now = server_now(srv);
    srv->refresh_tokens += (double)(now - srv->refresh_at) * srv->refresh_per_ms;
    if (srv->refresh_tokens > REFRESH_BURST)
        srv->refresh_tokens = REFRESH_BURST;
    srv->refresh_at = now;
    return srv->refresh_tokens >= 1.0;
}

static void send_check_cb(void *arg, const ev_send_check_t *req, const char *reply)
{
    server_t *srv = arg;
    if (not_serving(srv, "send"))
        return;
    char *user = lower_dup(req->user);
    if (!user)
        return;
    bool fresh = *user && limiter_user_fresh(srv->lim, user);
    /* Settings cached before the last periodic reload are asked for again meanwhile (a user
     * whose turn does not come at this check stays due for the next). */
    if (fresh && db_available(srv->svc->db) && refresh_token(srv) &&
        limiter_user_refresh_due(srv->lim, user)) {
        srv->refresh_tokens -= 1.0;
        store_resolve_user(srv->store, user, refreshed_cb, NULL);
    }
    if (!*user || limiter_disabled(srv->lim, user) || fresh || !db_available(srv->svc->db)) {
        send_decide(srv, reply, user, req->client_addr, req->rcpt_count, req->queue_id);
        free(user);
        return;
    }
    send_wait_t *w = calloc(1, sizeof *w);
    if (w) {
        w->srv = srv;
        w->rcpt = req->rcpt_count;
        w->reply = strdup(reply ? reply : "");
        w->user = user;
        w->client = strdup(req->client_addr);
        w->queue_id = strdup(req->queue_id);
    }
    if (!w || !w->reply || !w->client || !w->queue_id) {
        send_decide(srv, reply, user, req->client_addr, req->rcpt_count, req->queue_id);
        if (w)
            send_wait_free(w); /* frees user too */
        else
            free(user);
        return;
    }
    store_resolve_user(srv->store, w->user, send_resolved_cb, w);
}

static void release_cb(void *arg, const char *user, const char *queue_id)
{
    server_t *srv = arg;
    if (srv->svc->stopping)
        return;
    char *lower = lower_dup(user);
    if (!lower)
        return;
    limiter_send_release(srv->lim, lower, queue_id, srv->stream_ms);
    log_debug("reservation released", "queue_id=%s", queue_id);
    free(lower);
}

static void rcpt_cb(void *arg, const ev_rcpt_failure_t *req, const char *reply)
{
    server_t *srv = arg;
    if (not_serving(srv, "rcpt"))
        return;
    limiter_reply_t r;
    int64_t now = server_now(srv);
    limiter_rcpt_failure(srv->lim, req->service, req->client_addr, now, &r);
    ev_limiter_log_t rec = {
        .kind = EV_LIMITER_LOG_RCPT_FAILURE, .replica = replica_id(srv->replica),
        .time_ms = now, .client_addr = req->client_addr, .service = req->service,
    };
    if (ev_publish_limiter_log(srv->svc->bus, &rec) < 0)
        log_warn("invalid recipient not logged", "client=%s", req->client_addr);
    send_reply(srv, reply, &r);
    log_msg(r.delay_ms || r.verdict != LIMITER_ALLOW ? LOG_INFO : LOG_DEBUG, "invalid recipient",
            "client=%s verdict=%s delay_ms=%u", req->client_addr, verdict_name(r.verdict),
            r.delay_ms);
}

/* The whole list in one reply, for a front end that does not page (older than paging):
 * past about 15,000 blocks NATS refuses it, and that front end keeps its copy. */
static void blocks_whole(server_t *srv, const char *reply)
{
    blocks_t *bl = limiter_blocks(srv->lim);
    size_t n = blocks_count(bl), ne = blocks_exempt_count(bl);
    ev_block_t *items = calloc(n + 1, sizeof *items);
    const char **exempt = calloc(ne + 1, sizeof *exempt);
    if (!items || !exempt) {
        free(items);
        free(exempt);
        return; /* the front end asks again */
    }
    int64_t now = server_now(srv);
    size_t k = 0, pos = 0;
    block_t *b;
    while ((b = blocks_next(bl, &pos)) && k < n)
        if (b->until_ms > now)
            items[k++] = block_event(b);
    for (size_t i = 0; i < ne; i++)
        exempt[i] = blocks_exempt_at(bl, i);
    if (ev_reply_block_list(srv->svc->bus, reply, items, k, exempt, ne) < 0)
        log_warn("block list not sent (a front end without paging)", "blocks=%zu exempt=%zu", k,
                 ne);
    free(items);
    free(exempt);
}

/* One page: the active blocks whose network sorts after `after`, as many as fit in
 * EV_BLOCK_PAGE_BYTES (at least one), and the exempt networks with the first page. The
 * pages' consistency is the front end's business (proto/postern.proto, BlockListRequest). */
static void blocks_page(server_t *srv, const char *after, const char *reply)
{
    blocks_t *bl = limiter_blocks(srv->lim);
    bool first = !after || !*after;
    size_t ne = first ? blocks_exempt_count(bl) : 0, cap = 256, k = 0;
    const char **exempt = calloc(ne + 1, sizeof *exempt);
    ev_block_t *items = malloc(cap * sizeof *items);
    size_t used = 64; /* more, next_after, total */
    for (size_t i = 0; exempt && i < ne; i++) {
        exempt[i] = blocks_exempt_at(bl, i);
        used += ev_block_list_exempt_size(exempt[i]);
    }
    bool more = false;
    if (exempt && items) {
        int64_t now = server_now(srv);
        size_t pos;
        block_t *b;
        blocks_order_seek(bl, after, first, &pos);
        while ((b = blocks_order_next(bl, &pos))) {
            if (b->until_ms <= now)
                continue;
            ev_block_t ev = block_event(b);
            size_t size = ev_block_list_block_size(&ev);
            if (k > 0 && used + size > EV_BLOCK_PAGE_BYTES) {
                more = true;
                break;
            }
            if (k == cap) {
                ev_block_t *grown = realloc(items, 2 * cap * sizeof *items);
                if (!grown) {
                    more = true; /* a shorter page */
                    break;
                }
                items = grown;
                cap *= 2;
            }
            items[k++] = ev;
            used += size;
        }
    }
    if (!exempt || !items) {
        free(items);
        free(exempt);
        return; /* the front end asks again */
    }
    ev_block_page_t page = {
        .blocks = items,
        .nblocks = k,
        .exempt = exempt,
        .nexempt = ne,
        .more = more,
        .next_after = more ? items[k - 1].network : "",
        .total = (uint32_t)blocks_count(bl),
    };
    if (ev_reply_block_page(srv->svc->bus, reply, &page) < 0)
        log_warn("block list page not sent", "blocks=%zu bytes=%zu", k, used);
    free(items);
    free(exempt);
}

static void blocks_cb(void *arg, const ev_block_list_request_t *req, const char *reply)
{
    server_t *srv = arg;
    if (not_serving(srv, "blocks") || !reply || !*reply)
        return;
    if (req->paged)
        blocks_page(srv, req->after, reply);
    else
        blocks_whole(srv, reply);
}

/* ---- the stream: events and the leader's records, on every replica ------------------- */

/* The time a message of the stream counts at. Following, when the stream stored it (a
 * leader's record: when it decided), never before the last one: a replica that replays an
 * hour of the stream counts each event at its own time, as the leader did. Leading, now:
 * the events it applies are a few milliseconds old, and its own decisions count at now. */
static int64_t stream_now(server_t *srv, int64_t time_ms)
{
    if (replica_leading(srv->replica))
        return server_now(srv);
    if (time_ms > srv->stream_last)
        srv->stream_last = time_ms;
    return srv->stream_last;
}

/* Every replica counts the outcome; the one that answers also keeps it in the login
 * history and counts failed logins per service for /metrics. */
static void auth_event_cb(void *arg, const ev_auth_t *ev)
{
    server_t *srv = arg;
    char *user = lower_dup(ev->user);
    if (!user)
        return;
    limiter_auth_event(srv->lim, ev->service, user, ev->client_addr, ev->result,
                       ev->attempt_digest, ev->attempt_digest_len, srv->stream_ms);
    if (replica_leading(srv->replica)) {
        logins_add(srv->logins, ev, server_now(srv));
        if (ev->result == POSTERN__AUTH_RESULT__AUTH_BAD_CREDENTIALS) {
            char labels[48];
            snprintf(labels, sizeof labels, "service=\"%s\"", conf_service_name(ev->service));
            metrics_add(srv->svc->metrics, "postern_limiter_failed_logins_total",
                        "Failed logins counted by the answering limiter, by service", labels, 1);
        }
    }
    free(user);
}

static void message_event_cb(void *arg, const ev_message_t *ev)
{
    server_t *srv = arg;
    char *user = lower_dup(ev->user);
    if (!user)
        return;
    limiter_message(srv->lim, user, ev->queue_id, ev->authenticated, ev->rcpt_count,
                    ev->client_addr, srv->stream_ms);
    free(user);
}

/* A decision of the leading replica. A replica applied its own when it made them, and may
 * read them back after it stopped leading (its follower lagging behind when the lease was
 * lost): applied twice, each reserved slot would count twice. */
static void limiter_log_cb(void *arg, const ev_limiter_log_t *rec)
{
    server_t *srv = arg;
    if (strcmp(rec->replica, replica_id(srv->replica)) == 0)
        return;
    int64_t t = stream_now(srv, rec->time_ms);
    char *user = NULL;
    limiter_reply_t ignored;
    switch (rec->kind) {
    case EV_LIMITER_LOG_RESERVE:
        if ((user = lower_dup(rec->user)))
            limiter_apply_reserve(srv->lim, user, rec->queue_id, rec->rcpt_count,
                                  rec->max_messages, rec->interval_s, t);
        break;
    case EV_LIMITER_LOG_RCPT_FAILURE:
        limiter_rcpt_failure(srv->lim, rec->service, rec->client_addr, t, &ignored);
        break;
    case EV_LIMITER_LOG_FORGET_NETWORK:
        limiter_apply_forget(srv->lim, rec->client_addr);
        break;
    case EV_LIMITER_LOG_CLEAR_USER:
        if ((user = lower_dup(rec->user)))
            limiter_apply_clear_user(srv->lim, user);
        break;
    case EV_LIMITER_LOG_RELEASE:
        if ((user = lower_dup(rec->user)))
            limiter_send_release(srv->lim, user, rec->queue_id, t);
        break;
    }
    free(user);
}

static void stream_apply(void *arg, const char *subject, const void *data, size_t len,
                         int64_t time_ms, bool replay)
{
    (void)replay; /* the policy is quiet unless leading (leading_cb) */
    server_t *srv = arg;
    if (srv->svc->stopping)
        return;
    srv->stream_ms = stream_now(srv, time_ms);
    const ev_stream_handlers_t h = {
        .arg = srv,
        .auth = auth_event_cb,
        .message = message_event_cb,
        .send_release = release_cb,
        .limiter_log = limiter_log_cb,
    };
    ev_stream_dispatch(&h, subject, data, len);
}

/* This replica starts or stops answering. A new leader reads PostgreSQL at once: the last
 * leader's blocks and disabled accounts are there, and its own copy may be a reload old. */
static void leading_cb(void *arg, bool leading)
{
    server_t *srv = arg;
    if (srv->stream_last > srv->last_now)
        srv->last_now = srv->stream_last; /* windows never see time go back */
    limiter_set_quiet(srv->lim, !leading, server_now(srv));
    if (leading) {
        limiter_invalidate(srv->lim);
        store_reload(srv->store);
        replica_set_history(srv->replica, limiter_history_ms(srv->lim));
    }
}

static void config_changed_cb(void *arg, const char *what)
{
    server_t *srv = arg;
    if (srv->svc->stopping)
        return;
    char shown[64];
    log_info("configuration changed, reloading", "what=\"%s\"", logq(what, shown, sizeof shown));
    /* Whatever changed: settings, exemptions, blocks and accounts are reloaded together. */
    limiter_invalidate(srv->lim);
    store_reload(srv->store);
}

/* Changes announced while the bus was away never came: reloaded as if announced. */
static void bus_back_cb(void *arg)
{
    config_changed_cb(arg, "bus reconnected");
}

/* ---- timers --------------------------------------------------------------------------- */

static void tick_cb(uv_timer_t *t)
{
    server_t *srv = t->data;
    int64_t now = server_now(srv);
    srv->ticks++;
    limiter_expire(srv->lim, now);
    limiter_prune(srv->lim, now, PRUNE_BUDGET);
    if (srv->ticks % RETRY_TICKS == 0)
        store_retry(srv->store);
    if (srv->ticks % HISTORY_TICKS == 0 && replica_leading(srv->replica))
        replica_set_history(srv->replica, limiter_history_ms(srv->lim));
    if (srv->nalerts)
        alerts_flush(srv);
    if (srv->unrecorded)
        records_retry(srv);
    /* Old logins go by the answering replica's hand only, once the settings are known. */
    bool prune = replica_leading(srv->replica) && store_loaded(srv->store);
    logins_tick(srv->logins, now, prune ? store_logins_keep_days(srv->store) : 0);
    limiter_stats_t st;
    limiter_stats(srv->lim, &st);
    int round_s = srv->svc->config_refresh_s > 0 ? srv->svc->config_refresh_s : 1;
    double per_s = (double)st.users * 2.0 / round_s;
    srv->refresh_per_ms = (per_s > REFRESH_MIN_PER_S ? per_s : REFRESH_MIN_PER_S) / 1000.0;
    if (srv->ticks % STATS_TICKS == 0) {
        log_info("keys", "users=%zu reservations=%zu disabled=%zu auth_counters=%zu "
                 "rcpt_counters=%zu accounts=%zu blocks=%zu offenders=%zu",
                 st.users, st.reservations, st.disabled, st.auth_counters, st.rcpt_counters,
                 st.accounts, st.blocks, st.offenders);
    }
}

/* The periodic reload: a safety net for changes whose announcement never came. Users'
 * settings are asked for again at their next check, which does not wait for them (an
 * announced change, above, makes checks wait). */
static void reload_cb(uv_timer_t *t)
{
    server_t *srv = t->data;
    limiter_refresh(srv->lim);
    store_reload(srv->store);
}

/* ---- the service ---------------------------------------------------------------------- */

/* The login history's way to PostgreSQL: the service's pool. */
static int logins_db_query(void *arg, const char *sql, int nparams, const char *const *values,
                           db_cb cb, void *cb_arg)
{
    return db_query(arg, sql, nparams, values, NULL, NULL, cb, cb_arg);
}

static bool logins_db_available(void *arg)
{
    return db_available(arg);
}

int server_start(svc_t *svc)
{
    server_t *srv = calloc(1, sizeof *srv);
    if (!srv)
        return -1;
    svc->data = srv;
    srv->svc = svc;
    srv->refresh_per_ms = REFRESH_MIN_PER_S / 1000.0; /* until the first tick counts users */
    limiter_hooks_t hooks = {
        .arg = srv, .block = hook_block, .account = hook_account, .alert = hook_alert,
    };
    srv->lim = limiter_create(&hooks);
    if (srv->lim)
        srv->store = store_create(svc->loop, svc->db, srv->lim, server_now, srv);
    logins_io_t io = {
        .arg = svc->db, .query = logins_db_query, .available = logins_db_available,
    };
    if (srv->store)
        srv->logins = logins_create(&io, svc->metrics);
    if (!srv->lim || !srv->store || !srv->logins) {
        log_error("cannot start the policy or its store", "%s", "");
        return -1;
    }
    limiter_set_quiet(srv->lim, true, 0); /* until this replica leads */
    const char *js_replicas = getenv("NATS_JS_REPLICAS");
    replica_hooks_t rh = { .arg = srv, .apply = stream_apply, .leading = leading_cb };
    srv->replica = replica_create(svc->loop, svc->bus, js_replicas ? atoi(js_replicas) : 1, &rh);
    if (!srv->replica) {
        log_error("cannot start the replica", "%s", "");
        return -1;
    }
    uv_timer_init(svc->loop, &srv->tick);
    uv_timer_init(svc->loop, &srv->reload);
    srv->tick.data = srv->reload.data = srv;
    srv->timers = true;
    bus_t *bus = svc->bus;
    if (ev_subscribe_auth_check(bus, auth_check_cb, srv) < 0 ||
        ev_subscribe_send_check(bus, send_check_cb, srv) < 0 ||
        ev_subscribe_rcpt_failure(bus, rcpt_cb, srv) < 0 ||
        ev_subscribe_block_list_request(bus, blocks_cb, srv) < 0 ||
        ev_subscribe_config_changed(bus, config_changed_cb, srv) < 0 ||
        bus_on_reconnect(bus, bus_back_cb, srv) < 0) {
        log_error("cannot subscribe to the limiter's subjects", "%s", "");
        return -1;
    }
    uint64_t reload_ms = (uint64_t)svc->config_refresh_s * 1000;
    uv_timer_start(&srv->tick, tick_cb, TICK_MS, TICK_MS);
    uv_timer_start(&srv->reload, reload_cb, reload_ms, reload_ms);
    store_reload(srv->store);
    return 0;
}

bool server_ready(svc_t *svc, char *why, size_t why_len)
{
    server_t *srv = svc->data;
    if (!srv || !store_loaded(srv->store)) {
        snprintf(why, why_len, "first load from the database");
        return false;
    }
    return replica_ready(srv->replica, why, why_len);
}

bool server_busy(svc_t *svc)
{
    server_t *srv = svc->data;
    return srv && (replica_busy(srv->replica) || logins_busy(srv->logins));
}

static void replica_stopped_cb(void *arg)
{
    svc_stopped(arg);
}

/* Nothing new is taken (the handlers look at svc->stopping); writes in flight finish while
 * the skeleton waits for the database. */
void server_stop(svc_t *svc)
{
    server_t *srv = svc->data;
    if (!srv) {
        svc_stopped(svc);
        return;
    }
    uv_timer_stop(&srv->tick);
    uv_timer_stop(&srv->reload);
    store_stop(srv->store); /* what db_destroy() still calls back finds nothing to do */
    logins_drain(srv->logins); /* the skeleton waits for these writes (bounded) */
    /* The lease is given up so that a standby answers at once, not a lease later. */
    replica_stop(srv->replica, replica_stopped_cb, svc);
}

static void timer_closed_cb(uv_handle_t *h)
{
    server_t *srv = h->data;
    if (--srv->open_timers == 0)
        free(srv);
}

/* Callbacks still to come (queries answered by db_destroy() after this) only look at
 * svc->stopping and the server itself, which is freed once its timers have closed. */
void server_destroy(svc_t *svc)
{
    server_t *srv = svc->data;
    if (!srv)
        return;
    svc->data = NULL;
    store_stop(srv->store);
    replica_destroy(&srv->replica);
    /* Acknowledgements still to come are answered (with none) by bus_destroy(), after us. */
    unrecorded_t *next;
    for (unrecorded_t *u = srv->unrecorded; u; u = next) {
        next = u->next;
        if (u->in_flight) {
            u->srv = NULL; /* freed by its answer */
        } else {
            log_warn("reserved slot not recorded at exit: a replica that takes over will not "
                     "count it", "queue_id=%s", u->queue_id);
            unrecorded_free(u);
        }
    }
    srv->unrecorded = NULL;
    srv->nunrecorded = 0;
    store_destroy(&srv->store);
    logins_destroy(&srv->logins); /* a write in flight frees it when db_destroy() answers */
    limiter_destroy(&srv->lim);
    if (srv->nalerts)
        log_warn("alerts lost at exit: the bus was down", "count=%zu", srv->nalerts);
    for (size_t i = 0; i < srv->nalerts; i++)
        buf_free(&srv->alerts[i]);
    srv->nalerts = 0;
    if (!srv->timers) {
        free(srv);
        return;
    }
    srv->open_timers = 2;
    uv_close((uv_handle_t *)&srv->tick, timer_closed_cb);
    uv_close((uv_handle_t *)&srv->reload, timer_closed_cb);
}
