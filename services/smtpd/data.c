/* DATA: reading the message (RFC 5321 section 4.1.1.4, dot-unstuffing section 4.5.2),
 * storing it in one PostgreSQL statement, and announcing it on the bus (best effort: a
 * bus that is down never fails a delivery). The reply 250 goes out only after the
 * statement has committed. */
#include "smtpd.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "bus/events.h"
#include "bus/mailwatch.h"

static void make_queue_id(char *out, size_t len)
{
    static const char digits[] = "0123456789BCDFGHJKLMNPQRSTVWXZ";
    unsigned char r[10];
    RAND_bytes(r, sizeof r);
    size_t i = 0;
    for (; i < sizeof r && i + 1 < len; i++)
        out[i] = digits[r[i] % (sizeof digits - 1)];
    out[i] = '\0';
}

void smtp_data_start(smtp_session_t *s)
{
    if (smtp_temp_unavailable(s))
        return;
    buf_free(&s->data);
    s->data_room = 0;
    s->data_too_big = s->data_bare_lf = s->data_nul = s->data_long_line = false;
    s->data_no_memory = false;
    /* Read once: the setting is looked up (and parsed) by name, and a message has many lines. */
    s->data_max = (size_t)config_get_long(s->fe.srv->cfg, "smtp.max_message_size");
    make_queue_id(s->queue_id, sizeof s->queue_id);
    smtp_enter_state(s, SMTP_STATE_DATA);
    smtp_reply(s, 354, "End data with <CR><LF>.<CR><LF>");
}

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

/* A PostgreSQL text[] literal; addresses never hold quotes or backslashes after
 * smtp_path_parse(), but escape them anyway. */
static void array_literal(smtp_session_t *s, bool local, buf_t *out)
{
    buf_puts(out, "{");
    bool first = true;
    for (size_t i = 0; i < s->nrcpts; i++) {
        if (s->rcpts[i].local != local)
            continue;
        buf_puts(out, first ? "\"" : ",\"");
        first = false;
        for (const char *c = s->rcpts[i].address; *c; c++) {
            if (*c == '"' || *c == '\\')
                buf_append(out, "\\", 1);
            buf_append(out, c, 1);
        }
        buf_puts(out, "\"");
    }
    buf_puts(out, "}");
}

/* A message on its way to PostgreSQL. raw is the message as stored for local recipients:
 * Return-Path, Received, then what the client sent; the copy for the outbound queue is
 * the same bytes from relay_off on (no Return-Path). The buffers are the statement's
 * parameters, freed once db_query() has them. */
typedef struct store_req {
    smtp_session_t *session;
    bool reserved; /* the limiter counted this message in advance */
    buf_t raw, local_rcpts, relay_rcpts;
    size_t relay_off;
    size_t size;
    uint32_t nrcpts, nrelay;
} store_req_t;

static void store_req_free(store_req_t *r)
{
    buf_free(&r->raw);
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

static void stored_cb(void *arg, PGresult *res)
{
    store_req_t *r = arg;
    smtp_session_t *s = r->session;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_error("message not stored", "session=%lu id=%s error=\"%s\"", s->fe.id, s->queue_id,
                  res ? PQresultErrorMessage(res) : "database unavailable");
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

/* Stores the transaction's message: the session waits, and stored_cb replies and resumes
 * it. Returns 0, or -1 when it failed at once (out of memory): the reply is written, the
 * transaction reset, and the session was not made to wait. */
static int smtp_store(smtp_session_t *s, bool reserved)
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
    r->raw = s->data;
    buf_init(&s->data);
    for (size_t i = 0; i < s->nrcpts; i++) {
        r->nrcpts++;
        r->nrelay += !s->rcpts[i].local;
    }
    const char *msg = r->raw.data + off;
    r->size = r->raw.len - off;
    array_literal(s, true, &r->local_rcpts);
    array_literal(s, false, &r->relay_rcpts);
    const char *relay_raw = r->nrelay ? msg + r->relay_off : "";
    size_t relay_len = r->nrelay ? r->size - r->relay_off : 0;
    const char *values[6] = { s->queue_id, s->sender, r->local_rcpts.data, msg,
                              r->relay_rcpts.data, relay_raw };
    int lengths[6] = { 0, 0, 0, (int)r->size, 0, (int)relay_len };
    int binary[6] = { 0, 0, 0, 1, 0, 1 };
    fe_session_wait(&s->fe);
    fe_session_ref(&s->fe);
    /* The message's buffer goes to the query, which sends the message from it: while the
     * statement waits for a connection, the message is held once, and never copied. */
    char *block = r->raw.data;
    size_t block_len = r->raw.len;
    buf_init(&r->raw);
    if (db_query_take(s->fe.srv->db,
                      "SELECT postern_deliver($1, $2, $3::text[], $4, $5::text[], $6)", 6,
                      values, lengths, binary, block, block_len, stored_cb, r) < 0) {
        stored_cb(r, NULL); /* no database client (stopping): a temporary failure */
        return 0;
    }
    buf_free(&r->local_rcpts);
    buf_free(&r->relay_rcpts);
    return 0;
}

static void send_check_cb(void *arg, const lim_verdict_t *v)
{
    smtp_session_t *s = arg;
    bool allow = v->answered ? v->verdict == POSTERN__VERDICT__VERDICT_ALLOW : false;
    /* A slot reserved for a message that is not stored goes back. So does one the limiter
     * may have reserved without its answer arriving in time: a release of a slot it does
     * not hold changes nothing. */
    if (s->fe.closing) {
        if (allow || !v->answered)
            lim_release(s->fe.srv->lim, s->fe.user, s->queue_id);
        fe_session_unref(&s->fe);
        return;
    }
    if (!v->answered) {
        lim_release(s->fe.srv->lim, s->fe.user, s->queue_id);
        const char *policy = config_get(s->fe.srv->cfg, "limiter.send_on_timeout");
        allow = policy && strcmp(policy, "allow") == 0;
        log_warn("limiter did not answer a send check", "session=%lu id=%s policy=%s", s->fe.id,
                 s->queue_id, policy ? policy : "tempfail");
    }
    if (allow) {
        if (smtp_store(s, v->answered) < 0)
            fe_session_resume(&s->fe);
        fe_session_unref(&s->fe);
        return;
    }
    bool permanent = v->answered && v->verdict == POSTERN__VERDICT__VERDICT_DISABLED;
    smtp_count_message(s, permanent ? "rejected" : "deferred");
    if (!v->answered) {
        smtp_reply(s, 451, "4.7.1 Sending limit service unavailable, please try again later");
    } else if (v->verdict == POSTERN__VERDICT__VERDICT_DISABLED) {
        log_warn("send refused: account disabled", "session=%lu user=\"%s\"", s->fe.id, s->fe.user);
        smtp_reply(s, 550, "5.7.1 Sending is disabled for %s: %s", s->fe.user, v->reason);
    } else if (v->verdict == POSTERN__VERDICT__VERDICT_BLOCKED) {
        smtp_blocked_now(s, v);
    } else {
        log_warn("send refused: throttled", "session=%lu user=\"%s\" retry_after=%u", s->fe.id,
                 s->fe.user, v->retry_after_s);
        smtp_reply(s, 451, "4.7.1 Sending limit reached for %s (%s); try again in %u seconds",
                   s->fe.user, v->reason, v->retry_after_s ? v->retry_after_s : 1);
    }
    smtp_reset_transaction(s);
    fe_session_resume(&s->fe);
    fe_session_unref(&s->fe);
}

static void smtp_data_end(smtp_session_t *s)
{
    long max = (long)s->data_max;
    const char *problem = NULL;
    int code = 554;
    char text[160];
    if (s->data_too_big) {
        code = 552;
        snprintf(text, sizeof text, "5.3.4 Message size exceeds fixed limit of %ld bytes", max);
        problem = text;
    } else if (s->data_no_memory) {
        code = 451; /* RFC 5321 section 4.2.5: ours to fail, the client's to retry */
        problem = "4.3.0 Temporary failure, please try again later";
    } else if (s->data_bare_lf) {
        problem = "5.6.0 Message contains bare LF; lines must end with CRLF";
    } else if (s->data_nul) {
        problem = "5.6.0 Message contains NUL bytes";
    } else if (s->data_long_line) {
        problem = "5.6.0 Message contains a line that is too long";
    }
    if (problem) {
        log_info("message refused", "session=%lu client=%s reason=\"%s\"", s->fe.id, s->fe.peer,
                 problem);
        smtp_reset_transaction(s);
        smtp_count_message(s, code < 500 ? "deferred" : "rejected");
        smtp_reply(s, code, "%s", problem);
        return;
    }
    if (!s->fe.user) {
        smtp_store(s, false);
        return;
    }
    /* HAMR: an authenticated user's message is accepted only if the limiter allows it. */
    fe_session_wait(&s->fe);
    fe_session_ref(&s->fe);
    if (lim_check_send(s->fe.srv->lim, POSTERN__SERVICE__SERVICE_SMTP, s->fe.user, s->fe.peer,
                       (unsigned)s->nrcpts, s->queue_id, s->fe.srv->instance, send_check_cb,
                       s) < 0) {
        fe_session_unref(&s->fe);
        smtp_reply(s, 451, "4.3.0 Temporary failure, please try again later");
        smtp_reset_transaction(s);
        fe_session_resume(&s->fe);
    }
}

void smtp_data_line(smtp_session_t *s, const char *line, size_t len, unsigned flags)
{
    /* Only <CRLF>.<CRLF> ends the data: a "." ended by a bare LF does not (SMTP
     * smuggling), and such a line spoils the message instead. */
    if (flags & LINE_BARE_LF) {
        s->data_bare_lf = true;
        return;
    }
    if (len == 1 && line[0] == '.') {
        smtp_data_end(s);
        return;
    }
    if (flags & LINE_NUL)
        s->data_nul = true;
    if (line[0] == '.') {
        line++;
        len--;
    }
    if (s->data_too_big || s->data_no_memory)
        return; /* read on to the end, keeping nothing: the reply comes then */
    /* The buffer never grows past the limit (and its NUL): a session in DATA holds at most
     * smtp.max_message_size bytes of message; one over it holds none. */
    size_t max = s->data_max;
    if (s->data.len - s->data_room + len + 2 > max) {
        s->data_too_big = true;
        buf_free(&s->data);
        return;
    }
    /* Room for the trace headers first: they go in front of the message where it lies,
     * which moves no byte of it (a prepend would move all of them). */
    static const char room[SMTP_HEAD_ROOM];
    if (s->data.len == 0 && buf_append(&s->data, room, sizeof room) == 0)
        s->data_room = sizeof room;
    if (s->data_room == 0 ||
        buf_append_capped(&s->data, line, len, max + 1 + s->data_room) < 0 ||
        buf_append_capped(&s->data, "\r\n", 2, max + 1 + s->data_room) < 0) {
        log_error("message dropped: out of memory", "session=%lu size=%zu", s->fe.id,
                  s->data.len);
        s->data_no_memory = true;
        buf_free(&s->data);
    }
}
