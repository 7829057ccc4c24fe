/* What a process last saw of the mailboxes its sessions selected: the UIDs, mod-sequences
 * and flags of every message, as of a mod-sequence. A SELECT then asks PostgreSQL only for
 * what changed since (migration 0007 keeps that complete: every change of a message bumps
 * the mailbox's highestmodseq, expunges are recorded), instead of every message again.
 * Nothing here is trusted without that question: a snapshot is only a starting point.
 *
 * Snapshots are immutable once put and counted: a query holds the one it started from
 * while the cache may replace it. The cache itself is counted too, so that a query
 * answered after its mail store was destroyed still finds it. One loop thread only. */
#ifndef POSTERN_MBCACHE_H
#define POSTERN_MBCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "store/mailstore.h"

typedef struct mbcache mbcache_t;
typedef struct mbsnap mbsnap_t;

/* A cache holding up to max_msgs messages in all (the least recently used mailboxes go
 * first). One reference for the caller. */
mbcache_t *mbcache_new(size_t max_msgs);
mbcache_t *mbcache_ref(mbcache_t *c);
void mbcache_unref(mbcache_t **c);

/* The snapshot of user's mailbox name (as the client named it), held for the caller until
 * mbsnap_unref(); NULL when there is none. */
mbsnap_t *mbcache_get(mbcache_t *c, int64_t user_id, const char *name);
const mailstore_selected_t *mbsnap_selected(const mbsnap_t *s);
void mbsnap_unref(mbsnap_t **s);

/* Keeps a copy of sel as user's mailbox name, unless what is kept is of the same mailbox
 * at a later mod-sequence. Memory running out only means nothing is kept. */
void mbcache_put(mbcache_t *c, int64_t user_id, const char *name,
                 const mailstore_selected_t *sel);

#endif
