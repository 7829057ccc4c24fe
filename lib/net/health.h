/* Health and metrics over HTTP (libmicrohttpd, on its own thread):
 *   GET /healthz  200 while the process runs
 *   GET /readyz   200 when ready() last said so, else 503 (checked every 500 ms on the
 *                 loop thread, so nothing the loop owns is touched from the HTTP thread)
 *   GET /metrics  Prometheus text (lib/base/metrics.h) */
#ifndef POSTERN_HEALTH_H
#define POSTERN_HEALTH_H

#include <stdbool.h>
#include <uv.h>

#include "base/metrics.h"

typedef struct health health_t;
/* Runs on the loop thread; why may be filled with the missing dependency. */
typedef bool (*health_ready_fn)(void *arg, char *why, size_t why_len);

/* Returns NULL (and logs) when the port cannot be served; the service runs on. */
health_t *health_start(uv_loop_t *loop, int port, metrics_t *metrics, health_ready_fn ready,
                       void *arg);
void health_stop(health_t **h);

#endif
