#include "net/proxy.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char v2_sig[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                          0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

/* "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n" (section 2.1). */
static int parse_v1(const unsigned char *data, size_t len, proxy_header_t *h, size_t *consumed)
{
    const unsigned char *crlf = NULL;
    for (size_t i = 0; i + 1 < len && i + 2 <= PROXY_V1_MAX; i++)
        if (data[i] == '\r' && data[i + 1] == '\n') {
            crlf = data + i;
            break;
        }
    if (!crlf)
        return len >= PROXY_V1_MAX ? -1 : 0;
    char line[PROXY_V1_MAX + 1];
    size_t n = (size_t)(crlf - data);
    memcpy(line, data, n);
    line[n] = '\0';
    *consumed = n + 2;
    char proto[8], src[48], dst[48];
    int sport, dport;
    if (strcmp(line, "PROXY UNKNOWN") == 0 || strncmp(line, "PROXY UNKNOWN ", 14) == 0) {
        h->client[0] = '\0';
        return 1;
    }
    char tail;
    if (sscanf(line, "PROXY %7s %47s %47s %d %d%c", proto, src, dst, &sport, &dport, &tail) != 5)
        return -1;
    unsigned char buf[16];
    int family = strcmp(proto, "TCP4") == 0 ? AF_INET : strcmp(proto, "TCP6") == 0 ? AF_INET6 : 0;
    if (!family || inet_pton(family, src, buf) != 1 || inet_pton(family, dst, buf) != 1 ||
        sport < 0 || sport > 65535 || dport < 0 || dport > 65535)
        return -1;
    snprintf(h->client, sizeof h->client, "%s", src);
    h->client_port = sport;
    return 1;
}

/* The binary header (section 2.2). */
static int parse_v2(const unsigned char *data, size_t len, proxy_header_t *h, size_t *consumed)
{
    if (len < 16)
        return 0;
    unsigned version = data[12] >> 4, command = data[12] & 0x0F;
    unsigned family = data[13] >> 4, transport = data[13] & 0x0F;
    size_t body = (size_t)data[14] << 8 | data[15];
    if (version != 2 || command > 1)
        return -1;
    if (len < 16 + body)
        return 0;
    *consumed = 16 + body;
    const unsigned char *a = data + 16;
    h->client[0] = '\0';
    if (command == 0) /* LOCAL: the proxy's own connection (health checks) */
        return 1;
    if (family == 1 && transport == 1) { /* TCP over IPv4 */
        if (body < 12)
            return -1;
        inet_ntop(AF_INET, a, h->client, sizeof h->client);
        h->client_port = a[8] << 8 | a[9];
    } else if (family == 2 && transport == 1) { /* TCP over IPv6 */
        if (body < 36)
            return -1;
        struct in6_addr in6;
        memcpy(&in6, a, 16);
        if (IN6_IS_ADDR_V4MAPPED(&in6))
            inet_ntop(AF_INET, &in6.s6_addr[12], h->client, sizeof h->client);
        else
            inet_ntop(AF_INET6, &in6, h->client, sizeof h->client);
        h->client_port = a[32] << 8 | a[33];
    } else if (family != 0) {
        return -1; /* UDP or unix sockets make no sense in front of a mail service */
    }
    return 1;
}

int proxy_parse(const unsigned char *data, size_t len, proxy_header_t *h, size_t *consumed)
{
    memset(h, 0, sizeof *h);
    *consumed = 0;
    size_t k = len < sizeof v2_sig ? len : sizeof v2_sig;
    if (memcmp(data, v2_sig, k) == 0)
        return k < sizeof v2_sig ? 0 : parse_v2(data, len, h, consumed);
    k = len < 6 ? len : 6;
    if (memcmp(data, "PROXY ", k) == 0)
        return k < 6 ? 0 : parse_v1(data, len, h, consumed);
    return -1;
}
