#include "logins.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "conf.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define PARAMS_PER_ROW 7
#define MS_TEXT_MAX 24

/* One outcome waiting to be written. client is "" when the front end's text was no IP
 * address (the column is then NULL). */
typedef struct row {
    int64_t at_ms;
    uint8_t service, result;
    bool tls;
    char client[INET6_ADDRSTRLEN];
    char mechanism[LOGINS_MECHANISM_MAX + 1];
    char user[];
} row_t;

struct logins {
    logins_io_t io;
    metrics_t *metrics;
    row_t **ring;          /* LOGINS_PENDING_MAX slots */
    size_t head, count;    /* the oldest row; rows held (the batch in flight included) */
    size_t inflight;       /* the first rows of the ring, in the INSERT in flight */
    bool inserting, pruning; /* a query of each kind in flight */
    bool dead;             /* destroyed: the last callback frees it */
    bool draining;         /* stopping: batch after batch, at once */
    bool overflowing;      /* rows are being dropped for want of room: said once */
    bool waiting;          /* a batch found PostgreSQL away: said once */
    bool refusing;         /* PostgreSQL refused a batch: said once */
    bool prune_more;       /* the last DELETE removed a whole chunk */
    uint64_t outage_dropped; /* rows dropped since overflowing began */
    int64_t sent_ms;       /* when the last batch was sent */
    int64_t pruned_ms;     /* when the last DELETE was sent */
    logins_stats_t st;
    buf_t sql;
};

/* ---- names ------------------------------------------------------------------------------ */

const char *logins_result_name(int result)
{
    switch (result) {
    case POSTERN__AUTH_RESULT__AUTH_OK: return "ok";
    case POSTERN__AUTH_RESULT__AUTH_BAD_CREDENTIALS: return "bad-credentials";
    case POSTERN__AUTH_RESULT__AUTH_TEMP_FAILURE: return "temporary-failure";
    case POSTERN__AUTH_RESULT__AUTH_ABORTED: return "aborted";
    case POSTERN__AUTH_RESULT__AUTH_MALFORMED: return "malformed";
    }
    return NULL;
}

const char *logins_service_name(int service)
{
    return service > CONF_SVC_NONE && service < CONF_NSERVICES ? conf_service_name(service)
                                                                : NULL;
}

/* ---- rows ------------------------------------------------------------------------------- */

/* Well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF), as
 * PostgreSQL wants it in a text column. */
static bool utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i - 1 < n)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

/* The row for ev, or NULL when it cannot be kept (*skip set) or memory ran out. */
static row_t *row_make(const ev_auth_t *ev, int64_t now, bool *skip)
{
    *skip = true;
    const char *user = ev->user ? ev->user : "";
    size_t ulen = strlen(user);
    if (ulen == 0 || ulen > LOGINS_USER_MAX || !utf8_valid((const unsigned char *)user, ulen) ||
        !logins_service_name(ev->service) || !logins_result_name(ev->result))
        return NULL;
    *skip = false;
    row_t *r = calloc(1, sizeof *r + ulen + 1);
    if (!r)
        return NULL;
    for (size_t i = 0; i < ulen; i++)
        r->user[i] = user[i] >= 'A' && user[i] <= 'Z' ? (char)(user[i] - 'A' + 'a') : user[i];
    /* The front end's clock, unless the event has none or one from the future. */
    r->at_ms = ev->time_ms > 0 && ev->time_ms <= now + 60 * 1000 ? ev->time_ms : now;
    r->service = (uint8_t)ev->service;
    r->result = (uint8_t)ev->result;
    r->tls = ev->tls;
    unsigned char addr[sizeof(struct in6_addr)];
    const char *client = ev->client_addr ? ev->client_addr : "";
    if (strlen(client) < sizeof r->client &&
        (inet_pton(AF_INET, client, addr) == 1 || inet_pton(AF_INET6, client, addr) == 1))
        strcpy(r->client, client);
    const char *mech = ev->mechanism ? ev->mechanism : "";
    size_t m = 0;
    for (; mech[m] && m < LOGINS_MECHANISM_MAX; m++)
        r->mechanism[m] = mech[m] > 0x20 && mech[m] < 0x7F ? mech[m] : '?';
    r->mechanism[m] = '\0';
    return r;
}

static row_t *ring_at(const logins_t *lg, size_t i)
{
    return lg->ring[(lg->head + i) % LOGINS_PENDING_MAX];
}

/* Frees the n oldest rows. */
static void ring_pop(logins_t *lg, size_t n)
{
    for (size_t i = 0; i < n && lg->count; i++) {
        free(lg->ring[lg->head]);
        lg->ring[lg->head] = NULL;
        lg->head = (lg->head + 1) % LOGINS_PENDING_MAX;
        lg->count--;
    }
}

static void count_rows(logins_t *lg, const char *outcome, uint64_t n)
{
    char labels[48];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", outcome);
    metrics_add(lg->metrics, "postern_login_history_rows_total",
                "Authentication outcomes of the login history: written, dropped, skipped",
                labels, (double)n);
}

static void dropped(logins_t *lg, uint64_t n)
{
    lg->st.dropped += n;
    count_rows(lg, "dropped", n);
}

/* ---- writing ---------------------------------------------------------------------------- */

static void logins_free(logins_t *lg)
{
    ring_pop(lg, lg->count);
    free(lg->ring);
    buf_free(&lg->sql);
    free(lg);
}

static void batch_send(logins_t *lg, int64_t now);

static void insert_cb(void *arg, PGresult *res)
{
    logins_t *lg = arg;
    lg->inserting = false;
    size_t n = lg->inflight;
    lg->inflight = 0;
    if (lg->dead) {
        if (!lg->pruning)
            logins_free(lg);
        return;
    }
    if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
        ring_pop(lg, n);
        lg->st.written += n;
        count_rows(lg, "written", n);
        if (lg->overflowing || lg->waiting || lg->refusing)
            log_info("login history written again", "rows=%zu dropped_meanwhile=%" PRIu64
                     " pending=%zu", n, lg->outage_dropped, lg->count);
        lg->overflowing = lg->waiting = lg->refusing = false;
        lg->outage_dropped = 0;
        /* A full batch waiting goes at once; a smaller one at the next tick. */
        if (lg->draining || lg->count >= LOGINS_BATCH_ROWS)
            batch_send(lg, lg->sent_ms);
        return;
    }
    if (!res) {
        /* Not reached: the rows stay and go again at a tick, once there is a connection. */
        if (!lg->waiting)
            log_warn("login history not written, PostgreSQL unavailable: rows wait",
                     "rows=%zu pending=%zu max=%d", n, lg->count, LOGINS_PENDING_MAX);
        lg->waiting = true;
        return;
    }
    /* Refused: the same rows would be refused again. */
    ring_pop(lg, n);
    dropped(lg, n);
    if (!lg->refusing) {
        char err[256];
        snprintf(err, sizeof err, "%s", PQresultErrorMessage(res));
        for (char *c = err; *c; c++)
            if (*c == '\n' || *c == '"')
                *c = ' ';
        log_warn("login history batch refused by PostgreSQL, rows dropped", "rows=%zu error=\"%s\"",
                 n, err);
    }
    lg->refusing = true;
    if (lg->draining)
        batch_send(lg, lg->sent_ms);
}

/* One INSERT of the oldest rows (up to LOGINS_BATCH_ROWS), unless one is in flight or no
 * connection is up. */
static void batch_send(logins_t *lg, int64_t now)
{
    if (lg->dead || lg->inserting || lg->count == 0 || !lg->io.available(lg->io.arg))
        return;
    size_t n = lg->count < LOGINS_BATCH_ROWS ? lg->count : LOGINS_BATCH_ROWS;
    const char **values = calloc(n * PARAMS_PER_ROW, sizeof *values);
    char(*ms)[MS_TEXT_MAX] = calloc(n, sizeof *ms);
    buf_reset(&lg->sql);
    int fail = !values || !ms;
    fail |= buf_puts(&lg->sql, "INSERT INTO logins (address, at, service, client_addr, "
                               "mechanism, tls, result) VALUES ");
    for (size_t i = 0; i < n && !fail; i++) {
        const row_t *r = ring_at(lg, i);
        size_t p = i * PARAMS_PER_ROW;
        snprintf(ms[i], sizeof ms[i], "%" PRId64, r->at_ms);
        values[p] = r->user;
        values[p + 1] = ms[i];
        values[p + 2] = logins_service_name(r->service);
        values[p + 3] = *r->client ? r->client : NULL;
        values[p + 4] = r->mechanism;
        values[p + 5] = r->tls ? "t" : "f";
        values[p + 6] = logins_result_name(r->result);
        fail |= buf_printf(&lg->sql,
                           "%s($%zu, to_timestamp($%zu::bigint / 1000.0), $%zu, $%zu::inet, "
                           "$%zu, $%zu::boolean, $%zu)",
                           i ? ", " : "", p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7);
    }
    if (!fail) {
        lg->inserting = true;
        lg->inflight = n;
        lg->sent_ms = now;
        lg->st.batches++;
        if (lg->io.query(lg->io.arg, lg->sql.data, (int)(n * PARAMS_PER_ROW), values, insert_cb,
                         lg) < 0) {
            lg->inserting = false;
            lg->inflight = 0;
        }
    }
    free(values);
    free(ms);
}

/* ---- pruning ---------------------------------------------------------------------------- */

static const char prune_sql[] =
    "DELETE FROM logins WHERE ctid = ANY (ARRAY("
    "SELECT ctid FROM logins WHERE at < now() - make_interval(days => $1::integer)"
    " LIMIT " STR(LOGINS_PRUNE_ROWS) "))";

static void prune_cb(void *arg, PGresult *res)
{
    logins_t *lg = arg;
    lg->pruning = false;
    if (lg->dead) {
        if (!lg->inserting)
            logins_free(lg);
        return;
    }
    lg->prune_more = false;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        char err[256];
        snprintf(err, sizeof err, "%s", res ? PQresultErrorMessage(res) : "database unavailable");
        for (char *c = err; *c; c++)
            if (*c == '\n' || *c == '"')
                *c = ' ';
        log_warn("old logins not deleted, trying again later", "error=\"%s\"", err);
        return;
    }
    uint64_t n = strtoull(PQcmdTuples(res), NULL, 10);
    lg->st.pruned += n;
    lg->prune_more = n >= LOGINS_PRUNE_ROWS;
    metrics_add(lg->metrics, "postern_login_history_pruned_total",
                "Rows of the login history deleted for their age", NULL, (double)n);
    if (n)
        log_info("old logins deleted", "rows=%" PRIu64 " more=%s", n,
                 lg->prune_more ? "yes" : "no");
}

static void prune_send(logins_t *lg, int64_t now, int keep_days)
{
    char days[16];
    snprintf(days, sizeof days, "%d", keep_days);
    const char *p[] = { days };
    lg->pruning = true;
    lg->pruned_ms = now;
    if (lg->io.query(lg->io.arg, prune_sql, 1, p, prune_cb, lg) < 0)
        lg->pruning = false;
}

/* ---- the interface ---------------------------------------------------------------------- */

logins_t *logins_create(const logins_io_t *io, metrics_t *metrics)
{
    logins_t *lg = calloc(1, sizeof *lg);
    if (!lg)
        return NULL;
    lg->ring = calloc(LOGINS_PENDING_MAX, sizeof *lg->ring);
    if (!lg->ring) {
        free(lg);
        return NULL;
    }
    lg->io = *io;
    lg->metrics = metrics;
    lg->sent_ms = INT64_MIN / 2;
    lg->pruned_ms = INT64_MIN / 2;
    buf_init(&lg->sql);
    return lg;
}

void logins_destroy(logins_t **lgp)
{
    logins_t *lg = lgp ? *lgp : NULL;
    if (!lg)
        return;
    *lgp = NULL;
    if (lg->count > lg->inflight)
        log_warn("login history rows lost at exit", "rows=%zu", lg->count - lg->inflight);
    lg->dead = true;
    if (!lg->inserting && !lg->pruning)
        logins_free(lg);
}

bool logins_add(logins_t *lg, const ev_auth_t *ev, int64_t now)
{
    if (!lg || lg->dead)
        return false;
    if (lg->count == LOGINS_PENDING_MAX) {
        dropped(lg, 1);
        lg->outage_dropped++;
        if (!lg->overflowing)
            log_warn("login history full while PostgreSQL does not take it: dropping new rows",
                     "pending=%zu", lg->count);
        lg->overflowing = true;
        return false;
    }
    bool skip;
    row_t *r = row_make(ev, now, &skip);
    if (!r) {
        if (skip) {
            lg->st.skipped++;
            count_rows(lg, "skipped", 1);
        } else {
            dropped(lg, 1);
        }
        return false;
    }
    lg->ring[(lg->head + lg->count) % LOGINS_PENDING_MAX] = r;
    lg->count++;
    if (lg->count >= LOGINS_BATCH_ROWS && !lg->waiting)
        batch_send(lg, now);
    return true;
}

void logins_tick(logins_t *lg, int64_t now, int keep_days)
{
    if (!lg || lg->dead)
        return;
    /* A full batch goes at once, unless the last one found PostgreSQL away: then once a
     * second, like any other. */
    bool full = lg->count >= LOGINS_BATCH_ROWS && !lg->waiting;
    if (lg->count && (full || now - lg->sent_ms >= LOGINS_FLUSH_MS))
        batch_send(lg, now);
    if (keep_days > 0 && !lg->pruning && lg->io.available(lg->io.arg) &&
        (lg->prune_more || now - lg->pruned_ms >= LOGINS_PRUNE_MS))
        prune_send(lg, now, keep_days);
    metrics_set(lg->metrics, "postern_login_history_pending",
                "Rows of the login history waiting to be written", NULL, (double)lg->count);
}

void logins_drain(logins_t *lg)
{
    if (!lg || lg->dead)
        return;
    lg->draining = true;
    batch_send(lg, lg->sent_ms);
}

bool logins_busy(const logins_t *lg)
{
    return lg && (lg->inserting || lg->pruning);
}

void logins_stats(const logins_t *lg, logins_stats_t *st)
{
    *st = lg->st;
    st->pending = lg->count;
}
