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
    fe_session_reply(&s->fe, "%d %s", code, text);
    if (code >= 500)
        fe_session_error(&s->fe, &smtp_cmd_table);
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
    buf_free(&s->data); /* a transaction's memory goes with it */
    s->data_too_big = s->data_bare_lf = s->data_nul = s->data_long_line = false;
    s->data_no_memory = false;
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

void smtp_blocked_now(smtp_session_t *s, const lim_verdict_t *v)
{
    fe_session_blocked_now(&s->fe, &smtp_cmd_table, v);
}

void smtp_count_message(smtp_session_t *s, const char *result)
{
    char labels[48];
    snprintf(labels, sizeof labels, "result=\"%s\"", result);
    metrics_add(s->fe.srv->metrics, "postern_messages_total",
                "Messages at the end of DATA, by outcome", labels, 1);
}
