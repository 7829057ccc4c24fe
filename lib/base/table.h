/* A compact hash table of items keyed by strings: the limiter's millions of counters, and the
 * front ends' copy of the active blocks (lib/bus/lim.c).
 *
 * The table does not own its items or copy their keys: an item carries its own key and the
 * table asks for it with key_of(). Each slot costs 12 bytes (a pointer and 32 bits of the
 * hash); open addressing with linear probing, at most 3/4 full. Removal leaves a tombstone,
 * so positions stay put while a caller walks the table and removes as it goes (pruning);
 * tombstones are cleared when the table is rebuilt on insert or by table_compact().
 *
 * The hash is SipHash-1-3 with a random key chosen at creation: keys come from clients
 * (user names, addresses), and a fixed hash would let them aim for one bucket. */
#ifndef POSTERN_TABLE_H
#define POSTERN_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct table table_t;
typedef const char *(*table_key_fn)(const void *item);

table_t *table_create(table_key_fn key_of);
/* Frees the table, not the items. *t becomes NULL; table_destroy(NULL) is harmless. */
void table_destroy(table_t **t);

size_t table_count(const table_t *t);
/* Bytes the table itself holds (slots), for the memory figures. */
size_t table_bytes(const table_t *t);

void *table_get(const table_t *t, const char *key);
/* Adds item, whose key must not be in the table yet. Returns 0, or -1 (out of memory). */
int table_add(table_t *t, void *item);
/* The slot holding key's item, for replacing the item by one with the same key (after a
 * realloc). Valid until the next table_add() or table_compact(). NULL when absent. */
void **table_ref(table_t *t, const char *key);
/* Removes key's item and returns it, or NULL. */
void *table_remove(table_t *t, const char *key);

/* Walking: pos starts at 0; returns the next item at or after *pos and sets *pos past it,
 * or NULL at the end. table_remove_at(t, *pos - 1) removes the item just returned without
 * disturbing the walk. The order is arbitrary. */
void *table_next(const table_t *t, size_t *pos);
void table_remove_at(table_t *t, size_t pos);
/* Slots in the table: a walk that visits some slots at a time wraps at this number. */
size_t table_slots(const table_t *t);

/* Rebuilds the slots at the size the items need now (after a prune removed many). Not
 * during a walk. */
void table_compact(table_t *t);

#endif
