/* smtpd's protocol on the front-end skeleton: its listeners and the callbacks the skeleton
 * calls; main.c runs it, the fuzz harness drives it without a network. */
#include "smtpd.h"

#include <stdlib.h>

static void smtp_open(fe_session_t *fs);
static void smtp_line(fe_session_t *fs, char *line, size_t len, unsigned flags);
static void smtp_line_too_long(fe_session_t *fs);
static void smtp_tls_ready(fe_session_t *fs);
static void smtp_timeout(fe_session_t *fs);
static void smtp_drain(fe_session_t *fs, bool deadline);
static void smtp_release(fe_session_t *fs);
static void smtp_blocked(fe_session_t *fs, const char *reason, const char *until);
static void smtp_overloaded(fe_session_t *fs);

static const fe_listener_conf_t smtp_listeners[] = {
    { "smtp", "SMTP_PORT", 25, FE_TLS_NONE, SMTP_LISTENER_MX },
    { "submission", "SUBMISSION_PORT", 587, FE_TLS_NONE, SMTP_LISTENER_SUBMISSION },
    { "smtps", "SMTPS_PORT", 465, FE_TLS_IMPLICIT, SMTP_LISTENER_SUBMISSION },
};

const fe_protocol_t smtp_protocol = {
    .name = "smtpd",
    .service = POSTERN__SERVICE__SERVICE_SMTP,
    .session_size = sizeof(smtp_session_t),
    .line_max = SMTP_AUTH_LINE_MAX + 2,
    .listeners = smtp_listeners,
    .nlisteners = sizeof smtp_listeners / sizeof smtp_listeners[0],
    .idle_timeout_key = "smtp.idle_timeout",
    .open = smtp_open,
    .line = smtp_line,
    .line_too_long = smtp_line_too_long,
    .tls_ready = smtp_tls_ready,
    .timeout = smtp_timeout,
    .drain = smtp_drain,
    .release = smtp_release,
    .blocked = smtp_blocked,
    .overloaded = smtp_overloaded,
    .start = smtp_store_start,
    .stop = smtp_store_stop,
};

static void smtp_open(fe_session_t *fs)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    buf_init(&s->data);
    smtp_reply(s, 220, "%s ESMTP Postern", fs->srv->hostname);
}

static void smtp_line(fe_session_t *fs, char *line, size_t len, unsigned flags)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    if (s->state == SMTP_STATE_DATA)
        smtp_data_line(s, line, len, flags);
    else
        smtp_dispatch(s, line, len, flags);
}

static void smtp_line_too_long(fe_session_t *fs)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    if (s->state == SMTP_STATE_DATA)
        s->data_long_line = true;
    else
        fe_dispatch_refuse(fs, &smtp_cmd_table, NULL, FE_REFUSE_TOO_LONG, NULL);
}

/* RFC 3207 section 4.2: after the handshake the client starts over with EHLO. */
static void smtp_tls_ready(fe_session_t *fs)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    smtp_reset_transaction(s);
    s->helo[0] = '\0';
    s->esmtp = false;
    smtp_enter_state(s, SMTP_STATE_INIT);
}

static void smtp_timeout(fe_session_t *fs)
{
    smtp_reply((smtp_session_t *)fs, 421, "4.4.2 %s Error: timeout exceeded", fs->srv->hostname);
}

/* A session goes on while the server drains; at the deadline, RFC 5321 section 3.8: 421,
 * then close, whatever the client was doing (section 4.2.5: a message not acknowledged is
 * the client's to send again). */
static void smtp_drain(fe_session_t *fs, bool deadline)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    if (!deadline)
        return;
    fe_session_reply(fs, "421 4.3.2 %s Service shutting down", fs->srv->hostname);
    smtp_enter_state(s, SMTP_STATE_QUIT);
}

static void smtp_release(fe_session_t *fs)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    smtp_reset_transaction(s);
    buf_free(&s->data);
}

/* Refused at connect (RFC 5321 section 3.1: 554 instead of the greeting). */
static void smtp_blocked(fe_session_t *fs, const char *reason, const char *until)
{
    fe_session_reply(fs, "554 5.7.1 %s Your address %s is blocked until %s: %s",
                     fs->srv->hostname, fs->peer, until, reason);
}

/* Over the memory budget (RFC 5321 section 3.1: 421 instead of the greeting; RFC 3463
 * X.3.2: system not accepting network messages). */
static void smtp_overloaded(fe_session_t *fs)
{
    fe_session_reply(fs, "421 4.3.2 %s Service temporarily unavailable, try again later",
                     fs->srv->hostname);
}
