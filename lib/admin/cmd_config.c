/* mailctl config set|unset|show: system-scope settings, validated against lib/settings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "base/settings.h"

#define SETTING_VALUE_MAX 256

int setting_get(ctl_t *ctl, const char *key, char **value_r)
{
    const char *p[] = { key };
    return ctl_query_value(ctl,
                           "SELECT value FROM settings"
                           " WHERE scope = 'system' AND scope_id = 0 AND key = $1",
                           1, p, value_r);
}

int setting_put(ctl_t *ctl, const char *key, const char *value)
{
    const char *p[] = { key, value };
    return ctl_exec(ctl,
                    "INSERT INTO settings (scope, scope_id, key, value)"
                    " VALUES ('system', 0, $1, $2)"
                    " ON CONFLICT (scope, scope_id, key)"
                    " DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                    2, p, NULL);
}

void relay_open_warning(void)
{
    fprintf(ctl_err(),
            "mailctl: WARNING: relay.mode is now 'anyone': this server is an OPEN RELAY.\n"
            "mailctl: WARNING: anybody on the Internet can send mail through it; spammers find\n"
            "mailctl: WARNING: open relays within hours and block lists follow soon after.\n"
            "mailctl: WARNING: undo with: mailctl relay mode none   (or: relay mode select)\n");
}

#define SETTING_KEY_MAX 64

/* A value for people: the empty value (notifier.from) says so. */
static const char *shown(const char *value)
{
    return value && *value ? value : "(empty)";
}

/* The known setting for key, or NULL after an error naming the known keys. The key as it
 * is stored goes to stored_key: the definition's key, or a per-service harvesting key
 * (harvest.smtp.block, whose definition is harvest.block's). */
static const setting_def_t *setting_arg(const char *key, char stored_key[SETTING_KEY_MAX])
{
    const setting_def_t *def = strlen(key) < SETTING_KEY_MAX ? settings_find(key) : NULL;
    if (def) {
        snprintf(stored_key, SETTING_KEY_MAX, "%s", key);
        return def;
    }
    fprintf(ctl_err(), "mailctl: unknown setting '%s'; the known settings are:\n", key);
    for (const setting_def_t *d = settings_table; d->key; d++)
        fprintf(ctl_err(), "  %s\n", d->key);
    fprintf(ctl_err(), "  harvest.<smtp|pop3|imap|web>.<enabled|max_failures|interval|block>\n");
    return NULL;
}

int cmd_config_set(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char key[SETTING_KEY_MAX];
    const setting_def_t *def = setting_arg(args[0], key);
    if (!def)
        return CTL_USAGE;
    char value[SETTING_VALUE_MAX];
    if (strlen(args[1]) >= sizeof value)
        return ctl_error("the value is too long");
    strcpy(value, args[1]);
    if (def->kind != SETTING_INT)
        for (char *c = value; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
    if (!settings_valid(def, value)) {
        char expected[64];
        return ctl_error("invalid value for %s: expected %s", key,
                         settings_expected(def, expected, sizeof expected));
    }

    int rc = ctl_begin(ctl);
    char *old = NULL;
    if (rc == CTL_OK)
        rc = setting_get(ctl, key, &old);
    if (rc == CTL_OK)
        rc = setting_put(ctl, key, value);
    char detail[SETTING_VALUE_MAX + 64];
    snprintf(detail, sizeof detail, "%s=%s", key, value);
    if (rc == CTL_OK)
        rc = ctl_audit_commit(ctl, "config set", detail);
    if (rc != CTL_OK) {
        free(old);
        return rc;
    }
    const char *was = old ? old : def->default_value;
    if (ctl->json) {
        out_json_ok("config set", "key", key);
        fprintf(ctl_out(), ",\"value\":");
        json_str(ctl_out(), value);
        fprintf(ctl_out(), ",\"previous\":");
        json_str(ctl_out(), was);
        fprintf(ctl_out(), "}\n");
    } else {
        if (!old && strcmp(key, def->key) != 0)
            fprintf(ctl_out(), "%s = %s (was not set: inherited from %s)\n", key, shown(value), def->key);
        else
            fprintf(ctl_out(), "%s = %s (was %s%s)\n", key, shown(value), shown(was),
                   old ? "" : ", the default");
    }
    fflush(ctl_out());
    free(old);
    if (strcmp(def->key, "relay.mode") == 0 && strcmp(value, "anyone") == 0)
        relay_open_warning();
    ctl_announce(ctl, "settings");
    return CTL_OK;
}

int cmd_config_unset(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char key[SETTING_KEY_MAX];
    const setting_def_t *def = setting_arg(args[0], key);
    if (!def)
        return CTL_USAGE;
    const char *p[] = { key };
    int removed;
    int rc = ctl_begin(ctl);
    if (rc == CTL_OK)
        rc = ctl_exec(ctl,
                      "DELETE FROM settings WHERE scope = 'system' AND scope_id = 0"
                      " AND key = $1 RETURNING value",
                      1, p, &removed);
    if (rc != CTL_OK)
        return rc;
    if (removed == 0) {
        ctl_rollback(ctl);
        if (ctl->json) {
            out_json_ok("config unset", "key", key);
            fprintf(ctl_out(), ",\"changed\":false}\n");
        } else if (strcmp(key, def->key) != 0) {
            fprintf(ctl_out(), "%s was not set: it inherits %s (nothing changed)\n", key, def->key);
        } else {
            fprintf(ctl_out(), "%s was not set: it has its default, %s (nothing changed)\n", key,
                   shown(def->default_value));
        }
        return CTL_OK;
    }
    if ((rc = ctl_audit_commit(ctl, "config unset", key)) != CTL_OK)
        return rc;
    bool inherits = strcmp(key, def->key) != 0;
    if (ctl->json) {
        out_json_ok("config unset", "key", key);
        fprintf(ctl_out(), ",\"changed\":true,\"value\":");
        json_str(ctl_out(), inherits ? NULL : def->default_value);
        if (inherits) {
            fprintf(ctl_out(), ",\"inherits\":");
            json_str(ctl_out(), def->key);
        }
        fprintf(ctl_out(), "}\n");
    } else if (inherits) {
        fprintf(ctl_out(), "%s unset: it inherits %s again\n", key, def->key);
    } else {
        fprintf(ctl_out(), "%s unset: back to its default, %s\n", key, shown(def->default_value));
    }
    fflush(ctl_out());
    if (strcmp(def->key, "relay.mode") == 0 && strcmp(def->default_value, "anyone") == 0)
        relay_open_warning();
    ctl_announce(ctl, "settings");
    return CTL_OK;
}

int cmd_config_show(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *res = ctl_query(ctl,
                              "SELECT key, value FROM settings"
                              " WHERE scope = 'system' AND scope_id = 0",
                              0, NULL);
    if (!res)
        return CTL_DB;
    int rows = PQntuples(res);
    /* Column widths over the known keys only (other rows, like internal.secret, are
     * never shown). */
    int wk = 3, wv = 5;
    for (int i = 0; i < rows; i++) {
        char base[SETTING_KEY_MAX];
        if (settings_fallback_key(PQgetvalue(res, i, 0), base, sizeof base) &&
            PQgetlength(res, i, 0) > wk)
            wk = PQgetlength(res, i, 0);
    }
    for (const setting_def_t *d = settings_table; d->key; d++) {
        if ((int)strlen(d->key) > wk)
            wk = (int)strlen(d->key);
        if ((int)strlen(d->default_value) > wv)
            wv = (int)strlen(d->default_value);
        for (int i = 0; i < rows; i++)
            if (strcmp(PQgetvalue(res, i, 0), d->key) == 0 &&
                settings_valid(d, PQgetvalue(res, i, 1)) && PQgetlength(res, i, 1) > wv)
                wv = PQgetlength(res, i, 1);
    }
    if (ctl->json)
        fprintf(ctl_out(), "{\"settings\":[");
    else
        fprintf(ctl_out(), "%-*s  %-*s  %s\n", wk, "KEY", wv, "VALUE", "SOURCE");
    bool first = true;
    for (const setting_def_t *d = settings_table; d->key; d++) {
        const char *stored = NULL;
        for (int i = 0; i < rows; i++)
            if (strcmp(PQgetvalue(res, i, 0), d->key) == 0)
                stored = PQgetvalue(res, i, 1);
        bool valid = !stored || settings_valid(d, stored);
        const char *effective = stored && valid ? stored : d->default_value;
        if (ctl->json) {
            fprintf(ctl_out(), "%s{\"key\":", first ? "" : ",");
            json_str(ctl_out(), d->key);
            fprintf(ctl_out(), ",\"value\":");
            json_str(ctl_out(), effective);
            fprintf(ctl_out(), ",\"is_default\":%s,\"default\":", stored && valid ? "false" : "true");
            json_str(ctl_out(), d->default_value);
            if (!valid) {
                fprintf(ctl_out(), ",\"invalid_stored_value\":");
                json_str(ctl_out(), stored);
            }
            fprintf(ctl_out(), "}");
        } else if (!stored) {
            fprintf(ctl_out(), "%-*s  %-*s  default\n", wk, d->key, wv, shown(effective));
        } else if (!valid) {
            fprintf(ctl_out(), "%-*s  %-*s  default (the stored value '%s' is invalid)\n", wk, d->key, wv,
                   shown(effective), stored);
        } else {
            fprintf(ctl_out(), "%-*s  %-*s  set (default %s)\n", wk, d->key, wv, shown(effective),
                   shown(d->default_value));
        }
        first = false;
    }
    /* Per-service harvesting values, where set. */
    for (int i = 0; i < rows; i++) {
        char base[SETTING_KEY_MAX];
        const char *key = PQgetvalue(res, i, 0), *stored = PQgetvalue(res, i, 1);
        if (!settings_fallback_key(key, base, sizeof base))
            continue;
        const setting_def_t *d = settings_find(key);
        bool valid = settings_valid(d, stored);
        if (ctl->json) {
            fprintf(ctl_out(), "%s{\"key\":", first ? "" : ",");
            json_str(ctl_out(), key);
            fprintf(ctl_out(), ",\"value\":");
            json_str(ctl_out(), valid ? stored : NULL);
            fprintf(ctl_out(), ",\"is_default\":false,\"inherits\":");
            json_str(ctl_out(), base);
            if (!valid) {
                fprintf(ctl_out(), ",\"invalid_stored_value\":");
                json_str(ctl_out(), stored);
            }
            fprintf(ctl_out(), "}");
        } else if (!valid) {
            fprintf(ctl_out(), "%-*s  %-*s  inherited from %s (the stored value '%s' is invalid)\n", wk,
                   key, wv, "-", base, stored);
        } else {
            fprintf(ctl_out(), "%-*s  %-*s  set (otherwise %s)\n", wk, key, wv, stored, base);
        }
        first = false;
    }
    if (ctl->json)
        fprintf(ctl_out(), "]}\n");
    PQclear(res);
    return CTL_OK;
}
