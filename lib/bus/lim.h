/* The front ends' side of the limiter: checks as NATS requests with a short timeout
 * (limiter.timeout_ms), and a local copy of the active blocks and exempt networks, kept
 * current by the limiter's broadcasts (postern.block.changed) and a full resync at start
 * and every 30 seconds (fetched page by page, lib/bus/subjects.h), so a blocked address is
 * refused at connect without a round trip.
 * Callers never see the wire format. */
#ifndef POSTERN_LIM_H
#define POSTERN_LIM_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "bus/bus.h"
#include "bus/config.h"
#include "base/metrics.h"
#include "postern.pb-c.h"

typedef struct lim lim_t;

typedef struct lim_verdict {
    bool answered;            /* false: the limiter did not answer in time */
    Postern__Verdict verdict; /* VERDICT_ALLOW when not answered */
    char reason[256];
    uint32_t retry_after_s;
    int64_t until_ms;
    uint32_t delay_ms;
} lim_verdict_t;

/* Called exactly once, on the loop thread, never from inside the call that asked. */
typedef void (*lim_cb)(void *arg, const lim_verdict_t *v);

/* metrics may be NULL; check latency and verdicts are recorded there. */
lim_t *lim_create(uv_loop_t *loop, bus_t *bus, config_t *cfg, metrics_t *metrics);
void lim_destroy(lim_t **lim);

int lim_check_auth(lim_t *lim, Postern__Service service, const char *client, const char *user,
                   lim_cb cb, void *arg);
int lim_check_send(lim_t *lim, Postern__Service service, const char *user, const char *client,
                   unsigned rcpt_count, const char *queue_id, const char *instance, lim_cb cb,
                   void *arg);
/* The slot reserved by an allowed lim_check_send() was not used. */
void lim_release(lim_t *lim, const char *user, const char *queue_id);
int lim_rcpt_failure(lim_t *lim, Postern__Service service, const char *client,
                     const char *recipient, lim_cb cb, void *arg);

/* Starts a resync of the local copy of blocks now, unless one is running (they also run at
 * start and every 30 seconds). The copy is replaced once the last page has come. */
void lim_resync(lim_t *lim);

/* True when client is blocked in the local copy (and not exempt); fills reason (may be
 * NULL) and until. Costs one hash lookup per prefix length in use among the blocks of the
 * client's family (base/blockset.h). */
bool lim_blocked(const lim_t *lim, const char *client, char *reason, size_t reason_len,
                 int64_t *until_ms_r);

#endif
