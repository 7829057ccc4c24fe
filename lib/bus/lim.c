#include "bus/lim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/log.h"
#include "base/net.h"
#include "bus/events.h"

#define LIM_SYNC_MS 30000

typedef struct lim_block {
    net_cidr_t net;
    int64_t until_ms;
    char reason[200];
} lim_block_t;

struct lim {
    bus_t *bus;
    metrics_t *metrics;
    config_t *cfg;
    uv_timer_t sync_timer;
    lim_block_t *blocks;
    size_t nblocks;
    net_cidr_t *exempt;
    size_t nexempt;
    bool synced;
};

typedef struct lim_req {
    lim_cb cb;
    void *arg;
    metrics_t *metrics;
    const char *check; /* "auth", "send", "rcpt" */
    uint64_t started_ns;
} lim_req_t;

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void reply_cb(void *arg, const void *data, size_t len)
{
    lim_req_t *r = arg;
    lim_verdict_t v = { .answered = false, .verdict = POSTERN__VERDICT__VERDICT_ALLOW };
    if (data) {
        Postern__CheckReply *rep = postern__check_reply__unpack(NULL, len, data);
        if (rep) {
            v.answered = true;
            v.verdict = rep->verdict;
            snprintf(v.reason, sizeof v.reason, "%s", rep->reason ? rep->reason : "");
            v.retry_after_s = rep->retry_after_s;
            v.until_ms = rep->until_ms;
            v.delay_ms = rep->delay_ms;
            postern__check_reply__free_unpacked(rep, NULL);
        } else {
            log_warn("bad limiter reply dropped", "bytes=%zu", len);
        }
    }
    static const char *const verdicts[] = { "unspecified", "allow", "throttle", "disabled",
                                            "blocked" };
    char labels[80];
    snprintf(labels, sizeof labels, "check=\"%s\"", r->check);
    metrics_observe(r->metrics, "postern_limiter_check_seconds",
                    "Time from a limiter request to its answer", labels,
                    (double)(uv_hrtime() - r->started_ns) / 1e9);
    snprintf(labels, sizeof labels, "check=\"%s\",verdict=\"%s\"", r->check,
             !v.answered ? "no-answer"
             : (unsigned)v.verdict < sizeof verdicts / sizeof verdicts[0] ? verdicts[v.verdict]
                                                                         : "unknown");
    metrics_add(r->metrics, "postern_limiter_verdicts_total", "Limiter answers by verdict",
                labels, 1);
    r->cb(r->arg, &v);
    free(r);
}

static int lim_request(lim_t *lim, const char *subject, const ProtobufCMessage *msg, lim_cb cb,
                       void *arg)
{
    if (!lim || !lim->bus)
        return -1; /* shutting down */
    lim_req_t *r = malloc(sizeof *r);
    if (!r)
        return -1;
    r->cb = cb;
    r->arg = arg;
    r->metrics = lim->metrics;
    r->check = strrchr(subject, '.') + 1;
    r->started_ns = uv_hrtime();
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        free(r);
        return -1;
    }
    protobuf_c_message_pack(msg, buf);
    long timeout = config_get_long(lim->cfg, "limiter.timeout_ms");
    int rc = bus_request(lim->bus, subject, buf, len, timeout > 0 ? (int)timeout : 500, reply_cb, r);
    free(buf);
    if (rc < 0)
        free(r);
    return rc;
}

int lim_check_auth(lim_t *lim, Postern__Service service, const char *client, const char *user,
                   lim_cb cb, void *arg)
{
    Postern__AuthCheck m = POSTERN__AUTH_CHECK__INIT;
    m.service = service;
    m.client_addr = (char *)client;
    m.user = (char *)(user ? user : "");
    return lim_request(lim, BUS_SUBJECT_LIMITER_AUTH, &m.base, cb, arg);
}

int lim_check_send(lim_t *lim, Postern__Service service, const char *user, const char *client,
                   unsigned rcpt_count, const char *queue_id, const char *instance, lim_cb cb,
                   void *arg)
{
    Postern__SendCheck m = POSTERN__SEND_CHECK__INIT;
    m.service = service;
    m.user = (char *)user;
    m.client_addr = (char *)client;
    m.rcpt_count = rcpt_count;
    m.queue_id = (char *)queue_id;
    m.instance = (char *)instance;
    return lim_request(lim, BUS_SUBJECT_LIMITER_SEND, &m.base, cb, arg);
}

void lim_release(lim_t *lim, const char *user, const char *queue_id)
{
    if (!lim || !lim->bus)
        return; /* shutting down: the reservation ages out of the window */
    Postern__SendRelease m = POSTERN__SEND_RELEASE__INIT;
    m.user = (char *)user;
    m.queue_id = (char *)queue_id;
    bus_publish_msg(lim->bus, BUS_SUBJECT_LIMITER_RELEASE, &m.base);
}

int lim_rcpt_failure(lim_t *lim, Postern__Service service, const char *client,
                     const char *recipient, lim_cb cb, void *arg)
{
    Postern__RcptFailure m = POSTERN__RCPT_FAILURE__INIT;
    m.service = service;
    m.client_addr = (char *)client;
    m.recipient = (char *)recipient;
    return lim_request(lim, BUS_SUBJECT_LIMITER_RCPT, &m.base, cb, arg);
}

/* ---- the local copy of blocks ------------------------------------------------------ */

static void block_remove(lim_t *lim, const net_cidr_t *net)
{
    for (size_t i = 0; i < lim->nblocks; i++)
        if (lim->blocks[i].net.prefix == net->prefix &&
            memcmp(&lim->blocks[i].net.addr, &net->addr, sizeof net->addr) == 0) {
            lim->blocks[i] = lim->blocks[--lim->nblocks];
            return;
        }
}

static void block_add(lim_t *lim, const char *network, int64_t until_ms, const char *reason)
{
    net_cidr_t net;
    if (!network || net_cidr_parse(network, &net) < 0)
        return;
    block_remove(lim, &net);
    lim_block_t *nb = realloc(lim->blocks, (lim->nblocks + 1) * sizeof *nb);
    if (!nb)
        return;
    lim->blocks = nb;
    nb[lim->nblocks].net = net;
    nb[lim->nblocks].until_ms = until_ms;
    snprintf(nb[lim->nblocks].reason, sizeof nb[lim->nblocks].reason, "%s",
             reason ? reason : "");
    lim->nblocks++;
}

static void block_changed_cb(void *arg, ev_block_change_t change, const ev_block_t *b)
{
    lim_t *lim = arg;
    if (change == EV_BLOCK_ADDED) {
        block_add(lim, b->network, b->until_ms, b->reason);
        log_info("block added", "network=%s until_ms=%lld", b->network, (long long)b->until_ms);
    } else {
        net_cidr_t net;
        if (net_cidr_parse(b->network, &net) == 0)
            block_remove(lim, &net);
        log_info("block removed", "network=%s", b->network);
    }
}

static void sync_reply_cb(void *arg, const void *data, size_t len)
{
    lim_t *lim = arg;
    /* lim_destroy() clears bus; no answer keeps the copy until the next sync. */
    if (!lim->bus || !data)
        return;
    Postern__BlockList *l = postern__block_list__unpack(NULL, len, data);
    if (!l) {
        log_warn("bad block list dropped", "bytes=%zu", len);
        return;
    }
    lim->nblocks = 0;
    for (size_t i = 0; i < l->n_blocks; i++)
        if (l->blocks[i])
            block_add(lim, l->blocks[i]->network, l->blocks[i]->until_ms,
                      l->blocks[i]->reason);
    free(lim->exempt);
    lim->exempt = calloc(l->n_exempt + 1, sizeof *lim->exempt);
    lim->nexempt = 0;
    for (size_t i = 0; lim->exempt && i < l->n_exempt; i++)
        if (net_cidr_parse(l->exempt[i], &lim->exempt[lim->nexempt]) == 0)
            lim->nexempt++;
    metrics_set(lim->metrics, "postern_blocks", "Active blocks in the local copy", NULL,
                (double)lim->nblocks);
    if (!lim->synced)
        log_info("blocks synchronised", "blocks=%zu exempt=%zu", lim->nblocks, lim->nexempt);
    lim->synced = true;
    postern__block_list__free_unpacked(l, NULL);
}

static void sync_timer_cb(uv_timer_t *t)
{
    lim_t *lim = t->data;
    Postern__BlockListRequest m = POSTERN__BLOCK_LIST_REQUEST__INIT;
    uint8_t buf[16];
    size_t len = protobuf_c_message_pack(&m.base, buf);
    bus_request(lim->bus, BUS_SUBJECT_LIMITER_BLOCKS, buf, len, 2000, sync_reply_cb, lim);
}

lim_t *lim_create(uv_loop_t *loop, bus_t *bus, config_t *cfg, metrics_t *metrics)
{
    lim_t *lim = calloc(1, sizeof *lim);
    if (!lim)
        return NULL;
    lim->bus = bus;
    lim->metrics = metrics;
    lim->cfg = cfg;
    uv_timer_init(loop, &lim->sync_timer);
    lim->sync_timer.data = lim;
    ev_subscribe_block_changed(bus, block_changed_cb, lim);
    uv_timer_start(&lim->sync_timer, sync_timer_cb, 0, LIM_SYNC_MS);
    return lim;
}

static void lim_close_cb(uv_handle_t *h)
{
    lim_t *lim = h->data;
    free(lim->blocks);
    free(lim->exempt);
    free(lim);
}

void lim_destroy(lim_t **lp)
{
    lim_t *lim = *lp;
    if (!lim)
        return;
    *lp = NULL;
    lim->bus = NULL;
    uv_close((uv_handle_t *)&lim->sync_timer, lim_close_cb);
}

bool lim_blocked(const lim_t *lim, const char *client, char *reason, size_t reason_len,
                 int64_t *until_ms_r)
{
    net_addr_t a;
    if (!lim || net_addr_parse(client, &a) < 0)
        return false;
    for (size_t i = 0; i < lim->nexempt; i++)
        if (net_cidr_contains(&lim->exempt[i], &a))
            return false;
    int64_t now = now_ms();
    for (size_t i = 0; i < lim->nblocks; i++) {
        const lim_block_t *b = &lim->blocks[i];
        if (b->until_ms > now && net_cidr_contains(&b->net, &a)) {
            if (reason)
                snprintf(reason, reason_len, "%s", b->reason);
            if (until_ms_r)
                *until_ms_r = b->until_ms;
            return true;
        }
    }
    return false;
}
