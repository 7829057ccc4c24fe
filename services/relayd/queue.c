/* relayd: the outbound queue in PostgreSQL (relayd.h, lib/store/migrations/0010_relay.sql).
 *
 * Claims due messages with a lease (postern_relay_claim), keeps the leases alive while it
 * works, and records every attempt in one transaction (postern_relay_finish): recipient
 * states, the next try, and the bounce or delay notice for the sender. A message whose
 * attempt cannot be recorded (PostgreSQL down) stays in hand and is recorded later; its
 * recipients are never decided twice by this process. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <openssl/rand.h>

#include "base/buf.h"
#include "base/log.h"
#include "base/settings.h"
#include "bus/events.h"
#include "mail/dsn.h"
#include "relayd.h"
#include "schedule.h"

#define CLAIM_BATCH_MAX 100
#define POLL_MAX_MS 30000    /* the longest sleep between looks at the queue */
#define POLL_MIN_MS 50
#define FINISH_RETRY_MS 2000 /* a failed record is tried again this often */
#define REPLY_LOG_MAX 300

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static long setting(relayd_t *rd, const char *key)
{
    return config_get_long(rd->svc->cfg, key);
}

void queue_read_settings(relayd_t *rd)
{
    relay_settings_t old = rd->set, *s = &rd->set;
    s->max_lifetime_s = setting(rd, "relay.max_lifetime");
    s->delay_warning_s = setting(rd, "relay.delay_warning");
    s->retry_min_s = setting(rd, "relay.retry_min");
    s->retry_max_s = setting(rd, "relay.retry_max");
    s->lease_s = setting(rd, "relay.lease");
    s->destination_concurrency = setting(rd, "relay.destination_concurrency");
    s->concurrency = setting(rd, "relay.concurrency");
    s->allow_private = config_get_bool(rd->svc->cfg, "relay.allow_private");
    if (s->lease_s < 5)
        s->lease_s = 5;
    if (s->retry_min_s < 1)
        s->retry_min_s = 1;
    if (s->retry_max_s < s->retry_min_s)
        s->retry_max_s = s->retry_min_s;
    if (s->concurrency < 1)
        s->concurrency = 1;
    if (s->destination_concurrency < 1)
        s->destination_concurrency = 1;
    if (memcmp(&old, s, sizeof old) != 0)
        log_info("relay settings",
                 "max_lifetime=%lld delay_warning=%lld retry_min=%lld retry_max=%lld lease=%lld "
                 "concurrency=%ld destination_concurrency=%ld allow_private=%s",
                 (long long)s->max_lifetime_s, (long long)s->delay_warning_s,
                 (long long)s->retry_min_s, (long long)s->retry_max_s, (long long)s->lease_s,
                 s->concurrency, s->destination_concurrency, s->allow_private ? "on" : "off");
}

/* ---- messages in hand ------------------------------------------------------------------ */

static void msg_free(rmsg_t *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nrcpts; i++)
        free(m->rcpts[i].address);
    free(m->rcpts);
    free(m->queue_id);
    free(m->sender);
    free(m->raw);
    free(m);
}

static void msg_unlink(relayd_t *rd, rmsg_t *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        rd->msgs = m->next;
    if (m->next)
        m->next->prev = m->prev;
    rd->nmsgs--;
}

static int rcpt_cmp(const void *a, const void *b)
{
    const rcpt_t *x = a, *y = b;
    int c = strcmp(x->domain, y->domain);
    return c ? c : strcmp(x->address, y->address);
}

/* The recipients from the claim, one per line; lower-case domains; sorted by domain. */
static int msg_set_rcpts(rmsg_t *m, const char *list)
{
    size_t n = *list ? 1 : 0;
    for (const char *c = list; *c; c++)
        n += *c == '\n';
    m->rcpts = calloc(n ? n : 1, sizeof *m->rcpts);
    if (!m->rcpts)
        return -1;
    const char *p = list;
    while (*p && m->nrcpts < n) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        rcpt_t *r = &m->rcpts[m->nrcpts];
        r->address = strndup(p, len);
        if (!r->address)
            return -1;
        m->nrcpts++;
        char *at = strrchr(r->address, '@');
        r->domain = at ? at + 1 : r->address + len;
        for (char *d = (char *)r->domain; *d; d++)
            if (*d >= 'A' && *d <= 'Z')
                *d = (char)(*d - 'A' + 'a');
        p = end ? end + 1 : p + len;
    }
    qsort(m->rcpts, m->nrcpts, sizeof *m->rcpts, rcpt_cmp);
    return 0;
}

void rcpt_set(rmsg_t *m, size_t first, size_t count, int code, const char *status,
              const char *text, const char *remote)
{
    for (size_t i = first; i < first + count && i < m->nrcpts; i++) {
        rcpt_t *r = &m->rcpts[i];
        r->decided = true;
        r->state = code >= 200 && code < 300 ? RCPT_DELIVERED
                   : code >= 500             ? RCPT_BOUNCED
                                             : RCPT_PENDING;
        if (status && *status)
            snprintf(r->status, sizeof r->status, "%s", status);
        else
            snprintf(r->status, sizeof r->status, "%s",
                     code >= 500 ? "5.0.0" : code >= 400 || code == 0 ? "4.0.0" : "2.0.0");
        if (code > 0)
            snprintf(r->reply, sizeof r->reply, "%d %s%s%s", code, status && *status ? status : "",
                     status && *status ? " " : "", text ? text : "");
        else
            snprintf(r->reply, sizeof r->reply, "%s", text ? text : "");
        snprintf(r->remote, sizeof r->remote, "%s", remote ? remote : "");
    }
}

/* ---- recording an attempt -------------------------------------------------------------- */

typedef struct finish {
    rmsg_t *msg;
    char notice_id[96];
    size_t delivered, deferred, bounced;
    uv_timer_t retry; /* only while waiting to try again */
    buf_t notice;
    buf_t rcpts, states, replies, remotes; /* text arrays */
    char next_s[24], warned[8], last[620];
} finish_t;

/* Appends s to a PostgreSQL array literal in b as a quoted element. */
static void array_add(buf_t *b, const char *s)
{
    buf_puts(b, b->len ? ",\"" : "{\"");
    for (const char *c = s; *c; c++) {
        if (*c == '"' || *c == '\\')
            buf_append(b, "\\", 1);
        buf_append(b, c, 1);
    }
    buf_puts(b, "\"");
}

static void array_end(buf_t *b)
{
    buf_puts(b, b->len ? "}" : "{}");
    buf_append(b, "", 1); /* NUL-terminated for libpq */
}

static const char *state_name(rcpt_state_t s)
{
    return s == RCPT_DELIVERED ? "delivered" : s == RCPT_BOUNCED ? "bounced" : "pending";
}

/* Builds the bounce and/or delay notice for m into f->notice; returns true when there is
 * one. warned_r: the notice reports delays (the message is marked as warned). */
static bool notice_build(relayd_t *rd, rmsg_t *m, bool warn, finish_t *f, bool *warned_r)
{
    *warned_r = false;
    if (!*m->sender)
        return false; /* a bounce is never bounced (RFC 5321 section 6.1) */
    size_t failed = 0, delayed = 0;
    for (size_t i = 0; i < m->nrcpts; i++) {
        if (m->rcpts[i].decided && m->rcpts[i].state == RCPT_BOUNCED)
            failed++;
        else if (warn && m->rcpts[i].state == RCPT_PENDING)
            delayed++;
    }
    if (!failed && !delayed)
        return false;
    dsn_rcpt_t *dr = calloc(failed + delayed, sizeof *dr);
    char(*remote)[320] = calloc(failed + delayed, sizeof *remote);
    char(*diag)[640] = calloc(failed + delayed, sizeof *diag);
    if (!dr || !remote || !diag) {
        free(dr);
        free(remote);
        free(diag);
        return false;
    }
    size_t n = 0;
    for (size_t i = 0; i < m->nrcpts; i++) {
        rcpt_t *r = &m->rcpts[i];
        bool bounced = r->decided && r->state == RCPT_BOUNCED;
        bool delay = warn && r->state == RCPT_PENDING;
        if (!bounced && !delay)
            continue;
        dr[n].address = r->address;
        dr[n].action = bounced ? DSN_ACTION_FAILED : DSN_ACTION_DELAYED;
        dr[n].last_attempt_ms = now_ms();
        dr[n].status = r->status;
        if (*r->remote) {
            /* "mx.example.com[192.0.2.1]:25" -> "dns; mx.example.com" (RFC 3464 2.3.5) */
            size_t hl = strcspn(r->remote, "[:");
            snprintf(remote[n], sizeof remote[n], "dns; %.*s", (int)hl, r->remote);
            dr[n].remote_mta = remote[n];
        }
        if (*r->reply) {
            bool smtp = r->reply[0] >= '2' && r->reply[0] <= '5' && r->reply[3] == ' ';
            snprintf(diag[n], sizeof diag[n], "%s; %s", smtp ? "smtp" : "x-postern", r->reply);
            dr[n].diagnostic = diag[n];
        }
        n++;
    }
    char from[300];
    snprintf(from, sizeof from, "MAILER-DAEMON@%s", rd->svc->hostname);
    dsn_t d = {
        .kind = failed ? DSN_FAILED : DSN_DELAYED,
        .reporting_mta = rd->svc->hostname,
        .from = from,
        .to = m->sender,
        .queue_id = m->queue_id,
        .arrival_ms = m->created_ms,
        .retry_until_ms = m->created_ms + rd->set.max_lifetime_s * 1000,
        .original = m->raw,
        .original_len = m->raw_len,
        .rcpts = dr,
        .nrcpts = n,
    };
    bool ok = dsn_build(&d, &f->notice) == 0;
    free(dr);
    free(remote);
    free(diag);
    if (!ok) {
        log_error("cannot build a delivery status notification", "queue_id=%s", m->queue_id);
        buf_reset(&f->notice);
        return false;
    }
    *warned_r = delayed > 0;
    return true;
}

static void finish_send(finish_t *f);

static void finish_retry_cb(uv_timer_t *t)
{
    finish_send(t->data);
}

static void finish_free(finish_t *f)
{
    buf_free(&f->notice);
    buf_free(&f->rcpts);
    buf_free(&f->states);
    buf_free(&f->replies);
    buf_free(&f->remotes);
    free(f);
}

static void finish_timer_close_cb(uv_handle_t *h)
{
    finish_free(h->data);
}

static void metrics_count(relayd_t *rd, const char *result, size_t n)
{
    if (!n || !rd->svc->metrics)
        return;
    char labels[64];
    snprintf(labels, sizeof labels, "result=\"%s\"", result);
    metrics_add(rd->svc->metrics, "postern_relay_recipients_total",
                "Recipients by the outcome of a delivery attempt", labels, (double)n);
}

static void finish_cb(void *arg, PGresult *res)
{
    finish_t *f = arg;
    rmsg_t *m = f->msg;
    relayd_t *rd = m->rd;
    if (m->orphan) {
        msg_free(m);
        uv_close((uv_handle_t *)&f->retry, finish_timer_close_cb);
        return;
    }
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        log_warn("cannot record a delivery attempt, trying again", "queue_id=%s error=\"%s\"",
                 m->queue_id, res ? PQresultErrorMessage(res) : "database unavailable");
        if (rd->deadline_passed) {
            /* Stopping and out of time: the lease runs out and another replica tries
             * the recipients not recorded here again. */
            msg_unlink(rd, m);
            msg_free(m);
            uv_close((uv_handle_t *)&f->retry, finish_timer_close_cb);
            queue_stop(rd);
            return;
        }
        uv_timer_start(&f->retry, finish_retry_cb, FINISH_RETRY_MS, 0);
        return;
    }
    const char *outcome = PQgetvalue(res, 0, 0);
    const char *comma = strchr(outcome, ',');
    const char *notice = comma ? comma + 1 : "none";
    log_info(strncmp(outcome, "delivered", 9) == 0 ? "message done" : "message deferred",
             "queue_id=%s id=%lld attempts=%d delivered=%zu deferred=%zu bounced=%zu "
             "notice=%s%s%s",
             m->queue_id, (long long)m->id, m->attempts, f->delivered, f->deferred, f->bounced,
             notice, strcmp(notice, "none") ? " notice_id=" : "",
             strcmp(notice, "none") ? f->notice_id : "");
    metrics_count(rd, "delivered", f->delivered);
    metrics_count(rd, "deferred", f->deferred);
    metrics_count(rd, "bounced", f->bounced);
    if (rd->svc->metrics && strcmp(notice, "none") != 0)
        metrics_add(rd->svc->metrics, "postern_relay_notices_total",
                    "Bounce and delay notices by where they went", "", 1);
    if (strcmp(notice, "queued") == 0 && rd->svc->bus)
        ev_publish_queue_added(rd->svc->bus, f->notice_id);
    msg_unlink(rd, m);
    msg_free(m);
    uv_close((uv_handle_t *)&f->retry, finish_timer_close_cb);
    if (rd->stopping)
        queue_stop(rd);
    else
        queue_pump(rd);
}

static void finish_send(finish_t *f)
{
    relayd_t *rd = f->msg->rd;
    char id[24], lease[24];
    snprintf(id, sizeof id, "%lld", (long long)f->msg->id);
    snprintf(lease, sizeof lease, "%lld", (long long)rd->set.lease_s);
    const char *values[11] = { id,           rd->svc->instance, f->rcpts.data,
                               f->states.data, f->replies.data, f->remotes.data,
                               f->next_s,    f->last,           f->warned,
                               f->notice.len ? f->notice.data : NULL,
                               f->notice.len ? f->notice_id : NULL };
    int lengths[11] = { 0 }, binary[11] = { 0 };
    lengths[9] = (int)f->notice.len;
    binary[9] = 1;
    (void)lease;
    db_query(rd->svc->db,
             "SELECT postern_relay_finish($1, $2, $3::text[], $4::text[], $5::text[], "
             "$6::text[], $7, $8, $9, $10, $11)",
             11, values, lengths, binary, finish_cb, f);
}

/* Every job of m has reported: decides expiry, builds the notices, records the attempt. */
static void msg_finish(rmsg_t *m)
{
    relayd_t *rd = m->rd;
    m->finishing = true;
    finish_t *f = calloc(1, sizeof *f);
    if (!f) {
        log_error("out of memory: attempt not recorded, the lease will run out",
                  "queue_id=%s", m->queue_id);
        return; /* stays in hand; its lease is no longer renewed once it is dropped */
    }
    f->msg = m;
    uv_timer_init(rd->svc->loop, &f->retry);
    f->retry.data = f;
    int64_t now = now_ms();
    bool expired = schedule_expired(m->created_ms / 1000, now / 1000, rd->set.max_lifetime_s);
    const char *last = "";
    for (size_t i = 0; i < m->nrcpts; i++) {
        rcpt_t *r = &m->rcpts[i];
        if (!r->decided)
            continue;
        if (r->state == RCPT_PENDING && expired) {
            char why[sizeof r->reply];
            snprintf(why, sizeof why, "%s", r->reply);
            snprintf(r->reply, sizeof r->reply, "gave up after %lld days in the queue: %.500s",
                     (long long)(rd->set.max_lifetime_s / 86400), why);
            snprintf(r->status, sizeof r->status, "4.4.7"); /* RFC 3463: delivery time expired */
            r->state = RCPT_BOUNCED;
        }
        if (r->state == RCPT_PENDING)
            last = r->reply;
        f->delivered += r->state == RCPT_DELIVERED;
        f->deferred += r->state == RCPT_PENDING;
        f->bounced += r->state == RCPT_BOUNCED;
        array_add(&f->rcpts, r->address);
        array_add(&f->states, state_name(r->state));
        array_add(&f->replies, r->reply);
        array_add(&f->remotes, r->remote);
    }
    array_end(&f->rcpts);
    array_end(&f->states);
    array_end(&f->replies);
    array_end(&f->remotes);
    snprintf(f->last, sizeof f->last, "%s", last);

    bool warn = f->deferred && !m->warned && rd->set.delay_warning_s > 0 &&
                now - m->created_ms >= rd->set.delay_warning_s * 1000;
    bool warned = false;
    unsigned char rnd[4];
    RAND_bytes(rnd, sizeof rnd);
    snprintf(f->notice_id, sizeof f->notice_id, "%.60s-N%02x%02x%02x%02x", m->queue_id, rnd[0],
             rnd[1], rnd[2], rnd[3]);
    if (f->bounced || warn)
        notice_build(rd, m, warn, f, &warned);
    snprintf(f->warned, sizeof f->warned, "%s", warned ? "true" : "false");
    double jitter = (double)((rnd[0] << 8) | rnd[1]) / 65535.0;
    snprintf(f->next_s, sizeof f->next_s, "%lld",
             (long long)schedule_next_delay_s(m->attempts, rd->set.retry_min_s,
                                              rd->set.retry_max_s, jitter));
    finish_send(f);
}

void queue_job_done(rmsg_t *m)
{
    if (m->jobs_left > 0)
        m->jobs_left--;
    if (m->jobs_left == 0 && !m->finishing)
        msg_finish(m);
}

/* ---- taking messages ------------------------------------------------------------------- */

static bool has_8bit(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] & 0x80)
            return true;
    return false;
}

/* The message's bytes are here: one job per domain, or a bounce of everything pending when
 * an administrator deleted it. */
static void msg_start(rmsg_t *m)
{
    relayd_t *rd = m->rd;
    m->started = true;
    if (m->cancelled) {
        for (size_t i = 0; i < m->nrcpts; i++)
            rcpt_set(m, i, 1, 550, "5.0.0", "deleted from the queue by an administrator", "");
        msg_finish(m);
        return;
    }
    size_t njobs = 0;
    for (size_t i = 0; i < m->nrcpts; i++)
        njobs += i == 0 || strcmp(m->rcpts[i].domain, m->rcpts[i - 1].domain) != 0;
    if (njobs == 0) {
        msg_finish(m); /* nothing pending: it only leaves the queue */
        return;
    }
    m->jobs_left = njobs;
    for (size_t i = 0; i < m->nrcpts;) {
        size_t j = i + 1;
        while (j < m->nrcpts && strcmp(m->rcpts[j].domain, m->rcpts[i].domain) == 0)
            j++;
        job_t *job = calloc(1, sizeof *job);
        if (!job) {
            rcpt_set(m, i, j - i, 0, "4.3.0", "local error: out of memory", "");
            queue_job_done(m);
        } else {
            job->msg = m;
            job->first = i;
            job->count = j - i;
            deliver_job(rd, job);
        }
        i = j;
    }
}

static void raw_cb(void *arg, PGresult *res)
{
    rmsg_t *m = arg;
    relayd_t *rd = m->rd;
    m->loading = false;
    if (m->orphan) {
        msg_free(m);
        return;
    }
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        /* Gone (deleted with --silent), or the database is away: hand it back. The lease
         * runs out and it is due again then. */
        log_warn("cannot read a claimed message, leaving it for later", "queue_id=%s error=\"%s\"",
                 m->queue_id, !res ? "database unavailable"
                              : PQntuples(res) == 0 ? "no longer queued"
                                                    : PQresultErrorMessage(res));
        msg_unlink(rd, m);
        msg_free(m);
        if (rd->stopping)
            queue_stop(rd);
        return;
    }
    m->raw_len = (size_t)PQgetlength(res, 0, 0);
    m->raw = malloc(m->raw_len ? m->raw_len : 1);
    if (!m->raw) {
        log_error("out of memory reading a message", "queue_id=%s bytes=%zu", m->queue_id,
                  m->raw_len);
        msg_unlink(rd, m);
        msg_free(m);
        if (rd->stopping)
            queue_stop(rd);
        return;
    }
    memcpy(m->raw, PQgetvalue(res, 0, 0), m->raw_len);
    m->eightbit = has_8bit(m->raw, m->raw_len);
    if (rd->stopping) { /* not started: handed back with the others */
        queue_stop(rd);
        return;
    }
    msg_start(m);
}

static void poll_cb(uv_timer_t *t)
{
    queue_pump(t->data);
}

static void next_due_cb(void *arg, PGresult *res)
{
    relayd_t *rd = arg;
    if (rd->destroyed || rd->stopping)
        return;
    double ms = POLL_MAX_MS;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        !PQgetisnull(res, 0, 0))
        ms = atof(PQgetvalue(res, 0, 0)) * 1000.0;
    if (ms < POLL_MIN_MS)
        ms = POLL_MIN_MS;
    if (ms > POLL_MAX_MS)
        ms = POLL_MAX_MS;
    uv_timer_start(&rd->poll_timer, poll_cb, (uint64_t)ms, 0);
}

/* Sleeps until the next message is due (or its lease runs out), POLL_MAX_MS at most. */
static void schedule_poll(relayd_t *rd)
{
    db_query(rd->svc->db,
             "SELECT extract(epoch FROM min(greatest(next_attempt, coalesce(lease_until, "
             "next_attempt))) - now()) FROM outbound_queue",
             0, NULL, NULL, NULL, next_due_cb, rd);
}

static void claim_cb(void *arg, PGresult *res)
{
    relayd_t *rd = arg;
    rd->claiming = false;
    if (rd->destroyed)
        return;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("cannot claim queued messages", "error=\"%s\"",
                 res ? PQresultErrorMessage(res) : "database unavailable");
        uv_timer_start(&rd->poll_timer, poll_cb, FINISH_RETRY_MS, 0);
        return;
    }
    int n = PQntuples(res);
    for (int i = 0; i < n; i++) {
        rmsg_t *m = calloc(1, sizeof *m);
        if (!m)
            break;
        m->rd = rd;
        m->id = atoll(PQgetvalue(res, i, 0));
        m->queue_id = strdup(PQgetvalue(res, i, 1));
        m->sender = strdup(PQgetvalue(res, i, 2));
        m->created_ms = atoll(PQgetvalue(res, i, 3));
        m->attempts = atoi(PQgetvalue(res, i, 4));
        m->warned = PQgetvalue(res, i, 5)[0] == 't';
        m->cancelled = !PQgetisnull(res, i, 6);
        if (!m->queue_id || !m->sender || msg_set_rcpts(m, PQgetvalue(res, i, 7)) < 0) {
            msg_free(m);
            break;
        }
        m->next = rd->msgs;
        if (rd->msgs)
            rd->msgs->prev = m;
        rd->msgs = m;
        rd->nmsgs++;
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long)m->id);
        const char *v[1] = { id };
        m->loading = true;
        db_query_binary(rd->svc->db, "SELECT raw FROM outbound_queue WHERE id = $1", 1, v, NULL,
                        NULL, raw_cb, m);
    }
    if (n > 0)
        log_debug("claimed", "messages=%d in_hand=%zu", n, rd->nmsgs);
    if (rd->again || (n > 0 && rd->nmsgs < (size_t)rd->set.concurrency)) {
        rd->again = false;
        queue_pump(rd);
    } else {
        schedule_poll(rd);
    }
}

void queue_pump(relayd_t *rd)
{
    if (rd->stopping || !rd->svc->db)
        return;
    if (!route_loaded(rd) || !config_loaded(rd->svc->cfg)) {
        uv_timer_start(&rd->poll_timer, poll_cb, 200, 0); /* not before both are in */
        return;
    }
    if (rd->claiming) {
        rd->again = true;
        return;
    }
    queue_read_settings(rd);
    size_t room = rd->nmsgs < (size_t)rd->set.concurrency ? (size_t)rd->set.concurrency - rd->nmsgs : 0;
    if (room == 0)
        return; /* a finished message calls again */
    if (room > CLAIM_BATCH_MAX)
        room = CLAIM_BATCH_MAX;
    uv_timer_stop(&rd->poll_timer);
    char lease[24], limit[24];
    snprintf(lease, sizeof lease, "%lld", (long long)rd->set.lease_s);
    snprintf(limit, sizeof limit, "%zu", room);
    const char *v[3] = { rd->svc->instance, lease, limit };
    rd->claiming = true;
    db_query(rd->svc->db,
             "SELECT id, queue_id, sender, created_ms, attempts, warned, cancelled_by, "
             "array_to_string(recipients, E'\\n') FROM postern_relay_claim($1, $2, $3)",
             3, v, NULL, NULL, claim_cb, rd);
}

/* ---- leases ---------------------------------------------------------------------------- */

static void ids_text(relayd_t *rd, buf_t *b)
{
    buf_puts(b, "{");
    for (rmsg_t *m = rd->msgs; m; m = m->next)
        buf_printf(b, "%s%lld", m == rd->msgs ? "" : ",", (long long)m->id);
    buf_puts(b, "}");
    buf_append(b, "", 1);
}

static void renew_done_cb(void *arg, PGresult *res)
{
    relayd_t *rd = arg;
    if (rd->destroyed)
        return;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK)
        log_warn("cannot renew leases", "error=\"%s\"",
                 res ? PQresultErrorMessage(res) : "database unavailable");
}

/* Every third of the lease (as set now), so that a lease never runs out while its message
 * is in hand. */
static void renew_cb(uv_timer_t *t)
{
    relayd_t *rd = t->data;
    uint64_t every_ms = rd->set.lease_s > 0 ? (uint64_t)rd->set.lease_s * 1000 / 3 : 1000;
    uv_timer_start(&rd->renew_timer, renew_cb, every_ms, 0);
    if (!rd->msgs || !rd->svc->db)
        return;
    buf_t ids;
    buf_init(&ids);
    ids_text(rd, &ids);
    char lease[24];
    snprintf(lease, sizeof lease, "%lld", (long long)rd->set.lease_s);
    const char *v[3] = { rd->svc->instance, ids.data, lease };
    db_query(rd->svc->db, "SELECT postern_relay_renew($1, $2::bigint[], $3)", 3, v, NULL, NULL,
             renew_done_cb, rd);
    buf_free(&ids);
}

/* ---- start and stop -------------------------------------------------------------------- */

static void queue_added_cb(void *arg, const char *queue_id)
{
    relayd_t *rd = arg;
    log_debug("woken", "queue_id=%s", queue_id);
    if (rd->svc->metrics)
        metrics_add(rd->svc->metrics, "postern_relay_wakeups_total",
                    "New queue entries announced on the bus (postern.queue.added)", "", 1);
    queue_pump(rd);
}

int queue_start(relayd_t *rd)
{
    uv_timer_init(rd->svc->loop, &rd->poll_timer);
    uv_timer_init(rd->svc->loop, &rd->renew_timer);
    uv_timer_init(rd->svc->loop, &rd->stop_timer);
    rd->poll_timer.data = rd->renew_timer.data = rd->stop_timer.data = rd;
    rd->queue_started = true;
    uv_timer_start(&rd->renew_timer, renew_cb, 1000, 0);
    if (ev_subscribe_queue_added(rd->svc->bus, queue_added_cb, rd) < 0)
        return -1;
    uv_timer_start(&rd->poll_timer, poll_cb, 0, 0);
    return 0;
}

static void released_cb(void *arg, PGresult *res)
{
    relayd_t *rd = arg;
    rd->releasing = false;
    if (rd->destroyed)
        return;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        log_warn("cannot hand messages back; their leases run out instead", "error=\"%s\"",
                 res ? PQresultErrorMessage(res) : "database unavailable");
    else
        log_info("messages handed back", "count=%s", PQcmdTuples(res));
    while (rd->msgs) {
        rmsg_t *m = rd->msgs;
        msg_unlink(rd, m);
        msg_free(m);
    }
    svc_stopped(rd->svc);
}

/* The drain deadline, or nothing left: hands back what is still in hand. Messages whose
 * attempt is being recorded finish first (their record is in the database's queue). */
static void stop_now(relayd_t *rd)
{
    uv_timer_stop(&rd->stop_timer);
    deliver_destroy(rd);
    bool waiting = false;
    for (rmsg_t *m = rd->msgs; m; m = m->next)
        waiting |= m->finishing || m->loading;
    if (waiting || rd->releasing)
        return; /* their callbacks call queue_stop again */
    if (!rd->msgs) {
        svc_stopped(rd->svc);
        return;
    }
    buf_t ids;
    buf_init(&ids);
    ids_text(rd, &ids);
    const char *v[2] = { rd->svc->instance, ids.data };
    rd->releasing = true;
    db_query(rd->svc->db,
             "UPDATE outbound_queue SET lease_owner = NULL, lease_until = NULL, "
             "next_attempt = least(next_attempt, now()) "
             "WHERE lease_owner = $1 AND id = ANY ($2::bigint[])",
             2, v, NULL, NULL, released_cb, rd);
    buf_free(&ids);
}

static void stop_timer_cb(uv_timer_t *t)
{
    relayd_t *rd = t->data;
    log_warn("drain deadline reached, handing messages back", "in_hand=%zu", rd->nmsgs);
    rd->deadline_passed = true;
    stop_now(rd);
}

void queue_stop(relayd_t *rd)
{
    if (!rd->stopping) {
        rd->stopping = true;
        uv_timer_stop(&rd->poll_timer);
        uv_timer_stop(&rd->renew_timer);
        log_info("draining", "in_hand=%zu deadline_s=%ld", rd->nmsgs, rd->drain_timeout_s);
        if (rd->drain_timeout_s > 0)
            uv_timer_start(&rd->stop_timer, stop_timer_cb,
                           (uint64_t)rd->drain_timeout_s * 1000, 0);
        else
            rd->deadline_passed = true;
    }
    bool busy = false;
    for (rmsg_t *m = rd->msgs; m; m = m->next)
        busy |= m->started || m->loading;
    if (!busy || rd->deadline_passed)
        stop_now(rd);
}

static void noop_close_cb(uv_handle_t *h)
{
    (void)h;
}

void queue_destroy(relayd_t *rd)
{
    if (rd->queue_started) {
        uv_close((uv_handle_t *)&rd->poll_timer, noop_close_cb);
        uv_close((uv_handle_t *)&rd->renew_timer, noop_close_cb);
        uv_close((uv_handle_t *)&rd->stop_timer, noop_close_cb);
        rd->queue_started = false;
    }
    /* A message whose bytes or record are still out is freed by that query's callback
     * (the database answers it when it closes). */
    while (rd->msgs) {
        rmsg_t *m = rd->msgs;
        msg_unlink(rd, m);
        if (m->loading || m->finishing)
            m->orphan = true;
        else
            msg_free(m);
    }
}
