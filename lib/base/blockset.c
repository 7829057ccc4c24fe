#include "base/blockset.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/table.h"

/* "ffff:...:ffff/128" */
#define KEY_MAX (INET6_ADDRSTRLEN + 5)

/* One blocked network: its key (canonical text), then its reason, in text. */
typedef struct entry {
    int64_t until_ms;
    uint8_t v6;
    uint8_t prefix;
    uint8_t key_len;
    char text[];
} entry_t;

/* The prefix lengths in use in one family: how many entries have each, and the lengths with
 * at least one, longest first. */
typedef struct prefixes {
    uint32_t count[129];
    uint8_t used[129];
    size_t nused;
} prefixes_t;

struct blockset {
    table_t *t; /* entry_t by key */
    prefixes_t fam[2]; /* 0: IPv4, 1: IPv6 */
};

static const char *entry_key(const void *item)
{
    return ((const entry_t *)item)->text;
}

static const char *entry_reason(const entry_t *e)
{
    return e->text + e->key_len + 1;
}

/* The canonical text of c (host bits already clear) into out[KEY_MAX]. Returns its length,
 * or -1. */
static int cidr_key(const net_cidr_t *c, char *out)
{
    char host[INET6_ADDRSTRLEN];
    if (!inet_ntop(c->addr.family, c->addr.bytes, host, sizeof host))
        return -1;
    int n = snprintf(out, KEY_MAX, "%s/%d", host, c->prefix);
    return n > 0 && n < KEY_MAX ? n : -1;
}

static void prefix_used(prefixes_t *p, int prefix)
{
    if (p->count[prefix]++ > 0)
        return;
    size_t i = 0;
    while (i < p->nused && p->used[i] > prefix)
        i++;
    memmove(p->used + i + 1, p->used + i, p->nused - i);
    p->used[i] = (uint8_t)prefix;
    p->nused++;
}

static void prefix_unused(prefixes_t *p, int prefix)
{
    if (p->count[prefix] == 0 || --p->count[prefix] > 0)
        return;
    for (size_t i = 0; i < p->nused; i++)
        if (p->used[i] == prefix) {
            memmove(p->used + i, p->used + i + 1, p->nused - i - 1);
            p->nused--;
            return;
        }
}

blockset_t *blockset_create(void)
{
    blockset_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->t = table_create(entry_key);
    if (!s->t) {
        free(s);
        return NULL;
    }
    return s;
}

void blockset_destroy(blockset_t **sp)
{
    blockset_t *s = sp ? *sp : NULL;
    if (!s)
        return;
    *sp = NULL;
    size_t pos = 0;
    void *item;
    while ((item = table_next(s->t, &pos)))
        free(item);
    table_destroy(&s->t);
    free(s);
}

/* Parses network into c and its key; -1 when it is not a CIDR. */
static int parse_key(const char *network, net_cidr_t *c, char *key)
{
    if (!network || net_cidr_parse(network, c) < 0)
        return -1;
    return cidr_key(c, key);
}

int blockset_put(blockset_t *s, const char *network, int64_t until_ms, const char *reason)
{
    net_cidr_t c;
    char key[KEY_MAX];
    int klen = parse_key(network, &c, key);
    if (klen < 0)
        return -1;
    if (!reason)
        reason = "";
    size_t rlen = strnlen(reason, BLOCKSET_REASON_MAX);
    entry_t *e = malloc(sizeof *e + (size_t)klen + 1 + rlen + 1);
    if (!e)
        return -1;
    e->until_ms = until_ms;
    e->v6 = c.addr.family == AF_INET6;
    e->prefix = (uint8_t)c.prefix;
    e->key_len = (uint8_t)klen;
    memcpy(e->text, key, (size_t)klen + 1);
    memcpy(e->text + klen + 1, reason, rlen);
    e->text[klen + 1 + rlen] = '\0';
    void **slot = table_ref(s->t, key);
    if (slot) { /* same key, so same family and prefix */
        free(*slot);
        *slot = e;
        return 0;
    }
    if (table_add(s->t, e) < 0) {
        free(e);
        return -1;
    }
    prefix_used(&s->fam[e->v6], e->prefix);
    return 0;
}

bool blockset_remove(blockset_t *s, const char *network)
{
    net_cidr_t c;
    char key[KEY_MAX];
    if (parse_key(network, &c, key) < 0)
        return false;
    entry_t *e = table_remove(s->t, key);
    if (!e)
        return false;
    prefix_unused(&s->fam[e->v6], e->prefix);
    free(e);
    return true;
}

size_t blockset_count(const blockset_t *s)
{
    return s ? table_count(s->t) : 0;
}

bool blockset_lookup(const blockset_t *s, const net_addr_t *addr, int64_t now_ms, char *reason,
                     size_t reason_len, int64_t *until_ms_r)
{
    if (!s || (addr->family != AF_INET && addr->family != AF_INET6))
        return false;
    const prefixes_t *p = &s->fam[addr->family == AF_INET6];
    int max = addr->family == AF_INET ? 32 : 128;
    for (size_t i = 0; i < p->nused; i++) {
        net_cidr_t c = { .addr = *addr, .prefix = p->used[i] };
        if (c.prefix > max)
            continue;
        size_t full = (size_t)c.prefix / 8;
        if (c.prefix % 8)
            c.addr.bytes[full++] &= (unsigned char)(0xff << (8 - c.prefix % 8));
        memset(c.addr.bytes + full, 0, (size_t)max / 8 - full);
        char key[KEY_MAX];
        if (cidr_key(&c, key) < 0)
            continue;
        const entry_t *e = table_get(s->t, key);
        if (!e || e->until_ms <= now_ms)
            continue;
        if (reason && reason_len)
            snprintf(reason, reason_len, "%s", entry_reason(e));
        if (until_ms_r)
            *until_ms_r = e->until_ms;
        return true;
    }
    return false;
}

size_t blockset_expire(blockset_t *s, int64_t now_ms)
{
    if (!s)
        return 0;
    size_t n = 0, pos = 0;
    entry_t *e;
    while ((e = table_next(s->t, &pos))) {
        if (e->until_ms > now_ms)
            continue;
        table_remove_at(s->t, pos - 1);
        prefix_unused(&s->fam[e->v6], e->prefix);
        free(e);
        n++;
    }
    if (n)
        table_compact(s->t);
    return n;
}
