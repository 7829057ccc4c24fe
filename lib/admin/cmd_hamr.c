/* mailctl hamr set|unset|show|reset|status|enable: the Hacked Account Mail Regulator.
 * Its settings are hamr.* at three levels, user over domain over system, each field
 * inherited on its own; the limiter reads them, mailctl announces every change. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "base/settings.h"

#define HAMR_PREFIX "hamr."
#define HAMR_VALUE_MAX 64

typedef struct hamr_field {
    const char *option; /* --max */
    const char *key;    /* hamr.max_messages */
} hamr_field_t;

static const hamr_field_t hamr_fields[] = {
    { "--enabled", "hamr.enabled" },
    { "--max", "hamr.max_messages" },
    { "--interval", "hamr.interval" },
    { "--action", "hamr.action" },
    { "--alert", "hamr.alert" },
    { "--max-recipients", "hamr.max_recipients" },
    { "--alert-owner", "hamr.alert_owner" },
};
#define HAMR_NFIELDS (sizeof hamr_fields / sizeof hamr_fields[0])

/* The options of set/unset: the level, then the fields (value or flag), then --all. */
enum { OPT_SYSTEM, OPT_DOMAIN, OPT_USER, OPT_FIELDS };
#define HAMR_NOPTS (OPT_FIELDS + HAMR_NFIELDS + 1)

static void hamr_specs(opt_spec_t *specs, bool field_values, bool all)
{
    specs[OPT_SYSTEM] = (opt_spec_t){ "--system", false };
    specs[OPT_DOMAIN] = (opt_spec_t){ "--domain", true };
    specs[OPT_USER] = (opt_spec_t){ "--user", true };
    for (size_t i = 0; i < HAMR_NFIELDS; i++)
        specs[OPT_FIELDS + i] = (opt_spec_t){ hamr_fields[i].option, field_values };
    if (all)
        specs[OPT_FIELDS + HAMR_NFIELDS] = (opt_spec_t){ "--all", false };
}

/* Parses the options; only the level options when nfields is 0. Positional arguments are
 * refused. */
static int hamr_options(ctl_t *ctl, char **args, int nargs, size_t nspecs,
                        const opt_spec_t *specs, const char **values)
{
    char **pos = calloc((size_t)nargs + 1, sizeof *pos);
    if (!pos)
        return CTL_DB;
    int npos = 0;
    int rc = opt_parse(ctl, specs, nspecs, args, nargs, values, pos, &npos);
    if (rc == CTL_OK && npos > 0) {
        ctl->usage = true;
        rc = ctl_error("unexpected argument '%s'", pos[0]);
    }
    free(pos);
    return rc;
}

static int hamr_level(ctl_t *ctl, const char **values, tier_scope_t *scope)
{
    return tier_scope_resolve(ctl, values[OPT_SYSTEM] != NULL, values[OPT_DOMAIN],
                              values[OPT_USER], scope);
}

/* The level of show and reset, which take only the level options. */
static int hamr_level_only(ctl_t *ctl, char **args, int nargs, tier_scope_t *scope)
{
    opt_spec_t specs[HAMR_NOPTS];
    const char *values[HAMR_NOPTS];
    hamr_specs(specs, true, false);
    int rc = hamr_options(ctl, args, nargs, OPT_FIELDS, specs, values);
    return rc == CTL_OK ? hamr_level(ctl, values, scope) : rc;
}

int cmd_hamr_set(ctl_t *ctl, char **args, int nargs)
{
    opt_spec_t specs[HAMR_NOPTS];
    const char *values[HAMR_NOPTS];
    hamr_specs(specs, true, false);
    int rc = hamr_options(ctl, args, nargs, HAMR_NOPTS - 1, specs, values);
    if (rc != CTL_OK)
        return rc;
    tier_change_t changes[HAMR_NFIELDS];
    char canon[HAMR_NFIELDS][HAMR_VALUE_MAX];
    size_t n = 0;
    for (size_t i = 0; i < HAMR_NFIELDS; i++) {
        const char *v = values[OPT_FIELDS + i];
        if (!v)
            continue;
        if (!tier_value_check(hamr_fields[i].option, hamr_fields[i].key, v, canon[n],
                              sizeof canon[n]))
            return CTL_USAGE;
        changes[n] = (tier_change_t){ hamr_fields[i].key, canon[n], NULL, false };
        n++;
    }
    if (n == 0) {
        ctl->usage = true;
        return ctl_error("nothing to set: give at least one of --enabled, --max, --interval, "
                         "--action, --alert, --max-recipients, --alert-owner");
    }
    tier_scope_t scope;
    if ((rc = hamr_level(ctl, values, &scope)) != CTL_OK)
        return rc;
    return tier_apply(ctl, &scope, "hamr set", changes, n, "hamr");
}

int cmd_hamr_unset(ctl_t *ctl, char **args, int nargs)
{
    opt_spec_t specs[HAMR_NOPTS];
    const char *values[HAMR_NOPTS];
    hamr_specs(specs, false, true);
    int rc = hamr_options(ctl, args, nargs, HAMR_NOPTS, specs, values);
    if (rc != CTL_OK)
        return rc;
    bool all = values[OPT_FIELDS + HAMR_NFIELDS] != NULL;
    tier_change_t changes[HAMR_NFIELDS];
    size_t n = 0;
    for (size_t i = 0; i < HAMR_NFIELDS; i++) {
        if (all && values[OPT_FIELDS + i]) {
            ctl->usage = true;
            return ctl_error("--all already names every field; drop %s",
                             hamr_fields[i].option);
        }
        if (all || values[OPT_FIELDS + i])
            changes[n++] = (tier_change_t){ hamr_fields[i].key, NULL, NULL, false };
    }
    if (n == 0) {
        ctl->usage = true;
        return ctl_error("nothing to unset: give the fields (--enabled, --max, --interval, "
                         "--action, --alert, --max-recipients, --alert-owner) or --all");
    }
    tier_scope_t scope;
    if ((rc = hamr_level(ctl, values, &scope)) != CTL_OK)
        return rc;
    return tier_apply(ctl, &scope, "hamr unset", changes, n, "hamr");
}

/* ---- show -------------------------------------------------------------------------- */

/* The levels, highest precedence first. */
enum { LVL_USER, LVL_DOMAIN, LVL_SYSTEM, LVL_N };
static const char *const level_names[LVL_N] = { "user", "domain", "system" };

int cmd_hamr_show(ctl_t *ctl, char **args, int nargs)
{
    tier_scope_t scope;
    int rc = hamr_level_only(ctl, args, nargs, &scope);
    if (rc != CTL_OK)
        return rc;
    bool is_user = strcmp(scope.scope, "user") == 0;
    bool is_domain = strcmp(scope.scope, "domain") == 0;
    const char *user_id = is_user ? scope.id : "-1";
    const char *domain_id = is_user ? scope.domain_id : is_domain ? scope.id : "-1";
    const char *p[] = { user_id, domain_id };
    PGresult *res = ctl_query(ctl,
                              "SELECT scope, key, value FROM settings"
                              " WHERE key LIKE 'hamr.%'"
                              " AND ((scope = 'system' AND scope_id = 0)"
                              " OR (scope = 'domain' AND scope_id = $2::bigint)"
                              " OR (scope = 'user' AND scope_id = $1::bigint))",
                              2, p);
    if (!res)
        return CTL_DB;
    PGresult *dis = NULL;
    if (is_user) {
        const char *q[] = { scope.id };
        dis = ctl_query(ctl,
                        "SELECT " SQL_UTC("since") ", reason FROM send_disabled"
                        " WHERE user_id = $1::bigint",
                        1, q);
        if (!dis) {
            PQclear(res);
            return CTL_DB;
        }
    }
    /* The first level that applies to this scope. */
    int first = is_user ? LVL_USER : is_domain ? LVL_DOMAIN : LVL_SYSTEM;
    int rows = PQntuples(res);
    if (ctl->json) {
        fprintf(ctl_out(), "{\"scope\":");
        json_str(ctl_out(), scope.scope);
        fprintf(ctl_out(), ",\"target\":");
        json_str(ctl_out(), scope.name[0] ? scope.name : NULL);
        if (is_user) {
            fprintf(ctl_out(), ",\"domain\":");
            json_str(ctl_out(), scope.domain);
            if (PQntuples(dis) == 1) {
                fprintf(ctl_out(), ",\"send_disabled\":{\"since\":");
                json_str(ctl_out(), PQgetvalue(dis, 0, 0));
                fprintf(ctl_out(), ",\"reason\":");
                json_str(ctl_out(), PQgetvalue(dis, 0, 1));
                fprintf(ctl_out(), "}");
            } else {
                fprintf(ctl_out(), ",\"send_disabled\":null");
            }
        }
        fprintf(ctl_out(), ",\"settings\":[");
    } else {
        char label[NAME_BUF + 16];
        fprintf(ctl_out(), "HAMR settings for %s%s%s%s\n", tier_scope_label(&scope, label, sizeof label),
               is_user ? " (domain " : "", is_user ? scope.domain : "", is_user ? ")" : "");
        fprintf(ctl_out(), "%-16s  %-9s  %-7s", "OPTION", "VALUE", "FROM");
        for (int l = first; l < LVL_N; l++) {
            char up[16];
            snprintf(up, sizeof up, "%s", level_names[l]);
            for (char *c = up; *c; c++)
                *c = (char)(*c - 'a' + 'A');
            fprintf(ctl_out(), "  %-9s", up);
        }
        fprintf(ctl_out(), "  %s\n", "DEFAULT");
    }
    for (size_t i = 0; i < HAMR_NFIELDS; i++) {
        const setting_def_t *def = settings_find(hamr_fields[i].key);
        const char *stored[LVL_N] = { NULL, NULL, NULL };
        for (int r = 0; r < rows; r++) {
            if (strcmp(PQgetvalue(res, r, 1), def->key) != 0)
                continue;
            const char *sc = PQgetvalue(res, r, 0);
            for (int l = 0; l < LVL_N; l++)
                if (strcmp(sc, level_names[l]) == 0)
                    stored[l] = PQgetvalue(res, r, 2);
        }
        tier_value_t v;
        tier_resolve(def, stored + first, level_names + first, (size_t)(LVL_N - first), &v);
        if (ctl->json) {
            fprintf(ctl_out(), "%s{\"key\":", i ? "," : "");
            json_str(ctl_out(), def->key);
            fprintf(ctl_out(), ",\"option\":");
            json_str(ctl_out(), hamr_fields[i].option);
            fprintf(ctl_out(), ",\"value\":");
            json_str(ctl_out(), v.value);
            fprintf(ctl_out(), ",\"source\":");
            json_str(ctl_out(), v.source);
            for (int l = first; l < LVL_N; l++) {
                fprintf(ctl_out(), ",\"%s\":", level_names[l]);
                json_str(ctl_out(), stored[l]);
            }
            fprintf(ctl_out(), ",\"default\":");
            json_str(ctl_out(), def->default_value);
            fprintf(ctl_out(), "}");
        } else {
            fprintf(ctl_out(), "%-16s  %-9s  %-7s", hamr_fields[i].option + 2, v.value, v.source);
            for (int l = first; l < LVL_N; l++)
                fprintf(ctl_out(), "  %-9s", stored[l] ? stored[l] : "-");
            fprintf(ctl_out(), "  %s", def->default_value);
            if (v.invalid)
                fprintf(ctl_out(), "  (the %s value is invalid and ignored)", v.invalid);
            fprintf(ctl_out(), "\n");
        }
    }
    if (ctl->json) {
        fprintf(ctl_out(), "]}\n");
    } else if (is_user) {
        if (PQntuples(dis) == 1)
            fprintf(ctl_out(), "sending: DISABLED since %s (%s); re-enable with: mailctl hamr enable "
                   "--user %s\n",
                   PQgetvalue(dis, 0, 0), PQgetvalue(dis, 0, 1), scope.name);
        else
            fprintf(ctl_out(), "sending: allowed\n");
    }
    PQclear(dis);
    PQclear(res);
    return CTL_OK;
}

/* ---- reset ------------------------------------------------------------------------- */

int cmd_hamr_reset(ctl_t *ctl, char **args, int nargs)
{
    tier_scope_t scope;
    int rc = hamr_level_only(ctl, args, nargs, &scope);
    if (rc != CTL_OK || (rc = ctl_begin(ctl)) != CTL_OK)
        return rc;
    /* Only the user level: a domain's own settings (and the system's) stay. */
    const char *p[] = { scope.scope, scope.id };
    PGresult *res = ctl_query(ctl,
                              "WITH gone AS (DELETE FROM settings s"
                              " WHERE s.scope = 'user' AND s.key LIKE 'hamr.%' AND ("
                              "  $1 = 'system'"
                              "  OR ($1 = 'user' AND s.scope_id = $2::bigint)"
                              "  OR ($1 = 'domain' AND s.scope_id IN"
                              "      (SELECT id FROM users WHERE domain_id = $2::bigint)))"
                              " RETURNING s.scope_id)"
                              " SELECT count(*), count(DISTINCT scope_id) FROM gone",
                              2, p);
    if (!res)
        return CTL_DB;
    long settings = atol(PQgetvalue(res, 0, 0)), users = atol(PQgetvalue(res, 0, 1));
    PQclear(res);
    char label[NAME_BUF + 16];
    tier_scope_label(&scope, label, sizeof label);
    if (settings > 0) {
        char detail[NAME_BUF + 96];
        snprintf(detail, sizeof detail, "%s: %ld user-level setting%s of %ld user%s", label,
                 settings, settings == 1 ? "" : "s", users, users == 1 ? "" : "s");
        if ((rc = ctl_audit_commit(ctl, "hamr reset", detail)) != CTL_OK)
            return rc;
    } else {
        ctl_rollback(ctl);
    }
    /* Disabled accounts stay disabled: a reset changes limits, not verdicts. */
    long disabled = 0; /* a failed count (reported) does not undo the reset */
    ctl_count(ctl,
              "SELECT count(*) FROM send_disabled sd JOIN users u ON u.id = sd.user_id"
              " WHERE $1 = 'system' OR ($1 = 'user' AND u.id = $2::bigint)"
              " OR ($1 = 'domain' AND u.domain_id = $2::bigint)",
              2, p, &disabled);
    if (ctl->json) {
        out_json_ok("hamr reset", "scope", scope.scope);
        fprintf(ctl_out(), ",\"target\":");
        json_str(ctl_out(), scope.name[0] ? scope.name : NULL);
        fprintf(ctl_out(), ",\"settings_deleted\":%ld,\"users\":%ld,\"changed\":%s,"
               "\"still_disabled\":%ld}\n",
               settings, users, settings ? "true" : "false", disabled);
    } else {
        if (settings > 0)
            fprintf(ctl_out(), "%s: cleared %ld user-level HAMR setting%s of %ld user%s; they inherit "
                   "again\n",
                   label, settings, settings == 1 ? "" : "s", users, users == 1 ? "" : "s");
        else
            fprintf(ctl_out(), "%s: no user-level HAMR settings to clear (nothing changed)\n", label);
        if (disabled > 0)
            fprintf(ctl_out(), "note: %ld account%s still may not send (see mailctl hamr status; "
                   "mailctl hamr enable --user U)\n",
                   disabled, disabled == 1 ? "" : "s");
    }
    fflush(ctl_out());
    if (settings > 0)
        ctl_announce(ctl, "hamr");
    return CTL_OK;
}

/* ---- status, enable ---------------------------------------------------------------- */

int cmd_hamr_status(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *dis = ctl_query(ctl,
                              "SELECT u.address, " SQL_UTC("sd.since") ", sd.reason"
                              " FROM send_disabled sd JOIN users u ON u.id = sd.user_id"
                              " ORDER BY sd.since, u.address",
                              0, NULL);
    if (!dis)
        return CTL_DB;
    PGresult *thr = ctl_query(ctl,
                              "SELECT address, " SQL_UTC("since") ", refused, " SQL_UTC("until")
                              ", reason FROM hamr_throttled WHERE until > now()"
                              " ORDER BY since, address",
                              0, NULL);
    if (!thr) {
        PQclear(dis);
        return CTL_DB;
    }
    PGresult *recent = ctl_query(ctl,
                                 "SELECT subject, count(*), " SQL_UTC("min(at)") ", "
                                 SQL_UTC("max(at)")
                                 " FROM alerts WHERE cause = 'hamr'"
                                 " AND at > now() - interval '24 hours'"
                                 " GROUP BY subject ORDER BY max(at) DESC, subject",
                                 0, NULL);
    if (!recent) {
        PQclear(thr);
        PQclear(dis);
        return CTL_DB;
    }
    static const out_col_t thr_cols[] = {
        { "address", 0, OUT_STR }, { "since", 1, OUT_STR }, { "refused", 2, OUT_NUM },
        { "until", 3, OUT_STR },   { "reason", 4, OUT_STR },
    };
    int nt = PQntuples(thr);
    static const out_col_t dis_cols[] = {
        { "address", 0, OUT_STR },
        { "since", 1, OUT_STR },
        { "reason", 2, OUT_STR },
    };
    static const out_col_t recent_cols[] = {
        { "user", 0, OUT_STR },
        { "alerts", 1, OUT_NUM },
        { "first", 2, OUT_STR },
        { "last", 3, OUT_STR },
    };
    int nd = PQntuples(dis), nr = PQntuples(recent);
    if (ctl->json) {
        fprintf(ctl_out(), "{\"disabled\":");
        out_json_rows(dis, dis_cols, sizeof dis_cols / sizeof dis_cols[0]);
        fprintf(ctl_out(), ",\"throttled\":");
        out_json_rows(thr, thr_cols, sizeof thr_cols / sizeof thr_cols[0]);
        fprintf(ctl_out(), ",\"alerts_24h\":");
        out_json_rows(recent, recent_cols, sizeof recent_cols / sizeof recent_cols[0]);
        fprintf(ctl_out(), ",\"limiter\":{");
        limiter_status_print(ctl, true);
        fprintf(ctl_out(), "}}\n");
    } else {
        if (nd == 0) {
            fprintf(ctl_out(), "no account is disabled by HAMR\n");
        } else {
            int w = out_width(dis, 0, 7);
            fprintf(ctl_out(), "disabled accounts (may receive, may not send):\n");
            fprintf(ctl_out(), "  %-*s  %-20s  %s\n", w, "ADDRESS", "SINCE", "REASON");
            for (int i = 0; i < nd; i++)
                fprintf(ctl_out(), "  %-*s  %-20s  %s\n", w, PQgetvalue(dis, i, 0), PQgetvalue(dis, i, 1),
                       PQgetvalue(dis, i, 2));
            fprintf(ctl_out(), "re-enable one with: mailctl hamr enable --user ADDRESS\n");
        }
        if (nt == 0) {
            fprintf(ctl_out(), "no user is throttled by HAMR now\n");
        } else {
            int w = out_width(thr, 0, 7);
            fprintf(ctl_out(), "throttled now (messages refused with 451 until the window frees):\n");
            fprintf(ctl_out(), "  %-*s  %-20s  %-7s  %-20s  %s\n", w, "ADDRESS", "SINCE", "REFUSED", "UNTIL",
                   "REASON");
            for (int i = 0; i < nt; i++)
                fprintf(ctl_out(), "  %-*s  %-20s  %-7s  %-20s  %s\n", w, PQgetvalue(thr, i, 0),
                       PQgetvalue(thr, i, 1), PQgetvalue(thr, i, 2), PQgetvalue(thr, i, 3),
                       PQgetvalue(thr, i, 4));
        }
        if (nr == 0) {
            fprintf(ctl_out(), "no HAMR alerts in the last 24 hours\n");
        } else {
            int w = out_width(recent, 0, 4);
            fprintf(ctl_out(), "HAMR alerts in the last 24 hours (limits reached):\n");
            fprintf(ctl_out(), "  %-*s  %-6s  %-20s  %s\n", w, "USER", "ALERTS", "FIRST", "LAST");
            for (int i = 0; i < nr; i++)
                fprintf(ctl_out(), "  %-*s  %-6s  %-20s  %s\n", w, PQgetvalue(recent, i, 0),
                       PQgetvalue(recent, i, 1), PQgetvalue(recent, i, 2),
                       PQgetvalue(recent, i, 3));
        }
        limiter_status_print(ctl, false); /* who counts: a NATS failure is shown, not fatal */
    }
    PQclear(thr);
    PQclear(recent);
    PQclear(dis);
    return CTL_OK;
}

int cmd_hamr_enable(ctl_t *ctl, char **args, int nargs)
{
    opt_spec_t specs[] = { { "--user", true } };
    const char *values[1];
    int rc = hamr_options(ctl, args, nargs, 1, specs, values);
    if (rc != CTL_OK)
        return rc;
    if (!values[0]) {
        ctl->usage = true;
        return ctl_error("say which account: --user ADDRESS");
    }
    tier_scope_t scope;
    if ((rc = tier_scope_resolve(ctl, false, NULL, values[0], &scope)) != CTL_OK)
        return rc;
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        return rc;
    const char *p[] = { scope.id };
    PGresult *res = ctl_query(ctl,
                              "DELETE FROM send_disabled WHERE user_id = $1::bigint"
                              " RETURNING " SQL_UTC("since") ", reason",
                              1, p);
    if (!res)
        return CTL_DB;
    if (PQntuples(res) == 0) {
        PQclear(res);
        ctl_rollback(ctl);
        if (ctl->json) {
            out_json_ok("hamr enable", "address", scope.name);
            fprintf(ctl_out(), ",\"changed\":false}\n");
        } else {
            fprintf(ctl_out(), "%s is not disabled: it may send already (nothing changed)\n", scope.name);
        }
        return CTL_OK;
    }
    char detail[NAME_BUF + 320];
    snprintf(detail, sizeof detail, "%s (disabled since %s: %.200s)", scope.name,
             PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
    char since[40];
    snprintf(since, sizeof since, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    if ((rc = ctl_audit_commit(ctl, "hamr enable", detail)) != CTL_OK)
        return rc;
    if (ctl->json) {
        out_json_ok("hamr enable", "address", scope.name);
        fprintf(ctl_out(), ",\"changed\":true,\"disabled_since\":");
        json_str(ctl_out(), since);
        fprintf(ctl_out(), "}\n");
    } else {
        fprintf(ctl_out(), "%s may send again (it was disabled since %s)\n", scope.name, since);
    }
    fflush(ctl_out());
    ctl_announce(ctl, "accounts");
    return CTL_OK;
}
