/* mailctl domain add|del|list, and migrate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "store/migrate.h"

int cmd_migrate(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    char err[512];
    int applied = migrate_apply(ctl->pg, err, sizeof err);
    if (applied < 0) {
        fprintf(ctl_err(), "mailctl: migration failed: %s\n", err);
        return CTL_DB;
    }
    int version = migrate_current(ctl->pg);
    if (version < 0) {
        ctl_error("cannot read the schema version");
        return CTL_DB;
    }
    if (applied > 0) {
        char detail[64];
        snprintf(detail, sizeof detail, "%d applied, now version %d", applied, version);
        int rc = ctl_begin(ctl);
        if (rc == CTL_OK)
            rc = ctl_audit_commit(ctl, "migrate", detail);
        if (rc != CTL_OK)
            return rc;
    }
    if (ctl->json)
        fprintf(ctl_out(), "{\"applied\":%d,\"version\":%d}\n", applied, version);
    else if (applied > 0)
        fprintf(ctl_out(), "applied %d migration%s; the schema is at version %d\n", applied,
               applied == 1 ? "" : "s", version);
    else
        fprintf(ctl_out(), "the schema is up to date (version %d)\n", version);
    return CTL_OK;
}

int cmd_domain_add(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char name[NAME_BUF];
    int rc = name_domain_arg(args[0], name);
    if (rc != CTL_OK)
        return rc;
    const char *p[] = { name };
    int added;
    if ((rc = ctl_begin(ctl)) != CTL_OK ||
        (rc = ctl_exec(ctl,
                       "INSERT INTO domains (name) VALUES ($1) "
                       "ON CONFLICT (name) DO NOTHING RETURNING id",
                       1, p, &added)) != CTL_OK)
        return rc;
    if (added != 1) {
        ctl_rollback(ctl);
        return ctl_error("domain %s is already hosted here", name);
    }
    if ((rc = ctl_audit_commit(ctl, "domain add", name)) != CTL_OK)
        return rc;
    if (ctl->json) {
        out_json_ok("domain add", "domain", name);
        fprintf(ctl_out(), "}\n");
    } else {
        fprintf(ctl_out(), "added domain %s\n", name);
    }
    fflush(ctl_out());
    ctl_announce(ctl, "domains");
    return CTL_OK;
}

int cmd_domain_del(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char name[NAME_BUF];
    int rc = name_domain_arg(args[0], name);
    if (rc != CTL_OK)
        return rc;
    const char *p[] = { name };
    char *id;
    if ((rc = ctl_begin(ctl)) != CTL_OK ||
        (rc = ctl_query_value(ctl, "SELECT id FROM domains WHERE name = $1 FOR UPDATE", 1, p,
                              &id)) != CTL_OK)
        return rc;
    if (!id) {
        ctl_rollback(ctl);
        return ctl_error("domain %s is not hosted here", name);
    }
    const char *q[] = { id };
    long users = 0;
    rc = ctl_count(ctl, "SELECT count(*) FROM users WHERE domain_id = $1", 1, q, &users);
    /* Settings carry no foreign key: remove the domain's and its users' by hand. */
    if (rc == CTL_OK)
        rc = ctl_exec(ctl,
                      "DELETE FROM settings WHERE (scope = 'domain' AND scope_id = $1) OR "
                      "(scope = 'user' AND scope_id IN"
                      " (SELECT id FROM users WHERE domain_id = $1))",
                      1, q, NULL);
    if (rc == CTL_OK)
        rc = ctl_exec(ctl, "DELETE FROM domains WHERE id = $1", 1, q, NULL);
    free(id);
    if (rc != CTL_OK)
        return rc;

    char detail[NAME_BUF + 64];
    snprintf(detail, sizeof detail, "%s (%ld user%s)", name, users, users == 1 ? "" : "s");
    if ((rc = ctl_audit_commit(ctl, "domain del", detail)) != CTL_OK)
        return rc;
    if (ctl->json) {
        out_json_ok("domain del", "domain", name);
        fprintf(ctl_out(), ",\"users_deleted\":%ld}\n", users);
    } else {
        fprintf(ctl_out(), "deleted domain %s and its %ld user%s\n", name, users, users == 1 ? "" : "s");
    }
    fflush(ctl_out());
    ctl_announce(ctl, "domains");
    return CTL_OK;
}

int cmd_domain_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *res = ctl_query(ctl,
                              "SELECT d.name, count(u.id), " SQL_UTC("d.created_at")
                              " FROM domains d LEFT JOIN users u ON u.domain_id = d.id"
                              " GROUP BY d.id ORDER BY d.name",
                              0, NULL);
    if (!res)
        return CTL_DB;
    static const out_col_t cols[] = {
        { "name", 0, OUT_STR },
        { "users", 1, OUT_NUM },
        { "created_at", 2, OUT_STR },
    };
    int n = PQntuples(res);
    if (ctl->json) {
        fprintf(ctl_out(), "{\"domains\":");
        out_json_rows(res, cols, sizeof cols / sizeof cols[0]);
        fprintf(ctl_out(), "}\n");
    } else if (n == 0) {
        fprintf(ctl_out(), "no domains (add one with: mailctl domain add NAME)\n");
    } else {
        int w = out_width(res, 0, 6);
        fprintf(ctl_out(), "%-*s  %6s  %s\n", w, "DOMAIN", "USERS", "CREATED");
        for (int i = 0; i < n; i++)
            fprintf(ctl_out(), "%-*s  %6s  %s\n", w, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                   PQgetvalue(res, i, 2));
    }
    PQclear(res);
    return CTL_OK;
}
