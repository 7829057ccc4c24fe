/* The mail store that pop3d and imapd share: mailboxes, messages, flags, UIDs and
 * mod-sequences (schema: lib/store/migrations/0007_imap.sql), over db_query().
 *
 * Contract of every call that takes a callback: it returns 0 and then calls cb exactly
 * once, on the loop thread, never from inside the call itself; or it returns -1 (ms NULL,
 * a bad argument, or out of memory) and never calls cb. The status given to cb is
 * MAILSTORE_OK or one of the errors below: MAILSTORE_TEMP means the database was
 * unreachable or failed (answer with a temporary error: NO [UNAVAILABLE], -ERR [SYS/TEMP]);
 * the others are the client's business (NO [NONEXISTENT], NO [ALREADYEXISTS],
 * NO [CANNOT]). Results are plain C data; unless said otherwise they are valid only
 * during the callback (the PGresult behind them is freed when it returns).
 *
 * UIDs are 32-bit (RFC 3501 section 2.3.1.1); a UID set is a list of inclusive ranges in
 * any order, overlapping or not (RFC 3501 "sequence-set" in UID form, "*" already
 * replaced by the caller). Internal dates are Unix seconds. */
#ifndef POSTERN_MAILSTORE_H
#define POSTERN_MAILSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/db.h"

typedef struct mailstore mailstore_t;

enum {
    MAILSTORE_OK = 0,
    MAILSTORE_TEMP = -1,      /* database unavailable or failed: try again later */
    MAILSTORE_NOTFOUND = -2,  /* no such user, mailbox or message */
    MAILSTORE_EXISTS = -3,    /* the mailbox name is taken */
    MAILSTORE_DENIED = -4,    /* not permitted: deleting INBOX, a bad name, moving into itself */
};
/* "ok", "temporary failure", ... for logs. */
const char *mailstore_strerror(int status);

/* System flags in a flags mask (mailstore_selected_t); keyword i of the mailbox is bit
 * MAILSTORE_F_KEYWORD0 + i. */
#define MAILSTORE_F_SEEN     (UINT64_C(1) << 0)
#define MAILSTORE_F_ANSWERED (UINT64_C(1) << 1)
#define MAILSTORE_F_FLAGGED  (UINT64_C(1) << 2)
#define MAILSTORE_F_DELETED  (UINT64_C(1) << 3)
#define MAILSTORE_F_DRAFT    (UINT64_C(1) << 4)
#define MAILSTORE_F_KEYWORD0 5
#define MAILSTORE_KEYWORDS_MAX (64 - MAILSTORE_F_KEYWORD0)

typedef struct mailstore_range {
    uint32_t lo, hi; /* inclusive; lo <= hi */
} mailstore_range_t;

typedef struct mailstore_uidset {
    const mailstore_range_t *ranges;
    size_t n;
} mailstore_uidset_t;

/* db must outlive the store. */
mailstore_t *mailstore_create(db_t *db);
/* Requests in flight still get their callbacks (from the db pool); *ms becomes NULL. */
void mailstore_destroy(mailstore_t **ms);

/* ---- users and mailboxes ----------------------------------------------------------- */

/* The user id of an address (compared lower-case). NOTFOUND when there is no such user. */
typedef void (*mailstore_user_cb)(void *arg, int status, int64_t user_id);
int mailstore_user_id(mailstore_t *ms, const char *address, mailstore_user_cb cb, void *arg);

typedef struct mailstore_mailbox {
    int64_t id;
    const char *name;        /* "INBOX", "Sent", "a/b": "/" separates levels */
    const char *special_use; /* "\Sent", "\Drafts", "\Trash", "\Junk", ... or NULL */
    bool subscribed;
    uint32_t uidvalidity, uidnext;
    uint64_t highestmodseq;
    int64_t messages, unseen; /* -1 when not counted */
} mailstore_mailbox_t;

/* LIST, LSUB and STATUS: the user's mailboxes in name order, or only the one named (name
 * not NULL; NOTFOUND if it does not exist). counts: fill messages and unseen (a count
 * over each mailbox's messages; ask only when needed). */
typedef void (*mailstore_list_cb)(void *arg, int status, const mailstore_mailbox_t *boxes,
                                  size_t n);
int mailstore_list(mailstore_t *ms, int64_t user_id, const char *name, bool counts,
                   mailstore_list_cb cb, void *arg);

/* CREATE (superior names are created too), DELETE (INBOX: DENIED), RENAME (of INBOX:
 * its messages move to the new name, RFC 3501 6.3.5), SUBSCRIBE/UNSUBSCRIBE. cb gets the
 * id and UIDVALIDITY of the mailbox created or renamed (0 for the others). */
typedef void (*mailstore_mailbox_cb)(void *arg, int status, int64_t mailbox_id,
                                     uint32_t uidvalidity);
int mailstore_create_mailbox(mailstore_t *ms, int64_t user_id, const char *name,
                             const char *special_use, mailstore_mailbox_cb cb, void *arg);
int mailstore_delete_mailbox(mailstore_t *ms, int64_t user_id, const char *name,
                             mailstore_mailbox_cb cb, void *arg);
int mailstore_rename_mailbox(mailstore_t *ms, int64_t user_id, const char *old_name,
                             const char *new_name, mailstore_mailbox_cb cb, void *arg);
int mailstore_subscribe(mailstore_t *ms, int64_t user_id, const char *name, bool on,
                        mailstore_mailbox_cb cb, void *arg);

/* ---- SELECT and what changed since ------------------------------------------------- */

/* A selected mailbox: its row and every message in UID order as parallel arrays. flags[i] is a mask
 * of MAILSTORE_F_*; keywords beyond MAILSTORE_KEYWORDS_MAX distinct ones in the mailbox
 * are left out of the masks (keywords_truncated; mailstore_fetch_meta() has them all). */
typedef struct mailstore_selected {
    int64_t id;
    uint32_t uidvalidity, uidnext;
    uint64_t highestmodseq;
    uint64_t expunged_floor; /* expunges with a modseq above this are all known */
    size_t count, unseen;
    uint32_t *uids;
    uint64_t *modseqs;
    uint64_t *flags;
    char **keywords;
    size_t nkeywords;
    bool keywords_truncated;
} mailstore_selected_t;

/* The store keeps what it last answered for each mailbox (lib/store/mbcache.h) and asks
 * PostgreSQL only for what changed since, when it can; when nothing did, the answer is what
 * it kept. sel belongs to the store and lives during the call only (mailstore_selected_copy()
 * keeps one). recent_uid: the highest UID a session has already taken as \Recent (RFC 3501
 * section 2.3.2), or -1 when not known; with no message above it, mailstore_claim_recent()
 * has nothing to claim. */
typedef void (*mailstore_select_cb)(void *arg, int status, const mailstore_selected_t *sel,
                                    int64_t recent_uid);
int mailstore_select(mailstore_t *ms, int64_t user_id, const char *name,
                     mailstore_select_cb cb, void *arg);
void mailstore_selected_free(mailstore_selected_t **sel);
/* A deep copy of sel (NULL when memory runs out), freed with mailstore_selected_free(). */
mailstore_selected_t *mailstore_selected_copy(const mailstore_selected_t *sel);

/* A message's flags as names ("\Seen", "$Forwarded"). */
typedef struct mailstore_flags {
    uint32_t uid;
    uint64_t modseq;
    const char *const *flags;
    size_t nflags;
} mailstore_flags_t;

typedef struct mailstore_changes {
    uint32_t uidvalidity, uidnext;
    uint64_t highestmodseq;
    /* Messages with a UID above since_uid (new) or a modseq above since_modseq (flags
     * changed), in UID order. */
    const mailstore_flags_t *msgs;
    size_t nmsgs;
    /* UIDs expunged with a modseq above since_modseq, ascending. Complete only when
     * expunged_complete; otherwise older records were dropped and the caller compares
     * its UID list with a fresh one. */
    const uint32_t *expunged;
    size_t nexpunged;
    bool expunged_complete;
} mailstore_changes_t;

/* \Recent (RFC 3501 section 2.3.2): the messages with a UID above the returned old value
 * and up to upto are \Recent for this session, and no other, once claimed (claim false:
 * EXAMINE only looks). NOTFOUND when the mailbox is gone. */
typedef void (*mailstore_recent_cb)(void *arg, int status, uint32_t old_recent_uid);
int mailstore_claim_recent(mailstore_t *ms, int64_t mailbox_id, uint32_t upto, bool claim,
                           mailstore_recent_cb cb, void *arg);

typedef void (*mailstore_changes_cb)(void *arg, int status, const mailstore_changes_t *ch);
int mailstore_changes(mailstore_t *ms, int64_t mailbox_id, uint64_t since_modseq,
                      uint32_t since_uid, mailstore_changes_cb cb, void *arg);

/* ---- FETCH ------------------------------------------------------------------------- */

typedef struct mailstore_meta {
    uint32_t uid;
    uint64_t size;
    int64_t internal_date;
    uint64_t modseq;
    const char *const *flags;
    size_t nflags;
    const char *envelope, *bodystructure, *body; /* cached forms, NULL when not yet */
    bool has_hdr_date;
    int64_t hdr_date;
} mailstore_meta_t;

/* The messages of the set that exist, in UID order. */
typedef void (*mailstore_meta_cb)(void *arg, int status, const mailstore_meta_t *msgs, size_t n);
int mailstore_fetch_meta(mailstore_t *ms, int64_t mailbox_id, const mailstore_uidset_t *set,
                         mailstore_meta_cb cb, void *arg);
/* The same without the cached structures: envelope, bodystructure and body are NULL. */
int mailstore_fetch_flags(mailstore_t *ms, int64_t mailbox_id, const mailstore_uidset_t *set,
                          mailstore_meta_cb cb, void *arg);

/* Messages read whole are kept for the next read (lib/store/rawcache.h), bytes of them at
 * most (32 MiB unless set; 0: none). */
void mailstore_set_message_cache(mailstore_t *ms, size_t bytes);

/* len bytes (or fewer at the end) of one message from offset: a large message is read in
 * chunks, never whole. total is the message's size. NOTFOUND when it is gone. */
typedef void (*mailstore_raw_cb)(void *arg, int status, const unsigned char *data, size_t len,
                                 uint64_t total);
int mailstore_fetch_raw(mailstore_t *ms, int64_t mailbox_id, uint32_t uid, uint64_t offset,
                        size_t len, mailstore_raw_cb cb, void *arg);
/* Whether a message's bytes are in the cache (their number in *len_r): a read of them is then
 * answered without PostgreSQL. */
bool mailstore_raw_cached(mailstore_t *ms, int64_t mailbox_id, uint32_t uid, size_t *len_r);

/* Stores the cached forms of a message; a NULL string (or has_hdr_date false) leaves
 * that column as it is. Changes no modseq. NOTFOUND when the message is gone. */
typedef void (*mailstore_done_cb)(void *arg, int status);
int mailstore_save_cache(mailstore_t *ms, int64_t mailbox_id, uint32_t uid, const char *envelope,
                         const char *bodystructure, const char *body, bool has_hdr_date,
                         int64_t hdr_date, mailstore_done_cb cb, void *arg);

/* ---- changes ----------------------------------------------------------------------- */

/* APPEND with APPENDUID (RFC 4315): internal_date 0 means now. */
typedef struct mailstore_appended {
    int64_t mailbox_id;
    uint32_t uid, uidvalidity;
    uint64_t modseq;
} mailstore_appended_t;
typedef void (*mailstore_append_cb)(void *arg, int status, const mailstore_appended_t *a);
int mailstore_append(mailstore_t *ms, int64_t user_id, const char *name,
                     const char *const *flags, size_t nflags, int64_t internal_date,
                     const void *raw, size_t len, mailstore_append_cb cb, void *arg);

/* COPY and MOVE with COPYUID (RFC 4315, RFC 6851): the messages of the set that exist go
 * to the user's mailbox dest_name; src_uids[i] became dst_uids[i], ascending. n is 0
 * when none existed (mailbox_id and uidvalidity are then 0). */
typedef struct mailstore_copied {
    int64_t mailbox_id;
    uint32_t uidvalidity;
    size_t n;
    const uint32_t *src_uids, *dst_uids;
} mailstore_copied_t;
typedef void (*mailstore_copy_cb)(void *arg, int status, const mailstore_copied_t *c);
int mailstore_copy(mailstore_t *ms, int64_t src_mailbox_id, const mailstore_uidset_t *set,
                   int64_t user_id, const char *dest_name, mailstore_copy_cb cb, void *arg);
int mailstore_move(mailstore_t *ms, int64_t src_mailbox_id, const mailstore_uidset_t *set,
                   int64_t user_id, const char *dest_name, mailstore_copy_cb cb, void *arg);

/* EXPUNGE (deleted_only, set NULL), UID EXPUNGE (deleted_only, a set), or removal of the
 * set whatever its flags (pop3d's QUIT). uids: those removed, ascending; modseq: the
 * mailbox's highest modseq after the removal. */
typedef struct mailstore_expunged {
    uint64_t modseq;
    const uint32_t *uids;
    size_t n;
} mailstore_expunged_t;
typedef void (*mailstore_expunge_cb)(void *arg, int status, const mailstore_expunged_t *e);
int mailstore_expunge(mailstore_t *ms, int64_t mailbox_id, const mailstore_uidset_t *set,
                      bool deleted_only, mailstore_expunge_cb cb, void *arg);

/* STORE FLAGS / +FLAGS / -FLAGS, with UNCHANGEDSINCE (RFC 7162 3.1.3) when
 * unchangedsince >= 0. One entry per message of the set that exists, in UID order. */
typedef enum mailstore_store_mode {
    MAILSTORE_STORE_SET,
    MAILSTORE_STORE_ADD,
    MAILSTORE_STORE_REMOVE,
} mailstore_store_mode_t;
typedef enum mailstore_store_result {
    MAILSTORE_STORED_CHANGED = 0,   /* flags and modseq are the new ones */
    MAILSTORE_STORED_UNCHANGED = 1, /* the flags were so already */
    MAILSTORE_STORED_MODIFIED = 2,  /* failed UNCHANGEDSINCE: goes in [MODIFIED ...] */
} mailstore_store_result_t;
typedef struct mailstore_stored {
    mailstore_flags_t msg;
    mailstore_store_result_t result;
} mailstore_stored_t;
typedef void (*mailstore_store_cb)(void *arg, int status, const mailstore_stored_t *rows,
                                   size_t n);
int mailstore_store(mailstore_t *ms, int64_t mailbox_id, const mailstore_uidset_t *set,
                    mailstore_store_mode_t mode, const char *const *flags, size_t nflags,
                    int64_t unchangedsince, mailstore_store_cb cb, void *arg);

/* ---- pop3d ------------------------------------------------------------------------- */

/* The INBOX listing of a user (what postern_pop3_open lists): UIDs and sizes. */
typedef struct mailstore_uidsize {
    uint32_t uid;
    uint64_t size;
} mailstore_uidsize_t;
typedef void (*mailstore_listing_cb)(void *arg, int status, int64_t mailbox_id,
                                     uint32_t uidvalidity, const mailstore_uidsize_t *msgs,
                                     size_t n);
int mailstore_listing(mailstore_t *ms, int64_t user_id, mailstore_listing_cb cb, void *arg);

/* ---- SEARCH's decoded text (migration 0009) ---------------------------------------- */

/* Up to limit (1 or more) messages of the mailbox whose decoded search text is not
 * computed yet, lowest UIDs first, with their sizes. n is 0 when none is left (also
 * for a mailbox that does not exist). */
typedef void (*mailstore_uidsizes_cb)(void *arg, int status, const mailstore_uidsize_t *msgs,
                                      size_t n);
int mailstore_unindexed(mailstore_t *ms, int64_t mailbox_id, size_t limit,
                        mailstore_uidsizes_cb cb, void *arg);

/* Stores a message's decoded search text (mail_search_text in lib/mail/mime.h): headers
 * and body, valid UTF-8 without NUL (the database refuses anything else: TEMP). Changes
 * no modseq. NOTFOUND when the message is gone. */
int mailstore_save_search(mailstore_t *ms, int64_t mailbox_id, uint32_t uid,
                          const char *headers, const char *body, mailstore_done_cb cb,
                          void *arg);

#endif
