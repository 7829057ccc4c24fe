/* A pool of non-blocking libpq connections on a libuv loop.
 *
 * Each connection is in one of five states: DOWN (waiting for its retry timer), RESOLVING
 * (looking up the host names off the loop), CONNECTING (PQconnectPoll driven by uv_poll),
 * IDLE, BUSY (one query in flight). One timer bounds RESOLVING and CONNECTING together.
 * Queries wait in a FIFO until a connection is IDLE. A query that cannot be answered
 * (the connection broke, nothing can be reached) goes to the fail list, which an idle
 * handle empties on the next loop iteration: callbacks never run inside db_query().
 *
 * A statement sent a second time (DB_SEEN_SLOTS remembers which) is prepared on the
 * connection that sends it, under a name of its own, and executed by name from then on:
 * PostgreSQL parses and plans it once per connection instead of on every call. The first
 * use on a connection costs one more round trip (the Parse), which is answered before the
 * query goes. At most DB_STMT_MAX statements are kept per connection; beyond that, and for
 * a statement PostgreSQL will not prepare, queries go unnamed as before. A prepared
 * statement whose plan became invalid (a table changed under it: SQLSTATE 0A000, or one
 * that is gone: 26000) is forgotten and its query sent again unnamed, once.
 *
 * libuv rules kept here: a uv_poll handle is stopped before libpq may close or replace
 * its socket (PQconnectPoll, PQfinish), it is freed only in its close callback, and a
 * fresh one is created whenever the socket changes.
 *
 * libpq would resolve a host name with a blocking getaddrinfo inside PQconnectStartParams,
 * so before every attempt the names in the conninfo's host list are resolved with
 * uv_getaddrinfo, one after the other, and libpq gets each address as hostaddr beside its
 * name as host (TLS verification and .pgpass still see the name). A name with several
 * addresses becomes several entries, tried in the resolver's order like libpq would; a name
 * that does not resolve is left out; when nothing is left the attempt fails like an
 * unreachable server. A host taken from PGHOST or a service file is still left to libpq.
 *
 * A batch (db_batch) is one queue entry holding several statements. An idle connection
 * sends them all at once in pipeline mode, followed by one Sync: PostgreSQL runs them as one
 * implicit transaction, committed at the Sync, so they cost one round trip and one commit.
 * Statements are prepared as above, the Parse going into the same pipeline ahead of the
 * first statement that uses it. The results come back in order, each followed by an end
 * (a NULL from PQgetResult), then the Sync's own result ends the batch. */
#include "store/db.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

#define DB_BACKOFF_MIN_MS 200
#define DB_BACKOFF_MAX_MS 5000
#define DB_CONNECT_TIMEOUT_MS 10000 /* libpq does not enforce connect_timeout when async */
#define DB_WAIT_MAX_MS 5000         /* longest a query waits for a first connection */
#define DB_ADDRS_PER_HOST 8         /* addresses of one host name handed to libpq */
#define DB_STMT_MAX 64              /* prepared statements kept per connection */
#define DB_SEEN_SLOTS 1024          /* statement texts remembered, by hash, per pool */

typedef struct db_req {
    struct db_req *next;
    char *sql;
    int nparams;
    char **values;
    char *block;        /* db_query_take(): the caller's block, freed with the request */
    size_t block_len;   /* values inside it are not copies, and are not freed one by one */
    int *lengths;
    int *formats;
    int result_format;  /* 0 text, 1 binary */
    uint64_t hash;      /* of sql */
    bool unnamed;       /* never as a prepared statement (it failed as one) */
    bool by_name;       /* sent as a prepared statement */
    bool borrowed;      /* a batch's statement: binary values are the caller's */
    bool parse_sent;    /* a batch's statement prepared in the same pipeline */
    char pname[24];     /* the name it is prepared under */
    void (*later)(void *arg); /* db_later(): no query, only a callback */
    db_cb cb;
    void *arg;
    uint64_t queued_at; /* uv_now() */
    /* db_batch(): the statements, their results so far, and where the reading is */
    struct db_req **members;
    int nmembers;
    PGresult **results;
    int entry;          /* the member whose results come now (nmembers: past them all) */
    bool entry_parse;   /* ... its Parse's result, not yet the statement's own */
    bool commit_failed; /* an error after the last statement: the commit's */
    db_batch_cb bcb;
} db_req_t;

typedef struct db_req_list {
    db_req_t *head, *tail;
} db_req_list_t;

typedef enum dbc_state {
    DBC_DOWN,
    DBC_RESOLVING,
    DBC_CONNECTING,
    DBC_IDLE,
    DBC_BUSY
} dbc_state_t;

/* One entry of the conninfo's host list. */
typedef struct db_host {
    char *name;  /* as written: a DNS name, an IP address, a socket directory, or "" */
    char *port;  /* its port when the conninfo has a port list, else NULL */
    bool lookup; /* a DNS name: resolved off the loop before each attempt */
} db_host_t;

/* The host, hostaddr and port lists for one attempt, built while the names resolve. */
typedef struct db_addrs {
    char *host, *hostaddr, *port;
    int n;
} db_addrs_t;

/* A statement prepared on one connection. */
typedef struct db_stmt {
    uint64_t hash;
    char *sql;
    char name[24];
} db_stmt_t;

typedef struct db_conn {
    db_t *db;
    int index;
    dbc_state_t state;
    PGconn *pg;
    uv_poll_t *poll; /* NULL, or a handle on fd; freed in its close callback */
    int fd;
    int poll_events;
    uv_timer_t timer; /* retry while DOWN, connect timeout while CONNECTING */
    unsigned backoff_ms;
    unsigned failures; /* consecutive failed attempts, to keep the log quiet */
    db_req_t *req;     /* in flight while BUSY */
    PGresult *result;  /* the query's result so far */
    uv_getaddrinfo_t *lookup; /* in flight while RESOLVING; freed in its callback */
    int next_host;            /* the db->hosts entry RESOLVING works on */
    db_addrs_t addrs;         /* what RESOLVING found so far */
    char lookup_error[192];   /* the last name that did not resolve, for the log */
    db_stmt_t stmts[DB_STMT_MAX];
    int nstmts;
    unsigned stmt_seq;  /* names are never reused on a connection */
    bool preparing;     /* the request's Parse is in flight, the request itself not yet */
} db_conn_t;

struct db {
    uv_loop_t *loop;
    char *conninfo;
    char target[256]; /* "host=... port=... db=..." for logs; never a password */
    db_host_t *hosts; /* the conninfo's host list, when one entry is a DNS name */
    int nhosts;
    int nconns;
    db_conn_t *conns;
    db_req_list_t queue;
    db_req_list_t fail;
    uv_idle_t fail_idle;   /* runs the fail list on the next loop iteration */
    uv_timer_t wait_timer; /* bounds the wait for a first connection */
    bool destroying;
    int open_handles; /* handles embedded here still to close before freeing */
    uint64_t seen[DB_SEEN_SLOTS]; /* hashes of statements sent, by hash modulo the size */
};

static void conn_start(db_conn_t *c);
static void conn_timer_cb(uv_timer_t *t);
static void conn_poll_cb(uv_poll_t *h, int status, int events);
static void conn_lookup_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res);
static void db_dispatch(db_t *db);
static void conn_stmts_clear(db_conn_t *c);

static void *db_xmalloc(size_t n)
{
    void *p = calloc(1, n ? n : 1);
    if (!p) {
        log_error("out of memory", "bytes=%zu", n);
        abort();
    }
    return p;
}

/* ---- requests ---------------------------------------------------------------------- */

/* True when the len bytes at p lie in the request's block (db_query_take). */
static bool in_block(const db_req_t *r, const char *p, size_t len)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)r->block;
    return r->block && p && a >= b && a - b < r->block_len && len <= r->block_len - (a - b);
}

static void req_free(db_req_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nmembers; i++) {
        req_free(r->members[i]);
        if (r->results)
            PQclear(r->results[i]);
    }
    free(r->members);
    free(r->results);
    if (r->values)
        for (int i = 0; i < r->nparams; i++)
            if (!in_block(r, r->values[i], 0) && !(r->borrowed && r->formats[i]))
                free(r->values[i]);
    free(r->values);
    free(r->block);
    free(r->lengths);
    free(r->formats);
    free(r->sql);
    free(r);
}

static void list_push(db_req_list_t *l, db_req_t *r)
{
    r->next = NULL;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
}

static db_req_t *list_pop(db_req_list_t *l)
{
    db_req_t *r = l->head;
    if (r) {
        l->head = r->next;
        if (!l->head)
            l->tail = NULL;
        r->next = NULL;
    }
    return r;
}

/* Appends all of src to dst, leaving src empty. */
static void list_splice(db_req_list_t *dst, db_req_list_t *src)
{
    if (!src->head)
        return;
    if (dst->tail)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    src->head = src->tail = NULL;
}

/* A request that gets no result: a query that could not be answered (cb with NULL), or a
 * db_later() callback. */
static void req_answer_none(db_req_t *r)
{
    if (r->later)
        r->later(r->arg);
    else if (r->members)
        r->bcb(r->arg, false, NULL, r->nmembers);
    else
        r->cb(r->arg, NULL);
}

static void db_fail_idle_cb(uv_idle_t *h)
{
    db_t *db = h->data;
    uv_idle_stop(h);
    /* Callbacks may queue more failures: those wait for the next iteration. */
    db_req_list_t list = db->fail;
    db->fail.head = db->fail.tail = NULL;
    db_req_t *r;
    while ((r = list_pop(&list))) {
        req_answer_none(r);
        req_free(r);
    }
}

/* Hands r to the fail list: its callback gets NULL on the next loop iteration (or at once
 * from db_destroy). */
static void db_fail_later(db_t *db, db_req_t *r)
{
    list_push(&db->fail, r);
    if (!db->destroying)
        uv_idle_start(&db->fail_idle, db_fail_idle_cb);
}

/* ---- logging helpers --------------------------------------------------------------- */

/* "host=H port=P db=D user=U" from the connection string, without the password. */
static void db_describe(const char *conninfo, char *out, size_t out_len)
{
    out[0] = '\0';
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (!opts) {
        PQfreemem(err);
        snprintf(out, out_len, "conninfo=invalid");
        return;
    }
    static const char *const keys[] = { "host", "hostaddr", "port", "dbname", "user" };
    static const char *const names[] = { "host", "hostaddr", "port", "db", "user" };
    size_t n = 0;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        for (PQconninfoOption *o = opts; o->keyword; o++) {
            if (strcmp(o->keyword, keys[k]) != 0 || !o->val || !*o->val)
                continue;
            char val[96];
            log_value(val, sizeof val, o->val);
            for (char *p = val; *p; p++)
                if (*p == ' ')
                    *p = '_';
            int m = snprintf(out + n, out_len - n, "%s%s=%s", n ? " " : "", names[k], val);
            if (m > 0 && (size_t)m < out_len - n)
                n += (size_t)m;
        }
    }
    PQconninfoFree(opts);
    if (n == 0)
        snprintf(out, out_len, "host=default");
}

static void conn_notice_cb(void *arg, const char *message)
{
    db_conn_t *c = arg;
    char text[512];
    log_value(text, sizeof text, message);
    log_debug("database notice", "%s conn=%d text=\"%s\"", c->db->target, c->index, text);
}

/* ---- host names ------------------------------------------------------------------- */

/* The number of items in a comma-separated list ("" is one empty item). */
static int csv_count(const char *s)
{
    int n = 1;
    for (; *s; s++)
        n += *s == ',';
    return n;
}

/* A copy of item i (< csv_count(s)) of a comma-separated list. */
static char *csv_item(const char *s, int i)
{
    for (; i > 0; i--)
        s = strchr(s, ',') + 1;
    size_t len = strcspn(s, ",");
    char *item = db_xmalloc(len + 1);
    memcpy(item, s, len);
    return item;
}

/* Appends item as the (n+1)th entry of the comma-separated list *list (NULL when n is 0). */
static void csv_add(char **list, int n, const char *item)
{
    size_t old = n > 0 ? strlen(*list) : 0;
    size_t len = strlen(item);
    char *s = realloc(n > 0 ? *list : NULL, old + len + 2);
    if (!s) {
        log_error("out of memory", "bytes=%zu", old + len + 2);
        abort();
    }
    if (n > 0)
        s[old++] = ',';
    memcpy(s + old, item, len + 1);
    *list = s;
}

static const char *conninfo_value(const PQconninfoOption *opts, const char *key)
{
    for (; opts->keyword; opts++)
        if (strcmp(opts->keyword, key) == 0)
            return opts->val && *opts->val ? opts->val : NULL;
    return NULL;
}

/* True for a host entry libpq would look up in the DNS: not empty, not a socket directory
 * ('/', or '@' for an abstract socket), not an IPv4 or IPv6 address. */
static bool host_is_name(const char *host)
{
    struct in_addr a;
    if (!*host || *host == '/' || *host == '@' || strchr(host, ':'))
        return false;
    return uv_inet_pton(AF_INET, host, &a) != 0;
}

static void db_hosts_free(db_t *db)
{
    for (int i = 0; i < db->nhosts; i++) {
        free(db->hosts[i].name);
        free(db->hosts[i].port);
    }
    free(db->hosts);
    db->hosts = NULL;
    db->nhosts = 0;
}

/* Keeps the conninfo's host list in db->hosts when an entry is a DNS name. Nothing is kept
 * (libpq looks nothing up, or reports the mistake itself) when hostaddr is given, when no
 * host is given, or when the port list does not match the host list. */
static void db_hosts_parse(db_t *db, const PQconninfoOption *opts)
{
    const char *host = conninfo_value(opts, "host");
    const char *port = conninfo_value(opts, "port");
    if (!host || conninfo_value(opts, "hostaddr"))
        return;
    int n = csv_count(host);
    int nports = port ? csv_count(port) : 0;
    if (nports > 1 && nports != n)
        return;
    bool any_name = false;
    db->hosts = db_xmalloc(sizeof *db->hosts * (size_t)n);
    db->nhosts = n;
    for (int i = 0; i < n; i++) {
        db_host_t *h = &db->hosts[i];
        h->name = csv_item(host, i);
        h->port = nports > 0 ? csv_item(port, nports > 1 ? i : 0) : NULL;
        h->lookup = host_is_name(h->name);
        any_name = any_name || h->lookup;
    }
    if (!any_name)
        db_hosts_free(db);
}

static void addrs_reset(db_addrs_t *a)
{
    free(a->host);
    free(a->hostaddr);
    free(a->port);
    memset(a, 0, sizeof *a);
}

/* Adds one entry for host h: hostaddr is its address, or "" to let libpq use the name. */
static void addrs_add(db_addrs_t *a, const db_host_t *h, const char *hostaddr)
{
    csv_add(&a->host, a->n, h->name);
    csv_add(&a->hostaddr, a->n, hostaddr);
    csv_add(&a->port, a->n, h->port ? h->port : "");
    a->n++;
}

/* Adds an entry per IPv4 or IPv6 address of res (up to DB_ADDRS_PER_HOST). Returns how many. */
static int addrs_add_resolved(db_addrs_t *a, const db_host_t *h, const struct addrinfo *res)
{
    int n = 0;
    for (; res && n < DB_ADDRS_PER_HOST; res = res->ai_next) {
        char ip[INET6_ADDRSTRLEN];
        int rc = UV_EAI_FAMILY;
        if (res->ai_family == AF_INET)
            rc = uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
        else if (res->ai_family == AF_INET6)
            rc = uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
        if (rc == 0) {
            addrs_add(a, h, ip);
            n++;
        }
    }
    return n;
}

/* ---- connection handles ------------------------------------------------------------ */

static void poll_free_cb(uv_handle_t *h)
{
    free(h);
}

/* Stops and closes the poll handle, if any. Call before libpq may close the socket. */
static void conn_poll_close(db_conn_t *c)
{
    if (!c->poll)
        return;
    uv_poll_stop(c->poll);
    uv_close((uv_handle_t *)c->poll, poll_free_cb);
    c->poll = NULL;
    c->fd = -1;
    c->poll_events = 0;
}

/* Watches fd for events, replacing the handle when the socket changed. Returns 0 or a
 * libuv error. */
static int conn_watch(db_conn_t *c, int fd, int events)
{
    if (c->poll && c->fd != fd)
        conn_poll_close(c);
    /* Already so: uv_poll_start would take the socket out of epoll and put it back (two
     * epoll_ctl calls for every query, when only the reply is waited for as before). */
    if (c->poll && c->poll_events == events && uv_is_active((uv_handle_t *)c->poll))
        return 0;
    if (!c->poll) {
        uv_poll_t *p = db_xmalloc(sizeof *p);
        int rc = uv_poll_init(c->db->loop, p, fd);
        if (rc < 0) {
            free(p);
            return rc;
        }
        p->data = c;
        c->poll = p;
        c->fd = fd;
        c->poll_events = 0;
    }
    int rc = uv_poll_start(c->poll, events, conn_poll_cb);
    if (rc == 0)
        c->poll_events = events;
    return rc;
}

/* Stops waiting for c's host name lookup. One already running on the threadpool cannot
 * be cancelled: its callback still comes, finds no connection and only frees. */
static void conn_lookup_orphan(db_conn_t *c)
{
    if (!c->lookup)
        return;
    c->lookup->data = NULL;
    uv_cancel((uv_req_t *)c->lookup);
    c->lookup = NULL;
}

/* The connection broke or could not be made: fail its query, close it, retry later.
 * Does not dispatch: the caller does, once it is done with the connection. */
static void conn_fail(db_conn_t *c, const char *why)
{
    db_t *db = c->db;
    bool was_up = c->state == DBC_IDLE || c->state == DBC_BUSY;
    char err[512];
    log_value(err, sizeof err, why ? why : (c->pg ? PQerrorMessage(c->pg) : "unknown error"));
    if (was_up)
        log_warn("database connection lost", "%s conn=%d error=\"%s\"", db->target, c->index, err);
    else if (c->failures == 0)
        log_warn("database connection failed", "%s conn=%d error=\"%s\"", db->target, c->index,
                 err);
    else
        log_debug("database connection failed", "%s conn=%d error=\"%s\"", db->target, c->index,
                  err);
    if (was_up)
        c->backoff_ms = DB_BACKOFF_MIN_MS;
    c->failures++;

    conn_lookup_orphan(c);
    addrs_reset(&c->addrs);
    conn_poll_close(c);
    if (c->req) {
        db_fail_later(db, c->req);
        c->req = NULL;
    }
    if (c->result) {
        PQclear(c->result);
        c->result = NULL;
    }
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    conn_stmts_clear(c);
    c->state = DBC_DOWN;
    uv_timer_stop(&c->timer);
    if (!db->destroying) {
        uv_timer_start(&c->timer, conn_timer_cb, c->backoff_ms, 0);
        c->backoff_ms *= 2;
        if (c->backoff_ms > DB_BACKOFF_MAX_MS)
            c->backoff_ms = DB_BACKOFF_MAX_MS;
    }
}

static void conn_up(db_conn_t *c)
{
    uv_timer_stop(&c->timer);
    if (PQsetnonblocking(c->pg, 1) != 0) {
        conn_fail(c, "cannot make the connection non-blocking");
        return;
    }
    int fd = PQsocket(c->pg);
    if (fd < 0 || conn_watch(c, fd, UV_READABLE) < 0) {
        conn_fail(c, "cannot watch the connection's socket");
        return;
    }
    c->state = DBC_IDLE;
    c->backoff_ms = DB_BACKOFF_MIN_MS;
    c->failures = 0;
    log_info("database connected", "%s conn=%d", c->db->target, c->index);
}

/* Acts on what PQconnectPoll asked for. */
static void conn_connect_step(db_conn_t *c, PostgresPollingStatusType st)
{
    int fd;
    switch (st) {
    case PGRES_POLLING_OK:
        conn_up(c);
        return;
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING:
        fd = PQsocket(c->pg);
        if (fd < 0 ||
            conn_watch(c, fd, st == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE) < 0) {
            conn_fail(c, "cannot watch the connection's socket");
            return;
        }
        return;
    default:
        conn_fail(c, NULL);
        return;
    }
}

/* Starts libpq's non-blocking connect. With addrs, their lists override the conninfo's
 * host, hostaddr and port, so that libpq has no name to look up. */
static void conn_connect(db_conn_t *c, const db_addrs_t *addrs)
{
    db_t *db = c->db;
    const char *keys[5] = { "dbname" };
    const char *vals[5] = { db->conninfo };
    int n = 1;
    if (addrs) {
        keys[n] = "host";
        vals[n++] = addrs->host;
        keys[n] = "hostaddr";
        vals[n++] = addrs->hostaddr;
        if (db->hosts[0].port) {
            keys[n] = "port";
            vals[n++] = addrs->port;
        }
    }
    keys[n] = vals[n] = NULL;
    c->state = DBC_CONNECTING;
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg) {
        conn_fail(c, "out of memory");
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_fail(c, NULL);
        return;
    }
    PQsetNoticeProcessor(c->pg, conn_notice_cb, c);
    /* libpq: behave as if PQconnectPoll had just returned PGRES_POLLING_WRITING. */
    conn_connect_step(c, PGRES_POLLING_WRITING);
}

static void conn_lookup_failed(db_conn_t *c, const db_host_t *h, int status)
{
    snprintf(c->lookup_error, sizeof c->lookup_error,
             "could not translate host name '%s' to address: %s", h->name, uv_strerror(status));
}

/* Every host has been looked at: connect to what was found, or fail like an unreachable
 * server when no name resolved. */
static void conn_resolved(db_conn_t *c)
{
    if (c->addrs.n == 0) {
        conn_fail(c, c->lookup_error);
        return;
    }
    conn_connect(c, &c->addrs);
    addrs_reset(&c->addrs);
}

/* Starts the lookup of h's name. Returns 0, or a libuv error (recorded for the log). */
static int conn_lookup_start(db_conn_t *c, const db_host_t *h)
{
    static const struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    uv_getaddrinfo_t *req = db_xmalloc(sizeof *req);
    req->data = c;
    int rc = uv_getaddrinfo(c->db->loop, req, conn_lookup_cb, h->name, NULL, &hints);
    if (rc < 0) {
        free(req);
        conn_lookup_failed(c, h, rc);
        return rc;
    }
    c->lookup = req;
    return 0;
}

/* Adds the hosts from c->next_host on until one needs a lookup, which it starts. */
static void conn_resolve_next(db_conn_t *c)
{
    db_t *db = c->db;
    for (; c->next_host < db->nhosts; c->next_host++) {
        const db_host_t *h = &db->hosts[c->next_host];
        if (!h->lookup)
            addrs_add(&c->addrs, h, "");
        else if (conn_lookup_start(c, h) == 0)
            return; /* conn_lookup_cb goes on */
    }
    conn_resolved(c);
}

static void conn_lookup_done(db_conn_t *c, int status, const struct addrinfo *res)
{
    const db_host_t *h = &c->db->hosts[c->next_host];
    if (status < 0) {
        conn_lookup_failed(c, h, status);
    } else {
        int n = addrs_add_resolved(&c->addrs, h, res);
        if (n == 0)
            conn_lookup_failed(c, h, UV_EAI_ADDRFAMILY);
        log_debug("database host resolved", "%s conn=%d name=%s addresses=%d", c->db->target,
                  c->index, h->name, n);
    }
    c->next_host++;
    conn_resolve_next(c);
}

static void conn_lookup_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    db_conn_t *c = req->data; /* NULL once orphaned: the pool may be gone */
    free(req);
    if (c) {
        c->lookup = NULL;
        conn_lookup_done(c, status, res);
        db_dispatch(c->db);
    }
    uv_freeaddrinfo(res);
}

/* One connection attempt: the timer bounds the lookups and the connect together. */
static void conn_start(db_conn_t *c)
{
    uv_timer_start(&c->timer, conn_timer_cb, DB_CONNECT_TIMEOUT_MS, 0);
    if (c->db->nhosts == 0) {
        conn_connect(c, NULL);
        return;
    }
    c->state = DBC_RESOLVING;
    c->next_host = 0;
    c->lookup_error[0] = '\0';
    conn_resolve_next(c);
}

/* ---- queries ----------------------------------------------------------------------- */

/* FNV-1a: statement texts are the services' own, not a client's. */
static uint64_t sql_hash(const char *sql)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

/* True when the pool sent this statement before (or another with the same slot); marks
 * it as sent. A statement used once, like a search built for one command, is not kept. */
static bool db_seen(db_t *db, uint64_t hash)
{
    uint64_t *slot = &db->seen[hash % DB_SEEN_SLOTS];
    if (*slot == hash)
        return true;
    *slot = hash;
    return false;
}

static db_stmt_t *conn_stmt_find(db_conn_t *c, uint64_t hash, const char *sql)
{
    for (int i = 0; i < c->nstmts; i++)
        if (c->stmts[i].hash == hash && strcmp(c->stmts[i].sql, sql) == 0)
            return &c->stmts[i];
    return NULL;
}

static void conn_stmt_forget(db_conn_t *c, db_stmt_t *st)
{
    free(st->sql);
    *st = c->stmts[--c->nstmts];
}

/* The connection is new or gone: what was prepared on it is gone too. */
static void conn_stmts_clear(db_conn_t *c)
{
    for (int i = 0; i < c->nstmts; i++)
        free(c->stmts[i].sql);
    c->nstmts = 0;
    c->preparing = false;
}

/* What libpq holds goes to the server; the reply is watched for. Returns false after
 * failing the connection. */
static bool conn_sent(db_conn_t *c)
{
    int f = PQflush(c->pg);
    if (f < 0) {
        conn_fail(c, NULL);
        return false;
    }
    if (conn_watch(c, c->fd, UV_READABLE | (f == 1 ? UV_WRITABLE : 0)) < 0) {
        conn_fail(c, "cannot watch the connection's socket");
        return false;
    }
    return true;
}

static bool batch_send(db_conn_t *c, db_req_t *b);

/* Sends r on the idle connection c: by name when it is prepared there, as a Parse first
 * when it is worth preparing, else unnamed. Returns false after failing the connection
 * (r with it). */
static bool conn_send(db_conn_t *c, db_req_t *r)
{
    if (r->members)
        return batch_send(c, r);
    c->req = r;
    c->state = DBC_BUSY;
    r->by_name = false;
    const char *const *values = (const char *const *)r->values;
    db_stmt_t *st = r->unnamed ? NULL : conn_stmt_find(c, r->hash, r->sql);
    int ok;
    if (st) {
        r->by_name = true;
        ok = PQsendQueryPrepared(c->pg, st->name, r->nparams, values, r->lengths, r->formats,
                                 r->result_format);
    } else if (!r->unnamed && c->nstmts < DB_STMT_MAX && db_seen(c->db, r->hash)) {
        /* Prepared into the next free entry, which conn_prepared() keeps or leaves. */
        db_stmt_t *next = &c->stmts[c->nstmts];
        snprintf(next->name, sizeof next->name, "postern_%u", c->stmt_seq++);
        c->preparing = true;
        ok = PQsendPrepare(c->pg, next->name, r->sql, r->nparams, NULL);
    } else {
        ok = PQsendQueryParams(c->pg, r->sql, r->nparams, NULL, values, r->lengths, r->formats,
                               r->result_format);
    }
    if (!ok) {
        conn_fail(c, NULL);
        return false;
    }
    return conn_sent(c);
}

/* ---- batches ----------------------------------------------------------------------- */

/* The name under which an earlier statement of b (before member i) with m's text is
 * prepared in this pipeline, or NULL. */
static const char *batch_parsed(const db_req_t *b, int i, const db_req_t *m)
{
    for (int k = 0; k < i; k++) {
        const db_req_t *e = b->members[k];
        if (e->parse_sent && e->hash == m->hash && strcmp(e->sql, m->sql) == 0)
            return e->pname;
    }
    return NULL;
}

/* Sends the batch b on the idle connection c: pipeline mode, every statement (each a
 * Parse first when it is worth preparing and is not prepared yet), one Sync. Returns false
 * after failing the connection (b with it). */
static bool batch_send(db_conn_t *c, db_req_t *b)
{
    c->req = b;
    c->state = DBC_BUSY;
    b->entry = 0;
    b->commit_failed = false;
    if (!PQenterPipelineMode(c->pg)) {
        conn_fail(c, NULL);
        return false;
    }
    int parses = 0;
    for (int i = 0; i < b->nmembers; i++) {
        db_req_t *m = b->members[i];
        const char *const *values = (const char *const *)m->values;
        db_stmt_t *st = conn_stmt_find(c, m->hash, m->sql);
        const char *name = st ? st->name : batch_parsed(b, i, m);
        m->parse_sent = false;
        if (!name && c->nstmts + parses < DB_STMT_MAX && db_seen(c->db, m->hash)) {
            snprintf(m->pname, sizeof m->pname, "postern_%u", c->stmt_seq++);
            if (!PQsendPrepare(c->pg, m->pname, m->sql, m->nparams, NULL)) {
                conn_fail(c, NULL);
                return false;
            }
            m->parse_sent = true;
            name = m->pname;
            parses++;
        }
        m->by_name = name != NULL;
        int ok = name ? PQsendQueryPrepared(c->pg, name, m->nparams, values, m->lengths,
                                            m->formats, 0)
                      : PQsendQueryParams(c->pg, m->sql, m->nparams, NULL, values, m->lengths,
                                          m->formats, 0);
        if (!ok) {
            conn_fail(c, NULL);
            return false;
        }
    }
    if (!PQpipelineSync(c->pg)) {
        conn_fail(c, NULL);
        return false;
    }
    b->entry_parse = b->members[0]->parse_sent;
    return conn_sent(c);
}

/* The results of the current entry (a Parse, or a statement) have ended: on to the next. */
static void batch_next_entry(db_req_t *b)
{
    if (b->entry >= b->nmembers)
        return;
    if (b->entry_parse) {
        b->entry_parse = false;
        return;
    }
    b->entry++;
    b->entry_parse = b->entry < b->nmembers && b->members[b->entry]->parse_sent;
}

/* One result of the batch on c. */
static void batch_result(db_conn_t *c, db_req_t *b, PGresult *res)
{
    if (b->entry >= b->nmembers) {
        b->commit_failed = b->commit_failed || PQresultStatus(res) == PGRES_FATAL_ERROR;
        PQclear(res);
        return;
    }
    db_req_t *m = b->members[b->entry];
    if (b->entry_parse) {
        if (PQresultStatus(res) == PGRES_COMMAND_OK && c->nstmts < DB_STMT_MAX &&
            (c->stmts[c->nstmts].sql = strdup(m->sql))) {
            c->stmts[c->nstmts].hash = m->hash;
            memcpy(c->stmts[c->nstmts].name, m->pname, sizeof m->pname);
            c->nstmts++;
        }
        PQclear(res);
        return;
    }
    /* One statement gives one result; keep the first error if there are several. */
    PGresult **slot = &b->results[b->entry];
    if (*slot && PQresultStatus(*slot) == PGRES_FATAL_ERROR) {
        PQclear(res);
    } else {
        PQclear(*slot);
        *slot = res;
    }
}

static bool result_ok(const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

/* The Sync came back: the batch is over. A prepared statement that failed because its plan
 * is no longer valid (or it is gone) is forgotten, to be prepared again. */
static void batch_finish(db_conn_t *c)
{
    db_req_t *b = c->req;
    c->req = NULL;
    c->state = DBC_IDLE;
    bool committed = !b->commit_failed;
    for (int i = 0; i < b->nmembers; i++) {
        if (!b->results[i])
            b->results[i] = PQmakeEmptyPGresult(c->pg, PGRES_FATAL_ERROR);
        committed = committed && b->results[i] && result_ok(b->results[i]);
        const char *state = b->results[i] ? PQresultErrorField(b->results[i], PG_DIAG_SQLSTATE)
                                          : NULL;
        db_req_t *m = b->members[i];
        db_stmt_t *st;
        if (m->by_name && state && (strcmp(state, "0A000") == 0 || strcmp(state, "26000") == 0) &&
            (st = conn_stmt_find(c, m->hash, m->sql)))
            conn_stmt_forget(c, st);
    }
    /* Callbacks may queue queries (even onto c) or destroy the pool. */
    b->bcb(b->arg, committed, b->results, b->nmembers);
    req_free(b);
}

/* Reads what the server sent for the batch on c. Returns false when c was failed. */
static bool batch_read(db_conn_t *c)
{
    db_req_t *b = c->req;
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            if (PQstatus(c->pg) == CONNECTION_BAD) {
                conn_fail(c, NULL);
                return false;
            }
            batch_next_entry(b);
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            if (!PQexitPipelineMode(c->pg)) {
                conn_fail(c, NULL);
                return false;
            }
            batch_finish(c);
            return true;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(res);
            conn_fail(c, "COPY is not supported on the pool");
            return false;
        }
        batch_result(c, b, res);
    }
    return true;
}

/* The Parse of c's request was answered: keep the statement and send the request by name,
 * or, when PostgreSQL would not prepare it, send it unnamed. Returns false after failing
 * the connection. */
static bool conn_prepared(db_conn_t *c)
{
    db_req_t *r = c->req;
    bool ok = c->result && PQresultStatus(c->result) == PGRES_COMMAND_OK;
    PQclear(c->result);
    c->result = NULL;
    c->preparing = false;
    if (ok) {
        db_stmt_t *st = &c->stmts[c->nstmts]; /* named by conn_send() */
        if ((st->sql = strdup(r->sql))) {
            st->hash = r->hash;
            c->nstmts++;
        }
    } else {
        r->unnamed = true; /* its own error, if it has one, comes from running it */
    }
    return conn_send(c, r);
}

/* A prepared statement's plan is no longer valid, or the statement is gone: forget it
 * and run the request again unnamed. Returns false when the result stands. */
static bool conn_retry_unprepared(db_conn_t *c)
{
    db_req_t *r = c->req;
    if (!r->by_name || !c->result || PQresultStatus(c->result) != PGRES_FATAL_ERROR)
        return false;
    const char *state = PQresultErrorField(c->result, PG_DIAG_SQLSTATE);
    if (!state || (strcmp(state, "0A000") != 0 && strcmp(state, "26000") != 0))
        return false;
    db_stmt_t *st = conn_stmt_find(c, r->hash, r->sql);
    if (st)
        conn_stmt_forget(c, st);
    PQclear(c->result);
    c->result = NULL;
    r->unnamed = true;
    conn_send(c, r);
    return true;
}

/* The query on c finished: hand the result to its callback. */
static void conn_finish_query(db_conn_t *c)
{
    db_req_t *r = c->req;
    PGresult *res = c->result;
    c->req = NULL;
    c->result = NULL;
    c->state = DBC_IDLE;
    /* Callbacks may queue queries (even onto c) or destroy the pool. */
    r->cb(r->arg, res);
    PQclear(res);
    req_free(r);
}

/* Reads what the server sent while c is BUSY. Returns false when c was failed. */
static bool conn_read_results(db_conn_t *c)
{
    if (c->req && c->req->members)
        return batch_read(c);
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            if (PQstatus(c->pg) == CONNECTION_BAD) {
                conn_fail(c, NULL);
                return false;
            }
            if (c->preparing) {
                if (!conn_prepared(c))
                    return false;
                continue; /* the request itself is in flight now */
            }
            if (conn_retry_unprepared(c)) {
                if (c->state != DBC_BUSY)
                    return false; /* failed while sending again */
                continue;
            }
            conn_finish_query(c);
            return true;
        }
        /* One statement gives one result; keep the first error if there are several. */
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
            PQclear(res);
            conn_fail(c, "COPY is not supported on the pool");
            return false;
        }
        if (c->result && PQresultStatus(c->result) == PGRES_FATAL_ERROR) {
            PQclear(res);
        } else {
            PQclear(c->result);
            c->result = res;
        }
    }
    return true;
}

/* Sends what libpq still holds for the server; once all is sent, watches for reading only.
 * Returns 0, or -1 after failing the connection (the queue is dispatched again). */
static int conn_flush(db_conn_t *c)
{
    db_t *db = c->db;
    int f = PQflush(c->pg);
    if (f < 0) {
        conn_fail(c, NULL);
        db_dispatch(db);
        return -1;
    }
    if (f == 0 && conn_watch(c, c->fd, UV_READABLE) < 0) {
        conn_fail(c, "cannot watch the connection's socket");
        db_dispatch(db);
        return -1;
    }
    return 0;
}

static void conn_poll_cb(uv_poll_t *h, int status, int events)
{
    db_conn_t *c = h->data;
    db_t *db = c->db;

    if (c->state == DBC_CONNECTING) {
        /* An error on the socket (libuv reports POLLERR as UV_EBADF) is PQconnectPoll's to
         * read: it moves on to the next address or host, or fails. It may close the socket
         * and open another one. */
        uv_poll_stop(c->poll);
        c->poll_events = 0;
        conn_connect_step(c, PQconnectPoll(c->pg));
        db_dispatch(db);
        return;
    }
    if (c->state != DBC_IDLE && c->state != DBC_BUSY)
        return;
    if (status < 0) {
        conn_fail(c, uv_strerror(status));
        db_dispatch(db);
        return;
    }
    if (c->state == DBC_BUSY && (events & UV_WRITABLE) && conn_flush(c) < 0)
        return;
    if (!(events & UV_READABLE))
        return;
    if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_fail(c, NULL);
        db_dispatch(db);
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(c->pg)))
        PQfreemem(n);
    if (c->state == DBC_IDLE)
        return;
    /* Docs: after PQconsumeInput, flush again if output is still pending. */
    if ((c->poll_events & UV_WRITABLE) && conn_flush(c) < 0)
        return;
    conn_read_results(c);
    if (!db->destroying)
        db_dispatch(db);
}

static void conn_timer_cb(uv_timer_t *t)
{
    db_conn_t *c = t->data;
    if (c->db->destroying)
        return;
    if (c->state == DBC_DOWN)
        conn_start(c);
    else if (c->state == DBC_RESOLVING)
        conn_fail(c, "timed out while resolving the host name");
    else if (c->state == DBC_CONNECTING)
        conn_fail(c, "timed out while connecting");
    db_dispatch(c->db);
}

/* ---- dispatch ---------------------------------------------------------------------- */

int db_pool_size(const db_t *db)
{
    return db ? db->nconns : 0;
}

bool db_available(const db_t *db)
{
    if (!db)
        return false;
    for (int i = 0; i < db->nconns; i++)
        if (db->conns[i].state == DBC_IDLE || db->conns[i].state == DBC_BUSY)
            return true;
    return false;
}

bool db_busy(const db_t *db)
{
    if (!db)
        return false;
    if (db->queue.head || db->fail.head)
        return true;
    for (int i = 0; i < db->nconns; i++)
        if (db->conns[i].req)
            return true;
    return false;
}

static bool db_connecting(const db_t *db)
{
    for (int i = 0; i < db->nconns; i++)
        if (db->conns[i].state == DBC_RESOLVING || db->conns[i].state == DBC_CONNECTING)
            return true;
    return false;
}

static void wait_timer_cb(uv_timer_t *t)
{
    db_t *db = t->data;
    if (db->destroying)
        return;
    if (!db_available(db)) {
        uint64_t now = uv_now(db->loop);
        while (db->queue.head && db->queue.head->queued_at + DB_WAIT_MAX_MS <= now)
            db_fail_later(db, list_pop(&db->queue));
    }
    db_dispatch(db);
}

/* Gives waiting queries to idle connections; fails them when nothing can answer. */
static void db_dispatch(db_t *db)
{
    if (db->destroying)
        return;
    for (int i = 0; i < db->nconns && db->queue.head; i++) {
        db_conn_t *c = &db->conns[i];
        if (c->state == DBC_IDLE)
            conn_send(c, list_pop(&db->queue));
    }
    if (!db->queue.head || db_available(db)) {
        /* Nothing waits, or a busy connection will take the queue when it is done. */
        uv_timer_stop(&db->wait_timer);
        return;
    }
    if (!db_connecting(db)) {
        db_req_t *r;
        while ((r = list_pop(&db->queue)))
            db_fail_later(db, r);
        uv_timer_stop(&db->wait_timer);
        return;
    }
    uint64_t now = uv_now(db->loop);
    uint64_t due = db->queue.head->queued_at + DB_WAIT_MAX_MS;
    uv_timer_start(&db->wait_timer, wait_timer_cb, due > now ? due - now : 0, 0);
}

/* A request for one statement, its parameters copied (binary ones inside block, or all
 * binary ones when borrowed, are not). */
static db_req_t *req_create(db_t *db, const char *sql, int nparams, const char *const *values,
                            const int *lengths, const int *binary, int result_format,
                            void *block, size_t block_len, bool borrowed)
{
    db_req_t *r = db_xmalloc(sizeof *r);
    r->block = block;
    r->block_len = block ? block_len : 0;
    r->borrowed = borrowed;
    r->result_format = result_format;
    r->sql = strdup(sql ? sql : "");
    if (!r->sql)
        r->sql = db_xmalloc(1);
    r->hash = sql_hash(r->sql);
    /* The loop's clock is that of its last iteration: a caller that blocked since (a test
     * filling a table, a slow start) would have the query look older than it is and fail
     * it at once as having waited too long for a connection. */
    uv_update_time(db->loop);
    r->queued_at = uv_now(db->loop);
    if (nparams > 0) {
        r->nparams = nparams;
        r->values = db_xmalloc(sizeof *r->values * (size_t)nparams);
        r->lengths = db_xmalloc(sizeof *r->lengths * (size_t)nparams);
        r->formats = db_xmalloc(sizeof *r->formats * (size_t)nparams);
        for (int i = 0; i < nparams; i++) {
            const char *v = values ? values[i] : NULL;
            if (!v)
                continue; /* SQL NULL */
            bool bin = binary && binary[i];
            size_t len = bin ? (size_t)(lengths && lengths[i] > 0 ? lengths[i] : 0) : strlen(v);
            if (bin && (borrowed || in_block(r, v, len))) {
                r->values[i] = (char *)v; /* the block's or the caller's: not copied */
            } else {
                r->values[i] = db_xmalloc(len + 1);
                memcpy(r->values[i], v, len);
            }
            r->lengths[i] = (int)len;
            r->formats[i] = bin ? 1 : 0;
        }
    }
    return r;
}

/* Queues r (or fails it at once when the pool is going). */
static void db_enqueue(db_t *db, db_req_t *r)
{
    if (db->destroying) {
        db_fail_later(db, r); /* run by db_destroy or by the last close callback */
        return;
    }
    list_push(&db->queue, r);
    db_dispatch(db);
}

static int db_query_format(db_t *db, const char *sql, int nparams, const char *const *values,
                           const int *lengths, const int *binary, int result_format, void *block,
                           size_t block_len, db_cb cb, void *arg)
{
    if (!db) {
        free(block);
        return -1;
    }
    db_req_t *r = req_create(db, sql, nparams, values, lengths, binary, result_format, block,
                             block_len, false);
    r->cb = cb;
    r->arg = arg;
    db_enqueue(db, r);
    return 0;
}

int db_batch(db_t *db, int n, const db_stmt_in_t *stmts, db_batch_cb cb, void *arg)
{
    if (!db || !cb || n < 1 || n > DB_BATCH_MAX)
        return -1;
    db_req_t *b = req_create(db, "", 0, NULL, NULL, NULL, 0, NULL, 0, false);
    b->members = db_xmalloc(sizeof *b->members * (size_t)n);
    b->results = db_xmalloc(sizeof *b->results * (size_t)n);
    b->nmembers = n;
    for (int i = 0; i < n; i++)
        b->members[i] = req_create(db, stmts[i].sql, stmts[i].nparams, stmts[i].values,
                                   stmts[i].lengths, stmts[i].binary, 0, NULL, 0, true);
    b->bcb = cb;
    b->arg = arg;
    db_enqueue(db, b);
    return 0;
}

int db_later(db_t *db, void (*cb)(void *arg), void *arg)
{
    if (!db || !cb)
        return -1;
    db_req_t *r = db_xmalloc(sizeof *r);
    r->later = cb;
    r->arg = arg;
    db_fail_later(db, r);
    return 0;
}

int db_query(db_t *db, const char *sql, int nparams, const char *const *values,
             const int *lengths, const int *binary, db_cb cb, void *arg)
{
    return db_query_format(db, sql, nparams, values, lengths, binary, 0, NULL, 0, cb, arg);
}

int db_query_take(db_t *db, const char *sql, int nparams, const char *const *values,
                  const int *lengths, const int *binary, void *block, size_t block_len,
                  db_cb cb, void *arg)
{
    return db_query_format(db, sql, nparams, values, lengths, binary, 0, block, block_len, cb,
                           arg);
}

int db_query_binary(db_t *db, const char *sql, int nparams, const char *const *values,
                    const int *lengths, const int *binary, db_cb cb, void *arg)
{
    return db_query_format(db, sql, nparams, values, lengths, binary, 1, NULL, 0, cb, arg);
}

/* ---- life cycle -------------------------------------------------------------------- */

db_t *db_create(uv_loop_t *loop, const char *conninfo, int pool_size)
{
    if (!loop || !conninfo)
        return NULL;
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &err);
    if (!opts) {
        char msg[256];
        log_value(msg, sizeof msg, err ? err : "invalid connection string");
        log_error("database connection string rejected", "error=\"%s\"", msg);
        PQfreemem(err);
        return NULL;
    }

    if (pool_size < 1)
        pool_size = 1;
    db_t *db = db_xmalloc(sizeof *db);
    db->loop = loop;
    db->conninfo = strdup(conninfo);
    if (!db->conninfo) {
        PQconninfoFree(opts);
        free(db);
        return NULL;
    }
    db_hosts_parse(db, opts);
    PQconninfoFree(opts);
    db_describe(conninfo, db->target, sizeof db->target);
    db->nconns = pool_size;
    db->conns = db_xmalloc(sizeof *db->conns * (size_t)pool_size);

    uv_idle_init(loop, &db->fail_idle);
    db->fail_idle.data = db;
    uv_timer_init(loop, &db->wait_timer);
    db->wait_timer.data = db;
    db->open_handles = 2;
    for (int i = 0; i < pool_size; i++) {
        db_conn_t *c = &db->conns[i];
        c->db = db;
        c->index = i;
        c->fd = -1;
        c->state = DBC_DOWN;
        c->backoff_ms = DB_BACKOFF_MIN_MS;
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        db->open_handles++;
    }
    for (int i = 0; i < pool_size; i++)
        conn_start(&db->conns[i]);
    return db;
}

/* Frees the pool once its last handle has closed. */
static void db_handle_closed(db_t *db)
{
    if (--db->open_handles > 0)
        return;
    /* Queries sent to a destroyed pool still get their one callback. */
    db_req_t *r;
    while ((r = list_pop(&db->fail))) {
        req_answer_none(r);
        req_free(r);
    }
    db_hosts_free(db);
    free(db->conns);
    free(db->conninfo);
    free(db);
}

static void db_handle_closed_cb(uv_handle_t *h)
{
    db_handle_closed(h->data);
}

static void conn_timer_closed_cb(uv_handle_t *h)
{
    db_conn_t *c = h->data;
    db_handle_closed(c->db);
}

void db_destroy(db_t **dbp)
{
    if (!dbp || !*dbp)
        return;
    db_t *db = *dbp;
    *dbp = NULL;
    if (db->destroying)
        return;
    db->destroying = true;

    /* In-flight queries first, then the waiting ones, in order. */
    db_req_list_t failing = { NULL, NULL };
    for (int i = 0; i < db->nconns; i++) {
        db_conn_t *c = &db->conns[i];
        conn_lookup_orphan(c);
        addrs_reset(&c->addrs);
        conn_poll_close(c);
        uv_timer_stop(&c->timer);
        if (c->req) {
            list_push(&failing, c->req);
            c->req = NULL;
        }
        if (c->result) {
            PQclear(c->result);
            c->result = NULL;
        }
        if (c->pg) {
            PQfinish(c->pg);
            c->pg = NULL;
            if (c->state == DBC_IDLE || c->state == DBC_BUSY)
                log_info("database connection closed", "%s conn=%d", db->target, c->index);
        }
        conn_stmts_clear(c);
        c->state = DBC_DOWN;
    }
    list_splice(&failing, &db->queue);
    list_splice(&failing, &db->fail);
    db->fail = failing;
    uv_idle_stop(&db->fail_idle);
    uv_timer_stop(&db->wait_timer);

    /* Callbacks may call db_query() again: those land on db->fail and run here too. */
    db_req_t *r;
    while ((r = list_pop(&db->fail))) {
        req_answer_none(r);
        req_free(r);
    }

    uv_close((uv_handle_t *)&db->fail_idle, db_handle_closed_cb);
    uv_close((uv_handle_t *)&db->wait_timer, db_handle_closed_cb);
    for (int i = 0; i < db->nconns; i++)
        uv_close((uv_handle_t *)&db->conns[i].timer, conn_timer_closed_cb);
}
