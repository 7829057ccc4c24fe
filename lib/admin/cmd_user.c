/* mailctl user add|passwd|del|list|logins. Only the SCRAM secret of a password is stored. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "auth/scram.h"

/* 1 when the query with one parameter returns a row, 0 when not, -1 on error (reported). */
static int exists(ctl_t *ctl, const char *sql, const char *param)
{
    const char *p[] = { param };
    int rows;
    return ctl_exec(ctl, sql, 1, p, &rows) == CTL_OK ? rows > 0 : -1;
}

/* Asks for the new password and, in one transaction, stores its secret with sql, which
 * gets (address, secret, domain) and returns the user's id when it wrote a row; then
 * audits, prints and announces the change. domain: the domain of a new user (user add),
 * whose INBOX is made too; NULL for a new password (user passwd), sql gets two parameters.
 * gone: why no row was written, after "user ADDRESS". */
static int user_secret_write(ctl_t *ctl, const char *action, const char *address,
                             const char *domain, const char *sql, const char *gone,
                             const char *text)
{
    char secret[SCRAM_SECRET_TEXT_MAX];
    int rc;
    if ((rc = password_secret_new(ctl, secret)) != CTL_OK || (rc = ctl_begin(ctl)) != CTL_OK)
        goto out;
    const char *p[] = { address, secret, domain };
    PGresult *res = ctl_query(ctl, sql, domain ? 3 : 2, p);
    if (!res) {
        rc = CTL_DB;
        goto out;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        ctl_rollback(ctl);
        rc = ctl_error("user %s %s: nothing changed", address, gone);
        goto out;
    }
    if (domain) {
        const char *q[] = { PQgetvalue(res, 0, 0) };
        rc = ctl_exec(ctl, "SELECT postern_inbox($1::bigint)", 1, q, NULL);
    }
    PQclear(res);
    if (rc == CTL_OK)
        rc = ctl_audit_commit(ctl, action, address);
    if (rc != CTL_OK)
        goto out;
    if (ctl->json) {
        out_json_ok(action, "address", address);
        fprintf(ctl_out(), "}\n");
    } else {
        fprintf(ctl_out(), "%s %s\n", text, address);
    }
    fflush(ctl_out());
    ctl_announce(ctl, "users");
out:
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
}

int cmd_user_add(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char address[NAME_BUF];
    const char *domain;
    int rc = name_address_arg(args[0], address, &domain);
    if (rc != CTL_OK)
        return rc;
    int found = exists(ctl, "SELECT 1 FROM domains WHERE name = $1", domain);
    if (found < 0)
        return CTL_DB;
    if (!found)
        return ctl_error("domain %s is not hosted here: add it first with "
                         "`mailctl domain add %s`",
                         domain, domain);
    found = exists(ctl, "SELECT 1 FROM users WHERE address = $1", address);
    if (found < 0)
        return CTL_DB;
    if (found)
        return ctl_error("user %s already exists (change its password with "
                         "`mailctl user passwd %s`)",
                         address, address);
    return user_secret_write(ctl, "user add", address, domain,
                             "INSERT INTO users (domain_id, address, secret)"
                             " SELECT id, $1, $2 FROM domains WHERE name = $3"
                             " ON CONFLICT (address) DO NOTHING RETURNING id",
                             "was added, or its domain removed, meanwhile", "added user");
}

int cmd_user_passwd(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char address[NAME_BUF];
    const char *domain;
    int rc = name_address_arg(args[0], address, &domain);
    if (rc != CTL_OK)
        return rc;
    int found = exists(ctl, "SELECT 1 FROM users WHERE address = $1", address);
    if (found < 0)
        return CTL_DB;
    if (!found)
        return ctl_error("no user %s", address);
    return user_secret_write(ctl, "user passwd", address, NULL,
                             "UPDATE users SET secret = $2 WHERE address = $1 RETURNING id",
                             "was deleted meanwhile", "changed the password of");
}

int cmd_user_del(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char address[NAME_BUF];
    const char *domain;
    int rc = name_address_arg(args[0], address, &domain);
    if (rc != CTL_OK)
        return rc;
    const char *p[] = { address };
    char *id;
    if ((rc = ctl_begin(ctl)) != CTL_OK ||
        (rc = ctl_query_value(ctl, "SELECT id FROM users WHERE address = $1 FOR UPDATE", 1, p,
                              &id)) != CTL_OK)
        return rc;
    if (!id) {
        ctl_rollback(ctl);
        return ctl_error("no user %s", address);
    }
    const char *q[] = { id };
    long messages = 0;
    rc = ctl_count(ctl,
                   "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
                   " WHERE b.user_id = $1",
                   1, q, &messages);
    if (rc == CTL_OK)
        rc = ctl_exec(ctl, "DELETE FROM settings WHERE scope = 'user' AND scope_id = $1", 1, q,
                      NULL);
    if (rc == CTL_OK)
        rc = ctl_exec(ctl, "DELETE FROM users WHERE id = $1", 1, q, NULL);
    /* Its login history goes too: whoever gets the address next must not see it. */
    if (rc == CTL_OK)
        rc = ctl_exec(ctl, "DELETE FROM logins WHERE address = $1", 1, p, NULL);
    free(id);
    if (rc != CTL_OK || (rc = ctl_audit_commit(ctl, "user del", address)) != CTL_OK)
        return rc;
    if (ctl->json) {
        out_json_ok("user del", "address", address);
        fprintf(ctl_out(), ",\"messages_deleted\":%ld}\n", messages);
    } else {
        fprintf(ctl_out(), "deleted user %s and its %ld message%s\n", address, messages,
               messages == 1 ? "" : "s");
    }
    fflush(ctl_out());
    ctl_announce(ctl, "users");
    return CTL_OK;
}

int cmd_user_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    char domain[NAME_BUF];
    const char *p[] = { NULL };
    if (ctl->domain) {
        int rc = name_domain_arg(ctl->domain, domain);
        if (rc != CTL_OK)
            return rc;
        int found = exists(ctl, "SELECT 1 FROM domains WHERE name = $1", domain);
        if (found < 0)
            return CTL_DB;
        if (!found)
            return ctl_error("domain %s is not hosted here", domain);
        p[0] = domain;
    }
    PGresult *res = ctl_query(ctl,
                              "SELECT u.address, " SQL_UTC("u.created_at")
                              " FROM users u JOIN domains d ON d.id = u.domain_id"
                              " WHERE $1::text IS NULL OR d.name = $1"
                              " ORDER BY d.name, u.address",
                              1, p);
    if (!res)
        return CTL_DB;
    static const out_col_t cols[] = {
        { "address", 0, OUT_STR },
        { "created_at", 1, OUT_STR },
    };
    int n = PQntuples(res);
    if (ctl->json) {
        fprintf(ctl_out(), "{\"users\":");
        out_json_rows(res, cols, sizeof cols / sizeof cols[0]);
        fprintf(ctl_out(), "}\n");
    } else if (n == 0) {
        fprintf(ctl_out(), "no users\n");
    } else {
        int w = out_width(res, 0, 7);
        fprintf(ctl_out(), "%-*s  %s\n", w, "ADDRESS", "CREATED");
        for (int i = 0; i < n; i++)
            fprintf(ctl_out(), "%-*s  %s\n", w, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
    }
    PQclear(res);
    return CTL_OK;
}

/* ---- user logins ------------------------------------------------------------------- */

#define LOGINS_LIMIT_DEFAULT 20
#define LOGINS_LIMIT_MAX 1000

/* The address and --limit of user logins. */
static int logins_args(ctl_t *ctl, char **args, int nargs, char address[NAME_BUF],
                       char limit[16])
{
    const opt_spec_t specs[] = { { "--limit", true } };
    const char *values[1];
    char **pos = calloc((size_t)nargs + 1, sizeof *pos);
    if (!pos)
        return CTL_DB;
    int npos = 0;
    int rc = opt_parse(ctl, specs, 1, args, nargs, values, pos, &npos);
    if (rc == CTL_OK && npos != 1) {
        ctl->usage = true;
        rc = npos ? ctl_error("unexpected argument '%s' (one address at a time)", pos[1])
                  : ctl_error("missing argument: the user's address");
    }
    const char *domain;
    if (rc == CTL_OK)
        rc = name_address_arg(pos[0], address, &domain);
    free(pos);
    if (rc != CTL_OK)
        return rc;
    const char *v = values[0];
    long n = LOGINS_LIMIT_DEFAULT;
    if (v) {
        size_t digits = strspn(v, "0123456789");
        n = digits > 0 && digits < 6 && v[digits] == '\0' ? strtol(v, NULL, 10) : 0;
        if (n < 1 || n > LOGINS_LIMIT_MAX) {
            ctl->usage = true;
            return ctl_error("invalid value for --limit: expected an integer from 1 to %d",
                             LOGINS_LIMIT_MAX);
        }
    }
    snprintf(limit, 16, "%ld", n);
    return CTL_OK;
}

enum { LG_TIME, LG_SERVICE, LG_CLIENT, LG_MECHANISM, LG_TLS, LG_RESULT };

int cmd_user_logins(ctl_t *ctl, char **args, int nargs)
{
    char address[NAME_BUF], limit[16];
    int rc = logins_args(ctl, args, nargs, address, limit);
    if (rc != CTL_OK)
        return rc;
    /* The newest first; the time with milliseconds, which also orders rows of one second. */
    const char *p[] = { address, limit };
    PGresult *res = ctl_query(ctl,
                              "SELECT to_char(at AT TIME ZONE 'UTC',"
                              " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),"
                              " service, host(client_addr), mechanism, tls, result"
                              " FROM logins WHERE address = $1"
                              " ORDER BY at DESC LIMIT $2::integer",
                              2, p);
    if (!res)
        return CTL_DB;
    int n = PQntuples(res);
    if (ctl->json) {
        /* A bare array: what webd's self-service page shows, as it is. */
        fprintf(ctl_out(), "[");
        for (int i = 0; i < n; i++) {
            fprintf(ctl_out(), "%s{\"time\":", i ? "," : "");
            json_str(ctl_out(), PQgetvalue(res, i, LG_TIME));
            fprintf(ctl_out(), ",\"service\":");
            json_str(ctl_out(), PQgetvalue(res, i, LG_SERVICE));
            fprintf(ctl_out(), ",\"client_addr\":");
            json_str(ctl_out(), PQgetisnull(res, i, LG_CLIENT) ? NULL
                                                                : PQgetvalue(res, i, LG_CLIENT));
            fprintf(ctl_out(), ",\"mechanism\":");
            json_str(ctl_out(), PQgetvalue(res, i, LG_MECHANISM));
            fprintf(ctl_out(), ",\"tls\":%s,\"result\":",
                    strcmp(PQgetvalue(res, i, LG_TLS), "t") == 0 ? "true" : "false");
            json_str(ctl_out(), PQgetvalue(res, i, LG_RESULT));
            fprintf(ctl_out(), "}");
        }
        fprintf(ctl_out(), "]\n");
    } else if (n == 0) {
        fprintf(ctl_out(), "no logins recorded for %s\n", address);
    } else {
        int wc = out_width(res, LG_CLIENT, 6), wm = out_width(res, LG_MECHANISM, 9);
        fprintf(ctl_out(), "%-24s  %-7s  %-*s  %-*s  %-3s  %s\n", "TIME", "SERVICE", wc, "CLIENT",
                wm, "MECHANISM", "TLS", "RESULT");
        for (int i = 0; i < n; i++)
            fprintf(ctl_out(), "%-24s  %-7s  %-*s  %-*s  %-3s  %s\n", PQgetvalue(res, i, LG_TIME),
                    PQgetvalue(res, i, LG_SERVICE), wc,
                    PQgetisnull(res, i, LG_CLIENT) ? "-" : PQgetvalue(res, i, LG_CLIENT), wm,
                    PQgetvalue(res, i, LG_MECHANISM),
                    strcmp(PQgetvalue(res, i, LG_TLS), "t") == 0 ? "yes" : "no",
                    PQgetvalue(res, i, LG_RESULT));
    }
    PQclear(res);
    return CTL_OK;
}
