/* notifier: the queue of alerts and their two statements.
 *
 * An alert from the bus is checked (alert.c), dropped when the gate says one went out
 * within the interval, merged into a queued alert with the same cause and subject, or
 * queued (at most NTF_QUEUE_MAX). The head of the queue is worked on, one at a time:
 *
 *   1. lookup   the alert addresses (and the owner), whether each is a local user, in a
 *               hosted domain or outside, the first hosted domain (for From:), and when an
 *               alert for the same cause and subject last went out within the interval;
 *   2. deliver  SELECT postern_alert(...): under a per-(cause, subject) lock, checks the
 *               interval again, stores the message (postern_deliver: INBOX copies for local
 *               users, one outbound queue entry for the rest) and records it in alerts,
 *               all in one statement; then announces it: each local copy to IMAP sessions
 *               (postern.mailbox.changed), the outbound queue entry to relayd
 *               (postern.queue.added).
 *
 * When PostgreSQL cannot be reached, or the schema is not there yet, the head waits and
 * is tried again with a growing delay; nothing is lost while the service runs. */
#include "notifier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/log.h"
#include "bus/mailwatch.h"
#include "base/settings.h"

#define NTF_BACKOFF_MIN_MS 500
#define NTF_BACKOFF_MAX_MS 30000
#define NTF_RCPTS_MAX 64 /* recipients of one alert */

typedef struct ntf_item {
    struct ntf_item *next;
    ntf_alert_t alert;
    unsigned attempts;
} ntf_item_t;

struct ntf {
    uv_loop_t *loop;
    db_t *db;
    bus_t *bus;         /* announces what it stored (mailbox changed, queue added) */
    config_t *cfg;
    ntf_gate_t *gate;
    char hostname[NTF_HOSTNAME_MAX + 1];
    ntf_item_t *head, *tail;
    size_t queued;
    bool busy;          /* a statement for the head is in flight */
    bool stopping;      /* ntf_stop(): no new alerts, no new statements */
    bool destroying;    /* ntf_destroy(): freed once the timer has closed and !busy */
    bool timer_closed;
    uv_timer_t retry;   /* runs the head again after a failure */
    unsigned backoff_ms;
    ntf_stats_t stats;
};

static void ntf_work(ntf_t *n);

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* notifier.interval in seconds (valid, or its default). */
static long ntf_interval_s(const ntf_t *n)
{
    const setting_def_t *def = settings_find("notifier.interval");
    return (long)settings_int(def, config_get(n->cfg, "notifier.interval"));
}

/* ---- the queue --------------------------------------------------------------------- */

static ntf_item_t *ntf_pop(ntf_t *n)
{
    ntf_item_t *it = n->head;
    if (it) {
        n->head = it->next;
        if (!n->head)
            n->tail = NULL;
        n->queued--;
    }
    return it;
}

static void ntf_free_all(ntf_t *n)
{
    ntf_item_t *it;
    while ((it = ntf_pop(n)))
        free(it);
    ntf_gate_destroy(&n->gate);
    free(n);
}

/* A queued alert with the same cause and subject takes the new one's client addresses. */
static bool ntf_merge(ntf_t *n, const ntf_alert_t *a)
{
    for (ntf_item_t *it = n->head; it; it = it->next) {
        ntf_alert_t *q = &it->alert;
        if (q->cause != a->cause || strcmp(q->subject, a->subject) != 0)
            continue;
        for (size_t i = 0; i < a->nclients; i++) {
            bool known = false;
            for (size_t j = 0; j < q->nclients; j++)
                if (strcmp(q->clients[j], a->clients[i]) == 0)
                    known = true;
            if (known)
                continue;
            if (q->nclients < NTF_CLIENTS_MAX)
                memcpy(q->clients[q->nclients++], a->clients[i], sizeof q->clients[0]);
            else
                q->clients_more++;
        }
        q->notify_owner |= a->notify_owner;
        return true;
    }
    return false;
}

void ntf_receive(ntf_t *n, const ev_alert_t *alert)
{
    if (!n || n->stopping)
        return;
    n->stats.received++;
    int64_t now = wall_ms();
    ntf_item_t *it = calloc(1, sizeof *it);
    char why[160];
    int rc = it ? ntf_alert_from_ev(alert, now, &it->alert, why, sizeof why) : -1;
    if (!it) {
        log_error("alert dropped", "reason=\"out of memory\"");
        return;
    }
    if (rc < 0) {
        n->stats.invalid++;
        log_warn("alert dropped", "reason=\"%s\"", why);
        free(it);
        return;
    }
    const ntf_alert_t *a = &it->alert;
    const char *cause = ntf_cause_name(a->cause);
    if (!ntf_gate_open(n->gate, cause, a->subject, now, ntf_interval_s(n) * 1000LL)) {
        /* Repeats of a recent alert are common (every further message of a throttled
         * user may ask again): counted, logged at debug level only. */
        n->stats.suppressed++;
        log_debug("alert suppressed", "cause=%s subject=%s reason=\"one went out within "
                  "notifier.interval\"", cause, a->subject);
        free(it);
        return;
    }
    if (ntf_merge(n, a)) {
        n->stats.merged++;
        log_info("alert merged", "cause=%s subject=%s reason=\"the same alert is queued\"",
                 cause, a->subject);
        free(it);
        return;
    }
    if (n->queued >= NTF_QUEUE_MAX) {
        /* A flood while PostgreSQL is down: the first drop and every hundredth are logged. */
        if (n->stats.queue_full++ % 100 == 0)
            log_error("alert dropped", "cause=%s subject=%s reason=\"queue full\" queued=%zu "
                      "dropped=%lu", cause, a->subject, n->queued, n->stats.queue_full);
        free(it);
        return;
    }
    if (n->tail)
        n->tail->next = it;
    else
        n->head = it;
    n->tail = it;
    n->queued++;
    log_info("alert received", "cause=%s subject=%s action=%s queued=%zu", cause, a->subject,
             a->action[0] ? a->action : "-", n->queued);
    ntf_work(n);
}

static void bus_alert_cb(void *arg, const ev_alert_t *alert)
{
    ntf_receive(arg, alert);
}

/* ---- failures and retries ---------------------------------------------------------- */

static void retry_cb(uv_timer_t *t)
{
    ntf_t *n = t->data;
    ntf_work(n);
}

/* True when a failed statement may work later: the database is unreachable, overloaded,
 * shutting down, or lacks the schema (a migration is pending). Anything else is this
 * alert's own fault. */
static bool ntf_transient(const PGresult *res)
{
    if (!res)
        return true;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state)
        return true;
    return strncmp(state, "08", 2) == 0 || strncmp(state, "53", 2) == 0 ||
           strncmp(state, "57", 2) == 0 || strncmp(state, "40", 2) == 0 ||
           strcmp(state, "55P03") == 0 || strcmp(state, "42883") == 0 ||
           strcmp(state, "42P01") == 0 || strcmp(state, "25006") == 0;
}

/* The head's statement failed. */
static void ntf_failed(ntf_t *n, const char *step, PGresult *res)
{
    n->busy = false;
    ntf_item_t *it = n->head;
    char err[256];
    snprintf(err, sizeof err, "%s", res ? PQresultErrorMessage(res) : "database unavailable");
    for (char *c = err; *c; c++)
        if (*c == '"' || *c == '\n')
            *c = ' ';
    if (!ntf_transient(res)) {
        n->stats.failed++;
        log_error("alert dropped", "cause=%s subject=%s step=%s error=\"%s\"",
                  ntf_cause_name(it->alert.cause), it->alert.subject, step, err);
        free(ntf_pop(n));
        n->backoff_ms = 0;
        ntf_work(n);
        return;
    }
    n->stats.retries++;
    it->attempts++;
    if (n->stopping)
        return; /* not tried again: ntf_stop() said it is not sent */
    n->backoff_ms = n->backoff_ms ? n->backoff_ms * 2 : NTF_BACKOFF_MIN_MS;
    if (n->backoff_ms > NTF_BACKOFF_MAX_MS)
        n->backoff_ms = NTF_BACKOFF_MAX_MS;
    if (it->attempts == 1 || it->attempts % 10 == 0)
        log_warn("alert waits for the database", "cause=%s subject=%s step=%s attempts=%u "
                 "retry_ms=%u queued=%zu error=\"%s\"", ntf_cause_name(it->alert.cause),
                 it->alert.subject, step, it->attempts, n->backoff_ms, n->queued, err);
    uv_timer_start(&n->retry, retry_cb, n->backoff_ms, 0);
}

/* The head is done with: next one. */
static void ntf_next(ntf_t *n)
{
    n->busy = false;
    n->backoff_ms = 0;
    free(ntf_pop(n));
    ntf_work(n);
}

/* ---- step 2: deliver and record ---------------------------------------------------- */

typedef struct ntf_delivery {
    ntf_t *ntf;
    char queue_id[16];
    size_t nlocal, nrelay;
    int64_t interval_ms;
    char *local[NTF_RCPTS_MAX]; /* the mailboxes it goes to, told once it is stored */
} ntf_delivery_t;

static void delivery_free(ntf_delivery_t *d)
{
    for (size_t i = 0; i < d->nlocal; i++)
        free(d->local[i]);
    free(d);
}

static void delivered_cb(void *arg, PGresult *res)
{
    ntf_delivery_t *d = arg;
    ntf_t *n = d->ntf;
    int64_t interval_ms = d->interval_ms;
    char queue_id[sizeof d->queue_id];
    memcpy(queue_id, d->queue_id, sizeof queue_id);
    size_t nlocal = d->nlocal, nrelay = d->nrelay;
    /* Committed (-1: suppressed, nothing stored). Only db_destroy() answers once the
     * notifier is being destroyed, and with NULL: the bus is never used then. */
    int stored = !n->destroying && res && PQresultStatus(res) == PGRES_TUPLES_OK &&
                         PQntuples(res) == 1
                     ? atoi(PQgetvalue(res, 0, 0))
                     : -1;
    /* IMAP sessions of the recipients look for the new message now (IDLE), not at their
     * next NOOP; relayd starts on the outbound queue entry now, not at its next poll. */
    for (size_t i = 0; stored > 0 && n->bus && i < nlocal; i++)
        mailwatch_publish_changed(n->bus, d->local[i], 0, 0, MAILWATCH_NEW);
    if (stored >= 0 && nrelay > 0 && n->bus && ev_publish_queue_added(n->bus, queue_id) < 0)
        log_warn("queue event not published", "id=%s reason=\"bus unavailable\"", queue_id);
    delivery_free(d);
    if (n->destroying) {
        n->busy = false;
        if (n->timer_closed)
            ntf_free_all(n);
        return;
    }
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        ntf_failed(n, "deliver", res);
        return;
    }
    const ntf_alert_t *a = &n->head->alert;
    const char *cause = ntf_cause_name(a->cause);
    int64_t now = wall_ms();
    if (stored < 0) {
        n->stats.suppressed++;
        log_info("alert suppressed", "cause=%s subject=%s reason=\"another notifier sent "
                 "it within notifier.interval\"", cause, a->subject);
    } else {
        n->stats.sent++;
        log_info("alert sent", "cause=%s subject=%s id=%s mailboxes=%d relayed=%zu "
                 "recipients=%zu", cause, a->subject, queue_id, stored, nrelay,
                 nlocal + nrelay);
    }
    ntf_gate_note(n->gate, cause, a->subject, now, now, interval_ms);
    ntf_next(n);
}

/* A PostgreSQL text[] literal of addresses (ntf_address_ok: no quotes, backslashes,
 * braces or commas; quoted anyway). */
static void array_literal(buf_t *out, const char *const *items, size_t n)
{
    buf_puts(out, "{");
    for (size_t i = 0; i < n; i++) {
        buf_puts(out, i ? ",\"" : "\"");
        for (const char *c = items[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                buf_append(out, "\\", 1);
            buf_append(out, c, 1);
        }
        buf_puts(out, "\"");
    }
    buf_puts(out, "}");
}

/* ---- step 1: who gets it ----------------------------------------------------------- */

static const char lookup_sql[] =
    "SELECT (SELECT (extract(epoch FROM max(at)) * 1000)::bigint FROM alerts"
    "         WHERE cause = $1 AND subject = $2"
    "           AND at > clock_timestamp() - make_interval(secs => $3::integer)),"
    "       (SELECT name FROM domains ORDER BY id LIMIT 1),"
    "       r.address,"
    "       EXISTS (SELECT 1 FROM users u WHERE u.address = r.address),"
    "       EXISTS (SELECT 1 FROM domains d WHERE d.name = split_part(r.address, '@', 2)),"
    "       r.owner"
    " FROM (SELECT 1) one LEFT JOIN"
    "      (SELECT address, bool_or(owner) AS owner FROM"
    "         (SELECT address, false AS owner FROM alert_addresses"
    "          UNION ALL SELECT $4, true WHERE $4 <> '') x"
    "       GROUP BY address) r ON true"
    " ORDER BY r.owner, r.address";

static const char deliver_sql[] =
    "SELECT postern_alert($1, $2, $3::integer, $4, $5, $6, $7::text[], $8, $9::text[], $10)";

static void ntf_deliver(ntf_t *n, PGresult *res, int64_t interval_ms)
{
    const ntf_alert_t *a = &n->head->alert;
    const char *cause = ntf_cause_name(a->cause);
    const char *local[NTF_RCPTS_MAX], *relay[NTF_RCPTS_MAX], *to[2 * NTF_RCPTS_MAX];
    size_t nlocal = 0, nrelay = 0, nto = 0;
    bool owner_told = false;
    for (int i = 0; i < PQntuples(res); i++) {
        if (PQgetisnull(res, i, 2))
            continue;
        const char *addr = PQgetvalue(res, i, 2);
        bool is_user = PQgetvalue(res, i, 3)[0] == 't';
        bool hosted = PQgetvalue(res, i, 4)[0] == 't';
        bool owner = PQgetvalue(res, i, 5)[0] == 't';
        if (!ntf_address_ok(addr)) {
            log_warn("alert address skipped", "reason=\"not a plain address\"");
            continue;
        }
        if (nlocal + nrelay >= NTF_RCPTS_MAX) {
            log_warn("alert address skipped", "address=%s reason=\"more than %d recipients\"",
                     addr, NTF_RCPTS_MAX);
            continue;
        }
        if (is_user) {
            local[nlocal++] = addr;
        } else if (!hosted && !owner) {
            relay[nrelay++] = addr;
        } else {
            log_warn("alert address skipped", "address=%s reason=\"%s\"", addr,
                     owner ? "the account does not exist"
                           : "hosted domain but no such user");
            continue;
        }
        to[nto++] = addr;
        owner_told |= owner;
    }
    if (nto == 0)
        log_warn("alert has no recipients", "cause=%s subject=%s reason=\"no alert "
                 "addresses (mailctl alert-address add ADDRESS)\"", cause, a->subject);

    /* From: notifier.from, else postmaster@ the first hosted domain, else this host. */
    char from[NTF_HOSTNAME_MAX + 16]; /* checked with ntf_address_ok below */
    const char *setting = config_get(n->cfg, "notifier.from");
    if (setting && *setting && ntf_address_ok(setting))
        snprintf(from, sizeof from, "%s", setting);
    else if (PQntuples(res) > 0 && !PQgetisnull(res, 0, 1))
        snprintf(from, sizeof from, "postmaster@%s", PQgetvalue(res, 0, 1));
    else
        snprintf(from, sizeof from, "postmaster@%s", n->hostname);
    if (!ntf_address_ok(from))
        snprintf(from, sizeof from, "postmaster@localhost");

    ntf_delivery_t *d = calloc(1, sizeof *d);
    if (!d) {
        ntf_failed(n, "compose", NULL);
        return;
    }
    d->ntf = n;
    d->interval_ms = interval_ms;
    d->nrelay = nrelay;
    for (size_t i = 0; i < nlocal; i++)
        if ((d->local[d->nlocal] = strdup(local[i])))
            d->nlocal++;
    ntf_queue_id(d->queue_id, 13);
    ntf_mail_t m = {
        .from = from,
        .to = to,
        .nto = nto,
        .owner_told = owner_told,
        .hostname = n->hostname,
        .queue_id = d->queue_id,
        .now = time(NULL),
        .interval_s = (long)(interval_ms / 1000),
    };
    buf_t raw, local_raw, local_lit, relay_lit;
    buf_init(&raw);
    buf_init(&local_raw);
    buf_init(&local_lit);
    buf_init(&relay_lit);
    /* The null reverse-path: nothing bounces back to the notifier (RFC 3834 section
     * 3.3), so an unreachable alert address cannot start a mail loop. */
    buf_puts(&local_raw, "Return-Path: <>\r\n");
    if (ntf_compose(a, &m, &raw) < 0 || buf_append(&local_raw, raw.data, raw.len) < 0) {
        delivery_free(d);
        buf_free(&raw);
        buf_free(&local_raw);
        ntf_failed(n, "compose", NULL);
        return;
    }
    array_literal(&local_lit, local, nlocal);
    array_literal(&relay_lit, relay, nrelay);
    char interval[24], summary[NTF_DETAIL_MAX + 1024];
    snprintf(interval, sizeof interval, "%ld", (long)(interval_ms / 1000));
    ntf_summary(a, summary, sizeof summary);
    const char *values[10] = { cause,          a->subject,    interval,      summary,
                               d->queue_id,    "",            local_lit.data, local_raw.data,
                               relay_lit.data, raw.data };
    int lengths[10] = { 0, 0, 0, 0, 0, 0, 0, (int)local_raw.len, 0, (int)raw.len };
    int binary[10] = { 0, 0, 0, 0, 0, 0, 0, 1, 0, 1 };
    db_query(n->db, deliver_sql, 10, values, lengths, binary, delivered_cb, d);
    buf_free(&raw);
    buf_free(&local_raw);
    buf_free(&local_lit);
    buf_free(&relay_lit);
}

typedef struct ntf_lookup {
    ntf_t *ntf;
    int64_t interval_ms;
} ntf_lookup_t;

static void looked_up_cb(void *arg, PGresult *res)
{
    ntf_lookup_t *l = arg;
    ntf_t *n = l->ntf;
    int64_t interval_ms = l->interval_ms;
    free(l);
    if (n->destroying) {
        n->busy = false;
        if (n->timer_closed)
            ntf_free_all(n);
        return;
    }
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
        ntf_failed(n, "lookup", res);
        return;
    }
    const ntf_alert_t *a = &n->head->alert;
    if (!PQgetisnull(res, 0, 0)) {
        /* One went out within the interval (before a restart, or from another notifier). */
        int64_t sent = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        const char *cause = ntf_cause_name(a->cause);
        n->stats.suppressed++;
        log_info("alert suppressed", "cause=%s subject=%s reason=\"one went out within "
                 "notifier.interval\"", cause, a->subject);
        ntf_gate_note(n->gate, cause, a->subject, sent, wall_ms(), interval_ms);
        ntf_next(n);
        return;
    }
    ntf_deliver(n, res, interval_ms);
}

/* Works on the head of the queue unless something is in flight or a retry is due. */
static void ntf_work(ntf_t *n)
{
    if (n->stopping || n->busy || !n->head || uv_is_active((uv_handle_t *)&n->retry))
        return;
    ntf_lookup_t *l = calloc(1, sizeof *l);
    if (!l) {
        uv_timer_start(&n->retry, retry_cb, NTF_BACKOFF_MAX_MS, 0);
        return;
    }
    const ntf_alert_t *a = &n->head->alert;
    l->ntf = n;
    l->interval_ms = ntf_interval_s(n) * 1000LL;
    char interval[24];
    snprintf(interval, sizeof interval, "%ld", (long)(l->interval_ms / 1000));
    const char *owner = a->notify_owner ? a->user : "";
    const char *values[4] = { ntf_cause_name(a->cause), a->subject, interval, owner };
    n->busy = true;
    db_query(n->db, lookup_sql, 4, values, NULL, NULL, looked_up_cb, l);
}

/* ---- life cycle -------------------------------------------------------------------- */

ntf_t *ntf_create(uv_loop_t *loop, db_t *db, bus_t *bus, config_t *cfg, const char *hostname)
{
    ntf_t *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    n->loop = loop;
    n->db = db;
    n->bus = bus;
    n->cfg = cfg;
    snprintf(n->hostname, sizeof n->hostname, "%s", hostname);
    n->gate = ntf_gate_create(NTF_GATE_MAX);
    if (!n->gate) {
        free(n);
        return NULL;
    }
    uv_timer_init(loop, &n->retry);
    n->retry.data = n;
    if (bus && ev_subscribe_alert(bus, bus_alert_cb, n) < 0)
        log_error("cannot subscribe", "subject=%s", BUS_SUBJECT_ALERT);
    return n;
}

static void retry_closed_cb(uv_handle_t *h)
{
    ntf_t *n = h->data;
    n->timer_closed = true;
    if (!n->busy)
        ntf_free_all(n);
}

void ntf_stop(ntf_t *n)
{
    if (!n || n->stopping)
        return;
    n->stopping = true;
    uv_timer_stop(&n->retry);
    size_t left = n->queued - (n->busy ? 1 : 0);
    if (left > 0)
        log_warn("alerts not sent", "queued=%zu reason=\"stopping\"", left);
}

void ntf_destroy(ntf_t **np)
{
    ntf_t *n = np ? *np : NULL;
    if (!n)
        return;
    *np = NULL;
    ntf_stop(n);
    n->destroying = true;
    log_info("notifier stats", "received=%lu invalid=%lu suppressed=%lu merged=%lu "
             "queue_full=%lu sent=%lu failed=%lu retries=%lu", n->stats.received,
             n->stats.invalid, n->stats.suppressed, n->stats.merged, n->stats.queue_full,
             n->stats.sent, n->stats.failed, n->stats.retries);
    uv_timer_stop(&n->retry);
    uv_close((uv_handle_t *)&n->retry, retry_closed_cb);
}

size_t ntf_queued(const ntf_t *n)
{
    return n ? n->queued : 0;
}

ntf_stats_t ntf_stats(const ntf_t *n)
{
    ntf_stats_t none = { 0 };
    return n ? n->stats : none;
}
