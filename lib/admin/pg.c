/* Where the database is, the connection, statements, transactions, audit. */
#include <ctype.h>
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/bus.h"
#include "admin/admin.h"

#define ENV_FILE "var/postern.env"
#define CTL_NATS_URL "nats://127.0.0.1:4222"

/* The value of key in ENV_FILE (malloc'd), or NULL. Lines are KEY=VALUE; blank lines,
 * '#' comments, a leading "export " and quotes around the value are tolerated. */
static char *env_file_get(const char *key)
{
    FILE *f = fopen(ENV_FILE, "r");
    if (!f)
        return NULL;
    char *line = NULL, *found = NULL;
    size_t cap = 0;
    size_t klen = strlen(key);
    while (!found && getline(&line, &cap, f) > 0) {
        char *p = line;
        while (isspace((unsigned char)*p))
            p++;
        if (strncmp(p, "export ", 7) == 0)
            p += 7;
        if (strncmp(p, key, klen) != 0 || p[klen] != '=')
            continue;
        char *v = p + klen + 1;
        size_t n = strlen(v);
        while (n > 0 && isspace((unsigned char)v[n - 1]))
            v[--n] = '\0';
        if (n >= 2 && (v[0] == '"' || v[0] == '\'') && v[n - 1] == v[0]) {
            v[n - 1] = '\0';
            v++;
        }
        found = strdup(v);
    }
    free(line);
    fclose(f);
    return found;
}

/* The environment's value of key (malloc'd), or NULL when it is unset or empty. */
static char *env_get(const char *key)
{
    const char *v = getenv(key);
    return v && *v ? strdup(v) : NULL;
}

/* The environment's value of key, else the env file's (malloc'd), else NULL. */
static char *config_value(const char *key)
{
    const char *v = getenv(key);
    if (v && *v)
        return strdup(v);
    return env_file_get(key);
}

/* The bus's credentials come as a whole: from the environment when it sets NATS_USER,
 * else from ENV_FILE, so that a NATS_USER of the caller's never meets the password of
 * another user. NATS_PASSWORD_FILE is read here. Returns CTL_OK, or CTL_USAGE after
 * printing why. */
static int nats_credentials_load(ctl_t *ctl)
{
    const char *user = getenv("NATS_USER");
    bool from_env = user && *user;
    char *(*get)(const char *) = from_env ? env_get : env_file_get;
    ctl->nats_user = get("NATS_USER");
    ctl->nats_password = get("NATS_PASSWORD");
    ctl->nats_tls_ca = config_value("NATS_TLS_CA");
    char *file = get("NATS_PASSWORD_FILE");
    if (file && ctl->nats_password) {
        free(file);
        return ctl_error("set NATS_PASSWORD or NATS_PASSWORD_FILE, not both");
    }
    if (file) {
        char pw[BUS_PASSWORD_MAX + 1];
        if (bus_password_file(file, pw, sizeof pw) < 0) {
            ctl_error("cannot read NATS_PASSWORD_FILE %s: %s", file,
                      errno == EINVAL ? "empty" : strerror(errno));
            free(file);
            return CTL_USAGE;
        }
        ctl->nats_password = strdup(pw);
        explicit_bzero(pw, sizeof pw);
        free(file);
    }
    return CTL_OK;
}

int ctl_config_load(ctl_t *ctl)
{
    ctl->database_url = config_value("DATABASE_URL");
    if (!ctl->database_url || !*ctl->database_url) {
        ctl_error("no database: DATABASE_URL is not set and %s was not found here "
                  "(run mailctl from the repository while `make run` is up, or set "
                  "DATABASE_URL)",
                  ENV_FILE);
        return CTL_DB;
    }
    ctl->nats_url = config_value("NATS_URL");
    if (!ctl->nats_url)
        ctl->nats_url = strdup(CTL_NATS_URL);
    if (nats_credentials_load(ctl) != CTL_OK)
        return CTL_USAGE;

    const char *sudo = getenv("SUDO_USER");
    struct passwd *pw = getpwuid(getuid());
    if (sudo && *sudo)
        snprintf(ctl->actor, sizeof ctl->actor, "%s", sudo);
    else if (pw && pw->pw_name && *pw->pw_name)
        snprintf(ctl->actor, sizeof ctl->actor, "%s", pw->pw_name);
    else
        snprintf(ctl->actor, sizeof ctl->actor, "uid %u", (unsigned)getuid());
    return CTL_OK;
}

void ctl_config_free(ctl_t *ctl)
{
    free(ctl->database_url);
    free(ctl->nats_url);
    free(ctl->nats_user);
    if (ctl->nats_password)
        explicit_bzero(ctl->nats_password, strlen(ctl->nats_password));
    free(ctl->nats_password);
    free(ctl->nats_tls_ca);
    ctl->database_url = ctl->nats_url = ctl->nats_user = ctl->nats_password = NULL;
    ctl->nats_tls_ca = NULL;
}

/* "host H port P database D" from the connection string, never the password. */
static void db_target(const char *url, char *out, size_t out_len)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &err);
    out[0] = '\0';
    if (!opts) {
        PQfreemem(err);
        return;
    }
    static const char *const keys[] = { "host", "hostaddr", "port", "dbname" };
    static const char *const names[] = { "host", "address", "port", "database" };
    size_t n = 0;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        for (PQconninfoOption *o = opts; o->keyword; o++)
            if (strcmp(o->keyword, keys[k]) == 0 && o->val && *o->val) {
                int m = snprintf(out + n, out_len - n, "%s%s %s", n ? ", " : "", names[k],
                                 o->val);
                if (m > 0 && (size_t)m < out_len - n)
                    n += (size_t)m;
            }
    PQconninfoFree(opts);
}

/* libpq's messages end in a newline and may hold a second, indented line. */
static void print_pq_message(const char *prefix, const char *msg)
{
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    fprintf(ctl_err(), "mailctl: %s: %.*s\n", prefix, (int)n, msg);
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

int ctl_connect(ctl_t *ctl)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(ctl->database_url, &err);
    if (!opts) {
        print_pq_message("DATABASE_URL is not a valid connection string", err ? err : "");
        PQfreemem(err);
        return CTL_DB;
    }
    PQconninfoFree(opts);

    /* A default connect timeout first, so that one in the URL wins. */
    const char *keys[] = { "connect_timeout", "dbname", "application_name", NULL };
    const char *vals[] = { "5", ctl->database_url, "mailctl", NULL };
    ctl->pg = PQconnectdbParams(keys, vals, 1);
    if (!ctl->pg || PQstatus(ctl->pg) != CONNECTION_OK) {
        char target[256], prefix[320];
        db_target(ctl->database_url, target, sizeof target);
        snprintf(prefix, sizeof prefix, "cannot connect to the database%s%s%s",
                 *target ? " (" : "", target, *target ? ")" : "");
        print_pq_message(prefix, ctl->pg ? PQerrorMessage(ctl->pg) : "out of memory");
        ctl_disconnect(ctl);
        return CTL_DB;
    }
    /* Notices ("relation already exists, skipping") are not for the administrator. */
    PQsetNoticeProcessor(ctl->pg, quiet_notice, NULL);
    return CTL_OK;
}

void ctl_disconnect(ctl_t *ctl)
{
    if (ctl->pg && !ctl->pg_borrowed)
        PQfinish(ctl->pg);
    ctl->pg = NULL;
    ctl->in_tx = false;
}

const char *ctl_sqlstate(const PGresult *res)
{
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

PGresult *ctl_query_raw(ctl_t *ctl, const char *sql, int nparams, const char *const *params)
{
    return PQexecParams(ctl->pg, sql, nparams, NULL, params, NULL, NULL, 0);
}

int ctl_report(ctl_t *ctl, PGresult *res)
{
    const char *state = ctl_sqlstate(res);
    if (PQstatus(ctl->pg) != CONNECTION_OK) {
        print_pq_message("lost the connection to the database", PQerrorMessage(ctl->pg));
    } else if (strcmp(state, "42P01") == 0 || strcmp(state, "42883") == 0) {
        /* undefined_table, undefined_function */
        ctl_error("the database does not have the Postern schema (yet): run `mailctl "
                  "migrate` first");
    } else {
        const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        print_pq_message("database error", msg ? msg : PQerrorMessage(ctl->pg));
    }
    PQclear(res);
    if (ctl->in_tx)
        ctl_rollback(ctl);
    return CTL_DB;
}

PGresult *ctl_query(ctl_t *ctl, const char *sql, int nparams, const char *const *params)
{
    PGresult *res = ctl_query_raw(ctl, sql, nparams, params);
    ExecStatusType st = PQresultStatus(res);
    if (res && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK))
        return res;
    ctl_report(ctl, res);
    return NULL;
}

int ctl_exec(ctl_t *ctl, const char *sql, int nparams, const char *const *params, int *rows_r)
{
    PGresult *res = ctl_query(ctl, sql, nparams, params);
    if (!res)
        return CTL_DB;
    if (rows_r)
        *rows_r = PQntuples(res);
    PQclear(res);
    return CTL_OK;
}

int ctl_query_value(ctl_t *ctl, const char *sql, int nparams, const char *const *params,
                    char **value_r)
{
    *value_r = NULL;
    PGresult *res = ctl_query(ctl, sql, nparams, params);
    if (!res)
        return CTL_DB;
    if (PQntuples(res) == 1)
        *value_r = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    return CTL_OK;
}

int ctl_count(ctl_t *ctl, const char *sql, int nparams, const char *const *params, long *count_r)
{
    PGresult *res = ctl_query(ctl, sql, nparams, params);
    if (!res)
        return CTL_DB;
    *count_r = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    return CTL_OK;
}

int ctl_begin(ctl_t *ctl)
{
    int rc = ctl_exec(ctl, "BEGIN", 0, NULL, NULL);
    if (rc == CTL_OK)
        ctl->in_tx = true;
    return rc;
}

int ctl_commit(ctl_t *ctl)
{
    PGresult *res = ctl_query(ctl, "COMMIT", 0, NULL);
    ctl->in_tx = false;
    if (!res)
        return CTL_DB;
    PQclear(res);
    return CTL_OK;
}

void ctl_rollback(ctl_t *ctl)
{
    ctl->in_tx = false;
    if (ctl->pg && PQstatus(ctl->pg) == CONNECTION_OK)
        PQclear(PQexec(ctl->pg, "ROLLBACK"));
}

int ctl_audit(ctl_t *ctl, const char *action, const char *detail)
{
    const char *params[] = { ctl->actor, action, detail ? detail : "" };
    return ctl_exec(ctl, "INSERT INTO audit_log (actor, action, detail) VALUES ($1, $2, $3)", 3,
                    params, NULL);
}

int ctl_audit_commit(ctl_t *ctl, const char *action, const char *detail)
{
    int rc = ctl_audit(ctl, action, detail);
    return rc == CTL_OK ? ctl_commit(ctl) : rc;
}
