/* notifier: turns alert requests from the limiter (postern.alert, Alert) into mail to the
 * administrators' alert addresses (and, when asked, the account's owner), at most once
 * per cause and subject per interval, delivered and recorded in one SQL statement. An
 * alert that goes to the outbound queue is announced (postern.queue.added) for relayd.
 *
 *   alert.c     checking and cleaning an Alert, composing the RFC 5322 message (no I/O)
 *   gate.c      the in-memory side of "once per interval" (an injected clock; PostgreSQL,
 *               table alerts, is the authority and survives restarts)
 *   notifier.c  the queue: bounded, retried with backoff while PostgreSQL is down
 *   depth.c     the outbound queue's depth and age as Prometheus gauges
 *   service.c   the service's start and stop on the skeleton (lib/svc/service.h)
 *   main.c      the skeleton's settings
 *
 * System mail never counts for HAMR: the notifier never asks the limiter and never
 * publishes a MessageEvent. */
#ifndef POSTERN_NOTIFIER_H
#define POSTERN_NOTIFIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <uv.h>

#include "base/buf.h"
#include "bus/bus.h"
#include "bus/config.h"
#include "bus/events.h"
#include "store/db.h"
#include "base/metrics.h"
#include "postern.pb-c.h"
#include "svc/service.h"

#define NTF_ADDRESS_MAX 254     /* RFC 5321 path limit, brackets excluded */
#define NTF_CLIENT_MAX 50       /* "ffff:...:ffff/128" and room to spare */
#define NTF_CLIENTS_MAX 16      /* client addresses shown; the rest are counted */
#define NTF_LIMIT_MAX 240
#define NTF_ACTION_MAX 32
#define NTF_DETAIL_MAX 2000
#define NTF_QUEUE_MAX 1000      /* alerts waiting for PostgreSQL */
#define NTF_GATE_MAX 10000      /* (cause, subject) pairs remembered in memory */
#define NTF_HOSTNAME_MAX 255

/* ---- alert.c ----------------------------------------------------------------------- */

typedef enum ntf_cause { NTF_CAUSE_HAMR, NTF_CAUSE_HARVEST } ntf_cause_t;

/* An Alert after checking and cleaning: every string is one line of printable UTF-8
 * (addresses and the subject are printable ASCII), so none can end a header line. */
typedef struct ntf_alert {
    ntf_cause_t cause;
    char user[NTF_ADDRESS_MAX + 1];       /* lowercased; may be "" for harvest */
    char subject[NTF_ADDRESS_MAX + 1];    /* what "once per interval" counts per: the user
                                             (hamr), else the first client address */
    char clients[NTF_CLIENTS_MAX][NTF_CLIENT_MAX + 1];
    size_t nclients;
    size_t clients_more;                  /* valid addresses beyond NTF_CLIENTS_MAX */
    char limit[NTF_LIMIT_MAX + 1];
    char action[NTF_ACTION_MAX + 1];
    int64_t time_ms;                      /* when the limit was hit (Unix ms) */
    char detail[NTF_DETAIL_MAX + 1];
    bool notify_owner;
    uint32_t interval_s;                  /* the interval the limit counts over; 0: unknown */
} ntf_alert_t;

/* "hamr" or "harvest": the value of alerts.cause. */
const char *ntf_cause_name(ntf_cause_t cause);

/* Checks and cleans in into a; now_ms stands in for a missing or absurd time. Returns 0,
 * or -1 with the reason in why (the alert is dropped). */
int ntf_alert_from_ev(const ev_alert_t *in, int64_t now_ms, ntf_alert_t *a, char *why,
                      size_t why_len);
/* The same for an unpacked Alert. */
int ntf_alert_from_pb(const Postern__Alert *pb, int64_t now_ms, ntf_alert_t *a, char *why,
                      size_t why_len);

/* Copies src into dst (dst_len bytes, always terminated) as one line: control characters
 * (C0, DEL, C1, U+2028/2029) become spaces, runs of spaces one space, ends trimmed;
 * invalid UTF-8 and bidirectional overrides become '?'; with ascii_only every non-ASCII
 * character becomes '?'. A multi-byte character is never cut. */
void ntf_clean(char *dst, size_t dst_len, const char *src, bool ascii_only);

/* True for an address that is safe in a header and a text[] literal: printable ASCII
 * without space, quotes, backslash, brackets, commas, semicolons or colons, one '@' with
 * text on both sides, at most NTF_ADDRESS_MAX characters. */
bool ntf_address_ok(const char *address);

/* A fresh queue id (letters and digits) of len - 1 characters. */
void ntf_queue_id(char *out, size_t len);

typedef struct ntf_mail {
    const char *from;          /* the From: address (checked with ntf_address_ok) */
    const char *const *to;     /* the recipients shown in To: */
    size_t nto;
    bool owner_told;           /* the account's owner is among them */
    const char *hostname;      /* for Received: and Message-ID: */
    const char *queue_id;
    time_t now;                /* Date: */
    long interval_s;           /* said in the text: once per this many seconds */
} ntf_mail_t;

/* The message (headers and body, CRLF line ends, no Return-Path) appended to out.
 * Returns 0, or -1 when memory runs out. */
int ntf_compose(const ntf_alert_t *a, const ntf_mail_t *m, buf_t *out);

/* The Subject: text, e.g. "[Postern] HAMR: alice@example.test throttled". */
void ntf_subject_line(const ntf_alert_t *a, char *out, size_t out_len);

/* One line for the alerts table: action, limit, clients and detail. */
void ntf_summary(const ntf_alert_t *a, char *out, size_t out_len);

/* ---- gate.c ------------------------------------------------------------------------ */

typedef struct ntf_gate ntf_gate_t;

/* Remembers when an alert last went out per (cause, subject), for at most max entries. */
ntf_gate_t *ntf_gate_create(size_t max);
void ntf_gate_destroy(ntf_gate_t **gate);
/* False when an alert for (cause, subject) is known to have gone out less than
 * interval_ms before now_ms (the new one is suppressed). Entries found expired are
 * forgotten. */
bool ntf_gate_open(ntf_gate_t *gate, const char *cause, const char *subject, int64_t now_ms,
                   int64_t interval_ms);
/* An alert for (cause, subject) went out at sent_ms. When the table is full, expired
 * entries (relative to now_ms and interval_ms) go first, then the oldest. */
void ntf_gate_note(ntf_gate_t *gate, const char *cause, const char *subject, int64_t sent_ms,
                   int64_t now_ms, int64_t interval_ms);
size_t ntf_gate_size(const ntf_gate_t *gate);

/* ---- notifier.c -------------------------------------------------------------------- */

typedef struct ntf ntf_t;

typedef struct ntf_stats {
    unsigned long received, invalid, suppressed, merged, queue_full, sent, failed, retries;
} ntf_stats_t;

/* Subscribes to postern.alert on bus (the subscription lives as long as the bus: destroy
 * the notifier in the same loop callback as the bus). hostname names this host in
 * Received: and Message-ID:. */
ntf_t *ntf_create(uv_loop_t *loop, db_t *db, bus_t *bus, config_t *cfg, const char *hostname);
/* Stops taking alerts and starting statements; the one in flight finishes (and is
 * announced) as usual. Logs how many queued alerts will not be sent. */
void ntf_stop(ntf_t *ntf);
/* Stops (if not yet), closes the retry timer; frees itself once the timer has closed and
 * no statement is in flight (its callback must still come: call before db_destroy). */
void ntf_destroy(ntf_t **ntf);
/* Hands an alert to the notifier as if it came from the bus. */
void ntf_receive(ntf_t *ntf, const ev_alert_t *alert);
size_t ntf_queued(const ntf_t *ntf);
ntf_stats_t ntf_stats(const ntf_t *ntf);

/* ---- service.c --------------------------------------------------------------------- */

/* The svc_def_t callbacks. start reads QUEUE_REFRESH (seconds between outbound queue gauge
 * updates, 1 to 3600, default 15; the gauges only where HEALTH_PORT serves /metrics). */
int ntf_service_start(svc_t *svc);
void ntf_service_stop(svc_t *svc);
void ntf_service_destroy(svc_t *svc);

/* ---- depth.c ----------------------------------------------------------------------- */

/* Until relayd exists, relayed mail and alerts for outside addresses wait in the table
 * outbound_queue. The notifier, a single background service with the database at hand,
 * reports how much waits there:
 *   postern_outbound_queue_messages        rows in outbound_queue
 *   postern_outbound_queue_oldest_seconds  age of the oldest row (0 when empty)
 * One query at start, then one every interval_ms (none while the last is in flight). The
 * gauges appear after the first answer; while the database cannot answer they keep their
 * last value, and the failure is logged once until an answer comes again. */
typedef struct ntf_depth ntf_depth_t;

ntf_depth_t *ntf_depth_create(uv_loop_t *loop, db_t *db, metrics_t *metrics,
                              uint64_t interval_ms);
/* Stops the timer; frees itself once the timer has closed and no query is in flight (call
 * before db_destroy, which answers a query in flight). *depth becomes NULL. */
void ntf_depth_destroy(ntf_depth_t **depth);

#endif
