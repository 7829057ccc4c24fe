/* relayd: delivers relayed mail to other hosts (relayd.h). Besides the service skeleton's
 * environment (DATABASE_URL, NATS_URL, DB_POOL, CONFIG_REFRESH, HEALTH_PORT, SMTP_HOSTNAME):
 *   DNS_SERVERS      name servers for MX lookups, "127.0.0.1:5353,[::1]:53" (default: the
 *                    system's, /etc/resolv.conf)
 *   RELAY_SMTP_PORT  the port MX hosts are contacted on (default 25)
 *   TLS_CA_FILE      certificates trusted besides the system store, for `verify`
 *   DRAIN_TIMEOUT    seconds deliveries in hand may finish after SIGTERM (default 10)
 * Settings (mailctl config set): relay.max_lifetime, relay.delay_warning, relay.retry_min,
 * relay.retry_max, relay.lease, relay.concurrency, relay.destination_concurrency,
 * relay.allow_private; transports and STARTTLS policies: mailctl transport, mailctl relay
 * tls-policy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/env.h"
#include "base/log.h"
#include "bus/events.h"
#include "relayd.h"

#define DRAIN_DEFAULT_S 10
#define DRAIN_MAX_S 3600

static void config_changed_cb(void *arg, const char *what)
{
    relayd_t *rd = arg;
    route_reload(rd);
    /* mailctl queue retry/delete: the messages are due now. */
    if (what && strcmp(what, "queue") == 0)
        queue_pump(rd);
}

/* The relay settings are read again at every snapshot, so a change is logged (and used)
 * when it is made, not at the next look at the queue (up to 30 s later when it is empty). */
static void config_loaded_cb(void *arg)
{
    queue_read_settings(arg);
}

static int relayd_start(svc_t *svc)
{
    relayd_t *rd = calloc(1, sizeof *rd);
    if (!rd)
        return -1;
    svc->data = rd;
    rd->svc = svc;
    rd->mx_port = (int)env_seconds("RELAY_SMTP_PORT", 25, 1, 65535);
    rd->drain_timeout_s = env_seconds("DRAIN_TIMEOUT", DRAIN_DEFAULT_S, 0, DRAIN_MAX_S);
    if (rd->mx_port < 0 || rd->drain_timeout_s < 0) {
        log_error("bad RELAY_SMTP_PORT or DRAIN_TIMEOUT", "expected=\"a port; whole seconds\"%s",
                  "");
        return -1;
    }
    char err[512];
    const char *servers = env_or("DNS_SERVERS", NULL);
    rd->dns = dns_create(svc->loop, servers, err, sizeof err);
    if (!rd->dns) {
        log_error("cannot start the DNS resolver", "servers=\"%s\" error=\"%s\"",
                  servers ? servers : "system", err);
        return -1;
    }
    const char *ca = env_or("TLS_CA_FILE", NULL);
    rd->tls = tls_client_create(ca, err, sizeof err);
    if (!rd->tls) {
        log_error("cannot make the client TLS context", "ca_file=\"%s\" error=\"%s\"",
                  ca ? ca : "", err);
        return -1;
    }
    if (route_start(rd) < 0 || queue_start(rd) < 0 ||
        ev_subscribe_config_changed(svc->bus, config_changed_cb, rd) < 0)
        return -1;
    config_on_load(svc->cfg, config_loaded_cb, rd);
    log_info("relaying", "mx_port=%d dns=%s drain_timeout_s=%ld", rd->mx_port,
             servers ? servers : "system", rd->drain_timeout_s);
    return 0;
}

static bool relayd_ready(svc_t *svc, char *why, size_t why_len)
{
    relayd_t *rd = svc->data;
    if (rd && !route_loaded(rd)) {
        snprintf(why, why_len, "transports not loaded");
        return false;
    }
    return true;
}

static void relayd_stop(svc_t *svc)
{
    queue_stop(svc->data);
}

/* After the stop: sessions still saying QUIT are let finish (the skeleton waits a bounded
 * time). */
static bool relayd_busy(svc_t *svc)
{
    relayd_t *rd = svc->data;
    return rd && rd->live_sessions > 0;
}

static void relayd_destroy(svc_t *svc)
{
    relayd_t *rd = svc->data;
    if (!rd)
        return;
    rd->destroyed = true;
    config_on_load(svc->cfg, NULL, NULL);
    deliver_destroy(rd);
    dns_destroy(&rd->dns); /* cancels lookups: destinations left by deliver_destroy go */
    queue_destroy(rd);
    route_destroy(rd);
    tls_client_destroy(&rd->tls);
    svc->data = NULL;
    /* A query still out calls back into rd when the database closes: rd stays (marked
     * destroyed) for the process's last moments then. */
    if (!db_busy(svc->db))
        free(rd);
}

static const svc_def_t relayd_def = {
    .name = "relayd",
    .db_pool = 4,
    .want_config = true,
    .start = relayd_start,
    .ready = relayd_ready,
    .stop = relayd_stop,
    .busy = relayd_busy,
    .destroy = relayd_destroy,
};

int main(void)
{
    return svc_main(&relayd_def);
}
