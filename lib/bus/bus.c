#include "bus/bus.h"

#include <errno.h>
#include <inttypes.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "base/log.h"
#include "bus/js.h"
#include "bus/nats_opts.h"

/* A stream follower's NATS thread waits while this many of its messages wait for the
 * loop: a replay of a long stream is paced by the loop instead of filling memory. */
#define FOLLOW_QUEUE_MAX 4096

typedef struct bus_sub {
    bus_t *bus;
    bus_msg_cb cb;
    bus_stream_cb stream_cb; /* a stream follower (bus_follow) instead of cb */
    void *arg;
    natsSubscription *sub;
    size_t queued;  /* follower: messages handed to the loop, not yet delivered */
    bool closed;    /* follower: bus_unfollow() was called; nothing more is delivered */
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
    /* NATS threads wake the loop through an eventfd rather than a uv_async_t: libuv 1.44's
     * uv_async_t makes the woken loop spin until the waking thread is back from its write
     * (a twentieth of the limiter's time under load), and a wake-up is written only when
     * the queue was empty, the loop taking everything queued at each wake. */
    uv_poll_t wakeup;
    int wake_fd;
    natsOptions *opts;
    natsConnection *nc;
    bus_sub_t *subs;
    pthread_mutex_t lock; /* guards inbound, follows, js and the followers' queued/closed */
    pthread_cond_t room;  /* a follower's queue went below FOLLOW_QUEUE_MAX, or closing */
    bool closing;
    bus_inbound_t *inbound, *inbound_tail;
    bus_sub_t *follows;   /* stream followers, freed with the bus */
    jsCtx *js;
    char inbox[64];       /* reply subjects are <inbox>.<id> */
    bus_sub_t *reply_sub;
    uint64_t next_id;
    bus_pending_t *pending;
    bool connected_once;  /* under lock: a later connection is a reconnection */
    bool reconnected;     /* under lock: the hooks are due */
    struct {
        void (*cb)(void *arg);
        void *arg;
    } on_reconnect[BUS_RECONNECT_HOOKS];
    size_t nhooks;
};

/* Any thread: the loop runs wakeup_cb soon. */
static void bus_wake(bus_t *b)
{
    uint64_t one = 1;
    /* Fails only when the counter is full, i.e. a wake-up is already due. */
    ssize_t n = write(b->wake_fd, &one, sizeof one);
    (void)n;
}

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
    if (s->stream_cb) {
        while (s->queued >= FOLLOW_QUEUE_MAX && !s->closed && !b->closing)
            pthread_cond_wait(&b->room, &b->lock);
        if (s->closed || b->closing) {
            pthread_mutex_unlock(&b->lock);
            natsMsg_Destroy(msg);
            free(in);
            return;
        }
        s->queued++;
    }
    bool first = !b->inbound;
    if (b->inbound_tail)
        b->inbound_tail->next = in;
    else
        b->inbound = in;
    b->inbound_tail = in;
    pthread_mutex_unlock(&b->lock);
    if (first)
        bus_wake(b);
}

/* Loop thread: a message of a followed stream, with its sequence and the time the stream
 * stored it. */
static void follow_deliver(bus_t *b, bus_sub_t *s, natsMsg *m)
{
    pthread_mutex_lock(&b->lock);
    bool closed = s->closed;
    if (s->queued-- == FOLLOW_QUEUE_MAX)
        pthread_cond_broadcast(&b->room);
    pthread_mutex_unlock(&b->lock);
    jsMsgMetaData *meta = NULL;
    if (closed || natsMsg_GetMetaData(&meta, m) != NATS_OK) {
        if (!closed)
            log_warn("stream message without metadata dropped", "subject=%s",
                     natsMsg_GetSubject(m));
        return;
    }
    const char *data = natsMsg_GetData(m) ? natsMsg_GetData(m) : "";
    s->stream_cb(s->arg, natsMsg_GetSubject(m), data, (size_t)natsMsg_GetDataLength(m),
                 meta->Sequence.Stream, meta->Timestamp / 1000000);
    jsMsgMetaData_Destroy(meta);
}

/* Loop thread. */
static void wakeup_cb(uv_poll_t *h, int status, int events)
{
    (void)status;
    (void)events;
    bus_t *b = h->data;
    /* The counter is cleared before the queue is taken: a message queued after this finds
     * the queue empty (taken, or about to be) and wakes the loop again. */
    uint64_t count;
    ssize_t n = read(b->wake_fd, &count, sizeof count);
    (void)n;
    pthread_mutex_lock(&b->lock);
    bus_inbound_t *in = b->inbound;
    b->inbound = b->inbound_tail = NULL;
    bool reconnected = b->reconnected;
    b->reconnected = false;
    pthread_mutex_unlock(&b->lock);
    for (size_t i = 0; reconnected && i < b->nhooks; i++)
        b->on_reconnect[i].cb(b->on_reconnect[i].arg);
    while (in) {
        bus_inbound_t *next = in->next;
        natsMsg *m = in->msg;
        if (in->sub->stream_cb) {
            follow_deliver(b, in->sub, m);
            natsMsg_Destroy(m);
            free(in);
            in = next;
            continue;
        }
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

void bus_url_public(const char *url, char *out, size_t out_len)
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

static void disconnected_cb(natsConnection *nc, void *closure)
{
    (void)nc;
    (void)closure;
    log_warn("bus disconnected", "%s", "");
}

/* NATS thread (or bus_open() for a connection made at once). */
static void reconnected_cb(natsConnection *nc, void *closure)
{
    bus_t *b = closure;
    char url[256] = "", shown[256];
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    bus_url_public(url, shown, sizeof shown);
    log_info("bus connected", "server=\"%s\"", shown);
    pthread_mutex_lock(&b->lock);
    bool again = b->connected_once && !b->closing;
    b->connected_once = true;
    if (again)
        b->reconnected = true;
    pthread_mutex_unlock(&b->lock);
    if (again)
        bus_wake(b);
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

int bus_password_file(const char *path, char *out, size_t out_len)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char line[BUS_PASSWORD_MAX + 2];
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    size_t n = got ? strcspn(line, "\r\n") : 0;
    if (n == 0 || n > BUS_PASSWORD_MAX || n >= out_len) {
        errno = n == 0 ? EINVAL : ENAMETOOLONG;
        return -1;
    }
    memcpy(out, line, n);
    out[n] = '\0';
    explicit_bzero(line, sizeof line);
    return 0;
}

#define BUS_MAX_SERVERS 16

natsStatus bus_nats_options(natsOptions *opts, const bus_opts_t *o, char *err, size_t err_len)
{
    /* The comma-separated list, blanks around each URL trimmed. */
    char list[1024];
    const char *servers[BUS_MAX_SERVERS];
    int n = 0;
    if (snprintf(list, sizeof list, "%s", o->url ? o->url : "") >= (int)sizeof list) {
        snprintf(err, err_len, "the list of NATS URLs is too long");
        return NATS_INVALID_ARG;
    }
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        tok += strspn(tok, " \t");
        size_t len = strlen(tok);
        while (len > 0 && (tok[len - 1] == ' ' || tok[len - 1] == '\t'))
            tok[--len] = '\0';
        if (!len)
            continue;
        if (n == BUS_MAX_SERVERS) {
            snprintf(err, err_len, "more than %d NATS URLs", BUS_MAX_SERVERS);
            return NATS_INVALID_ARG;
        }
        servers[n++] = tok;
    }
    if (n == 0) {
        snprintf(err, err_len, "no NATS URL");
        return NATS_INVALID_ARG;
    }
    bool user = o->user && *o->user;
    bool tls = o->tls_ca && *o->tls_ca;
    char prefix[96];
    snprintf(prefix, sizeof prefix, "_INBOX.%s", user ? o->user : "");
    natsStatus s = natsOptions_SetServers(opts, servers, n);
    if (s == NATS_OK)
        s = natsOptions_SetIgnoreDiscoveredServers(opts, true);
    if (s == NATS_OK && o->name)
        s = natsOptions_SetName(opts, o->name);
    if (s == NATS_OK && user)
        s = natsOptions_SetUserInfo(opts, o->user, o->password ? o->password : "");
    if (s == NATS_OK && user)
        s = natsOptions_SetCustomInboxPrefix(opts, prefix);
    if (s == NATS_OK && tls)
        s = natsOptions_SetSecure(opts, true);
    if (s == NATS_OK && tls) {
        s = natsOptions_LoadCATrustedCertificates(opts, o->tls_ca);
        if (s != NATS_OK) {
            snprintf(err, err_len, "cannot load the CA certificate %s: %s", o->tls_ca,
                     nats_GetLastError(NULL));
            return s;
        }
    }
    if (s != NATS_OK)
        snprintf(err, err_len, "%s", nats_GetLastError(NULL));
    return s;
}

/* NATS thread (libnats's callback thread, which may run after bus_destroy() has freed the
 * bus: the closure is not touched). The connection is closed for good: after our own close
 * with no error; otherwise libnats gave up, the server having refused the credentials. */
static void closed_cb(natsConnection *nc, void *closure)
{
    (void)closure;
    const char *text = NULL;
    if (natsConnection_GetLastError(nc, &text) == NATS_OK)
        return;
    log_error("bus connection closed for good (NATS_USER and its password refused?)",
              "error=\"%s\"", text ? text : "");
}

/* NATS thread: an asynchronous error, such as a permissions violation. */
static void error_cb(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)sub;
    (void)closure;
    const char *text = NULL;
    natsConnection_GetLastError(nc, &text);
    /* The server's text quotes the subject: quotes of its own would end the log value. */
    char detail[256];
    snprintf(detail, sizeof detail, "%s", text ? text : "");
    for (char *q = detail; (q = strchr(q, '"')); q++)
        *q = '\'';
    log_warn("bus error", "error=\"%s\" detail=\"%s\"", natsStatus_GetText(err), detail);
}

bus_t *bus_create(uv_loop_t *loop, const char *url, const char *name)
{
    bus_opts_t o = { .url = url, .name = name };
    return bus_open(loop, &o);
}

bus_t *bus_open(uv_loop_t *loop, const bus_opts_t *o)
{
    bus_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->loop = loop;
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->room, NULL);
    /* Before connecting: reconnected_cb may wake the loop from natsConnection_Connect(). */
    b->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (b->wake_fd < 0) {
        log_error("cannot create the bus's wake-up descriptor", "error=\"%s\"", strerror(errno));
        goto fail;
    }
    /* Reply subjects under the user's own inbox prefix (bus_nats_options), the one part of
     * _INBOX the server lets this user read. */
    natsInbox *inbox = NULL;
    if (natsInbox_Create(&inbox) != NATS_OK)
        goto fail;
    const char *nuid = strrchr((const char *)inbox, '.');
    snprintf(b->inbox, sizeof b->inbox, "_INBOX.%s%s%s", o->user && *o->user ? o->user : "",
             o->user && *o->user ? "." : "", nuid ? nuid + 1 : (const char *)inbox);
    natsInbox_Destroy(inbox);
    char err[256] = "";
    if (natsOptions_Create(&b->opts) != NATS_OK ||
        bus_nats_options(b->opts, o, err, sizeof err) != NATS_OK ||
        natsOptions_SetMaxReconnect(b->opts, -1) != NATS_OK ||
        natsOptions_SetReconnectWait(b->opts, 500) != NATS_OK ||
        natsOptions_SetTimeout(b->opts, 2000) != NATS_OK ||
        natsOptions_SetReconnectBufSize(b->opts, 8 * 1024 * 1024) != NATS_OK ||
        /* Checks sit on the path of every login and message: send at once rather than
         * waiting for libnats's flusher (about 1 ms). */
        natsOptions_SetSendAsap(b->opts, true) != NATS_OK ||
        natsOptions_SetErrorHandler(b->opts, error_cb, b) != NATS_OK ||
        natsOptions_SetClosedCB(b->opts, closed_cb, b) != NATS_OK ||
        natsOptions_SetDisconnectedCB(b->opts, disconnected_cb, b) != NATS_OK ||
        natsOptions_SetReconnectedCB(b->opts, reconnected_cb, b) != NATS_OK ||
        natsOptions_SetRetryOnFailedConnect(b->opts, true, reconnected_cb, b) != NATS_OK) {
        log_error("bad bus settings", "error=\"%s\"", err[0] ? err : "out of memory");
        goto fail;
    }
    natsStatus s = natsConnection_Connect(&b->nc, b->opts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
        log_error("bus connect failed", "error=\"%s\"", natsStatus_GetText(s));
        goto fail;
    }
    if (s == NATS_OK)
        reconnected_cb(b->nc, b);
    else {
        const char *why = NULL;
        natsConnection_GetLastError(b->nc, &why);
        log_warn("bus not reachable yet, retrying", "error=\"%s\"", why ? why : "");
    }
    int rc = uv_poll_init(loop, &b->wakeup, b->wake_fd);
    if (rc < 0) {
        log_error("cannot watch the bus's wake-up descriptor", "error=\"%s\"", uv_strerror(rc));
        goto fail;
    }
    b->wakeup.data = b;
    uv_poll_start(&b->wakeup, UV_READABLE, wakeup_cb);
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
    if (b->wake_fd >= 0)
        close(b->wake_fd);
    pthread_cond_destroy(&b->room);
    pthread_mutex_destroy(&b->lock);
    free(b);
    return NULL;
}

static void bus_close_cb(uv_handle_t *h)
{
    bus_t *b = h->data;
    close(b->wake_fd);
    pthread_cond_destroy(&b->room);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

void bus_destroy(bus_t **bp)
{
    bus_t *b = *bp;
    if (!b)
        return;
    *bp = NULL;
    /* Followers' NATS threads waiting for room give up first. */
    pthread_mutex_lock(&b->lock);
    b->closing = true;
    pthread_cond_broadcast(&b->room);
    pthread_mutex_unlock(&b->lock);
    for (bus_sub_t *s = b->subs, *next; s; s = next) {
        next = s->next;
        natsSubscription_Unsubscribe(s->sub);
        natsSubscription_Destroy(s->sub);
    }
    for (bus_sub_t *s = b->follows; s; s = s->next)
        if (s->sub) {
            natsSubscription_Unsubscribe(s->sub);
            natsSubscription_Destroy(s->sub);
        }
    jsCtx_Destroy(b->js);
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
    for (bus_sub_t *s = b->follows, *next; s; s = next) {
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

int bus_on_reconnect(bus_t *b, void (*cb)(void *arg), void *arg)
{
    if (b->nhooks == BUS_RECONNECT_HOOKS)
        return -1;
    b->on_reconnect[b->nhooks].cb = cb;
    b->on_reconnect[b->nhooks].arg = arg;
    b->nhooks++;
    return 0;
}

void bus_off_reconnect(bus_t *b, void (*cb)(void *arg), void *arg)
{
    for (size_t i = 0; b && i < b->nhooks; i++)
        if (b->on_reconnect[i].cb == cb && b->on_reconnect[i].arg == arg) {
            memmove(&b->on_reconnect[i], &b->on_reconnect[i + 1],
                    (b->nhooks - i - 1) * sizeof b->on_reconnect[0]);
            b->nhooks--;
            return;
        }
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

/* ---- JetStream (bus/js.h) --------------------------------------------------------------- */

jsCtx *bus_js(bus_t *b)
{
    pthread_mutex_lock(&b->lock);
    if (!b->js && !b->closing) {
        jsOptions o;
        jsOptions_Init(&o);
        o.Wait = 2000; /* API calls are blocking: the callers are worker threads */
        if (natsConnection_JetStream(&b->js, b->nc, &o) != NATS_OK)
            b->js = NULL;
    }
    jsCtx *js = b->js;
    pthread_mutex_unlock(&b->lock);
    return js;
}

bus_follow_t *bus_follow(bus_t *b, const char *stream, uint64_t start_seq, bus_stream_cb cb,
                         void *arg, char *err, size_t err_len)
{
    jsCtx *js = bus_js(b);
    bus_sub_t *s = calloc(1, sizeof *s);
    if (!js || !s) {
        snprintf(err, err_len, "out of memory");
        free(s);
        return NULL;
    }
    s->bus = b;
    s->stream_cb = cb;
    s->arg = arg;
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = stream;
    so.Ordered = true;
    if (start_seq > 1) {
        so.Config.DeliverPolicy = js_DeliverByStartSequence;
        so.Config.OptStartSeq = start_seq;
    }
    jsErrCode jerr = 0;
    /* ">": every subject of the stream, in the stream's order. */
    natsStatus st = js_Subscribe(&s->sub, js, ">", nats_msg_cb, s, NULL, &so, &jerr);
    if (st != NATS_OK) {
        snprintf(err, err_len, "%s (%d)", nats_GetLastError(NULL), (int)jerr);
        free(s);
        return NULL;
    }
    /* No limit on libnats's own queue of this subscription: the delivery thread waits for
     * the loop (FOLLOW_QUEUE_MAX), and JetStream's flow control stops the server from
     * sending more than a window ahead, so the queue stays bounded; a limit would drop
     * messages ("slow consumer") and make the ordered consumer start over again and again. */
    natsSubscription_SetPendingLimits(s->sub, -1, -1);
    pthread_mutex_lock(&b->lock);
    s->next = b->follows;
    b->follows = s;
    pthread_mutex_unlock(&b->lock);
    return s;
}

void bus_unfollow(bus_t *b, bus_follow_t *s)
{
    if (!b || !s)
        return;
    pthread_mutex_lock(&b->lock);
    s->closed = true;
    pthread_cond_broadcast(&b->room);
    natsSubscription *sub = s->sub;
    s->sub = NULL;
    pthread_mutex_unlock(&b->lock);
    /* May wait for the server (a JetStream consumer is deleted): only at stop and when the
     * stream is set up again, never on a request. A kept subscription would instead report
     * missed heartbeats for ever. */
    natsSubscription_Unsubscribe(sub);
    natsSubscription_Destroy(sub); /* s itself stays until bus_destroy(): queued messages */
}
