/* PostgreSQL from an event loop: a small pool of non-blocking libpq connections driven
 * by uv_poll, a FIFO of queries, and reconnection with backoff. Nothing here ever blocks
 * the loop thread.
 *
 * Contract: db_query() always calls cb exactly once, never from inside db_query() itself,
 * always on the loop thread. res is NULL when the database could not be reached (the
 * caller answers with a temporary error); otherwise it is the query's result, which may
 * be an error result (check PQresultStatus). The result is cleared after cb returns. */
#ifndef POSTERN_DB_H
#define POSTERN_DB_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <uv.h>

typedef struct db db_t;
typedef void (*db_cb)(void *arg, PGresult *res);

/* conninfo is a libpq connection string or URI. pool_size connections (at least 1) are
 * opened at once and kept open; a lost one is reopened with backoff. Host names in it are
 * resolved off the loop (uv_getaddrinfo) before every attempt; a name that does not resolve
 * fails the attempt like an unreachable server. */
db_t *db_create(uv_loop_t *loop, const char *conninfo, int pool_size);
/* Fails the queries still queued (cb with NULL), closes the connections; *db becomes NULL.
 * The handles close asynchronously: run the loop until it has no more handles. */
void db_destroy(db_t **db);

/* Parameters are text-format unless binary[i] is set (lengths used only for binary).
 * sql and the parameters are copied before db_query() returns: the caller's buffers may go
 * at once. Results are text-format. Returns 0; -1 only if db is NULL. */
int db_query(db_t *db, const char *sql, int nparams, const char *const *values,
             const int *lengths, const int *binary, db_cb cb, void *arg);

/* The same, for a large value the caller would otherwise have copied once more: block
 * (malloc'ed, block_len bytes) becomes the query's, freed once it is answered, or at once
 * when db is NULL. Binary parameters that lie inside it are used where they are, not
 * copied; the others are copied as by db_query(). */
int db_query_take(db_t *db, const char *sql, int nparams, const char *const *values,
                  const int *lengths, const int *binary, void *block, size_t block_len,
                  db_cb cb, void *arg);

/* The same, with every result column in binary format (bytea arrives as raw bytes). */
int db_query_binary(db_t *db, const char *sql, int nparams, const char *const *values,
                    const int *lengths, const int *binary, db_cb cb, void *arg);

/* One statement of a db_batch(): as for db_query(), except that binary parameters are not
 * copied (see db_batch). */
typedef struct db_stmt_in {
    const char *sql;
    int nparams;
    const char *const *values;
    const int *lengths;
    const int *binary;
} db_stmt_in_t;

/* committed: every statement succeeded and the transaction is on disk. results: the n
 * results in order (text format), or NULL when the database could not be reached or the
 * connection broke before the outcome was known. When one statement failed, nothing took
 * effect: its result is the error, the ones after it are PGRES_PIPELINE_ABORTED. The results
 * are cleared after cb returns. */
typedef void (*db_batch_cb)(void *arg, bool committed, PGresult *const *results, int n);

/* Runs n statements (1..DB_BATCH_MAX) as one transaction on one connection, sent together
 * (a libpq pipeline: one round trip and one commit for them all). Text parameters and sql
 * are copied; binary ones are used where they are, so they must stay until cb, which is
 * called exactly once, as for db_query(). Returns 0; -1 (cb never called) if db is NULL or
 * n is out of range. */
#define DB_BATCH_MAX 64
int db_batch(db_t *db, int n, const db_stmt_in_t *stmts, db_batch_cb cb, void *arg);

/* Calls cb(arg) once on a later loop iteration, never from inside db_later(); at the latest
 * from db_destroy(). For an answer that needs no query (found in a cache), so that it comes
 * with the same timing as one that did. Returns 0; -1 only if db or cb is NULL. */
int db_later(db_t *db, void (*cb)(void *arg), void *arg);

/* The number of connections the pool keeps (its pool_size). */
int db_pool_size(const db_t *db);

/* True while at least one connection is up. */
bool db_available(const db_t *db);
/* True while a query waits, runs, or has its callback still to come: what a service
 * shutting down lets finish (a lock released, a last write) before db_destroy. */
bool db_busy(const db_t *db);

#endif
