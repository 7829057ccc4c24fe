/* Messages read whole lately, kept in the process for the next read: a mailbox id and a
 * UID name one message's bytes for good (a message's raw text never changes, UIDs are not
 * given twice in a mailbox, and a mailbox made again gets a new id), so an entry is never
 * stale. POP3 clients read TOP then RETR, IMAP clients fetch a body section by section,
 * and several devices read the same new mail: each of those would read the message from
 * PostgreSQL again.
 *
 * Only what a session may read is asked for: the callers look up mailbox ids and UIDs the
 * session's own listing gave. An entry of an expunged message may still be read until it
 * is pushed out, like a message a session has not yet been told is gone (RFC 3501 section
 * 7.4.1 lets a server answer FETCH of such a message). The least recently used entries go
 * first; entries are counted, so one being answered from outlives its eviction. One loop
 * thread only. */
#ifndef POSTERN_RAWCACHE_H
#define POSTERN_RAWCACHE_H

#include <stddef.h>
#include <stdint.h>

typedef struct rawcache rawcache_t;
typedef struct rawmsg rawmsg_t;

/* A cache of at most max_bytes of messages, each at most max_bytes / 8. One reference for
 * the caller; a read in flight holds one too, so that its answer can be kept after the
 * mail store that asked is gone. */
rawcache_t *rawcache_new(size_t max_bytes);
rawcache_t *rawcache_ref(rawcache_t *c);
void rawcache_unref(rawcache_t **c);

/* The message, held for the caller until rawmsg_unref(), or NULL. */
rawmsg_t *rawcache_get(rawcache_t *c, int64_t mailbox_id, uint32_t uid);
const unsigned char *rawmsg_data(const rawmsg_t *m);
size_t rawmsg_len(const rawmsg_t *m);
void rawmsg_unref(rawmsg_t **m);

/* Keeps a copy of the whole message, unless it is too large or memory runs out. */
void rawcache_put(rawcache_t *c, int64_t mailbox_id, uint32_t uid, const unsigned char *data,
                  size_t len);

/* Bytes held by entries, for the memory figures. */
size_t rawcache_bytes(const rawcache_t *c);

#endif
