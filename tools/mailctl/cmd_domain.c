/* mailctl domain add|del|list, and migrate. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailctl.h"
#include "migrate.h"

int cmd_migrate(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    char err[512];
    int applied = migrate_apply(ctl->pg, err, sizeof err);
    if (applied < 0) {
        fprintf(stderr, "mailctl: migration failed: %s\n", err);
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
            rc = ctl_audit(ctl, "migrate", detail);
        if (rc == CTL_OK)
            rc = ctl_commit(ctl);
        if (rc != CTL_OK)
            return rc;
    }
    if (ctl->json)
        printf("{\"applied\":%d,\"version\":%d}\n", applied, version);
    else if (applied > 0)
        printf("applied %d migration%s; the schema is at version %d\n", applied,
               applied == 1 ? "" : "s", version);
    else
        printf("the schema is up to date (version %d)\n", version);
    return CTL_OK;
}

/* Copies and checks a domain name argument into name (NAME_BUF bytes). */
static int domain_arg(const char *arg, char *name)
{
    char why[160];
    if (!name_copy(name, arg, "domain name"))
        return CTL_USAGE;
    if (!name_domain_check(name, why, sizeof why))
        return ctl_error("invalid domain name: %s", why);
    return CTL_OK;
}

int cmd_domain_add(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char name[NAME_BUF];
    int rc = domain_arg(args[0], name);
    if (rc != CTL_OK)
        return rc;
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        return rc;
    const char *p[] = { name };
    PGresult *res = ctl_query(ctl,
                              "INSERT INTO domains (name) VALUES ($1) "
                              "ON CONFLICT (name) DO NOTHING RETURNING id",
                              1, p);
    if (!res)
        return CTL_DB;
    bool added = PQntuples(res) == 1;
    PQclear(res);
    if (!added) {
        ctl_rollback(ctl);
        return ctl_error("domain %s is already hosted here", name);
    }
    if ((rc = ctl_audit(ctl, "domain add", name)) != CTL_OK || (rc = ctl_commit(ctl)) != CTL_OK)
        return rc;
    if (ctl->json) {
        printf("{\"ok\":true,\"action\":\"domain add\",\"domain\":");
        json_str(stdout, name);
        printf("}\n");
    } else {
        printf("added domain %s\n", name);
    }
    fflush(stdout);
    ctl_announce(ctl, "domains");
    return CTL_OK;
}

int cmd_domain_del(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char name[NAME_BUF];
    int rc = domain_arg(args[0], name);
    if (rc != CTL_OK)
        return rc;
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        return rc;
    const char *p[] = { name };
    PGresult *res = ctl_query(ctl, "SELECT id FROM domains WHERE name = $1 FOR UPDATE", 1, p);
    if (!res)
        return CTL_DB;
    if (PQntuples(res) != 1) {
        PQclear(res);
        ctl_rollback(ctl);
        return ctl_error("domain %s is not hosted here", name);
    }
    char id[32];
    snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);

    const char *q[] = { id };
    res = ctl_query(ctl, "SELECT count(*) FROM users WHERE domain_id = $1", 1, q);
    if (!res)
        return CTL_DB;
    long users = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    /* Settings carry no foreign key: remove the domain's and its users' by hand. */
    res = ctl_query(ctl,
                    "DELETE FROM settings WHERE (scope = 'domain' AND scope_id = $1) OR "
                    "(scope = 'user' AND scope_id IN (SELECT id FROM users WHERE domain_id = $1))",
                    1, q);
    if (!res)
        return CTL_DB;
    PQclear(res);
    res = ctl_query(ctl, "DELETE FROM domains WHERE id = $1", 1, q);
    if (!res)
        return CTL_DB;
    PQclear(res);

    char detail[NAME_BUF + 64];
    snprintf(detail, sizeof detail, "%s (%ld user%s)", name, users, users == 1 ? "" : "s");
    if ((rc = ctl_audit(ctl, "domain del", detail)) != CTL_OK || (rc = ctl_commit(ctl)) != CTL_OK)
        return rc;
    if (ctl->json) {
        printf("{\"ok\":true,\"action\":\"domain del\",\"domain\":");
        json_str(stdout, name);
        printf(",\"users_deleted\":%ld}\n", users);
    } else {
        printf("deleted domain %s and its %ld user%s\n", name, users, users == 1 ? "" : "s");
    }
    fflush(stdout);
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
    int n = PQntuples(res);
    if (ctl->json) {
        printf("{\"domains\":[");
        for (int i = 0; i < n; i++) {
            printf("%s{\"name\":", i ? "," : "");
            json_str(stdout, PQgetvalue(res, i, 0));
            printf(",\"users\":%s,\"created_at\":", PQgetvalue(res, i, 1));
            json_str(stdout, PQgetvalue(res, i, 2));
            printf("}");
        }
        printf("]}\n");
    } else if (n == 0) {
        printf("no domains (add one with: mailctl domain add NAME)\n");
    } else {
        int w = out_width(res, 0, 6);
        printf("%-*s  %6s  %s\n", w, "DOMAIN", "USERS", "CREATED");
        for (int i = 0; i < n; i++)
            printf("%-*s  %6s  %s\n", w, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                   PQgetvalue(res, i, 2));
    }
    PQclear(res);
    return CTL_OK;
}
