/* mailctl admin add|del|list|passwd: the accounts of the web console (webd), separate from
 * mail users. A system admin does everything; a domain admin only what concerns its
 * domains. Only the SCRAM secret of a password is stored, as for mailboxes. */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "auth/scram.h"

#define ADMIN_NAME_MAX 64

/* Lowercases name (ADMIN_NAME_MAX + 1 bytes) from arg and checks it: letters, digits and
 * ". _ @ -", starting with a letter or digit, 1 to 64 characters (the table's CHECK). */
static int admin_name_arg(const char *arg, char name[ADMIN_NAME_MAX + 1])
{
    size_t n = strlen(arg);
    if (n == 0 || n > ADMIN_NAME_MAX)
        return ctl_error("an admin name has 1 to %d characters", ADMIN_NAME_MAX);
    for (size_t i = 0; i <= n; i++) {
        char c = arg[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (c && !alnum && (i == 0 || !strchr("._@-", c)))
            return ctl_error("invalid admin name %s: letters, digits and . _ @ - only, "
                             "starting with a letter or digit",
                             arg);
        name[i] = c;
    }
    return CTL_OK;
}

/* Links the admin id to each domain of the comma-separated list, inside the caller's
 * transaction; an unknown domain is refused (rolled back). */
static int admin_domains_link(ctl_t *ctl, const char *id, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        return ctl_error("out of memory");
    int rc = CTL_OK, count = 0;
    for (char *d = strtok_r(copy, ",", &save); d && rc == CTL_OK; d = strtok_r(NULL, ",", &save)) {
        while (*d == ' ')
            d++;
        if (!*d)
            continue;
        char name[NAME_BUF];
        if ((rc = name_domain_arg(d, name)) != CTL_OK)
            break;
        const char *p[] = { id, name };
        int rows = 0;
        rc = ctl_exec(ctl,
                      "INSERT INTO web_admin_domains (admin_id, domain_id)"
                      " SELECT $1::bigint, id FROM domains WHERE name = $2"
                      " ON CONFLICT DO NOTHING RETURNING domain_id",
                      2, p, &rows);
        if (rc == CTL_OK && rows == 0) {
            const char *q[] = { name };
            long hosted = 0;
            rc = ctl_count(ctl, "SELECT count(*) FROM domains WHERE name = $1", 1, q, &hosted);
            if (rc == CTL_OK && hosted == 0) {
                ctl_rollback(ctl);
                rc = ctl_error("domain %s is not hosted here: nothing changed", name);
            }
        }
        count++;
    }
    free(copy);
    if (rc == CTL_OK && count == 0) {
        ctl_rollback(ctl);
        rc = ctl_error("--domains names no domain: nothing changed");
    }
    return rc;
}

int cmd_admin_add(ctl_t *ctl, char **args, int nargs)
{
    static const opt_spec_t specs[] = {
        { "--role", true }, { "--domains", true }, { "--password-stdin", false },
    };
    const char *v[3] = { 0 };
    char *pos[4];
    int npos = 0;
    int rc = opt_parse(ctl, specs, 3, args, nargs, v, pos, &npos);
    if (rc != CTL_OK)
        return rc;
    if (npos != 1) {
        ctl->usage = true;
        return ctl_error("admin add takes one name");
    }
    char name[ADMIN_NAME_MAX + 1];
    if ((rc = admin_name_arg(pos[0], name)) != CTL_OK)
        return rc;
    const char *role = v[0] ? v[0] : "system";
    if (strcmp(role, "system") != 0 && strcmp(role, "domain") != 0)
        return ctl_error("invalid value for --role: expected system or domain");
    if (strcmp(role, "domain") == 0 && !v[1])
        return ctl_error("a domain admin needs --domains D1[,D2...]");
    if (strcmp(role, "system") == 0 && v[1])
        return ctl_error("--domains only goes with --role domain (a system admin has all)");
    if (v[2])
        ctl->password_stdin = true;

    char secret[SCRAM_SECRET_TEXT_MAX];
    if ((rc = password_secret_new(ctl, secret)) != CTL_OK)
        return rc;
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        goto out;
    const char *p[] = { name, secret, role };
    char *id = NULL;
    rc = ctl_query_value(ctl,
                         "INSERT INTO web_admins (name, secret, role) VALUES ($1, $2, $3)"
                         " ON CONFLICT (name) DO NOTHING RETURNING id",
                         3, p, &id);
    if (rc != CTL_OK)
        goto out;
    if (!id) {
        ctl_rollback(ctl);
        rc = ctl_error("admin %s already exists (change its password with "
                       "`mailctl admin passwd %s`)",
                       name, name);
        goto out;
    }
    if (v[1])
        rc = admin_domains_link(ctl, id, v[1]);
    free(id);
    if (rc != CTL_OK)
        goto out;
    char detail[NAME_BUF];
    snprintf(detail, sizeof detail, "%s role=%s%s%s", name, role, v[1] ? " domains=" : "",
             v[1] ? v[1] : "");
    if ((rc = ctl_audit_commit(ctl, "admin add", detail)) != CTL_OK)
        goto out;
    if (ctl->json) {
        out_json_ok("admin add", "name", name);
        fprintf(ctl_out(), ",\"role\":");
        json_str(ctl_out(), role);
        fprintf(ctl_out(), "}\n");
    } else {
        fprintf(ctl_out(), "added %s admin %s\n", role, name);
    }
out:
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
}

int cmd_admin_passwd(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char name[ADMIN_NAME_MAX + 1];
    int rc = admin_name_arg(args[0], name);
    if (rc != CTL_OK)
        return rc;
    char secret[SCRAM_SECRET_TEXT_MAX];
    if ((rc = password_secret_new(ctl, secret)) != CTL_OK)
        return rc;
    const char *p[] = { name, secret };
    int rows = 0;
    if ((rc = ctl_begin(ctl)) != CTL_OK ||
        (rc = ctl_exec(ctl, "UPDATE web_admins SET secret = $2 WHERE name = $1 RETURNING id", 2,
                       p, &rows)) != CTL_OK)
        goto out;
    if (rows == 0) {
        ctl_rollback(ctl);
        rc = ctl_error("no admin %s: nothing changed", name);
        goto out;
    }
    /* A new password ends the admin's sessions. */
    if ((rc = ctl_exec(ctl,
                       "DELETE FROM web_sessions WHERE admin_id ="
                       " (SELECT id FROM web_admins WHERE name = $1)",
                       1, p, NULL)) != CTL_OK ||
        (rc = ctl_audit_commit(ctl, "admin passwd", name)) != CTL_OK)
        goto out;
    if (ctl->json) {
        out_json_ok("admin passwd", "name", name);
        fprintf(ctl_out(), "}\n");
    } else {
        fprintf(ctl_out(), "new password for admin %s\n", name);
    }
out:
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
}

int cmd_admin_del(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char name[ADMIN_NAME_MAX + 1];
    int rc = admin_name_arg(args[0], name);
    if (rc != CTL_OK)
        return rc;
    const char *p[] = { name };
    int rows = 0;
    if ((rc = ctl_begin(ctl)) != CTL_OK ||
        (rc = ctl_exec(ctl, "DELETE FROM web_admins WHERE name = $1 RETURNING id", 1, p,
                       &rows)) != CTL_OK)
        return rc;
    if (rows == 0) {
        ctl_rollback(ctl);
        return ctl_error("no admin %s: nothing changed", name);
    }
    if ((rc = ctl_audit_commit(ctl, "admin del", name)) != CTL_OK)
        return rc;
    if (ctl->json) {
        out_json_ok("admin del", "name", name);
        fprintf(ctl_out(), "}\n");
    } else {
        fprintf(ctl_out(), "deleted admin %s\n", name);
    }
    return CTL_OK;
}

int cmd_admin_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *res = ctl_query(ctl,
                              "SELECT a.name, a.role,"
                              " coalesce(string_agg(d.name, ',' ORDER BY d.name), ''),"
                              " " SQL_UTC("a.created_at")
                              " FROM web_admins a"
                              " LEFT JOIN web_admin_domains ad ON ad.admin_id = a.id"
                              " LEFT JOIN domains d ON d.id = ad.domain_id"
                              " GROUP BY a.id ORDER BY a.name",
                              0, NULL);
    if (!res)
        return CTL_DB;
    if (ctl->json) {
        fprintf(ctl_out(), "[");
        for (int i = 0; i < PQntuples(res); i++) {
            fprintf(ctl_out(), "%s{\"name\":", i ? "," : "");
            json_str(ctl_out(), PQgetvalue(res, i, 0));
            fprintf(ctl_out(), ",\"role\":");
            json_str(ctl_out(), PQgetvalue(res, i, 1));
            fprintf(ctl_out(), ",\"domains\":[");
            char *list = strdup(PQgetvalue(res, i, 2)), *save = NULL;
            int n = 0;
            for (char *d = list ? strtok_r(list, ",", &save) : NULL; d;
                 d = strtok_r(NULL, ",", &save)) {
                fprintf(ctl_out(), "%s", n++ ? "," : "");
                json_str(ctl_out(), d);
            }
            free(list);
            fprintf(ctl_out(), "],\"created_at\":");
            json_str(ctl_out(), PQgetvalue(res, i, 3));
            fprintf(ctl_out(), "}");
        }
        fprintf(ctl_out(), "]\n");
    } else if (PQntuples(res) == 0) {
        fprintf(ctl_out(), "no web admins (add one with `mailctl admin add NAME`)\n");
    } else {
        int w = out_width(res, 0, 4);
        fprintf(ctl_out(), "%-*s  %-6s  %s\n", w, "NAME", "ROLE", "DOMAINS");
        for (int i = 0; i < PQntuples(res); i++)
            fprintf(ctl_out(), "%-*s  %-6s  %s\n", w, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                    *PQgetvalue(res, i, 2) ? PQgetvalue(res, i, 2) : "(all)");
    }
    PQclear(res);
    return CTL_OK;
}
