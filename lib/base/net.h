/* IPv4 and IPv6 addresses and networks (CIDR), for relay lists and exemptions. */
#ifndef POSTERN_NET_H
#define POSTERN_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

typedef struct net_addr {
    int family;              /* AF_INET or AF_INET6 */
    unsigned char bytes[16]; /* network order; 4 used for AF_INET */
} net_addr_t;

typedef struct net_cidr {
    net_addr_t addr;
    int prefix; /* 0..32 or 0..128 */
} net_cidr_t;

/* Returns 0, or -1 if text is not an address. IPv4-mapped IPv6 becomes IPv4. */
int net_addr_parse(const char *text, net_addr_t *addr_r);
/* "192.0.2.0/24", "2001:db8::/32", or a bare address (a host network). Host bits set
 * below the prefix are cleared. Returns 0, or -1. */
int net_cidr_parse(const char *text, net_cidr_t *cidr_r);
bool net_cidr_contains(const net_cidr_t *cidr, const net_addr_t *addr);

/* Converts an AF_INET or AF_INET6 socket address; IPv4-mapped IPv6 becomes IPv4.
 * Returns 0, or -1 for another family. */
int net_addr_from_sockaddr(const struct sockaddr *sa, net_addr_t *addr_r);

/* True for an address mail must never be delivered to when it comes from public DNS:
 * unspecified, loopback, private (RFC 1918), shared CGNAT (RFC 6598), link-local,
 * unique local (RFC 4193), multicast, broadcast and other reserved ranges of the IANA
 * special-purpose registries (RFC 6890), documentation ranges included; IPv4-mapped IPv6
 * forms are judged as IPv4. Also true for a family other than IPv4 and IPv6. */
bool net_sockaddr_special(const struct sockaddr *sa);

/* The address without port as text ("192.0.2.1", "2001:db8::1"), truncated to fit len;
 * "unknown" for a family other than IPv4 and IPv6. */
void net_sockaddr_text(const struct sockaddr *sa, char *out, size_t len);

#endif
