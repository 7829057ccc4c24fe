/* Packing and unpacking the bus's messages (events.h). A subscription is a record holding
 * the typed callback and its argument, handed to bus_subscribe() as the argument of the
 * subject's decoder. bus.h has no way to free such an argument with the bus, so the records
 * are kept in one list per process until ev_release(); the list is only touched when
 * subscriptions are made and released, under a lock. */
#include "bus/events.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/log.h"

typedef struct ev_sub {
    bus_t *bus;
    const char *subject;
    union {
        ev_queue_added_cb queue_added;
        ev_config_changed_cb config_changed;
        ev_auth_cb auth;
        ev_message_cb message;
        ev_block_changed_cb block_changed;
        ev_alert_cb alert;
        ev_auth_check_cb auth_check;
        ev_send_check_cb send_check;
        ev_send_release_cb send_release;
        ev_rcpt_failure_cb rcpt_failure;
        ev_block_list_request_cb block_list_request;
    } cb;
    void *arg;
    unsigned long dropped; /* bad messages on this subscription */
    struct ev_sub *next;
} ev_sub_t;

static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static ev_sub_t *ev_subs;

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* protobuf-c takes char * where it only reads: the messages built here are never changed. */
static char *str(const char *s)
{
    return (char *)(s ? s : "");
}

/* ---- subscriptions --------------------------------------------------------------------- */

static int ev_subscribe(bus_t *bus, const char *subject, bus_msg_cb decode, const ev_sub_t *tmpl)
{
    if (!bus)
        return -1;
    ev_sub_t *s = malloc(sizeof *s);
    if (!s)
        return -1;
    *s = *tmpl;
    s->bus = bus;
    s->subject = subject;
    s->dropped = 0;
    if (bus_subscribe(bus, subject, decode, s) < 0) {
        free(s); /* nothing will be delivered to it */
        return -1;
    }
    pthread_mutex_lock(&ev_lock);
    s->next = ev_subs;
    ev_subs = s;
    pthread_mutex_unlock(&ev_lock);
    return 0;
}

void ev_release(bus_t *bus)
{
    if (!bus)
        return;
    pthread_mutex_lock(&ev_lock);
    for (ev_sub_t **pp = &ev_subs; *pp;) {
        ev_sub_t *s = *pp;
        if (s->bus == bus) {
            *pp = s->next;
            free(s);
        } else {
            pp = &s->next;
        }
    }
    pthread_mutex_unlock(&ev_lock);
}

/* A message that does not decode, or fails the subject's checks. */
static void ev_drop(ev_sub_t *s, size_t len, const char *why)
{
    s->dropped++;
    log_warn("bad message dropped", "subject=%s bytes=%zu reason=\"%s\" dropped_total=%lu",
             s->subject, len, why, s->dropped);
}

/* ---- postern.queue.added ----------------------------------------------------------------- */

bool ev_queue_id_ok(const char *queue_id)
{
    if (!queue_id || !*queue_id)
        return false;
    size_t n = 0;
    for (const char *c = queue_id; *c; c++, n++)
        if (*c <= ' ' || *c > '~' || n >= EV_QUEUE_ID_MAX)
            return false;
    return true;
}

int ev_publish_queue_added(bus_t *bus, const char *queue_id)
{
    if (!ev_queue_id_ok(queue_id))
        return -1;
    Postern__QueueAdded m = POSTERN__QUEUE_ADDED__INIT;
    m.queue_id = str(queue_id);
    return bus_publish_msg(bus, BUS_SUBJECT_QUEUE_ADDED, &m.base);
}

static void queue_added_msg(void *arg, const char *subject, const void *data, size_t len,
                            const char *reply)
{
    (void)subject;
    (void)reply;
    ev_sub_t *s = arg;
    Postern__QueueAdded *m = postern__queue_added__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not a QueueAdded");
        return;
    }
    if (!ev_queue_id_ok(m->queue_id))
        ev_drop(s, len, "not a queue id");
    else
        s->cb.queue_added(s->arg, m->queue_id);
    postern__queue_added__free_unpacked(m, NULL);
}

int ev_subscribe_queue_added(bus_t *bus, ev_queue_added_cb cb, void *arg)
{
    ev_sub_t t = { .cb.queue_added = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_QUEUE_ADDED, queue_added_msg, &t);
}

/* ---- postern.config.changed -------------------------------------------------------------- */

int ev_publish_config_changed(bus_t *bus, const char *what)
{
    Postern__ConfigChanged m = POSTERN__CONFIG_CHANGED__INIT;
    m.what = str(what);
    m.time_ms = now_ms();
    return bus_publish_msg(bus, BUS_SUBJECT_CONFIG_CHANGED, &m.base);
}

/* Packs msg into out, which is reset first. */
static int ev_pack(const ProtobufCMessage *msg, buf_t *out)
{
    buf_reset(out);
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *data = malloc(len ? len : 1);
    if (!data)
        return -1;
    protobuf_c_message_pack(msg, data);
    int rc = buf_append(out, data, len);
    free(data);
    return rc;
}

int ev_pack_config_changed(const char *what, buf_t *out)
{
    Postern__ConfigChanged m = POSTERN__CONFIG_CHANGED__INIT;
    m.what = str(what);
    m.time_ms = now_ms();
    return ev_pack(&m.base, out);
}

static void config_changed_msg(void *arg, const char *subject, const void *data, size_t len,
                               const char *reply)
{
    (void)subject;
    (void)reply;
    ev_sub_t *s = arg;
    Postern__ConfigChanged *m = postern__config_changed__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not a ConfigChanged");
        return;
    }
    s->cb.config_changed(s->arg, m->what);
    postern__config_changed__free_unpacked(m, NULL);
}

int ev_subscribe_config_changed(bus_t *bus, ev_config_changed_cb cb, void *arg)
{
    ev_sub_t t = { .cb.config_changed = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_CONFIG_CHANGED, config_changed_msg, &t);
}

/* ---- postern.event.auth ------------------------------------------------------------------ */

int ev_publish_auth(bus_t *bus, const ev_auth_t *ev)
{
    Postern__AuthEvent m = POSTERN__AUTH_EVENT__INIT;
    m.service = ev->service;
    m.user = str(ev->user);
    m.client_addr = str(ev->client_addr);
    m.mechanism = str(ev->mechanism);
    m.tls = ev->tls;
    m.result = ev->result;
    m.time_ms = ev->time_ms ? ev->time_ms : now_ms();
    m.instance = str(ev->instance);
    if (ev->attempt_digest && ev->attempt_digest_len) {
        m.attempt_digest.data = (uint8_t *)ev->attempt_digest;
        m.attempt_digest.len = ev->attempt_digest_len;
    }
    return bus_publish_msg(bus, BUS_SUBJECT_EVENT_AUTH, &m.base);
}

static void auth_msg(void *arg, const char *subject, const void *data, size_t len,
                     const char *reply)
{
    (void)subject;
    (void)reply;
    ev_sub_t *s = arg;
    Postern__AuthEvent *m = postern__auth_event__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not an AuthEvent");
        return;
    }
    ev_auth_t ev = {
        .service = m->service,
        .user = m->user,
        .client_addr = m->client_addr,
        .mechanism = m->mechanism,
        .tls = m->tls,
        .result = m->result,
        .time_ms = m->time_ms,
        .instance = m->instance,
        .attempt_digest = m->attempt_digest.data,
        .attempt_digest_len = m->attempt_digest.len,
    };
    s->cb.auth(s->arg, &ev);
    postern__auth_event__free_unpacked(m, NULL);
}

int ev_subscribe_auth(bus_t *bus, ev_auth_cb cb, void *arg)
{
    ev_sub_t t = { .cb.auth = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_EVENT_AUTH, auth_msg, &t);
}

/* ---- postern.event.message --------------------------------------------------------------- */

int ev_publish_message(bus_t *bus, const ev_message_t *ev)
{
    Postern__MessageEvent m = POSTERN__MESSAGE_EVENT__INIT;
    m.service = ev->service;
    m.user = str(ev->user);
    m.sender = str(ev->sender);
    m.rcpt_count = ev->rcpt_count;
    m.relay_rcpt_count = ev->relay_rcpt_count;
    m.size = ev->size;
    m.client_addr = str(ev->client_addr);
    m.authenticated = ev->authenticated;
    m.time_ms = ev->time_ms ? ev->time_ms : now_ms();
    m.instance = str(ev->instance);
    m.queue_id = str(ev->queue_id);
    return bus_publish_msg(bus, BUS_SUBJECT_EVENT_MESSAGE, &m.base);
}

static void message_msg(void *arg, const char *subject, const void *data, size_t len,
                        const char *reply)
{
    (void)subject;
    (void)reply;
    ev_sub_t *s = arg;
    Postern__MessageEvent *m = postern__message_event__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not a MessageEvent");
        return;
    }
    ev_message_t ev = {
        .service = m->service,
        .user = m->user,
        .sender = m->sender,
        .rcpt_count = m->rcpt_count,
        .relay_rcpt_count = m->relay_rcpt_count,
        .size = m->size,
        .client_addr = m->client_addr,
        .authenticated = m->authenticated,
        .time_ms = m->time_ms,
        .instance = m->instance,
        .queue_id = m->queue_id,
    };
    s->cb.message(s->arg, &ev);
    postern__message_event__free_unpacked(m, NULL);
}

int ev_subscribe_message(bus_t *bus, ev_message_cb cb, void *arg)
{
    ev_sub_t t = { .cb.message = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_EVENT_MESSAGE, message_msg, &t);
}

/* ---- blocks ------------------------------------------------------------------------------ */

static void block_to_pb(const ev_block_t *b, Postern__Block *pb)
{
    postern__block__init(pb);
    pb->network = str(b->network);
    pb->reason = str(b->reason);
    pb->since_ms = b->since_ms;
    pb->until_ms = b->until_ms;
    pb->service = b->service;
    pb->offense = b->offense;
}

int ev_publish_block_changed(bus_t *bus, ev_block_change_t change, const ev_block_t *block)
{
    Postern__Block blk;
    block_to_pb(block, &blk);
    Postern__BlockChange m = POSTERN__BLOCK_CHANGE__INIT;
    m.kind = (Postern__BlockChange__Kind)change;
    m.block = &blk;
    return bus_publish_msg(bus, BUS_SUBJECT_BLOCK_CHANGED, &m.base);
}

static void block_changed_msg(void *arg, const char *subject, const void *data, size_t len,
                              const char *reply)
{
    (void)subject;
    (void)reply;
    ev_sub_t *s = arg;
    Postern__BlockChange *m = postern__block_change__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not a BlockChange");
        return;
    }
    if ((int)m->kind < EV_BLOCK_ADDED || (int)m->kind > EV_BLOCK_EXPIRED) {
        ev_drop(s, len, "unknown kind");
    } else if (!m->block || !m->block->network || !*m->block->network) {
        ev_drop(s, len, "no network");
    } else {
        const Postern__Block *b = m->block;
        ev_block_t ev = {
            .network = b->network,
            .reason = b->reason ? b->reason : "",
            .since_ms = b->since_ms,
            .until_ms = b->until_ms,
            .service = b->service,
            .offense = b->offense,
        };
        s->cb.block_changed(s->arg, (ev_block_change_t)m->kind, &ev);
    }
    postern__block_change__free_unpacked(m, NULL);
}

int ev_subscribe_block_changed(bus_t *bus, ev_block_changed_cb cb, void *arg)
{
    ev_sub_t t = { .cb.block_changed = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_BLOCK_CHANGED, block_changed_msg, &t);
}

static int block_list_publish(bus_t *bus, const char *reply, const ev_block_page_t *page,
                              bool paged)
{
    if (!reply || !*reply)
        return -1;
    Postern__Block *items = calloc(page->nblocks + 1, sizeof *items);
    Postern__Block **ptrs = calloc(page->nblocks + 1, sizeof *ptrs);
    int rc = -1;
    if (items && ptrs) {
        for (size_t i = 0; i < page->nblocks; i++) {
            block_to_pb(&page->blocks[i], &items[i]);
            ptrs[i] = &items[i];
        }
        Postern__BlockList m = POSTERN__BLOCK_LIST__INIT;
        m.blocks = ptrs;
        m.n_blocks = page->nblocks;
        m.exempt = (char **)page->exempt;
        m.n_exempt = page->exempt ? page->nexempt : 0;
        if (paged) {
            m.more = page->more;
            m.next_after = str(page->more ? page->next_after : "");
            m.total = page->total;
        }
        rc = bus_publish_msg(bus, reply, &m.base);
    }
    free(items);
    free(ptrs);
    return rc;
}

int ev_reply_block_list(bus_t *bus, const char *reply, const ev_block_t *blocks, size_t nblocks,
                        const char *const *exempt, size_t nexempt)
{
    ev_block_page_t page = { .blocks = blocks, .nblocks = nblocks, .exempt = exempt,
                             .nexempt = nexempt };
    return block_list_publish(bus, reply, &page, false);
}

int ev_reply_block_page(bus_t *bus, const char *reply, const ev_block_page_t *page)
{
    return block_list_publish(bus, reply, page, true);
}

/* A length-delimited field of n bytes: its tag (fields 1 and 2: one byte), its length as a
 * varint, the bytes. */
static size_t field_size(size_t n)
{
    size_t len = 1 + 1;
    for (size_t v = n; v >= 0x80; v >>= 7)
        len++;
    return len + n;
}

size_t ev_block_list_block_size(const ev_block_t *block)
{
    Postern__Block pb;
    block_to_pb(block, &pb);
    return field_size(protobuf_c_message_get_packed_size(&pb.base));
}

size_t ev_block_list_exempt_size(const char *network)
{
    return field_size(strlen(network ? network : ""));
}

/* ---- postern.account.changed ------------------------------------------------------------- */

int ev_publish_account_changed(bus_t *bus, const char *user, bool send_disabled,
                               const char *reason)
{
    Postern__AccountChange m = POSTERN__ACCOUNT_CHANGE__INIT;
    m.user = str(user);
    m.send_disabled = send_disabled;
    m.reason = str(reason);
    return bus_publish_msg(bus, BUS_SUBJECT_ACCOUNT_CHANGED, &m.base);
}

/* ---- postern.alert ----------------------------------------------------------------------- */

static void alert_to_pb(const ev_alert_t *a, Postern__Alert *m)
{
    postern__alert__init(m);
    m->cause = str(a->cause);
    m->user = str(a->user);
    m->client_addrs = (char **)a->client_addrs;
    m->n_client_addrs = a->client_addrs ? a->n_client_addrs : 0;
    m->limit = str(a->limit);
    m->action = str(a->action);
    m->time_ms = a->time_ms;
    m->detail = str(a->detail);
    m->notify_owner = a->notify_owner;
    m->interval_s = a->interval_s;
}

int ev_publish_alert(bus_t *bus, const ev_alert_t *alert)
{
    Postern__Alert m;
    alert_to_pb(alert, &m);
    return bus_publish_msg(bus, BUS_SUBJECT_ALERT, &m.base);
}

int ev_pack_alert(const ev_alert_t *alert, buf_t *out)
{
    Postern__Alert m;
    alert_to_pb(alert, &m);
    return ev_pack(&m.base, out);
}

static void alert_msg(void *arg, const char *subject, const void *data, size_t len,
                      const char *reply)
{
    (void)subject;
    (void)reply;
    ev_sub_t *s = arg;
    Postern__Alert *m = postern__alert__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not an Alert");
        return;
    }
    ev_alert_t a = {
        .cause = m->cause,
        .user = m->user,
        .client_addrs = (const char *const *)m->client_addrs,
        .n_client_addrs = m->n_client_addrs,
        .limit = m->limit,
        .action = m->action,
        .time_ms = m->time_ms,
        .detail = m->detail,
        .notify_owner = m->notify_owner,
        .interval_s = m->interval_s,
    };
    s->cb.alert(s->arg, &a);
    postern__alert__free_unpacked(m, NULL);
}

int ev_subscribe_alert(bus_t *bus, ev_alert_cb cb, void *arg)
{
    ev_sub_t t = { .cb.alert = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_ALERT, alert_msg, &t);
}

/* ---- the limiter's requests -------------------------------------------------------------- */

int ev_reply_check(bus_t *bus, const char *reply, const ev_check_reply_t *r)
{
    if (!reply || !*reply)
        return -1;
    Postern__CheckReply m = POSTERN__CHECK_REPLY__INIT;
    m.verdict = r->verdict;
    m.reason = str(r->reason);
    m.retry_after_s = r->retry_after_s;
    m.until_ms = r->until_ms;
    m.delay_ms = r->delay_ms;
    return bus_publish_msg(bus, reply, &m.base);
}

static void auth_check_msg(void *arg, const char *subject, const void *data, size_t len,
                           const char *reply)
{
    (void)subject;
    ev_sub_t *s = arg;
    Postern__AuthCheck *m = postern__auth_check__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not an AuthCheck");
        return;
    }
    ev_auth_check_t req = { .service = m->service, .client_addr = m->client_addr,
                            .user = m->user };
    s->cb.auth_check(s->arg, &req, reply);
    postern__auth_check__free_unpacked(m, NULL);
}

int ev_subscribe_auth_check(bus_t *bus, ev_auth_check_cb cb, void *arg)
{
    ev_sub_t t = { .cb.auth_check = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_LIMITER_AUTH, auth_check_msg, &t);
}

static void send_check_msg(void *arg, const char *subject, const void *data, size_t len,
                           const char *reply)
{
    (void)subject;
    ev_sub_t *s = arg;
    Postern__SendCheck *m = postern__send_check__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not a SendCheck");
        return;
    }
    ev_send_check_t req = {
        .service = m->service,
        .user = m->user,
        .client_addr = m->client_addr,
        .rcpt_count = m->rcpt_count,
        .queue_id = m->queue_id,
        .instance = m->instance,
    };
    s->cb.send_check(s->arg, &req, reply);
    postern__send_check__free_unpacked(m, NULL);
}

int ev_subscribe_send_check(bus_t *bus, ev_send_check_cb cb, void *arg)
{
    ev_sub_t t = { .cb.send_check = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_LIMITER_SEND, send_check_msg, &t);
}

static void send_release_msg(void *arg, const char *subject, const void *data, size_t len,
                             const char *reply)
{
    (void)subject;
    (void)reply;
    ev_sub_t *s = arg;
    Postern__SendRelease *m = postern__send_release__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not a SendRelease");
        return;
    }
    s->cb.send_release(s->arg, m->user, m->queue_id);
    postern__send_release__free_unpacked(m, NULL);
}

int ev_subscribe_send_release(bus_t *bus, ev_send_release_cb cb, void *arg)
{
    ev_sub_t t = { .cb.send_release = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_LIMITER_RELEASE, send_release_msg, &t);
}

static void rcpt_failure_msg(void *arg, const char *subject, const void *data, size_t len,
                             const char *reply)
{
    (void)subject;
    ev_sub_t *s = arg;
    Postern__RcptFailure *m = postern__rcpt_failure__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not a RcptFailure");
        return;
    }
    ev_rcpt_failure_t req = { .service = m->service, .client_addr = m->client_addr,
                              .recipient = m->recipient };
    s->cb.rcpt_failure(s->arg, &req, reply);
    postern__rcpt_failure__free_unpacked(m, NULL);
}

int ev_subscribe_rcpt_failure(bus_t *bus, ev_rcpt_failure_cb cb, void *arg)
{
    ev_sub_t t = { .cb.rcpt_failure = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_LIMITER_RCPT, rcpt_failure_msg, &t);
}

static void block_list_request_msg(void *arg, const char *subject, const void *data, size_t len,
                                   const char *reply)
{
    (void)subject;
    ev_sub_t *s = arg;
    Postern__BlockListRequest *m = postern__block_list_request__unpack(NULL, len, data);
    if (!m) {
        ev_drop(s, len, "not a BlockListRequest");
        return;
    }
    ev_block_list_request_t req = { .paged = m->paged, .after = m->after ? m->after : "" };
    s->cb.block_list_request(s->arg, &req, reply);
    postern__block_list_request__free_unpacked(m, NULL);
}

int ev_subscribe_block_list_request(bus_t *bus, ev_block_list_request_cb cb, void *arg)
{
    ev_sub_t t = { .cb.block_list_request = cb, .arg = arg };
    return ev_subscribe(bus, BUS_SUBJECT_LIMITER_BLOCKS, block_list_request_msg, &t);
}

/* ---- the limiter's stream ----------------------------------------------------------------- */

static void limiter_log_pb(const ev_limiter_log_t *rec, Postern__LimiterLog *pm,
                           const char **subject)
{
    Postern__LimiterLog m = POSTERN__LIMITER_LOG__INIT;
    m.kind = (Postern__LimiterLog__Kind)rec->kind;
    m.replica = str(rec->replica);
    m.time_ms = rec->time_ms;
    m.user = str(rec->user);
    m.queue_id = str(rec->queue_id);
    m.rcpt_count = rec->rcpt_count;
    m.max_messages = rec->max_messages;
    m.interval_s = rec->interval_s;
    m.client_addr = str(rec->client_addr);
    m.service = rec->service;
    *subject = BUS_SUBJECT_LIMITER_LOG_FORGET;
    if (rec->kind == EV_LIMITER_LOG_RESERVE || rec->kind == EV_LIMITER_LOG_RELEASE)
        *subject = BUS_SUBJECT_LIMITER_LOG_RESERVE;
    else if (rec->kind == EV_LIMITER_LOG_RCPT_FAILURE)
        *subject = BUS_SUBJECT_LIMITER_LOG_RCPT;
    *pm = m;
}

int ev_publish_limiter_log(bus_t *bus, const ev_limiter_log_t *rec)
{
    Postern__LimiterLog m;
    const char *subject;
    limiter_log_pb(rec, &m, &subject);
    return bus_publish_msg(bus, subject, &m.base);
}

/* The stream's answer to a publish with a reply subject: {"stream":..,"seq":N} when it
 * stored the message, {"error":..} when not. */
static bool pub_ack_ok(const void *data, size_t len)
{
    return data && !memmem(data, len, "\"error\"", 7) && memmem(data, len, "\"seq\"", 5);
}

typedef struct log_ack {
    ev_log_ack_cb cb;
    void *arg;
} log_ack_t;

static void log_ack_reply(void *arg, const void *data, size_t len)
{
    log_ack_t *a = arg;
    a->cb(a->arg, data && pub_ack_ok(data, len));
    free(a);
}

int ev_record_limiter_log(bus_t *bus, const ev_limiter_log_t *rec, int timeout_ms,
                          ev_log_ack_cb cb, void *arg)
{
    Postern__LimiterLog m;
    const char *subject;
    limiter_log_pb(rec, &m, &subject);
    log_ack_t *a = malloc(sizeof *a);
    uint8_t *buf = malloc(protobuf_c_message_get_packed_size(&m.base) + 1);
    if (!a || !buf) {
        free(a);
        free(buf);
        return -1;
    }
    a->cb = cb;
    a->arg = arg;
    size_t len = protobuf_c_message_pack(&m.base, buf);
    int rc = bus_request(bus, subject, buf, len, timeout_ms, log_ack_reply, a);
    free(buf);
    if (rc < 0)
        free(a);
    return rc;
}

static void limiter_log_msg(const ev_stream_handlers_t *h, ev_sub_t *s, const void *data,
                            size_t len)
{
    Postern__LimiterLog *m = postern__limiter_log__unpack(NULL, len, data);
    if (!m || m->kind < POSTERN__LIMITER_LOG__KIND__KIND_RESERVE ||
        m->kind > POSTERN__LIMITER_LOG__KIND__KIND_RELEASE) {
        ev_drop(s, len, "not a LimiterLog");
        if (m)
            postern__limiter_log__free_unpacked(m, NULL);
        return;
    }
    ev_limiter_log_t rec = {
        .kind = (ev_limiter_log_kind_t)m->kind,
        .replica = m->replica,
        .time_ms = m->time_ms,
        .user = m->user,
        .queue_id = m->queue_id,
        .rcpt_count = m->rcpt_count,
        .max_messages = m->max_messages,
        .interval_s = m->interval_s,
        .client_addr = m->client_addr,
        .service = m->service,
    };
    h->limiter_log(h->arg, &rec);
    postern__limiter_log__free_unpacked(m, NULL);
}

int ev_stream_dispatch(const ev_stream_handlers_t *h, const char *subject, const void *data,
                       size_t len)
{
    /* A record like a subscription's, for the decoders above; drops are counted in it. */
    static __thread ev_sub_t rec;
    rec.subject = subject;
    rec.arg = h->arg;
    unsigned long dropped = rec.dropped;
    if (strcmp(subject, BUS_SUBJECT_EVENT_AUTH) == 0 && h->auth) {
        rec.cb.auth = h->auth;
        auth_msg(&rec, subject, data, len, NULL);
    } else if (strcmp(subject, BUS_SUBJECT_EVENT_MESSAGE) == 0 && h->message) {
        rec.cb.message = h->message;
        message_msg(&rec, subject, data, len, NULL);
    } else if (strcmp(subject, BUS_SUBJECT_LIMITER_RELEASE) == 0 && h->send_release) {
        rec.cb.send_release = h->send_release;
        send_release_msg(&rec, subject, data, len, NULL);
    } else if (strncmp(subject, BUS_SUBJECT_LIMITER_LOG_PREFIX,
                       sizeof BUS_SUBJECT_LIMITER_LOG_PREFIX - 1) == 0 &&
               h->limiter_log) {
        limiter_log_msg(h, &rec, data, len);
    } else {
        ev_drop(&rec, len, "not a subject of the limiter's stream");
    }
    return rec.dropped == dropped ? 0 : -1;
}
