/* mailctl user add|passwd|del|list. Only the SCRAM secret of a password is stored. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailctl.h"
#include "scram.h"

/* Copies and checks an address argument; *domain_r points into address. */
static int address_arg(const char *arg, char *address, const char **domain_r)
{
    char why[200];
    if (!name_copy(address, arg, "address"))
        return CTL_USAGE;
    if (!name_address_check(address, domain_r, why, sizeof why))
        return ctl_error("invalid address: %s", why);
    return CTL_OK;
}

/* 1 when the query with one parameter returns a row, 0 when not, -1 on error (reported). */
static int exists(ctl_t *ctl, const char *sql, const char *param)
{
    const char *p[] = { param };
    PGresult *res = ctl_query(ctl, sql, 1, p);
    if (!res)
        return -1;
    int found = PQntuples(res) > 0;
    PQclear(res);
    return found;
}

/* Asks for a new password and turns it into the stored secret text. */
static int new_secret(ctl_t *ctl, char secret[SCRAM_SECRET_TEXT_MAX])
{
    char *pw = NULL;
    size_t len = 0;
    int rc = password_read_new(ctl, &pw, &len);
    if (rc != CTL_OK)
        return rc;
    scram_secret_t s;
    int ok = scram_secret_make(pw, len, SCRAM_DEFAULT_ITERATIONS, &s) == 0 &&
             scram_secret_encode(&s, secret, SCRAM_SECRET_TEXT_MAX) == 0;
    OPENSSL_cleanse(&s, sizeof s);
    password_free(pw, len);
    if (!ok)
        return ctl_error("could not derive the password secret");
    return CTL_OK;
}

static void print_done(ctl_t *ctl, const char *action, const char *address, const char *text)
{
    if (ctl->json) {
        printf("{\"ok\":true,\"action\":");
        json_str(stdout, action);
        printf(",\"address\":");
        json_str(stdout, address);
        printf("}\n");
    } else {
        printf("%s %s\n", text, address);
    }
    fflush(stdout);
}

int cmd_user_add(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char address[NAME_BUF];
    const char *domain;
    int rc = address_arg(args[0], address, &domain);
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

    char secret[SCRAM_SECRET_TEXT_MAX];
    if ((rc = new_secret(ctl, secret)) != CTL_OK)
        goto out;
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        goto out;
    const char *p[] = { domain, address, secret };
    PGresult *res = ctl_query(ctl,
                              "INSERT INTO users (domain_id, address, secret)"
                              " SELECT id, $2, $3 FROM domains WHERE name = $1"
                              " ON CONFLICT (address) DO NOTHING RETURNING id",
                              3, p);
    if (!res) {
        rc = CTL_DB;
        goto out;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        ctl_rollback(ctl);
        rc = ctl_error("user %s was added, or its domain removed, meanwhile: nothing changed",
                       address);
        goto out;
    }
    const char *q[] = { PQgetvalue(res, 0, 0) };
    PGresult *inbox = ctl_query(ctl, "SELECT postern_inbox($1::bigint)", 1, q);
    PQclear(res);
    if (!inbox) {
        rc = CTL_DB;
        goto out;
    }
    PQclear(inbox);
    if ((rc = ctl_audit(ctl, "user add", address)) != CTL_OK || (rc = ctl_commit(ctl)) != CTL_OK)
        goto out;
    print_done(ctl, "user add", address, "added user");
    ctl_announce(ctl, "users");
out:
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
}

int cmd_user_passwd(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char address[NAME_BUF];
    const char *domain;
    int rc = address_arg(args[0], address, &domain);
    if (rc != CTL_OK)
        return rc;
    int found = exists(ctl, "SELECT 1 FROM users WHERE address = $1", address);
    if (found < 0)
        return CTL_DB;
    if (!found)
        return ctl_error("no user %s", address);

    char secret[SCRAM_SECRET_TEXT_MAX];
    if ((rc = new_secret(ctl, secret)) != CTL_OK)
        goto out;
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        goto out;
    const char *p[] = { address, secret };
    PGresult *res =
        ctl_query(ctl, "UPDATE users SET secret = $2 WHERE address = $1 RETURNING id", 2, p);
    if (!res) {
        rc = CTL_DB;
        goto out;
    }
    int n = PQntuples(res);
    PQclear(res);
    if (n != 1) {
        ctl_rollback(ctl);
        rc = ctl_error("user %s was deleted meanwhile: nothing changed", address);
        goto out;
    }
    if ((rc = ctl_audit(ctl, "user passwd", address)) != CTL_OK ||
        (rc = ctl_commit(ctl)) != CTL_OK)
        goto out;
    print_done(ctl, "user passwd", address, "changed the password of");
    ctl_announce(ctl, "users");
out:
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
}

int cmd_user_del(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char address[NAME_BUF];
    const char *domain;
    int rc = address_arg(args[0], address, &domain);
    if (rc != CTL_OK)
        return rc;
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        return rc;
    const char *p[] = { address };
    PGresult *res = ctl_query(ctl, "SELECT id FROM users WHERE address = $1 FOR UPDATE", 1, p);
    if (!res)
        return CTL_DB;
    if (PQntuples(res) != 1) {
        PQclear(res);
        ctl_rollback(ctl);
        return ctl_error("no user %s", address);
    }
    char id[32];
    snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    const char *q[] = { id };
    res = ctl_query(ctl,
                    "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
                    " WHERE b.user_id = $1",
                    1, q);
    if (!res)
        return CTL_DB;
    long messages = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    res = ctl_query(ctl, "DELETE FROM settings WHERE scope = 'user' AND scope_id = $1", 1, q);
    if (!res)
        return CTL_DB;
    PQclear(res);
    res = ctl_query(ctl, "DELETE FROM users WHERE id = $1", 1, q);
    if (!res)
        return CTL_DB;
    PQclear(res);
    if ((rc = ctl_audit(ctl, "user del", address)) != CTL_OK || (rc = ctl_commit(ctl)) != CTL_OK)
        return rc;
    if (ctl->json) {
        printf("{\"ok\":true,\"action\":\"user del\",\"address\":");
        json_str(stdout, address);
        printf(",\"messages_deleted\":%ld}\n", messages);
    } else {
        printf("deleted user %s and its %ld message%s\n", address, messages,
               messages == 1 ? "" : "s");
    }
    fflush(stdout);
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
        char why[160];
        if (!name_copy(domain, ctl->domain, "domain name"))
            return CTL_USAGE;
        if (!name_domain_check(domain, why, sizeof why))
            return ctl_error("invalid domain name: %s", why);
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
    int n = PQntuples(res);
    if (ctl->json) {
        printf("{\"users\":[");
        for (int i = 0; i < n; i++) {
            printf("%s{\"address\":", i ? "," : "");
            json_str(stdout, PQgetvalue(res, i, 0));
            printf(",\"created_at\":");
            json_str(stdout, PQgetvalue(res, i, 1));
            printf("}");
        }
        printf("]}\n");
    } else if (n == 0) {
        printf("no users\n");
    } else {
        int w = out_width(res, 0, 7);
        printf("%-*s  %s\n", w, "ADDRESS", "CREATED");
        for (int i = 0; i < n; i++)
            printf("%-*s  %s\n", w, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
    }
    PQclear(res);
    return CTL_OK;
}
