#include "store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/settings.h"

#define STORE_RETRY_MS 2000
#define STORE_COMPLAIN_MS (600 * 1000) /* repeat a warning about bad settings this often */

typedef enum store_step {
    STEP_SETTINGS,
    STEP_EXEMPT,
    STEP_OFFENDERS,
    STEP_BLOCKS,
    STEP_DISABLED,
    STEP_SWEEP,
    STEP_DONE,
} store_step_t;

struct store {
    db_t *db;
    limiter_t *L;
    store_clock_fn clock;
    void *clock_arg;
    uv_timer_t timer; /* a failed cycle tries again */
    store_step_t step;
    bool running, again, stopped;
    bool loaded;           /* a cycle has completed */
    bool blocks_loaded;    /* announce differences from now on */
    bool disabled_loaded;
    bool offenders_loaded;
    bool failing;          /* the last cycle failed: said so once */
    bool dirty;            /* a write failed: store_retry() has work */
    uint64_t writes;       /* completed writes */
    uint64_t writes_at_send;
    int64_t complained_ms; /* last warning about invalid settings */
    hamr_conf_t hamr;      /* the last system settings, to log changes */
    harvest_conf_t harvest[CONF_NSERVICES];
    int logins_keep_days;  /* logins.keep_days; 0 until the settings are read */
};

/* Milliseconds since the epoch of a timestamptz column, exactly. */
#define MS(col) "round(extract(epoch FROM " col ") * 1000)::bigint"
#define TS(param) "to_timestamp(" param "::double precision / 1000)"

static int64_t store_now(store_t *st)
{
    return st->clock(st->clock_arg);
}

static void ms_text(char *buf, size_t len, int64_t ms)
{
    snprintf(buf, len, "%" PRId64, ms);
}

static bool res_ok(PGresult *res, ExecStatusType want)
{
    return res && PQresultStatus(res) == want;
}

static const char *res_error(PGresult *res)
{
    if (!res)
        return "database unavailable";
    const char *e = PQresultErrorMessage(res);
    return e && *e ? e : "unexpected result";
}

/* ---- the reload cycle ----------------------------------------------------------------- */

static void cycle_next(store_t *st);
static void retry_timer_cb(uv_timer_t *t);

static void cycle_failed(store_t *st, PGresult *res)
{
    if (!st->failing) {
        char err[256];
        snprintf(err, sizeof err, "%s", res_error(res));
        for (char *c = err; *c; c++)
            if (*c == '\n' || *c == '"')
                *c = ' ';
        log_warn("reload failed, answering from memory", "step=%d error=\"%s\"", (int)st->step,
                 err);
    }
    st->failing = true;
    st->running = false;
    st->again = false;
    uv_timer_start(&st->timer, retry_timer_cb, STORE_RETRY_MS, 0);
}

/* The store, for the callback of a reload step's query; NULL when the step is over before it
 * starts: the store stopped, or the query failed and the cycle will be tried again. */
static store_t *cycle_step(void *arg, PGresult *res)
{
    store_t *st = arg;
    if (st->stopped)
        return NULL;
    if (!res_ok(res, PGRES_TUPLES_OK)) {
        cycle_failed(st, res);
        return NULL;
    }
    return st;
}

static void log_settings(const hamr_conf_t *h, const harvest_conf_t *hv, int keep_days)
{
    log_info("settings", "hamr.enabled=%s hamr.max_messages=%u hamr.interval=%u hamr.action=%s "
             "hamr.alert=%s hamr.max_recipients=%u harvest.enabled=%s harvest.max_failures=%u "
             "harvest.interval=%u harvest.block=%u harvest.soft_limit=%u harvest.hard_limit=%u "
             "logins.keep_days=%d",
             h->enabled ? "on" : "off", h->max_messages, h->interval_s,
             h->action == HAMR_DISABLE ? "disable" : "throttle", h->alert ? "on" : "off",
             h->max_recipients, hv->enabled ? "on" : "off", hv->max_failures, hv->interval_s,
             hv->block_s, hv->soft_limit, hv->hard_limit, keep_days);
}

/* logins.keep_days from its row (NULL: not set): -1 when the value is not valid. */
static int keep_days_value(const char *value)
{
    const setting_def_t *def = settings_find(LOGINS_KEEP_DAYS_KEY);
    if (!def)
        return 30; /* an older settings table: the default of today's */
    if (value && !settings_valid(def, value))
        return -1;
    return (int)settings_int(def, value);
}

static void settings_cb(void *arg, PGresult *res)
{
    store_t *st = cycle_step(arg, res);
    if (!st)
        return;
    hamr_conf_t h;
    harvest_conf_t hv[CONF_NSERVICES];
    hamr_conf_init(&h);
    for (int s = 0; s < CONF_NSERVICES; s++)
        harvest_conf_init(&hv[s], s);
    int64_t now = store_now(st);
    bool complain = now - st->complained_ms >= STORE_COMPLAIN_MS || !st->loaded;
    bool complained = false;
    int keep_days = keep_days_value(NULL);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *key = PQgetvalue(res, i, 0), *value = PQgetvalue(res, i, 1);
        int bad = hamr_conf_apply(&h, CONF_SYSTEM, key, value) < 0;
        for (int s = 0; s < CONF_NSERVICES; s++)
            bad |= harvest_conf_apply(&hv[s], key, value) < 0;
        if (strcmp(key, LOGINS_KEEP_DAYS_KEY) == 0) {
            int days = keep_days_value(value);
            bad |= days < 0;
            if (days > 0)
                keep_days = days;
        }
        if (bad && complain) {
            log_warn("invalid setting ignored, the default applies", "key=%s value=\"%.64s\"",
                     key, value);
            complained = true;
        }
    }
    if (complained)
        st->complained_ms = now;
    if (!st->loaded || memcmp(&h, &st->hamr, sizeof h) != 0 ||
        memcmp(hv, st->harvest, sizeof hv) != 0 || keep_days != st->logins_keep_days)
        log_settings(&h, &hv[CONF_SVC_NONE], keep_days);
    st->logins_keep_days = keep_days;
    st->hamr = h;
    memcpy(st->harvest, hv, sizeof hv);
    limiter_set_conf(st->L, &h, hv);
    cycle_next(st);
}

static void exempt_cb(void *arg, PGresult *res)
{
    store_t *st = cycle_step(arg, res);
    if (!st)
        return;
    int n = PQntuples(res);
    const char **list = calloc((size_t)n + 1, sizeof *list);
    if (!list) {
        cycle_failed(st, res);
        return;
    }
    for (int i = 0; i < n; i++)
        list[i] = PQgetvalue(res, i, 0);
    size_t before = blocks_exempt_count(limiter_blocks(st->L));
    limiter_set_exempt(st->L, list, (size_t)n, store_now(st));
    if (!st->loaded || before != (size_t)n)
        log_info("exempt networks", "count=%d", n);
    free(list);
    cycle_next(st);
}

static void offenders_cb(void *arg, PGresult *res)
{
    store_t *st = cycle_step(arg, res);
    if (!st)
        return;
    for (int i = 0; i < PQntuples(res); i++) {
        char net[BLOCK_NETWORK_MAX];
        if (blocks_canonical(PQgetvalue(res, i, 0), net, sizeof net) == 0)
            limiter_load_offender(st->L, net, (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10),
                                  strtoll(PQgetvalue(res, i, 2), NULL, 10));
    }
    st->offenders_loaded = true;
    cycle_next(st);
}

static void blocks_cb(void *arg, PGresult *res)
{
    store_t *st = cycle_step(arg, res);
    if (!st)
        return;
    int n = PQntuples(res);
    block_t *rows = calloc((size_t)n + 1, sizeof *rows);
    if (!rows) {
        cycle_failed(st, res);
        return;
    }
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        block_t *b = &rows[k];
        if (blocks_canonical(PQgetvalue(res, i, 0), b->network, sizeof b->network) < 0)
            continue;
        b->service = (uint8_t)conf_service_number(PQgetvalue(res, i, 1));
        snprintf(b->reason, sizeof b->reason, "%s", PQgetvalue(res, i, 2));
        b->since_ms = strtoll(PQgetvalue(res, i, 3), NULL, 10);
        b->until_ms = strtoll(PQgetvalue(res, i, 4), NULL, 10);
        b->offense = (uint32_t)strtoul(PQgetvalue(res, i, 5), NULL, 10);
        k++;
    }
    limiter_sync_blocks(st->L, rows, k, st->writes_at_send, st->blocks_loaded, store_now(st));
    if (!st->blocks_loaded)
        log_info("blocks loaded", "count=%zu", blocks_count(limiter_blocks(st->L)));
    st->blocks_loaded = true;
    free(rows);
    cycle_next(st);
}

static void disabled_cb(void *arg, PGresult *res)
{
    store_t *st = cycle_step(arg, res);
    if (!st)
        return;
    int n = PQntuples(res);
    disabled_t **rows = calloc((size_t)n + 1, sizeof *rows);
    if (!rows) {
        cycle_failed(st, res);
        return;
    }
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        const char *user = PQgetvalue(res, i, 0);
        disabled_t *d = calloc(1, sizeof *d + strlen(user) + 1);
        if (!d)
            continue;
        strcpy(d->user, user);
        snprintf(d->reason, sizeof d->reason, "%s", PQgetvalue(res, i, 1));
        d->since_ms = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        rows[k++] = d;
    }
    limiter_sync_disabled(st->L, (const disabled_t *const *)rows, k, st->writes_at_send,
                          st->disabled_loaded);
    if (!st->disabled_loaded)
        log_info("disabled accounts loaded", "count=%zu", k);
    st->disabled_loaded = true;
    for (size_t i = 0; i < k; i++)
        free(rows[i]);
    free(rows);
    cycle_next(st);
}

static void sweep_cb(void *arg, PGresult *res)
{
    store_t *st = arg;
    if (st->stopped)
        return;
    if (!res_ok(res, PGRES_COMMAND_OK))
        log_warn("sweeping ended blocks failed", "error=\"%s\"", res_error(res));
    cycle_next(st);
}

static const char settings_sql[] =
    "SELECT key, value FROM settings WHERE scope = 'system' AND scope_id = 0"
    " AND (key LIKE 'hamr.%' OR key LIKE 'harvest.%' OR key = '" LOGINS_KEEP_DAYS_KEY "')";
static const char exempt_sql[] = "SELECT network::text FROM harvest_exempt ORDER BY network";
static const char offenders_sql[] =
    "SELECT network::text, offenses, " MS("last_blocked") " FROM block_history"
    " WHERE last_blocked > now() - interval '30 days'";
static const char blocks_sql[] =
    "SELECT network::text, service, reason, " MS("since") ", " MS("until") ", offense FROM blocks";
static const char disabled_sql[] =
    "SELECT u.address, d.reason, " MS("d.since") " FROM send_disabled d"
    " JOIN users u ON u.id = d.user_id";
/* Blocks that ended or that an exemption covers; history quiet for 30 days. */
static const char sweep_sql[] =
    "WITH forgotten AS (DELETE FROM block_history h"
    "   WHERE h.last_blocked < " TS("$1") " - interval '30 days'"
    "   AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.network = h.network))"
    " DELETE FROM blocks WHERE until <= " TS("$1")
    " OR EXISTS (SELECT 1 FROM harvest_exempt e WHERE blocks.network <<= e.network)";

static void cycle_next(store_t *st)
{
    st->step++;
    if (st->step == STEP_OFFENDERS && st->offenders_loaded)
        st->step++;
    switch (st->step) {
    case STEP_SETTINGS: break;
    case STEP_EXEMPT:
        db_query(st->db, exempt_sql, 0, NULL, NULL, NULL, exempt_cb, st);
        return;
    case STEP_OFFENDERS:
        db_query(st->db, offenders_sql, 0, NULL, NULL, NULL, offenders_cb, st);
        return;
    case STEP_BLOCKS:
        st->writes_at_send = st->writes;
        db_query(st->db, blocks_sql, 0, NULL, NULL, NULL, blocks_cb, st);
        return;
    case STEP_DISABLED:
        st->writes_at_send = st->writes;
        db_query(st->db, disabled_sql, 0, NULL, NULL, NULL, disabled_cb, st);
        return;
    case STEP_SWEEP: {
        char now[24];
        ms_text(now, sizeof now, store_now(st));
        const char *p[] = { now };
        db_query(st->db, sweep_sql, 1, p, NULL, NULL, sweep_cb, st);
        return;
    }
    case STEP_DONE: break;
    }
    /* The cycle is complete. */
    if (st->failing)
        log_info("database available again, reload complete", "%s", "");
    st->failing = false;
    st->loaded = true;
    st->running = false;
    if (st->again) {
        st->again = false;
        store_reload(st);
    }
}

static void retry_timer_cb(uv_timer_t *t)
{
    store_reload(t->data);
}

void store_reload(store_t *st)
{
    if (st->stopped)
        return;
    if (st->running) {
        st->again = true;
        return;
    }
    uv_timer_stop(&st->timer);
    st->running = true;
    st->step = STEP_SETTINGS;
    db_query(st->db, settings_sql, 0, NULL, NULL, NULL, settings_cb, st);
}

bool store_loaded(const store_t *st)
{
    return st->loaded;
}

int store_logins_keep_days(const store_t *st)
{
    return st->logins_keep_days;
}

/* ---- life ----------------------------------------------------------------------------- */

store_t *store_create(uv_loop_t *loop, db_t *db, limiter_t *L, store_clock_fn clock,
                      void *clock_arg)
{
    store_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->db = db;
    st->L = L;
    st->clock = clock;
    st->clock_arg = clock_arg;
    st->complained_ms = INT64_MIN / 2;
    uv_timer_init(loop, &st->timer);
    st->timer.data = st;
    return st;
}

void store_stop(store_t *st)
{
    if (!st)
        return;
    st->stopped = true;
    uv_timer_stop(&st->timer);
}

static void store_close_cb(uv_handle_t *h)
{
    free(h->data);
}

void store_destroy(store_t **stp)
{
    store_t *st = stp ? *stp : NULL;
    if (!st)
        return;
    *stp = NULL;
    st->stopped = true;
    uv_close((uv_handle_t *)&st->timer, store_close_cb);
}

/* ---- one user's HAMR settings --------------------------------------------------------- */

typedef struct resolve {
    store_t *st;
    store_done_fn done;
    void *arg;
    uint32_t gen;
    char user[];
} resolve_t;

static const char user_sql[] =
    "SELECT s.scope, s.key, s.value FROM settings s"
    " WHERE s.key LIKE 'hamr.%' AND ((s.scope = 'system' AND s.scope_id = 0)"
    " OR (s.scope, s.scope_id) IN (SELECT 'domain', domain_id FROM users WHERE address = $1"
    "                              UNION ALL SELECT 'user', id FROM users WHERE address = $1))";

static void resolve_cb(void *arg, PGresult *res)
{
    resolve_t *r = arg;
    store_t *st = r->st;
    bool ok = !st->stopped && res_ok(res, PGRES_TUPLES_OK);
    if (ok) {
        hamr_conf_t c;
        hamr_conf_init(&c);
        for (int i = 0; i < PQntuples(res); i++) {
            const char *scope = PQgetvalue(res, i, 0);
            conf_level_t level = strcmp(scope, "user") == 0     ? CONF_USER
                                 : strcmp(scope, "domain") == 0 ? CONF_DOMAIN
                                                                : CONF_SYSTEM;
            hamr_conf_apply(&c, level, PQgetvalue(res, i, 1), PQgetvalue(res, i, 2));
        }
        limiter_user_conf(st->L, r->user, &c, r->gen, store_now(st));
    } else if (!st->stopped) {
        log_warn("user settings not resolved, using the cached ones", "user=\"%s\" error=\"%s\"",
                 r->user, res_error(res));
    }
    r->done(r->arg, ok);
    free(r);
}

void store_resolve_user(store_t *st, const char *user, store_done_fn done, void *arg)
{
    size_t n = strlen(user) + 1;
    resolve_t *r = malloc(sizeof *r + n);
    if (!r) {
        done(arg, false);
        return;
    }
    r->st = st;
    r->done = done;
    r->arg = arg;
    r->gen = limiter_generation(st->L);
    memcpy(r->user, user, n);
    const char *p[] = { user };
    db_query(st->db, user_sql, 1, p, NULL, NULL, resolve_cb, r);
}

/* ---- writes --------------------------------------------------------------------------- */

typedef struct write_ctx {
    store_t *st;
    int64_t until_ms;
    char key[];
} write_ctx_t;

static write_ctx_t *write_ctx(store_t *st, const char *key, int64_t until_ms)
{
    size_t n = strlen(key) + 1;
    write_ctx_t *w = malloc(sizeof *w + n);
    if (!w)
        return NULL;
    w->st = st;
    w->until_ms = until_ms;
    memcpy(w->key, key, n);
    return w;
}

/* The context of a write of the record key whose bookkeeping is *persist, which becomes
 * busy. NULL when the store stopped, or when memory ran out: the record then waits, dirty,
 * for store_retry(). */
static write_ctx_t *write_start(store_t *st, const char *key, int64_t until_ms, uint8_t *persist)
{
    if (st->stopped)
        return NULL;
    write_ctx_t *w = write_ctx(st, key, until_ms);
    if (!w) {
        *persist = PERSIST_DIRTY;
        st->dirty = true;
        return NULL;
    }
    *persist = PERSIST_BUSY;
    return w;
}

/* The outcome of a write of the record key (what: its table): a completed write is counted
 * and leaves the record clean, a failed one dirty for store_retry(). persist and written:
 * the record's bookkeeping, NULL when the record is gone or changed since the write was
 * sent. True when the write completed. */
static bool write_done(store_t *st, const char *what, const char *key, PGresult *res,
                       uint8_t *persist, uint64_t *written)
{
    if (!res_ok(res, PGRES_COMMAND_OK)) {
        if (persist)
            *persist = PERSIST_DIRTY;
        st->dirty = true;
        log_warn("write failed, will retry", "what=%s key=\"%s\" error=\"%s\"", what, key,
                 res_error(res));
        return false;
    }
    st->writes++;
    if (persist) {
        *persist = PERSIST_CLEAN;
        *written = st->writes;
    }
    return true;
}

static const char block_sql[] =
    "WITH history AS (INSERT INTO block_history (network, offenses, last_blocked)"
    "   VALUES ($1::cidr, $6::integer, " TS("$4") ")"
    "   ON CONFLICT (network) DO UPDATE SET"
    "   offenses = GREATEST(block_history.offenses, EXCLUDED.offenses),"
    "   last_blocked = EXCLUDED.last_blocked)"
    " INSERT INTO blocks (network, service, reason, since, until, offense)"
    " VALUES ($1::cidr, $2, $3, " TS("$4") ", " TS("$5") ", $6::integer)"
    " ON CONFLICT (network) DO UPDATE SET service = EXCLUDED.service,"
    " reason = EXCLUDED.reason, since = EXCLUDED.since, until = EXCLUDED.until,"
    " offense = EXCLUDED.offense";

static void block_written_cb(void *arg, PGresult *res)
{
    write_ctx_t *w = arg;
    store_t *st = w->st;
    if (!st->stopped) {
        block_t *b = blocks_get(limiter_blocks(st->L), w->key);
        if (b && (b->until_ms != w->until_ms || b->persist != PERSIST_BUSY))
            b = NULL; /* not the block this write was for, or changed since */
        write_done(st, "block", w->key, res, b ? &b->persist : NULL, b ? &b->written : NULL);
    }
    free(w);
}

void store_block_write(store_t *st, block_t *b)
{
    write_ctx_t *w = write_start(st, b->network, b->until_ms, &b->persist);
    if (!w)
        return;
    char since[24], until[24], offense[16];
    ms_text(since, sizeof since, b->since_ms);
    ms_text(until, sizeof until, b->until_ms);
    snprintf(offense, sizeof offense, "%u", b->offense);
    const char *service = b->service ? conf_service_name(b->service) : "smtp";
    const char *p[] = { b->network, service, b->reason, since, until, offense };
    db_query(st->db, block_sql, 6, p, NULL, NULL, block_written_cb, w);
}

static void block_deleted_cb(void *arg, PGresult *res)
{
    write_ctx_t *w = arg;
    if (!w->st->stopped && !res_ok(res, PGRES_COMMAND_OK))
        log_warn("block not deleted yet; the next sweep will", "network=%s error=\"%s\"", w->key,
                 res_error(res));
    else if (!w->st->stopped)
        w->st->writes++;
    free(w);
}

void store_block_delete(store_t *st, const block_t *b, bool expired)
{
    if (st->stopped)
        return;
    write_ctx_t *w = write_ctx(st, b->network, b->until_ms);
    if (!w)
        return;
    char until[24];
    ms_text(until, sizeof until, b->until_ms);
    const char *p[] = { b->network, until };
    if (expired)
        db_query(st->db, "DELETE FROM blocks WHERE network = $1::cidr AND until <= " TS("$2"), 2, p,
                 NULL, NULL, block_deleted_cb, w);
    else
        db_query(st->db, "DELETE FROM blocks WHERE network = $1::cidr", 1, p, NULL, NULL,
                 block_deleted_cb, w);
}

static const char disabled_write_sql[] =
    "INSERT INTO send_disabled (user_id, reason, since)"
    " SELECT id, $2, " TS("$3") " FROM users WHERE address = $1"
    " ON CONFLICT (user_id) DO NOTHING";

static void disabled_written_cb(void *arg, PGresult *res)
{
    write_ctx_t *w = arg;
    store_t *st = w->st;
    if (!st->stopped) {
        disabled_t *d = limiter_disabled(st->L, w->key);
        if (d && d->persist != PERSIST_BUSY)
            d = NULL; /* changed since */
        if (write_done(st, "send_disabled", w->key, res, d ? &d->persist : NULL,
                       d ? &d->written : NULL) &&
            strcmp(PQcmdTuples(res), "0") == 0)
            log_info("account already disabled in PostgreSQL, or unknown there", "user=\"%s\"",
                     w->key);
    }
    free(w);
}

void store_disabled_write(store_t *st, disabled_t *d)
{
    write_ctx_t *w = write_start(st, d->user, 0, &d->persist);
    if (!w)
        return;
    char since[24];
    ms_text(since, sizeof since, d->since_ms);
    const char *p[] = { d->user, d->reason, since };
    db_query(st->db, disabled_write_sql, 3, p, NULL, NULL, disabled_written_cb, w);
}

void store_retry(store_t *st)
{
    if (st->stopped || !st->dirty || !db_available(st->db))
        return;
    st->dirty = false;
    size_t pos = 0, n = 0;
    block_t *b;
    while ((b = blocks_next(limiter_blocks(st->L), &pos)))
        if (b->persist == PERSIST_DIRTY) {
            store_block_write(st, b);
            n++;
        }
    pos = 0;
    disabled_t *d;
    while ((d = limiter_disabled_next(st->L, &pos)))
        if (d->persist == PERSIST_DIRTY) {
            store_disabled_write(st, d);
            n++;
        }
    if (n)
        log_info("retrying writes", "count=%zu", n);
}
