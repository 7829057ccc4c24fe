/* pop3d's protocol on the front-end skeleton: its listeners and the callbacks the skeleton
 * calls; main.c runs it, the fuzz harness drives it without a network. */
#include "pop3d.h"

#include <string.h>

static void pop3_open(fe_session_t *fs);
static void pop3_line(fe_session_t *fs, char *line, size_t len, unsigned flags);
static void pop3_line_too_long(fe_session_t *fs);
static void pop3_tls_ready(fe_session_t *fs);
static void pop3_timeout(fe_session_t *fs);
static void pop3_drain(fe_session_t *fs, bool deadline);
static void pop3_release(fe_session_t *fs);
static void pop3_blocked(fe_session_t *fs, const char *reason, const char *until);
static void pop3_overloaded(fe_session_t *fs);

static const fe_listener_conf_t pop3_listeners[] = {
    { "pop3", "POP3_PORT", 110, FE_TLS_NONE, 0 },
    { "pop3s", "POP3S_PORT", 995, FE_TLS_IMPLICIT, 0 },
};

const fe_protocol_t pop3_protocol = {
    .name = "pop3d",
    .service = POSTERN__SERVICE__SERVICE_POP3,
    .session_size = sizeof(pop3_session_t),
    .line_max = POP3_AUTH_LINE_MAX + 2,
    .listeners = pop3_listeners,
    .nlisteners = sizeof pop3_listeners / sizeof pop3_listeners[0],
    .idle_timeout_key = POP3_IDLE_TIMEOUT_KEY,
    .open = pop3_open,
    .line = pop3_line,
    .line_too_long = pop3_line_too_long,
    .tls_ready = pop3_tls_ready,
    .timeout = pop3_timeout,
    .drain = pop3_drain,
    .release = pop3_release,
    .blocked = pop3_blocked,
    .overloaded = pop3_overloaded,
    .start = pop3_maildrop_start,
    .stop = pop3_maildrop_stop,
};

/* RFC 1939 section 4. No APOP (it needs the password in the clear on the server), so no
 * timestamp in angle brackets. */
static void pop3_open(fe_session_t *fs)
{
    pop3_ok((pop3_session_t *)fs, "%s Postern POP3 server ready", fs->srv->hostname);
}

static void pop3_line(fe_session_t *fs, char *line, size_t len, unsigned flags)
{
    pop3_dispatch((pop3_session_t *)fs, line, len, flags);
}

static void pop3_line_too_long(fe_session_t *fs)
{
    fe_dispatch_refuse(fs, &pop3_cmd_table, NULL, FE_REFUSE_TOO_LONG, NULL);
}

/* RFC 2595 section 4: after STLS the client starts over; forget what it said before. */
static void pop3_tls_ready(fe_session_t *fs)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    s->have_user = false;
    memset(s->user_arg, 0, sizeof s->user_arg);
}

/* RFC 1939 section 3: the autologout timer closes the connection without entering the
 * UPDATE state; the maildrop is left as it was. */
static void pop3_timeout(fe_session_t *fs)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_err_nocount(s, NULL, "Autologout; idle for too long");
    pop3_enter_state(s, POP3_STATE_DONE);
}

/* A session goes on while the server drains; at the deadline, as at the autologout, the
 * maildrop is left as it was (no UPDATE state). Said unless a multi-line response is half
 * sent (the reply would be taken for more of the message) or QUIT is deleting (its own
 * answer is still to come). */
static void pop3_drain(fe_session_t *fs, bool deadline)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    if (!deadline)
        return;
    bool mid_response = s->pending && s->send_off > 0;
    if (mid_response || s->state == POP3_STATE_UPDATE || s->state == POP3_STATE_DONE)
        return;
    pop3_err_nocount(s, "SYS/TEMP", "Server shutting down");
    pop3_enter_state(s, POP3_STATE_DONE);
}

static void pop3_release(fe_session_t *fs)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_maildrop_release(s);
    buf_free(&s->out);
}

/* Refused at connect, instead of the greeting. */
static void pop3_blocked(fe_session_t *fs, const char *reason, const char *until)
{
    pop3_blocked_reply((pop3_session_t *)fs, reason, until);
}

/* Over the memory budget: refused instead of the greeting (RFC 3206 section 4: SYS/TEMP,
 * a temporary condition of the server). */
static void pop3_overloaded(fe_session_t *fs)
{
    pop3_err_nocount((pop3_session_t *)fs, "SYS/TEMP", "Server busy, try again later");
}
