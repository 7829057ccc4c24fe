#include "base/table.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define TABLE_MIN_SLOTS 16

/* A removed item: the probe sequence goes on past it. */
static char tombstone_mark;
#define TOMBSTONE ((void *)&tombstone_mark)

struct table {
    void **items;     /* NULL: never used; TOMBSTONE: removed */
    uint32_t *hashes; /* the upper half of each item's hash */
    size_t nslots;    /* a power of two, or 0 before the first add */
    size_t count;
    size_t tombs;
    table_key_fn key_of;
    uint64_t k0, k1;
};

/* ---- SipHash-1-3 (Aumasson and Bernstein), 64-bit output ------------------------------ */

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))

static void sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = ROTL(v[1], 13);
    v[1] ^= v[0];
    v[0] = ROTL(v[0], 32);
    v[2] += v[3];
    v[3] = ROTL(v[3], 16);
    v[3] ^= v[2];
    v[0] += v[3];
    v[3] = ROTL(v[3], 21);
    v[3] ^= v[0];
    v[2] += v[1];
    v[1] = ROTL(v[1], 17);
    v[1] ^= v[2];
    v[2] = ROTL(v[2], 32);
}

static uint64_t load_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t siphash13(uint64_t k0, uint64_t k1, const char *s, size_t len)
{
    const unsigned char *in = (const unsigned char *)s;
    uint64_t v[4] = { k0 ^ 0x736f6d6570736575ULL, k1 ^ 0x646f72616e646f6dULL,
                      k0 ^ 0x6c7967656e657261ULL, k1 ^ 0x7465646279746573ULL };
    size_t full = len - len % 8;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load_le64(in + i);
        v[3] ^= m;
        sip_round(v);
        v[0] ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < len % 8; i++)
        b |= (uint64_t)in[full + i] << (8 * i);
    v[3] ^= b;
    sip_round(v);
    v[0] ^= b;
    v[2] ^= 0xff;
    sip_round(v);
    sip_round(v);
    sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static uint64_t table_hash(const table_t *t, const char *key)
{
    return siphash13(t->k0, t->k1, key, strlen(key));
}

/* ---- the table ------------------------------------------------------------------------ */

table_t *table_create(table_key_fn key_of)
{
    table_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->key_of = key_of;
    uint64_t k[2] = { 0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL };
    if (getrandom(k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k) {
        /* Early boot without entropy: a fixed key still works, it is only predictable. */
    }
    t->k0 = k[0];
    t->k1 = k[1];
    return t;
}

void table_destroy(table_t **tp)
{
    table_t *t = tp ? *tp : NULL;
    if (!t)
        return;
    *tp = NULL;
    free(t->items);
    free(t->hashes);
    free(t);
}

size_t table_count(const table_t *t)
{
    return t ? t->count : 0;
}

size_t table_bytes(const table_t *t)
{
    return t ? sizeof *t + t->nslots * (sizeof *t->items + sizeof *t->hashes) : 0;
}

size_t table_slots(const table_t *t)
{
    return t ? t->nslots : 0;
}

/* The slot holding key, or SIZE_MAX. */
static size_t table_find(const table_t *t, const char *key, uint64_t h)
{
    if (t->nslots == 0)
        return SIZE_MAX;
    size_t mask = t->nslots - 1;
    uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        void *item = t->items[i];
        if (!item)
            return SIZE_MAX;
        if (item != TOMBSTONE && t->hashes[i] == tag && strcmp(t->key_of(item), key) == 0)
            return i;
    }
}

/* Places an item known to be absent; the table has a free slot. */
static void table_place(table_t *t, void *item, uint64_t h)
{
    size_t mask = t->nslots - 1;
    size_t i = (size_t)h & mask;
    while (t->items[i] && t->items[i] != TOMBSTONE)
        i = (i + 1) & mask;
    if (t->items[i] == TOMBSTONE)
        t->tombs--;
    t->items[i] = item;
    t->hashes[i] = (uint32_t)(h >> 32);
    t->count++;
}

static int table_resize(table_t *t, size_t nslots)
{
    void **items = calloc(nslots, sizeof *items);
    uint32_t *hashes = malloc(nslots * sizeof *hashes);
    if (!items || !hashes) {
        free(items);
        free(hashes);
        return -1;
    }
    void **old = t->items;
    size_t oldn = t->nslots;
    free(t->hashes);
    t->items = items;
    t->hashes = hashes;
    t->nslots = nslots;
    t->count = 0;
    t->tombs = 0;
    for (size_t i = 0; i < oldn; i++)
        if (old[i] && old[i] != TOMBSTONE)
            table_place(t, old[i], table_hash(t, t->key_of(old[i])));
    free(old);
    return 0;
}

/* The smallest power of two that holds count items at most half full. */
static size_t table_size_for(size_t count)
{
    size_t n = TABLE_MIN_SLOTS;
    while (n / 2 < count)
        n *= 2;
    return n;
}

void *table_get(const table_t *t, const char *key)
{
    size_t i = table_find(t, key, table_hash(t, key));
    return i == SIZE_MAX ? NULL : t->items[i];
}

void **table_ref(table_t *t, const char *key)
{
    size_t i = table_find(t, key, table_hash(t, key));
    return i == SIZE_MAX ? NULL : &t->items[i];
}

int table_add(table_t *t, void *item)
{
    if ((t->count + t->tombs + 1) * 4 > t->nslots * 3) {
        /* Grow when the items need it; otherwise only sweep the tombstones away. */
        size_t want = table_size_for(t->count + 1);
        if (table_resize(t, want > t->nslots ? want : t->nslots) < 0)
            return -1;
    }
    table_place(t, item, table_hash(t, t->key_of(item)));
    return 0;
}

void table_remove_at(table_t *t, size_t pos)
{
    if (pos >= t->nslots || !t->items[pos] || t->items[pos] == TOMBSTONE)
        return;
    /* A slot followed by a never-used one can become never-used itself. */
    if (!t->items[(pos + 1) & (t->nslots - 1)]) {
        t->items[pos] = NULL;
    } else {
        t->items[pos] = TOMBSTONE;
        t->tombs++;
    }
    t->count--;
}

void *table_remove(table_t *t, const char *key)
{
    size_t i = table_find(t, key, table_hash(t, key));
    if (i == SIZE_MAX)
        return NULL;
    void *item = t->items[i];
    table_remove_at(t, i);
    return item;
}

void *table_next(const table_t *t, size_t *pos)
{
    for (size_t i = *pos; i < t->nslots; i++)
        if (t->items[i] && t->items[i] != TOMBSTONE) {
            *pos = i + 1;
            return t->items[i];
        }
    *pos = t->nslots;
    return NULL;
}

void table_compact(table_t *t)
{
    if (t->nslots == 0)
        return;
    size_t want = table_size_for(t->count);
    if (want < t->nslots / 2 || t->tombs > t->nslots / 4) {
        if (t->count == 0) {
            free(t->items);
            free(t->hashes);
            t->items = NULL;
            t->hashes = NULL;
            t->nslots = t->tombs = 0;
            return;
        }
        table_resize(t, want < t->nslots ? want : t->nslots);
    }
}
