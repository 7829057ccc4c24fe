#include "base/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int net_addr_parse(const char *text, net_addr_t *a)
{
    memset(a, 0, sizeof *a);
    if (inet_pton(AF_INET, text, a->bytes) == 1) {
        a->family = AF_INET;
        return 0;
    }
    struct in6_addr in6;
    if (inet_pton(AF_INET6, text, &in6) != 1)
        return -1;
    if (IN6_IS_ADDR_V4MAPPED(&in6)) {
        a->family = AF_INET;
        memcpy(a->bytes, &in6.s6_addr[12], 4);
    } else {
        a->family = AF_INET6;
        memcpy(a->bytes, &in6, 16);
    }
    return 0;
}

int net_cidr_parse(const char *text, net_cidr_t *c)
{
    char host[64];
    const char *slash = strchr(text, '/');
    size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
    if (hlen == 0 || hlen >= sizeof host)
        return -1;
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    if (net_addr_parse(host, &c->addr) < 0)
        return -1;
    int max = c->addr.family == AF_INET ? 32 : 128;
    c->prefix = max;
    if (slash) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (!slash[1] || *end || p < 0 || p > max)
            return -1;
        c->prefix = (int)p;
    }
    for (int bit = c->prefix; bit < max; bit++)
        c->addr.bytes[bit / 8] &= (unsigned char)~(0x80 >> (bit % 8));
    return 0;
}

bool net_cidr_contains(const net_cidr_t *c, const net_addr_t *a)
{
    if (c->addr.family != a->family)
        return false;
    int full = c->prefix / 8, rest = c->prefix % 8;
    if (memcmp(c->addr.bytes, a->bytes, (size_t)full) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (c->addr.bytes[full] & mask) == (a->bytes[full] & mask);
}

int net_addr_from_sockaddr(const struct sockaddr *sa, net_addr_t *a)
{
    memset(a, 0, sizeof *a);
    if (sa->sa_family == AF_INET) {
        a->family = AF_INET;
        memcpy(a->bytes, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(in6)) {
        a->family = AF_INET;
        memcpy(a->bytes, &in6->s6_addr[12], 4);
    } else {
        a->family = AF_INET6;
        memcpy(a->bytes, in6, 16);
    }
    return 0;
}

#define V4(a, b, c, d, prefix) { { AF_INET, { a, b, c, d } }, prefix }
#define V6(a, b, prefix) { { AF_INET6, { a, b } }, prefix }
#define V6W(a, b, c, d, prefix) { { AF_INET6, { a, b, c, d } }, prefix }

/* IANA IPv4 and IPv6 special-purpose address registries (RFC 6890 and updates), the
 * ranges that are not globally reachable, plus multicast. */
static const net_cidr_t special_ranges[] = {
    V4(0, 0, 0, 0, 8),         /* "this network" (RFC 791) */
    V4(10, 0, 0, 0, 8),        /* private (RFC 1918) */
    V4(100, 64, 0, 0, 10),     /* shared address space, CGNAT (RFC 6598) */
    V4(127, 0, 0, 0, 8),       /* loopback */
    V4(169, 254, 0, 0, 16),    /* link-local (RFC 3927) */
    V4(172, 16, 0, 0, 12),     /* private (RFC 1918) */
    V4(192, 0, 0, 0, 24),      /* IETF protocol assignments (RFC 6890) */
    V4(192, 0, 2, 0, 24),      /* documentation TEST-NET-1 (RFC 5737) */
    V4(192, 168, 0, 0, 16),    /* private (RFC 1918) */
    V4(198, 18, 0, 0, 15),     /* benchmarking (RFC 2544) */
    V4(198, 51, 100, 0, 24),   /* documentation TEST-NET-2 */
    V4(203, 0, 113, 0, 24),    /* documentation TEST-NET-3 */
    V4(224, 0, 0, 0, 4),       /* multicast */
    V4(240, 0, 0, 0, 4),       /* reserved, with the limited broadcast 255.255.255.255 */
    V6(0, 0, 96),              /* unspecified ::, loopback ::1 and the deprecated
                                  IPv4-compatible ::a.b.c.d (RFC 4291 section 2.5.5.1) */
    V6W(0x01, 0x00, 0, 0, 64), /* discard-only 100::/64 (RFC 6666) */
    V6W(0x20, 0x01, 0x0d, 0xb8, 32), /* documentation 2001:db8::/32 (RFC 3849) */
    V6(0xfc, 0, 7),            /* unique local fc00::/7 (RFC 4193) */
    V6(0xfe, 0x80, 10),        /* link-local fe80::/10 */
    V6(0xfe, 0xc0, 10),        /* site-local fec0::/10, deprecated (RFC 3879) */
    V6(0xff, 0, 8),            /* multicast ff00::/8 */
};

bool net_sockaddr_special(const struct sockaddr *sa)
{
    net_addr_t a;
    if (net_addr_from_sockaddr(sa, &a) < 0)
        return true;
    for (size_t i = 0; i < sizeof special_ranges / sizeof special_ranges[0]; i++)
        if (net_cidr_contains(&special_ranges[i], &a))
            return true;
    return false;
}

void net_sockaddr_text(const struct sockaddr *sa, char *out, size_t len)
{
    char tmp[INET6_ADDRSTRLEN] = "unknown";
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, tmp, sizeof tmp);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, tmp, sizeof tmp);
    if (len)
        snprintf(out, len, "%s", tmp);
}
