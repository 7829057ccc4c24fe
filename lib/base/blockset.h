/* A set of blocked networks, each with the time its block ends and why: the front ends' copy
 * of the limiter's blocks (lib/bus/lim.c).
 *
 * Networks are CIDRs of any prefix length: the limiter blocks an IPv4 /32 or an IPv6 /64,
 * an administrator's row in the blocks table may be any network. An entry is keyed by the
 * network's canonical text ("192.0.2.0/24", "2001:db8:1:2::/64") in a hash table
 * (base/table.h), and the set keeps, per address family, the prefix lengths in use: adding,
 * replacing and removing a network cost O(1), and looking an address up costs one hash
 * lookup per prefix length in use in its family, most specific first. */
#ifndef POSTERN_BLOCKSET_H
#define POSTERN_BLOCKSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/net.h"

/* A reason longer than this is cut. */
#define BLOCKSET_REASON_MAX 255

typedef struct blockset blockset_t;

blockset_t *blockset_create(void);
/* Frees the set and its entries; *s becomes NULL; blockset_destroy(NULL) is harmless. */
void blockset_destroy(blockset_t **s);

/* Adds network (CIDR text; a bare address is a host network; host bits below the prefix
 * are ignored), or replaces its entry. Returns 0, or -1 when network is not a CIDR or memory
 * runs out (the set is then as it was). */
int blockset_put(blockset_t *s, const char *network, int64_t until_ms, const char *reason);
/* Removes network's entry; false when there was none (or network is not a CIDR). */
bool blockset_remove(blockset_t *s, const char *network);
/* Entries in the set, ended ones included until removed. */
size_t blockset_count(const blockset_t *s);

/* True when a network holding addr is blocked at now_ms (its block ends later), looking at
 * the most specific networks first; fills reason (may be NULL) and until_ms_r (may be NULL)
 * from the entry found. */
bool blockset_lookup(const blockset_t *s, const net_addr_t *addr, int64_t now_ms, char *reason,
                     size_t reason_len, int64_t *until_ms_r);
/* Removes the entries whose block ended at or before now_ms; returns how many. */
size_t blockset_expire(blockset_t *s, int64_t now_ms);

#endif
