/* Asynchronous DNS for mail routing: MX and address lookups with c-ares, driven by a libuv
 * loop (no threads). Every call and every callback is on the loop's thread; a callback
 * never runs from inside dns_resolve_mx() or dns_resolve_host().
 *
 * Names are looked up in DNS only (/etc/hosts is not read). Addresses come back with port
 * 0: the caller sets the port it connects to; whether an address may be delivered to is the
 * caller's check (net_sockaddr_special() in base/net.h). */
#ifndef POSTERN_DNS_H
#define POSTERN_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#define DNS_MAX_HOSTS 10 /* MX hosts kept, the most preferred */
#define DNS_MAX_ADDRS 8  /* addresses kept per host */

typedef enum dns_status {
    DNS_OK,
    DNS_NOT_FOUND, /* permanent: the domain does not exist (NXDOMAIN), or a host or a
                      domain without MX has no address record at all */
    DNS_NULL_MX,   /* the domain accepts no mail (RFC 7505) */
    DNS_TEMPFAIL,  /* timeout, SERVFAIL, refused, no answer, or no address for any MX host */
    DNS_CANCELLED, /* dns_destroy() came first */
} dns_status_t;

typedef struct dns_host {
    char name[256]; /* the MX target or the name looked up, without a trailing dot */
    int preference;
    struct sockaddr_storage *addrs; /* AF_INET6 and AF_INET, alternating, IPv6 first */
    size_t naddrs;                  /* 1..DNS_MAX_ADDRS in a DNS_OK result */
} dns_host_t;

typedef struct dns_mx_result {
    dns_status_t status;
    dns_host_t *hosts; /* in the order to try; only with DNS_OK */
    size_t nhosts;
    bool implicit;   /* no MX: the domain itself (RFC 5321 section 5.1) */
    char error[160]; /* why, for logs and reply texts; "" with DNS_OK */
} dns_mx_result_t;

/* The result and everything it points to are valid during the callback only. */
typedef void (*dns_result_cb)(void *arg, const dns_mx_result_t *r);

typedef struct dns dns_t;

typedef struct dns_opts {
    int timeout_ms; /* a query's first timeout, doubled on each round over the servers;
                       0: 3000 */
    int tries;      /* tries per server; 0: 3 (one server: 3 + 6 + 12 s at most) */
} dns_opts_t;

/* servers: NULL or "" for /etc/resolv.conf, else "127.0.0.1:5353,[::1]:53" (a port
 * defaults to 53); opts NULL for the defaults. Returns NULL with a message in err. */
dns_t *dns_create(uv_loop_t *loop, const char *servers, char *err, size_t err_len);
dns_t *dns_create_opts(uv_loop_t *loop, const char *servers, const dns_opts_t *opts, char *err,
                       size_t err_len);
/* Every lookup whose callback has not run yet gets it with DNS_CANCELLED before this
 * returns (a new lookup started from such a callback fails with -1). The loop's handles
 * are closed and the memory freed from the loop; *d becomes NULL. Harmless on NULL. */
void dns_destroy(dns_t **d);

/* Where mail for domain goes (RFC 5321 section 5.1): its MX hosts by preference, in a
 * random order among equal preferences, each with its IPv6 and IPv4 addresses; hosts
 * without an address are left out (DNS_TEMPFAIL when none is left); without MX records
 * the domain itself as the one implicit host, preference 0; a lone MX with the target
 * "." gives DNS_NULL_MX (RFC 7505 section 3). At most DNS_MAX_HOSTS hosts. An address
 * literal ("[192.0.2.1]", "[IPv6:2001:db8::1]", RFC 5321 section 4.1.3) resolves to
 * itself. Returns 0, or -1 (cb not called) when out of memory or d is being destroyed. */
int dns_resolve_mx(dns_t *d, const char *domain, dns_result_cb cb, void *arg);

/* A host's IPv6 and IPv4 addresses as a result with one host (for destinations given by
 * name); a name without a trailing dot may be completed with resolv.conf's search
 * domains. An IP literal, bare or in brackets, and "localhost" resolve without a query.
 * Returns 0 or -1 as dns_resolve_mx(). */
int dns_resolve_host(dns_t *d, const char *name, dns_result_cb cb, void *arg);

/* "ok", "not found", "null MX", "temporary failure", "cancelled". */
const char *dns_status_name(dns_status_t status);

#endif
