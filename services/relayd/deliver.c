/* relayd: destinations (relayd.h). A destination is a next hop and a STARTTLS policy: the
 * MX hosts of a domain, or the host a transport names. It has a queue of jobs and up to
 * relay.destination_concurrency SMTP sessions; a session takes the next job when it has
 * finished one, so one connection carries several messages to the same place, and closes
 * when the queue is empty.
 *
 * Addresses are tried in the order RFC 5321 section 5.1 gives (lib/net/dns.h: MX preference,
 * randomised among equals, each host's addresses); a session that cannot be set up with one
 * address goes on with the next. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "base/log.h"
#include "base/net.h"
#include "relayd.h"

#define DEST_DNS_TTL_MS 60000 /* a resolved destination is looked up again after this */
#define CONN_IDLE_MS 2000     /* a session with nothing to send waits this long for more */
#define DEST_ADDRS_MAX 32

typedef struct dconn dconn_t;

typedef struct dest_addr {
    char name[256];                /* the host's name (MX target or transport host) */
    struct sockaddr_storage addr;
} dest_addr_t;

typedef enum dest_state { DEST_NEW, DEST_RESOLVING, DEST_RESOLVED } dest_state_t;

struct dest {
    relayd_t *rd;
    char key[320];          /* "may [192.0.2.1]:25" or "verify example.com" */
    char domain[256];       /* the first recipient domain that used it, for messages */
    char host[256];         /* what is looked up: the domain (MX) or the transport host */
    int port;
    bool transport;         /* named by a transport: private addresses allowed */
    route_tls_t tls;
    dest_state_t state;
    bool gone;              /* deliver_destroy came during a lookup: the lookup frees it */
    int64_t resolved_ms;
    bool resolved_private;  /* relay.allow_private when the addresses were chosen */
    dest_addr_t addrs[DEST_ADDRS_MAX];
    size_t naddrs;
    job_t *head, *tail;     /* waiting jobs */
    size_t njobs;
    dconn_t *conns;
    size_t nconns;
    dest_t *prev, *next;
};

struct dconn {
    dest_t *d;
    smtpc_t *c;
    size_t addr_index;      /* the address being tried or used */
    bool ready;             /* the session takes messages */
    bool idle;              /* ready, waiting for a job (idle_timer running) */
    uv_timer_t idle_timer;  /* freed in its close callback, with the dconn */
    job_t *job;             /* the job being sent */
    char last_error[600];   /* why the last address failed */
    dconn_t *next;
};

static void dest_kick(dest_t *d);
static void conn_open_next(dconn_t *dc);

/* The addresses were chosen under another relay.allow_private: a session to one of them
 * takes no more jobs, and the destination is looked up again once none is left. */
static bool dest_stale(const dest_t *d)
{
    return d->state == DEST_RESOLVED && !d->transport &&
           d->resolved_private != d->rd->set.allow_private;
}

static int64_t now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void count_reply(relayd_t *rd, int code, bool local)
{
    if (!rd->svc->metrics)
        return;
    char labels[32];
    snprintf(labels, sizeof labels, "class=\"%s\"",
             local ? "local" : code >= 500 ? "5xx" : code >= 400 ? "4xx" : "2xx");
    metrics_add(rd->svc->metrics, "postern_relay_replies_total",
                "Replies that decided a recipient, by class (local: no remote reply)", labels, 1);
}

/* One log line per recipient attempt (the remote host, the reply, the TLS version). */
static void log_attempt(const rmsg_t *m, size_t i, const char *tls)
{
    const rcpt_t *r = &m->rcpts[i];
    char reply[sizeof r->reply];
    snprintf(reply, sizeof reply, "%s", r->reply);
    for (char *c = reply; *c; c++)
        if (*c == '"' || *c == '\r' || *c == '\n')
            *c = '\'';
    log_msg(r->state == RCPT_DELIVERED ? LOG_INFO : LOG_WARN,
            r->state == RCPT_DELIVERED ? "delivered"
            : r->state == RCPT_BOUNCED ? "bounced"
                                       : "deferred",
            "queue_id=%s rcpt=%s remote=%s tls=%s attempt=%d reply=\"%s\"", m->queue_id,
            r->address, *r->remote ? r->remote : "none", tls && *tls ? tls : "none", m->attempts,
            reply);
}

/* Decides every recipient of job with one local or remote reply and reports the job. */
static void job_fail(relayd_t *rd, job_t *job, int code, const char *status, const char *text,
                     const char *remote)
{
    rmsg_t *m = job->msg;
    rcpt_set(m, job->first, job->count, code, status, text, remote);
    for (size_t i = job->first; i < job->first + job->count; i++) {
        count_reply(rd, code, true);
        log_attempt(m, i, NULL);
    }
    free(job);
    queue_job_done(m);
}

static job_t *dest_pop(dest_t *d)
{
    job_t *j = d->head;
    if (!j)
        return NULL;
    d->head = j->next;
    if (!d->head)
        d->tail = NULL;
    j->next = NULL;
    d->njobs--;
    return j;
}

static void dest_push(dest_t *d, job_t *j, bool front)
{
    if (front) {
        j->next = d->head;
        d->head = j;
        if (!d->tail)
            d->tail = j;
    } else {
        j->next = NULL;
        if (d->tail)
            d->tail->next = j;
        else
            d->head = j;
        d->tail = j;
    }
    d->njobs++;
}

/* Fails every waiting job of d with a local reply (code 4xx: deferred, 5xx: bounced). */
static void dest_fail_all(dest_t *d, int code, const char *status, const char *text,
                          const char *remote)
{
    job_t *j;
    while ((j = dest_pop(d)))
        job_fail(d->rd, j, code, status, text, remote);
}

static void dest_free_if_idle(dest_t *d)
{
    if (d->njobs || d->nconns || d->state == DEST_RESOLVING)
        return;
    relayd_t *rd = d->rd;
    if (d->prev)
        d->prev->next = d->next;
    else
        rd->dests = d->next;
    if (d->next)
        d->next->prev = d->prev;
    free(d);
}

/* ---- sessions -------------------------------------------------------------------------- */

static void dconn_close_cb(uv_handle_t *h)
{
    free(h->data);
}

/* Ends the session (QUIT when it is idle) and frees dc from the loop. */
static void conn_free(dconn_t *dc)
{
    smtpc_close(&dc->c);
    free(dc->job);
    uv_close((uv_handle_t *)&dc->idle_timer, dconn_close_cb);
}

static void conn_remove(dconn_t *dc)
{
    dest_t *d = dc->d;
    for (dconn_t **p = &d->conns; *p; p = &(*p)->next)
        if (*p == dc) {
            *p = dc->next;
            break;
        }
    d->nconns--;
    dc->job = NULL; /* reported already, or handed back by the caller */
    conn_free(dc);
}

static void idle_cb(uv_timer_t *t)
{
    dconn_t *dc = t->data;
    dest_t *d = dc->d;
    conn_remove(dc);
    dest_free_if_idle(d);
}

static void conn_next_job(dconn_t *dc);

static void sent_cb(void *arg, smtpc_t *c, const smtpc_reply_t *results, size_t n)
{
    dconn_t *dc = arg;
    dest_t *d = dc->d;
    relayd_t *rd = d->rd;
    job_t *job = dc->job;
    dc->job = NULL;
    rmsg_t *m = job->msg;
    const char *remote = smtpc_peer(c);
    const char *tls = smtpc_tls_version(c);
    for (size_t i = 0; i < job->count && i < n; i++) {
        const smtpc_reply_t *r = &results[i];
        rcpt_set(m, job->first + i, 1, r->code, r->status, r->text, remote);
        count_reply(rd, r->code, r->local);
        log_attempt(m, job->first + i, tls);
    }
    free(job);
    queue_job_done(m);
    /* A transaction cut short (timeout, connection lost) ends the session. */
    if (!smtpc_idle(c)) {
        conn_remove(dc);
        dest_kick(d);
        dest_free_if_idle(d);
        return;
    }
    conn_next_job(dc);
}

/* The session is ready: the next waiting job; when none is left, it waits CONN_IDLE_MS
 * for one (messages come in batches) before QUIT. */
static void conn_next_job(dconn_t *dc)
{
    dest_t *d = dc->d;
    relayd_t *rd = d->rd;
    if (dest_stale(d)) {
        conn_remove(dc);
        dest_kick(d);
        dest_free_if_idle(d);
        return;
    }
    job_t *job = rd->stopping ? NULL : dest_pop(d);
    if (!job) {
        if (rd->stopping) {
            conn_remove(dc);
            dest_free_if_idle(d);
            return;
        }
        dc->idle = true;
        uv_timer_start(&dc->idle_timer, idle_cb, CONN_IDLE_MS, 0);
        return;
    }
    dc->idle = false;
    uv_timer_stop(&dc->idle_timer);
    rmsg_t *m = job->msg;
    const char *rcpts[job->count];
    for (size_t i = 0; i < job->count; i++)
        rcpts[i] = m->rcpts[job->first + i].address;
    smtpc_msg_t msg = {
        .sender = m->sender,
        .rcpts = rcpts,
        .nrcpts = job->count,
        .data = m->raw,
        .len = m->raw_len,
        .body = m->eightbit ? SMTPC_BODY_8BIT : SMTPC_BODY_7BIT,
    };
    dc->job = job;
    if (smtpc_send(dc->c, &msg, sent_cb, dc) < 0) {
        /* The session went away between two messages: the job waits for another. */
        dc->job = NULL;
        dest_push(d, job, true);
        conn_remove(dc);
        dest_kick(d);
    }
}

static void ready_cb(void *arg, smtpc_t *c, const smtpc_reply_t *failure)
{
    dconn_t *dc = arg;
    dest_t *d = dc->d;
    if (!failure) {
        dc->ready = true;
        d->rd->sessions++;
        if (d->rd->svc->metrics)
            metrics_add(d->rd->svc->metrics, "postern_relay_sessions_total",
                        "SMTP sessions set up with other hosts", "", 1);
        log_debug("session ready", "dest=\"%s\" remote=%s tls=%s", d->key, smtpc_peer(c),
                  smtpc_tls_version(c));
        conn_next_job(dc);
        return;
    }
    /* RFC 5321 section 5.1: a host that cannot be reached, or refuses the session, and
     * the next one is tried. */
    if (failure->local)
        snprintf(dc->last_error, sizeof dc->last_error, "%s", failure->text);
    else
        snprintf(dc->last_error, sizeof dc->last_error, "%s said: %d %s%s%s", smtpc_peer(c),
                 failure->code, failure->status, *failure->status ? " " : "", failure->text);
    log_warn("session failed", "dest=\"%s\" remote=%s error=\"%s\"", d->key, smtpc_peer(c),
             dc->last_error);
    smtpc_close(&dc->c);
    dc->addr_index++;
    conn_open_next(dc);
}

/* Opens a session with the address at dc->addr_index, or gives up when none is left. */
static void conn_open_next(dconn_t *dc)
{
    dest_t *d = dc->d;
    relayd_t *rd = d->rd;
    while (dc->addr_index < d->naddrs) {
        dest_addr_t *a = &d->addrs[dc->addr_index];
        smtpc_opts_t opts = {
            .helo_name = rd->svc->hostname,
            .peer_name = a->name,
            .tls_policy = d->tls == ROUTE_TLS_VERIFY    ? SMTPC_TLS_VERIFY
                          : d->tls == ROUTE_TLS_ENCRYPT ? SMTPC_TLS_ENCRYPT
                                                        : SMTPC_TLS_MAY,
            .tls = rd->tls,
            .live = &rd->live_sessions,
        };
        dc->c = smtpc_open(rd->svc->loop, (const struct sockaddr *)&a->addr, &opts, ready_cb, dc);
        if (dc->c)
            return;
        dc->addr_index++;
    }
    /* Every address failed. Jobs wait while another session of the destination lives;
     * otherwise they are deferred with the last reason. */
    char why[700];
    snprintf(why, sizeof why, "%s", *dc->last_error ? dc->last_error : "no address to try");
    conn_remove(dc);
    if (d->nconns == 0) {
        d->state = DEST_NEW; /* looked up again next time */
        dest_fail_all(d, 451, "4.4.1", why, "");
    }
    dest_free_if_idle(d);
}

static void conn_start(dest_t *d)
{
    dconn_t *dc = calloc(1, sizeof *dc);
    if (!dc)
        return;
    uv_timer_init(d->rd->svc->loop, &dc->idle_timer);
    dc->idle_timer.data = dc;
    dc->d = d;
    dc->next = d->conns;
    d->conns = dc;
    d->nconns++;
    conn_open_next(dc);
}

/* ---- resolution ------------------------------------------------------------------------ */

static void resolved_cb(void *arg, const dns_mx_result_t *r)
{
    dest_t *d = arg;
    if (d->gone) {
        free(d);
        return;
    }
    relayd_t *rd = d->rd;
    d->state = DEST_NEW;
    if (r->status == DNS_CANCELLED) {
        dest_fail_all(d, 451, "4.4.3", "DNS lookup cancelled", "");
        dest_free_if_idle(d);
        return;
    }
    char text[600];
    if (r->status == DNS_NOT_FOUND) {
        snprintf(text, sizeof text, "host or domain name not found: %s%s%s", d->host,
                 *r->error ? ": " : "", r->error);
        /* A transport's host that does not exist is the administrator's mistake, not the
         * sender's: keep the mail. */
        if (d->transport)
            dest_fail_all(d, 451, "4.4.3", text, "");
        else
            dest_fail_all(d, 550, "5.1.2", text, "");
        dest_free_if_idle(d);
        return;
    }
    if (r->status == DNS_NULL_MX) {
        /* RFC 7505 section 3: 556 5.1.10 and no retry. */
        snprintf(text, sizeof text, "recipient domain %s does not accept mail (null MX)",
                 d->host);
        dest_fail_all(d, 556, "5.1.10", text, "");
        dest_free_if_idle(d);
        return;
    }
    if (r->status != DNS_OK) {
        snprintf(text, sizeof text, "DNS lookup for %s failed: %s", d->host,
                 *r->error ? r->error : "temporary failure");
        dest_fail_all(d, 451, "4.4.3", text, "");
        dest_free_if_idle(d);
        return;
    }
    d->naddrs = 0;
    size_t skipped = 0;
    for (size_t h = 0; h < r->nhosts; h++) {
        const dns_host_t *host = &r->hosts[h];
        for (size_t i = 0; i < host->naddrs && d->naddrs < DEST_ADDRS_MAX; i++) {
            const struct sockaddr *sa = (const struct sockaddr *)&host->addrs[i];
            /* Never to loopback, private or link-local addresses from public DNS unless
             * a transport names them (or the administrator allowed it). */
            if (!d->transport && !rd->set.allow_private && net_sockaddr_special(sa)) {
                skipped++;
                continue;
            }
            dest_addr_t *a = &d->addrs[d->naddrs++];
            snprintf(a->name, sizeof a->name, "%s", d->transport ? d->host : host->name);
            memcpy(&a->addr, sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                           : sizeof(struct sockaddr_in));
            if (sa->sa_family == AF_INET6)
                ((struct sockaddr_in6 *)&a->addr)->sin6_port = htons((uint16_t)d->port);
            else
                ((struct sockaddr_in *)&a->addr)->sin_port = htons((uint16_t)d->port);
        }
    }
    if (d->naddrs == 0) {
        snprintf(text, sizeof text,
                 skipped ? "the mail hosts of %s have only loopback, private or link-local "
                           "addresses"
                         : "no address for the mail hosts of %s",
                 d->host);
        dest_fail_all(d, 451, "4.4.4", text, "");
        dest_free_if_idle(d);
        return;
    }
    d->state = DEST_RESOLVED;
    d->resolved_ms = now_ms();
    d->resolved_private = rd->set.allow_private;
    dest_kick(d);
}

/* Starts sessions for waiting jobs, up to the destination's limit; looks the destination
 * up first when it is new or its answer is old. */
static void dest_kick(dest_t *d)
{
    relayd_t *rd = d->rd;
    if (d->state == DEST_RESOLVING || rd->stopping)
        return;
    if (dest_stale(d)) {
        for (dconn_t *dc = d->conns, *next; dc; dc = next) {
            next = dc->next;
            if (dc->idle)
                conn_remove(dc);
        }
        if (d->nconns > 0)
            return; /* the last busy session calls again when its job is done */
        d->state = DEST_NEW;
    }
    if (d->state == DEST_RESOLVED && d->nconns == 0 && now_ms() - d->resolved_ms > DEST_DNS_TTL_MS)
        d->state = DEST_NEW;
    if (d->state == DEST_NEW) {
        if (!d->njobs)
            return;
        d->state = DEST_RESOLVING;
        int rc = d->transport ? dns_resolve_host(rd->dns, d->host, resolved_cb, d)
                              : dns_resolve_mx(rd->dns, d->host, resolved_cb, d);
        if (rc < 0) {
            d->state = DEST_NEW;
            dest_fail_all(d, 451, "4.4.3", "local error: cannot start a DNS lookup", "");
        }
        return;
    }
    /* Idle sessions take jobs first; new sessions for the rest. */
    for (dconn_t *dc = d->conns, *next; dc && d->njobs; dc = next) {
        next = dc->next;
        if (dc->idle)
            conn_next_job(dc);
    }
    size_t connecting = 0;
    for (dconn_t *dc = d->conns; dc; dc = dc->next)
        connecting += !dc->ready;
    while (d->njobs > connecting && d->nconns < (size_t)rd->set.destination_concurrency) {
        conn_start(d);
        connecting++;
    }
}

void deliver_job(relayd_t *rd, job_t *job)
{
    rmsg_t *m = job->msg;
    const char *domain = m->rcpts[job->first].domain;
    char hop[300], host[256];
    int port;
    bool transport = route_next_hop(rd, domain, hop, sizeof hop, host, sizeof host, &port);
    route_tls_t tls = route_tls_policy(rd, domain);
    char key[320];
    snprintf(key, sizeof key, "%s %s", route_tls_name(tls), hop);
    dest_t *d = rd->dests;
    while (d && strcmp(d->key, key) != 0)
        d = d->next;
    if (!d) {
        d = calloc(1, sizeof *d);
        if (!d) {
            job_fail(rd, job, 451, "4.3.0", "local error: out of memory", "");
            return;
        }
        d->rd = rd;
        snprintf(d->key, sizeof d->key, "%s", key);
        snprintf(d->domain, sizeof d->domain, "%s", domain);
        snprintf(d->host, sizeof d->host, "%s", host);
        d->port = port;
        d->transport = transport;
        d->tls = tls;
        d->next = rd->dests;
        if (rd->dests)
            rd->dests->prev = d;
        rd->dests = d;
    }
    dest_push(d, job, false);
    /* A ready session between two jobs takes it in conn_next_job; otherwise start more. */
    dest_kick(d);
}

size_t deliver_busy(const relayd_t *rd)
{
    size_t n = 0;
    for (const dest_t *d = rd->dests; d; d = d->next)
        n += d->nconns;
    return n;
}

void deliver_destroy(relayd_t *rd)
{
    while (rd->dests) {
        dest_t *d = rd->dests;
        rd->dests = d->next;
        while (d->conns) {
            dconn_t *dc = d->conns;
            d->conns = dc->next;
            conn_free(dc);
        }
        job_t *j;
        while ((j = dest_pop(d)))
            free(j);
        if (d->state == DEST_RESOLVING)
            d->gone = true; /* its lookup's callback frees it */
        else
            free(d);
    }
}
