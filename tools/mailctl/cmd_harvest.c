/* mailctl harvest set|unset|show|blocks|unblock|exempt: account-harvesting prevention.
 * Settings are system keys harvest.<field>, some also per service as
 * harvest.<smtp|pop3|imap>.<field>; blocks and exemptions are tables the limiter keeps
 * and reads. Every change is announced so the limiter and the front ends act at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mailctl.h"
#include "settings.h"

#define HARVEST_VALUE_MAX 64
#define HARVEST_KEY_MAX 64

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
            return ctl_error("unknown service '%s': use smtp, pop3 or imap", s);
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
    if (ctl->json)
        printf("{\"services\":{");
    else
        printf("%-13s  %-22s  %-22s  %s\n", "FIELD", "SMTP", "POP3", "IMAP");
    tier_value_t v[3][HARVEST_NFIELDS];
    for (int s = 0; settings_services[s]; s++) {
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
        for (int s = 0; settings_services[s]; s++) {
            printf("%s\"%s\":{", s ? "," : "", settings_services[s]);
            bool first = true;
            for (size_t f = 0; f < HARVEST_NFIELDS; f++) {
                if (!harvest_fields[f].per_service && strcmp(settings_services[s], "smtp"))
                    continue;
                printf("%s\"%s\":{\"value\":", first ? "" : ",", harvest_fields[f].field);
                json_str(stdout, v[s][f].value);
                printf(",\"source\":");
                json_str(stdout, v[s][f].source);
                printf("}");
                first = false;
            }
            printf("}");
        }
        printf("},\"active_blocks\":%s,\"exempt_networks\":%s}\n", PQgetvalue(counts, 0, 0),
               PQgetvalue(counts, 0, 1));
    } else {
        for (size_t f = 0; f < HARVEST_NFIELDS; f++) {
            printf("%-13s", harvest_fields[f].field);
            for (int s = 0; settings_services[s]; s++) {
                char cell[64];
                if (!harvest_fields[f].per_service && strcmp(settings_services[s], "smtp"))
                    snprintf(cell, sizeof cell, "-");
                else
                    snprintf(cell, sizeof cell, "%s (%s)", v[s][f].value, v[s][f].source);
                printf(settings_services[s + 1] ? "  %-22s" : "  %s", cell);
            }
            printf("\n");
        }
        printf("(VALUE (FROM): set for that service, set for the system, or the default)\n");
        printf("active blocks: %s (mailctl harvest blocks); exempt networks: %s (mailctl "
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
    int n = PQntuples(res);
    if (ctl->json) {
        printf("{\"blocks\":[");
        for (int i = 0; i < n; i++) {
            printf("%s{\"network\":", i ? "," : "");
            json_str(stdout, PQgetvalue(res, i, 0));
            printf(",\"service\":");
            json_str(stdout, PQgetvalue(res, i, 1));
            printf(",\"since\":");
            json_str(stdout, PQgetvalue(res, i, 2));
            printf(",\"until\":");
            json_str(stdout, PQgetvalue(res, i, 3));
            printf(",\"offense\":%s,\"reason\":", PQgetvalue(res, i, 4));
            json_str(stdout, PQgetvalue(res, i, 5));
            printf(",\"exempt\":%s}", strcmp(PQgetvalue(res, i, 6), "t") == 0 ? "true" : "false");
        }
        printf("]}\n");
    } else if (n == 0) {
        printf("no client address is blocked\n");
    } else {
        int w = out_width(res, 0, 7);
        printf("%-*s  %-7s  %-20s  %-20s  %-7s  %s\n", w, "NETWORK", "SERVICE", "SINCE",
               "UNTIL", "OFFENSE", "REASON");
        for (int i = 0; i < n; i++)
            printf("%-*s  %-7s  %-20s  %-20s  %-7s  %s%s\n", w, PQgetvalue(res, i, 0),
                   PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
                   PQgetvalue(res, i, 4), PQgetvalue(res, i, 5),
                   strcmp(PQgetvalue(res, i, 6), "t") == 0 ? " (exempt: not enforced)" : "");
        printf("lift one with: mailctl harvest unblock ADDRESS\n");
    }
    PQclear(res);
    return CTL_OK;
}

/* Checks an address or network for unblock: like network_arg(), but host bits are fine
 * (an address inside a blocked /64 names that block). The text form PostgreSQL gives it
 * goes to out. */
static int unblock_arg(ctl_t *ctl, const char *text, char *out, size_t out_len)
{
    if (!name_cidr_chars(text))
        return ctl_error("'%s' is not an IPv4 or IPv6 address or network "
                         "(examples: 192.0.2.7, 2001:db8::5, 198.51.100.0/24)",
                         text);
    const char *p[] = { text };
    PGresult *res = ctl_query_raw(ctl,
                                  "SELECT CASE WHEN masklen(i) = CASE family(i) WHEN 4"
                                  " THEN 32 ELSE 128 END THEN host(i) ELSE i::text END"
                                  " FROM (SELECT $1::inet AS i) s",
                                  1, p);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (strncmp(ctl_sqlstate(res), "22", 2) != 0 || PQstatus(ctl->pg) != CONNECTION_OK)
            return ctl_report(ctl, res);
        PQclear(res);
        return ctl_error("'%s' is not an IPv4 or IPv6 address or network "
                         "(examples: 192.0.2.7, 2001:db8::5, 198.51.100.0/24)",
                         text);
    }
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
        printf("{\"ok\":true,\"action\":\"harvest unblock\",\"address\":");
        json_str(stdout, addr);
        printf(",\"lifted\":[");
        for (int i = 0; i < n; i++) {
            printf("%s{\"network\":", i ? "," : "");
            json_str(stdout, PQgetvalue(res, i, 0));
            printf(",\"service\":");
            json_str(stdout, PQgetvalue(res, i, 1));
            printf(",\"until\":");
            json_str(stdout, PQgetvalue(res, i, 3));
            printf("}");
        }
        printf("]}\n");
    } else {
        for (int i = 0; i < n; i++)
            printf("lifted the block of %s (%s, was until %s)\n", PQgetvalue(res, i, 0),
                   PQgetvalue(res, i, 1), PQgetvalue(res, i, 3));
    }
    fflush(stdout);
    PQclear(res);
    ctl_announce(ctl, "blocks");
    return CTL_OK;
}

/* ---- exempt ------------------------------------------------------------------------ */

static void exempt_print(ctl_t *ctl, const char *action, const char *net, bool changed,
                         const char *text)
{
    if (ctl->json) {
        printf("{\"ok\":true,\"action\":");
        json_str(stdout, action);
        printf(",\"network\":");
        json_str(stdout, net);
        printf(",\"changed\":%s}\n", changed ? "true" : "false");
    } else {
        printf("%s %s\n", text, net);
    }
    fflush(stdout);
}

int cmd_harvest_exempt_add(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char net[128];
    int rc = network_arg(ctl, args[0], net, sizeof net);
    if (rc != CTL_OK)
        return rc;
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        return rc;
    const char *p[] = { net };
    PGresult *res = ctl_query(ctl,
                              "INSERT INTO harvest_exempt (network) VALUES ($1::cidr)"
                              " ON CONFLICT (network) DO NOTHING RETURNING network",
                              1, p);
    if (!res)
        return CTL_DB;
    bool added = PQntuples(res) == 1;
    PQclear(res);
    if (!added) {
        ctl_rollback(ctl);
        exempt_print(ctl, "harvest exempt add", net, false,
                     "already exempt (nothing changed):");
        return CTL_OK;
    }
    res = ctl_query(ctl,
                    "SELECT count(*) FROM blocks WHERE network <<= $1::cidr AND until > now()",
                    1, p);
    if (!res)
        return CTL_DB;
    long covered = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    if ((rc = ctl_audit(ctl, "harvest exempt add", net)) != CTL_OK ||
        (rc = ctl_commit(ctl)) != CTL_OK)
        return rc;
    exempt_print(ctl, "harvest exempt add", net, true, "exempt from harvesting blocks:");
    if (covered > 0 && !ctl->json)
        printf("note: %ld active block%s inside it no longer appl%s\n", covered,
               covered == 1 ? "" : "s", covered == 1 ? "ies" : "y");
    ctl_announce(ctl, "exempt");
    return CTL_OK;
}

int cmd_harvest_exempt_del(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char net[128];
    int rc = network_arg(ctl, args[0], net, sizeof net);
    if (rc != CTL_OK)
        return rc;
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        return rc;
    const char *p[] = { net };
    PGresult *res = ctl_query(
        ctl, "DELETE FROM harvest_exempt WHERE network = $1::cidr RETURNING network", 1, p);
    if (!res)
        return CTL_DB;
    bool removed = PQntuples(res) > 0;
    PQclear(res);
    if (!removed) {
        ctl_rollback(ctl);
        res = ctl_query(ctl,
                        "SELECT network::text FROM harvest_exempt WHERE network >>= $1::cidr"
                        " ORDER BY masklen(network) DESC LIMIT 1",
                        1, p);
        if (!res)
            return CTL_DB;
        if (PQntuples(res) == 1)
            rc = ctl_error("%s is not in the exempt list itself; it is covered by %s "
                           "(remove that with: mailctl harvest exempt del %s)",
                           net, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 0));
        else
            rc = ctl_error("%s is not in the exempt list", net);
        PQclear(res);
        return rc;
    }
    if ((rc = ctl_audit(ctl, "harvest exempt del", net)) != CTL_OK ||
        (rc = ctl_commit(ctl)) != CTL_OK)
        return rc;
    exempt_print(ctl, "harvest exempt del", net, true, "no longer exempt:");
    ctl_announce(ctl, "exempt");
    return CTL_OK;
}

int cmd_harvest_exempt_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *res = ctl_query(ctl,
                              "SELECT network::text, " SQL_UTC("created_at")
                              " FROM harvest_exempt ORDER BY network",
                              0, NULL);
    if (!res)
        return CTL_DB;
    int n = PQntuples(res);
    if (ctl->json) {
        printf("{\"exempt\":[");
        for (int i = 0; i < n; i++) {
            printf("%s{\"network\":", i ? "," : "");
            json_str(stdout, PQgetvalue(res, i, 0));
            printf(",\"created_at\":");
            json_str(stdout, PQgetvalue(res, i, 1));
            printf("}");
        }
        printf("]}\n");
    } else if (n == 0) {
        printf("no exempt networks (every client address may be blocked)\n");
    } else {
        int w = out_width(res, 0, 7);
        printf("%-*s  %s\n", w, "NETWORK", "ADDED");
        for (int i = 0; i < n; i++)
            printf("%-*s  %s\n", w, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
    }
    PQclear(res);
    return CTL_OK;
}
