#include "net/dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DNS_DEFAULT_TIMEOUT_MS 3000
#define DNS_DEFAULT_TRIES 3
#define DNS_MAX_MX_RECORDS 64 /* MX records considered before keeping DNS_MAX_HOSTS */
#define DNS_ERROR_LEN sizeof(((dns_mx_result_t *)0)->error)

/* A socket c-ares asked to watch. */
typedef struct dns_poll {
    uv_poll_t poll;
    struct dns *dns;
    ares_socket_t fd;
    struct dns_poll *next;
} dns_poll_t;

typedef struct dns_lookup dns_lookup_t;

/* One host whose A and AAAA records are looked up. */
typedef struct dns_target {
    dns_lookup_t *lookup;
    char name[256];
    int preference;
    struct sockaddr_storage v6[DNS_MAX_ADDRS], v4[DNS_MAX_ADDRS];
    size_t n6, n4;
    int status6, status4; /* ARES_SUCCESS, ARES_ENODATA, ARES_ENOTFOUND, ... */
} dns_target_t;

struct dns_lookup {
    struct dns *dns;
    dns_lookup_t *next; /* in the list of lookups in flight or ready */
    dns_result_cb cb;
    void *arg;
    char domain[256];
    int pending;   /* c-ares queries whose callback has not come yet */
    bool ready;    /* pending == 0: the result waits for delivery */
    bool implicit; /* no MX records: the domain itself */
    bool host;     /* dns_resolve_host(): one name's addresses */
    dns_status_t status;
    char error[DNS_ERROR_LEN];
    dns_target_t targets[DNS_MAX_HOSTS];
    size_t ntargets;
};

struct dns {
    uv_loop_t *loop;
    ares_channel channel;
    uv_timer_t timer;   /* c-ares's next timeout */
    uv_timer_t deliver; /* results that came without waiting for the network */
    dns_poll_t *polls;
    dns_lookup_t *lookups;
    int open_handles;
    bool destroying;
};

static void dns_after_ares(struct dns *d);

/* Error texts are cut to the result's fixed size. */
static void dns_set_error(char *error, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dns_set_error(char *error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, DNS_ERROR_LEN, fmt, ap);
    va_end(ap);
}

const char *dns_status_name(dns_status_t status)
{
    switch (status) {
    case DNS_OK:
        return "ok";
    case DNS_NOT_FOUND:
        return "not found";
    case DNS_NULL_MX:
        return "null MX";
    case DNS_TEMPFAIL:
        return "temporary failure";
    case DNS_CANCELLED:
        return "cancelled";
    }
    return "unknown";
}

/* ---- the loop drives c-ares ------------------------------------------------------- */

static void dns_handle_closed(uv_handle_t *h)
{
    struct dns *d = h->data;
    if (h->type == UV_POLL) {
        dns_poll_t *p = (dns_poll_t *)h;
        d = p->dns;
        free(p);
    }
    if (--d->open_handles == 0) {
        free(d);
        ares_library_cleanup();
    }
}

static void dns_poll_cb(uv_poll_t *h, int status, int events)
{
    dns_poll_t *p = (dns_poll_t *)h;
    struct dns *d = p->dns;
    ares_socket_t fd = p->fd; /* p may be closed by what follows */
    if (status < 0) /* let c-ares find the error on the socket */
        ares_process_fd(d->channel, fd, fd);
    else
        ares_process_fd(d->channel, (events & UV_READABLE) ? fd : ARES_SOCKET_BAD,
                        (events & UV_WRITABLE) ? fd : ARES_SOCKET_BAD);
    dns_after_ares(d);
}

static void dns_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    dns_poll_t **pp = &d->polls;
    while (*pp && (*pp)->fd != fd)
        pp = &(*pp)->next;
    dns_poll_t *p = *pp;
    if (!readable && !writable) { /* c-ares closes the socket next */
        if (p) {
            *pp = p->next;
            uv_close((uv_handle_t *)&p->poll, dns_handle_closed);
        }
        return;
    }
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return; /* the query times out */
        if (uv_poll_init_socket(d->loop, &p->poll, fd) < 0) {
            free(p);
            return;
        }
        p->dns = d;
        p->fd = fd;
        p->poll.data = d;
        p->next = d->polls;
        d->polls = p;
        d->open_handles++;
    }
    uv_poll_start(&p->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
                  dns_poll_cb);
}

static void dns_timer_cb(uv_timer_t *t)
{
    struct dns *d = t->data;
    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts */
    dns_after_ares(d);
}

/* Arms the timer for c-ares's next timeout, or stops it when nothing is in flight. */
static void dns_schedule(struct dns *d)
{
    struct timeval tv;
    if (d->destroying)
        return;
    if (!ares_timeout(d->channel, NULL, &tv)) {
        uv_timer_stop(&d->timer);
        return;
    }
    uint64_t ms = (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
    uv_timer_start(&d->timer, dns_timer_cb, ms, 0);
}

/* ---- results --------------------------------------------------------------------- */

static dns_status_t dns_status_of(int ares_status)
{
    switch (ares_status) {
    case ARES_SUCCESS:
        return DNS_OK;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_EBADNAME:
        return DNS_NOT_FOUND;
    case ARES_EDESTRUCTION:
    case ARES_ECANCELLED:
        return DNS_CANCELLED;
    default:
        return DNS_TEMPFAIL;
    }
}

static const char *dns_reason(int ares_status)
{
    switch (ares_status) {
    case ARES_ENOTFOUND:
        return "not found";
    case ARES_ENODATA:
        return "no address record";
    case ARES_EBADNAME:
        return "invalid name";
    default:
        return ares_strerror(ares_status);
    }
}

/* The target's addresses, IPv6 and IPv4 alternating (RFC 8305 section 4), at most
 * DNS_MAX_ADDRS. */
static size_t dns_target_addrs(const dns_target_t *t, struct sockaddr_storage *out)
{
    size_t n = 0, i6 = 0, i4 = 0;
    while (n < DNS_MAX_ADDRS && (i6 < t->n6 || i4 < t->n4)) {
        if (i6 < t->n6)
            out[n++] = t->v6[i6++];
        if (n < DNS_MAX_ADDRS && i4 < t->n4)
            out[n++] = t->v4[i4++];
    }
    return n;
}

/* Why a target has no address: the worse of its two lookups (a temporary failure over
 * "not found" over "no address record"). */
static int dns_target_status(const dns_target_t *t)
{
    int a = t->status6, b = t->status4;
    if (dns_status_of(a) == DNS_TEMPFAIL || dns_status_of(a) == DNS_CANCELLED)
        return a;
    if (dns_status_of(b) == DNS_TEMPFAIL || dns_status_of(b) == DNS_CANCELLED)
        return b;
    return a == ARES_ENOTFOUND ? a : b;
}

/* Sets the lookup's status and error from its targets once every query has answered. */
static void dns_lookup_conclude(dns_lookup_t *l)
{
    if (l->status != DNS_OK || l->ntargets == 0)
        return;
    size_t usable = 0;
    int worst = ARES_ENODATA;
    char reasons[128] = "";
    for (size_t i = 0; i < l->ntargets; i++) {
        const dns_target_t *t = &l->targets[i];
        if (t->n6 + t->n4 > 0) {
            usable++;
            continue;
        }
        int st = dns_target_status(t);
        if (dns_status_of(st) != DNS_NOT_FOUND || worst == ARES_ENODATA)
            worst = st;
        size_t used = strlen(reasons);
        snprintf(reasons + used, sizeof reasons - used, "%s%s: %s", used ? "; " : "", t->name,
                 dns_reason(st));
    }
    if (usable > 0)
        return;
    dns_status_t s = dns_status_of(worst);
    if (s == DNS_CANCELLED) {
        l->status = s;
    } else if (l->implicit) {
        /* Permanent when DNS said there is no address, temporary when it could not answer. */
        l->status = s;
        if (s == DNS_NOT_FOUND)
            dns_set_error(l->error, "%s has no MX record and no address record", l->domain);
        else
            dns_set_error(l->error, "%s has no MX record and its address lookup failed: %s",
                          l->domain, dns_reason(worst));
    } else if (l->host) {
        l->status = s;
        dns_set_error(l->error, "%s", reasons);
    } else {
        l->status = DNS_TEMPFAIL;
        dns_set_error(l->error, "no address for any MX host of %s (%s)", l->domain, reasons);
    }
}

static void dns_lookup_deliver(dns_lookup_t *l)
{
    dns_mx_result_t r = { .status = l->status, .implicit = l->implicit };
    dns_host_t hosts[DNS_MAX_HOSTS];
    struct sockaddr_storage addrs[DNS_MAX_HOSTS][DNS_MAX_ADDRS];
    snprintf(r.error, sizeof r.error, "%s", l->error);
    if (r.status == DNS_OK) {
        for (size_t i = 0; i < l->ntargets; i++) {
            const dns_target_t *t = &l->targets[i];
            size_t n = dns_target_addrs(t, addrs[r.nhosts]);
            if (n == 0)
                continue;
            dns_host_t *h = &hosts[r.nhosts];
            snprintf(h->name, sizeof h->name, "%s", t->name);
            h->preference = t->preference;
            h->addrs = addrs[r.nhosts];
            h->naddrs = n;
            r.nhosts++;
        }
        r.hosts = hosts;
        r.error[0] = '\0';
    } else if (r.status == DNS_CANCELLED) {
        dns_set_error(r.error, "lookup of %s cancelled", l->domain);
    }
    l->cb(l->arg, &r);
}

static void dns_unlink(struct dns *d, dns_lookup_t *l)
{
    for (dns_lookup_t **pp = &d->lookups; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            return;
        }
}

/* Hands every finished lookup to its caller. Runs outside c-ares's calls, so that a
 * callback may start lookups or destroy d. */
static void dns_deliver_ready(struct dns *d)
{
    for (;;) {
        if (d->destroying)
            return;
        dns_lookup_t *l = d->lookups;
        while (l && !l->ready)
            l = l->next;
        if (!l)
            return;
        dns_unlink(d, l);
        dns_lookup_deliver(l);
        free(l);
    }
}

static void dns_deliver_cb(uv_timer_t *t)
{
    dns_deliver_ready(t->data);
}

/* After c-ares ran from the loop: the next timeout, then the finished lookups. */
static void dns_after_ares(struct dns *d)
{
    dns_schedule(d);
    dns_deliver_ready(d);
}

/* One query fewer in flight; the lookup is ready when none is left. */
static void dns_query_done(dns_lookup_t *l)
{
    if (--l->pending > 0)
        return;
    dns_lookup_conclude(l);
    l->ready = true;
}

/* ---- queries ---------------------------------------------------------------------- */

static void dns_addr_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen,
                        bool v6)
{
    (void)timeouts;
    dns_target_t *t = arg;
    if (status == ARES_SUCCESS) {
        if (v6) {
            struct ares_addr6ttl a[DNS_MAX_ADDRS];
            int n = DNS_MAX_ADDRS;
            status = ares_parse_aaaa_reply(abuf, alen, NULL, a, &n);
            for (int i = 0; status == ARES_SUCCESS && i < n; i++) {
                struct sockaddr_in6 *sa = (struct sockaddr_in6 *)&t->v6[t->n6++];
                memset(sa, 0, sizeof *sa);
                sa->sin6_family = AF_INET6;
                memcpy(&sa->sin6_addr, &a[i].ip6addr, sizeof sa->sin6_addr);
            }
        } else {
            struct ares_addrttl a[DNS_MAX_ADDRS];
            int n = DNS_MAX_ADDRS;
            status = ares_parse_a_reply(abuf, alen, NULL, a, &n);
            for (int i = 0; status == ARES_SUCCESS && i < n; i++) {
                struct sockaddr_in *sa = (struct sockaddr_in *)&t->v4[t->n4++];
                memset(sa, 0, sizeof *sa);
                sa->sin_family = AF_INET;
                sa->sin_addr = a[i].ipaddr;
            }
        }
        if (status == ARES_SUCCESS && (v6 ? t->n6 : t->n4) == 0)
            status = ARES_ENODATA; /* e.g. only a CNAME */
    }
    if (v6)
        t->status6 = status;
    else
        t->status4 = status;
    dns_query_done(t->lookup);
}

static void dns_aaaa_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    dns_addr_cb(arg, status, timeouts, abuf, alen, true);
}

static void dns_a_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    dns_addr_cb(arg, status, timeouts, abuf, alen, false);
}

/* Looks up the target's AAAA and A records. search: complete a relative name with the
 * search domains (ares_search) instead of taking it as absolute (ares_query). */
static void dns_target_start(dns_target_t *t, bool search)
{
    struct dns *d = t->lookup->dns;
    t->status6 = t->status4 = ARES_ENODATA;
    t->lookup->pending += 2; /* before: a callback may come at once */
    if (search) {
        ares_search(d->channel, t->name, ns_c_in, ns_t_aaaa, dns_aaaa_cb, t);
        ares_search(d->channel, t->name, ns_c_in, ns_t_a, dns_a_cb, t);
    } else {
        ares_query(d->channel, t->name, ns_c_in, ns_t_aaaa, dns_aaaa_cb, t);
        ares_query(d->channel, t->name, ns_c_in, ns_t_a, dns_a_cb, t);
    }
}

static dns_target_t *dns_add_target(dns_lookup_t *l, const char *name, int preference)
{
    dns_target_t *t = &l->targets[l->ntargets++];
    t->lookup = l;
    snprintf(t->name, sizeof t->name, "%s", name);
    size_t len = strlen(t->name);
    if (len > 1 && t->name[len - 1] == '.')
        t->name[len - 1] = '\0';
    t->preference = preference;
    return t;
}

typedef struct dns_mx {
    const char *host;
    int preference;
} dns_mx_t;

/* RFC 5321 section 5.1: by preference, equal preferences in random order: a shuffle
 * (Fisher-Yates), then a stable insertion sort. */
static void dns_order_mx(dns_mx_t *mx, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = arc4random_uniform((uint32_t)i);
        dns_mx_t tmp = mx[i - 1];
        mx[i - 1] = mx[j];
        mx[j] = tmp;
    }
    for (size_t i = 1; i < n; i++) {
        dns_mx_t cur = mx[i];
        size_t j = i;
        while (j > 0 && mx[j - 1].preference > cur.preference) {
            mx[j] = mx[j - 1];
            j--;
        }
        mx[j] = cur;
    }
}

/* The MX answer: the hosts to look up, or the lookup's final status. */
static void dns_mx_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    (void)timeouts;
    dns_lookup_t *l = arg;
    struct ares_mx_reply *reply = NULL;
    if (status == ARES_SUCCESS)
        status = ares_parse_mx_reply(abuf, alen, &reply);
    if (l->dns->destroying) {
        l->status = DNS_CANCELLED;
    } else if (status == ARES_ENODATA) { /* no MX: the domain itself, preference 0 */
        l->implicit = true;
        dns_target_start(dns_add_target(l, l->domain, 0), false);
    } else if (status == ARES_ENOTFOUND) {
        l->status = DNS_NOT_FOUND;
        dns_set_error(l->error, "domain %s not found", l->domain);
    } else if (status != ARES_SUCCESS) {
        l->status = dns_status_of(status);
        dns_set_error(l->error, "MX lookup for %s failed: %s", l->domain, dns_reason(status));
    } else {
        dns_mx_t mx[DNS_MAX_MX_RECORDS];
        size_t n = 0, null_mx = 0;
        for (struct ares_mx_reply *m = reply; m && n < DNS_MAX_MX_RECORDS; m = m->next) {
            if (m->host[0] == '\0' || strcmp(m->host, ".") == 0)
                null_mx++; /* RFC 7505: not a host; alongside real MX records, ignored */
            else
                mx[n++] = (dns_mx_t){ m->host, m->priority };
        }
        dns_order_mx(mx, n);
        for (size_t i = 0; i < n && l->ntargets < DNS_MAX_HOSTS; i++) {
            bool dup = false;
            for (size_t j = 0; j < l->ntargets && !dup; j++)
                dup = strcasecmp(l->targets[j].name, mx[i].host) == 0;
            if (!dup)
                dns_add_target(l, mx[i].host, mx[i].preference);
        }
        if (l->ntargets == 0 && null_mx > 0) {
            l->status = DNS_NULL_MX;
            dns_set_error(l->error, "%s does not accept mail (null MX)", l->domain);
        } else if (l->ntargets == 0) {
            l->status = DNS_TEMPFAIL;
            dns_set_error(l->error, "MX lookup for %s gave no usable record", l->domain);
        }
        for (size_t i = 0; i < l->ntargets; i++)
            dns_target_start(&l->targets[i], false);
    }
    ares_free_data(reply);
    dns_query_done(l);
}

/* ---- the public calls ------------------------------------------------------------- */

static dns_lookup_t *dns_lookup_new(struct dns *d, const char *name, dns_result_cb cb, void *arg)
{
    if (!d || d->destroying || !name)
        return NULL;
    dns_lookup_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->dns = d;
    l->cb = cb;
    l->arg = arg;
    l->status = DNS_OK;
    snprintf(l->domain, sizeof l->domain, "%s", name);
    l->pending = 1; /* held until the call has started its queries */
    l->next = d->lookups;
    d->lookups = l;
    return l;
}

/* Ends the call that started l: delivery from the loop if it is already complete. */
static void dns_lookup_started(struct dns *d, dns_lookup_t *l)
{
    dns_query_done(l);
    if (l->ready)
        uv_timer_start(&d->deliver, dns_deliver_cb, 0, 0);
    dns_schedule(d);
}

/* An IP literal, bare or as an address literal ("[192.0.2.1]", "[IPv6:2001:db8::1]"),
 * as a target with its one address. Returns false when text is not one. */
static bool dns_literal_target(dns_lookup_t *l, const char *text, bool bare_allowed)
{
    char tmp[INET6_ADDRSTRLEN + 8];
    size_t len = strlen(text);
    if (len >= 2 && text[0] == '[' && text[len - 1] == ']' && len - 2 < sizeof tmp) {
        memcpy(tmp, text + 1, len - 2);
        tmp[len - 2] = '\0';
    } else if (bare_allowed && len < sizeof tmp) {
        memcpy(tmp, text, len + 1);
    } else {
        return false;
    }
    const char *ip = strncasecmp(tmp, "IPv6:", 5) == 0 ? tmp + 5 : tmp;
    struct sockaddr_in sin = { .sin_family = AF_INET };
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
    dns_target_t *t;
    if (ip == tmp && inet_pton(AF_INET, ip, &sin.sin_addr) == 1) {
        t = dns_add_target(l, text, 0);
        memcpy(&t->v4[t->n4++], &sin, sizeof sin);
    } else if (inet_pton(AF_INET6, ip, &sin6.sin6_addr) == 1) {
        t = dns_add_target(l, text, 0);
        memcpy(&t->v6[t->n6++], &sin6, sizeof sin6);
    } else {
        return false;
    }
    t->status4 = t->status6 = ARES_SUCCESS;
    return true;
}

int dns_resolve_mx(dns_t *d, const char *domain, dns_result_cb cb, void *arg)
{
    dns_lookup_t *l = dns_lookup_new(d, domain, cb, arg);
    if (!l)
        return -1;
    size_t len = strlen(domain);
    if (dns_literal_target(l, domain, false)) {
        l->implicit = true;
    } else if (len == 0 || len > 254 || strcmp(domain, ".") == 0) {
        l->status = DNS_NOT_FOUND;
        dns_set_error(l->error, "invalid domain name \"%.64s\"", domain);
    } else {
        l->pending++;
        ares_query(d->channel, domain, ns_c_in, ns_t_mx, dns_mx_cb, l);
    }
    dns_lookup_started(d, l);
    return 0;
}

int dns_resolve_host(dns_t *d, const char *name, dns_result_cb cb, void *arg)
{
    dns_lookup_t *l = dns_lookup_new(d, name, cb, arg);
    if (!l)
        return -1;
    l->host = true;
    size_t len = strlen(name);
    if (dns_literal_target(l, name, true)) {
        /* the address itself */
    } else if (strcasecmp(name, "localhost") == 0 || strcasecmp(name, "localhost.") == 0) {
        /* RFC 6761 section 6.3: loopback, without asking DNS */
        dns_target_t *t = dns_add_target(l, "localhost", 0);
        struct sockaddr_in6 *sa6 = (struct sockaddr_in6 *)&t->v6[t->n6++];
        sa6->sin6_family = AF_INET6;
        sa6->sin6_addr = in6addr_loopback;
        struct sockaddr_in *sa = (struct sockaddr_in *)&t->v4[t->n4++];
        sa->sin_family = AF_INET;
        sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        t->status4 = t->status6 = ARES_SUCCESS;
    } else if (len == 0 || len > 254) {
        l->status = DNS_NOT_FOUND;
        dns_set_error(l->error, "invalid host name \"%.64s\"", name);
    } else {
        dns_target_start(dns_add_target(l, name, 0), true);
    }
    dns_lookup_started(d, l);
    return 0;
}

dns_t *dns_create(uv_loop_t *loop, const char *servers, char *err, size_t err_len)
{
    return dns_create_opts(loop, servers, NULL, err, err_len);
}

dns_t *dns_create_opts(uv_loop_t *loop, const char *servers, const dns_opts_t *opts, char *err,
                       size_t err_len)
{
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        snprintf(err, err_len, "c-ares: %s", ares_strerror(rc));
        return NULL;
    }
    struct dns *d = calloc(1, sizeof *d);
    if (!d) {
        ares_library_cleanup();
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    d->loop = loop;
    struct ares_options o;
    memset(&o, 0, sizeof o);
    o.sock_state_cb = dns_sock_state_cb;
    o.sock_state_cb_data = d;
    o.timeout = opts && opts->timeout_ms > 0 ? opts->timeout_ms : DNS_DEFAULT_TIMEOUT_MS;
    o.tries = opts && opts->tries > 0 ? opts->tries : DNS_DEFAULT_TRIES;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
    rc = ares_init_options(&d->channel, &o, mask);
    if (rc != ARES_SUCCESS) {
        snprintf(err, err_len, "c-ares: %s", ares_strerror(rc));
        free(d);
        ares_library_cleanup();
        return NULL;
    }
    if (servers && *servers)
        rc = ares_set_servers_ports_csv(d->channel, servers);
    if (rc != ARES_SUCCESS) {
        snprintf(err, err_len, "DNS servers \"%s\": %s", servers, ares_strerror(rc));
        ares_destroy(d->channel);
        free(d);
        ares_library_cleanup();
        return NULL;
    }
    uv_timer_init(loop, &d->timer);
    uv_timer_init(loop, &d->deliver);
    d->timer.data = d;
    d->deliver.data = d;
    d->open_handles = 2;
    return d;
}

void dns_destroy(dns_t **dp)
{
    struct dns *d = *dp;
    if (!d || d->destroying)
        return;
    *dp = NULL;
    d->destroying = true;
    /* Every query's callback runs with ARES_EDESTRUCTION, every socket is let go. */
    ares_destroy(d->channel);
    while (d->lookups) {
        dns_lookup_t *l = d->lookups;
        d->lookups = l->next;
        l->status = DNS_CANCELLED;
        dns_lookup_deliver(l);
        free(l);
    }
    while (d->polls) { /* left over only if c-ares did not report a socket closed */
        dns_poll_t *p = d->polls;
        d->polls = p->next;
        uv_close((uv_handle_t *)&p->poll, dns_handle_closed);
    }
    uv_close((uv_handle_t *)&d->timer, dns_handle_closed);
    uv_close((uv_handle_t *)&d->deliver, dns_handle_closed);
}
