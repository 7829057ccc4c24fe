/* mailctl: addresses and networks an administrator types, and the lists of networks
 * (relay_networks for relay allow|deny|list, harvest_exempt for harvest exempt ...).
 * PostgreSQL parses the networks; mailctl turns its errors into plain words. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"

#define NETLIST_SQL_MAX 256

int network_query(ctl_t *ctl, const char *text, const char *sql, const char *examples,
                  PGresult **res_r)
{
    *res_r = NULL;
    if (!name_cidr_chars(text))
        return ctl_error("'%s' is not an IPv4 or IPv6 address or network (examples: %s)", text,
                         examples);
    const char *p[] = { text };
    PGresult *res = ctl_query_raw(ctl, sql, 1, p);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* A data exception (class 22) is the input's fault, anything else the database's. */
        if (strncmp(ctl_sqlstate(res), "22", 2) != 0 || PQstatus(ctl->pg) != CONNECTION_OK)
            return ctl_report(ctl, res);
        PQclear(res);
        return ctl_error("'%s' is not an IPv4 or IPv6 address or network (examples: %s)", text,
                         examples);
    }
    *res_r = res;
    return CTL_OK;
}

int network_arg(ctl_t *ctl, const char *text, char *net, size_t net_len)
{
    /* Parsed as inet first: cidr would refuse host bits without saying which network
     * was meant. */
    PGresult *res;
    int rc = network_query(ctl, text,
                           "SELECT network(i)::text, network(i)::inet = i, masklen(i)"
                           " FROM (SELECT $1::inet AS i) s",
                           "192.0.2.7, 10.0.0.0/8, 2001:db8::/32", &res);
    if (rc != CTL_OK)
        return rc;
    bool exact = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
    snprintf(net, net_len, "%s", PQgetvalue(res, 0, 0));
    if (!exact)
        rc = ctl_error("'%s' has bits set to the right of the /%s prefix: did you mean %s?",
                       text, PQgetvalue(res, 0, 2), net);
    PQclear(res);
    return rc;
}

/* The outcome of a change on ctl_out(). */
static void netlist_print(ctl_t *ctl, const char *action, const char *net, bool changed,
                          const char *text)
{
    if (ctl->json) {
        out_json_ok(action, "network", net);
        fprintf(ctl_out(), ",\"changed\":%s}\n", changed ? "true" : "false");
    } else {
        fprintf(ctl_out(), "%s %s\n", text, net);
    }
    fflush(ctl_out());
}

/* The start of a change: checks the network text into net, begins the transaction and runs
 * the statement sql_fmt (list's table for its %s, net as $1); *rows_r: the rows returned. */
static int netlist_write(ctl_t *ctl, const netlist_t *list, const char *text,
                         const char *sql_fmt, char *net, int *rows_r)
{
    int rc = network_arg(ctl, text, net, NETLIST_NET_MAX);
    if (rc != CTL_OK || (rc = ctl_begin(ctl)) != CTL_OK)
        return rc;
    char sql[NETLIST_SQL_MAX];
    snprintf(sql, sizeof sql, sql_fmt, list->table);
    const char *p[] = { net };
    return ctl_exec(ctl, sql, 1, p, rows_r);
}

int netlist_add(ctl_t *ctl, const netlist_t *list, const char *text, netlist_added_fn added,
                void *arg, bool *added_r)
{
    *added_r = false;
    char net[NETLIST_NET_MAX];
    int rows;
    int rc = netlist_write(ctl, list, text,
                           "INSERT INTO %s (network) VALUES ($1::cidr)"
                           " ON CONFLICT (network) DO NOTHING RETURNING network",
                           net, &rows);
    if (rc != CTL_OK)
        return rc;
    if (rows != 1) {
        ctl_rollback(ctl);
        netlist_print(ctl, list->add_action, net, false, list->present);
        return CTL_OK;
    }
    if ((added && (rc = added(ctl, net, arg)) != CTL_OK) ||
        (rc = ctl_audit_commit(ctl, list->add_action, net)) != CTL_OK)
        return rc;
    *added_r = true;
    netlist_print(ctl, list->add_action, net, true, list->added);
    return CTL_OK;
}

int netlist_del(ctl_t *ctl, const netlist_t *list, const char *text)
{
    char net[NETLIST_NET_MAX];
    int rows;
    int rc = netlist_write(ctl, list, text,
                           "DELETE FROM %s WHERE network = $1::cidr RETURNING network", net,
                           &rows);
    if (rc != CTL_OK)
        return rc;
    if (rows == 0) {
        ctl_rollback(ctl);
        /* Say which listed network covers it, if one does: the list is not split. */
        char sql[NETLIST_SQL_MAX];
        snprintf(sql, sizeof sql,
                 "SELECT network::text FROM %s WHERE network >>= $1::cidr"
                 " ORDER BY masklen(network) DESC LIMIT 1",
                 list->table);
        const char *p[] = { net };
        char *cover;
        if ((rc = ctl_query_value(ctl, sql, 1, p, &cover)) != CTL_OK)
            return rc;
        if (cover)
            rc = ctl_error("%s is not in %s itself; it is covered by %s "
                           "(remove that with: mailctl %s %s)",
                           net, list->name, cover, list->del_action, cover);
        else
            rc = ctl_error("%s is not in %s", net, list->name);
        free(cover);
        return rc;
    }
    if ((rc = ctl_audit_commit(ctl, list->del_action, net)) != CTL_OK)
        return rc;
    netlist_print(ctl, list->del_action, net, true, list->removed);
    return CTL_OK;
}

PGresult *netlist_query(ctl_t *ctl, const netlist_t *list)
{
    char sql[NETLIST_SQL_MAX];
    snprintf(sql, sizeof sql,
             "SELECT network::text, " SQL_UTC("created_at") " FROM %s ORDER BY network",
             list->table);
    return ctl_query(ctl, sql, 0, NULL);
}

void netlist_print_json(const PGresult *res)
{
    static const out_col_t cols[] = {
        { "network", 0, OUT_STR },
        { "created_at", 1, OUT_STR },
    };
    out_json_rows(res, cols, sizeof cols / sizeof cols[0]);
}

void netlist_print_table(const PGresult *res, const char *indent)
{
    int w = out_width(res, 0, 7);
    fprintf(ctl_out(), "%s%-*s  %s\n", indent, w, "NETWORK", "ADDED");
    for (int i = 0; i < PQntuples(res); i++)
        fprintf(ctl_out(), "%s%-*s  %s\n", indent, w, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
}
