/* The PROXY protocol header (HAProxy's specification, versions 1 and 2), which a load
 * balancer puts in front of a connection to pass on the real client address. Accepted
 * only from trusted proxy networks (PROXY_TRUSTED_NETWORKS): from anyone else it would let
 * a client choose the address that relay lists, limits and blocks are applied to.
 *
 * proxy_parse() follows the parser contract: 1 = got a header (*consumed bytes of it),
 * 0 = need more bytes, -1 = not a valid header. */
#ifndef POSTERN_PROXY_H
#define POSTERN_PROXY_H

#include <stddef.h>

#define PROXY_V1_MAX 107 /* the longest version 1 line, CRLF included */

typedef struct proxy_header {
    /* The original client's address as text; "" for LOCAL (v2) or UNKNOWN (v1)
     * connections, which keep the proxy's own address. */
    char client[64];
    int client_port;
} proxy_header_t;

int proxy_parse(const unsigned char *data, size_t len, proxy_header_t *h, size_t *consumed);

#endif
