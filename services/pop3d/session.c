/* Replies, the session's state, error counting and waiting for the database. */
#include "pop3d.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/log.h"

static const char *const state_names[] = { "authorization", "opening", "transaction", "update",
                                           "done" };

long pop3_setting(pop3_session_t *s, const char *key, long fallback)
{
    /* A key lib/base/settings.c does not know yet has no default: use ours. */
    const char *v = config_get(s->fe.srv->cfg, key);
    long n = v ? strtol(v, NULL, 10) : 0;
    return n > 0 ? n : fallback;
}

int pop3_write(pop3_session_t *s, const void *data, size_t len)
{
    if (!s->fe.conn || s->fe.closing)
        return -1;
    return conn_write(s->fe.conn, data, len);
}

static void reply(pop3_session_t *s, const char *status, const char *code, const char *fmt,
                  va_list ap)
{
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    fe_session_printf(&s->fe, "%s%s%s%s%s%s\r\n", status, code ? " [" : "", code ? code : "",
                      code ? "]" : "", *text ? " " : "", text);
}

void pop3_ok(pop3_session_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply(s, "+OK", NULL, fmt, ap);
    va_end(ap);
}

void pop3_err_nocount(pop3_session_t *s, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply(s, "-ERR", code, fmt, ap);
    va_end(ap);
}

void pop3_err(pop3_session_t *s, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply(s, "-ERR", code, fmt, ap);
    va_end(ap);
    /* Clients that keep failing are cut off (smtpd does the same with smtp.max_errors). */
    long max = pop3_setting(s, POP3_MAX_ERRORS_KEY, POP3_MAX_ERRORS_DEFAULT);
    if (++s->errors < (unsigned long)max)
        return;
    log_warn("too many errors, disconnecting", "session=%lu client=%s errors=%u", s->fe.id,
             s->fe.peer, s->errors);
    fe_session_printf(&s->fe, "-ERR Too many errors, closing the connection\r\n");
    pop3_enter_state(s, POP3_STATE_DONE);
    fe_session_close(&s->fe);
}

void pop3_enter_state(pop3_session_t *s, pop3_state_t state)
{
    if (s->state == state)
        return;
    log_debug("state", "session=%lu from=%s to=%s", s->fe.id, state_names[s->state],
              state_names[state]);
    s->state = state;
}

void pop3_wait(pop3_session_t *s)
{
    s->pending = true;
    fe_session_wait(&s->fe);
}

void pop3_resume(pop3_session_t *s)
{
    s->pending = false;
    fe_session_resume(&s->fe);
}

/* RFC 2449 section 8.1.1: LOGIN-DELAY tells a client that logging in again now is
 * pointless, which is what a block means; the text says until when and why. */
void pop3_blocked_reply(pop3_session_t *s, const char *reason, const char *until)
{
    fe_session_printf(&s->fe, "-ERR [LOGIN-DELAY] %s Your address %s is blocked until %s: %s\r\n",
                      s->fe.srv->hostname, s->fe.peer, until, reason);
}

/* The limiter blocked the client during a login: say so and hang up. v says why and until
 * when; without it (or its time) the local copy of the blocks is asked. */
void pop3_blocked_now(pop3_session_t *s, const lim_verdict_t *v)
{
    char reason[200] = "too many failed logins", until[32] = "later";
    int64_t until_ms;
    if (v && v->until_ms) {
        snprintf(reason, sizeof reason, "%.199s", v->reason);
        fe_format_time(v->until_ms, until, sizeof until);
    } else if (lim_blocked(s->fe.srv->lim, s->fe.peer, reason, sizeof reason, &until_ms)) {
        fe_format_time(until_ms, until, sizeof until);
    }
    log_warn("client blocked", "session=%lu client=%s", s->fe.id, s->fe.peer);
    pop3_blocked_reply(s, reason, until);
    pop3_enter_state(s, POP3_STATE_DONE);
    fe_session_close(&s->fe);
}

/* RFC 2595 section 2.1 and DESIGN.md: passwords only inside TLS unless the administrator
 * allows plaintext. */
bool pop3_auth_allowed(pop3_session_t *s)
{
    return fe_session_tls(&s->fe) || config_get_bool(s->fe.srv->cfg, "auth.allow_plaintext");
}
