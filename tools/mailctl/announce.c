/* mailctl: tells the services about a committed change (ConfigChanged on NATS). The
 * change is already in PostgreSQL, so failing here only delays its pick-up. */
#include <nats/nats.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "mailctl.h"
#include "postern.pb-c.h"

#define ANNOUNCE_SUBJECT "postern.config.changed"
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

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

void ctl_announce(ctl_t *ctl, const char *what)
{
    Postern__ConfigChanged msg = POSTERN__CONFIG_CHANGED__INIT;
    msg.what = (char *)what;
    msg.time_ms = now_ms();
    size_t len = postern__config_changed__get_packed_size(&msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        ctl_warn("out of memory: the change was not announced; services will pick it up "
                 "within 30 seconds");
        return;
    }
    postern__config_changed__pack(&msg, buf);

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
        s = natsConnection_Publish(nc, ANNOUNCE_SUBJECT, buf, (int)len);
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
    free(buf);
}
