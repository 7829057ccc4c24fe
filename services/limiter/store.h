/* The limiter's PostgreSQL side, never blocking the loop (lib/store/db.h).
 *
 * Reads, as one reload cycle: the system HAMR, harvesting and login history settings, the
 * exempt networks, the offense history (first cycle only), the active blocks and the
 * disabled accounts. The limiter keeps answering from memory while a cycle fails; a failed
 * cycle is tried again two seconds later. Resolves one user's HAMR settings with one query.
 *
 * Writes blocks (with their offense history) and disabled accounts. A write that fails
 * marks its record dirty and store_retry() sends it again. Each completed write bumps a
 * counter; a reload compares it with the records' own, so a block written after the reload's
 * query was sent is never taken for one an administrator lifted. */
#ifndef LIMITER_STORE_H
#define LIMITER_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "store/db.h"
#include "policy.h"

typedef struct store store_t;
typedef int64_t (*store_clock_fn)(void *arg);

store_t *store_create(uv_loop_t *loop, db_t *db, limiter_t *L, store_clock_fn clock,
                      void *clock_arg);
/* Stops all work: callbacks still to come from db_destroy() find nothing to do. Call before
 * db_destroy(). */
void store_stop(store_t *st);
/* Frees the store once its timer has closed (run the loop). */
void store_destroy(store_t **st);

/* Starts a reload cycle (or one more after the current). */
void store_reload(store_t *st);
/* True once a reload cycle has completed. */
bool store_loaded(const store_t *st);
/* logins.keep_days as the last reload read it (its default when unset or invalid); 0
 * before the first reload has read the settings. */
#define LOGINS_KEEP_DAYS_KEY "logins.keep_days"
int store_logins_keep_days(const store_t *st);

/* user's HAMR settings: done(arg, true) after limiter_user_conf() has them, done(arg,
 * false) when PostgreSQL could not say. Always called once: later, on the loop, or at once
 * only when memory ran out. */
typedef void (*store_done_fn)(void *arg, bool ok);
void store_resolve_user(store_t *st, const char *user, store_done_fn done, void *arg);

/* Persistence of what the limiter decided (see limiter_hooks_t). */
void store_block_write(store_t *st, block_t *b);
/* expired: delete only if PostgreSQL's row ends no later than b (a newer block stays). */
void store_block_delete(store_t *st, const block_t *b, bool expired);
void store_disabled_write(store_t *st, disabled_t *d);
/* Sends the dirty records again, when the database is there. */
void store_retry(store_t *st);

#endif
