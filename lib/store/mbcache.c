#include "store/mbcache.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define MBCACHE_ENTRIES 256 /* mailboxes kept at most, whatever their size */

struct mbsnap {
    int refs;
    mailstore_selected_t *sel;
};

typedef struct entry {
    int64_t user_id;
    char *name;
    mbsnap_t *snap;
    uint64_t used; /* the cache's clock when last got or put */
} entry_t;

struct mbcache {
    int refs;
    size_t max_msgs, msgs;
    uint64_t clock;
    size_t n;
    entry_t entries[MBCACHE_ENTRIES];
};

mailstore_selected_t *mailstore_selected_copy(const mailstore_selected_t *sel)
{
    mailstore_selected_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    *c = *sel;
    c->uids = NULL;
    c->modseqs = NULL;
    c->flags = NULL;
    c->nkeywords = 0;
    size_t cap = sel->count ? sel->count : 1;
    c->uids = malloc(cap * sizeof *c->uids);
    c->modseqs = malloc(cap * sizeof *c->modseqs);
    c->flags = malloc(cap * sizeof *c->flags);
    c->keywords = calloc(MAILSTORE_KEYWORDS_MAX, sizeof *c->keywords);
    if (!c->uids || !c->modseqs || !c->flags || !c->keywords) {
        mailstore_selected_free(&c);
        return NULL;
    }
    memcpy(c->uids, sel->uids, sel->count * sizeof *c->uids);
    memcpy(c->modseqs, sel->modseqs, sel->count * sizeof *c->modseqs);
    memcpy(c->flags, sel->flags, sel->count * sizeof *c->flags);
    for (size_t k = 0; k < sel->nkeywords; k++, c->nkeywords++)
        if (!(c->keywords[k] = strdup(sel->keywords[k]))) {
            mailstore_selected_free(&c);
            return NULL;
        }
    return c;
}

mbcache_t *mbcache_new(size_t max_msgs)
{
    mbcache_t *c = calloc(1, sizeof *c);
    if (c) {
        c->refs = 1;
        c->max_msgs = max_msgs;
    }
    return c;
}

mbcache_t *mbcache_ref(mbcache_t *c)
{
    if (c)
        c->refs++;
    return c;
}

void mbsnap_unref(mbsnap_t **s)
{
    if (!s || !*s)
        return;
    if (--(*s)->refs == 0) {
        mailstore_selected_free(&(*s)->sel);
        free(*s);
    }
    *s = NULL;
}

static void entry_drop(mbcache_t *c, size_t i)
{
    entry_t *e = &c->entries[i];
    c->msgs -= mbsnap_selected(e->snap)->count;
    free(e->name);
    mbsnap_unref(&e->snap);
    c->entries[i] = c->entries[--c->n];
}

void mbcache_unref(mbcache_t **c)
{
    if (!c || !*c)
        return;
    if (--(*c)->refs == 0) {
        while ((*c)->n)
            entry_drop(*c, 0);
        free(*c);
    }
    *c = NULL;
}

static entry_t *entry_find(mbcache_t *c, int64_t user_id, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->entries[i].user_id == user_id && strcmp(c->entries[i].name, name) == 0)
            return &c->entries[i];
    return NULL;
}

mbsnap_t *mbcache_get(mbcache_t *c, int64_t user_id, const char *name)
{
    entry_t *e = c && name ? entry_find(c, user_id, name) : NULL;
    if (!e)
        return NULL;
    e->used = ++c->clock;
    e->snap->refs++;
    return e->snap;
}

const mailstore_selected_t *mbsnap_selected(const mbsnap_t *s)
{
    return s->sel;
}

/* Drops the least recently used entries until `need` more messages and one more entry
 * fit. */
static void make_room(mbcache_t *c, size_t need)
{
    while (c->n && (c->n == MBCACHE_ENTRIES || c->msgs + need > c->max_msgs)) {
        size_t lru = 0;
        for (size_t i = 1; i < c->n; i++)
            if (c->entries[i].used < c->entries[lru].used)
                lru = i;
        entry_drop(c, lru);
    }
}

void mbcache_put(mbcache_t *c, int64_t user_id, const char *name,
                 const mailstore_selected_t *sel)
{
    if (!c || !name || !sel || sel->count > c->max_msgs)
        return;
    entry_t *e = entry_find(c, user_id, name);
    if (e) {
        const mailstore_selected_t *old = e->snap->sel;
        if (old->id == sel->id && old->uidvalidity == sel->uidvalidity &&
            old->highestmodseq >= sel->highestmodseq) {
            e->used = ++c->clock;
            return; /* what is kept is as recent */
        }
        entry_drop(c, (size_t)(e - c->entries));
    }
    make_room(c, sel->count);
    mbsnap_t *s = calloc(1, sizeof *s);
    char *key = strdup(name);
    if (!s || !key || !(s->sel = mailstore_selected_copy(sel))) {
        free(s);
        free(key);
        return;
    }
    s->refs = 1;
    c->entries[c->n++] = (entry_t){ .user_id = user_id, .name = key, .snap = s,
                                    .used = ++c->clock };
    c->msgs += sel->count;
}
