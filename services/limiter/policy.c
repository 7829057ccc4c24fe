#include "policy.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "table.h"
#include "window.h"

#define ACCOUNT_GOOD_MAX 4
#define ACCOUNT_STEPS (LIMITER_ACCOUNT_MAX_MS / LIMITER_ACCOUNT_STEP_MS)

/* A client address a user sent from: IPv4 as IPv4-mapped IPv6. */
typedef struct seen {
    uint8_t addr[16];
    int64_t last_ms;
} seen_t;

typedef struct hamr_user {
    int64_t expire_ms; /* nothing here matters after this */
    int64_t alert_ms;  /* INT64_MIN: never */
    hamr_conf_t conf;
    uint32_t gen; /* generation conf was resolved in; 0: never (system settings apply) */
    uint32_t asked; /* the refresh round its settings were last asked for in */
    win_t win;    /* accepted messages, weighted by recipients */
    seen_t *seen;
    uint8_t nseen;
    char user[];
} hamr_user_t;

/* Key: the queue id; the user's name follows it in the same allocation. */
typedef struct reservation {
    int64_t t;
    const char *user;
    char queue_id[];
} reservation_t;

/* Failed logins of a network at one service ("<service>|<network>"), or invalid
 * recipients of a network ("<network>"). */
typedef struct counter {
    int64_t expire_ms;
    win_t win;
    char key[];
} counter_t;

/* Failed logins against one account, from anywhere. */
typedef struct account {
    int64_t expire_ms;
    int64_t alert_ms;
    win_t win;
    uint64_t good[ACCOUNT_GOOD_MAX]; /* networks that logged in (hashes of their keys) */
    uint8_t ngood;
    char user[];
} account_t;

enum { T_USERS, T_RESERVATIONS, T_DISABLED, T_AUTH, T_RCPT, T_ACCOUNTS, T_COUNT };

struct limiter {
    limiter_hooks_t hooks;
    bool quiet; /* a follower: no hook is called */
    bool conf_set; /* the settings came from limiter_set_conf(), not the defaults */
    hamr_conf_t hamr;
    harvest_conf_t harvest[CONF_NSERVICES];
    uint32_t gen;
    uint32_t round; /* refresh rounds (limiter_refresh) */
    uint32_t mark;
    table_t *t[T_COUNT];
    size_t prune_pos[T_COUNT];
    blocks_t *blocks;
    int64_t next_expiry; /* no block ends before this */
    int64_t forget_at;   /* next look for offenders to forget */
};

/* ---- small helpers -------------------------------------------------------------------- */

static const char *user_key(const void *p) { return ((const hamr_user_t *)p)->user; }
static const char *reservation_key(const void *p) { return ((const reservation_t *)p)->queue_id; }
static const char *disabled_key(const void *p) { return ((const disabled_t *)p)->user; }
static const char *counter_key(const void *p) { return ((const counter_t *)p)->key; }
static const char *account_key(const void *p) { return ((const account_t *)p)->user; }

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static void reply(limiter_reply_t *out, limiter_verdict_t v, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply(limiter_reply_t *out, limiter_verdict_t v, const char *fmt, ...)
{
    memset(out, 0, sizeof *out);
    out->verdict = v;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->reason, sizeof out->reason, fmt, ap);
    va_end(ap);
}

/* Whole seconds until ms have passed, at least 1. */
static uint32_t seconds_up(int64_t ms)
{
    int64_t s = (ms + 999) / 1000;
    return s < 1 ? 1 : s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

/* "2026-11-27T23:09:29Z" */
static const char *iso_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

/* "1 h", "90 min", "45 s": a duration for people. */
static const char *duration_text(int64_t ms, char *buf, size_t len)
{
    int64_t s = ms / 1000;
    if (s >= 86400 && s % 86400 == 0)
        snprintf(buf, len, "%lld d", (long long)(s / 86400));
    else if (s >= 3600 && s % 3600 == 0)
        snprintf(buf, len, "%lld h", (long long)(s / 3600));
    else if (s >= 60 && s % 60 == 0)
        snprintf(buf, len, "%lld min", (long long)(s / 60));
    else
        snprintf(buf, len, "%lld s", (long long)s);
    return buf;
}

/* An item of size bytes whose string key, a flexible array member at offset, is a copy of
 * key. */
static void *item_alloc(size_t size, size_t offset, const char *key)
{
    size_t n = strlen(key) + 1;
    char *p = calloc(1, offset + n > size ? offset + n : size);
    if (p)
        memcpy(p + offset, key, n);
    return p;
}
#define item_new(type, member, key) item_alloc(sizeof(type), offsetof(type, member), key)

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

static int service_index(int service)
{
    return service > 0 && service < CONF_NSERVICES ? service : CONF_SVC_NONE;
}

/* ---- life ----------------------------------------------------------------------------- */

static void user_free(void *p)
{
    hamr_user_t *u = p;
    win_free(&u->win);
    free(u->seen);
    free(u);
}

static void counter_free(void *p)
{
    counter_t *c = p;
    win_free(&c->win);
    free(c);
}

static void account_free(void *p)
{
    account_t *a = p;
    win_free(&a->win);
    free(a);
}

static void (*const item_free[T_COUNT])(void *) = {
    [T_USERS] = user_free,     [T_RESERVATIONS] = free, [T_DISABLED] = free,
    [T_AUTH] = counter_free,   [T_RCPT] = counter_free, [T_ACCOUNTS] = account_free,
};

limiter_t *limiter_create(const limiter_hooks_t *hooks)
{
    limiter_t *L = calloc(1, sizeof *L);
    if (!L)
        return NULL;
    if (hooks)
        L->hooks = *hooks;
    hamr_conf_init(&L->hamr);
    for (int s = 0; s < CONF_NSERVICES; s++)
        harvest_conf_init(&L->harvest[s], s);
    L->gen = 1;
    static const table_key_fn keys[T_COUNT] = {
        [T_USERS] = user_key,   [T_RESERVATIONS] = reservation_key, [T_DISABLED] = disabled_key,
        [T_AUTH] = counter_key, [T_RCPT] = counter_key,             [T_ACCOUNTS] = account_key,
    };
    bool ok = (L->blocks = blocks_create()) != NULL;
    for (int i = 0; i < T_COUNT; i++)
        ok = (L->t[i] = table_create(keys[i])) != NULL && ok;
    L->next_expiry = INT64_MAX;
    if (!ok)
        limiter_destroy(&L);
    return L;
}

void limiter_destroy(limiter_t **Lp)
{
    limiter_t *L = Lp ? *Lp : NULL;
    if (!L)
        return;
    *Lp = NULL;
    for (int i = 0; i < T_COUNT; i++) {
        if (!L->t[i])
            continue;
        size_t pos = 0;
        void *item;
        while ((item = table_next(L->t[i], &pos)))
            item_free[i](item);
        table_destroy(&L->t[i]);
    }
    blocks_destroy(&L->blocks);
    free(L);
}

blocks_t *limiter_blocks(limiter_t *L)
{
    return L->blocks;
}

void limiter_stats(const limiter_t *L, limiter_stats_t *st)
{
    st->users = table_count(L->t[T_USERS]);
    st->reservations = table_count(L->t[T_RESERVATIONS]);
    st->disabled = table_count(L->t[T_DISABLED]);
    st->auth_counters = table_count(L->t[T_AUTH]);
    st->rcpt_counters = table_count(L->t[T_RCPT]);
    st->accounts = table_count(L->t[T_ACCOUNTS]);
    st->blocks = blocks_count(L->blocks);
    st->offenders = blocks_offender_count(L->blocks);
}

void limiter_set_quiet(limiter_t *L, bool quiet, int64_t now)
{
    bool was = L->quiet;
    L->quiet = quiet;
    if (quiet || !was)
        return;
    size_t pos = 0;
    block_t *b;
    while ((b = blocks_next(L->blocks, &pos))) {
        if (b->persist != PERSIST_QUIET)
            continue;
        if (now - b->since_ms >= LIMITER_QUIET_KEEP_MS || b->until_ms <= now) {
            b->persist = PERSIST_CLEAN; /* PostgreSQL has it, or it was lifted since */
            continue;
        }
        if (!L->conf_set || !limiter_harvest_conf(L, b->service)->enabled) {
            /* Judged by settings that are not (or no longer) the administrator's: the
             * defaults, before PostgreSQL was read, or with harvesting since turned off.
             * A block the last leader really made is in PostgreSQL, and the reload that
             * comes with leading brings it back. */
            blocks_delete_at(L->blocks, pos - 1);
            continue;
        }
        b->persist = PERSIST_DIRTY;
        if (L->hooks.block)
            L->hooks.block(L->hooks.arg, b, LIMITER_ADDED, false);
    }
}

/* True when PostgreSQL's view of b is the truth: it wrote it, or a quiet replica's block is
 * old enough for the leader to have written it (or an administrator to have lifted it). */
static bool pg_decides(const block_t *b, int64_t now)
{
    return b->persist == PERSIST_CLEAN ||
           (b->persist == PERSIST_QUIET && now - b->since_ms >= LIMITER_QUIET_KEEP_MS);
}

int64_t limiter_history_ms(const limiter_t *L)
{
    int64_t longest = 3600LL * 1000;
    if ((int64_t)L->hamr.interval_s * 1000 > longest)
        longest = (int64_t)L->hamr.interval_s * 1000;
    for (int s = 0; s < CONF_NSERVICES; s++)
        if ((int64_t)L->harvest[s].interval_s * 1000 > longest)
            longest = (int64_t)L->harvest[s].interval_s * 1000;
    size_t pos = 0;
    const hamr_user_t *u;
    while ((u = table_next(L->t[T_USERS], &pos)))
        if (u->gen && (int64_t)u->conf.interval_s * 1000 > longest)
            longest = (int64_t)u->conf.interval_s * 1000;
    return longest;
}

/* ---- settings ------------------------------------------------------------------------- */

void limiter_set_conf(limiter_t *L, const hamr_conf_t *hamr,
                      const harvest_conf_t harvest[CONF_NSERVICES])
{
    if (hamr)
        L->hamr = *hamr;
    if (harvest)
        for (int s = 0; s < CONF_NSERVICES; s++)
            L->harvest[s] = harvest[s];
    L->conf_set = true;
}

const harvest_conf_t *limiter_harvest_conf(const limiter_t *L, int service)
{
    return &L->harvest[service_index(service)];
}

void limiter_invalidate(limiter_t *L)
{
    if (++L->gen == 0)
        L->gen = 1;
}

void limiter_refresh(limiter_t *L)
{
    L->round++;
}

bool limiter_user_refresh_due(limiter_t *L, const char *user)
{
    hamr_user_t *u = table_get(L->t[T_USERS], user);
    if (!u || u->asked == L->round)
        return false;
    u->asked = L->round;
    return true;
}

uint32_t limiter_generation(const limiter_t *L)
{
    return L->gen;
}

bool limiter_user_fresh(const limiter_t *L, const char *user)
{
    const hamr_user_t *u = table_get(L->t[T_USERS], user);
    return u && u->gen == L->gen;
}

static hamr_user_t *user_get(limiter_t *L, const char *user, bool create, int64_t now)
{
    hamr_user_t *u = table_get(L->t[T_USERS], user);
    if (u || !create)
        return u;
    u = item_new(hamr_user_t, user, user);
    if (!u)
        return NULL;
    u->alert_ms = INT64_MIN;
    u->expire_ms = now + LIMITER_USER_CACHE_MS;
    win_init(&u->win, WIN_WEIGHT);
    if (table_add(L->t[T_USERS], u) < 0) {
        user_free(u);
        return NULL;
    }
    return u;
}

/* The settings that apply to u: its own when resolved, else the system's. */
static const hamr_conf_t *user_conf(const limiter_t *L, const hamr_user_t *u)
{
    return u->gen ? &u->conf : &L->hamr;
}

void limiter_user_conf(limiter_t *L, const char *user, const hamr_conf_t *conf,
                       uint32_t generation, int64_t now)
{
    hamr_user_t *u = user_get(L, user, true, now);
    if (!u)
        return;
    u->conf = *conf;
    u->gen = generation ? generation : 1;
    u->asked = L->round;
    u->expire_ms = max64(u->expire_ms, now + LIMITER_USER_CACHE_MS);
}

/* ---- HAMR ----------------------------------------------------------------------------- */

static void seen_add(hamr_user_t *u, const char *client, int64_t now)
{
    net_addr_t a;
    if (!client || net_addr_parse(client, &a) < 0)
        return;
    uint8_t key[16] = { 0 };
    if (a.family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, a.bytes, 4);
    } else {
        memcpy(key, a.bytes, 16);
    }
    size_t oldest = 0;
    for (size_t i = 0; i < u->nseen; i++) {
        if (memcmp(u->seen[i].addr, key, 16) == 0) {
            u->seen[i].last_ms = now;
            return;
        }
        if (u->seen[i].last_ms < u->seen[oldest].last_ms)
            oldest = i;
    }
    if (u->nseen < LIMITER_SEEN_MAX) {
        seen_t *s = realloc(u->seen, (u->nseen + 1u) * sizeof *s);
        if (!s)
            return;
        u->seen = s;
        oldest = u->nseen++;
    }
    memcpy(u->seen[oldest].addr, key, 16);
    u->seen[oldest].last_ms = now;
}

/* The addresses u sent from since since_ms, as text in texts[] (storage in buf). */
static size_t seen_list(const hamr_user_t *u, int64_t since_ms, const char *texts[],
                        char buf[][INET6_ADDRSTRLEN])
{
    size_t n = 0;
    for (size_t i = 0; i < u->nseen; i++) {
        if (u->seen[i].last_ms <= since_ms)
            continue;
        const uint8_t *a = u->seen[i].addr;
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        bool v4 = memcmp(a, mapped, 12) == 0;
        if (inet_ntop(v4 ? AF_INET : AF_INET6, v4 ? a + 12 : a, buf[n], INET6_ADDRSTRLEN)) {
            texts[n] = buf[n];
            n++;
        }
    }
    return n;
}

disabled_t *limiter_disabled(const limiter_t *L, const char *user)
{
    return user ? table_get(L->t[T_DISABLED], user) : NULL;
}

disabled_t *limiter_disabled_next(limiter_t *L, size_t *pos)
{
    return table_next(L->t[T_DISABLED], pos);
}

static disabled_t *disable_user(limiter_t *L, const char *user, const char *reason, int64_t now)
{
    disabled_t *d = item_new(disabled_t, user, user);
    if (!d)
        return NULL;
    d->since_ms = now;
    d->persist = PERSIST_DIRTY;
    snprintf(d->reason, sizeof d->reason, "%s", reason);
    if (table_add(L->t[T_DISABLED], d) < 0) {
        free(d);
        return NULL;
    }
    if (L->hooks.account && !L->quiet)
        L->hooks.account(L->hooks.arg, d, true, false);
    return d;
}

static void hamr_alert(limiter_t *L, hamr_user_t *u, const hamr_conf_t *c, bool by_rcpt,
                       int64_t now)
{
    int64_t ival = (int64_t)c->interval_s * 1000;
    if (!c->alert || (u->alert_ms != INT64_MIN && now - u->alert_ms < ival))
        return;
    u->alert_ms = now;
    u->expire_ms = max64(u->expire_ms, now + ival);
    const char *addrs[LIMITER_SEEN_MAX];
    char addr_buf[LIMITER_SEEN_MAX][INET6_ADDRSTRLEN];
    size_t naddrs = seen_list(u, now - ival, addrs, addr_buf);
    char limit[160], detail[1024], list[LIMITER_SEEN_MAX * (INET6_ADDRSTRLEN + 2)] = "";
    hamr_conf_limit(c, by_rcpt, limit, sizeof limit);
    for (size_t i = 0; i < naddrs; i++) {
        if (i)
            strcat(list, ", ");
        strcat(list, addrs[i]);
    }
    bool disable = c->action == HAMR_DISABLE;
    snprintf(detail, sizeof detail,
             "%s reached the HAMR limit of %s. %s Client addresses in the window: %s.", u->user,
             limit,
             disable ? "Sending is disabled for this account (550 5.7.1) until an "
                       "administrator enables it again; it can still receive and read mail."
                     : "Further messages get a temporary failure (451 4.7.1) until the "
                       "window frees a slot.",
             naddrs ? list : "none recorded");
    limiter_alert_t a = {
        .cause = "hamr",
        .user = u->user,
        .client_addrs = addrs,
        .n_client_addrs = naddrs,
        .limit = limit,
        .action = disable ? "disable" : "throttle",
        .time_ms = now,
        .detail = detail,
        .notify_owner = c->alert_owner,
        .interval_s = c->interval_s,
    };
    if (L->hooks.alert && !L->quiet)
        L->hooks.alert(L->hooks.arg, &a);
}

/* How long until u's window has room for one more message of rcpt recipients, or 0 when it
 * has room now. by_rcpt_r says whether the recipient limit is what waits longer. */
static int64_t hamr_wait(const hamr_user_t *u, const hamr_conf_t *c, uint32_t rcpt, int64_t now,
                         bool *by_rcpt_r)
{
    int64_t ival = (int64_t)c->interval_s * 1000;
    uint32_t n = win_len(&u->win);
    bool limited = false;
    int64_t wait = 0;
    *by_rcpt_r = false;
    if (n >= c->max_messages) {
        /* One more fits once the oldest of the last max_messages has left. */
        limited = true;
        wait = win_time(&u->win, n - c->max_messages) + ival - now;
    }
    uint64_t sum = c->max_recipients ? win_weight_sum(&u->win) : 0;
    if (c->max_recipients && sum + rcpt > c->max_recipients) {
        int64_t w = ival; /* more recipients than the limit never fit: say a whole window */
        if (rcpt <= c->max_recipients) {
            uint32_t k = 0;
            while (sum + rcpt > c->max_recipients)
                sum -= win_weight(&u->win, k++);
            w = win_time(&u->win, k - 1) + ival - now;
        }
        if (!limited || w > wait) {
            wait = w;
            *by_rcpt_r = true;
        }
        limited = true;
    }
    if (!limited)
        return 0;
    return wait > 0 ? wait : 1;
}

static reservation_t *reservation_add(limiter_t *L, const char *queue_id, const char *user,
                                      int64_t now)
{
    size_t qn = strlen(queue_id) + 1, un = strlen(user) + 1;
    reservation_t *r = malloc(sizeof *r + qn + un);
    if (!r)
        return NULL;
    memcpy(r->queue_id, queue_id, qn);
    memcpy(r->queue_id + qn, user, un);
    r->user = r->queue_id + qn;
    r->t = now;
    if (table_add(L->t[T_RESERVATIONS], r) < 0) {
        free(r);
        return NULL;
    }
    return r;
}

void limiter_send_check(limiter_t *L, const char *user, const char *client,
                        uint32_t rcpt_count, const char *queue_id, int64_t now,
                        limiter_reply_t *out)
{
    if (!user || !*user) {
        reply(out, LIMITER_ALLOW, "no authenticated user: HAMR does not count");
        return;
    }
    const disabled_t *d = limiter_disabled(L, user);
    if (d) {
        char since[32];
        reply(out, LIMITER_DISABLED, "sending disabled for %s since %s: %s", user,
              iso_time(d->since_ms, since, sizeof since), d->reason);
        return;
    }
    if (queue_id && *queue_id) {
        const reservation_t *r = table_get(L->t[T_RESERVATIONS], queue_id);
        if (r && strcmp(r->user, user) == 0) {
            reply(out, LIMITER_ALLOW, "already reserved for %s", queue_id);
            return;
        }
    }
    hamr_user_t *u = user_get(L, user, true, now);
    if (!u) {
        reply(out, LIMITER_THROTTLE, "limiter out of memory");
        out->retry_after_s = 60;
        return;
    }
    const hamr_conf_t *c = user_conf(L, u);
    if (!c->enabled) {
        reply(out, LIMITER_ALLOW, "HAMR is off (%s level)",
              conf_level_name(c->level[HAMR_ENABLED], 0));
        return;
    }
    int64_t ival = (int64_t)c->interval_s * 1000;
    win_expire(&u->win, now, ival);
    win_trim(&u->win, c->max_messages);
    seen_add(u, client, now);
    u->expire_ms = max64(u->expire_ms, now + LIMITER_USER_CACHE_MS);

    bool by_rcpt;
    int64_t wait = hamr_wait(u, c, rcpt_count, now, &by_rcpt);
    if (wait > 0) {
        char limit[160];
        hamr_conf_limit(c, by_rcpt, limit, sizeof limit);
        if (c->action == HAMR_DISABLE) {
            char why[BLOCK_REASON_MAX];
            snprintf(why, sizeof why, "HAMR limit of %s reached", limit);
            disable_user(L, user, why, now);
            reply(out, LIMITER_DISABLED, "sending disabled for %s: %s", user, why);
        } else {
            reply(out, LIMITER_THROTTLE, "HAMR limit of %s reached; a slot frees in %u s", limit,
                  seconds_up(wait));
            out->retry_after_s = seconds_up(wait);
        }
        hamr_alert(L, u, c, by_rcpt, now);
        return;
    }
    if (win_push(&u->win, now, rcpt_count, 0, c->max_messages) < 0) {
        reply(out, LIMITER_THROTTLE, "limiter out of memory");
        out->retry_after_s = 60;
        return;
    }
    u->expire_ms = max64(u->expire_ms, now + ival);
    if (queue_id && *queue_id && !table_get(L->t[T_RESERVATIONS], queue_id))
        reservation_add(L, queue_id, user, now);
    reply(out, LIMITER_ALLOW, "%u of %u messages within %u s", win_len(&u->win),
          c->max_messages, c->interval_s);
    out->reserved = true;
    out->max_messages = c->max_messages;
    out->interval_s = c->interval_s;
}

void limiter_apply_reserve(limiter_t *L, const char *user, const char *queue_id,
                           uint32_t rcpt_count, uint32_t max_messages, uint32_t interval_s,
                           int64_t now)
{
    if (!user || !*user || !max_messages)
        return;
    bool named = queue_id && *queue_id;
    if (named && table_get(L->t[T_RESERVATIONS], queue_id))
        return; /* counted already: the same record read again */
    hamr_user_t *u = user_get(L, user, true, now);
    if (!u)
        return;
    int64_t ival = (int64_t)(interval_s ? interval_s : 1) * 1000;
    win_expire(&u->win, now, ival);
    if (win_push(&u->win, now, rcpt_count, 0, max_messages) < 0)
        return;
    u->expire_ms = max64(u->expire_ms, now + max64(ival, LIMITER_USER_CACHE_MS));
    if (named)
        reservation_add(L, queue_id, user, now);
}

void limiter_send_release(limiter_t *L, const char *user, const char *queue_id, int64_t now)
{
    (void)now;
    if (!queue_id || !*queue_id)
        return;
    reservation_t *r = table_get(L->t[T_RESERVATIONS], queue_id);
    if (!r || (user && *user && strcmp(user, r->user) != 0))
        return;
    table_remove(L->t[T_RESERVATIONS], queue_id);
    hamr_user_t *u = table_get(L->t[T_USERS], r->user);
    if (u)
        win_remove(&u->win, r->t);
    free(r);
}

void limiter_message(limiter_t *L, const char *user, const char *queue_id, bool authenticated,
                     uint32_t rcpt_count, const char *client, int64_t now)
{
    if (!authenticated || !user || !*user)
        return;
    if (queue_id && *queue_id) {
        reservation_t *r = table_get(L->t[T_RESERVATIONS], queue_id);
        if (r && strcmp(r->user, user) == 0) {
            free(table_remove(L->t[T_RESERVATIONS], queue_id)); /* confirmed */
            return;
        }
    }
    /* Accepted without asking (or the reservation is long gone): it counts all the same. */
    hamr_user_t *u = user_get(L, user, true, now);
    if (!u)
        return;
    const hamr_conf_t *c = user_conf(L, u);
    if (!c->enabled)
        return;
    int64_t ival = (int64_t)c->interval_s * 1000;
    win_expire(&u->win, now, ival);
    win_push(&u->win, now, rcpt_count, 0, c->max_messages);
    seen_add(u, client, now);
    u->expire_ms = max64(u->expire_ms, now + ival);
}

/* ---- harvesting ----------------------------------------------------------------------- */

static counter_t *counter_get(table_t *t, const char *key, unsigned flags, bool create)
{
    counter_t *c = table_get(t, key);
    if (c || !create)
        return c;
    c = item_new(counter_t, key, key);
    if (!c)
        return NULL;
    win_init(&c->win, flags);
    if (table_add(t, c) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

static void auth_key(char *buf, size_t len, int service, const char *network)
{
    snprintf(buf, len, "%d|%s", service, network);
}

/* Forgets what a network did so far (it was blocked, or an administrator lifted its block). */
static void network_forget(limiter_t *L, const char *network)
{
    char key[BLOCK_NETWORK_MAX + 8];
    for (int s = 0; s < CONF_NSERVICES; s++) {
        auth_key(key, sizeof key, s, network);
        counter_t *c = table_remove(L->t[T_AUTH], key);
        if (c)
            counter_free(c);
    }
    counter_t *c = table_remove(L->t[T_RCPT], network);
    if (c)
        counter_free(c);
}

/* The attempt digest as a window tag: its first 8 bytes, never 0 (0 means "no digest"). */
static uint64_t digest_tag(const uint8_t *digest, size_t len)
{
    if (!digest || len < 8)
        return 0;
    uint64_t t = 0;
    for (int i = 0; i < 8; i++)
        t = (t << 8) | digest[i];
    return t ? t : 1;
}

static block_t *block_network(limiter_t *L, const char *network, int service,
                              const harvest_conf_t *hc, harvest_field_t count_field,
                              const char *what, const char *user, int64_t now)
{
    offender_t *o = blocks_offender(L->blocks, network, true);
    uint32_t offense = 1;
    if (o && o->offenses && now - o->last_blocked_ms < BLOCK_QUIET_MS)
        offense = o->offenses + 1;
    int64_t dur = blocks_duration_ms(hc->block_s, offense);
    char limit[100], dtext[24];
    harvest_conf_limit(hc, count_field, what, limit, sizeof limit);
    duration_text(dur, dtext, sizeof dtext);
    block_t b = { 0 };
    snprintf(b.network, sizeof b.network, "%s", network);
    b.since_ms = now;
    b.until_ms = now + dur;
    b.offense = offense;
    b.service = (uint8_t)service;
    b.persist = L->quiet ? PERSIST_QUIET : PERSIST_DIRTY; /* quiet: the leader writes it */
    if (count_field == HARVEST_HARD_LIMIT)
        snprintf(b.reason, sizeof b.reason,
                 "dictionary attack: %u invalid recipients within %u s; blocked for %s "
                 "(offense %u)",
                 hc->hard_limit, hc->interval_s, dtext, offense);
    else
        snprintf(b.reason, sizeof b.reason,
                 "too many failed logins: %u within %u s at %s; blocked for %s (offense %u)",
                 hc->max_failures, hc->interval_s, conf_service_name(service), dtext, offense);
    block_t *stored = blocks_put(L->blocks, &b);
    network_forget(L, network);
    if (!stored)
        return NULL;
    if (stored->until_ms < L->next_expiry)
        L->next_expiry = stored->until_ms;
    if (L->hooks.block && !L->quiet)
        L->hooks.block(L->hooks.arg, stored, LIMITER_ADDED, false);
    if (!o)
        return stored;
    o->offenses = offense;
    o->last_blocked_ms = now;
    int64_t ival = (int64_t)hc->interval_s * 1000;
    if (o->last_alert_ms != INT64_MIN && now - o->last_alert_ms < ival)
        return stored;
    o->last_alert_ms = now;
    char until[32], detail[768];
    snprintf(detail, sizeof detail,
             "The client network %s is blocked on every service until %s (%s): it reached %s "
             "at %s%s%s. This is offense %u: blocks double for repeat offenders.",
             network, iso_time(stored->until_ms, until, sizeof until), dtext, limit,
             conf_service_name(service), user && *user ? "; the last attempt named " : "",
             user && *user ? user : "", offense);
    const char *addrs[1] = { network };
    limiter_alert_t a = {
        .cause = "harvest",
        .user = user ? user : "",
        .client_addrs = addrs,
        .n_client_addrs = 1,
        .limit = limit,
        .action = "block",
        .time_ms = now,
        .detail = detail,
        .interval_s = hc->interval_s,
    };
    if (L->hooks.alert && !L->quiet)
        L->hooks.alert(L->hooks.arg, &a);
    return stored;
}

static bool account_good(const account_t *a, const char *network)
{
    uint64_t h = fnv1a(network);
    for (size_t i = 0; i < ACCOUNT_GOOD_MAX && i < a->ngood; i++)
        if (a->good[i] == h)
            return true;
    return false;
}

static void account_good_add(account_t *a, const char *network)
{
    if (account_good(a, network))
        return;
    if (a->ngood == ACCOUNT_GOOD_MAX) { /* forget the oldest */
        memmove(a->good, a->good + 1, (ACCOUNT_GOOD_MAX - 1) * sizeof a->good[0]);
        a->ngood--;
    }
    a->good[a->ngood++] = fnv1a(network);
}

static void account_alert(limiter_t *L, account_t *a, const harvest_conf_t *hc, uint32_t n,
                          int64_t now)
{
    int64_t ival = (int64_t)hc->interval_s * 1000;
    if (a->alert_ms != INT64_MIN && now - a->alert_ms < ival)
        return;
    a->alert_ms = now;
    a->expire_ms = max64(a->expire_ms, now + ival);
    char limit[160], detail[512];
    harvest_conf_limit(hc, HARVEST_MAX_FAILURES, "failed logins", limit, sizeof limit);
    snprintf(detail, sizeof detail,
             "%u failed logins against %s within %u s, from one or more addresses, passed %s. "
             "Password checks for this account are now slowed down (up to %d ms each); the "
             "account is not locked, and addresses that logged in successfully are not slowed.",
             n, a->user, hc->interval_s, limit, LIMITER_ACCOUNT_MAX_MS);
    limiter_alert_t al = {
        .cause = "harvest",
        .user = a->user,
        .limit = limit,
        .action = "delay",
        .time_ms = now,
        .detail = detail,
        .interval_s = hc->interval_s,
    };
    if (L->hooks.alert && !L->quiet)
        L->hooks.alert(L->hooks.arg, &al);
}

static void account_failure(limiter_t *L, const char *user, uint64_t tag, int64_t now)
{
    const harvest_conf_t *hc = &L->harvest[CONF_SVC_NONE];
    if (!hc->enabled)
        return;
    account_t *a = table_get(L->t[T_ACCOUNTS], user);
    if (!a) {
        a = item_new(account_t, user, user);
        if (!a)
            return;
        a->alert_ms = INT64_MIN;
        win_init(&a->win, WIN_TAG);
        if (table_add(L->t[T_ACCOUNTS], a) < 0) {
            free(a);
            return;
        }
    }
    int64_t ival = (int64_t)hc->interval_s * 1000;
    win_expire(&a->win, now, ival);
    if (tag && win_has_tag(&a->win, tag))
        return; /* the same attempt again */
    win_push(&a->win, now, 0, tag, hc->max_failures + ACCOUNT_STEPS);
    a->expire_ms = max64(a->expire_ms, now + ival);
    if (win_len(&a->win) > hc->max_failures)
        account_alert(L, a, hc, win_len(&a->win), now);
}

void limiter_auth_event(limiter_t *L, int service, const char *user, const char *client,
                        int result, const uint8_t *digest, size_t digest_len, int64_t now)
{
    char network[BLOCK_NETWORK_MAX];
    net_addr_t addr;
    if (blocks_network(client, network, sizeof network, &addr) < 0 ||
        blocks_addr_exempt(L->blocks, &addr))
        return;
    if (result == LIMITER_AUTH_OK) {
        account_t *a = user && *user ? table_get(L->t[T_ACCOUNTS], user) : NULL;
        if (a)
            account_good_add(a, network);
        return;
    }
    if (result != LIMITER_AUTH_BAD_CREDENTIALS)
        return;
    service = service_index(service);
    uint64_t tag = digest_tag(digest, digest_len);
    if (user && *user)
        account_failure(L, user, tag, now);

    const harvest_conf_t *hc = &L->harvest[service];
    const block_t *b = blocks_get(L->blocks, network);
    if (!hc->enabled || (b && b->until_ms > now))
        return;
    char key[BLOCK_NETWORK_MAX + 8];
    auth_key(key, sizeof key, service, network);
    counter_t *c = counter_get(L->t[T_AUTH], key, WIN_TAG, true);
    if (!c)
        return;
    int64_t ival = (int64_t)hc->interval_s * 1000;
    win_expire(&c->win, now, ival);
    if (tag && win_has_tag(&c->win, tag))
        return; /* a phone with a stale password is not an attacker */
    win_push(&c->win, now, 0, tag, hc->max_failures);
    c->expire_ms = now + ival;
    if (win_len(&c->win) >= hc->max_failures)
        block_network(L, network, service, hc, HARVEST_MAX_FAILURES, "failed logins", user, now);
}

/* The checks every question about a client starts with. Puts the client's network in
 * network (BLOCK_NETWORK_MAX bytes); true when they decide the answer, which is then in
 * out: an address not understood is allowed with the reason unparsed, an exempt network
 * is allowed, a blocked one is refused until its block ends. */
static bool client_decided(limiter_t *L, const char *client, int64_t now, const char *unparsed,
                           char *network, limiter_reply_t *out)
{
    net_addr_t addr;
    if (blocks_network(client, network, BLOCK_NETWORK_MAX, &addr) < 0) {
        reply(out, LIMITER_ALLOW, "%s", unparsed);
        return true;
    }
    if (blocks_addr_exempt(L->blocks, &addr)) {
        reply(out, LIMITER_ALLOW, "exempt network");
        return true;
    }
    const block_t *b = blocks_get(L->blocks, network);
    if (b && b->until_ms > now) {
        reply(out, LIMITER_BLOCKED, "%s", b->reason);
        out->until_ms = b->until_ms;
        return true;
    }
    return false;
}

void limiter_auth_check(limiter_t *L, int service, const char *client, const char *user,
                        int64_t now, limiter_reply_t *out)
{
    (void)service;
    char network[BLOCK_NETWORK_MAX];
    if (client_decided(L, client, now, "client address not understood: nothing to check",
                       network, out))
        return;
    reply(out, LIMITER_ALLOW, "not blocked");
    const harvest_conf_t *hc = &L->harvest[CONF_SVC_NONE];
    account_t *a = user && *user ? table_get(L->t[T_ACCOUNTS], user) : NULL;
    if (!a || !hc->enabled)
        return;
    win_expire(&a->win, now, (int64_t)hc->interval_s * 1000);
    uint32_t n = win_len(&a->win);
    if (n <= hc->max_failures || account_good(a, network))
        return;
    int64_t delay = (int64_t)(n - hc->max_failures) * LIMITER_ACCOUNT_STEP_MS;
    out->delay_ms = (uint32_t)(delay < LIMITER_ACCOUNT_MAX_MS ? delay : LIMITER_ACCOUNT_MAX_MS);
    snprintf(out->reason, sizeof out->reason,
             "%u failed logins against this account within %u s: checks slowed down", n,
             hc->interval_s);
}

void limiter_rcpt_failure(limiter_t *L, int service, const char *client, int64_t now,
                          limiter_reply_t *out)
{
    char network[BLOCK_NETWORK_MAX];
    if (client_decided(L, client, now, "client address not understood: nothing to count",
                       network, out))
        return;
    service = service_index(service);
    if (service == CONF_SVC_NONE)
        service = CONF_SVC_SMTP;
    const harvest_conf_t *hc = &L->harvest[service];
    if (!hc->enabled) {
        reply(out, LIMITER_ALLOW, "harvesting prevention is off for %s", conf_service_name(service));
        return;
    }
    counter_t *c = counter_get(L->t[T_RCPT], network, 0, true);
    if (!c) {
        reply(out, LIMITER_ALLOW, "limiter out of memory");
        return;
    }
    int64_t ival = (int64_t)hc->interval_s * 1000;
    win_expire(&c->win, now, ival);
    win_push(&c->win, now, 0, 0, hc->hard_limit);
    c->expire_ms = now + ival;
    uint32_t n = win_len(&c->win);
    if (n >= hc->hard_limit) {
        const block_t *nb = block_network(L, network, service, hc, HARVEST_HARD_LIMIT,
                                          "invalid recipients", NULL, now);
        reply(out, LIMITER_BLOCKED, "%s", nb ? nb->reason : "dictionary attack");
        out->until_ms = nb ? nb->until_ms : now + (int64_t)hc->block_s * 1000;
        return;
    }
    reply(out, LIMITER_ALLOW, "invalid recipients from this network: %u within %u s", n,
          hc->interval_s);
    if (n > hc->soft_limit) {
        int64_t delay = (int64_t)(n - hc->soft_limit) * LIMITER_RCPT_STEP_MS;
        out->delay_ms = (uint32_t)(delay < LIMITER_RCPT_MAX_MS ? delay : LIMITER_RCPT_MAX_MS);
    }
}

void limiter_apply_forget(limiter_t *L, const char *network)
{
    char key[BLOCK_NETWORK_MAX];
    if (!network || blocks_canonical(network, key, sizeof key) < 0)
        return;
    network_forget(L, key);
    block_t *b = blocks_get(L->blocks, key);
    if (b && b->persist == PERSIST_QUIET)
        blocks_delete(L->blocks, key);
}

void limiter_apply_clear_user(limiter_t *L, const char *user)
{
    hamr_user_t *u = user ? table_get(L->t[T_USERS], user) : NULL;
    if (u) {
        win_clear(&u->win);
        u->alert_ms = INT64_MIN;
    }
}

/* ---- exemptions, PostgreSQL's view, time passing ------------------------------------- */

/* Removes a block, telling the hooks first. pos: its walk position, or SIZE_MAX. */
static void block_end(limiter_t *L, block_t *b, limiter_change_t change, bool from_store,
                      size_t pos)
{
    if (L->hooks.block && !L->quiet)
        L->hooks.block(L->hooks.arg, b, change, from_store);
    if (change == LIMITER_LIFTED)
        network_forget(L, b->network);
    if (pos != SIZE_MAX)
        blocks_delete_at(L->blocks, pos);
    else
        blocks_delete(L->blocks, b->network);
}

void limiter_set_exempt(limiter_t *L, const char *const *cidrs, size_t n, int64_t now)
{
    (void)now;
    blocks_set_exempt(L->blocks, cidrs, n);
    size_t pos = 0;
    block_t *b;
    while ((b = blocks_next(L->blocks, &pos)))
        if (blocks_network_exempt(L->blocks, b->network)) {
            snprintf(b->reason, sizeof b->reason, "the network is exempt");
            block_end(L, b, LIMITER_LIFTED, false, pos - 1);
        }
}

void limiter_sync_blocks(limiter_t *L, const block_t *rows, size_t n, uint64_t written,
                         bool announce, int64_t now)
{
    uint32_t mark = ++L->mark;
    for (size_t i = 0; i < n; i++) {
        const block_t *r = &rows[i];
        block_t *cur = blocks_get(L->blocks, r->network);
        if (cur)
            cur->mark = mark; /* still there: an ended one is limiter_expire()'s business */
        if (r->until_ms <= now || blocks_network_exempt(L->blocks, r->network))
            continue;
        if (cur) {
            if (!pg_decides(cur, now))
                continue; /* ours is newer than what the query saw */
            if (cur->until_ms == r->until_ms && cur->offense == r->offense &&
                strcmp(cur->reason, r->reason) == 0)
                continue;
        }
        block_t b = *r;
        b.mark = mark;
        b.persist = PERSIST_CLEAN;
        b.written = written;
        block_t *stored = blocks_put(L->blocks, &b);
        if (!stored)
            continue;
        if (stored->until_ms < L->next_expiry)
            L->next_expiry = stored->until_ms;
        if (announce && L->hooks.block && !L->quiet)
            L->hooks.block(L->hooks.arg, stored, LIMITER_ADDED, true);
    }
    size_t pos = 0;
    block_t *b;
    while ((b = blocks_next(L->blocks, &pos)))
        if (b->mark != mark && pg_decides(b, now) && b->written <= written)
            block_end(L, b, LIMITER_LIFTED, true, pos - 1);
}

void limiter_sync_disabled(limiter_t *L, const disabled_t *const *rows, size_t n,
                           uint64_t written, bool announce)
{
    uint32_t mark = ++L->mark;
    table_t *t = L->t[T_DISABLED];
    for (size_t i = 0; i < n; i++) {
        disabled_t *cur = table_get(t, rows[i]->user);
        if (cur) {
            cur->mark = mark;
            if (cur->persist == PERSIST_CLEAN)
                snprintf(cur->reason, sizeof cur->reason, "%s", rows[i]->reason);
            continue;
        }
        disabled_t *d = item_new(disabled_t, user, rows[i]->user);
        if (!d)
            continue;
        d->since_ms = rows[i]->since_ms;
        snprintf(d->reason, sizeof d->reason, "%s", rows[i]->reason);
        d->mark = mark;
        d->persist = PERSIST_CLEAN;
        d->written = written;
        if (table_add(t, d) < 0) {
            free(d);
            continue;
        }
        if (announce && L->hooks.account && !L->quiet)
            L->hooks.account(L->hooks.arg, d, true, true);
    }
    size_t pos = 0;
    disabled_t *d;
    while ((d = table_next(t, &pos))) {
        if (d->mark == mark || d->persist != PERSIST_CLEAN || d->written > written)
            continue;
        table_remove_at(t, pos - 1);
        /* Enabled again: the window that led here starts afresh. */
        hamr_user_t *u = table_get(L->t[T_USERS], d->user);
        if (u) {
            win_clear(&u->win);
            u->alert_ms = INT64_MIN;
        }
        if (L->hooks.account && !L->quiet)
            L->hooks.account(L->hooks.arg, d, false, true);
        free(d);
    }
}

void limiter_load_offender(limiter_t *L, const char *network, uint32_t offenses,
                           int64_t last_blocked_ms)
{
    offender_t *o = blocks_offender(L->blocks, network, true);
    if (o && (offenses > o->offenses || last_blocked_ms > o->last_blocked_ms)) {
        if (offenses > o->offenses)
            o->offenses = offenses;
        if (last_blocked_ms > o->last_blocked_ms)
            o->last_blocked_ms = last_blocked_ms;
    }
}

void limiter_expire(limiter_t *L, int64_t now)
{
    if (now < L->next_expiry)
        return;
    int64_t next = INT64_MAX;
    size_t pos = 0;
    block_t *b;
    while ((b = blocks_next(L->blocks, &pos))) {
        if (b->until_ms <= now)
            block_end(L, b, LIMITER_EXPIRED, false, pos - 1);
        else if (b->until_ms < next)
            next = b->until_ms;
    }
    L->next_expiry = next;
}

/* True when an item of table i holds nothing that matters any more. */
static bool item_idle(int i, const void *item, int64_t now)
{
    switch (i) {
    case T_USERS: return now >= ((const hamr_user_t *)item)->expire_ms;
    case T_RESERVATIONS: return now - ((const reservation_t *)item)->t >= LIMITER_RESERVATION_MS;
    case T_AUTH:
    case T_RCPT: return now >= ((const counter_t *)item)->expire_ms;
    case T_ACCOUNTS: return now >= ((const account_t *)item)->expire_ms;
    }
    return false; /* disabled accounts stay until PostgreSQL says otherwise */
}

size_t limiter_prune(limiter_t *L, int64_t now, size_t budget)
{
    size_t freed = 0;
    for (int i = 0; i < T_COUNT; i++) {
        if (i == T_DISABLED)
            continue;
        table_t *t = L->t[i];
        size_t *pos = &L->prune_pos[i];
        for (size_t seen = 0; seen < budget; seen++) {
            void *item = table_next(t, pos);
            if (!item) {
                *pos = 0;
                table_compact(t);
                break;
            }
            if (item_idle(i, item, now)) {
                table_remove_at(t, *pos - 1);
                item_free[i](item);
                freed++;
            }
        }
    }
    if (now >= L->forget_at) {
        blocks_forget_offenders(L->blocks, now - BLOCK_QUIET_MS);
        L->forget_at = now + 600 * 1000;
    }
    return freed;
}
