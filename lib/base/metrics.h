/* Prometheus metrics: counters, gauges and histograms named once, updated from the loop
 * thread, rendered in the text exposition format from the HTTP thread (lib/net/health.c).
 * A series is a metric name plus a label set written out, e.g.
 *   metrics_add(m, "postern_auth_total", "result=\"ok\"", 1); */
#ifndef POSTERN_METRICS_H
#define POSTERN_METRICS_H

#include "base/buf.h"

typedef struct metrics metrics_t;

metrics_t *metrics_create(void);
void metrics_destroy(metrics_t **m);

/* help is used the first time a name is seen. labels may be NULL or "". */
void metrics_add(metrics_t *m, const char *name, const char *help, const char *labels,
                 double value);
void metrics_set(metrics_t *m, const char *name, const char *help, const char *labels,
                 double value);
/* Histogram of seconds with fixed buckets from 0.5 ms to 5 s. */
void metrics_observe(metrics_t *m, const char *name, const char *help, const char *labels,
                     double seconds);
/* Appends every series in the Prometheus text format. Safe from any thread. */
void metrics_render(metrics_t *m, buf_t *out);

#endif
