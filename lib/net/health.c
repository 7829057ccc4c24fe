#include "net/health.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

struct health {
    struct MHD_Daemon *daemon;
    uv_timer_t timer;
    metrics_t *metrics;
    health_ready_fn ready;
    void *arg;
    pthread_mutex_t lock; /* guards is_ready and why */
    bool is_ready;
    char why[128];
};

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
                               const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
}

/* HTTP thread. */
static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *data,
                              size_t *data_len, void **state)
{
    (void)version;
    (void)data;
    (void)data_len;
    (void)state;
    health_t *h = cls;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return respond(c, 405, "text/plain", "method not allowed\n", 19);
    if (strcmp(url, "/healthz") == 0)
        return respond(c, 200, "text/plain", "ok\n", 3);
    if (strcmp(url, "/readyz") == 0) {
        char body[160];
        pthread_mutex_lock(&h->lock);
        bool ok = h->is_ready;
        int n = snprintf(body, sizeof body, ok ? "ready\n" : "not ready: %s\n", h->why);
        pthread_mutex_unlock(&h->lock);
        return respond(c, ok ? 200 : 503, "text/plain", body, (size_t)n);
    }
    if (strcmp(url, "/metrics") == 0) {
        buf_t b;
        buf_init(&b);
        metrics_render(h->metrics, &b);
        enum MHD_Result rc = respond(c, 200, "text/plain; version=0.0.4", b.data, b.len);
        buf_free(&b);
        return rc;
    }
    return respond(c, 404, "text/plain", "not found\n", 10);
}

/* Loop thread. */
static void ready_timer_cb(uv_timer_t *t)
{
    health_t *h = t->data;
    char why[128] = "";
    bool ok = h->ready(h->arg, why, sizeof why);
    pthread_mutex_lock(&h->lock);
    h->is_ready = ok;
    snprintf(h->why, sizeof h->why, "%s", why);
    pthread_mutex_unlock(&h->lock);
}

health_t *health_start(uv_loop_t *loop, int port, metrics_t *metrics, health_ready_fn ready,
                       void *arg)
{
    health_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->metrics = metrics;
    h->ready = ready;
    h->arg = arg;
    snprintf(h->why, sizeof h->why, "starting");
    pthread_mutex_init(&h->lock, NULL);
    h->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_DUAL_STACK,
                                 (uint16_t)port, NULL, NULL, handle, h,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    if (!h->daemon) /* no IPv6 here: IPv4 only */
        h->daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, (uint16_t)port, NULL, NULL,
                                     handle, h, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                                     MHD_OPTION_END);
    if (!h->daemon) {
        log_error("health endpoint not started", "port=%d", port);
        pthread_mutex_destroy(&h->lock);
        free(h);
        return NULL;
    }
    uv_timer_init(loop, &h->timer);
    h->timer.data = h;
    uv_timer_start(&h->timer, ready_timer_cb, 0, 500);
    log_info("health endpoint listening", "port=%d", port);
    return h;
}

static void health_close_cb(uv_handle_t *t)
{
    health_t *h = t->data;
    pthread_mutex_destroy(&h->lock);
    free(h);
}

void health_stop(health_t **hp)
{
    health_t *h = *hp;
    if (!h)
        return;
    *hp = NULL;
    MHD_stop_daemon(h->daemon); /* joins the HTTP thread */
    uv_close((uv_handle_t *)&h->timer, health_close_cb);
}
