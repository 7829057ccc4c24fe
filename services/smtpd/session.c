/* Session state, replies and the transaction's lifetime. */
#include "smtpd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"

static const char *const state_names[] = { "init", "ready", "mail", "rcpt", "data", "quit" };

void smtp_reply(smtp_session_t *s, int code, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fe_session_printf(&s->fe, "%d %s\r\n", code, text);
    if (code < 500)
        return;
    /* Clients that keep failing are cut off (Postfix: smtpd_hard_error_limit). */
    long max = config_get_long(s->fe.srv->cfg, "smtp.max_errors");
    if (++s->errors >= (unsigned long)(max > 0 ? max : 20)) {
        log_warn("too many errors, disconnecting", "session=%lu client=%s errors=%u", s->fe.id,
                 s->fe.peer, s->errors);
        fe_session_printf(&s->fe, "421 4.7.0 %s Error: too many errors\r\n", s->fe.srv->hostname);
        smtp_enter_state(s, SMTP_STATE_QUIT);
        fe_session_close(&s->fe);
    }
}

void smtp_enter_state(smtp_session_t *s, smtp_state_t state)
{
    if (s->state == state)
        return;
    log_debug("state", "session=%lu from=%s to=%s", s->fe.id, state_names[s->state],
              state_names[state]);
    s->state = state;
}

void smtp_reset_transaction(smtp_session_t *s)
{
    s->sender[0] = '\0';
    for (size_t i = 0; i < s->nrcpts; i++)
        free(s->rcpts[i].address);
    free(s->rcpts);
    s->rcpts = NULL;
    s->nrcpts = 0;
    free(s->pending.address);
    s->pending.address = NULL;
    s->queue_id[0] = '\0';
    buf_reset(&s->data);
    s->data_too_big = s->data_bare_lf = s->data_nul = s->data_long_line = false;
    if (s->state >= SMTP_STATE_MAIL && s->state <= SMTP_STATE_DATA)
        smtp_enter_state(s, SMTP_STATE_READY);
}

/* A transaction needs the configuration, the database and the bus (every accepted
 * message is announced to the limiter). When one is missing the client is told to come
 * back later (RFC 5321 section 4.2.5: 451 is a temporary local error). */
bool smtp_temp_unavailable(smtp_session_t *s)
{
    fe_server_t *srv = s->fe.srv;
    const char *what = !config_loaded(srv->cfg) ? "configuration"
                       : !db_available(srv->db) ? "database"
                       : !bus_connected(srv->bus) ? "bus"
                                                  : NULL;
    if (!what)
        return false;
    log_warn("temporary failure", "session=%lu missing=%s", s->fe.id, what);
    smtp_reply(s, 451, "4.3.0 Temporary failure, please try again later");
    return true;
}

/* The limiter blocked the client in mid-session: say so and hang up. */
void smtp_blocked_now(smtp_session_t *s, const lim_verdict_t *v)
{
    char reason[200] = "too many failures", until[32] = "later";
    int64_t until_ms;
    if (v && v->until_ms) {
        snprintf(reason, sizeof reason, "%.199s", v->reason);
        fe_format_time(v->until_ms, until, sizeof until);
    } else if (lim_blocked(s->fe.srv->lim, s->fe.peer, reason, sizeof reason, &until_ms)) {
        fe_format_time(until_ms, until, sizeof until);
    }
    log_warn("client blocked", "session=%lu client=%s", s->fe.id, s->fe.peer);
    fe_session_printf(&s->fe, "421 4.7.1 %s Your address %s is blocked until %s: %s\r\n",
                      s->fe.srv->hostname, s->fe.peer, until, reason);
    smtp_enter_state(s, SMTP_STATE_QUIT);
    fe_session_close(&s->fe);
}

void smtp_count_message(smtp_session_t *s, const char *result)
{
    char labels[48];
    snprintf(labels, sizeof labels, "result=\"%s\"", result);
    metrics_add(s->fe.srv->metrics, "postern_messages_total",
                "Messages at the end of DATA, by outcome", labels, 1);
}
