/* The raw message cache: a hash table by "mailbox:uid" and a list from most to least
 * recently used. */
#include "store/rawcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/table.h"

struct rawmsg {
    unsigned refs;            /* the cache's own, while it holds the entry, and readers' */
    rawmsg_t *prev, *next;    /* the recency list, while in the cache */
    size_t len;
    char key[44];             /* "<mailbox id>:<uid>" */
    unsigned char data[];
};

struct rawcache {
    unsigned refs;
    table_t *table;
    rawmsg_t *head, *tail;    /* most and least recently used */
    size_t bytes, max_bytes;
};

static const char *rawmsg_key(const void *item)
{
    return ((const rawmsg_t *)item)->key;
}

static void make_key(char *key, size_t size, int64_t mailbox_id, uint32_t uid)
{
    snprintf(key, size, "%lld:%u", (long long)mailbox_id, uid);
}

rawcache_t *rawcache_new(size_t max_bytes)
{
    rawcache_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->table = table_create(rawmsg_key);
    if (!c->table) {
        free(c);
        return NULL;
    }
    c->refs = 1;
    c->max_bytes = max_bytes;
    return c;
}

static void unlink_entry(rawcache_t *c, rawmsg_t *m)
{
    if (m->prev)
        m->prev->next = m->next;
    else
        c->head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        c->tail = m->prev;
    m->prev = m->next = NULL;
}

static void push_front(rawcache_t *c, rawmsg_t *m)
{
    m->prev = NULL;
    m->next = c->head;
    if (c->head)
        c->head->prev = m;
    else
        c->tail = m;
    c->head = m;
}

/* Takes m out of the cache; readers holding it keep it. */
static void evict(rawcache_t *c, rawmsg_t *m)
{
    table_remove(c->table, m->key);
    unlink_entry(c, m);
    c->bytes -= m->len;
    rawmsg_unref(&m);
}

rawcache_t *rawcache_ref(rawcache_t *c)
{
    if (c)
        c->refs++;
    return c;
}

void rawcache_unref(rawcache_t **cp)
{
    if (!cp || !*cp)
        return;
    rawcache_t *c = *cp;
    *cp = NULL;
    if (--c->refs > 0)
        return;
    while (c->head)
        evict(c, c->head);
    table_destroy(&c->table);
    free(c);
}

rawmsg_t *rawcache_get(rawcache_t *c, int64_t mailbox_id, uint32_t uid)
{
    if (!c)
        return NULL;
    char key[44];
    make_key(key, sizeof key, mailbox_id, uid);
    rawmsg_t *m = table_get(c->table, key);
    if (!m)
        return NULL;
    unlink_entry(c, m);
    push_front(c, m);
    m->refs++;
    return m;
}

const unsigned char *rawmsg_data(const rawmsg_t *m)
{
    return m->data;
}

size_t rawmsg_len(const rawmsg_t *m)
{
    return m->len;
}

void rawmsg_unref(rawmsg_t **mp)
{
    if (!mp || !*mp)
        return;
    if (--(*mp)->refs == 0)
        free(*mp);
    *mp = NULL;
}

void rawcache_put(rawcache_t *c, int64_t mailbox_id, uint32_t uid, const unsigned char *data,
                  size_t len)
{
    if (!c || len > c->max_bytes / 8)
        return;
    char key[44];
    make_key(key, sizeof key, mailbox_id, uid);
    if (table_get(c->table, key))
        return; /* the same bytes */
    rawmsg_t *m = malloc(sizeof *m + len);
    if (!m)
        return;
    m->refs = 1;
    m->len = len;
    memcpy(m->key, key, sizeof key);
    memcpy(m->data, data, len);
    while (c->tail && c->bytes + len > c->max_bytes)
        evict(c, c->tail);
    if (table_add(c->table, m) < 0) {
        free(m);
        return;
    }
    push_front(c, m);
    c->bytes += len;
}

size_t rawcache_bytes(const rawcache_t *c)
{
    return c ? c->bytes : 0;
}
