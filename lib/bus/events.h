/* The messages of the bus as plain C: a publish helper per event taking C values, and, where
 * a service listens, a subscribe helper that unpacks the message, checks it, drops (logs and
 * counts) a bad one and calls a typed callback. No service packs or unpacks protobuf itself.
 * Subjects, publishers and subscribers: lib/bus/subjects.h; messages: proto/postern.proto.
 *
 * Publishing returns 0, or -1 when the bus is not connected, NATS refuses, or an argument is
 * not valid for the message: a lost event is the caller's to log (every event here is best
 * effort; nothing waits for it).
 *
 * Subscribing returns 0, or -1. The callbacks run on the loop thread; the strings and arrays
 * they are given are valid during the call only. A subscription lives as long as the bus;
 * its record (the callback and its argument) is freed by ev_release(), which svc_main calls
 * for its bus. */
#ifndef POSTERN_EVENTS_H
#define POSTERN_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "bus/bus.h"
#include "bus/subjects.h"
#include "postern.pb-c.h" /* the enums Postern__Service, __AuthResult, __Verdict */

/* Frees the records of the subscriptions made here on bus. Call it next to bus_destroy(bus),
 * in the same loop callback (no message is delivered in between). */
void ev_release(bus_t *bus);

/* ---- postern.queue.added (QueueAdded) -------------------------------------------------- */

#define EV_QUEUE_ID_MAX 128

/* True for a queue id the message may carry: 1 to EV_QUEUE_ID_MAX bytes of printable
 * ASCII, no spaces. */
bool ev_queue_id_ok(const char *queue_id);

/* After PostgreSQL has committed queue_id's row in outbound_queue. */
int ev_publish_queue_added(bus_t *bus, const char *queue_id);
typedef void (*ev_queue_added_cb)(void *arg, const char *queue_id);
/* Messages whose queue id fails ev_queue_id_ok() are dropped. */
int ev_subscribe_queue_added(bus_t *bus, ev_queue_added_cb cb, void *arg);

/* ---- postern.config.changed (ConfigChanged) -------------------------------------------- */

/* what: "relay", "domains", "users", "settings", ... */
int ev_publish_config_changed(bus_t *bus, const char *what);
/* The same message packed into out (reset first), stamped now, for a program that publishes
 * with NATS directly (mailctl has no loop). Returns 0, or -1 when memory runs out. */
int ev_pack_config_changed(const char *what, buf_t *out);
typedef void (*ev_config_changed_cb)(void *arg, const char *what);
int ev_subscribe_config_changed(bus_t *bus, ev_config_changed_cb cb, void *arg);

/* ---- postern.event.auth (AuthEvent) ---------------------------------------------------- */

typedef struct ev_auth {
    Postern__Service service;
    const char *user;             /* the identity as given, lowercased; may be "" */
    const char *client_addr;
    const char *mechanism;        /* PLAIN, LOGIN, SCRAM-SHA-256, USER */
    bool tls;
    Postern__AuthResult result;
    int64_t time_ms;              /* 0 when publishing: now */
    const char *instance;
    const uint8_t *attempt_digest; /* failed attempts only; NULL otherwise */
    size_t attempt_digest_len;
} ev_auth_t;

int ev_publish_auth(bus_t *bus, const ev_auth_t *ev);
typedef void (*ev_auth_cb)(void *arg, const ev_auth_t *ev);
int ev_subscribe_auth(bus_t *bus, ev_auth_cb cb, void *arg);

/* ---- postern.event.message (MessageEvent) ---------------------------------------------- */

typedef struct ev_message {
    Postern__Service service;
    const char *user;             /* "" for an unauthenticated session */
    const char *sender;           /* "" for the null sender */
    uint32_t rcpt_count;
    uint32_t relay_rcpt_count;
    uint64_t size;
    const char *client_addr;
    bool authenticated;
    int64_t time_ms;              /* 0 when publishing: now */
    const char *instance;
    const char *queue_id;
} ev_message_t;

int ev_publish_message(bus_t *bus, const ev_message_t *ev);
typedef void (*ev_message_cb)(void *arg, const ev_message_t *ev);
int ev_subscribe_message(bus_t *bus, ev_message_cb cb, void *arg);

/* ---- blocks: postern.block.changed (BlockChange), the limiter's BlockList ---------------- */

typedef struct ev_block {
    const char *network;          /* CIDR */
    const char *reason;
    int64_t since_ms, until_ms;
    Postern__Service service;
    uint32_t offense;
} ev_block_t;

/* Numbered as BlockChange.Kind. */
typedef enum ev_block_change {
    EV_BLOCK_ADDED = 1,
    EV_BLOCK_LIFTED = 2,
    EV_BLOCK_EXPIRED = 3,
} ev_block_change_t;

int ev_publish_block_changed(bus_t *bus, ev_block_change_t change, const ev_block_t *block);
/* Messages without a known kind or a block with a network are dropped. */
typedef void (*ev_block_changed_cb)(void *arg, ev_block_change_t change, const ev_block_t *block);
int ev_subscribe_block_changed(bus_t *bus, ev_block_changed_cb cb, void *arg);

/* ---- postern.account.changed (AccountChange) ------------------------------------------- */

int ev_publish_account_changed(bus_t *bus, const char *user, bool send_disabled,
                               const char *reason);

/* ---- postern.alert (Alert) -------------------------------------------------------------- */

typedef struct ev_alert {
    const char *cause;            /* "hamr", "harvest" */
    const char *user;             /* "" when about a network only */
    const char *const *client_addrs;
    size_t n_client_addrs;
    const char *limit;
    const char *action;           /* "throttle", "disable", "block", "delay" */
    int64_t time_ms;
    const char *detail;
    bool notify_owner;
    uint32_t interval_s;          /* the interval the limit counts over; 0: not given */
} ev_alert_t;

int ev_publish_alert(bus_t *bus, const ev_alert_t *alert);
/* The message packed into out (reset first), for a publisher that keeps alerts while the
 * bus is down and sends them later with bus_publish(bus, BUS_SUBJECT_ALERT, ...). Returns 0,
 * or -1 when memory runs out. */
int ev_pack_alert(const ev_alert_t *alert, buf_t *out);
/* The fields are checked by the notifier (what it mails); only undecodable messages are
 * dropped here. */
typedef void (*ev_alert_cb)(void *arg, const ev_alert_t *alert);
int ev_subscribe_alert(bus_t *bus, ev_alert_cb cb, void *arg);

/* ---- the limiter's side of its requests ------------------------------------------------ *
 * The front ends ask through lib/bus/lim.h. A request callback gets the reply subject
 * (NULL or "" when the asker wants no answer) to answer on with ev_reply_*(). */

typedef struct ev_check_reply {
    Postern__Verdict verdict;
    const char *reason;
    uint32_t retry_after_s;       /* THROTTLE */
    int64_t until_ms;             /* BLOCKED */
    uint32_t delay_ms;            /* how long the front end waits before it answers */
} ev_check_reply_t;

/* A CheckReply on reply; -1 also when reply is NULL or "". */
int ev_reply_check(bus_t *bus, const char *reply, const ev_check_reply_t *r);
/* A BlockList on reply: the whole list, for a request without paging. */
int ev_reply_block_list(bus_t *bus, const char *reply, const ev_block_t *blocks, size_t nblocks,
                        const char *const *exempt, size_t nexempt);

/* One page of the block list (BlockListRequest paged): at most EV_BLOCK_PAGE_BYTES, counted
 * with ev_block_list_block_size() and ev_block_list_exempt_size(), so that a reply stays
 * well under NATS's payload limit (1 MiB by default). */
#define EV_BLOCK_PAGE_BYTES (256 * 1024)
typedef struct ev_block_page {
    const ev_block_t *blocks;     /* in the order of their network text, after the request's */
    size_t nblocks;
    const char *const *exempt;    /* the first page only */
    size_t nexempt;
    bool more;                    /* another page follows, after next_after */
    const char *next_after;       /* the network of the last block here, when more */
    uint32_t total;               /* the active blocks the limiter has */
} ev_block_page_t;
int ev_reply_block_page(bus_t *bus, const char *reply, const ev_block_page_t *page);
/* The bytes a block, and an exempt network, add to a BlockList. */
size_t ev_block_list_block_size(const ev_block_t *block);
size_t ev_block_list_exempt_size(const char *network);

/* postern.limiter.auth (AuthCheck) */
typedef struct ev_auth_check {
    Postern__Service service;
    const char *client_addr;
    const char *user;             /* may be "" */
} ev_auth_check_t;
typedef void (*ev_auth_check_cb)(void *arg, const ev_auth_check_t *req, const char *reply);
int ev_subscribe_auth_check(bus_t *bus, ev_auth_check_cb cb, void *arg);

/* postern.limiter.send (SendCheck) */
typedef struct ev_send_check {
    Postern__Service service;
    const char *user;
    const char *client_addr;
    uint32_t rcpt_count;
    const char *queue_id;
    const char *instance;
} ev_send_check_t;
typedef void (*ev_send_check_cb)(void *arg, const ev_send_check_t *req, const char *reply);
int ev_subscribe_send_check(bus_t *bus, ev_send_check_cb cb, void *arg);

/* postern.limiter.release (SendRelease) */
typedef void (*ev_send_release_cb)(void *arg, const char *user, const char *queue_id);
int ev_subscribe_send_release(bus_t *bus, ev_send_release_cb cb, void *arg);

/* postern.limiter.rcpt (RcptFailure) */
typedef struct ev_rcpt_failure {
    Postern__Service service;
    const char *client_addr;
    const char *recipient;
} ev_rcpt_failure_t;
typedef void (*ev_rcpt_failure_cb)(void *arg, const ev_rcpt_failure_t *req, const char *reply);
int ev_subscribe_rcpt_failure(bus_t *bus, ev_rcpt_failure_cb cb, void *arg);

/* postern.limiter.blocks (BlockListRequest) */
typedef struct ev_block_list_request {
    bool paged;                   /* false: an older front end, which wants the whole list */
    const char *after;            /* paged: the page starts after this network; "" first */
} ev_block_list_request_t;
typedef void (*ev_block_list_request_cb)(void *arg, const ev_block_list_request_t *req,
                                         const char *reply);
int ev_subscribe_block_list_request(bus_t *bus, ev_block_list_request_cb cb, void *arg);

/* ---- the limiter's stream (BUS_STREAM_LIMITER) -------------------------------------------- */

/* A decision of the leading limiter that changed its counters (LimiterLog). */
typedef enum ev_limiter_log_kind {
    EV_LIMITER_LOG_RESERVE = 1,
    EV_LIMITER_LOG_RCPT_FAILURE = 2,
    EV_LIMITER_LOG_FORGET_NETWORK = 3, /* client_addr: the network */
    EV_LIMITER_LOG_CLEAR_USER = 4,
    EV_LIMITER_LOG_RELEASE = 5,        /* user, queue_id: a RESERVE given back */
} ev_limiter_log_kind_t;

typedef struct ev_limiter_log {
    ev_limiter_log_kind_t kind;
    const char *replica;
    int64_t time_ms;
    const char *user, *queue_id; /* RESERVE, RELEASE */
    uint32_t rcpt_count, max_messages, interval_s;
    const char *client_addr;     /* RCPT_FAILURE */
    Postern__Service service;
} ev_limiter_log_t;

/* Publishes rec on postern.limiter.log.reserve (RESERVE, RELEASE), .rcpt or .forget. Returns 0, or -1. */
int ev_publish_limiter_log(bus_t *bus, const ev_limiter_log_t *rec);
/* The same, asking the stream to say it stored rec: cb(arg, true) once it has, cb(arg,
 * false) when it said no, nobody answered (no stream leader, during an election) or
 * timeout_ms passed; called once, on the loop, never from inside. Returns 0, or -1 (cb is
 * not called). */
typedef void (*ev_log_ack_cb)(void *arg, bool stored);
int ev_record_limiter_log(bus_t *bus, const ev_limiter_log_t *rec, int timeout_ms,
                          ev_log_ack_cb cb, void *arg);

/* What a follower of the stream does with each kind of message it holds. */
typedef struct ev_stream_handlers {
    void *arg;
    ev_auth_cb auth;
    ev_message_cb message;
    ev_send_release_cb send_release;
    void (*limiter_log)(void *arg, const ev_limiter_log_t *rec);
} ev_stream_handlers_t;

/* Unpacks a message of the limiter's stream by its subject and calls its handler. Returns
 * 0, or -1 when the subject is not the stream's or the message does not unpack (logged). */
int ev_stream_dispatch(const ev_stream_handlers_t *h, const char *subject, const void *data,
                       size_t len);

#endif
