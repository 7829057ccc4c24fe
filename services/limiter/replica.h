/* Limiter replicas: which one answers, and how every one of them holds the counters.
 *
 * Counters live in memory, rebuilt from the JetStream stream POSTERN_LIMITER
 * (lib/bus/subjects.h): the front ends' events land there as they publish them, and the
 * leading replica adds a record of each decision that changes a counter before it answers.
 * Every replica follows the stream from its start (it keeps the longest interval a limit
 * counts over) and applies each message in order: a replica that starts, and a standby,
 * count exactly what the leader counted, up to the messages still in flight.
 *
 * One replica leads: it holds the lease, the key "leader" of the key-value bucket
 * postern_limiter, and answers every request; the others only follow. The leader renews
 * the lease every REPLICA_RENEW_MS with a compare-and-set on its revision and stops
 * answering when no renewal has succeeded for REPLICA_SERVE_MS. A standby that sees the
 * same revision for REPLICA_LEASE_MS (by its own clock: no clock is compared with
 * another's) takes the lease with a compare-and-set on that revision, applies the stream up
 * to its last message, and then answers. A replica that stops gives the lease up, and a
 * standby takes it at its next look. Front ends need nothing of this: they ask on the same
 * subjects, and while nobody answers they apply limiter.*_on_timeout. */
#ifndef LIMITER_REPLICA_H
#define LIMITER_REPLICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bus/bus.h"

#define REPLICA_RENEW_MS 250  /* the leader renews this often */
#define REPLICA_SERVE_MS 700  /* and stops answering this long after its last renewal began */
#define REPLICA_LEASE_MS 1000 /* a revision unchanged this long is a dead leader's */
#define REPLICA_WATCH_MS 150  /* a standby looks at the lease this often */

typedef struct replica replica_t;

typedef struct replica_hooks {
    void *arg;
    /* A message of the stream, in the stream's order, with the time the stream stored it.
     * replay: this replica does not answer (yet): count, decide nothing that leaves it. */
    void (*apply)(void *arg, const char *subject, const void *data, size_t len,
                  int64_t time_ms, bool replay);
    /* This replica starts (true) or stops (false) answering. */
    void (*leading)(void *arg, bool leading);
} replica_hooks_t;

typedef struct replica_status {
    const char *state;       /* "connecting", "standby", "catching up", "leading", "stopped" */
    const char *id;          /* this replica: host:pid:random */
    uint64_t applied_seq;    /* the last stream message applied */
    uint64_t target_seq;     /* catching up: the stream's last message when it began */
    unsigned long takeovers; /* times this replica took the lease */
    int64_t led_since_ms;    /* 0 unless leading */
    const char *error;       /* the last JetStream error, "" when none */
} replica_status_t;

/* stream_replicas: of the stream and bucket when this replica creates them (NATS_JS_REPLICAS).
 * Starts connecting at once, in the background. */
replica_t *replica_create(uv_loop_t *loop, bus_t *bus, int stream_replicas,
                          const replica_hooks_t *hooks);
/* The longest interval a limit counts over: the stream keeps messages this long. */
void replica_set_history(replica_t *r, int64_t max_age_ms);
bool replica_leading(const replica_t *r);
const char *replica_id(const replica_t *r);
/* Ready: following the stream and caught up with it once. */
bool replica_ready(const replica_t *r, char *why, size_t why_len);
void replica_status(const replica_t *r, replica_status_t *st);
/* Stops answering and gives the lease up; done(arg) once that is over (or failed). */
void replica_stop(replica_t *r, void (*done)(void *arg), void *arg);
/* True while a JetStream call is in flight (the service waits for it at exit). */
bool replica_busy(const replica_t *r);
void replica_destroy(replica_t **r);

#endif
