/* notifier: "once per interval per (cause, subject)", the in-memory side. A hash table
 * from (cause, subject) to the time the last alert went out. It only saves PostgreSQL a
 * round trip per repeated alert: the table alerts decides (postern_alert), survives
 * restarts and is shared by every notifier. Time comes from the caller. */
#include "notifier.h"

#include <stdlib.h>
#include <string.h>

#define GATE_BUCKETS 1024 /* a power of two */

typedef struct gate_entry {
    struct gate_entry *next;
    int64_t sent_ms;
    char key[]; /* cause, NUL, subject, NUL */
} gate_entry_t;

struct ntf_gate {
    gate_entry_t *buckets[GATE_BUCKETS];
    size_t size, max;
};

/* FNV-1a over cause, NUL, subject. */
static uint32_t gate_hash(const char *cause, const char *subject)
{
    uint32_t h = 2166136261u;
    for (const char *p = cause; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0u) * 16777619u;
    for (const char *p = subject; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static bool gate_key_is(const gate_entry_t *e, const char *cause, const char *subject)
{
    return strcmp(e->key, cause) == 0 && strcmp(e->key + strlen(cause) + 1, subject) == 0;
}

ntf_gate_t *ntf_gate_create(size_t max)
{
    ntf_gate_t *g = calloc(1, sizeof *g);
    if (g)
        g->max = max ? max : 1;
    return g;
}

void ntf_gate_destroy(ntf_gate_t **gp)
{
    ntf_gate_t *g = gp ? *gp : NULL;
    if (!g)
        return;
    *gp = NULL;
    for (size_t i = 0; i < GATE_BUCKETS; i++)
        for (gate_entry_t *e = g->buckets[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    free(g);
}

size_t ntf_gate_size(const ntf_gate_t *g)
{
    return g ? g->size : 0;
}

/* The link that points at the entry for (cause, subject), or at the NULL ending its
 * bucket. */
static gate_entry_t **gate_slot(ntf_gate_t *g, const char *cause, const char *subject)
{
    gate_entry_t **pp = &g->buckets[gate_hash(cause, subject) & (GATE_BUCKETS - 1)];
    while (*pp && !gate_key_is(*pp, cause, subject))
        pp = &(*pp)->next;
    return pp;
}

static void gate_unlink(ntf_gate_t *g, gate_entry_t **pp)
{
    gate_entry_t *e = *pp;
    *pp = e->next;
    free(e);
    g->size--;
}

bool ntf_gate_open(ntf_gate_t *g, const char *cause, const char *subject, int64_t now_ms,
                   int64_t interval_ms)
{
    if (!g)
        return true;
    gate_entry_t **pp = gate_slot(g, cause, subject);
    if (!*pp)
        return true;
    /* A clock that went backwards counts as "just sent": better one alert late than a
     * flood. */
    if (now_ms - (*pp)->sent_ms < interval_ms)
        return false;
    gate_unlink(g, pp);
    return true;
}

/* Makes room for one entry: the expired first; if none, the oldest. */
static void gate_evict(ntf_gate_t *g, int64_t now_ms, int64_t interval_ms)
{
    gate_entry_t **oldest = NULL;
    for (size_t i = 0; i < GATE_BUCKETS; i++) {
        gate_entry_t **pp = &g->buckets[i];
        while (*pp) {
            if (now_ms - (*pp)->sent_ms >= interval_ms) {
                gate_unlink(g, pp);
                continue;
            }
            if (!oldest || (*pp)->sent_ms < (*oldest)->sent_ms)
                oldest = pp;
            pp = &(*pp)->next;
        }
    }
    if (g->size >= g->max && oldest)
        gate_unlink(g, oldest);
}

void ntf_gate_note(ntf_gate_t *g, const char *cause, const char *subject, int64_t sent_ms,
                   int64_t now_ms, int64_t interval_ms)
{
    if (!g)
        return;
    gate_entry_t **pp = gate_slot(g, cause, subject);
    if (*pp) {
        if (sent_ms > (*pp)->sent_ms)
            (*pp)->sent_ms = sent_ms;
        return;
    }
    if (g->size >= g->max) {
        gate_evict(g, now_ms, interval_ms);
        pp = gate_slot(g, cause, subject); /* the chain may have changed */
    }
    size_t clen = strlen(cause), slen = strlen(subject);
    gate_entry_t *e = malloc(sizeof *e + clen + 1 + slen + 1);
    if (!e)
        return; /* PostgreSQL still decides */
    memcpy(e->key, cause, clen);
    e->key[clen] = '\0';
    memcpy(e->key + clen + 1, subject, slen + 1);
    e->sent_ms = sent_ms;
    e->next = NULL;
    *pp = e;
    g->size++;
}
