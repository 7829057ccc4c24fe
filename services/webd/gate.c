/* webd: the limiter's word before a web login, as the front ends get it (lib/bus/lim.h):
 * the local copy of blocks (kept current by the limiter's broadcasts) and an AuthCheck
 * request that may also ask for a delay. Both live on the loop thread; a request thread
 * hands its question over (uv_async_send) and waits for the answer, which lim guarantees
 * within limiter.timeout_ms. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "base/log.h"
#include "bus/config.h"
#include "bus/lim.h"
#include "webd.h"

#define GATE_WAIT_S 10 /* far beyond limiter.timeout_ms: only a stopped loop gets here */

struct gate_q {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    web_gate_t *result;
    char client[WEB_ADDR_MAX];
    char user[128];
    bool done;
    bool deny_on_timeout; /* limiter.login_on_timeout = deny */
    int refs; /* the asking thread and the loop; the last one frees it */
    struct gate_q *next;
};

struct web_gate_loop {
    uv_async_t async;
    pthread_mutex_t mu;
    struct gate_q *queue;
    lim_t *lim;
    config_t *cfg;
    bool closing;
};

static void q_release(struct gate_q *q)
{
    pthread_mutex_lock(&q->mu);
    bool last = --q->refs == 0;
    pthread_mutex_unlock(&q->mu);
    if (last) {
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->cv);
        free(q);
    }
}

static void q_answer(struct gate_q *q, const web_gate_t *g)
{
    pthread_mutex_lock(&q->mu);
    if (q->result)
        *q->result = *g;
    q->done = true;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    q_release(q);
}

static void on_verdict(void *arg, const lim_verdict_t *v)
{
    struct gate_q *q = arg;
    web_gate_t g = { .allowed = true };
    if (!v->answered) {
        g.unanswered = true;
        g.allowed = !q->deny_on_timeout;
    } else if (v->verdict == POSTERN__VERDICT__VERDICT_BLOCKED) {
        g.allowed = false;
        g.until_ms = v->until_ms;
        snprintf(g.reason, sizeof g.reason, "%s", v->reason);
    }
    g.delay_ms = v->answered ? v->delay_ms : 0;
    q_answer(q, &g);
}

static void on_async(uv_async_t *h)
{
    struct web_gate_loop *l = h->data;
    pthread_mutex_lock(&l->mu);
    struct gate_q *list = l->queue;
    l->queue = NULL;
    pthread_mutex_unlock(&l->mu);
    while (list) {
        struct gate_q *q = list;
        list = q->next;
        web_gate_t g = { .allowed = true };
        if (l->closing) {
            g.unanswered = true;
            q_answer(q, &g);
            continue;
        }
        if (lim_blocked(l->lim, q->client, g.reason, sizeof g.reason, &g.until_ms)) {
            g.allowed = false;
            q_answer(q, &g);
            continue;
        }
        const char *on_timeout = config_get(l->cfg, "limiter.login_on_timeout");
        q->deny_on_timeout = on_timeout && strcmp(on_timeout, "deny") == 0;
        if (lim_check_auth(l->lim, POSTERN__SERVICE__SERVICE_WEB, q->client, q->user, on_verdict,
                           q) < 0) {
            g.unanswered = true;
            g.allowed = !q->deny_on_timeout;
            q_answer(q, &g);
        }
    }
}

web_gate_loop_t *web_gate_create(uv_loop_t *loop, bus_t *bus, config_t *cfg,
                                 metrics_t *metrics)
{
    struct web_gate_loop *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->cfg = cfg;
    l->lim = lim_create(loop, bus, cfg, metrics);
    if (!l->lim || pthread_mutex_init(&l->mu, NULL) != 0 ||
        uv_async_init(loop, &l->async, on_async) != 0) {
        lim_destroy(&l->lim);
        free(l);
        return NULL;
    }
    l->async.data = l;
    return l;
}

static void on_closed(uv_handle_t *h)
{
    struct web_gate_loop *l = h->data;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

void web_gate_destroy(web_gate_loop_t *l)
{
    if (!l)
        return;
    l->closing = true;
    on_async(&l->async); /* whatever is still queued is answered "unanswered" */
    lim_destroy(&l->lim);
    uv_close((uv_handle_t *)&l->async, on_closed);
}

void web_gate_ask(web_t *web, const char *client, const char *user, web_gate_t *out)
{
    memset(out, 0, sizeof *out);
    out->allowed = true;
    struct web_gate_loop *l = web->gate;
    struct gate_q *q = l ? calloc(1, sizeof *q) : NULL;
    if (!q) {
        out->unanswered = true;
        return;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    q->result = out;
    q->refs = 2;
    snprintf(q->client, sizeof q->client, "%s", client);
    snprintf(q->user, sizeof q->user, "%s", user);
    pthread_mutex_lock(&l->mu);
    q->next = l->queue;
    l->queue = q;
    pthread_mutex_unlock(&l->mu);
    uv_async_send(&l->async);

    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += GATE_WAIT_S;
    pthread_mutex_lock(&q->mu);
    while (!q->done)
        if (pthread_cond_timedwait(&q->cv, &q->mu, &until) != 0)
            break;
    if (!q->done) {
        q->result = NULL; /* the loop answers into nothing later */
        out->unanswered = true;
        log_warn("no answer from the loop about a login", "client=%s", client);
    }
    pthread_mutex_unlock(&q->mu);
    q_release(q);
}
