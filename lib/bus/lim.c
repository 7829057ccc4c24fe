#include "bus/lim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/blockset.h"
#include "base/log.h"
#include "base/net.h"
#include "bus/events.h"

#define LIM_SYNC_MS 30000

/* A resync stops after this many pages (a limiter whose pages never end), and after this
 * many broadcasts received while it runs (they are also in the live copy). */
#define LIM_PAGES_MAX 100000
#define LIM_JOURNAL_MAX 200000
#define LIM_PAGE_TIMEOUT_MS 2000

/* A broadcast received during a resync. */
typedef struct lim_change {
    bool added; /* else lifted or expired */
    int64_t until_ms;
    char *reason; /* after network, in the same allocation */
    char network[];
} lim_change_t;

/* A resync in progress: the copy made from the pages so far, and the broadcasts received
 * since its first request, which go on top once the last page has come (proto/postern.proto,
 * BlockListRequest, says why that is the list of the end). */
typedef struct lim_sync {
    blockset_t *next;
    net_cidr_t *exempt; /* from the first page */
    size_t nexempt;
    lim_change_t **journal;
    size_t njournal, cap;
    char after[64]; /* the network the last page ended with */
    unsigned pages;
    bool failed;
    uint64_t started_ns;
} lim_sync_t;

struct lim {
    bus_t *bus;
    metrics_t *metrics;
    config_t *cfg;
    uv_timer_t sync_timer;
    blockset_t *blocks; /* the live copy */
    net_cidr_t *exempt;
    size_t nexempt;
    lim_sync_t *sync; /* NULL: no resync running */
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

static void blocks_metric(lim_t *lim)
{
    metrics_set(lim->metrics, "postern_blocks", "Active blocks in the local copy", NULL,
                (double)blockset_count(lim->blocks));
}

static void sync_free(lim_sync_t **sp)
{
    lim_sync_t *s = *sp;
    if (!s)
        return;
    *sp = NULL;
    blockset_destroy(&s->next);
    free(s->exempt);
    for (size_t i = 0; i < s->njournal; i++)
        free(s->journal[i]);
    free(s->journal);
    free(s);
}

/* Keeps a broadcast received during a resync, to be applied on top of its pages. False when
 * it cannot (memory, or too many): the resync is then given up. */
static bool journal_add(lim_sync_t *s, bool added, const char *network, int64_t until_ms,
                        const char *reason)
{
    if (s->njournal == LIM_JOURNAL_MAX)
        return false;
    if (s->njournal == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        lim_change_t **grown = realloc(s->journal, cap * sizeof *grown);
        if (!grown)
            return false;
        s->journal = grown;
        s->cap = cap;
    }
    if (!reason)
        reason = "";
    size_t nlen = strlen(network), rlen = strnlen(reason, BLOCKSET_REASON_MAX);
    lim_change_t *c = malloc(sizeof *c + nlen + 1 + rlen + 1);
    if (!c)
        return false;
    c->added = added;
    c->until_ms = until_ms;
    c->reason = c->network + nlen + 1;
    memcpy(c->network, network, nlen + 1);
    memcpy(c->reason, reason, rlen);
    c->reason[rlen] = '\0';
    s->journal[s->njournal++] = c;
    return true;
}

static void block_changed_cb(void *arg, ev_block_change_t change, const ev_block_t *b)
{
    lim_t *lim = arg;
    bool added = change == EV_BLOCK_ADDED;
    if (added) {
        if (blockset_put(lim->blocks, b->network, b->until_ms, b->reason) < 0)
            log_warn("block not kept", "network=%s", b->network);
        log_info("block added", "network=%s until_ms=%lld", b->network, (long long)b->until_ms);
    } else {
        blockset_remove(lim->blocks, b->network);
        log_info("block removed", "network=%s", b->network);
    }
    blocks_metric(lim);
    if (lim->sync && !journal_add(lim->sync, added, b->network, b->until_ms, b->reason)) {
        log_warn("block resync given up: too many changes while it ran",
                 "changes=%zu", lim->sync->njournal);
        sync_free(&lim->sync);
    }
}

static void sync_page_cb(void *arg, const void *data, size_t len);

/* Asks for the page after lim->sync->after. */
static int sync_ask(lim_t *lim)
{
    Postern__BlockListRequest m = POSTERN__BLOCK_LIST_REQUEST__INIT;
    m.paged = true;
    m.after = lim->sync->after;
    uint8_t buf[sizeof lim->sync->after + 16];
    size_t len = protobuf_c_message_pack(&m.base, buf);
    return bus_request(lim->bus, BUS_SUBJECT_LIMITER_BLOCKS, buf, len, LIM_PAGE_TIMEOUT_MS,
                       sync_page_cb, lim);
}

/* The last page has come: the broadcasts received since the first request go on top, in
 * the order they came, and the new copy replaces the old. */
static void sync_finish(lim_t *lim)
{
    lim_sync_t *s = lim->sync;
    for (size_t i = 0; i < s->njournal; i++) {
        const lim_change_t *c = s->journal[i];
        if (c->added)
            blockset_put(s->next, c->network, c->until_ms, c->reason);
        else
            blockset_remove(s->next, c->network);
    }
    blockset_destroy(&lim->blocks);
    lim->blocks = s->next;
    s->next = NULL;
    free(lim->exempt);
    lim->exempt = s->exempt;
    lim->nexempt = s->nexempt;
    s->exempt = NULL;
    double seconds = (double)(uv_hrtime() - s->started_ns) / 1e9;
    blocks_metric(lim);
    metrics_observe(lim->metrics, "postern_blocks_sync_seconds",
                    "Time a full resync of the local copy of blocks took", NULL, seconds);
    log_msg(lim->synced ? LOG_DEBUG : LOG_INFO, "blocks synchronised",
            "blocks=%zu exempt=%zu pages=%u changes_meanwhile=%zu ms=%.0f",
            blockset_count(lim->blocks), lim->nexempt, s->pages, s->njournal, seconds * 1000);
    lim->synced = true;
    sync_free(&lim->sync);
}

static void sync_page_cb(void *arg, const void *data, size_t len)
{
    lim_t *lim = arg;
    lim_sync_t *s = lim->sync;
    /* lim_destroy() clears bus; a resync given up has no sync. No answer (or a bad one)
     * keeps the copy until the next resync. */
    if (!lim->bus || !s)
        return;
    if (!data) {
        log_warn("block list not answered; the local copy is kept", "pages=%u", s->pages);
        sync_free(&lim->sync);
        return;
    }
    Postern__BlockList *l = postern__block_list__unpack(NULL, len, data);
    if (!l) {
        log_warn("bad block list dropped", "bytes=%zu", len);
        sync_free(&lim->sync);
        return;
    }
    for (size_t i = 0; i < l->n_blocks; i++) /* a network that does not parse is skipped */
        if (l->blocks[i])
            blockset_put(s->next, l->blocks[i]->network, l->blocks[i]->until_ms,
                         l->blocks[i]->reason);
    if (s->pages++ == 0) {
        s->exempt = calloc(l->n_exempt + 1, sizeof *s->exempt);
        for (size_t i = 0; s->exempt && i < l->n_exempt; i++)
            if (l->exempt[i] && net_cidr_parse(l->exempt[i], &s->exempt[s->nexempt]) == 0)
                s->nexempt++;
        if (!s->exempt)
            s->failed = true;
    }
    const char *next = l->more && l->next_after ? l->next_after : "";
    bool more = l->more, advances = strcmp(next, s->after) > 0 && strlen(next) < sizeof s->after;
    if (more && advances)
        snprintf(s->after, sizeof s->after, "%s", next);
    postern__block_list__free_unpacked(l, NULL);
    if (s->failed) {
        log_warn("block resync given up: out of memory", "pages=%u", s->pages);
        sync_free(&lim->sync);
    } else if (more && (!advances || s->pages >= LIM_PAGES_MAX)) {
        log_warn("block resync given up: the pages do not advance", "pages=%u", s->pages);
        sync_free(&lim->sync);
    } else if (more) {
        if (sync_ask(lim) < 0)
            sync_free(&lim->sync);
    } else {
        sync_finish(lim);
    }
}

void lim_resync(lim_t *lim)
{
    if (!lim || !lim->bus || lim->sync)
        return; /* shutting down, or one is running */
    lim->sync = calloc(1, sizeof *lim->sync);
    if (!lim->sync)
        return;
    lim->sync->next = blockset_create();
    lim->sync->started_ns = uv_hrtime();
    if (!lim->sync->next || sync_ask(lim) < 0)
        sync_free(&lim->sync);
}

static void sync_timer_cb(uv_timer_t *t)
{
    lim_resync(t->data);
}

/* Block changes broadcast while the bus was away never came: the copy is made again. */
static void reconnected_cb(void *arg)
{
    lim_resync(arg);
}

lim_t *lim_create(uv_loop_t *loop, bus_t *bus, config_t *cfg, metrics_t *metrics)
{
    lim_t *lim = calloc(1, sizeof *lim);
    if (!lim)
        return NULL;
    lim->blocks = blockset_create();
    if (!lim->blocks) {
        free(lim);
        return NULL;
    }
    lim->bus = bus;
    lim->metrics = metrics;
    lim->cfg = cfg;
    uv_timer_init(loop, &lim->sync_timer);
    lim->sync_timer.data = lim;
    ev_subscribe_block_changed(bus, block_changed_cb, lim);
    bus_on_reconnect(bus, reconnected_cb, lim);
    uv_timer_start(&lim->sync_timer, sync_timer_cb, 0, LIM_SYNC_MS);
    return lim;
}

static void lim_close_cb(uv_handle_t *h)
{
    lim_t *lim = h->data;
    sync_free(&lim->sync);
    blockset_destroy(&lim->blocks);
    free(lim->exempt);
    free(lim);
}

void lim_destroy(lim_t **lp)
{
    lim_t *lim = *lp;
    if (!lim)
        return;
    *lp = NULL;
    bus_off_reconnect(lim->bus, reconnected_cb, lim);
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
    return blockset_lookup(lim->blocks, &a, now_ms(), reason, reason_len, until_ms_r);
}
