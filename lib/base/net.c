#include "base/net.h"

#include <arpa/inet.h>
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
