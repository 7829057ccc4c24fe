/* Versioned schema migrations, embedded in every binary from lib/store/migrations/NNNN_*.sql.
 * migrate_apply() applies, under an advisory lock and each in its own transaction, the
 * migrations not yet recorded in schema_migrations; running it again changes nothing. */
#ifndef POSTERN_MIGRATE_H
#define POSTERN_MIGRATE_H

#include <libpq-fe.h>

typedef struct migration {
    int version;      /* 0 ends the table */
    const char *name; /* file name without .sql */
    const char *sql;
} migration_t;

extern const migration_t migrations[];

/* Blocking: for tools and start-up, never for a loop thread. Returns the number of
 * migrations applied (0 when up to date), or -1 with a message in err (err_len bytes). */
int migrate_apply(PGconn *conn, char *err, size_t err_len);
/* Highest version recorded, 0 for an empty database, -1 on error. */
int migrate_current(PGconn *conn);

#endif
