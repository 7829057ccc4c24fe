/* Schema migrations with blocking libpq. Concurrent starters serialise on a session-level
 * advisory lock; each migration and its schema_migrations row commit together. */
#include "store/migrate.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Arbitrary, fixed: "Postern" folded into 32 bits. Every Postern binary uses this key. */
#define MIGRATE_LOCK_KEY "1349481330"

static void migrate_err(char *err, size_t err_len, const char *what, PGconn *conn,
                        const PGresult *res)
{
    if (!err || err_len == 0)
        return;
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!msg || !*msg)
        msg = PQerrorMessage(conn);
    snprintf(err, err_len, "%s: %s", what, msg && *msg ? msg : "unknown error");
    /* One line: drop the trailing newline libpq adds. */
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
        err[--n] = '\0';
}

/* Runs a statement that returns no rows or some rows; true when it succeeded. */
static bool migrate_exec(PGconn *conn, const char *sql, int nparams, const char *const *params,
                         const char *what, char *err, size_t err_len)
{
    PGresult *res = nparams ? PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0)
                            : PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        migrate_err(err, err_len, what, conn, res);
    PQclear(res);
    return ok;
}

static bool migrate_is_applied(const int *applied, int napplied, int version)
{
    for (int i = 0; i < napplied; i++)
        if (applied[i] == version)
            return true;
    return false;
}

/* The versions recorded, in *applied_r (malloc'd). Returns the count, or -1. */
static int migrate_applied(PGconn *conn, int **applied_r, char *err, size_t err_len)
{
    *applied_r = NULL;
    PGresult *res = PQexec(conn, "SELECT version FROM schema_migrations");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        migrate_err(err, err_len, "reading schema_migrations", conn, res);
        PQclear(res);
        return -1;
    }
    int n = PQntuples(res);
    int *v = calloc((size_t)n + 1, sizeof *v);
    if (!v) {
        if (err && err_len)
            snprintf(err, err_len, "out of memory");
        PQclear(res);
        return -1;
    }
    for (int i = 0; i < n; i++)
        v[i] = atoi(PQgetvalue(res, i, 0));
    PQclear(res);
    *applied_r = v;
    return n;
}

/* Applies one migration in its own transaction. */
static bool migrate_one(PGconn *conn, const migration_t *m, char *err, size_t err_len)
{
    char what[160];
    snprintf(what, sizeof what, "migration %s", m->name);
    if (!migrate_exec(conn, "BEGIN", 0, NULL, what, err, err_len))
        return false;
    char version[16];
    snprintf(version, sizeof version, "%d", m->version);
    const char *params[] = { version, m->name };
    if (!migrate_exec(conn, m->sql, 0, NULL, what, err, err_len) ||
        !migrate_exec(conn, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2,
                      params, what, err, err_len) ||
        !migrate_exec(conn, "COMMIT", 0, NULL, what, err, err_len)) {
        PQclear(PQexec(conn, "ROLLBACK"));
        return false;
    }
    return true;
}

int migrate_apply(PGconn *conn, char *err, size_t err_len)
{
    if (err && err_len)
        err[0] = '\0';
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        if (err && err_len)
            snprintf(err, err_len, "not connected to the database");
        return -1;
    }
    int applied_count = -1;
    int *applied = NULL;

    if (!migrate_exec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL,
                      "taking the migration lock", err, err_len))
        goto out;
    /* Under the lock, so no other starter creates it meanwhile. Checked first because
     * CREATE TABLE IF NOT EXISTS would send an "already exists" notice every time. */
    int current = migrate_current(conn);
    if (current < 0) {
        migrate_err(err, err_len, "reading schema_migrations", conn, NULL);
        goto unlock;
    }
    if (current == 0 &&
        !migrate_exec(conn,
                      "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      " version integer PRIMARY KEY,"
                      " name text NOT NULL,"
                      " applied_at timestamptz NOT NULL DEFAULT now())",
                      0, NULL, "creating schema_migrations", err, err_len))
        goto unlock;
    int napplied = migrate_applied(conn, &applied, err, err_len);
    if (napplied < 0)
        goto unlock;
    int count = 0;
    for (const migration_t *m = migrations; m->version != 0; m++) {
        if (migrate_is_applied(applied, napplied, m->version))
            continue;
        if (!migrate_one(conn, m, err, err_len))
            goto unlock;
        count++;
    }
    applied_count = count;
unlock:
    /* A lost connection drops the lock anyway; a failure here changes nothing. */
    PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
out:
    free(applied);
    return applied_count;
}

int migrate_current(PGconn *conn)
{
    if (!conn)
        return -1;
    PGresult *res = PQexec(conn, "SELECT to_regclass('schema_migrations') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        PQclear(res);
        return -1;
    }
    bool exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!exists)
        return 0;
    res = PQexec(conn, "SELECT coalesce(max(version), 0) FROM schema_migrations");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        PQclear(res);
        return -1;
    }
    int v = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}
