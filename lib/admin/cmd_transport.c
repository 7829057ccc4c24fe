/* mailctl transport set|del|list: where relayd sends mail for a domain instead of the
 * domain's MX hosts (table relay_transports): a smarthost, or a host under a test's
 * control. The domain '*' stands for every domain without an entry of its own.
 *
 * The host is stored lower-cased when it is a name, in canonical form when it is an IP
 * address, an IPv6 address without the brackets it is typed in. Mail for a hosted domain
 * never leaves, so such a domain gets no transport. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"

#define PORT_MAX 65535
#define ALL_DOMAINS "*"

typedef struct transport_dest {
    char host[NAME_BUF]; /* a lower-case name, or an IPv4/IPv6 address (no brackets) */
    char port[8];        /* 1..65535, decimal */
} transport_dest_t;

int relay_domain_arg(const char *arg, char *name)
{
    if (strcmp(arg, ALL_DOMAINS) == 0) {
        strcpy(name, ALL_DOMAINS);
        return CTL_OK;
    }
    return name_domain_arg(arg, name);
}

/* "host:port", "[v6]:port": how people write a destination. */
static void dest_text(const char *host, const char *port, char *out, size_t out_len)
{
    snprintf(out, out_len, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
}

/* The port after HOST: 1..65535 in decimal. */
static int port_arg(const char *text, char *port, size_t port_len)
{
    size_t n = strlen(text);
    if (n == 0)
        return ctl_error("missing port: write HOST:PORT, e.g. smtp.example.net:587");
    long value = 0;
    if (n > 5 || strspn(text, "0123456789") != n || (value = strtol(text, NULL, 10)) < 1 ||
        value > PORT_MAX)
        return ctl_error("invalid port '%s': a port is a number from 1 to %d", text, PORT_MAX);
    snprintf(port, port_len, "%ld", value);
    return CTL_OK;
}

/* A host name: the rules of a domain name (lower-cased in place). */
static int host_name_check(char *name)
{
    static const char subject[] = "the domain name";
    char why[200];
    if (name_domain_check(name, why, sizeof why))
        return CTL_OK;
    if (strncmp(why, subject, sizeof subject - 1) == 0)
        return ctl_error("invalid host name: the host name%s", why + sizeof subject - 1);
    return ctl_error("invalid host name: %s", why);
}

/* Parses HOST:PORT, where HOST is a host name, an IPv4 address or an IPv6 address in
 * brackets. */
static int transport_dest_arg(const char *arg, transport_dest_t *d)
{
    char text[NAME_BUF];
    if (!name_copy(text, arg, "destination"))
        return CTL_USAGE;
    const char *port;
    if (text[0] == '[') {
        char *close = strchr(text, ']');
        if (!close)
            return ctl_error("missing ']' after the IPv6 address: write [ADDRESS]:PORT, e.g. "
                             "[2001:db8::25]:25");
        *close = '\0';
        struct in6_addr a6;
        if (inet_pton(AF_INET6, text + 1, &a6) != 1)
            return ctl_error("'%s' is not an IPv6 address", text + 1);
        inet_ntop(AF_INET6, &a6, d->host, sizeof d->host);
        if (close[1] != ':')
            return ctl_error("missing port: write [ADDRESS]:PORT, e.g. [%s]:25", d->host);
        port = close + 2;
    } else {
        char *colon = strrchr(text, ':');
        if (colon && strchr(text, ':') != colon)
            return ctl_error("write an IPv6 address in brackets: [ADDRESS]:PORT, e.g. "
                             "[2001:db8::25]:25");
        if (!colon)
            return ctl_error("missing port: write HOST:PORT, e.g. smtp.example.net:587");
        *colon = '\0';
        port = colon + 1;
        if (!*text)
            return ctl_error("missing host: write HOST:PORT, e.g. smtp.example.net:587");
        if (strspn(text, "0123456789.") == strlen(text)) {
            struct in_addr a4;
            if (inet_pton(AF_INET, text, &a4) != 1)
                return ctl_error("'%s' is not an IPv4 address", text);
            inet_ntop(AF_INET, &a4, d->host, sizeof d->host);
        } else {
            int rc = host_name_check(text);
            if (rc != CTL_OK)
                return rc;
            snprintf(d->host, sizeof d->host, "%s", text);
        }
    }
    return port_arg(port, d->port, sizeof d->port);
}

int relay_domain_not_hosted(ctl_t *ctl, const char *domain, const char *what)
{
    if (strcmp(domain, ALL_DOMAINS) == 0)
        return CTL_OK;
    const char *p[] = { domain };
    long hosted;
    int rc = ctl_count(ctl, "SELECT count(*) FROM domains WHERE name = $1", 1, p, &hosted);
    if (rc != CTL_OK)
        return rc;
    if (hosted) {
        ctl_rollback(ctl);
        return ctl_error("%s is hosted here: its mail is delivered locally and never leaves, "
                         "so %s for it would never be used",
                         domain, what);
    }
    return CTL_OK;
}

/* "example.net", or "* (every domain without a transport of its own)". */
static const char *domain_shown(const char *domain)
{
    return strcmp(domain, ALL_DOMAINS) == 0 ? "* (every domain without a transport of its own)"
                                            : domain;
}

int cmd_transport_set(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char domain[NAME_BUF];
    transport_dest_t d;
    int rc = relay_domain_arg(args[0], domain);
    if (rc == CTL_OK)
        rc = transport_dest_arg(args[1], &d);
    if (rc != CTL_OK)
        return rc;
    char dest[NAME_BUF + 16], old_dest[NAME_BUF + 16] = "";
    dest_text(d.host, d.port, dest, sizeof dest);

    const char *p[] = { domain, d.host, d.port };
    if ((rc = ctl_begin(ctl)) != CTL_OK ||
        (rc = relay_domain_not_hosted(ctl, domain, "a transport")) != CTL_OK)
        return rc;
    PGresult *old = ctl_query(ctl,
                              "SELECT host, port FROM relay_transports WHERE domain = $1"
                              " FOR UPDATE",
                              1, p);
    if (!old)
        return CTL_DB;
    if (PQntuples(old) == 1)
        dest_text(PQgetvalue(old, 0, 0), PQgetvalue(old, 0, 1), old_dest, sizeof old_dest);
    PQclear(old);
    bool changed = strcmp(old_dest, dest) != 0;
    if (changed) {
        char detail[4 * NAME_BUF];
        snprintf(detail, sizeof detail, "%s -> %s (was %s)", domain, dest,
                 *old_dest ? old_dest : "none");
        if ((rc = ctl_exec(ctl,
                           "INSERT INTO relay_transports (domain, host, port)"
                           " VALUES ($1, $2, $3::integer) ON CONFLICT (domain) DO UPDATE"
                           " SET host = EXCLUDED.host, port = EXCLUDED.port,"
                           " updated_at = now()",
                           3, p, NULL)) != CTL_OK ||
            (rc = ctl_audit_commit(ctl, "transport set", detail)) != CTL_OK)
            return rc;
    } else {
        ctl_rollback(ctl);
    }
    if (ctl->json) {
        out_json_ok("transport set", "domain", domain);
        fprintf(ctl_out(), ",\"host\":");
        json_str(ctl_out(), d.host);
        fprintf(ctl_out(), ",\"port\":%s,\"changed\":%s,\"previous\":", d.port, changed ? "true" : "false");
        json_str(ctl_out(), *old_dest ? old_dest : NULL);
        fprintf(ctl_out(), "}\n");
    } else if (!changed) {
        fprintf(ctl_out(), "mail for %s goes to %s already (nothing changed)\n", domain_shown(domain), dest);
    } else {
        fprintf(ctl_out(), "mail for %s goes to %s (was %s)\n", domain_shown(domain), dest,
               *old_dest ? old_dest : strcmp(domain, ALL_DOMAINS) == 0 ? "each domain's MX hosts"
                                                                       : "its MX hosts");
    }
    fflush(ctl_out());
    if (changed)
        ctl_announce(ctl, "transport");
    return CTL_OK;
}

int cmd_transport_del(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    char domain[NAME_BUF];
    int rc = relay_domain_arg(args[0], domain);
    if (rc != CTL_OK)
        return rc;
    const char *p[] = { domain };
    if ((rc = ctl_begin(ctl)) != CTL_OK)
        return rc;
    PGresult *res = ctl_query(ctl,
                              "DELETE FROM relay_transports WHERE domain = $1"
                              " RETURNING host, port",
                              1, p);
    if (!res)
        return CTL_DB;
    if (PQntuples(res) != 1) {
        PQclear(res);
        ctl_rollback(ctl);
        return ctl_error("there is no transport for %s (see mailctl transport list)", domain);
    }
    char dest[NAME_BUF + 16], detail[3 * NAME_BUF];
    dest_text(PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), dest, sizeof dest);
    PQclear(res);
    snprintf(detail, sizeof detail, "%s (was %s)", domain, dest);
    if ((rc = ctl_audit_commit(ctl, "transport del", detail)) != CTL_OK)
        return rc;
    if (ctl->json) {
        out_json_ok("transport del", "domain", domain);
        fprintf(ctl_out(), ",\"previous\":");
        json_str(ctl_out(), dest);
        fprintf(ctl_out(), "}\n");
    } else if (strcmp(domain, ALL_DOMAINS) == 0) {
        fprintf(ctl_out(), "removed the transport for * (was %s): mail goes to each domain's MX hosts "
               "again\n",
               dest);
    } else {
        fprintf(ctl_out(), "removed the transport for %s (was %s): its mail goes to %s\n", domain, dest,
               "its MX hosts again, or to the transport for * if there is one");
    }
    fflush(ctl_out());
    ctl_announce(ctl, "transport");
    return CTL_OK;
}

int cmd_transport_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *res = ctl_query(ctl,
                              "SELECT t.domain, t.host, t.port, " SQL_UTC("t.updated_at") ","
                              " EXISTS (SELECT 1 FROM domains d WHERE d.name = t.domain)"
                              " FROM relay_transports t ORDER BY t.domain = '*', t.domain",
                              0, NULL);
    if (!res)
        return CTL_DB;
    static const out_col_t cols[] = {
        { "domain", 0, OUT_STR },
        { "host", 1, OUT_STR },
        { "port", 2, OUT_NUM },
        { "updated_at", 3, OUT_STR },
        { "hosted", 4, OUT_BOOL },
    };
    int n = PQntuples(res);
    if (ctl->json) {
        fprintf(ctl_out(), "{\"transports\":");
        out_json_rows(res, cols, sizeof cols / sizeof cols[0]);
        fprintf(ctl_out(), "}\n");
    } else if (n == 0) {
        fprintf(ctl_out(), "no transports: relayd sends mail to each domain's MX hosts\n"
               "(mailctl transport set DOMAIN HOST:PORT)\n");
    } else {
        int wd = out_width(res, 0, 6), wh = 11;
        for (int i = 0; i < n; i++) {
            char dest[NAME_BUF + 16];
            dest_text(PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), dest, sizeof dest);
            if ((int)strlen(dest) > wh)
                wh = (int)strlen(dest);
        }
        fprintf(ctl_out(), "%-*s  %-*s  %s\n", wd, "DOMAIN", wh, "DESTINATION", "UPDATED");
        for (int i = 0; i < n; i++) {
            char dest[NAME_BUF + 16];
            dest_text(PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), dest, sizeof dest);
            fprintf(ctl_out(), "%-*s  %-*s  %s%s\n", wd, PQgetvalue(res, i, 0), wh, dest,
                   PQgetvalue(res, i, 3),
                   strcmp(PQgetvalue(res, i, 4), "t") == 0
                       ? "  (hosted here now: not used, its mail is delivered locally)"
                       : "");
        }
    }
    PQclear(res);
    return CTL_OK;
}
