/* notifier: the service around notifier.c. Environment: DATABASE_URL (required),
 * NATS_URL (default nats://127.0.0.1:4222), SMTP_HOSTNAME (this host's name in Received:
 * and Message-ID:; default the system's host name), DB_POOL (default 2), CONFIG_REFRESH
 * (seconds, default 30), HEALTH_PORT (HTTP /healthz, /readyz, /metrics; off when unset),
 * QUEUE_REFRESH (seconds between outbound queue gauge updates on /metrics, 1 to 3600,
 * default 15). SIGTERM or SIGINT stop it cleanly. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nats/nats.h>

#include "net/health.h"
#include "base/env.h"
#include "base/log.h"
#include "notifier.h"

#define QUEUE_REFRESH_DEFAULT_S 15
#define QUEUE_REFRESH_MAX_S 3600

typedef struct service {
    uv_loop_t *loop;
    db_t *db;
    bus_t *bus;
    config_t *cfg;
    ntf_t *ntf;
    ntf_depth_t *depth; /* outbound queue gauges, with HEALTH_PORT */
    uv_signal_t sig_term, sig_int;
    metrics_t *metrics;
    health_t *health; /* HEALTH_PORT */
} service_t;

static bool service_ready(void *arg, char *why, size_t why_len)
{
    service_t *svc = arg;
    const char *missing = !config_loaded(svc->cfg)   ? "configuration"
                          : !db_available(svc->db)   ? "database"
                          : !bus_connected(svc->bus) ? "bus"
                                                     : NULL;
    if (missing)
        snprintf(why, why_len, "%s", missing);
    return !missing;
}

/* A host name fit for Received: and Message-ID: letters, digits, '-' and dots. */
static bool hostname_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && n <= NTF_HOSTNAME_MAX && name[0] != '.' && name[0] != '-' &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == n;
}

static void service_stop(service_t *svc)
{
    log_info("stopping", "%s", "");
    health_stop(&svc->health);
    uv_signal_stop(&svc->sig_term);
    uv_signal_stop(&svc->sig_int);
    uv_close((uv_handle_t *)&svc->sig_term, NULL);
    uv_close((uv_handle_t *)&svc->sig_int, NULL);
    /* No more alerts, then the notifier (whose statement in flight is failed by
     * db_destroy), then the database, and the configuration last: db_destroy calls the
     * callbacks of queries in flight, the configuration's among them. */
    bus_destroy(&svc->bus);
    ntf_destroy(&svc->ntf);
    ntf_depth_destroy(&svc->depth);
    db_destroy(&svc->db);
    config_destroy(&svc->cfg);
}

static void stop_signal_cb(uv_signal_t *s, int signum)
{
    (void)signum;
    service_stop(s->data);
}

int main(void)
{
    log_init("notifier");
    signal(SIGPIPE, SIG_IGN);
    service_t svc = { 0 };
    svc.loop = uv_default_loop();

    const char *dburl = getenv("DATABASE_URL");
    if (!dburl || !*dburl) {
        log_error("DATABASE_URL is not set", "%s", "");
        return 2;
    }
    char hostname[NTF_HOSTNAME_MAX + 1];
    const char *name = env_or("SMTP_HOSTNAME", NULL);
    if (name && !hostname_ok(name)) {
        log_error("SMTP_HOSTNAME is not a host name", "%s", "");
        return 2;
    }
    if (name)
        snprintf(hostname, sizeof hostname, "%s", name);
    else if (gethostname(hostname, sizeof hostname - 1) != 0 || !hostname_ok(hostname))
        snprintf(hostname, sizeof hostname, "localhost");
    hostname[sizeof hostname - 1] = '\0';
    long queue_refresh_s = env_seconds("QUEUE_REFRESH", QUEUE_REFRESH_DEFAULT_S, 1,
                                       QUEUE_REFRESH_MAX_S);
    if (queue_refresh_s < 0) {
        log_error("bad QUEUE_REFRESH", "value=\"%.64s\" expected=\"whole seconds from 1 to %d\"",
                  getenv("QUEUE_REFRESH"), QUEUE_REFRESH_MAX_S);
        return 2;
    }

    svc.db = db_create(svc.loop, dburl, atoi(env_or("DB_POOL", "2")));
    svc.bus = bus_create(svc.loop, env_or("NATS_URL", "nats://127.0.0.1:4222"), "notifier");
    if (!svc.db || !svc.bus) {
        log_error("cannot start database or bus client", "%s", "");
        bus_destroy(&svc.bus);
        db_destroy(&svc.db);
        uv_run(svc.loop, UV_RUN_DEFAULT);
        uv_loop_close(svc.loop);
        nats_Close();
        return 2;
    }
    svc.cfg = config_create(svc.loop, svc.db, svc.bus, atoi(env_or("CONFIG_REFRESH", "30")));
    svc.ntf = ntf_create(svc.loop, svc.db, svc.bus, svc.cfg, hostname);
    if (!svc.cfg || !svc.ntf) {
        log_error("out of memory", "%s", "");
        return 2;
    }

    uv_signal_init(svc.loop, &svc.sig_term);
    uv_signal_init(svc.loop, &svc.sig_int);
    svc.sig_term.data = svc.sig_int.data = &svc;
    uv_signal_start(&svc.sig_term, stop_signal_cb, SIGTERM);
    uv_signal_start(&svc.sig_int, stop_signal_cb, SIGINT);

    int health_port = atoi(env_or("HEALTH_PORT", "0"));
    if (health_port > 0) {
        svc.metrics = metrics_create();
        svc.health = health_start(svc.loop, health_port, svc.metrics, service_ready, &svc);
        /* Only where /metrics is served: nobody else would see the answers. */
        if (svc.health)
            svc.depth = ntf_depth_create(svc.loop, svc.db, svc.metrics,
                                         (uint64_t)queue_refresh_s * 1000);
        if (svc.health && !svc.depth)
            log_error("out of memory: no outbound queue gauges", "%s", "");
    }
    log_info("started", "hostname=%s subject=%s", hostname, NTF_SUBJECT);
    uv_run(svc.loop, UV_RUN_DEFAULT);
    metrics_destroy(&svc.metrics);
    int rc = uv_loop_close(svc.loop);
    if (rc != 0)
        log_warn("handles left open at exit", "error=\"%s\"", uv_strerror(rc));
    nats_Close();
    log_info("stopped", "%s", "");
    return 0;
}
