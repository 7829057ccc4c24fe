/* mailctl: settings at the system, domain and user levels (table settings, scopes
 * 'system' scope_id 0, 'domain' domains.id, 'user' users.id). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "base/settings.h"

#define TIER_VALUE_MAX 256

int tier_scope_resolve(ctl_t *ctl, bool system, const char *domain, const char *user,
                       tier_scope_t *scope)
{
    memset(scope, 0, sizeof *scope);
    int given = (system ? 1 : 0) + (domain ? 1 : 0) + (user ? 1 : 0);
    if (given != 1) {
        ctl->usage = true;
        return ctl_error(given ? "give only one of --system, --domain and --user"
                               : "say which level: --system, --domain D or --user U");
    }
    if (system) {
        scope->scope = "system";
        snprintf(scope->id, sizeof scope->id, "0");
        return CTL_OK;
    }
    if (domain) {
        scope->scope = "domain";
        int rc = name_domain_arg(domain, scope->name);
        if (rc != CTL_OK)
            return rc;
        const char *p[] = { scope->name };
        PGresult *res = ctl_query(ctl, "SELECT id FROM domains WHERE name = $1", 1, p);
        if (!res)
            return CTL_DB;
        int found = PQntuples(res) == 1;
        if (found)
            snprintf(scope->id, sizeof scope->id, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        if (!found)
            return ctl_error("domain %s is not hosted here (see mailctl domain list)",
                             scope->name);
        return CTL_OK;
    }
    scope->scope = "user";
    const char *dom;
    int rc = name_address_arg(user, scope->name, &dom);
    if (rc != CTL_OK)
        return rc;
    const char *p[] = { scope->name };
    PGresult *res = ctl_query(ctl,
                              "SELECT u.id, d.id, d.name FROM users u"
                              " JOIN domains d ON d.id = u.domain_id WHERE u.address = $1",
                              1, p);
    if (!res)
        return CTL_DB;
    int found = PQntuples(res) == 1;
    if (found) {
        snprintf(scope->id, sizeof scope->id, "%s", PQgetvalue(res, 0, 0));
        snprintf(scope->domain_id, sizeof scope->domain_id, "%s", PQgetvalue(res, 0, 1));
        snprintf(scope->domain, sizeof scope->domain, "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    if (!found)
        return ctl_error("no user %s (see mailctl user list)", scope->name);
    return CTL_OK;
}

const char *tier_scope_label(const tier_scope_t *scope, char *buf, size_t buf_len)
{
    if (strcmp(scope->scope, "system") == 0)
        snprintf(buf, buf_len, "system");
    else
        snprintf(buf, buf_len, "%s %s", scope->scope, scope->name);
    return buf;
}

/* The value stored for key at scope (malloc'd) in *value_r, or NULL. */
static int tier_get(ctl_t *ctl, const tier_scope_t *scope, const char *key, char **value_r)
{
    const char *p[] = { scope->scope, scope->id, key };
    return ctl_query_value(ctl,
                           "SELECT value FROM settings"
                           " WHERE scope = $1 AND scope_id = $2::bigint AND key = $3"
                           " FOR UPDATE",
                           3, p, value_r);
}

int tier_put(ctl_t *ctl, const tier_scope_t *scope, const char *key, const char *value,
             char **old_r)
{
    int rc = tier_get(ctl, scope, key, old_r);
    if (rc != CTL_OK)
        return rc;
    const char *p[] = { scope->scope, scope->id, key, value };
    rc = ctl_exec(ctl,
                  "INSERT INTO settings (scope, scope_id, key, value)"
                  " VALUES ($1, $2::bigint, $3, $4)"
                  " ON CONFLICT (scope, scope_id, key)"
                  " DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                  4, p, NULL);
    if (rc != CTL_OK) {
        free(*old_r);
        *old_r = NULL;
    }
    return rc;
}

int tier_del(ctl_t *ctl, const tier_scope_t *scope, const char *key, char **old_r)
{
    const char *p[] = { scope->scope, scope->id, key };
    return ctl_query_value(ctl,
                           "DELETE FROM settings"
                           " WHERE scope = $1 AND scope_id = $2::bigint AND key = $3"
                           " RETURNING value",
                           3, p, old_r);
}

bool tier_value_check(const char *option, const char *key, const char *text, char *buf,
                      size_t buf_len)
{
    const setting_def_t *def = settings_find(key);
    if (!def) {
        ctl_error("internal error: no setting %s", key);
        return false;
    }
    if (strlen(text) >= buf_len || strlen(text) >= TIER_VALUE_MAX) {
        ctl_error("the value of %s is too long", option);
        return false;
    }
    strcpy(buf, text);
    if (def->kind != SETTING_INT)
        for (char *c = buf; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
    if (!settings_valid(def, buf)) {
        char expected[64];
        ctl_error("invalid value '%s' for %s: expected %s", text, option,
                  settings_expected(def, expected, sizeof expected));
        return false;
    }
    return true;
}

/* One line per change, for people. */
static void tier_print_change(const tier_change_t *c, const char *label)
{
    if (c->value && c->changed)
        fprintf(ctl_out(), "%s: %s = %s (was %s)\n", label, c->key, c->value,
               c->old ? c->old : "not set at this level");
    else if (c->value)
        fprintf(ctl_out(), "%s: %s = %s (already so, nothing changed)\n", label, c->key, c->value);
    else if (c->changed)
        fprintf(ctl_out(), "%s: %s unset (was %s); it is inherited again\n", label, c->key, c->old);
    else
        fprintf(ctl_out(), "%s: %s was not set at this level (nothing changed)\n", label, c->key);
}

int tier_apply(ctl_t *ctl, const tier_scope_t *scope, const char *action,
               tier_change_t *changes, size_t n, const char *what)
{
    char label[NAME_BUF + 16];
    tier_scope_label(scope, label, sizeof label);
    int rc = ctl_begin(ctl);
    size_t nchanged = 0;
    for (size_t i = 0; rc == CTL_OK && i < n; i++) {
        tier_change_t *c = &changes[i];
        rc = c->value ? tier_put(ctl, scope, c->key, c->value, &c->old)
                      : tier_del(ctl, scope, c->key, &c->old);
        if (rc != CTL_OK)
            break;
        c->changed = c->value ? !c->old || strcmp(c->old, c->value) != 0 : c->old != NULL;
        if (!c->changed)
            continue;
        nchanged++;
        char detail[2 * NAME_BUF + 2 * TIER_VALUE_MAX];
        if (c->value)
            snprintf(detail, sizeof detail, "%s: %s=%s (was %s)", label, c->key, c->value,
                     c->old ? c->old : "unset");
        else
            snprintf(detail, sizeof detail, "%s: %s unset (was %s)", label, c->key, c->old);
        rc = ctl_audit(ctl, action, detail);
    }
    if (rc == CTL_OK) {
        if (nchanged)
            rc = ctl_commit(ctl);
        else
            ctl_rollback(ctl);
    }
    if (rc != CTL_OK)
        goto out;
    if (ctl->json) {
        out_json_ok(action, "scope", scope->scope);
        fprintf(ctl_out(), ",\"target\":");
        json_str(ctl_out(), scope->name[0] ? scope->name : NULL);
        fprintf(ctl_out(), ",\"changed\":%s,\"changes\":[", nchanged ? "true" : "false");
        for (size_t i = 0; i < n; i++) {
            fprintf(ctl_out(), "%s{\"key\":", i ? "," : "");
            json_str(ctl_out(), changes[i].key);
            fprintf(ctl_out(), ",\"value\":");
            json_str(ctl_out(), changes[i].value);
            fprintf(ctl_out(), ",\"previous\":");
            json_str(ctl_out(), changes[i].old);
            fprintf(ctl_out(), ",\"changed\":%s}", changes[i].changed ? "true" : "false");
        }
        fprintf(ctl_out(), "]}\n");
    } else {
        for (size_t i = 0; i < n; i++)
            tier_print_change(&changes[i], label);
    }
    fflush(ctl_out());
    if (nchanged)
        ctl_announce(ctl, what);
out:
    for (size_t i = 0; i < n; i++) {
        free(changes[i].old);
        changes[i].old = NULL;
    }
    return rc;
}

void tier_resolve(const setting_def_t *def, const char *const *stored,
                  const char *const *levels, size_t nlevels, tier_value_t *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < nlevels; i++) {
        if (!stored[i])
            continue;
        if (!settings_valid(def, stored[i])) {
            if (!out->invalid)
                out->invalid = levels[i];
            continue;
        }
        out->value = stored[i];
        out->source = levels[i];
        return;
    }
    out->value = def->default_value;
    out->source = "default";
}
