/* relayd: where a domain's mail goes (relayd.h). Transports (relay_transports) and STARTTLS
 * policies (relay_tls_policy) are loaded from PostgreSQL at start, on every configuration
 * change mailctl announces, and every refresh interval; a domain's own entry wins over
 * '*'. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "relayd.h"

#define ROUTE_REFRESH_MS 60000

typedef struct transport {
    char *domain;
    char *host;
    int port;
} transport_t;

typedef struct policy {
    char *domain;
    route_tls_t tls;
} policy_t;

typedef struct route_table {
    relayd_t *rd;
    transport_t *transports;
    size_t ntransports;
    policy_t *policies;
    size_t npolicies;
    bool loaded;
    bool loading;
    bool again;
    bool closed;  /* route_destroy came while a load was out: the load frees the table */
    uv_timer_t refresh;
} route_table_t;

static void table_clear(route_table_t *t)
{
    for (size_t i = 0; i < t->ntransports; i++) {
        free(t->transports[i].domain);
        free(t->transports[i].host);
    }
    free(t->transports);
    t->transports = NULL;
    t->ntransports = 0;
    for (size_t i = 0; i < t->npolicies; i++)
        free(t->policies[i].domain);
    free(t->policies);
    t->policies = NULL;
    t->npolicies = 0;
}

const char *route_tls_name(route_tls_t t)
{
    return t == ROUTE_TLS_VERIFY ? "verify" : t == ROUTE_TLS_ENCRYPT ? "encrypt" : "may";
}

/* One result: rows ('t', domain, host, port) for transports, ('p', domain, policy, '') for
 * TLS policies. */
static void load_cb(void *arg, PGresult *res)
{
    route_table_t *t = arg;
    t->loading = false;
    if (t->closed) {
        table_clear(t);
        free(t);
        return;
    }
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("cannot load transports and TLS policies, keeping the last ones",
                 "error=\"%s\"", res ? PQresultErrorMessage(res) : "database unavailable");
        return;
    }
    table_clear(t);
    int n = PQntuples(res);
    t->transports = calloc(n ? (size_t)n : 1, sizeof *t->transports);
    t->policies = calloc(n ? (size_t)n : 1, sizeof *t->policies);
    if (!t->transports || !t->policies) {
        log_error("out of memory loading transports", "%s", "");
        return;
    }
    for (int i = 0; i < n; i++) {
        const char *kind = PQgetvalue(res, i, 0), *v = PQgetvalue(res, i, 2);
        if (kind[0] == 't') {
            transport_t *x = &t->transports[t->ntransports];
            x->domain = strdup(PQgetvalue(res, i, 1));
            x->host = strdup(v);
            x->port = atoi(PQgetvalue(res, i, 3));
            if (x->domain && x->host)
                t->ntransports++;
            else {
                free(x->domain);
                free(x->host);
            }
        } else {
            policy_t *p = &t->policies[t->npolicies];
            p->domain = strdup(PQgetvalue(res, i, 1));
            p->tls = strcmp(v, "verify") == 0    ? ROUTE_TLS_VERIFY
                     : strcmp(v, "encrypt") == 0 ? ROUTE_TLS_ENCRYPT
                                                 : ROUTE_TLS_MAY;
            if (p->domain)
                t->npolicies++;
        }
    }
    bool first = !t->loaded;
    t->loaded = true;
    log_info(first ? "routes loaded" : "routes reloaded", "transports=%zu tls_policies=%zu",
             t->ntransports, t->npolicies);
    if (t->again) {
        t->again = false;
        route_reload(t->rd);
    }
    if (first)
        queue_pump(t->rd);
}

void route_reload(relayd_t *rd)
{
    route_table_t *t = rd->routes;
    if (!t || !rd->svc->db)
        return;
    if (t->loading) {
        t->again = true;
        return;
    }
    t->loading = true;
    db_query(rd->svc->db,
             "SELECT 't', domain, host, port::text FROM relay_transports "
             "UNION ALL SELECT 'p', domain, policy, '' FROM relay_tls_policy",
             0, NULL, NULL, NULL, load_cb, t);
}

static void refresh_cb(uv_timer_t *h)
{
    route_reload(((route_table_t *)h->data)->rd);
}

bool route_loaded(const relayd_t *rd)
{
    return rd->routes && rd->routes->loaded;
}

int route_start(relayd_t *rd)
{
    route_table_t *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    t->rd = rd;
    rd->routes = t;
    uv_timer_init(rd->svc->loop, &t->refresh);
    t->refresh.data = t;
    uv_timer_start(&t->refresh, refresh_cb, ROUTE_REFRESH_MS, ROUTE_REFRESH_MS);
    route_reload(rd);
    return 0;
}

static void refresh_close_cb(uv_handle_t *h)
{
    route_table_t *t = h->data;
    if (t->loading) {
        t->closed = true;
        return;
    }
    table_clear(t);
    free(t);
}

void route_destroy(relayd_t *rd)
{
    if (!rd->routes)
        return;
    uv_close((uv_handle_t *)&rd->routes->refresh, refresh_close_cb);
    rd->routes = NULL;
}

bool route_next_hop(const relayd_t *rd, const char *domain, char *hop, size_t hop_len,
                    char *host, size_t host_len, int *port)
{
    const transport_t *any = NULL, *own = NULL;
    route_table_t *t = rd->routes;
    for (size_t i = 0; t && i < t->ntransports; i++) {
        if (strcasecmp(t->transports[i].domain, domain) == 0)
            own = &t->transports[i];
        else if (strcmp(t->transports[i].domain, "*") == 0)
            any = &t->transports[i];
    }
    const transport_t *x = own ? own : any;
    if (!x) {
        snprintf(hop, hop_len, "%s", domain);
        snprintf(host, host_len, "%s", domain);
        *port = rd->mx_port;
        return false;
    }
    /* "[2001:db8::1]" names an IPv6 address */
    size_t hl = strlen(x->host);
    if (hl >= 2 && x->host[0] == '[' && x->host[hl - 1] == ']')
        snprintf(host, host_len, "%.*s", (int)(hl - 2), x->host + 1);
    else
        snprintf(host, host_len, "%s", x->host);
    snprintf(hop, hop_len, "[%s]:%d", host, x->port);
    *port = x->port;
    return true;
}

route_tls_t route_tls_policy(const relayd_t *rd, const char *domain)
{
    route_table_t *t = rd->routes;
    const policy_t *any = NULL;
    for (size_t i = 0; t && i < t->npolicies; i++) {
        if (strcasecmp(t->policies[i].domain, domain) == 0)
            return t->policies[i].tls;
        if (strcmp(t->policies[i].domain, "*") == 0)
            any = &t->policies[i];
    }
    return any ? any->tls : ROUTE_TLS_MAY;
}
