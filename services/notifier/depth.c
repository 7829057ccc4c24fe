/* notifier: the outbound queue's depth and age as Prometheus gauges (notifier.h). */
#include "notifier.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

#define DEPTH_MESSAGES "postern_outbound_queue_messages"
#define DEPTH_MESSAGES_HELP "Messages waiting in the outbound queue"
#define DEPTH_OLDEST "postern_outbound_queue_oldest_seconds"
#define DEPTH_OLDEST_HELP "Age of the oldest message in the outbound queue (0 when empty)"

struct ntf_depth {
    db_t *db;
    metrics_t *metrics;
    uv_timer_t timer;
    bool busy;         /* a query is in flight */
    bool failing;      /* the last query failed; logged once */
    bool stopping;
    bool timer_closed;
};

/* One scan gives both: the queue is small while relayd delivers, and only the notifier
 * asks. now() - created_at: both are the server's clock. */
static const char depth_sql[] =
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)"
    " FROM outbound_queue";

static void depth_free_if_done(ntf_depth_t *d)
{
    if (d->stopping && d->timer_closed && !d->busy)
        free(d);
}

static void depth_failed(ntf_depth_t *d, PGresult *res)
{
    if (d->failing)
        return;
    d->failing = true;
    char err[256];
    snprintf(err, sizeof err, "%s", res ? PQresultErrorMessage(res) : "database unavailable");
    for (char *c = err; *c; c++)
        if (*c == '"' || *c == '\n')
            *c = ' ';
    log_warn("outbound queue depth unknown, keeping the last value", "error=\"%s\"", err);
}

static void depth_cb(void *arg, PGresult *res)
{
    ntf_depth_t *d = arg;
    d->busy = false;
    if (d->stopping) {
        depth_free_if_done(d);
        return;
    }
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        depth_failed(d, res);
        return;
    }
    double messages = strtod(PQgetvalue(res, 0, 0), NULL);
    double oldest = strtod(PQgetvalue(res, 0, 1), NULL);
    if (oldest < 0)
        oldest = 0;
    metrics_set(d->metrics, DEPTH_MESSAGES, DEPTH_MESSAGES_HELP, NULL, messages);
    metrics_set(d->metrics, DEPTH_OLDEST, DEPTH_OLDEST_HELP, NULL, oldest);
    if (d->failing) {
        d->failing = false;
        log_info("outbound queue depth known again", "messages=%.0f oldest_s=%.0f", messages,
                 oldest);
    }
}

static void depth_timer_cb(uv_timer_t *t)
{
    ntf_depth_t *d = t->data;
    if (d->busy || d->stopping)
        return;
    d->busy = true;
    if (db_query(d->db, depth_sql, 0, NULL, NULL, NULL, depth_cb, d) < 0)
        d->busy = false;
}

ntf_depth_t *ntf_depth_create(uv_loop_t *loop, db_t *db, metrics_t *metrics,
                              uint64_t interval_ms)
{
    ntf_depth_t *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->db = db;
    d->metrics = metrics;
    uv_timer_init(loop, &d->timer);
    d->timer.data = d;
    uv_timer_start(&d->timer, depth_timer_cb, 0, interval_ms); /* now, then every interval */
    return d;
}

static void depth_timer_closed_cb(uv_handle_t *h)
{
    ntf_depth_t *d = h->data;
    d->timer_closed = true;
    depth_free_if_done(d);
}

void ntf_depth_destroy(ntf_depth_t **dp)
{
    ntf_depth_t *d = dp ? *dp : NULL;
    if (!d)
        return;
    *dp = NULL;
    d->stopping = true;
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, depth_timer_closed_cb);
}
