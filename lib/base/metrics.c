#include "base/metrics.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_kind { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

static const double buckets[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                  0.05,   0.1,   0.25,   0.5,   1,    5 };
#define NBUCKETS (sizeof buckets / sizeof buckets[0])

typedef struct series {
    char *name;
    char *help;
    char *labels;
    enum metric_kind kind;
    double value;               /* counter, gauge; histogram: sum */
    unsigned long count;        /* histogram */
    unsigned long bucket[NBUCKETS];
    struct series *next;
} series_t;

struct metrics {
    pthread_mutex_t lock;
    series_t *head, *tail; /* in creation order, so a name's series stay together */
};

metrics_t *metrics_create(void)
{
    metrics_t *m = calloc(1, sizeof *m);
    if (m)
        pthread_mutex_init(&m->lock, NULL);
    return m;
}

void metrics_destroy(metrics_t **mp)
{
    metrics_t *m = *mp;
    if (!m)
        return;
    *mp = NULL;
    for (series_t *s = m->head, *next; s; s = next) {
        next = s->next;
        free(s->name);
        free(s->help);
        free(s->labels);
        free(s);
    }
    pthread_mutex_destroy(&m->lock);
    free(m);
}

/* Called with the lock held. */
static series_t *series_get(metrics_t *m, const char *name, const char *help, const char *labels,
                            enum metric_kind kind)
{
    if (!labels)
        labels = "";
    series_t *last_of_name = NULL;
    for (series_t *s = m->head; s; s = s->next) {
        if (strcmp(s->name, name) != 0)
            continue;
        if (strcmp(s->labels, labels) == 0)
            return s;
        last_of_name = s;
    }
    series_t *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name)) || !(s->help = strdup(help ? help : name)) ||
        !(s->labels = strdup(labels))) {
        if (s) {
            free(s->name);
            free(s->help);
        }
        free(s);
        return NULL;
    }
    s->kind = kind;
    if (last_of_name) { /* keep series of one name together */
        s->next = last_of_name->next;
        last_of_name->next = s;
        if (m->tail == last_of_name)
            m->tail = s;
    } else {
        if (m->tail)
            m->tail->next = s;
        else
            m->head = s;
        m->tail = s;
    }
    return s;
}

void metrics_add(metrics_t *m, const char *name, const char *help, const char *labels,
                 double value)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_get(m, name, help, labels, METRIC_COUNTER);
    if (s)
        s->value += value;
    pthread_mutex_unlock(&m->lock);
}

void metrics_set(metrics_t *m, const char *name, const char *help, const char *labels,
                 double value)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_get(m, name, help, labels, METRIC_GAUGE);
    if (s)
        s->value = value;
    pthread_mutex_unlock(&m->lock);
}

void metrics_observe(metrics_t *m, const char *name, const char *help, const char *labels,
                     double seconds)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    series_t *s = series_get(m, name, help, labels, METRIC_HISTOGRAM);
    if (s) {
        s->value += seconds;
        s->count++;
        for (size_t i = 0; i < NBUCKETS; i++)
            if (seconds <= buckets[i])
                s->bucket[i]++;
    }
    pthread_mutex_unlock(&m->lock);
}

static void render_labels(buf_t *out, const char *labels, const char *extra)
{
    bool has = labels && *labels;
    if (!has && !extra)
        return;
    buf_printf(out, "{%s%s%s}", has ? labels : "", has && extra ? "," : "", extra ? extra : "");
}

void metrics_render(metrics_t *m, buf_t *out)
{
    static const char *const types[] = { "counter", "gauge", "histogram" };
    pthread_mutex_lock(&m->lock);
    const char *prev = NULL;
    for (series_t *s = m->head; s; s = s->next) {
        if (!prev || strcmp(prev, s->name) != 0) {
            buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", s->name, s->help, s->name,
                       types[s->kind]);
            prev = s->name;
        }
        if (s->kind != METRIC_HISTOGRAM) {
            buf_puts(out, s->name);
            render_labels(out, s->labels, NULL);
            buf_printf(out, " %.17g\n", s->value);
            continue;
        }
        char le[32];
        for (size_t i = 0; i < NBUCKETS; i++) {
            snprintf(le, sizeof le, "le=\"%g\"", buckets[i]);
            buf_printf(out, "%s_bucket", s->name);
            render_labels(out, s->labels, le);
            buf_printf(out, " %lu\n", s->bucket[i]);
        }
        buf_printf(out, "%s_bucket", s->name);
        render_labels(out, s->labels, "le=\"+Inf\"");
        buf_printf(out, " %lu\n%s_sum", s->count, s->name);
        render_labels(out, s->labels, NULL);
        buf_printf(out, " %.17g\n%s_count", s->value, s->name);
        render_labels(out, s->labels, NULL);
        buf_printf(out, " %lu\n", s->count);
    }
    pthread_mutex_unlock(&m->lock);
}
