/* Active blocks, the offense history behind longer blocks for repeat offenders, and the
 * exempt networks. Memory only; PostgreSQL is the store's business (store.c), which keeps
 * its bookkeeping in the persist and written fields.
 *
 * Networks are keyed by their canonical CIDR text: a client's IPv4 address as a /32, an
 * IPv6 address as its /64 (blocks_network()). */
#ifndef LIMITER_BLOCKS_H
#define LIMITER_BLOCKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/net.h"

#define BLOCK_NETWORK_MAX 48
#define BLOCK_REASON_MAX 200
/* No block lasts longer, however often a network comes back. */
#define BLOCK_MAX_MS (30LL * 24 * 3600 * 1000)
/* An offender quiet for this long starts again at a first offense. */
#define BLOCK_QUIET_MS (30LL * 24 * 3600 * 1000)

typedef enum persist_state {
    PERSIST_CLEAN, /* PostgreSQL has it as it is here */
    PERSIST_DIRTY, /* to be written (again) */
    PERSIST_BUSY,  /* a write is in flight */
    PERSIST_QUIET, /* reached by a replica that does not answer (policy.h, quiet): the one
                      that answers writes it; a new leader writes it again when recent */
} persist_state_t;

typedef struct block {
    int64_t since_ms, until_ms;
    uint64_t written; /* store: its write counter when PostgreSQL last had this block */
    uint32_t offense; /* 1 for a first block */
    uint32_t mark;    /* sync: seen in the latest reload */
    uint8_t service;  /* where the failures happened (conf.h numbering) */
    uint8_t persist;  /* persist_state_t */
    char reason[BLOCK_REASON_MAX];
    char network[BLOCK_NETWORK_MAX];
} block_t;

typedef struct offender {
    int64_t last_blocked_ms;
    int64_t last_alert_ms; /* INT64_MIN: never */
    uint32_t offenses;
    char network[];
} offender_t;

typedef struct blocks blocks_t;

blocks_t *blocks_create(void);
void blocks_destroy(blocks_t **b);

/* The network a client address counts in ("192.0.2.7/32", "2001:db8:1:2::/64"). Returns 0,
 * or -1 when client is not an address. addr_r may be NULL. */
int blocks_network(const char *client, char *key, size_t len, net_addr_t *addr_r);
/* Canonical text of a CIDR as PostgreSQL writes it; a bare address is a host network.
 * Returns 0, or -1. */
int blocks_canonical(const char *cidr, char *out, size_t len);

/* Replaces the exempt list. Entries that do not parse are skipped; returns how many did. */
size_t blocks_set_exempt(blocks_t *b, const char *const *cidrs, size_t n);
bool blocks_addr_exempt(const blocks_t *b, const net_addr_t *addr);
/* True when the whole network (canonical text) lies inside an exempt network. */
bool blocks_network_exempt(const blocks_t *b, const char *network);
size_t blocks_exempt_count(const blocks_t *b);
/* The i-th exempt network as canonical text. */
const char *blocks_exempt_at(const blocks_t *b, size_t i);

block_t *blocks_get(const blocks_t *b, const char *network);
/* Adds or replaces the block for blk->network; returns the stored copy, or NULL. */
block_t *blocks_put(blocks_t *b, const block_t *blk);
void blocks_delete(blocks_t *b, const char *network);
size_t blocks_count(const blocks_t *b);
/* Walks the blocks: pos starts at 0. Deleting the block just returned is allowed. */
block_t *blocks_next(blocks_t *b, size_t *pos);
void blocks_delete_at(blocks_t *b, size_t pos);

/* Paging through the active blocks in the bytewise order of their network text, for a front
 * end's resync (BlockListRequest): each page starts after the last network of the one before,
 * so no page state is kept here. The order is a sorted copy of the networks, made again when
 * a block was added since and fresh is set (a resync's first page: the order then holds every
 * block added before that request). A block lifted since the order was made is skipped; one
 * added since is missing from the later pages, and reaches the front end by its broadcast.
 * blocks_order_seek() sets *pos to the first network sorting after `after` ("": the first);
 * blocks_order_next() returns the block there and moves on, or NULL at the end. */
void blocks_order_seek(blocks_t *b, const char *after, bool fresh, size_t *pos);
block_t *blocks_order_next(blocks_t *b, size_t *pos);

/* The history of a network; created (with no offenses) when create is set. */
offender_t *blocks_offender(blocks_t *b, const char *network, bool create);
/* Forgets offenders whose last block ended before before_ms. */
void blocks_forget_offenders(blocks_t *b, int64_t before_ms);
size_t blocks_offender_count(const blocks_t *b);

/* How long block number offense lasts: block_s doubled for each earlier offense, at most
 * BLOCK_MAX_MS. */
int64_t blocks_duration_ms(uint32_t block_s, uint32_t offense);

#endif
