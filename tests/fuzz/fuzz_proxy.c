/* The PROXY protocol header parser (lib/net/proxy.c), versions 1 and 2, on every prefix of
 * the input: a header complete at N bytes must give "need more" (0) on every shorter
 * prefix and the same header on every longer one, whatever follows it (the client's first
 * bytes). A parsed client address must be a valid address of its own family. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy.h"

static void check_header(const proxy_header_t *h)
{
    if (!memchr(h->client, '\0', sizeof h->client))
        abort();
    if (h->client[0]) {
        unsigned char a[16];
        if (inet_pton(AF_INET, h->client, a) != 1 && inet_pton(AF_INET6, h->client, a) != 1)
            abort();
        if (h->client_port < 0 || h->client_port > 65535)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A copy of exactly size bytes, so that ASan sees any read past the end. */
    unsigned char *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    proxy_header_t full;
    size_t full_used = 0;
    int rc = proxy_parse(copy, size, &full, &full_used);
    if (rc < -1 || rc > 1)
        abort();
    if (rc == 1) {
        check_header(&full);
        if (full_used == 0 || full_used > size)
            abort();
    } else if (full_used != 0 && rc != -1) {
        abort();
    }
    /* Prefixes: a sample of them for long inputs, all for short ones. */
    size_t step = size > 512 ? size / 256 : 1;
    for (size_t k = 0; k < size; k += step) {
        proxy_header_t h;
        size_t used = 0;
        int r = proxy_parse(copy, k, &h, &used);
        if (rc == 1) {
            if (k < full_used && r != 0)
                abort(); /* a complete header cannot be refused or found earlier */
            if (k >= full_used && (r != 1 || used != full_used || strcmp(h.client, full.client) ||
                                   h.client_port != full.client_port))
                abort();
        } else if (rc == 0 && r != 0) {
            abort(); /* needing more bytes at size means needing more at every prefix */
        }
        if (r == 1)
            check_header(&h);
    }
    free(copy);
    return 0;
}
