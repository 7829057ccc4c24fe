/* Every bus message a Postern process decodes (proto/postern.proto), through the code that
 * decodes it: lib/bus/events.c's subscribers (unpack, check, drop or hand over typed C
 * values), the limiter client's replies in lib/bus/lim.c (CheckReply, BlockList, and the
 * local copy of blocks they feed) and lib/bus/mailwatch.c (MailboxChanged).
 *
 * No NATS here: this file stands in for lib/bus/bus.c (it defines the functions of bus.h, so
 * the linker never takes bus.o), records what subscribes and what asks, and hands the
 * fuzzed payload to the recorded decoder as the bus would.
 *
 * Input: byte 0 = which message (modulo the decoders below), bit 7 = a reply subject is
 * given; the rest is the payload. The typed callbacks check what reaches a service: strings
 * are never NULL, queue ids pass ev_queue_id_ok, block kinds are known. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bus/bus.h"
#include "bus/events.h"
#include "bus/lim.h"
#include "bus/mailwatch.h"

/* ---- the bus, replaced ---------------------------------------------------------------- */

struct bus {
    int unused;
};

#define MAX_SUBS 32

static struct {
    const char *subject;
    bus_msg_cb cb;
    void *arg;
} subs[MAX_SUBS];
static size_t nsubs;

static bus_reply_cb last_request_cb;
static void *last_request_arg;

bus_t *bus_create(uv_loop_t *loop, const char *url, const char *name)
{
    (void)loop, (void)url, (void)name;
    return calloc(1, sizeof(bus_t));
}

void bus_destroy(bus_t **bus)
{
    free(*bus);
    *bus = NULL;
}

bool bus_connected(const bus_t *bus)
{
    return bus != NULL;
}

int bus_publish(bus_t *bus, const char *subject, const void *data, size_t len)
{
    (void)bus, (void)subject, (void)data, (void)len;
    return 0;
}

int bus_publish_msg(bus_t *bus, const char *subject, const ProtobufCMessage *msg)
{
    (void)bus, (void)subject, (void)msg;
    return 0;
}

int bus_on_reconnect(bus_t *bus, void (*cb)(void *arg), void *arg)
{
    (void)bus, (void)cb, (void)arg;
    return 0;
}

void bus_off_reconnect(bus_t *bus, void (*cb)(void *arg), void *arg)
{
    (void)bus, (void)cb, (void)arg;
}

int bus_subscribe(bus_t *bus, const char *subject, bus_msg_cb cb, void *arg)
{
    (void)bus;
    if (nsubs == MAX_SUBS)
        abort();
    subs[nsubs].subject = subject;
    subs[nsubs].cb = cb;
    subs[nsubs].arg = arg;
    nsubs++;
    return 0;
}

static unsigned long requests;

int bus_request(bus_t *bus, const char *subject, const void *data, size_t len, int timeout_ms,
                bus_reply_cb cb, void *arg)
{
    (void)bus, (void)subject, (void)data, (void)len, (void)timeout_ms;
    last_request_cb = cb;
    last_request_arg = arg;
    requests++;
    return 0;
}

/* ---- what a service is handed -------------------------------------------------------- */

static void need(const char *s)
{
    if (!s)
        abort();
    (void)strlen(s);
}

static void queue_added(void *arg, const char *queue_id)
{
    (void)arg;
    if (!ev_queue_id_ok(queue_id))
        abort();
}

static void config_changed(void *arg, const char *what)
{
    (void)arg;
    need(what);
}

static void auth(void *arg, const ev_auth_t *ev)
{
    (void)arg;
    need(ev->user), need(ev->client_addr), need(ev->mechanism), need(ev->instance);
    if (ev->attempt_digest_len && !ev->attempt_digest)
        abort();
}

static void message(void *arg, const ev_message_t *ev)
{
    (void)arg;
    need(ev->user), need(ev->sender), need(ev->client_addr), need(ev->instance),
        need(ev->queue_id);
}

static void block_changed(void *arg, ev_block_change_t change, const ev_block_t *b)
{
    (void)arg;
    if (change < EV_BLOCK_ADDED || change > EV_BLOCK_EXPIRED || !b->network || !*b->network)
        abort();
    need(b->reason);
}

static void alert(void *arg, const ev_alert_t *a)
{
    (void)arg;
    need(a->cause), need(a->user), need(a->limit), need(a->action), need(a->detail);
    for (size_t i = 0; i < a->n_client_addrs; i++)
        need(a->client_addrs[i]);
}

static void auth_check(void *arg, const ev_auth_check_t *req, const char *reply)
{
    (void)arg, (void)reply;
    need(req->client_addr), need(req->user);
}

static void send_check(void *arg, const ev_send_check_t *req, const char *reply)
{
    (void)arg, (void)reply;
    need(req->user), need(req->client_addr), need(req->queue_id), need(req->instance);
}

static void send_release(void *arg, const char *user, const char *queue_id)
{
    (void)arg;
    need(user), need(queue_id);
}

static void rcpt_failure(void *arg, const ev_rcpt_failure_t *req, const char *reply)
{
    (void)arg, (void)reply;
    need(req->client_addr), need(req->recipient);
}

static void block_list_request(void *arg, const ev_block_list_request_t *req, const char *reply)
{
    (void)arg, (void)reply;
    need(req->after);
}

static void verdict(void *arg, const lim_verdict_t *v)
{
    (void)arg;
    if (!memchr(v->reason, '\0', sizeof v->reason))
        abort();
}

static void mailbox_changed(void *arg, const mailwatch_event_t *ev)
{
    (void)arg;
    need(ev->user);
}

/* ---- setup: one of each, made once ---------------------------------------------------- */

static bus_t *bus;
static lim_t *lim;
static mailwatch_t *mw;

/* One page of a resync of the blocks, as the answer to the request lim_resync() makes (data
 * NULL: no answer). A page that asks for more is followed by no answer, which ends the
 * resync. */
static void sync_page(const void *data, size_t len)
{
    lim_resync(lim);
    unsigned long before = requests;
    last_request_cb(last_request_arg, data, len);
    if (requests != before)
        last_request_cb(last_request_arg, NULL, 0);
}

static void setup(void)
{
    if (bus)
        return;
    bus = bus_create(NULL, NULL, NULL);
    if (ev_subscribe_queue_added(bus, queue_added, NULL) < 0 ||
        ev_subscribe_config_changed(bus, config_changed, NULL) < 0 ||
        ev_subscribe_auth(bus, auth, NULL) < 0 || ev_subscribe_message(bus, message, NULL) < 0 ||
        ev_subscribe_block_changed(bus, block_changed, NULL) < 0 ||
        ev_subscribe_alert(bus, alert, NULL) < 0 ||
        ev_subscribe_auth_check(bus, auth_check, NULL) < 0 ||
        ev_subscribe_send_check(bus, send_check, NULL) < 0 ||
        ev_subscribe_send_release(bus, send_release, NULL) < 0 ||
        ev_subscribe_rcpt_failure(bus, rcpt_failure, NULL) < 0 ||
        ev_subscribe_block_list_request(bus, block_list_request, NULL) < 0)
        abort();
    /* The limiter client: its first block-list sync runs from the loop at once. */
    static uv_loop_t loop;
    uv_loop_init(&loop);
    lim = lim_create(&loop, bus, NULL, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    if (!lim || !last_request_cb)
        abort();
    last_request_cb(last_request_arg, NULL, 0); /* the first resync: no answer */
    mw = mailwatch_create(bus);
    if (!mw || !mailwatch_watch(mw, "User@Example.COM", mailbox_changed, NULL))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup();
    const char *reply = data[0] & 0x80 ? "_INBOX.fuzz.1" : NULL;
    size_t which = data[0] & 0x7f;
    data++;
    size--;
    /* A copy of exactly the payload, so that ASan sees any read past its end. */
    uint8_t *payload = malloc(size ? size : 1);
    if (!payload)
        abort();
    memcpy(payload, data, size);
    size_t ndecoders = nsubs + 2;
    which %= ndecoders;
    if (which < nsubs) {
        /* events.c's subscribers, lim.c's BlockChange, mailwatch.c's MailboxChanged */
        subs[which].cb(subs[which].arg, subs[which].subject, payload, size, reply);
    } else if (which == nsubs) {
        /* CheckReply: the answer to a limiter request */
        last_request_cb = NULL;
        if (lim_check_auth(lim, POSTERN__SERVICE__SERVICE_IMAP, "192.0.2.7", "user", verdict,
                           NULL) < 0 || !last_request_cb)
            abort();
        last_request_cb(last_request_arg, payload, size);
    } else {
        /* BlockList: a page of the periodic resync */
        sync_page(payload, size);
    }
    char reason[200];
    int64_t until;
    lim_blocked(lim, "192.0.2.7", reason, sizeof reason, &until);
    lim_blocked(lim, "2001:db8::7", reason, sizeof reason, &until);
    /* Forget the blocks this input added, so that inputs do not pile them up. */
    sync_page("", 0);
    free(payload);
    return 0;
}
