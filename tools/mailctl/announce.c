/* mailctl: tells the services about a committed change (ConfigChanged on NATS). The
 * change is already in PostgreSQL, so failing here only delays its pick-up. */
#include <nats/nats.h>
#include <stdio.h>
#include <string.h>

#include "base/buf.h"
#include "bus/events.h"
#include "mailctl.h"

#define ANNOUNCE_TIMEOUT_MS 1000

/* url without "user:password@", for messages. */
static void url_public(const char *url, char *out, size_t out_len)
{
    const char *scheme = strstr(url, "://");
    const char *host = scheme ? scheme + 3 : url;
    const char *at = strchr(host, '@');
    const char *slash = strchr(host, '/');
    if (at && (!slash || at < slash))
        snprintf(out, out_len, "%.*s%s", (int)(host - url), url, at + 1);
    else
        snprintf(out, out_len, "%s", url);
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

    natsOptions *opts = NULL;
    natsConnection *nc = NULL;
    natsStatus s = natsOptions_Create(&opts);
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, ctl->nats_url);
    if (s == NATS_OK)
        s = natsOptions_SetTimeout(opts, ANNOUNCE_TIMEOUT_MS);
    if (s == NATS_OK)
        s = natsOptions_SetAllowReconnect(opts, false);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, "mailctl");
    if (s == NATS_OK)
        s = natsConnection_Connect(&nc, opts);
    if (s == NATS_OK)
        s = natsConnection_Publish(nc, BUS_SUBJECT_CONFIG_CHANGED, msg.data, (int)msg.len);
    if (s == NATS_OK)
        s = natsConnection_FlushTimeout(nc, ANNOUNCE_TIMEOUT_MS);
    if (s != NATS_OK) {
        char url[256];
        url_public(ctl->nats_url, url, sizeof url);
        ctl_warn("the change is saved but could not be announced on NATS (%s: %s); "
                 "services will pick the change up within 30 seconds",
                 url, natsStatus_GetText(s));
    }
    natsConnection_Destroy(nc);
    natsOptions_Destroy(opts);
    nats_Close();
    buf_free(&msg);
}
