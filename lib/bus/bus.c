#include "bus/bus.h"

#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

typedef struct bus_sub {
    bus_t *bus;
    bus_msg_cb cb;
    void *arg;
    natsSubscription *sub;
    struct bus_sub *next;
} bus_sub_t;

/* A message received on a NATS thread, waiting for the loop. */
typedef struct bus_inbound {
    bus_sub_t *sub;
    natsMsg *msg;
    struct bus_inbound *next;
} bus_inbound_t;

typedef struct bus_pending {
    uv_timer_t timer;
    bus_t *bus;
    uint64_t id;
    bus_reply_cb cb;
    void *arg;
    struct bus_pending *next;
} bus_pending_t;

struct bus {
    uv_loop_t *loop;
    uv_async_t wakeup;
    natsOptions *opts;
    natsConnection *nc;
    bus_sub_t *subs;
    pthread_mutex_t lock; /* guards inbound only */
    bus_inbound_t *inbound, *inbound_tail;
    char inbox[64];       /* reply subjects are <inbox>.<id> */
    bus_sub_t *reply_sub;
    uint64_t next_id;
    bus_pending_t *pending;
};

/* NATS thread. */
static void nats_msg_cb(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    bus_sub_t *s = closure;
    bus_t *b = s->bus;
    bus_inbound_t *in = malloc(sizeof *in);
    if (!in) {
        natsMsg_Destroy(msg);
        return;
    }
    in->sub = s;
    in->msg = msg;
    in->next = NULL;
    pthread_mutex_lock(&b->lock);
    if (b->inbound_tail)
        b->inbound_tail->next = in;
    else
        b->inbound = in;
    b->inbound_tail = in;
    pthread_mutex_unlock(&b->lock);
    uv_async_send(&b->wakeup);
}

/* Loop thread. */
static void wakeup_cb(uv_async_t *a)
{
    bus_t *b = a->data;
    pthread_mutex_lock(&b->lock);
    bus_inbound_t *in = b->inbound;
    b->inbound = b->inbound_tail = NULL;
    pthread_mutex_unlock(&b->lock);
    while (in) {
        bus_inbound_t *next = in->next;
        natsMsg *m = in->msg;
        /* The server's "no responders" status (to a request nobody serves) arrives as an
         * empty message: hand it on as no data at all. */
        const char *data = NULL;
        if (!natsMsg_IsNoResponders(m))
            data = natsMsg_GetData(m) ? natsMsg_GetData(m) : "";
        in->sub->cb(in->sub->arg, natsMsg_GetSubject(m), data,
                    data ? (size_t)natsMsg_GetDataLength(m) : 0, natsMsg_GetReply(m));
        natsMsg_Destroy(m);
        free(in);
        in = next;
    }
}

static void disconnected_cb(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    log_warn("bus disconnected", "%s", "");
}

static void reconnected_cb(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    log_info("bus connected", "%s", "");
}

static void pending_close_cb(uv_handle_t *h)
{
    free(h->data);
}

static void pending_finish(bus_pending_t *p, const void *data, size_t len)
{
    bus_t *b = p->bus;
    for (bus_pending_t **pp = &b->pending; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    uv_timer_stop(&p->timer);
    p->cb(p->arg, data, len);
    uv_close((uv_handle_t *)&p->timer, pending_close_cb);
}

static void reply_cb(void *arg, const char *subject, const void *data, size_t len,
                     const char *reply)
{
    (void)reply;
    bus_t *b = arg;
    const char *dot = strrchr(subject, '.');
    if (!dot)
        return;
    uint64_t id = strtoull(dot + 1, NULL, 10);
    for (bus_pending_t *p = b->pending; p; p = p->next)
        if (p->id == id) {
            pending_finish(p, data, len); /* NULL: nobody serves the subject */
            return;
        }
}

static void request_timeout_cb(uv_timer_t *t)
{
    pending_finish(t->data, NULL, 0);
}

bus_t *bus_create(uv_loop_t *loop, const char *url, const char *name)
{
    bus_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->loop = loop;
    pthread_mutex_init(&b->lock, NULL);
    natsInbox *inbox = NULL;
    if (natsInbox_Create(&inbox) != NATS_OK)
        goto fail;
    snprintf(b->inbox, sizeof b->inbox, "%s", (const char *)inbox);
    natsInbox_Destroy(inbox);
    if (natsOptions_Create(&b->opts) != NATS_OK ||
        natsOptions_SetURL(b->opts, url) != NATS_OK ||
        natsOptions_SetName(b->opts, name) != NATS_OK ||
        natsOptions_SetMaxReconnect(b->opts, -1) != NATS_OK ||
        natsOptions_SetReconnectWait(b->opts, 500) != NATS_OK ||
        natsOptions_SetTimeout(b->opts, 2000) != NATS_OK ||
        natsOptions_SetReconnectBufSize(b->opts, 8 * 1024 * 1024) != NATS_OK ||
        /* Checks sit on the path of every login and message: send at once rather than
         * waiting for libnats's flusher (about 1 ms). */
        natsOptions_SetSendAsap(b->opts, true) != NATS_OK ||
        natsOptions_SetDisconnectedCB(b->opts, disconnected_cb, b) != NATS_OK ||
        natsOptions_SetReconnectedCB(b->opts, reconnected_cb, b) != NATS_OK ||
        natsOptions_SetRetryOnFailedConnect(b->opts, true, reconnected_cb, b) != NATS_OK)
        goto fail;
    natsStatus s = natsConnection_Connect(&b->nc, b->opts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
        log_error("bus connect failed", "error=\"%s\"", natsStatus_GetText(s));
        goto fail;
    }
    if (s == NATS_OK)
        log_info("bus connected", "%s", "");
    else
        log_warn("bus not reachable yet, retrying", "%s", "");
    uv_async_init(loop, &b->wakeup, wakeup_cb);
    b->wakeup.data = b;
    char subject[80];
    snprintf(subject, sizeof subject, "%s.*", b->inbox);
    if (bus_subscribe(b, subject, reply_cb, b) < 0) {
        bus_destroy(&b);
        return NULL;
    }
    return b;
fail:
    natsConnection_Destroy(b->nc);
    natsOptions_Destroy(b->opts);
    pthread_mutex_destroy(&b->lock);
    free(b);
    return NULL;
}

static void bus_close_cb(uv_handle_t *h)
{
    bus_t *b = h->data;
    pthread_mutex_destroy(&b->lock);
    free(b);
}

void bus_destroy(bus_t **bp)
{
    bus_t *b = *bp;
    if (!b)
        return;
    *bp = NULL;
    for (bus_sub_t *s = b->subs, *next; s; s = next) {
        next = s->next;
        natsSubscription_Unsubscribe(s->sub);
        natsSubscription_Destroy(s->sub);
    }
    natsConnection_Close(b->nc);
    natsConnection_Destroy(b->nc); /* no NATS thread calls us after this */
    natsOptions_Destroy(b->opts);
    for (bus_inbound_t *in = b->inbound, *next; in; in = next) {
        next = in->next;
        natsMsg_Destroy(in->msg);
        free(in);
    }
    while (b->pending)
        pending_finish(b->pending, NULL, 0);
    for (bus_sub_t *s = b->subs, *next; s; s = next) {
        next = s->next;
        free(s);
    }
    uv_close((uv_handle_t *)&b->wakeup, bus_close_cb);
}

bool bus_connected(const bus_t *b)
{
    return b && natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED;
}

int bus_publish(bus_t *b, const char *subject, const void *data, size_t len)
{
    if (!bus_connected(b))
        return -1;
    natsStatus s = natsConnection_Publish(b->nc, subject, data, (int)len);
    if (s != NATS_OK) {
        log_warn("bus publish failed", "subject=%s error=\"%s\"", subject, natsStatus_GetText(s));
        return -1;
    }
    return 0;
}

int bus_publish_msg(bus_t *b, const char *subject, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t stackbuf[1024];
    uint8_t *data = len <= sizeof stackbuf ? stackbuf : malloc(len);
    if (!data)
        return -1;
    protobuf_c_message_pack(msg, data);
    int rc = bus_publish(b, subject, data, len);
    if (data != stackbuf)
        free(data);
    return rc;
}

int bus_subscribe(bus_t *b, const char *subject, bus_msg_cb cb, void *arg)
{
    bus_sub_t *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->bus = b;
    s->cb = cb;
    s->arg = arg;
    natsStatus st = natsConnection_Subscribe(&s->sub, b->nc, subject, nats_msg_cb, s);
    if (st != NATS_OK) {
        log_error("bus subscribe failed", "subject=%s error=\"%s\"", subject,
                  natsStatus_GetText(st));
        free(s);
        return -1;
    }
    s->next = b->subs;
    b->subs = s;
    return 0;
}

int bus_request(bus_t *b, const char *subject, const void *data, size_t len, int timeout_ms,
                bus_reply_cb cb, void *arg)
{
    bus_pending_t *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->bus = b;
    p->id = ++b->next_id;
    p->cb = cb;
    p->arg = arg;
    uv_timer_init(b->loop, &p->timer);
    p->timer.data = p;
    p->next = b->pending;
    b->pending = p;
    char reply[96];
    snprintf(reply, sizeof reply, "%s.%" PRIu64, b->inbox, p->id);
    /* Not connected: the timer still answers, asynchronously, with NULL. */
    if (bus_connected(b))
        natsConnection_PublishRequest(b->nc, subject, reply, data, (int)len);
    uv_timer_start(&p->timer, request_timeout_cb, bus_connected(b) ? (uint64_t)timeout_ms : 0, 0);
    return 0;
}
