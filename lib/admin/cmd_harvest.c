/* mailctl harvest set|unset|show|blocks|unblock|exempt: account-harvesting prevention.
 * Settings are system keys harvest.<field>, some also per service as
 * harvest.<smtp|pop3|imap|web>.<field>; blocks and exemptions are tables the limiter keeps
 * and reads. Every change is announced so the limiter and the front ends act at once. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin/admin.h"
#include "base/settings.h"

#define HARVEST_VALUE_MAX 64
#define HARVEST_KEY_MAX 64
#define HARVEST_SERVICES_MAX 8 /* settings_services, at most */

typedef struct harvest_field {
    const char *option;  /* --max-failures */
    const char *field;   /* max_failures */
    bool per_service;    /* may be set as harvest.<service>.<field> */
} harvest_field_t;

static const harvest_field_t harvest_fields[] = {
    { "--enabled", "enabled", true },
    { "--max-failures", "max_failures", true },
    { "--interval", "interval", true },
    { "--block", "block", true },
    { "--soft-limit", "soft_limit", false },
    { "--hard-limit", "hard_limit", false },
};
#define HARVEST_NFIELDS (sizeof harvest_fields / sizeof harvest_fields[0])

enum { OPT_SERVICE, OPT_FIELDS };
#define HARVEST_NOPTS (OPT_FIELDS + HARVEST_NFIELDS + 1)

static void harvest_key(char *out, size_t out_len, const char *service, const char *field)
{
    if (service)
        snprintf(out, out_len, "harvest.%s.%s", service, field);
    else
        snprintf(out, out_len, "harvest.%s", field);
}

/* Parses the options of set (field_values) or unset (flags and --all). */
static int harvest_options(ctl_t *ctl, char **args, int nargs, bool field_values,
                           const char **values, const char **service_r)
{
    opt_spec_t specs[HARVEST_NOPTS];
    specs[OPT_SERVICE] = (opt_spec_t){ "--service", true };
    for (size_t i = 0; i < HARVEST_NFIELDS; i++)
        specs[OPT_FIELDS + i] = (opt_spec_t){ harvest_fields[i].option, field_values };
    specs[OPT_FIELDS + HARVEST_NFIELDS] = (opt_spec_t){ "--all", false };
    size_t nspecs = field_values ? HARVEST_NOPTS - 1 : HARVEST_NOPTS;
    if (field_values)
        values[OPT_FIELDS + HARVEST_NFIELDS] = NULL;
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
    if (rc != CTL_OK)
        return rc;
    *service_r = NULL;
    const char *s = values[OPT_SERVICE];
    if (s) {
        for (const char *const *k = settings_services; *k; k++)
            if (strcasecmp(*k, s) == 0)
                *service_r = *k;
        if (!*service_r)
            return ctl_error("unknown service '%s': use smtp, pop3, imap or web", s);
        for (size_t i = 0; i < HARVEST_NFIELDS; i++)
            if (values[OPT_FIELDS + i] && !harvest_fields[i].per_service)
                return ctl_error("%s is about invalid SMTP recipients and has no per-service "
                                 "value: give it without --service",
                                 harvest_fields[i].option);
    }
    return CTL_OK;
}

/* Warns when the soft limit is not below the hard limit (the address would be blocked
 * before any reply is delayed). */
static void harvest_limits_warning(ctl_t *ctl)
{
    PGresult *res = ctl_query(ctl,
                              "SELECT key, value FROM settings WHERE scope = 'system'"
                              " AND key IN ('harvest.soft_limit', 'harvest.hard_limit')",
                              0, NULL);
    if (!res)
        return;
    const setting_def_t *soft_def = settings_find("harvest.soft_limit");
    const setting_def_t *hard_def = settings_find("harvest.hard_limit");
    const char *soft = NULL, *hard = NULL;
    for (int i = 0; i < PQntuples(res); i++) {
        if (strcmp(PQgetvalue(res, i, 0), soft_def->key) == 0)
            soft = PQgetvalue(res, i, 1);
        else
            hard = PQgetvalue(res, i, 1);
    }
    long long s = settings_int(soft_def, soft), h = settings_int(hard_def, hard);
    if (s >= h)
        ctl_warn("harvest.soft_limit (%lld) is not below harvest.hard_limit (%lld): a "
                 "dictionary attacker is blocked before any reply is delayed",
                 s, h);
    PQclear(res);
}

static tier_scope_t harvest_system_scope(void)
{
    tier_scope_t scope;
    memset(&scope, 0, sizeof scope);
    scope.scope = "system";
    snprintf(scope.id, sizeof scope.id, "0");
    return scope;
}

int cmd_harvest_set(ctl_t *ctl, char **args, int nargs)
{
    const char *values[HARVEST_NOPTS];
    const char *service;
    int rc = harvest_options(ctl, args, nargs, true, values, &service);
    if (rc != CTL_OK)
        return rc;
    tier_change_t changes[HARVEST_NFIELDS];
    char keys[HARVEST_NFIELDS][HARVEST_KEY_MAX];
    char canon[HARVEST_NFIELDS][HARVEST_VALUE_MAX];
    size_t n = 0;
    bool limits = false;
    for (size_t i = 0; i < HARVEST_NFIELDS; i++) {
        const char *v = values[OPT_FIELDS + i];
        if (!v)
            continue;
        harvest_key(keys[n], sizeof keys[n], service, harvest_fields[i].field);
        if (!tier_value_check(harvest_fields[i].option, keys[n], v, canon[n], sizeof canon[n]))
            return CTL_USAGE;
        limits |= !harvest_fields[i].per_service;
        changes[n] = (tier_change_t){ keys[n], canon[n], NULL, false };
        n++;
    }
    if (n == 0) {
        ctl->usage = true;
        return ctl_error("nothing to set: give at least one of --enabled, --max-failures, "
                         "--interval, --block, --soft-limit, --hard-limit");
    }
    tier_scope_t scope = harvest_system_scope();
    rc = tier_apply(ctl, &scope, "harvest set", changes, n, "harvest");
    if (rc == CTL_OK && limits)
        harvest_limits_warning(ctl);
    return rc;
}

int cmd_harvest_unset(ctl_t *ctl, char **args, int nargs)
{
    const char *values[HARVEST_NOPTS];
    const char *service;
    int rc = harvest_options(ctl, args, nargs, false, values, &service);
    if (rc != CTL_OK)
        return rc;
    bool all = values[OPT_FIELDS + HARVEST_NFIELDS] != NULL;
    tier_change_t changes[HARVEST_NFIELDS];
    char keys[HARVEST_NFIELDS][HARVEST_KEY_MAX];
    size_t n = 0;
    for (size_t i = 0; i < HARVEST_NFIELDS; i++) {
        if (all && values[OPT_FIELDS + i]) {
            ctl->usage = true;
            return ctl_error("--all already names every field; drop %s",
                             harvest_fields[i].option);
        }
        if (!all && !values[OPT_FIELDS + i])
            continue;
        if (service && !harvest_fields[i].per_service)
            continue; /* --all with --service: the per-service fields */
        harvest_key(keys[n], sizeof keys[n], service, harvest_fields[i].field);
        changes[n] = (tier_change_t){ keys[n], NULL, NULL, false };
        n++;
    }
    if (n == 0) {
        ctl->usage = true;
        return ctl_error("nothing to unset: give the fields (--enabled, --max-failures, "
                         "--interval, --block, --soft-limit, --hard-limit) or --all");
    }
    tier_scope_t scope = harvest_system_scope();
    return tier_apply(ctl, &scope, "harvest unset", changes, n, "harvest");
}

/* ---- show -------------------------------------------------------------------------- */

int cmd_harvest_show(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *res = ctl_query(ctl,
                              "SELECT key, value FROM settings"
                              " WHERE scope = 'system' AND key LIKE 'harvest.%'",
                              0, NULL);
    if (!res)
        return CTL_DB;
    PGresult *counts = ctl_query(ctl,
                                 "SELECT (SELECT count(*) FROM blocks WHERE until > now()),"
                                 " (SELECT count(*) FROM harvest_exempt)",
                                 0, NULL);
    if (!counts) {
        PQclear(res);
        return CTL_DB;
    }
    int rows = PQntuples(res);
    int nservices = 0;
    while (nservices < HARVEST_SERVICES_MAX && settings_services[nservices])
        nservices++;
    if (ctl->json) {
        fprintf(ctl_out(), "{\"services\":{");
    } else {
        fprintf(ctl_out(), "%-13s", "FIELD");
        for (int s = 0; s < nservices; s++) {
            char head[16];
            size_t i = 0;
            for (; settings_services[s][i] && i < sizeof head - 1; i++)
                head[i] = (char)toupper((unsigned char)settings_services[s][i]);
            head[i] = '\0';
            fprintf(ctl_out(), s + 1 < nservices ? "  %-22s" : "  %s", head);
        }
        fprintf(ctl_out(), "\n");
    }
    tier_value_t v[HARVEST_SERVICES_MAX][HARVEST_NFIELDS];
    for (int s = 0; s < nservices; s++) {
        const char *service = settings_services[s];
        for (size_t f = 0; f < HARVEST_NFIELDS; f++) {
            char skey[HARVEST_KEY_MAX], key[HARVEST_KEY_MAX];
            harvest_key(skey, sizeof skey, service, harvest_fields[f].field);
            harvest_key(key, sizeof key, NULL, harvest_fields[f].field);
            const char *stored[2] = { NULL, NULL };
            for (int r = 0; r < rows; r++) {
                if (harvest_fields[f].per_service && strcmp(PQgetvalue(res, r, 0), skey) == 0)
                    stored[0] = PQgetvalue(res, r, 1);
                if (strcmp(PQgetvalue(res, r, 0), key) == 0)
                    stored[1] = PQgetvalue(res, r, 1);
            }
            const char *levels[2] = { service, "system" };
            tier_resolve(settings_find(key), stored, levels, 2, &v[s][f]);
        }
    }
    if (ctl->json) {
        for (int s = 0; s < nservices; s++) {
            fprintf(ctl_out(), "%s\"%s\":{", s ? "," : "", settings_services[s]);
            bool first = true;
            for (size_t f = 0; f < HARVEST_NFIELDS; f++) {
                if (!harvest_fields[f].per_service && strcmp(settings_services[s], "smtp"))
                    continue;
                fprintf(ctl_out(), "%s\"%s\":{\"value\":", first ? "" : ",", harvest_fields[f].field);
                json_str(ctl_out(), v[s][f].value);
                fprintf(ctl_out(), ",\"source\":");
                json_str(ctl_out(), v[s][f].source);
                fprintf(ctl_out(), "}");
                first = false;
            }
            fprintf(ctl_out(), "}");
        }
        fprintf(ctl_out(), "},\"active_blocks\":%s,\"exempt_networks\":%s}\n", PQgetvalue(counts, 0, 0),
               PQgetvalue(counts, 0, 1));
    } else {
        for (size_t f = 0; f < HARVEST_NFIELDS; f++) {
            fprintf(ctl_out(), "%-13s", harvest_fields[f].field);
            for (int s = 0; s < nservices; s++) {
                char cell[64];
                if (!harvest_fields[f].per_service && strcmp(settings_services[s], "smtp"))
                    snprintf(cell, sizeof cell, "-");
                else
                    snprintf(cell, sizeof cell, "%s (%s)", v[s][f].value, v[s][f].source);
                fprintf(ctl_out(), s + 1 < nservices ? "  %-22s" : "  %s", cell);
            }
            fprintf(ctl_out(), "\n");
        }
        fprintf(ctl_out(), "(VALUE (FROM): set for that service, set for the system, or the default)\n");
        fprintf(ctl_out(), "active blocks: %s (mailctl harvest blocks); exempt networks: %s (mailctl "
               "harvest exempt list)\n",
               PQgetvalue(counts, 0, 0), PQgetvalue(counts, 0, 1));
    }
    PQclear(counts);
    PQclear(res);
    return CTL_OK;
}

/* ---- blocks ------------------------------------------------------------------------ */

int cmd_harvest_blocks(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *res = ctl_query(ctl,
                              "SELECT b.network::text, b.service, " SQL_UTC("b.since") ", "
                              SQL_UTC("b.until") ", b.offense, b.reason,"
                              " EXISTS (SELECT 1 FROM harvest_exempt e"
                              "         WHERE e.network >>= b.network)"
                              " FROM blocks b WHERE b.until > now()"
                              " ORDER BY b.since, b.network",
                              0, NULL);
    if (!res)
        return CTL_DB;
    static const out_col_t cols[] = {
        { "network", 0, OUT_STR }, { "service", 1, OUT_STR }, { "since", 2, OUT_STR },
        { "until", 3, OUT_STR },   { "offense", 4, OUT_NUM }, { "reason", 5, OUT_STR },
        { "exempt", 6, OUT_BOOL },
    };
    int n = PQntuples(res);
    if (ctl->json) {
        fprintf(ctl_out(), "{\"blocks\":");
        out_json_rows(res, cols, sizeof cols / sizeof cols[0]);
        fprintf(ctl_out(), "}\n");
    } else if (n == 0) {
        fprintf(ctl_out(), "no client address is blocked\n");
    } else {
        int w = out_width(res, 0, 7);
        fprintf(ctl_out(), "%-*s  %-7s  %-20s  %-20s  %-7s  %s\n", w, "NETWORK", "SERVICE", "SINCE",
               "UNTIL", "OFFENSE", "REASON");
        for (int i = 0; i < n; i++)
            fprintf(ctl_out(), "%-*s  %-7s  %-20s  %-20s  %-7s  %s%s\n", w, PQgetvalue(res, i, 0),
                   PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                   PQgetvalue(res, i, 4), PQgetvalue(res, i, 5),
                   strcmp(PQgetvalue(res, i, 6), "t") == 0 ? " (exempt: not enforced)" : "");
        fprintf(ctl_out(), "lift one with: mailctl harvest unblock ADDRESS\n");
    }
    PQclear(res);
    return CTL_OK;
}

/* Checks an address or network for unblock: like network_arg(), but host bits are fine
 * (an address inside a blocked /64 names that block). The text form PostgreSQL gives it
 * goes to out. */
static int unblock_arg(ctl_t *ctl, const char *text, char *out, size_t out_len)
{
    PGresult *res;
    int rc = network_query(ctl, text,
                           "SELECT CASE WHEN masklen(i) = CASE family(i) WHEN 4"
                           " THEN 32 ELSE 128 END THEN host(i) ELSE i::text END"
                           " FROM (SELECT $1::inet AS i) s",
                           "192.0.2.7, 2001:db8::5, 198.51.100.0/24", &res);
    if (rc != CTL_OK)
        return rc;
    snprintf(out, out_len, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return CTL_OK;
}

int cmd_harvest_unblock(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char addr[128];
    int rc = unblock_arg(ctl, args[0], addr, sizeof addr);
    if (rc != CTL_OK)
        return rc;
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        return rc;
    /* The blocks that hold the address (an IPv6 address sits in its blocked /64), and
     * those inside a network given. Expired rows are the limiter's to clean up. */
    const char *p[] = { addr };
    PGresult *res = ctl_query(ctl,
                              "DELETE FROM blocks"
                              " WHERE (network >>= $1::inet OR network <<= $1::inet)"
                              " AND until > now()"
                              " RETURNING network::text, service, reason, "
                              SQL_UTC("until"),
                              1, p);
    if (!res)
        return CTL_DB;
    int n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        ctl_rollback(ctl);
        return ctl_error("%s is not blocked (see mailctl harvest blocks)", addr);
    }
    for (int i = 0; i < n && rc == CTL_OK; i++) {
        char detail[512];
        snprintf(detail, sizeof detail, "%s (%s, until %s: %.300s)", PQgetvalue(res, i, 0),
                 PQgetvalue(res, i, 1), PQgetvalue(res, i, 3), PQgetvalue(res, i, 2));
        rc = ctl_audit(ctl, "harvest unblock", detail);
    }
    if (rc == CTL_OK)
        rc = ctl_commit(ctl);
    if (rc != CTL_OK) {
        PQclear(res);
        return rc;
    }
    if (ctl->json) {
        static const out_col_t cols[] = {
            { "network", 0, OUT_STR },
            { "service", 1, OUT_STR },
            { "until", 3, OUT_STR },
        };
        out_json_ok("harvest unblock", "address", addr);
        fprintf(ctl_out(), ",\"lifted\":");
        out_json_rows(res, cols, sizeof cols / sizeof cols[0]);
        fprintf(ctl_out(), "}\n");
    } else {
        for (int i = 0; i < n; i++)
            fprintf(ctl_out(), "lifted the block of %s (%s, was until %s)\n", PQgetvalue(res, i, 0),
                   PQgetvalue(res, i, 1), PQgetvalue(res, i, 3));
    }
    fflush(ctl_out());
    PQclear(res);
    ctl_announce(ctl, "blocks");
    return CTL_OK;
}

/* ---- exempt ------------------------------------------------------------------------ */

static const netlist_t exempt_list = {
    .table = "harvest_exempt",
    .name = "the exempt list",
    .add_action = "harvest exempt add",
    .del_action = "harvest exempt del",
    .added = "exempt from harvesting blocks:",
    .present = "already exempt (nothing changed):",
    .removed = "no longer exempt:",
};

/* netlist_added_fn: how many active blocks the new exemption covers, in *(long *)arg. */
static int exempt_added_cb(ctl_t *ctl, const char *net, void *arg)
{
    const char *p[] = { net };
    return ctl_count(ctl,
                     "SELECT count(*) FROM blocks WHERE network <<= $1::cidr AND until > now()",
                     1, p, arg);
}

int cmd_harvest_exempt_add(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    long covered = 0;
    bool added;
    int rc = netlist_add(ctl, &exempt_list, args[0], exempt_added_cb, &covered, &added);
    if (rc != CTL_OK || !added)
        return rc;
    if (covered > 0 && !ctl->json)
        fprintf(ctl_out(), "note: %ld active block%s inside it no longer appl%s\n", covered,
               covered == 1 ? "" : "s", covered == 1 ? "ies" : "y");
    ctl_announce(ctl, "exempt");
    return CTL_OK;
}

int cmd_harvest_exempt_del(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    int rc = netlist_del(ctl, &exempt_list, args[0]);
    if (rc == CTL_OK)
        ctl_announce(ctl, "exempt");
    return rc;
}

int cmd_harvest_exempt_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *res = netlist_query(ctl, &exempt_list);
    if (!res)
        return CTL_DB;
    if (ctl->json) {
        fprintf(ctl_out(), "{\"exempt\":");
        netlist_print_json(res);
        fprintf(ctl_out(), "}\n");
    } else if (PQntuples(res) == 0) {
        fprintf(ctl_out(), "no exempt networks (every client address may be blocked)\n");
    } else {
        netlist_print_table(res, "");
    }
    PQclear(res);
    return CTL_OK;
}
