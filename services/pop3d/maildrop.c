/* The maildrop: the user's INBOX, locked for one session at a time across every replica
 * (table pop3_locks, migration 0005), listed once at login, read message by message for
 * RETR and TOP, and changed only at QUIT (RFC 1939 section 6, the UPDATE state).
 *
 * The lock is a row with this session's owner id and a lease that a timer renews every
 * third of pop3.lock_lease while the session lives. A session whose renewal finds the row
 * taken over (it could not renew for a whole lease) stops serving, and its QUIT deletes
 * nothing: the statement that deletes the marked messages also removes the lock row and
 * deletes only while that row is still this session's.
 *
 * The owner id is "instance/run/session/random", the instance being node:pid and the run a
 * random id of this process. A pop3d that dies leaves its rows until their leases expire;
 * when a pop3d starts on the same machine (a restarted container keeps its name and often
 * its pid), it releases at once the rows of every earlier run there whose process is gone:
 * same pid but another run, or a pid that no longer exists. */
#include "pop3d.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "bus/mailwatch.h"

#define POP3_SEND_CHUNK 65536

static const char open_sql[] = "SELECT kind, n1, n2, n3 FROM postern_pop3_open($1, $2, $3)";

static const char renew_sql[] =
    "UPDATE pop3_locks SET expires = clock_timestamp() + make_interval(secs => $3) "
    "WHERE user_id = $1 AND owner = $2";

static const char unlock_sql[] = "DELETE FROM pop3_locks WHERE user_id = $1 AND owner = $2";
/* The same when the lock's user is not known: an open whose answer was lost (PostgreSQL
 * killed after the commit) leaves a lock this session never heard of. Owners are unique. */
static const char unlock_owner_sql[] = "DELETE FROM pop3_locks WHERE owner = $1";

/* The runs holding locks on this machine ($1: "node:"). */
static const char runs_sql[] =
    "SELECT DISTINCT split_part(owner, '/', 1), split_part(owner, '/', 2) FROM pop3_locks "
    "WHERE left(owner, length($1)) = $1";

static const char release_run_sql[] =
    "DELETE FROM pop3_locks WHERE split_part(owner, '/', 1) = $1 "
    "AND split_part(owner, '/', 2) = $2";

/* Deletes the marked messages and gives the lock back, in one statement; deletes only
 * while the lock row is still ours. postern_expunge() locks the mailbox row before the
 * message rows (the store's lock order) and records the removals for IMAP sessions.
 * Returns (locks removed, messages removed, the mailbox's modseq afterwards). */
static const char update_sql[] =
    "WITH l AS (DELETE FROM pop3_locks WHERE user_id = $1 AND owner = $2 RETURNING 1 AS one), "
    "d AS (SELECT e.uid, e.modseq FROM l CROSS JOIN LATERAL "
    "      postern_expunge($3::bigint + 0 * l.one, $4::bigint[], $4::bigint[], false) e) "
    "SELECT (SELECT count(*) FROM l), (SELECT count(uid) FROM d), "
    "(SELECT max(modseq) FROM d)";

#define POP3_FETCH_CHUNK (1024 * 1024) /* bytes read from the store per query */
#define POP3_OUTPUT_HIGH (256 * 1024)  /* the next chunk waits while more is unsent */

static long lease_seconds(pop3_session_t *s)
{
    return pop3_setting(s, POP3_LOCK_LEASE_KEY, POP3_LOCK_LEASE_DEFAULT);
}

static bool result_ok(PGresult *res, ExecStatusType want)
{
    return res && PQresultStatus(res) == want;
}

static const char *result_error(PGresult *res)
{
    return res ? PQresultErrorMessage(res) : "database unavailable";
}

/* ---- the listing ------------------------------------------------------------------- */

pop3_msg_t *pop3_maildrop_msg(pop3_session_t *s, unsigned long n)
{
    pop3_maildrop_t *d = &s->drop;
    if (n < 1 || n > d->count || d->msgs[n - 1].deleted)
        return NULL;
    return &d->msgs[n - 1];
}

void pop3_maildrop_mark(pop3_session_t *s, pop3_msg_t *m)
{
    if (m->deleted)
        return;
    m->deleted = true;
    s->drop.live--;
    s->drop.live_size -= m->size;
}

void pop3_maildrop_unmark_all(pop3_session_t *s)
{
    pop3_maildrop_t *d = &s->drop;
    d->live = d->count;
    d->live_size = 0;
    for (size_t i = 0; i < d->count; i++) {
        d->msgs[i].deleted = false;
        d->live_size += d->msgs[i].size;
    }
}

/* Fills the listing from postern_pop3_open()'s rows (the first is 'maildrop'). */
static int listing_load(pop3_maildrop_t *d, PGresult *res)
{
    int rows = PQntuples(res);
    d->user_id = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    d->mailbox_id = strtoll(PQgetvalue(res, 0, 2), NULL, 10);
    d->uidvalidity = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    d->msgs = calloc((size_t)rows, sizeof *d->msgs);
    if (!d->msgs)
        return -1;
    d->count = 0;
    d->live_size = 0;
    for (int i = 1; i < rows; i++) {
        if (strcmp(PQgetvalue(res, i, 0), "message") != 0)
            continue;
        pop3_msg_t *m = &d->msgs[d->count++];
        m->uid = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        m->size = strtoull(PQgetvalue(res, i, 2), NULL, 10);
        d->live_size += m->size;
    }
    d->live = d->count;
    return 0;
}

/* ---- the lock ---------------------------------------------------------------------- */

/* A lock row to delete. When the database cannot be reached (a restart), the deletion is
 * tried again every POP3_UNLOCK_RETRY_MS until it succeeds or the lease has run out anyway:
 * otherwise a session cut off by a database restart would leave its user locked out for the
 * whole lease. Requests waiting for their next try are listed in the server's state, and
 * dropped when the server stops. */
#define POP3_UNLOCK_RETRY_MS 1000

typedef struct unlock_req {
    fe_server_t *srv;
    uv_timer_t timer;
    uint64_t give_up_ms; /* the loop's clock: the lease has run out by then */
    struct unlock_req *next, **prev; /* in pop3_server_t.retries while waiting */
    char user_id[24];
    char owner[sizeof ((pop3_maildrop_t *)0)->owner];
} unlock_req_t;

static void unlock_send(unlock_req_t *u);

static void unlock_free_cb(uv_handle_t *h)
{
    free(h->data);
}

static void unlock_drop(unlock_req_t *u)
{
    uv_close((uv_handle_t *)&u->timer, unlock_free_cb);
}

static void unlock_retry_cb(uv_timer_t *t)
{
    unlock_req_t *u = t->data;
    *u->prev = u->next; /* off the waiting list */
    if (u->next)
        u->next->prev = u->prev;
    unlock_send(u);
}

static void unlock_cb(void *arg, PGresult *res)
{
    unlock_req_t *u = arg;
    pop3_server_t *ps = u->srv->proto_data;
    if (result_ok(res, PGRES_COMMAND_OK) || !ps) {
        unlock_drop(u); /* done, or the server is stopping: the lease expires on its own */
        return;
    }
    if (uv_now(u->srv->loop) + POP3_UNLOCK_RETRY_MS >= u->give_up_ms) {
        log_warn("maildrop lock not released, its lease will expire", "user_id=%s error=\"%s\"",
                 u->user_id, result_error(res));
        unlock_drop(u);
        return;
    }
    log_info("maildrop lock not released yet, trying again", "user_id=%s error=\"%s\"",
             u->user_id, result_error(res));
    u->next = ps->retries;
    u->prev = &ps->retries;
    if (ps->retries)
        ps->retries->prev = &u->next;
    ps->retries = u;
    uv_timer_start(&u->timer, unlock_retry_cb, POP3_UNLOCK_RETRY_MS, 0);
}

static void unlock_send(unlock_req_t *u)
{
    const char *params[2] = { u->user_id, u->owner };
    bool known = strcmp(u->user_id, "0") != 0;
    if (!u->srv->db ||
        db_query(u->srv->db, known ? unlock_sql : unlock_owner_sql, known ? 2 : 1,
                 known ? params : params + 1, NULL, NULL, unlock_cb, u) < 0)
        unlock_drop(u); /* shutting down: the lease expires on its own */
}

/* Removes the lock row without the session (which may be going away). */
static void unlock(fe_server_t *srv, pop3_maildrop_t *d)
{
    if (!d->locked)
        return;
    d->locked = false;
    unlock_req_t *u = calloc(1, sizeof *u);
    if (!u)
        return;
    u->srv = srv;
    uv_timer_init(srv->loop, &u->timer);
    u->timer.data = u;
    long lease_ms = srv->cfg ? config_get_long(srv->cfg, POP3_LOCK_LEASE_KEY) * 1000 : 0;
    if (lease_ms <= 0)
        lease_ms = POP3_LOCK_LEASE_DEFAULT * 1000L;
    u->give_up_ms = uv_now(srv->loop) + (uint64_t)lease_ms;
    snprintf(u->user_id, sizeof u->user_id, "%lld", (long long)d->user_id);
    snprintf(u->owner, sizeof u->owner, "%s", d->owner);
    unlock_send(u);
}

static void renew_start(fe_session_t *fs);

static void renew_schedule(pop3_session_t *s)
{
    long ms = lease_seconds(s) * 1000 / 3;
    fe_session_delay(&s->fe, (unsigned)(ms > 0 ? ms : 1000), renew_start);
}

static void renew_cb(void *arg, PGresult *res)
{
    pop3_session_t *s = arg;
    if (!s->fe.closing && s->state == POP3_STATE_TRANSACTION) {
        if (!result_ok(res, PGRES_COMMAND_OK)) {
            /* Try again at the next tick; the lease covers three of them. */
            log_warn("maildrop lock not renewed", "session=%lu error=\"%s\"", s->fe.id,
                     result_error(res));
        } else if (strcmp(PQcmdTuples(res), "1") != 0) {
            log_warn("maildrop lock lost", "session=%lu user=\"%s\"", s->fe.id, s->fe.user);
            s->drop.lost = true;
            s->drop.locked = false;
        }
        if (!s->drop.lost)
            renew_schedule(s);
    }
    fe_session_unref(&s->fe);
}

static void renew_start(fe_session_t *fs)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    if (s->state != POP3_STATE_TRANSACTION)
        return;
    char user_id[24], lease[16];
    snprintf(user_id, sizeof user_id, "%lld", (long long)s->drop.user_id);
    snprintf(lease, sizeof lease, "%ld", lease_seconds(s));
    const char *params[3] = { user_id, s->drop.owner, lease };
    fe_session_ref(fs);
    db_query(fs->srv->db, renew_sql, 3, params, NULL, NULL, renew_cb, s);
}

/* ---- opening ----------------------------------------------------------------------- */

static void open_failed(pop3_session_t *s, const char *code, const char *text)
{
    pop3_err_nocount(s, code, "%s", text);
    unlock(s->fe.srv, &s->drop);
    free(s->drop.msgs);
    s->drop.msgs = NULL;
    s->drop.count = s->drop.live = 0;
    /* RFC 1939 section 4: back to AUTHORIZATION; the client may log in again or quit. */
    free(s->fe.user);
    s->fe.user = NULL;
    pop3_enter_state(s, POP3_STATE_AUTHORIZATION);
}

static void open_cb(void *arg, PGresult *res)
{
    pop3_session_t *s = arg;
    pop3_maildrop_t *d = &s->drop;
    bool ok = result_ok(res, PGRES_TUPLES_OK) && PQntuples(res) >= 1;
    const char *kind = ok ? PQgetvalue(res, 0, 0) : "";
    int loaded = -1;
    if (strcmp(kind, "maildrop") == 0) {
        d->locked = true; /* even if the session is gone: released below or at release */
        loaded = listing_load(d, res);
    } else if (!ok) {
        /* No answer (the connection died, PostgreSQL was killed): the lock row may have been
         * committed all the same. Released like a held one (by this owner only, so deleting
         * nothing is harmless), or the user would stay locked out for a whole lease. */
        d->locked = true;
    }
    s->pending = false;
    if (s->fe.closing) {
        fe_session_unref(&s->fe);
        return;
    }
    if (!ok) {
        log_warn("maildrop not opened", "session=%lu user=\"%s\" error=\"%s\"", s->fe.id,
                 s->fe.user, result_error(res));
        open_failed(s, "SYS/TEMP", "Cannot open the maildrop now, try again later");
    } else if (strcmp(kind, "in-use") == 0) {
        log_info("maildrop in use", "session=%lu user=\"%s\"", s->fe.id, s->fe.user);
        open_failed(s, "IN-USE", "The maildrop is in use by another session");
    } else if (loaded < 0) {
        log_warn("maildrop not opened", "session=%lu user=\"%s\" kind=%s", s->fe.id, s->fe.user,
                 kind);
        open_failed(s, "SYS/TEMP", "Cannot open the maildrop now, try again later");
    } else {
        log_info("maildrop opened", "session=%lu user=\"%s\" messages=%zu octets=%llu", s->fe.id,
                 s->fe.user, d->count, (unsigned long long)d->live_size);
        pop3_enter_state(s, POP3_STATE_TRANSACTION);
        pop3_ok(s, "Maildrop has %zu messages (%llu octets)", d->live,
                (unsigned long long)d->live_size);
        renew_schedule(s);
    }
    pop3_resume(s); /* commands pipelined behind the login run now, in order */
    fe_session_unref(&s->fe);
}

void pop3_maildrop_open(pop3_session_t *s)
{
    pop3_maildrop_t *d = &s->drop;
    unsigned char r[8];
    RAND_bytes(r, sizeof r);
    pop3_server_t *ps = s->fe.srv->proto_data;
    snprintf(d->owner, sizeof d->owner, "%s/%s/%lu/%02x%02x%02x%02x%02x%02x%02x%02x",
             s->fe.srv->instance, ps->run, s->fe.id, r[0], r[1], r[2], r[3], r[4], r[5], r[6],
             r[7]);
    d->lost = false;
    d->store = ((pop3_server_t *)s->fe.srv->proto_data)->store;
    char lease[16];
    snprintf(lease, sizeof lease, "%ld", lease_seconds(s));
    const char *params[3] = { s->fe.user, d->owner, lease };
    pop3_enter_state(s, POP3_STATE_OPENING);
    pop3_wait(s);
    fe_session_ref(&s->fe);
    db_query(s->fe.srv->db, open_sql, 3, params, NULL, NULL, open_cb, s);
}

/* ---- locks left by a pop3d that died ---------------------------------------------- */

typedef struct stale_req {
    char instance[300];
    char run[17];
} stale_req_t;

static void release_run_cb(void *arg, PGresult *res)
{
    stale_req_t *r = arg;
    if (result_ok(res, PGRES_COMMAND_OK))
        log_info("maildrop locks of a stopped pop3d released", "instance=%s run=%s locks=%s",
                 r->instance, r->run, PQcmdTuples(res));
    else
        log_warn("maildrop locks of a stopped pop3d not released, their leases will expire",
                 "instance=%s error=\"%s\"", r->instance, result_error(res));
    free(r);
}

/* Whether the run (instance node:pid, run id) holding locks is gone. */
static bool run_gone(const pop3_server_t *ps, const char *instance, const char *run)
{
    const char *colon = strrchr(instance, ':');
    char *end;
    long pid = colon ? strtol(colon + 1, &end, 10) : 0;
    if (!colon || *end || pid <= 0)
        return false;
    if (pid == (long)getpid())
        return strcmp(run, ps->run) != 0;
    return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static void runs_cb(void *arg, PGresult *res)
{
    fe_server_t *srv = arg;
    pop3_server_t *ps = srv->proto_data;
    if (!result_ok(res, PGRES_TUPLES_OK)) {
        log_warn("maildrop locks of stopped pop3d processes not looked for",
                 "error=\"%s\"", result_error(res));
        return;
    }
    for (int i = 0; ps && i < PQntuples(res); i++) {
        const char *instance = PQgetvalue(res, i, 0), *run = PQgetvalue(res, i, 1);
        if (!run_gone(ps, instance, run))
            continue;
        stale_req_t *r = calloc(1, sizeof *r);
        if (!r)
            return;
        snprintf(r->instance, sizeof r->instance, "%s", instance);
        snprintf(r->run, sizeof r->run, "%s", run);
        const char *params[2] = { r->instance, r->run };
        if (db_query(srv->db, release_run_sql, 2, params, NULL, NULL, release_run_cb, r) < 0)
            free(r);
    }
}

int pop3_maildrop_start(fe_server_t *srv)
{
    pop3_server_t *ps = calloc(1, sizeof *ps);
    if (!ps)
        return -1;
    unsigned char r[8];
    if (RAND_bytes(r, sizeof r) != 1) {
        free(ps);
        return -1;
    }
    snprintf(ps->run, sizeof ps->run, "%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
             r[4], r[5], r[6], r[7]);
    if (!(ps->store = mailstore_create(srv->db))) {
        free(ps);
        return -1;
    }
    mailstore_set_message_cache(ps->store, srv->svc->message_cache);
    srv->proto_data = ps;
    /* "node:" of this instance (node:pid) */
    char node[sizeof srv->instance];
    snprintf(node, sizeof node, "%s", srv->instance);
    char *colon = strrchr(node, ':');
    if (colon)
        colon[1] = '\0';
    const char *params[1] = { node };
    db_query(srv->db, runs_sql, 1, params, NULL, NULL, runs_cb, srv);
    return 0;
}

void pop3_maildrop_stop(fe_server_t *srv)
{
    pop3_server_t *ps = srv->proto_data;
    if (!ps)
        return;
    while (ps->retries) { /* their leases expire on their own */
        unlock_req_t *u = ps->retries;
        ps->retries = u->next;
        uv_timer_stop(&u->timer);
        unlock_drop(u);
    }
    mailstore_destroy(&ps->store);
    free(ps);
    srv->proto_data = NULL;
}

/* ---- RETR and TOP ------------------------------------------------------------------ */

/* The message is read from the store POP3_FETCH_CHUNK bytes at a time and dot-stuffed
 * as it comes; the first chunk decides between +OK and -ERR. */
static bool send_chunk(pop3_session_t *s, const unsigned char *raw, size_t len)
{
    buf_t *b = &s->out;
    for (size_t off = 0; off < len && !s->send_st.done; off += POP3_SEND_CHUNK) {
        size_t n = len - off < POP3_SEND_CHUNK ? len - off : POP3_SEND_CHUNK;
        buf_reset(b);
        if (pop3_stuffer_feed(&s->send_st, (const char *)raw + off, n, b) < 0)
            return false;
        pop3_write(s, b->data, b->len);
    }
    return true;
}

static void send_end(pop3_session_t *s)
{
    buf_t *b = &s->out;
    buf_reset(b);
    if (pop3_stuffer_end(&s->send_st, b) < 0) {
        fe_session_close(&s->fe);
        return;
    }
    pop3_write(s, b->data, b->len);
    /* Large buffers are not kept between commands. */
    if (b->cap > 4 * POP3_SEND_CHUNK)
        buf_free(b);
}

static void fetch_cb(void *arg, int status, const unsigned char *data, size_t len,
                     uint64_t total);

static void fetch_next(pop3_session_t *s)
{
    pop3_msg_t *m = &s->drop.msgs[s->send_n - 1];
    if (mailstore_fetch_raw(s->drop.store, s->drop.mailbox_id, (uint32_t)m->uid, s->send_off,
                            POP3_FETCH_CHUNK, fetch_cb, s) < 0) {
        if (s->send_off == 0) {
            pop3_err_nocount(s, "SYS/TEMP", "Cannot read message %lu now, try again later",
                             s->send_n);
            pop3_resume(s);
        } else {
            fe_session_close(&s->fe);
        }
        fe_session_unref(&s->fe);
    }
}

static void fetch_resume(fe_session_t *fs)
{
    fe_session_ref(fs);
    fetch_next((pop3_session_t *)fs);
}

static void fetch_cb(void *arg, int status, const unsigned char *data, size_t len,
                     uint64_t total)
{
    pop3_session_t *s = arg;
    if (s->fe.closing) {
        fe_session_unref(&s->fe);
        return;
    }
    bool first = s->send_off == 0;
    if (status != MAILSTORE_OK) {
        log_warn("message not read", "session=%lu error=\"%s\"", s->fe.id,
                 mailstore_strerror(status));
        if (!first) {
            /* In mid-response there is no way to say it: the client sees the connection
             * end without the final ".". */
            fe_session_close(&s->fe);
        } else if (status == MAILSTORE_NOTFOUND) {
            pop3_err_nocount(s, NULL, "Message %lu is no longer there", s->send_n);
            pop3_resume(s);
        } else {
            pop3_err_nocount(s, "SYS/TEMP", "Cannot read message %lu now, try again later",
                             s->send_n);
            pop3_resume(s);
        }
        fe_session_unref(&s->fe);
        return;
    }
    if (first) {
        if (s->send_lines < 0)
            pop3_ok(s, "%llu octets", (unsigned long long)total);
        else
            pop3_ok(s, "Top of message %lu follows", s->send_n);
    }
    if (!send_chunk(s, data, len)) {
        fe_session_close(&s->fe); /* out of memory in mid-response: nothing else to do */
        fe_session_unref(&s->fe);
        return;
    }
    s->send_off += len;
    if (len > 0 && s->send_off < total && !s->send_st.done) {
        if (s->fe.conn && conn_pending_output(s->fe.conn) > POP3_OUTPUT_HIGH) {
            /* The client reads slower than the store answers: the next chunk is read once
             * it has caught up, so a session holds about one chunk of a message, not all of
             * it. A session that closes meanwhile is never called back: no reference kept. */
            fe_session_when_writable(&s->fe, fetch_resume);
            fe_session_unref(&s->fe);
            return;
        }
        fetch_next(s); /* keeps the reference */
        return;
    }
    send_end(s);
    pop3_resume(s);
    fe_session_unref(&s->fe);
}

void pop3_maildrop_send(pop3_session_t *s, unsigned long n, long body_lines)
{
    pop3_msg_t *m = pop3_maildrop_msg(s, n);
    if (!m)
        return;
    s->send_n = n;
    s->send_lines = body_lines;
    s->send_off = 0;
    pop3_stuffer_init(&s->send_st, body_lines);
    pop3_wait(s);
    fe_session_ref(&s->fe);
    fetch_next(s);
}

/* ---- UPDATE ------------------------------------------------------------------------ */

static void update_cb(void *arg, PGresult *res)
{
    pop3_session_t *s = arg;
    pop3_maildrop_t *d = &s->drop;
    bool ok = result_ok(res, PGRES_TUPLES_OK) && PQntuples(res) == 1;
    bool had_lock = ok && strcmp(PQgetvalue(res, 0, 0), "1") == 0;
    long deleted = ok ? strtol(PQgetvalue(res, 0, 1), NULL, 10) : 0;
    if (ok)
        d->locked = false; /* the row is gone, or it was not ours any more */
    if (deleted > 0 && s->fe.user)
        mailwatch_publish_changed(s->fe.srv->bus, s->fe.user, d->mailbox_id,
                                  strtoll(PQgetvalue(res, 0, 2), NULL, 10), MAILWATCH_EXPUNGE);
    s->pending = false;
    if (s->fe.closing) {
        fe_session_unref(&s->fe);
        return;
    }
    if (!ok) {
        log_warn("maildrop not updated", "session=%lu user=\"%s\" error=\"%s\"", s->fe.id,
                 s->fe.user, result_error(res));
        pop3_err_nocount(s, "SYS/TEMP", "Cannot update the maildrop now; no messages were deleted");
    } else if (!had_lock) {
        log_warn("maildrop lock lost before QUIT", "session=%lu user=\"%s\"", s->fe.id, s->fe.user);
        pop3_err_nocount(s, "SYS/TEMP", "The maildrop lock was lost; no messages were deleted");
    } else {
        log_info("maildrop updated", "session=%lu user=\"%s\" deleted=%ld left=%zu", s->fe.id,
                 s->fe.user, deleted, d->live);
        pop3_ok(s, "%s Postern POP3 server signing off (%ld deleted, %zu left)",
                s->fe.srv->hostname, deleted, d->live);
    }
    pop3_enter_state(s, POP3_STATE_DONE);
    fe_session_close(&s->fe);
    fe_session_unref(&s->fe);
}

void pop3_maildrop_update(pop3_session_t *s)
{
    pop3_maildrop_t *d = &s->drop;
    buf_t uids;
    buf_init(&uids);
    buf_puts(&uids, "{");
    for (size_t i = 0; i < d->count; i++)
        if (d->msgs[i].deleted)
            buf_printf(&uids, "%s%lld", uids.len > 1 ? "," : "", (long long)d->msgs[i].uid);
    if (buf_puts(&uids, "}") < 0) {
        buf_free(&uids);
        pop3_err_nocount(s, "SYS/TEMP", "Out of memory; no messages were deleted");
        pop3_enter_state(s, POP3_STATE_DONE);
        fe_session_close(&s->fe);
        return;
    }
    char user_id[24], mailbox[24];
    snprintf(user_id, sizeof user_id, "%lld", (long long)d->user_id);
    snprintf(mailbox, sizeof mailbox, "%lld", (long long)d->mailbox_id);
    const char *params[4] = { user_id, d->owner, mailbox, uids.data };
    pop3_enter_state(s, POP3_STATE_UPDATE);
    pop3_wait(s);
    fe_session_ref(&s->fe);
    db_query(s->fe.srv->db, update_sql, 4, params, NULL, NULL, update_cb, s);
    buf_free(&uids);
}

void pop3_maildrop_release(pop3_session_t *s)
{
    unlock(s->fe.srv, &s->drop);
    free(s->drop.msgs);
    s->drop.msgs = NULL;
    s->drop.count = 0;
    s->drop.store = NULL;
}
