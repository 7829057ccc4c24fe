/* The session: replies, states, gathering a command from its lines and literals (RFC 3501
 * section 4.3, RFC 7888), and the skeleton's callbacks. */
#include "imapd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/sasl.h"
#include "base/log.h"
#include "base/text.h"

static const char *state_name(imap_state_t st)
{
    switch (st) {
    case IMAP_STATE_NOT_AUTH: return "not-authenticated";
    case IMAP_STATE_AUTH: return "authenticated";
    case IMAP_STATE_SELECTED: return "selected";
    case IMAP_STATE_LOGOUT: return "logout";
    default: return "none";
    }
}

void imap_enter_state(imap_session_t *s, imap_state_t state)
{
    if (s->state == state)
        return;
    log_debug("state", "session=%lu from=%s to=%s", s->fe.id, state_name(s->state),
              state_name(state));
    s->state = state;
}

/* RFC 3501 section 7.2.1; what is listed depends on TLS and on the login. */
const char *imap_capabilities(imap_session_t *s)
{
    static char caps[512];
    bool before_login = s->state == IMAP_STATE_NOT_AUTH;
    snprintf(caps, sizeof caps,
             "IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT "
             "SPECIAL-USE CONDSTORE CHILDREN");
    if (before_login && fe_session_tls_available(&s->fe))
        strcat(caps, " STARTTLS");
    if (before_login && !fe_session_auth_allowed(&s->fe)) {
        strcat(caps, " LOGINDISABLED");
    } else if (before_login) {
        char mechs[128];
        snprintf(mechs, sizeof mechs, "%s", sasl_mechanisms());
        for (char *save = NULL, *m = strtok_r(mechs, " ", &save); m; m = strtok_r(NULL, " ", &save)) {
            strcat(caps, " AUTH=");
            strcat(caps, m);
        }
    }
    return caps;
}

/* ---- replies ----------------------------------------------------------------------- */

void imap_untagged(imap_session_t *s, const char *fmt, ...)
{
    buf_t line;
    buf_init(&line);
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(&line, fmt, ap);
    va_end(ap);
    if (rc == 0)
        fe_session_reply(&s->fe, "* %.*s", (int)line.len, line.data);
    buf_free(&line);
}

/* The tagged status line that ends a command, written in one piece. */
static void tagged_line(imap_session_t *s, const char *status, const char *code,
                        const char *fmt, va_list ap)
{
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    fe_session_reply(&s->fe, "%s %s%s%s%s%s%s", s->tag[0] ? s->tag : "*", status,
                     code ? " [" : "", code ? code : "", code ? "]" : "", text[0] ? " " : "",
                     text);
}

void imap_ok(imap_session_t *s, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tagged_line(s, "OK", code, fmt, ap);
    va_end(ap);
}

void imap_no(imap_session_t *s, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tagged_line(s, "NO", code, fmt, ap);
    va_end(ap);
}

void imap_no_counted(imap_session_t *s, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tagged_line(s, "NO", code, fmt, ap);
    va_end(ap);
    fe_session_error(&s->fe, &imap_cmd_table);
}

void imap_bad(imap_session_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tagged_line(s, "BAD", NULL, fmt, ap);
    va_end(ap);
    fe_session_error(&s->fe, &imap_cmd_table);
}

void imap_bye(imap_session_t *s, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fe_session_reply(&s->fe, "* BYE %s", text);
    imap_enter_state(s, IMAP_STATE_LOGOUT);
    fe_session_close(&s->fe);
}

/* ---- gathering commands ------------------------------------------------------------ */

static void command_forget(imap_session_t *s)
{
    if (s->req.parsed) {
        imap_command_free(&s->req.cmd);
        s->req.parsed = false;
    }
    memset(&s->req.cmd, 0, sizeof s->req.cmd);
    imap_cmdbuf_reset(&s->in);
    s->tag[0] = '\0';
}

static void remember_tag(imap_session_t *s)
{
    size_t n = imap_parse_tag(s->in.buf.data, s->in.buf.len);
    if (n >= sizeof s->tag)
        n = 0;
    memcpy(s->tag, s->in.buf.data, n);
    s->tag[n] = '\0';
}

/* The command name in a command still being gathered (its second word), upper case. */
static void peek_name(imap_session_t *s, char *out, size_t out_len)
{
    const char *p = s->in.buf.data, *end = p + s->in.buf.len;
    size_t i = 0;
    while (p < end && *p != ' ')
        p++;
    if (p < end)
        p++;
    while (p < end && *p != ' ' && *p != '\r' && i + 1 < out_len)
        out[i++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p), p++;
    out[i] = '\0';
}

/* A literal the command may not have: a synchronising one is simply refused (the client
 * waits for "+" and sends nothing); a non-synchronising one is on its way and is read and
 * dropped, and so is the rest of that command (RFC 7888 section 4). */
static void refuse_literal(imap_session_t *s, uint64_t n, bool nonsync, const char *why)
{
    remember_tag(s);
    if (nonsync) {
        s->refused_literal = true;
        fe_session_read_bytes(&s->fe, n);
    }
    imap_cmdbuf_reset(&s->in);
    imap_no_counted(s, "TOOBIG", "%s", why);
}

static void dispatch(imap_session_t *s, unsigned flags)
{
    /* The buffer ends with NUL for the tokenizer: the command is text up to its end. */
    if (buf_append(&s->in.buf, "", 1) < 0) {
        fe_session_close(&s->fe);
        return;
    }
    s->in.buf.len--;
    fe_dispatch(&s->fe, &imap_cmd_table, s->in.buf.data, s->in.buf.len, flags, &s->req);
}

void imap_line(fe_session_t *fs, char *line, size_t len, unsigned flags)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (s->state == IMAP_STATE_LOGOUT)
        return;
    if (s->idling) {
        imap_idle_line(s, line, len);
        return;
    }
    if (s->discard_rest) {
        /* The rest of a command whose literal was refused: dropped, with any literal it
         * announces (RFC 7888 section 4). */
        uint64_t n;
        bool nonsync;
        if (imap_literal_at_end(line, len, &n, &nonsync) == 1 && nonsync) {
            s->refused_literal = true;
            fe_session_read_bytes(fs, n);
        }
        s->discard_rest = false;
        return;
    }
    if (s->dispatched) { /* the previous command is done with its buffer */
        s->dispatched = false;
        command_forget(s);
    }
    const char *err = NULL;
    int r = imap_cmdbuf_line(&s->in, line, len, &err);
    if (r == 1) {
        s->dispatched = true;
        dispatch(s, flags & ~LINE_BARE_LF); /* bare LF is tolerated (clients are naive) */
        return;
    }
    if (r < 0) {
        remember_tag(s);
        bool lost = s->in.lost_sync;
        uint64_t skip = s->in.skip;
        imap_cmdbuf_reset(&s->in);
        if (lost && skip > 0) {
            s->refused_literal = true;
            fe_session_read_bytes(fs, skip);
        }
        imap_bad(s, "%s", err ? err : "Invalid command");
        return;
    }
    /* A literal follows: APPEND's may be as large as a message, others are small. */
    char name[16];
    peek_name(s, name, sizeof name);
    uint64_t cap = strcmp(name, "APPEND") == 0
                       ? (uint64_t)config_get_long(fs->srv->cfg, "smtp.max_message_size")
                       : IMAP_LITERAL_MAX;
    if (s->in.want > cap) {
        refuse_literal(s, s->in.want, s->in.nonsync,
                       strcmp(name, "APPEND") == 0 ? "Message too large"
                                                   : "Literal too large for this command");
        return;
    }
    if (!s->in.nonsync)
        fe_session_reply(fs, "+ Ready for literal data");
    fe_session_read_bytes(fs, s->in.want);
}

void imap_bytes(fe_session_t *fs, const char *data, size_t len, bool last)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (s->refused_literal) {
        if (last) {
            s->refused_literal = false;
            s->discard_rest = true; /* the rest of that command follows */
        }
        return;
    }
    const char *err = NULL;
    if (imap_cmdbuf_literal(&s->in, data, len, &err) < 0) {
        remember_tag(s);
        imap_cmdbuf_reset(&s->in);
        imap_bad(s, "%s", err ? err : "Unexpected literal data");
    }
}

void imap_line_too_long(fe_session_t *fs)
{
    imap_session_t *s = (imap_session_t *)fs;
    s->tag[0] = '\0';
    imap_cmdbuf_reset(&s->in);
    fe_dispatch_refuse(fs, &imap_cmd_table, NULL, FE_REFUSE_TOO_LONG, NULL);
}

/* ---- the skeleton's callbacks ------------------------------------------------------ */

static void session_init(imap_session_t *s)
{
    if (s->in.lim.max_line)
        return;
    buf_init(&s->select_flags);
    imap_cmdbuf_limits_t lim = {
        .max_line = IMAP_COMMAND_MAX,
        .max_literal = UINT64_MAX / 2, /* each command's own cap is applied in imap_line() */
        .max_literals = IMAP_LITERALS_MAX,
    };
    imap_cmdbuf_init(&s->in, &lim);
}

/* RFC 3501 section 7.1.1: the greeting carries the capabilities (section 7.1). */
void imap_open(fe_session_t *fs)
{
    imap_session_t *s = (imap_session_t *)fs;
    session_init(s);
    imap_enter_state(s, IMAP_STATE_NOT_AUTH);
    fe_session_reply(fs, "* OK [CAPABILITY %s] %s Postern IMAP4rev1 server ready",
                     imap_capabilities(s), fs->srv->hostname);
}

/* RFC 3501 section 6.2.1: after STARTTLS the client asks for the capabilities again;
 * nothing the client said before is kept. */
void imap_tls_ready(fe_session_t *fs)
{
    imap_session_t *s = (imap_session_t *)fs;
    command_forget(s);
}

/* RFC 3501 section 5.4: the autologout timer. */
void imap_timeout(fe_session_t *fs)
{
    imap_session_t *s = (imap_session_t *)fs;
    fe_session_reply(fs, "* BYE Autologout; idle for too long");
    imap_enter_state(s, IMAP_STATE_LOGOUT);
}

void imap_release(fe_session_t *fs)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (s->op && s->op_free)
        s->op_free(s->op);
    s->op = NULL;
    imap_watch_stop(s);
    imap_mailbox_forget(s);
    free(s->mbox.msgs);
    s->mbox.msgs = NULL;
    imap_list_changed(&s->mbox);
    s->mbox.cap = 0;
    if (s->req.parsed)
        imap_command_free(&s->req.cmd);
    s->req.parsed = false;
    imap_cmdbuf_free(&s->in);
    buf_free(&s->select_flags);
}

/* Refused at connect, instead of the greeting (RFC 3501 section 7.1.5). */
void imap_blocked(fe_session_t *fs, const char *reason, const char *until)
{
    imap_session_t *s = (imap_session_t *)fs;
    fe_session_reply(fs, "* BYE [UNAVAILABLE] %s Your address %s is blocked until %s: %s",
                     fs->srv->hostname, fs->peer, until, reason);
    imap_enter_state(s, IMAP_STATE_LOGOUT);
}

/* The server drains: a session that only waits in IDLE says goodbye now; the others finish
 * what they are doing until the drain deadline, and are told then (RFC 3501 section 7.1.5:
 * BYE, then the server closes), unless a FETCH is under way (its literal may be half
 * written) or a BYE was said already. */
void imap_drain(fe_session_t *fs, bool deadline)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (!deadline) {
        if (s->idling)
            imap_bye(s, "Server shutting down, reconnect to another server");
        return;
    }
    if (s->op || s->state == IMAP_STATE_LOGOUT)
        return;
    fe_session_reply(fs, "* BYE [UNAVAILABLE] Server shutting down, reconnect to another server");
    imap_enter_state(s, IMAP_STATE_LOGOUT);
}
