/* A pool of non-blocking libpq connections on a libuv loop.
 *
 * Each connection is in one of four states: DOWN (waiting for its retry timer),
 * CONNECTING (PQconnectPoll driven by uv_poll), IDLE, BUSY (one query in flight).
 * Queries wait in a FIFO until a connection is IDLE. A query that cannot be answered
 * (the connection broke, nothing can be reached) goes to the fail list, which an idle
 * handle empties on the next loop iteration: callbacks never run inside db_query().
 *
 * libuv rules kept here: a uv_poll handle is stopped before libpq may close or replace
 * its socket (PQconnectPoll, PQfinish), it is freed only in its close callback, and a
 * fresh one is created whenever the socket changes. */
#include "db.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define DB_BACKOFF_MIN_MS 200
#define DB_BACKOFF_MAX_MS 5000
#define DB_CONNECT_TIMEOUT_MS 10000 /* libpq does not enforce connect_timeout when async */
#define DB_WAIT_MAX_MS 5000         /* longest a query waits for a first connection */

typedef struct db_req {
    struct db_req *next;
    char *sql;
    int nparams;
    char **values;
    int *lengths;
    int *formats;
    int result_format;  /* 0 text, 1 binary */
    db_cb cb;
    void *arg;
    uint64_t queued_at; /* uv_now() */
} db_req_t;

typedef struct db_req_list {
    db_req_t *head, *tail;
} db_req_list_t;

typedef enum dbc_state { DBC_DOWN, DBC_CONNECTING, DBC_IDLE, DBC_BUSY } dbc_state_t;

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
} db_conn_t;

struct db {
    uv_loop_t *loop;
    char *conninfo;
    char target[256]; /* "host=... port=... db=..." for logs; never a password */
    int nconns;
    db_conn_t *conns;
    db_req_list_t queue;
    db_req_list_t fail;
    uv_idle_t fail_idle;   /* runs the fail list on the next loop iteration */
    uv_timer_t wait_timer; /* bounds the wait for a first connection */
    bool destroying;
    int open_handles; /* handles embedded here still to close before freeing */
};

static void conn_start(db_conn_t *c);
static void conn_timer_cb(uv_timer_t *t);
static void conn_poll_cb(uv_poll_t *h, int status, int events);
static void db_dispatch(db_t *db);

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

static void req_free(db_req_t *r)
{
    if (!r)
        return;
    if (r->values)
        for (int i = 0; i < r->nparams; i++)
            free(r->values[i]);
    free(r->values);
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

static void db_fail_idle_cb(uv_idle_t *h)
{
    db_t *db = h->data;
    uv_idle_stop(h);
    /* Callbacks may queue more failures: those wait for the next iteration. */
    db_req_list_t list = db->fail;
    db->fail.head = db->fail.tail = NULL;
    db_req_t *r;
    while ((r = list_pop(&list))) {
        r->cb(r->arg, NULL);
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

/* Copies msg for a key="..." log field: one line, double quotes turned into single ones,
 * trailing white space dropped. */
static void log_clean(char *out, size_t out_len, const char *msg)
{
    size_t n = 0;
    for (const char *p = msg ? msg : ""; *p && n + 1 < out_len; p++) {
        char ch = *p;
        if (ch == '"')
            ch = '\'';
        else if (ch == '\n' || ch == '\r' || ch == '\t')
            ch = ' ';
        out[n++] = ch;
    }
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}

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
            log_clean(val, sizeof val, o->val);
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
    log_clean(text, sizeof text, message);
    log_debug("database notice", "%s conn=%d text=\"%s\"", c->db->target, c->index, text);
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

/* The connection broke or could not be made: fail its query, close it, retry later.
 * Does not dispatch: the caller does, once it is done with the connection. */
static void conn_fail(db_conn_t *c, const char *why)
{
    db_t *db = c->db;
    bool was_up = c->state == DBC_IDLE || c->state == DBC_BUSY;
    char err[512];
    log_clean(err, sizeof err, why ? why : (c->pg ? PQerrorMessage(c->pg) : "unknown error"));
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

static void conn_start(db_conn_t *c)
{
    db_t *db = c->db;
    static const char *const keys[] = { "dbname", NULL };
    const char *vals[] = { db->conninfo, NULL };
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
    uv_timer_start(&c->timer, conn_timer_cb, DB_CONNECT_TIMEOUT_MS, 0);
    /* libpq: behave as if PQconnectPoll had just returned PGRES_POLLING_WRITING. */
    conn_connect_step(c, PGRES_POLLING_WRITING);
}

/* ---- queries ----------------------------------------------------------------------- */

/* Sends r on the idle connection c. On failure the connection is failed (r with it). */
static void conn_send(db_conn_t *c, db_req_t *r)
{
    c->req = r;
    c->state = DBC_BUSY;
    if (!PQsendQueryParams(c->pg, r->sql, r->nparams, NULL, (const char *const *)r->values,
                           r->lengths, r->formats, r->result_format)) {
        conn_fail(c, NULL);
        return;
    }
    int f = PQflush(c->pg);
    if (f < 0) {
        conn_fail(c, NULL);
        return;
    }
    if (conn_watch(c, c->fd, UV_READABLE | (f == 1 ? UV_WRITABLE : 0)) < 0)
        conn_fail(c, "cannot watch the connection's socket");
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
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (!res) {
            if (PQstatus(c->pg) == CONNECTION_BAD) {
                conn_fail(c, NULL);
                return false;
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

static void conn_poll_cb(uv_poll_t *h, int status, int events)
{
    db_conn_t *c = h->data;
    db_t *db = c->db;

    if (c->state == DBC_CONNECTING) {
        if (status < 0) {
            conn_fail(c, uv_strerror(status));
        } else {
            /* PQconnectPoll may close the socket and open another one. */
            uv_poll_stop(c->poll);
            c->poll_events = 0;
            conn_connect_step(c, PQconnectPoll(c->pg));
        }
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
    if (c->state == DBC_BUSY && (events & UV_WRITABLE)) {
        int f = PQflush(c->pg);
        if (f < 0) {
            conn_fail(c, NULL);
            db_dispatch(db);
            return;
        }
        if (f == 0 && conn_watch(c, c->fd, UV_READABLE) < 0) {
            conn_fail(c, "cannot watch the connection's socket");
            db_dispatch(db);
            return;
        }
    }
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
    if (c->poll_events & UV_WRITABLE) {
        int f = PQflush(c->pg);
        if (f < 0) {
            conn_fail(c, NULL);
            db_dispatch(db);
            return;
        }
        if (f == 0 && conn_watch(c, c->fd, UV_READABLE) < 0) {
            conn_fail(c, "cannot watch the connection's socket");
            db_dispatch(db);
            return;
        }
    }
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
    else if (c->state == DBC_CONNECTING)
        conn_fail(c, "timed out while connecting");
    db_dispatch(c->db);
}

/* ---- dispatch ---------------------------------------------------------------------- */

bool db_available(const db_t *db)
{
    if (!db)
        return false;
    for (int i = 0; i < db->nconns; i++)
        if (db->conns[i].state == DBC_IDLE || db->conns[i].state == DBC_BUSY)
            return true;
    return false;
}

static bool db_connecting(const db_t *db)
{
    for (int i = 0; i < db->nconns; i++)
        if (db->conns[i].state == DBC_CONNECTING)
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

static int db_query_format(db_t *db, const char *sql, int nparams, const char *const *values,
                           const int *lengths, const int *binary, int result_format, db_cb cb,
                           void *arg)
{
    if (!db)
        return -1;
    db_req_t *r = db_xmalloc(sizeof *r);
    r->result_format = result_format;
    r->sql = strdup(sql ? sql : "");
    if (!r->sql)
        r->sql = db_xmalloc(1);
    r->cb = cb;
    r->arg = arg;
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
            r->values[i] = db_xmalloc(len + 1);
            memcpy(r->values[i], v, len);
            r->lengths[i] = (int)len;
            r->formats[i] = bin ? 1 : 0;
        }
    }
    if (db->destroying) {
        db_fail_later(db, r); /* run by db_destroy or by the last close callback */
        return 0;
    }
    list_push(&db->queue, r);
    db_dispatch(db);
    return 0;
}

int db_query(db_t *db, const char *sql, int nparams, const char *const *values,
             const int *lengths, const int *binary, db_cb cb, void *arg)
{
    return db_query_format(db, sql, nparams, values, lengths, binary, 0, cb, arg);
}

int db_query_binary(db_t *db, const char *sql, int nparams, const char *const *values,
                    const int *lengths, const int *binary, db_cb cb, void *arg)
{
    return db_query_format(db, sql, nparams, values, lengths, binary, 1, cb, arg);
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
        log_clean(msg, sizeof msg, err ? err : "invalid connection string");
        log_error("database connection string rejected", "error=\"%s\"", msg);
        PQfreemem(err);
        return NULL;
    }
    PQconninfoFree(opts);

    if (pool_size < 1)
        pool_size = 1;
    db_t *db = db_xmalloc(sizeof *db);
    db->loop = loop;
    db->conninfo = strdup(conninfo);
    if (!db->conninfo) {
        free(db);
        return NULL;
    }
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
        r->cb(r->arg, NULL);
        req_free(r);
    }
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
        r->cb(r->arg, NULL);
        req_free(r);
    }

    uv_close((uv_handle_t *)&db->fail_idle, db_handle_closed_cb);
    uv_close((uv_handle_t *)&db->wait_timer, db_handle_closed_cb);
    for (int i = 0; i < db->nconns; i++)
        uv_close((uv_handle_t *)&db->conns[i].timer, conn_timer_closed_cb);
}
