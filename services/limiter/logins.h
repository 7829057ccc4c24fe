/* The login history: the authentication outcomes (AuthEvent) the answering limiter replica
 * applies, kept in table logins (lib/store/migrations/0012_logins.sql) for `mailctl user
 * logins` and webd's self-service page.
 *
 * Outcomes wait in memory and leave in batches, one multi-row INSERT at a time: at the
 * first logins_tick() LOGINS_FLUSH_MS or more after the last batch was sent, or at once
 * when LOGINS_BATCH_ROWS are waiting. Nothing here blocks the loop: the INSERT goes through
 * the service's pool (lib/store/db.h), and nothing is sent while the pool has no connection.
 * While PostgreSQL is away, rows wait, up to LOGINS_PENDING_MAX; the ones beyond are
 * dropped and counted, and the log says so once per outage. A batch PostgreSQL refuses (no
 * outage: the table is missing, a value it will not take) is dropped and counted too,
 * never sent again. Rows older than logins.keep_days days are deleted every
 * LOGINS_PRUNE_MS, LOGINS_PRUNE_ROWS at a time (the next chunk a tick later).
 *
 * Best effort by design: rows still in memory die with the process (a stopping limiter
 * sends them first, logins_drain()), and the outcomes a replica applies while it takes
 * over (catching up, before it answers) are not recorded. Outcomes that cannot be kept
 * (no user name, a user name that is not UTF-8 or longer than LOGINS_USER_MAX, an unknown
 * service or result) are skipped and counted. */
#ifndef LIMITER_LOGINS_H
#define LIMITER_LOGINS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/metrics.h"
#include "bus/events.h"
#include "store/db.h"

#define LOGINS_FLUSH_MS 1000        /* at most one batch per this, unless one is full */
#define LOGINS_BATCH_ROWS 500       /* rows in one INSERT (7 parameters each) */
#define LOGINS_PENDING_MAX 20000    /* rows kept while PostgreSQL is away */
#define LOGINS_PRUNE_MS (3600 * 1000LL)
#define LOGINS_PRUNE_ROWS 10000     /* rows one DELETE removes at most */
#define LOGINS_USER_MAX 320         /* bytes of a user name kept */
#define LOGINS_MECHANISM_MAX 32     /* bytes of a mechanism name kept (cut there) */

/* How the history reaches PostgreSQL: db_query() and db_available() on the service's pool,
 * or a test's fake. query returns 0, or -1 when the query was not sent (cb never called). */
typedef struct logins_io {
    void *arg;
    int (*query)(void *arg, const char *sql, int nparams, const char *const *values, db_cb cb,
                 void *cb_arg);
    bool (*available)(void *arg);
} logins_io_t;

typedef struct logins logins_t;

typedef struct logins_stats {
    size_t pending;          /* rows waiting, the batch in flight included */
    uint64_t written;        /* rows PostgreSQL has committed */
    uint64_t dropped;        /* rows lost: no room while PostgreSQL was away, or refused */
    uint64_t skipped;        /* outcomes that could not be kept */
    uint64_t pruned;         /* old rows deleted */
    uint64_t batches;        /* INSERTs sent */
} logins_stats_t;

/* metrics may be NULL. */
logins_t *logins_create(const logins_io_t *io, metrics_t *metrics);
/* A query still in flight frees the history from its callback. */
void logins_destroy(logins_t **lg);

/* One outcome, at ev->time_ms (now_ms when it is missing or in the future). Returns true
 * when it was kept for writing. */
bool logins_add(logins_t *lg, const ev_auth_t *ev, int64_t now_ms);
/* Sends a batch when one is due, and deletes old rows when that is due: keep_days is
 * logins.keep_days, 0 for "not now" (this replica does not answer, or the settings are not
 * known yet). Call about once a second. */
void logins_tick(logins_t *lg, int64_t now_ms, int keep_days);
/* Stopping: the rows waiting go out now, batch after batch, whatever LOGINS_FLUSH_MS says. */
void logins_drain(logins_t *lg);
/* True while a query is in flight. */
bool logins_busy(const logins_t *lg);
void logins_stats(const logins_t *lg, logins_stats_t *st);

/* The text kept for a result or service, NULL for one the table does not take. */
const char *logins_result_name(int result);
const char *logins_service_name(int service);

#endif
