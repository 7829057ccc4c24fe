#include "blocks.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/table.h"

typedef struct exempt {
    net_cidr_t cidr;
    char text[BLOCK_NETWORK_MAX];
} exempt_t;

typedef char netkey_t[BLOCK_NETWORK_MAX];

struct blocks {
    table_t *active;    /* block_t */
    table_t *offenders; /* offender_t */
    exempt_t *exempt;
    size_t nexempt;
    netkey_t *order;    /* paging: the networks of the active blocks, sorted */
    size_t norder;
    bool order_stale;   /* a block was added since the order was made */
};

static const char *block_key(const void *item)
{
    return ((const block_t *)item)->network;
}

static const char *offender_key(const void *item)
{
    return ((const offender_t *)item)->network;
}

blocks_t *blocks_create(void)
{
    blocks_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->active = table_create(block_key);
    b->offenders = table_create(offender_key);
    b->order_stale = true;
    if (!b->active || !b->offenders) {
        blocks_destroy(&b);
        return NULL;
    }
    return b;
}

static void table_free_all(table_t **t)
{
    if (!*t)
        return;
    size_t pos = 0;
    void *item;
    while ((item = table_next(*t, &pos)))
        free(item);
    table_destroy(t);
}

void blocks_destroy(blocks_t **bp)
{
    blocks_t *b = bp ? *bp : NULL;
    if (!b)
        return;
    *bp = NULL;
    table_free_all(&b->active);
    table_free_all(&b->offenders);
    free(b->exempt);
    free(b->order);
    free(b);
}

/* ---- networks ------------------------------------------------------------------------- */

static int cidr_text(const net_cidr_t *c, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (!inet_ntop(c->addr.family, c->addr.bytes, host, sizeof host))
        return -1;
    int n = snprintf(out, len, "%s/%d", host, c->prefix);
    return n > 0 && (size_t)n < len ? 0 : -1;
}

int blocks_network(const char *client, char *key, size_t len, net_addr_t *addr_r)
{
    net_cidr_t c;
    if (!client || net_addr_parse(client, &c.addr) < 0)
        return -1;
    if (addr_r)
        *addr_r = c.addr;
    c.prefix = c.addr.family == AF_INET ? 32 : 64;
    if (c.prefix == 64)
        memset(c.addr.bytes + 8, 0, 8);
    return cidr_text(&c, key, len);
}

int blocks_canonical(const char *cidr, char *out, size_t len)
{
    net_cidr_t c;
    if (!cidr || net_cidr_parse(cidr, &c) < 0)
        return -1;
    return cidr_text(&c, out, len);
}

/* ---- exemptions ----------------------------------------------------------------------- */

size_t blocks_set_exempt(blocks_t *b, const char *const *cidrs, size_t n)
{
    exempt_t *list = calloc(n ? n : 1, sizeof *list);
    if (!list)
        return b->nexempt; /* keep the old list rather than none */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (net_cidr_parse(cidrs[i], &list[k].cidr) == 0 &&
            cidr_text(&list[k].cidr, list[k].text, sizeof list[k].text) == 0)
            k++;
    free(b->exempt);
    b->exempt = list;
    b->nexempt = k;
    return k;
}

bool blocks_addr_exempt(const blocks_t *b, const net_addr_t *addr)
{
    for (size_t i = 0; i < b->nexempt; i++)
        if (net_cidr_contains(&b->exempt[i].cidr, addr))
            return true;
    return false;
}

bool blocks_network_exempt(const blocks_t *b, const char *network)
{
    net_cidr_t c;
    if (net_cidr_parse(network, &c) < 0)
        return false;
    for (size_t i = 0; i < b->nexempt; i++)
        if (b->exempt[i].cidr.prefix <= c.prefix && net_cidr_contains(&b->exempt[i].cidr, &c.addr))
            return true;
    return false;
}

size_t blocks_exempt_count(const blocks_t *b)
{
    return b->nexempt;
}

const char *blocks_exempt_at(const blocks_t *b, size_t i)
{
    return i < b->nexempt ? b->exempt[i].text : NULL;
}

/* ---- active blocks -------------------------------------------------------------------- */

block_t *blocks_get(const blocks_t *b, const char *network)
{
    return table_get(b->active, network);
}

block_t *blocks_put(blocks_t *b, const block_t *blk)
{
    block_t *cur = table_get(b->active, blk->network);
    if (cur) {
        *cur = *blk;
        return cur;
    }
    block_t *copy = malloc(sizeof *copy);
    if (!copy)
        return NULL;
    *copy = *blk;
    if (table_add(b->active, copy) < 0) {
        free(copy);
        return NULL;
    }
    b->order_stale = true;
    return copy;
}

void blocks_delete(blocks_t *b, const char *network)
{
    free(table_remove(b->active, network));
}

size_t blocks_count(const blocks_t *b)
{
    return table_count(b->active);
}

block_t *blocks_next(blocks_t *b, size_t *pos)
{
    return table_next(b->active, pos);
}

void blocks_delete_at(blocks_t *b, size_t pos)
{
    size_t p = pos;
    block_t *blk = table_next(b->active, &p);
    if (blk && p == pos + 1) {
        table_remove_at(b->active, pos);
        free(blk);
    }
}

/* ---- paging --------------------------------------------------------------------------- */

static int netkey_cmp(const void *x, const void *y)
{
    return strcmp(*(const netkey_t *)x, *(const netkey_t *)y);
}

/* Makes the order again; keeps the old one when memory runs out. */
static void order_make(blocks_t *b)
{
    size_t n = table_count(b->active);
    netkey_t *order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return;
    size_t k = 0, pos = 0;
    block_t *blk;
    while ((blk = table_next(b->active, &pos)) && k < n)
        memcpy(order[k++], blk->network, sizeof order[0]);
    qsort(order, k, sizeof order[0], netkey_cmp);
    free(b->order);
    b->order = order;
    b->norder = k;
    b->order_stale = false;
}

void blocks_order_seek(blocks_t *b, const char *after, bool fresh, size_t *pos)
{
    if (b->order_stale && (fresh || !b->order))
        order_make(b);
    size_t lo = 0, hi = b->norder;
    if (after && *after)
        while (lo < hi) { /* the first network sorting after `after` */
            size_t mid = lo + (hi - lo) / 2;
            if (strcmp(b->order[mid], after) <= 0)
                lo = mid + 1;
            else
                hi = mid;
        }
    *pos = lo;
}

block_t *blocks_order_next(blocks_t *b, size_t *pos)
{
    while (*pos < b->norder) {
        block_t *blk = table_get(b->active, b->order[(*pos)++]);
        if (blk)
            return blk;
    }
    return NULL;
}

/* ---- offenders ------------------------------------------------------------------------ */

offender_t *blocks_offender(blocks_t *b, const char *network, bool create)
{
    offender_t *o = table_get(b->offenders, network);
    if (o || !create)
        return o;
    size_t n = strlen(network) + 1;
    o = calloc(1, sizeof *o + n);
    if (!o)
        return NULL;
    memcpy(o->network, network, n);
    o->last_alert_ms = INT64_MIN;
    if (table_add(b->offenders, o) < 0) {
        free(o);
        return NULL;
    }
    return o;
}

void blocks_forget_offenders(blocks_t *b, int64_t before_ms)
{
    size_t pos = 0;
    offender_t *o;
    while ((o = table_next(b->offenders, &pos))) {
        if (o->last_blocked_ms >= before_ms || table_get(b->active, o->network))
            continue;
        table_remove_at(b->offenders, pos - 1);
        free(o);
    }
    table_compact(b->offenders);
}

size_t blocks_offender_count(const blocks_t *b)
{
    return table_count(b->offenders);
}

int64_t blocks_duration_ms(uint32_t block_s, uint32_t offense)
{
    int64_t ms = (int64_t)block_s * 1000;
    for (uint32_t i = 1; i < offense && ms < BLOCK_MAX_MS; i++)
        ms *= 2;
    return ms < BLOCK_MAX_MS ? ms : BLOCK_MAX_MS;
}
