/* Storing an accepted message in PostgreSQL (postern_deliver: a copy in the INBOX of every
 * local recipient, an outbound queue entry for the others), then announcing it on the bus
 * (best effort: a bus that is down never fails a delivery). The reply 250 goes out only
 * after the transaction that stored the message has committed.
 *
 * Group commit: at most one transaction fewer than the database pool has connections is in
 * flight (so that a lookup never waits behind them). A message that finds one free goes at
 * once, alone. Messages that arrive while
 * all are busy wait, and the next free one takes all of them (up to STORE_BATCH_MAX, or
 * STORE_BATCH_BYTES) in one transaction, sent in one round trip (db_batch): one commit, one
 * WAL flush for them all, instead of one each. The longer a commit takes, the more messages
 * share the next one. The transaction first locks the INBOX of every local recipient of all
 * its messages, in the order postern_deliver itself locks (postern_deliver_lock, by user id),
 * so that two of them never wait for each other in a circle. When one message of a batch
 * fails, the transaction rolls back and nothing of it is stored: each message is then stored
 * again alone, in a transaction of its own, and gets its own outcome. */
#include "smtpd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "bus/events.h"
#include "bus/mailwatch.h"

#define STORE_BATCH_MAX 63                /* messages per transaction (+ the lock: DB_BATCH_MAX) */
#define STORE_BATCH_BYTES (1u << 20)      /* bytes of messages per transaction, beyond the first */
#define DELIVER_SQL "SELECT postern_deliver($1, $2, $3::text[], $4, $5::text[], $6)"
#define LOCK_SQL "SELECT postern_deliver_lock($1::text[])"

/* A message on its way to PostgreSQL. block is the message as stored for local recipients
 * (Return-Path, Received, then what the client sent) at off, size bytes; the copy for the
 * outbound queue is the same bytes from relay_off on (no Return-Path). */
typedef struct store_req {
    struct store_req *next;
    smtp_store_queue_t *queue; /* NULL when sent without one (no server state) */
    smtp_session_t *session;
    bool reserved; /* the limiter counted this message in advance */
    char *block;   /* malloc'ed; handed to db_query_take when sent alone */
    size_t block_len;
    size_t off, size, relay_off;
    buf_t local_rcpts, relay_rcpts; /* PostgreSQL text[] literals */
    uint32_t nrcpts, nrelay;
} store_req_t;

/* The server-wide state (fe_server_t.proto_data): messages waiting for a transaction. */
struct smtp_store_queue {
    fe_server_t *srv;
    store_req_t *head, *tail;
    size_t waiting;
    int in_flight; /* transactions sent and not answered */
    int max_in_flight;
    bool pumping;  /* in queue_pump(): an answer that comes meanwhile leaves it to go on */
    bool stopped;  /* the server stops: freed when the last transaction is answered */
};

/* RFC 3848 protocol names. */
static const char *with_protocol(smtp_session_t *s)
{
    bool tls = fe_session_tls(&s->fe), auth = s->fe.user != NULL;
    if (!s->esmtp)
        return tls ? "SMTPS" : "SMTP";
    return auth ? (tls ? "ESMTPSA" : "ESMTPA") : (tls ? "ESMTPS" : "ESMTP");
}

static void received_header(smtp_session_t *s, buf_t *out)
{
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S %z", &tm);
    buf_printf(out, "Received: from %s ([%s])\r\n\tby %s (Postern) with %s",
               s->helo[0] ? s->helo : "unknown", s->fe.peer, s->fe.srv->hostname,
               with_protocol(s));
    if (fe_session_tls(&s->fe))
        buf_printf(out, "\r\n\t(using %s with cipher %s)", conn_tls_version(s->fe.conn),
                   conn_tls_cipher(s->fe.conn));
    buf_printf(out, " id %s", s->queue_id);
    if (s->nrcpts == 1)
        buf_printf(out, "\r\n\tfor <%s>", s->rcpts[0].address);
    buf_printf(out, "; %s\r\n", date);
}

/* Appends the local (or the other) recipients to a PostgreSQL text[] literal's items;
 * addresses never hold quotes or backslashes after smtp_path_parse(), but escape them
 * anyway. */
static void array_items(smtp_session_t *s, bool local, buf_t *out)
{
    for (size_t i = 0; i < s->nrcpts; i++) {
        if (s->rcpts[i].local != local)
            continue;
        buf_puts(out, out->len > 1 ? ",\"" : "\"");
        for (const char *c = s->rcpts[i].address; *c; c++) {
            if (*c == '"' || *c == '\\')
                buf_append(out, "\\", 1);
            buf_append(out, c, 1);
        }
        buf_puts(out, "\"");
    }
}

static void array_literal(smtp_session_t *s, bool local, buf_t *out)
{
    buf_puts(out, "{");
    array_items(s, local, out);
    buf_puts(out, "}");
}

static void store_req_free(store_req_t *r)
{
    free(r->block);
    buf_free(&r->local_rcpts);
    buf_free(&r->relay_rcpts);
    free(r);
}

/* After the commit: the message for the limiter (HAMR counts it), the INBOX of every
 * local recipient for imapd, the outbound queue entry for relayd. */
static void announce_message(smtp_session_t *s, store_req_t *r)
{
    bus_t *bus = s->fe.srv->bus;
    ev_message_t ev = {
        .service = POSTERN__SERVICE__SERVICE_SMTP,
        .user = s->fe.user ? s->fe.user : "",
        .sender = s->sender,
        .rcpt_count = r->nrcpts,
        .relay_rcpt_count = r->nrelay,
        .size = r->size,
        .client_addr = s->fe.peer,
        .authenticated = s->fe.user != NULL,
        .instance = s->fe.srv->instance,
        .queue_id = s->queue_id,
    };
    if (ev_publish_message(bus, &ev) < 0)
        log_warn("message event not published", "session=%lu id=%s", s->fe.id, s->queue_id);
    for (size_t i = 0; i < s->nrcpts; i++)
        if (s->rcpts[i].local)
            mailwatch_publish_changed(bus, s->rcpts[i].address, 0, 0, MAILWATCH_NEW);
    if (r->nrelay && ev_publish_queue_added(bus, s->queue_id) < 0)
        log_warn("queue event not published", "session=%lu id=%s", s->fe.id, s->queue_id);
}

/* The message's outcome: error is NULL once it is stored (committed). The session replies,
 * resumes and drops its reference; r goes. */
static void store_done(store_req_t *r, const char *error)
{
    smtp_session_t *s = r->session;
    if (error) {
        char clean[512];
        log_value(clean, sizeof clean, error);
        log_error("message not stored", "session=%lu id=%s error=\"%s\"", s->fe.id, s->queue_id,
                  clean);
        if (r->reserved)
            lim_release(s->fe.srv->lim, s->fe.user, s->queue_id);
        smtp_count_message(s, "deferred");
        if (!s->fe.closing)
            smtp_reply(s, 451, "4.3.0 Message not stored, please try again later");
    } else {
        log_info("message accepted", "session=%lu id=%s client=%s user=\"%s\" from=\"%s\" "
                 "rcpts=%u relay_rcpts=%u size=%zu", s->fe.id, s->queue_id, s->fe.peer,
                 s->fe.user ? s->fe.user : "", s->sender, r->nrcpts, r->nrelay, r->size);
        announce_message(s, r);
        smtp_count_message(s, "accepted");
        if (!s->fe.closing)
            smtp_reply(s, 250, "2.0.0 Ok: queued as %s", s->queue_id);
    }
    smtp_reset_transaction(s);
    store_req_free(r);
    fe_session_resume(&s->fe);
    fe_session_unref(&s->fe);
}

static void queue_pump(smtp_store_queue_t *q);

/* Takes the first of the waiting messages. */
static store_req_t *queue_take(smtp_store_queue_t *q)
{
    store_req_t *r = q->head;
    q->head = r->next;
    if (!q->head)
        q->tail = NULL;
    r->next = NULL;
    q->waiting--;
    return r;
}

/* A transaction of q was answered: the next messages go (or q goes, see queue_pump). */
static void queue_answered(smtp_store_queue_t *q)
{
    if (!q)
        return;
    q->in_flight--;
    queue_pump(q);
}

static void count_transaction(fe_server_t *srv, int messages)
{
    metrics_add(srv->metrics, "postern_smtp_store_transactions_total",
                "Transactions that stored accepted messages", NULL, 1);
    if (messages > 1)
        metrics_add(srv->metrics, "postern_smtp_store_shared_total",
                    "Messages stored in a transaction shared with others (group commit)", NULL,
                    messages);
}

static void single_cb(void *arg, PGresult *res)
{
    store_req_t *r = arg;
    smtp_store_queue_t *q = r->queue;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK) {
        count_transaction(r->session->fe.srv, 1);
        store_done(r, NULL);
    } else {
        store_done(r, res ? PQresultErrorMessage(res) : "database unavailable");
    }
    queue_answered(q);
}

/* postern_deliver's parameters for r (DELIVER_SQL): queue id, sender, local recipients,
 * the message, relay recipients, the message without Return-Path (binary: 3 and 5). */
static const int deliver_binary[6] = { 0, 0, 0, 1, 0, 1 };

static void deliver_params(const store_req_t *r, const char *values[6], int lengths[6])
{
    const char *msg = r->block + r->off;
    values[0] = r->session->queue_id;
    values[1] = r->session->sender;
    values[2] = r->local_rcpts.data;
    values[3] = msg;
    values[4] = r->relay_rcpts.data;
    values[5] = r->nrelay ? msg + r->relay_off : "";
    lengths[0] = lengths[1] = lengths[2] = lengths[4] = 0;
    lengths[3] = (int)r->size;
    lengths[5] = r->nrelay ? (int)(r->size - r->relay_off) : 0;
}

/* Sends r in a transaction of its own. The message's block goes to the query. */
static void send_alone(fe_server_t *srv, store_req_t *r)
{
    const char *values[6];
    int lengths[6];
    deliver_params(r, values, lengths);
    char *block = r->block;
    r->block = NULL;
    if (r->queue)
        r->queue->in_flight++;
    if (db_query_take(srv->db, DELIVER_SQL, 6, values, lengths, deliver_binary, block,
                      r->block_len,
                      single_cb, r) < 0)
        single_cb(r, NULL); /* no database client (stopping): a temporary failure */
}

/* The messages of one transaction, and its statements' parameters (borrowed by db_batch). */
typedef struct store_batch {
    smtp_store_queue_t *queue;
    store_req_t *reqs[STORE_BATCH_MAX];
    int n;
    buf_t lock_rcpts; /* every local recipient of them all */
    const char *values[STORE_BATCH_MAX + 1][6];
    int lengths[STORE_BATCH_MAX + 1][6];
} store_batch_t;

static void batch_cb(void *arg, bool committed, PGresult *const *results, int n)
{
    store_batch_t *b = arg;
    smtp_store_queue_t *q = b->queue;
    fe_server_t *srv = q->srv;
    if (committed) {
        count_transaction(srv, b->n);
        for (int i = 0; i < b->n; i++)
            store_done(b->reqs[i], NULL);
    } else if (!results) {
        for (int i = 0; i < b->n; i++)
            store_done(b->reqs[i], "database unavailable");
    } else {
        /* Rolled back: each message again, alone, for an outcome of its own. */
        const char *why = "the commit failed";
        for (int i = 0; i < n; i++)
            if (PQresultStatus(results[i]) == PGRES_FATAL_ERROR) {
                why = PQresultErrorMessage(results[i]);
                break;
            }
        char clean[512];
        log_value(clean, sizeof clean, why);
        log_warn("messages stored one by one: their shared transaction failed",
                 "messages=%d error=\"%s\"", b->n, clean);
        for (int i = 0; i < b->n; i++)
            send_alone(srv, b->reqs[i]);
    }
    buf_free(&b->lock_rcpts);
    free(b);
    queue_answered(q);
}

/* Sends the waiting messages, the first n of them, in one transaction. */
static void send_batch(smtp_store_queue_t *q, int n)
{
    store_batch_t *b = calloc(1, sizeof *b);
    if (!b) {
        /* No room to gather them: they go alone, beyond the limit on transactions. */
        for (int i = 0; i < n; i++)
            send_alone(q->srv, queue_take(q));
        return;
    }
    b->queue = q;
    db_stmt_in_t stmts[STORE_BATCH_MAX + 1];
    buf_puts(&b->lock_rcpts, "{");
    for (int i = 0; i < n; i++) {
        store_req_t *r = queue_take(q);
        b->reqs[b->n++] = r;
        array_items(r->session, true, &b->lock_rcpts);
        deliver_params(r, b->values[i + 1], b->lengths[i + 1]);
        stmts[i + 1] = (db_stmt_in_t){ DELIVER_SQL, 6, b->values[i + 1], b->lengths[i + 1],
                                       deliver_binary };
    }
    buf_puts(&b->lock_rcpts, "}");
    b->values[0][0] = b->lock_rcpts.data;
    stmts[0] = (db_stmt_in_t){ LOCK_SQL, 1, b->values[0], NULL, NULL };
    q->in_flight++;
    if (db_batch(q->srv->db, n + 1, stmts, batch_cb, b) < 0)
        batch_cb(b, false, NULL, n + 1); /* no database client (stopping) */
}

/* While fewer transactions than the limit are in flight, the waiting messages go: alone
 * when only one waits, else together. Once the server stopped, all go at once, and q is
 * freed when the last is answered. */
static void queue_pump(smtp_store_queue_t *q)
{
    if (q->pumping)
        return; /* called back from inside the loop below (a transaction failed at once) */
    q->pumping = true;
    while (q->head && (q->in_flight < q->max_in_flight || q->stopped)) {
        int n = 0;
        size_t bytes = 0;
        for (store_req_t *r = q->head; r && n < STORE_BATCH_MAX; r = r->next) {
            if (n > 0 && bytes + r->size > STORE_BATCH_BYTES)
                break;
            bytes += r->size;
            n++;
        }
        if (n == 1)
            send_alone(q->srv, queue_take(q));
        else
            send_batch(q, n);
    }
    q->pumping = false;
    if (!q->stopped)
        metrics_set(q->srv->metrics, "postern_smtp_store_waiting",
                    "Accepted messages waiting for a database transaction", NULL,
                    (double)q->waiting);
    else if (q->in_flight == 0 && !q->head)
        free(q);
}

int smtp_store_start(fe_server_t *srv)
{
    smtp_store_queue_t *q = calloc(1, sizeof *q);
    if (!q)
        return -1;
    q->srv = srv;
    /* One connection of the pool is left to the lookups (RCPT, AUTH), which would otherwise
     * wait behind the deliveries. */
    int pool = db_pool_size(srv->db);
    q->max_in_flight = pool > 1 ? pool - 1 : 1;
    srv->proto_data = q;
    return 0;
}

void smtp_store_stop(fe_server_t *srv)
{
    smtp_store_queue_t *q = srv->proto_data;
    srv->proto_data = NULL;
    if (!q)
        return;
    q->stopped = true;
    queue_pump(q); /* what still waits goes now, the pool answers it or fails it; q goes
                    * with the last answer (at once when none is due) */
}

int smtp_store(smtp_session_t *s, bool reserved)
{
    store_req_t *r = calloc(1, sizeof *r);
    if (!r) {
        if (reserved)
            lim_release(s->fe.srv->lim, s->fe.user, s->queue_id);
        smtp_count_message(s, "deferred");
        smtp_reply(s, 451, "4.3.0 Temporary failure, please try again later");
        smtp_reset_transaction(s);
        return -1;
    }
    r->session = s;
    r->reserved = reserved;
    /* The trace headers go in the room in front of the message (or, longer than it, in
     * front of the message moved): the message moves to the request and is not copied. */
    buf_t head;
    buf_init(&head);
    buf_printf(&head, "Return-Path: <%s>\r\n", s->sender);
    r->relay_off = head.len;
    received_header(s, &head);
    int rc = 0;
    size_t off = 0;
    if (head.len <= s->data_room) {
        off = s->data_room - head.len;
        memcpy(s->data.data + off, head.data, head.len);
    } else {
        buf_consume(&s->data, s->data_room);
        rc = buf_prepend(&s->data, head.data, head.len);
    }
    s->data_room = 0;
    buf_free(&head);
    if (rc < 0) {
        log_error("message not stored: out of memory", "session=%lu id=%s", s->fe.id,
                  s->queue_id);
        if (reserved)
            lim_release(s->fe.srv->lim, s->fe.user, s->queue_id);
        smtp_count_message(s, "deferred");
        smtp_reply(s, 451, "4.3.0 Temporary failure, please try again later");
        smtp_reset_transaction(s);
        store_req_free(r);
        return -1;
    }
    /* The session's buffer becomes the request's: while the message waits, it is held
     * once, and never copied. */
    r->block = s->data.data;
    r->block_len = s->data.len;
    r->off = off;
    r->size = s->data.len - off;
    buf_init(&s->data);
    for (size_t i = 0; i < s->nrcpts; i++) {
        r->nrcpts++;
        r->nrelay += !s->rcpts[i].local;
    }
    array_literal(s, true, &r->local_rcpts);
    array_literal(s, false, &r->relay_rcpts);
    fe_session_wait(&s->fe);
    fe_session_ref(&s->fe);
    smtp_store_queue_t *q = s->fe.srv->proto_data;
    if (!q) {
        send_alone(s->fe.srv, r);
        return 0;
    }
    r->queue = q;
    if (q->tail)
        q->tail->next = r;
    else
        q->head = r;
    q->tail = r;
    q->waiting++;
    queue_pump(q);
    return 0;
}
