/* mailctl relay mode|allow|deny|list. The relay list holds cidr values; PostgreSQL parses
 * them, mailctl turns its errors into plain words. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mailctl.h"
#include "settings.h"

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
        rc = ctl_audit(ctl, "relay mode", mode);
    if (rc == CTL_OK)
        rc = ctl_commit(ctl);
    if (rc != CTL_OK) {
        free(old);
        return rc;
    }
    if (ctl->json) {
        printf("{\"ok\":true,\"action\":\"relay mode\",\"mode\":");
        json_str(stdout, mode);
        printf(",\"previous\":");
        json_str(stdout, old);
        printf("}\n");
    } else {
        printf("relay mode: %s (was %s)\n", mode, old ? old : "?");
    }
    fflush(stdout);
    free(old);
    if (strcmp(mode, "anyone") == 0)
        relay_open_warning();
    ctl_announce(ctl, "relay");
    return CTL_OK;
}

int network_arg(ctl_t *ctl, const char *text, char *net, size_t net_len)
{
    if (!name_cidr_chars(text))
        return ctl_error("'%s' is not an IPv4 or IPv6 address or network "
                         "(examples: 192.0.2.7, 10.0.0.0/8, 2001:db8::/32)",
                         text);
    const char *p[] = { text };
    /* Parsed as inet first: cidr would refuse host bits without saying which network
     * was meant. */
    PGresult *res = ctl_query_raw(ctl,
                                  "SELECT network(i)::text, network(i)::inet = i, masklen(i)"
                                  " FROM (SELECT $1::inet AS i) s",
                                  1, p);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* A data exception (class 22) is the input's fault, anything else the database's. */
        if (strncmp(ctl_sqlstate(res), "22", 2) != 0 || PQstatus(ctl->pg) != CONNECTION_OK)
            return ctl_report(ctl, res);
        PQclear(res);
        return ctl_error("'%s' is not an IPv4 or IPv6 address or network "
                         "(examples: 192.0.2.7, 10.0.0.0/8, 2001:db8::/32)",
                         text);
    }
    bool exact = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    snprintf(net, net_len, "%s", PQgetvalue(res, 0, 0));
    if (!exact) {
        int rc = ctl_error("'%s' has bits set to the right of the /%s prefix: did you mean "
                           "%s?",
                           text, PQgetvalue(res, 0, 2), net);
        PQclear(res);
        return rc;
    }
    PQclear(res);
    return CTL_OK;
}

static void relay_print_change(ctl_t *ctl, const char *action, const char *net, bool changed,
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

int cmd_relay_allow(ctl_t *ctl, char **args, int nargs)
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
                              "INSERT INTO relay_networks (network) VALUES ($1::cidr)"
                              " ON CONFLICT (network) DO NOTHING RETURNING network",
                              1, p);
    if (!res)
        return CTL_DB;
    bool added = PQntuples(res) == 1;
    PQclear(res);
    if (!added) {
        ctl_rollback(ctl);
        relay_print_change(ctl, "relay allow", net, false,
                           "already in the relay list (nothing changed):");
        return CTL_OK;
    }
    char *mode = NULL;
    if ((rc = ctl_audit(ctl, "relay allow", net)) != CTL_OK ||
        (rc = relay_mode_get(ctl, &mode)) != CTL_OK || (rc = ctl_commit(ctl)) != CTL_OK) {
        free(mode);
        return rc;
    }
    relay_print_change(ctl, "relay allow", net, true, "added to the relay list:");
    if (mode && strcmp(mode, "select") != 0)
        fprintf(stderr,
                "mailctl: note: relay.mode is %s; the relay list is used only in mode select "
                "(mailctl relay mode select)\n",
                mode);
    free(mode);
    ctl_announce(ctl, "relay");
    return CTL_OK;
}

int cmd_relay_deny(ctl_t *ctl, char **args, int nargs)
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
        ctl, "DELETE FROM relay_networks WHERE network = $1::cidr RETURNING network", 1, p);
    if (!res)
        return CTL_DB;
    bool removed = PQntuples(res) > 0;
    PQclear(res);
    if (!removed) {
        ctl_rollback(ctl);
        /* Say which listed network covers it, if one does: the list is not split. */
        res = ctl_query(ctl,
                        "SELECT network::text FROM relay_networks WHERE network >>= $1::cidr"
                        " ORDER BY masklen(network) DESC LIMIT 1",
                        1, p);
        if (!res)
            return CTL_DB;
        if (PQntuples(res) == 1)
            rc = ctl_error("%s is not in the relay list itself; it is covered by %s "
                           "(remove that with: mailctl relay deny %s)",
                           net, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 0));
        else
            rc = ctl_error("%s is not in the relay list", net);
        PQclear(res);
        return rc;
    }
    if ((rc = ctl_audit(ctl, "relay deny", net)) != CTL_OK || (rc = ctl_commit(ctl)) != CTL_OK)
        return rc;
    relay_print_change(ctl, "relay deny", net, true, "removed from the relay list:");
    ctl_announce(ctl, "relay");
    return CTL_OK;
}

int cmd_relay_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    char *mode = NULL;
    int rc = relay_mode_get(ctl, &mode);
    if (rc != CTL_OK)
        return rc;
    PGresult *res = ctl_query(ctl,
                              "SELECT network::text, " SQL_UTC("created_at")
                              " FROM relay_networks ORDER BY network",
                              0, NULL);
    if (!res) {
        free(mode);
        return CTL_DB;
    }
    int n = PQntuples(res);
    if (ctl->json) {
        printf("{\"mode\":");
        json_str(stdout, mode);
        printf(",\"networks\":[");
        for (int i = 0; i < n; i++) {
            printf("%s{\"network\":", i ? "," : "");
            json_str(stdout, PQgetvalue(res, i, 0));
            printf(",\"created_at\":");
            json_str(stdout, PQgetvalue(res, i, 1));
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("relay mode: %s\n", mode);
        if (strcmp(mode, "anyone") == 0)
            printf("WARNING: this server is an OPEN RELAY\n");
        if (n == 0) {
            printf("relay list: empty\n");
        } else {
            if (strcmp(mode, "select") != 0)
                printf("relay list (used only in mode select):\n");
            else
                printf("relay list:\n");
            int w = out_width(res, 0, 7);
            printf("  %-*s  %s\n", w, "NETWORK", "ADDED");
            for (int i = 0; i < n; i++)
                printf("  %-*s  %s\n", w, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
        }
    }
    PQclear(res);
    free(mode);
    return CTL_OK;
}
