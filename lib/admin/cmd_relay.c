/* mailctl relay mode|allow|deny|list|tls-policy. The relay list is a network list
 * (netlist.c). The TLS policies (relay_tls_policy) say how relayd uses STARTTLS towards a
 * destination domain, '*' for every domain without a policy of its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "base/settings.h"

#define RELAY_MODE_KEY "relay.mode"

/* The effective relay mode (malloc'd) in *mode_r. */
static int relay_mode_get(ctl_t *ctl, char **mode_r)
{
    int rc = setting_get(ctl, RELAY_MODE_KEY, mode_r);
    if (rc != CTL_OK)
        return rc;
    const setting_def_t *def = settings_find(RELAY_MODE_KEY);
    if (!*mode_r || !settings_valid(def, *mode_r)) {
        free(*mode_r);
        *mode_r = strdup(def->default_value);
    }
    return CTL_OK;
}

int cmd_relay_mode(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    const setting_def_t *def = settings_find(RELAY_MODE_KEY);
    char mode[16];
    if (strlen(args[0]) >= sizeof mode)
        return ctl_error("unknown relay mode: use none, select or anyone");
    strcpy(mode, args[0]);
    for (char *c = mode; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    if (!settings_valid(def, mode))
        return ctl_error("unknown relay mode '%s': use none, select or anyone", args[0]);

    char *old = NULL;
    int rc = ctl_begin(ctl);
    if (rc == CTL_OK)
        rc = relay_mode_get(ctl, &old);
    if (rc == CTL_OK)
        rc = setting_put(ctl, RELAY_MODE_KEY, mode);
    if (rc == CTL_OK)
        rc = ctl_audit_commit(ctl, "relay mode", mode);
    if (rc != CTL_OK) {
        free(old);
        return rc;
    }
    if (ctl->json) {
        out_json_ok("relay mode", "mode", mode);
        fprintf(ctl_out(), ",\"previous\":");
        json_str(ctl_out(), old);
        fprintf(ctl_out(), "}\n");
    } else {
        fprintf(ctl_out(), "relay mode: %s (was %s)\n", mode, old ? old : "?");
    }
    fflush(ctl_out());
    free(old);
    if (strcmp(mode, "anyone") == 0)
        relay_open_warning();
    ctl_announce(ctl, "relay");
    return CTL_OK;
}

static const netlist_t relay_list = {
    .table = "relay_networks",
    .name = "the relay list",
    .add_action = "relay allow",
    .del_action = "relay deny",
    .added = "added to the relay list:",
    .present = "already in the relay list (nothing changed):",
    .removed = "removed from the relay list:",
};

/* netlist_added_fn: the relay mode, for the note after the change. */
static int relay_allowed_cb(ctl_t *ctl, const char *net, void *arg)
{
    (void)net;
    return relay_mode_get(ctl, arg);
}

int cmd_relay_allow(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char *mode = NULL;
    bool added;
    int rc = netlist_add(ctl, &relay_list, args[0], relay_allowed_cb, &mode, &added);
    if (rc == CTL_OK && added) {
        if (mode && strcmp(mode, "select") != 0)
            fprintf(ctl_err(),
                    "mailctl: note: relay.mode is %s; the relay list is used only in mode "
                    "select (mailctl relay mode select)\n",
                    mode);
        ctl_announce(ctl, "relay");
    }
    free(mode);
    return rc;
}

int cmd_relay_deny(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    int rc = netlist_del(ctl, &relay_list, args[0]);
    if (rc == CTL_OK)
        ctl_announce(ctl, "relay");
    return rc;
}

int cmd_relay_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    char *mode = NULL;
    int rc = relay_mode_get(ctl, &mode);
    if (rc != CTL_OK)
        return rc;
    PGresult *res = netlist_query(ctl, &relay_list);
    if (!res) {
        free(mode);
        return CTL_DB;
    }
    if (ctl->json) {
        fprintf(ctl_out(), "{\"mode\":");
        json_str(ctl_out(), mode);
        fprintf(ctl_out(), ",\"networks\":");
        netlist_print_json(res);
        fprintf(ctl_out(), "}\n");
    } else {
        fprintf(ctl_out(), "relay mode: %s\n", mode);
        if (strcmp(mode, "anyone") == 0)
            fprintf(ctl_out(), "WARNING: this server is an OPEN RELAY\n");
        if (PQntuples(res) == 0) {
            fprintf(ctl_out(), "relay list: empty\n");
        } else {
            if (strcmp(mode, "select") != 0)
                fprintf(ctl_out(), "relay list (used only in mode select):\n");
            else
                fprintf(ctl_out(), "relay list:\n");
            netlist_print_table(res, "  ");
        }
    }
    PQclear(res);
    free(mode);
    return CTL_OK;
}

#define TLS_DEFAULT "may"

/* What a TLS policy asks of relayd, for people. */
static const char *tls_policy_text(const char *policy)
{
    if (strcmp(policy, "encrypt") == 0)
        return "STARTTLS required, the certificate is not checked";
    if (strcmp(policy, "verify") == 0)
        return "STARTTLS required, the certificate must be valid for the host";
    return "STARTTLS when the server offers it, plain text otherwise";
}

/* A policy as typed, lower-cased into out (16 bytes); false when it is none of them. */
static bool tls_policy_arg(const char *arg, char *out)
{
    static const char *const policies[] = { "may", "encrypt", "verify" };
    if (strlen(arg) >= 16)
        return false;
    for (size_t i = 0;; i++) {
        out[i] = (char)(arg[i] >= 'A' && arg[i] <= 'Z' ? arg[i] - 'A' + 'a' : arg[i]);
        if (!arg[i])
            break;
    }
    for (size_t i = 0; i < sizeof policies / sizeof policies[0]; i++)
        if (strcmp(out, policies[i]) == 0)
            return true;
    return false;
}

static const char *tls_domain_shown(const char *domain)
{
    return strcmp(domain, "*") == 0 ? "* (every domain without a policy of its own)" : domain;
}

/* The list: every policy, and what applies to a domain without one. */
static int tls_policy_list(ctl_t *ctl)
{
    PGresult *res = ctl_query(ctl,
                              "SELECT domain, policy, " SQL_UTC("updated_at")
                              " FROM relay_tls_policy ORDER BY domain = '*', domain",
                              0, NULL);
    if (!res)
        return CTL_DB;
    int n = PQntuples(res);
    const char *fallback = TLS_DEFAULT;
    for (int i = 0; i < n; i++)
        if (strcmp(PQgetvalue(res, i, 0), "*") == 0)
            fallback = PQgetvalue(res, i, 1);
    static const out_col_t cols[] = {
        { "domain", 0, OUT_STR },
        { "policy", 1, OUT_STR },
        { "updated_at", 2, OUT_STR },
    };
    if (ctl->json) {
        fprintf(ctl_out(), "{\"tls_policies\":");
        out_json_rows(res, cols, sizeof cols / sizeof cols[0]);
        fprintf(ctl_out(), ",\"default\":");
        json_str(ctl_out(), fallback);
        fprintf(ctl_out(), "}\n");
    } else {
        if (n > 0) {
            int w = out_width(res, 0, 6);
            fprintf(ctl_out(), "%-*s  %-7s  %-20s  %s\n", w, "DOMAIN", "POLICY", "UPDATED", "MEANING");
            for (int i = 0; i < n; i++)
                fprintf(ctl_out(), "%-*s  %-7s  %-20s  %s\n", w, PQgetvalue(res, i, 0),
                       PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                       tls_policy_text(PQgetvalue(res, i, 1)));
        } else {
            fprintf(ctl_out(), "no TLS policies\n");
        }
        fprintf(ctl_out(), "a domain without a policy of its own: %s (%s)\n", fallback,
               tls_policy_text(fallback));
    }
    PQclear(res);
    return CTL_OK;
}

/* Sets (policy) or removes (policy NULL) the policy of domain. */
static int tls_policy_change(ctl_t *ctl, const char *domain, const char *policy)
{
    const char *p[] = { domain, policy };
    char *old = NULL;
    int rc;
    if ((rc = ctl_begin(ctl)) != CTL_OK ||
        (policy && (rc = relay_domain_not_hosted(ctl, domain, "a TLS policy")) != CTL_OK) ||
        (rc = ctl_query_value(ctl,
                              "SELECT policy FROM relay_tls_policy WHERE domain = $1"
                              " FOR UPDATE",
                              1, p, &old)) != CTL_OK)
        return rc;
    bool changed = policy ? !old || strcmp(old, policy) != 0 : old != NULL;
    if (changed) {
        char detail[NAME_BUF + 64];
        snprintf(detail, sizeof detail, "%s=%s (was %s)", domain, policy ? policy : "unset",
                 old ? old : "unset");
        rc = policy ? ctl_exec(ctl,
                               "INSERT INTO relay_tls_policy (domain, policy) VALUES ($1, $2)"
                               " ON CONFLICT (domain) DO UPDATE"
                               " SET policy = EXCLUDED.policy, updated_at = now()",
                               2, p, NULL)
                    : ctl_exec(ctl, "DELETE FROM relay_tls_policy WHERE domain = $1", 1, p,
                               NULL);
        if (rc == CTL_OK)
            rc = ctl_audit_commit(ctl, "relay tls-policy", detail);
        if (rc != CTL_OK) {
            free(old);
            return rc;
        }
    } else {
        ctl_rollback(ctl);
    }
    if (ctl->json) {
        out_json_ok("relay tls-policy", "domain", domain);
        fprintf(ctl_out(), ",\"policy\":");
        json_str(ctl_out(), policy);
        fprintf(ctl_out(), ",\"changed\":%s,\"previous\":", changed ? "true" : "false");
        json_str(ctl_out(), old);
        fprintf(ctl_out(), "}\n");
    } else if (policy && !changed) {
        fprintf(ctl_out(), "TLS policy for %s is %s already (nothing changed)\n", tls_domain_shown(domain),
               policy);
    } else if (policy) {
        fprintf(ctl_out(), "TLS policy for %s: %s, %s (was %s)\n", tls_domain_shown(domain), policy,
               tls_policy_text(policy), old ? old : "not set");
    } else if (!changed) {
        fprintf(ctl_out(), "%s has no TLS policy of its own (nothing changed)\n", domain);
    } else {
        fprintf(ctl_out(), "TLS policy for %s removed (was %s): %s\n", domain, old,
               strcmp(domain, "*") == 0 ? "a domain without a policy of its own gets " TLS_DEFAULT
                                        : "the policy for * applies, else " TLS_DEFAULT);
    }
    fflush(ctl_out());
    free(old);
    if (changed)
        ctl_announce(ctl, "tls-policy");
    return CTL_OK;
}

int cmd_relay_tls_policy(ctl_t *ctl, char **args, int nargs)
{
    const opt_spec_t specs[] = { { "--unset", false } };
    const char *values[1];
    char **pos = calloc((size_t)nargs + 1, sizeof *pos);
    if (!pos)
        return CTL_DB;
    int npos = 0;
    int rc = opt_parse(ctl, specs, 1, args, nargs, values, pos, &npos);
    bool unset = values[0] != NULL;
    char domain[NAME_BUF], policy[16];
    if (rc != CTL_OK) {
        /* reported */
    } else if (npos == 0 && !unset) {
        rc = tls_policy_list(ctl);
    } else if (npos == 0 || npos > 2 || (npos == 1 && !unset) || (npos == 2 && unset)) {
        ctl->usage = true;
        rc = ctl_error(npos == 0   ? "--unset needs a domain (or '*')"
                       : npos > 2  ? "too many arguments"
                       : npos == 1 ? "missing policy: may, encrypt or verify (or --unset)"
                                   : "give a policy or --unset, not both");
    } else if ((rc = relay_domain_arg(pos[0], domain)) != CTL_OK) {
        /* reported */
    } else if (!unset && !tls_policy_arg(pos[1], policy)) {
        rc = ctl_error("unknown TLS policy '%s': use may, encrypt or verify", pos[1]);
    } else {
        rc = tls_policy_change(ctl, domain, unset ? NULL : policy);
    }
    free(pos);
    return rc;
}
