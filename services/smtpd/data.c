/* DATA: reading the message (RFC 5321 section 4.1.1.4, dot-unstuffing section 4.5.2) and,
 * for an authenticated sender, the limiter's send check; store.c stores it. */
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
