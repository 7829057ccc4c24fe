/* Replies, the session's state and waiting for the database. */
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
    fe_session_reply(&s->fe, "%s%s%s%s%s%s", status, code ? " [" : "", code ? code : "",
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
    /* Clients that keep failing are cut off (lib/svc/dispatch.h). */
    fe_session_error(&s->fe, &pop3_cmd_table);
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
    fe_session_reply(&s->fe, "-ERR [LOGIN-DELAY] %s Your address %s is blocked until %s: %s",
                     s->fe.srv->hostname, s->fe.peer, until, reason);
}
