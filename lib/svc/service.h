/* The service skeleton: the life of a Postern process around its own work. svc_main() reads
 * the environment, makes the loop, the PostgreSQL pool, the bus, the configuration cache
 * (when asked for), the metrics and the health endpoint, calls the service's start, serves
 * until SIGTERM or SIGINT, and stops in order:
 *
 *   signal -> def->stop (stop taking work, finish or hand back what is in hand)
 *          -> svc_stopped() (from stop at once, or later from the loop)
 *          -> database work left finishes (at most SVC_FLUSH_MAX_MS; /readyz says
 *             "stopping" from the signal on)
 *          -> def->destroy -> health endpoint, bus, database, configuration
 *          -> the loop runs until every handle has closed -> exit status 0.
 *
 * The bus goes before the database, the configuration after it: db_destroy() answers the
 * queries still in flight (with NULL) at once, the configuration's among them, and a query
 * sent from a bus callback must land before it. destroy runs before all three, so what a
 * query or a bus request still in flight points to must outlive destroy: free it from the
 * query's last callback or in a uv_close() callback (those run after the whole sequence).
 *
 * A second SIGTERM or SIGINT ends the process at once. A start that fails (a bad setting,
 * the health port not served, start returning -1) exits with status 2 after the same
 * teardown, without waiting for a signal. */
#ifndef POSTERN_SERVICE_H
#define POSTERN_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "base/metrics.h"
#include "bus/bus.h"
#include "bus/config.h"
#include "net/health.h"
#include "store/db.h"

#define SVC_FLUSH_STEP_MS 50   /* at stop, how often to look whether queries are done */
#define SVC_FLUSH_MAX_MS 3000  /* and how long to let them finish at most */
#define SVC_MEMORY_BUDGET_DEFAULT ((size_t)1 << 30) /* 1 GiB */
#define SVC_MESSAGE_CACHE_DEFAULT ((size_t)32 << 20) /* 32 MiB */
#define SVC_MEMORY_READ_MS 100 /* the resident size is read again when older than this */

typedef struct svc svc_t;
typedef struct svc_def svc_def_t;

struct svc_def {
    const char *name;        /* logs (log_init), the bus client name */
    int db_pool;             /* default for DB_POOL */
    bool want_config;        /* keep the configuration cache (bus/config.h) in svc->cfg */
    /* The variable naming this host (validated as a host name); NULL: SMTP_HOSTNAME. */
    const char *hostname_env;
    /* The service's own constant settings, for its callbacks (svc->def->conf): fe_main
     * passes its protocol. Optional. */
    const void *conf;
    /* Makes the service's own state once the database, bus, configuration and metrics exist
     * (store it in svc->data). Returns 0, or -1 to fail the start (exit status 2); destroy
     * is called all the same, with whatever start left in svc->data. */
    int (*start)(svc_t *svc);
    /* Optional: more conditions for /readyz beyond configuration, database and bus. Runs on
     * the loop thread; why may be filled with what is missing. */
    bool (*ready)(svc_t *svc, char *why, size_t why_len);
    /* SIGTERM/SIGINT: stop taking new work, finish or hand back the work in hand, then call
     * svc_stopped() (at once or later from the loop). NULL: stopped at once. */
    void (*stop)(svc_t *svc);
    /* Optional: work of the service's own that the bounded wait after svc_stopped() waits
     * for too, beside the database's (front ends: sessions not yet released). */
    bool (*busy)(svc_t *svc);
    /* After svc_stopped() and once database work has finished (bounded wait): free the
     * service's state, before the bus, configuration and database go. Close every handle
     * the service made. Optional. */
    void (*destroy)(svc_t *svc);
    void (*hup)(svc_t *svc); /* optional SIGHUP; without it SIGHUP is logged and ignored */
    /* The service may run as WORKERS processes (svc/workers.h); only worker 0 serves
     * HEALTH_PORT. With more than one, prefork (optional) runs before the fork (what the
     * workers share: the front ends' listening sockets; -1 fails the start with status 2),
     * and forked in the parent once they are forked (it keeps none of that). */
    bool workers;
    int (*prefork)(const svc_def_t *def);
    void (*forked)(const svc_def_t *def);
};

struct svc {
    uv_loop_t *loop;
    const svc_def_t *def;
    db_t *db;
    bus_t *bus;
    config_t *cfg;           /* NULL unless want_config */
    metrics_t *metrics;      /* always */
    health_t *health;        /* HEALTH_PORT; NULL when unset */
    char hostname[256];      /* hostname_env or the system's host name */
    char instance[300];      /* node:pid: the machine (pod) name, then the process id */
    int config_refresh_s;    /* CONFIG_REFRESH: how often cached state is reloaded anyway */
    size_t memory_budget;    /* MEMORY_BUDGET in bytes (0: none); svc_memory_over_budget() */
    size_t message_cache;    /* MESSAGE_CACHE in bytes: messages pop3d and imapd keep (0: none) */
    int workers;             /* WORKERS: processes serving as this one (1 when alone) */
    int worker;              /* this one's index among them, from 0 */
    void *data;              /* the service's state */
    bool stopping;           /* a stop signal came (or the start failed) */
};

/* Runs a back-end service: reads DATABASE_URL (required), NATS_URL (default
 * nats://127.0.0.1:4222), DB_POOL (default def->db_pool), CONFIG_REFRESH (seconds, default
 * 30), HEALTH_PORT (/healthz, /readyz, /metrics; off when unset), MEMORY_BUDGET (bytes, or
 * with a K, M or G suffix for KiB, MiB, GiB; default SVC_MEMORY_BUDGET_DEFAULT; 0: none),
 * MESSAGE_CACHE (the same form; default SVC_MESSAGE_CACHE_DEFAULT; 0: none), WORKERS (when
 * def->workers: a number of processes or "auto", svc/workers.h; default 1)
 * and the host name variable; serves until SIGTERM/SIGINT; returns the exit status. */
int svc_main(const svc_def_t *def);
/* The service has stopped taking and doing work (def->stop is done). Harmless twice. */
void svc_stopped(svc_t *svc);

/* True when the process's resident memory (RSS, /proc/self/statm) is over MEMORY_BUDGET:
 * the service takes no new work (a front end refuses new sessions with a temporary error)
 * until it is back under. RSS, not an account of the service's own buffers, because it is
 * what the kernel and a container limit count: TLS state, libpq's buffers and what malloc
 * keeps included. Read at most every SVC_MEMORY_READ_MS (a burst of calls costs one read);
 * going over and coming back are logged once each. Always false without a budget. */
bool svc_memory_over_budget(svc_t *svc);

/* True for a name fit for Received:, Message-ID: and a greeting: letters, digits, '-' and
 * dots, 1 to 255 characters, not starting with '.' or '-'. */
bool svc_hostname_ok(const char *name);

#endif
