/* mailctl alert-address add|del|list: where the notifier sends HAMR and harvesting alerts.
 * An address of an existing user gets the alert in its INBOX; an address outside the
 * hosted domains gets it through the outbound queue; an address in a hosted domain
 * without such a user cannot get it at all, and mailctl says so. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"

/* How alerts reach an address: the SQL expression over column a (an address). */
#define DELIVERY_SQL(a)                                                                    \
    "CASE WHEN EXISTS (SELECT 1 FROM users u WHERE u.address = " a ") THEN 'mailbox'"      \
    " WHEN EXISTS (SELECT 1 FROM domains d WHERE d.name = split_part(" a ", '@', 2))"      \
    " THEN 'none' ELSE 'relay' END"

static int alert_address_arg(const char *arg, char *address)
{
    const char *domain;
    return name_address_arg(arg, address, &domain);
}

/* A word for people about a delivery kind. */
static const char *delivery_text(const char *kind)
{
    if (strcmp(kind, "mailbox") == 0)
        return "local mailbox";
    if (strcmp(kind, "relay") == 0)
        return "relayed (outbound queue)";
    return "NOT DELIVERED: hosted domain, no such user";
}

static void alert_print(ctl_t *ctl, const char *action, const char *address, bool changed,
                        const char *delivery, const char *text)
{
    if (ctl->json) {
        out_json_ok(action, "address", address);
        fprintf(ctl_out(), ",\"changed\":%s", changed ? "true" : "false");
        if (delivery) {
            fprintf(ctl_out(), ",\"delivery\":");
            json_str(ctl_out(), delivery);
        }
        fprintf(ctl_out(), "}\n");
    } else {
        fprintf(ctl_out(), "%s %s\n", text, address);
    }
    fflush(ctl_out());
}

int cmd_alert_address_add(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char address[NAME_BUF];
    int rc = alert_address_arg(args[0], address);
    if (rc != CTL_OK)
        return rc;
    const char *p[] = { address };
    char *delivery; /* NULL: it was an alert address already */
    if ((rc = ctl_begin(ctl)) != CTL_OK ||
        (rc = ctl_query_value(ctl,
                              "INSERT INTO alert_addresses (address) VALUES ($1)"
                              " ON CONFLICT (address) DO NOTHING"
                              " RETURNING " DELIVERY_SQL("alert_addresses.address"),
                              1, p, &delivery)) != CTL_OK)
        return rc;
    if (!delivery) {
        ctl_rollback(ctl);
        alert_print(ctl, "alert-address add", address, false, NULL,
                    "already an alert address (nothing changed):");
        return CTL_OK;
    }
    if ((rc = ctl_audit_commit(ctl, "alert-address add", address)) != CTL_OK) {
        free(delivery);
        return rc;
    }
    alert_print(ctl, "alert-address add", address, true, delivery,
                "alerts will be sent to");
    if (strcmp(delivery, "none") == 0)
        ctl_warn("%s is in a hosted domain but there is no such user: alerts to it are lost "
                 "until it exists (mailctl user add %s)",
                 address, address);
    else if (strcmp(delivery, "relay") == 0 && !ctl->json)
        fprintf(ctl_out(), "note: %s is not hosted here; alerts to it go through the outbound queue\n",
               address);
    free(delivery);
    ctl_announce(ctl, "alert-addresses");
    return CTL_OK;
}

int cmd_alert_address_del(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char address[NAME_BUF];
    int rc = alert_address_arg(args[0], address);
    if (rc != CTL_OK)
        return rc;
    const char *p[] = { address };
    int removed;
    if ((rc = ctl_begin(ctl)) != CTL_OK ||
        (rc = ctl_exec(ctl, "DELETE FROM alert_addresses WHERE address = $1 RETURNING address",
                       1, p, &removed)) != CTL_OK)
        return rc;
    if (removed != 1) {
        ctl_rollback(ctl);
        return ctl_error("%s is not an alert address (see mailctl alert-address list)",
                         address);
    }
    long left;
    if ((rc = ctl_count(ctl, "SELECT count(*) FROM alert_addresses", 0, NULL, &left)) != CTL_OK ||
        (rc = ctl_audit_commit(ctl, "alert-address del", address)) != CTL_OK)
        return rc;
    alert_print(ctl, "alert-address del", address, true, NULL,
                "alerts will no longer be sent to");
    if (left == 0)
        ctl_warn("there are no alert addresses left: nobody hears about hacked accounts or "
                 "blocks (mailctl alert-address add ADDRESS)");
    ctl_announce(ctl, "alert-addresses");
    return CTL_OK;
}

int cmd_alert_address_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *res = ctl_query(ctl,
                              "SELECT address, " SQL_UTC("created_at") ", "
                              DELIVERY_SQL("alert_addresses.address")
                              " FROM alert_addresses ORDER BY address",
                              0, NULL);
    if (!res)
        return CTL_DB;
    static const out_col_t cols[] = {
        { "address", 0, OUT_STR },
        { "created_at", 1, OUT_STR },
        { "delivery", 2, OUT_STR },
    };
    int n = PQntuples(res);
    if (ctl->json) {
        fprintf(ctl_out(), "{\"alert_addresses\":");
        out_json_rows(res, cols, sizeof cols / sizeof cols[0]);
        fprintf(ctl_out(), "}\n");
    } else if (n == 0) {
        fprintf(ctl_out(), "no alert addresses: nobody is told about hacked accounts or blocks\n"
               "(mailctl alert-address add ADDRESS)\n");
    } else {
        int w = out_width(res, 0, 7);
        fprintf(ctl_out(), "%-*s  %-20s  %s\n", w, "ADDRESS", "ADDED", "DELIVERY");
        for (int i = 0; i < n; i++)
            fprintf(ctl_out(), "%-*s  %-20s  %s\n", w, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                   delivery_text(PQgetvalue(res, i, 2)));
    }
    PQclear(res);
    return CTL_OK;
}
