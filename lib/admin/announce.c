/* Tells the services about a committed change (ConfigChanged on NATS). The
 * change is already in PostgreSQL, so failing here only delays its pick-up. */
#include <nats/nats.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "bus/events.h"
#include "bus/nats_opts.h"
#include "admin/admin.h"

#define ANNOUNCE_TIMEOUT_MS 1000

natsStatus ctl_nats_connect(ctl_t *ctl, int timeout_ms, natsConnection **nc_r, char *err,
                            size_t err_len)
{
    bus_opts_t o = {
        .url = ctl->nats_url,
        .name = "mailctl",
        .user = ctl->nats_user,
        .password = ctl->nats_password,
        .tls_ca = ctl->nats_tls_ca,
    };
    natsOptions *opts = NULL;
    *nc_r = NULL;
    err[0] = '\0';
    /* A server that hangs up first makes the TLS goodbye a write to a closed socket. */
    signal(SIGPIPE, SIG_IGN);
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = bus_nats_options(opts, &o, err, err_len);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, timeout_ms);
    if (s == NATS_OK)
        s = natsOptions_SetAllowReconnect(opts, false);
    if (s == NATS_OK)
        s = natsConnection_Connect(nc_r, opts);
    if (s != NATS_OK && !err[0]) {
        const char *why = nats_GetLastError(NULL);
        snprintf(err, err_len, "%s", why && *why ? why : natsStatus_GetText(s));
    }
    natsOptions_Destroy(opts);
    return s;
}

void ctl_announce(ctl_t *ctl, const char *what)
{
    buf_t msg;
    buf_init(&msg);
    if (ev_pack_config_changed(what, &msg) < 0) {
        buf_free(&msg);
        ctl_warn("out of memory: the change was not announced; services will pick it up "
                 "within 30 seconds");
        return;
    }

    if (ctl->publish) {
        if (ctl->publish(ctl->publish_arg, BUS_SUBJECT_CONFIG_CHANGED, msg.data, msg.len) < 0)
            ctl_warn("the change is saved but could not be announced on NATS; services will "
                     "pick the change up within 30 seconds");
        buf_free(&msg);
        return;
    }
    natsConnection *nc = NULL;
    char err[512] = "";
    natsStatus s = ctl_nats_connect(ctl, ANNOUNCE_TIMEOUT_MS, &nc, err, sizeof err);
    if (s == NATS_OK)
        s = natsConnection_Publish(nc, BUS_SUBJECT_CONFIG_CHANGED, msg.data, (int)msg.len);
    /* A publish the server refuses (permissions) comes back as an error after the flush. */
    if (s == NATS_OK)
        s = natsConnection_FlushTimeout(nc, ANNOUNCE_TIMEOUT_MS);
    if (s == NATS_OK) {
        const char *last = NULL;
        s = natsConnection_GetLastError(nc, &last);
        if (s != NATS_OK)
            snprintf(err, sizeof err, "%s", last ? last : "");
    }
    if (s != NATS_OK) {
        char url[256];
        bus_url_public(ctl->nats_url, url, sizeof url);
        if (!err[0])
            snprintf(err, sizeof err, "%s", natsStatus_GetText(s));
        ctl_warn("the change is saved but could not be announced on NATS (%s: %s); "
                 "services will pick the change up within 30 seconds",
                 url, err);
    }
    natsConnection_Destroy(nc);
    /* No nats_Close(): mailctl exits soon, and with TLS to NATS while libpq's TLS
     * connection to PostgreSQL was still open, libnats's cleanup made OpenSSL's own one
     * crash at exit (OPENSSL_cleanup; libnats 3.4.1, OpenSSL 3; seen with compose). */
    buf_free(&msg);
}
