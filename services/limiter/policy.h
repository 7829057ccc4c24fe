/* The limiter's decisions: HAMR (messages per authenticated user over a sliding window)
 * and account harvesting (failed logins and invalid recipients per client network, failed
 * logins per account). Pure: no bus, no database, no clock of its own. Every call takes
 * now_ms, and whatever must reach the outside (a block to store and broadcast, an account
 * to disable, an alert to send) goes through the hooks given at creation.
 *
 * State per key, all in compact hash tables pruned as it goes idle:
 *   user     the times (and recipient counts) of the last max_messages accepted messages,
 *            the user's resolved HAMR settings, the client addresses seen, the last alert
 *   network  the last max_failures failed logins per service (with the start of each
 *            attempt's digest, so a repeated identical attempt counts once), and the last
 *            hard_limit invalid recipients
 *   account  the failed logins against one account, from anywhere
 * plus the reservations made by allowed sends, the disabled accounts, and blocks.h. */
#ifndef LIMITER_POLICY_H
#define LIMITER_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blocks.h"
#include "conf.h"

#define LIMITER_REASON_MAX 256
/* Per-account slowdown: this much per failure over max_failures, at most the cap. */
#define LIMITER_ACCOUNT_STEP_MS 250
#define LIMITER_ACCOUNT_MAX_MS 5000
/* Invalid recipients: this much per failure over soft_limit, at most the cap. */
#define LIMITER_RCPT_STEP_MS 500
#define LIMITER_RCPT_MAX_MS 10000
/* A reservation neither confirmed nor released is forgotten after this (its slot stays
 * counted until it leaves the window). */
#define LIMITER_RESERVATION_MS (3600LL * 1000)
/* A user's resolved settings stay cached this long without traffic. */
#define LIMITER_USER_CACHE_MS (600LL * 1000)
/* Client addresses remembered per user for alerts. */
#define LIMITER_SEEN_MAX 8

/* Numbered as the proto's Verdict. */
typedef enum limiter_verdict {
    LIMITER_ALLOW = 1,
    LIMITER_THROTTLE = 2,
    LIMITER_DISABLED = 3,
    LIMITER_BLOCKED = 4,
} limiter_verdict_t;

/* Numbered as the proto's AuthResult (the two that matter here). */
enum { LIMITER_AUTH_OK = 1, LIMITER_AUTH_BAD_CREDENTIALS = 2 };

/* Numbered as the proto's BlockChange.Kind. */
typedef enum limiter_change {
    LIMITER_ADDED = 1,
    LIMITER_LIFTED = 2,
    LIMITER_EXPIRED = 3,
} limiter_change_t;

typedef struct limiter_reply {
    limiter_verdict_t verdict;
    char reason[LIMITER_REASON_MAX];
    uint32_t retry_after_s; /* THROTTLE */
    int64_t until_ms;       /* BLOCKED */
    uint32_t delay_ms;      /* wait before answering the client */
    /* limiter_send_check: a slot was taken now (the standbys must count it too), in a
     * window of max_messages over interval_s */
    bool reserved;
    uint32_t max_messages, interval_s;
} limiter_reply_t;

/* An account whose sending is disabled. */
typedef struct disabled {
    int64_t since_ms;
    uint64_t written; /* store bookkeeping, as in block_t */
    uint32_t mark;
    uint8_t persist;  /* persist_state_t */
    char reason[BLOCK_REASON_MAX];
    char user[];
} disabled_t;

typedef struct limiter_alert {
    const char *cause; /* "hamr", "harvest" */
    const char *user;  /* "" when about a network only */
    const char *const *client_addrs;
    size_t n_client_addrs;
    const char *limit;
    const char *action; /* "throttle", "disable", "block", "delay" */
    int64_t time_ms;
    const char *detail;
    bool notify_owner;
    uint32_t interval_s; /* the interval the limit counts over */
} limiter_alert_t;

typedef struct limiter_hooks {
    void *arg;
    /* A block was added (or extended), lifted or expired. from_store: PostgreSQL already
     * has this state (it was found there on a reload); otherwise the store must write the
     * block (added) or delete it (lifted, expired). The block is freed after the call for
     * LIFTED and EXPIRED. */
    void (*block)(void *arg, block_t *b, limiter_change_t change, bool from_store);
    /* Sending was disabled (disabled true) or enabled again; from_store as above. d is
     * freed after the call when enabled again. */
    void (*account)(void *arg, disabled_t *d, bool disabled, bool from_store);
    void (*alert)(void *arg, const limiter_alert_t *a);
} limiter_hooks_t;

typedef struct limiter limiter_t;

/* Starts with the default settings and no exemptions. hooks may have NULL members. */
limiter_t *limiter_create(const limiter_hooks_t *hooks);
void limiter_destroy(limiter_t **L);

/* Quiet: this limiter only follows the one that answers (replica.h). It counts as usual,
 * but calls no hook: it blocks nothing outside itself, writes nothing, announces nothing
 * and sends no alert. A block it reaches is kept (PERSIST_QUIET) for LIMITER_QUIET_KEEP_MS
 * whatever PostgreSQL says, then PostgreSQL decides as for any block. Leaving quiet, the
 * blocks reached quietly in that time are written and announced: the last leader may have
 * died before it did. Those judged by the default settings (limiter_set_conf() not called
 * yet) or of a service whose harvesting is now off are dropped instead: a block the last
 * leader made is in PostgreSQL. */
#define LIMITER_QUIET_KEEP_MS (30LL * 1000)
void limiter_set_quiet(limiter_t *L, bool quiet, int64_t now_ms);

/* A slot the answering limiter reserved (limiter_reply_t.reserved), applied by a follower:
 * what limiter_send_check did to user's window, without deciding. */
void limiter_apply_reserve(limiter_t *L, const char *user, const char *queue_id,
                           uint32_t rcpt_count, uint32_t max_messages, uint32_t interval_s,
                           int64_t now_ms);

/* A block of network was lifted (or user enabled again) at the answering limiter, which
 * forgot the counters that led there: the same here. A quiet block of network goes too. */
void limiter_apply_forget(limiter_t *L, const char *network);
void limiter_apply_clear_user(limiter_t *L, const char *user);

/* The longest interval any limit counts over now (settings known so far), at least an hour:
 * what the limiter's stream must keep. */
int64_t limiter_history_ms(const limiter_t *L);

/* ---- settings ------------------------------------------------------------------------- */

/* The system-level HAMR settings (used for users whose own are not known) and the
 * harvesting settings of each service (index 0: system level, used per account). */
void limiter_set_conf(limiter_t *L, const hamr_conf_t *hamr,
                      const harvest_conf_t harvest[CONF_NSERVICES]);
const harvest_conf_t *limiter_harvest_conf(const limiter_t *L, int service);
/* Every user's cached settings become stale: the next check asks for them again. */
void limiter_invalidate(limiter_t *L);
/* A refresh round (the periodic reload, a safety net for a change whose announcement was
 * missed): cached settings stay in use, and are asked for again at their user's next check
 * while that check goes on with them. */
void limiter_refresh(limiter_t *L);
/* True once per refresh round for a user whose cached settings were not asked for in it
 * (and notes that they now are); false for a user not cached. */
bool limiter_user_refresh_due(limiter_t *L, const char *user);
/* The current settings generation; a resolution started now is tagged with it. */
uint32_t limiter_generation(const limiter_t *L);
/* True when user's settings are cached and not stale. */
bool limiter_user_fresh(const limiter_t *L, const char *user);
/* Caches user's resolved settings, tagged with the generation the resolution started in. */
void limiter_user_conf(limiter_t *L, const char *user, const hamr_conf_t *conf,
                       uint32_t generation, int64_t now_ms);
/* The exempt networks. Active blocks inside one are lifted (hook, not from_store). */
void limiter_set_exempt(limiter_t *L, const char *const *cidrs, size_t n, int64_t now_ms);

/* ---- HAMR ----------------------------------------------------------------------------- */

/* May user send a message to rcpt_count recipients now? ALLOW reserves a slot under
 * queue_id (asking again with the same queue_id reserves nothing more). */
void limiter_send_check(limiter_t *L, const char *user, const char *client,
                        uint32_t rcpt_count, const char *queue_id, int64_t now_ms,
                        limiter_reply_t *out);
/* The slot reserved under queue_id was not used. */
void limiter_send_release(limiter_t *L, const char *user, const char *queue_id,
                          int64_t now_ms);
/* A message was accepted. With a reservation it is already counted; an authenticated
 * message without one counts now. */
void limiter_message(limiter_t *L, const char *user, const char *queue_id,
                     bool authenticated, uint32_t rcpt_count, const char *client,
                     int64_t now_ms);
disabled_t *limiter_disabled(const limiter_t *L, const char *user);
/* Walks the disabled accounts (pos starts at 0), for the store's retries. */
disabled_t *limiter_disabled_next(limiter_t *L, size_t *pos);

/* ---- harvesting ----------------------------------------------------------------------- */

/* May client (and user, may be empty) try to authenticate? */
void limiter_auth_check(limiter_t *L, int service, const char *client, const char *user,
                        int64_t now_ms, limiter_reply_t *out);
/* An authentication outcome. digest (may be NULL) names the attempt. */
void limiter_auth_event(limiter_t *L, int service, const char *user, const char *client,
                        int result, const uint8_t *digest, size_t digest_len, int64_t now_ms);
/* An invalid local recipient from client: how long to delay, or blocked now. */
void limiter_rcpt_failure(limiter_t *L, int service, const char *client, int64_t now_ms,
                          limiter_reply_t *out);
blocks_t *limiter_blocks(limiter_t *L);

/* ---- what PostgreSQL says, and time passing -------------------------------------------- */

/* The blocks PostgreSQL holds, read by a query sent when the store had finished `written`
 * writes. Blocks missing there that PostgreSQL had before are lifted; new or changed rows
 * are taken. announce: tell the hooks about the differences (not on the first load). */
void limiter_sync_blocks(limiter_t *L, const block_t *rows, size_t n, uint64_t written,
                         bool announce, int64_t now_ms);
/* The same for disabled accounts: rows hold user, reason and since_ms. */
void limiter_sync_disabled(limiter_t *L, const disabled_t *const *rows, size_t n,
                           uint64_t written, bool announce);
/* Offense history from PostgreSQL: kept when it knows more than memory. */
void limiter_load_offender(limiter_t *L, const char *network, uint32_t offenses,
                           int64_t last_blocked_ms);

/* Ends the blocks whose time is up (hook EXPIRED). */
void limiter_expire(limiter_t *L, int64_t now_ms);
/* Frees idle state, looking at up to budget entries per table; returns entries freed. */
size_t limiter_prune(limiter_t *L, int64_t now_ms, size_t budget);

/* Keys held, for logs and the memory figures. */
typedef struct limiter_stats {
    size_t users, reservations, disabled, auth_counters, rcpt_counters, accounts, blocks,
        offenders;
} limiter_stats_t;
void limiter_stats(const limiter_t *L, limiter_stats_t *st);

#endif
