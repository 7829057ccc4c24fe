/* notifier: its start and stop on the service skeleton. The notifier itself (notifier.c)
 * and, where /metrics is served, the outbound queue gauges (depth.c). */
#include "notifier.h"

#include <stdlib.h>

#include "base/env.h"
#include "base/log.h"

#define QUEUE_REFRESH_DEFAULT_S 15
#define QUEUE_REFRESH_MAX_S 3600

typedef struct ntf_service {
    ntf_t *ntf;
    ntf_depth_t *depth; /* outbound queue gauges, with HEALTH_PORT */
} ntf_service_t;

int ntf_service_start(svc_t *svc)
{
    long queue_refresh_s = env_seconds("QUEUE_REFRESH", QUEUE_REFRESH_DEFAULT_S, 1,
                                       QUEUE_REFRESH_MAX_S);
    if (queue_refresh_s < 0) {
        log_error("bad QUEUE_REFRESH", "value=\"%.64s\" expected=\"whole seconds from 1 to %d\"",
                  getenv("QUEUE_REFRESH"), QUEUE_REFRESH_MAX_S);
        return -1;
    }
    ntf_service_t *ns = calloc(1, sizeof *ns);
    if (!ns)
        return -1;
    svc->data = ns;
    ns->ntf = ntf_create(svc->loop, svc->db, svc->bus, svc->cfg, svc->hostname);
    if (!ns->ntf) {
        log_error("out of memory", "%s", "");
        return -1;
    }
    /* Only where /metrics is served: nobody else would see the answers. */
    if (svc->health) {
        ns->depth = ntf_depth_create(svc->loop, svc->db, svc->metrics,
                                     (uint64_t)queue_refresh_s * 1000);
        if (!ns->depth)
            log_error("out of memory: no outbound queue gauges", "%s", "");
    }
    log_info("notifier listening", "subject=%s hostname=%s", BUS_SUBJECT_ALERT, svc->hostname);
    return 0;
}

/* No more alerts; the statement in flight finishes while the skeleton waits for the
 * database. */
void ntf_service_stop(svc_t *svc)
{
    ntf_service_t *ns = svc->data;
    if (ns) {
        ntf_stop(ns->ntf);
        ntf_depth_destroy(&ns->depth);
    }
    svc_stopped(svc);
}

/* The notifier frees itself once the statement still in flight (answered by db_destroy()
 * right after this) has called back. */
void ntf_service_destroy(svc_t *svc)
{
    ntf_service_t *ns = svc->data;
    if (!ns)
        return;
    svc->data = NULL;
    ntf_destroy(&ns->ntf);
    ntf_depth_destroy(&ns->depth);
    free(ns);
}
