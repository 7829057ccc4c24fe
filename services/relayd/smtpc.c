/* The SMTP client session: one state enum changed only through smtpc_enter_state(), a
 * queue of the replies still expected (a pipelined group puts several there at once,
 * RFC 2920 section 3.1; without PIPELINING it holds one), and one timer that bounds each
 * wait (RFC 5321 section 4.5.3.2). */
#include "smtpc.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/log.h"
#include "net/conn.h"
#include "reply.h"

#define SMTPC_INPUT_MAX (64 * 1024)
#define SMTPC_CHUNK (64 * 1024)       /* message bytes encoded per write */
#define SMTPC_HIGH_WATER (256 * 1024) /* unsent bytes above which the body waits */
#define SMTPC_LOW_WATER (64 * 1024)   /* ... until they are down to this */
#define SMTPC_PATH_MAX 256            /* RFC 5321 section 4.5.3.1.3: a path, "<>" included */

typedef enum smtpc_state {
    SMTPC_CONNECTING,
    SMTPC_SETUP,     /* greeting, EHLO/HELO, STARTTLS: replies expected */
    SMTPC_HANDSHAKE, /* TLS handshake after STARTTLS */
    SMTPC_IDLE,      /* ready for a transaction */
    SMTPC_BUSY,      /* a transaction's replies expected */
    SMTPC_BODY,      /* sending the message */
    SMTPC_QUITTING,
    SMTPC_OVER,
} smtpc_state_t;

static const char *const state_names[] = {
    "connecting", "setup", "handshake", "idle", "busy", "body", "quitting", "over",
};

/* The command whose reply is expected. */
typedef enum smtpc_cmd {
    CMD_GREETING,
    CMD_EHLO,
    CMD_HELO,
    CMD_STARTTLS,
    CMD_RSET,
    CMD_MAIL,
    CMD_RCPT,
    CMD_DATA,
    CMD_DOT,
    CMD_QUIT,
} smtpc_cmd_t;

static const char *const cmd_names[] = {
    "greeting", "EHLO", "HELO", "STARTTLS", "RSET", "MAIL FROM", "RCPT TO", "DATA",
    "end of data", "QUIT",
};

typedef struct expect {
    smtpc_cmd_t cmd;
    size_t rcpt; /* CMD_RCPT: the recipient's index */
} expect_t;

typedef struct smtpc_tx {
    char *sender;
    char **rcpts;
    size_t nrcpts;
    const char *data; /* the caller's */
    size_t len;
    bool eight_bit;
    bool utf8;              /* MAIL FROM carries SMTPUTF8 */
    smtpc_reply_t *results; /* code 0: not decided yet */
    size_t next_rcpt;       /* without PIPELINING: the next RCPT to send */
    size_t accepted;        /* RCPTs answered 2xx */
    bool mail_ok, mail_failed;
    bool dot_ignored; /* 354 came with no recipient to deliver to: an empty message ends it */
    size_t body_pos;
    bool at_bol, prev_cr; /* body encoder: at a line start; the last byte sent was CR */
    smtpc_done_cb done;
    void *arg;
} smtpc_tx_t;

struct smtpc {
    size_t *live;      /* smtpc_opts_t.live */
    conn_t *conn;      /* NULL once CONN_CLOSED came */
    bool conn_closing; /* conn_close() called */
    const char *close_why; /* why we closed it, when that is a failure */
    uv_timer_t timer;
    smtpc_state_t state;
    char helo_name[256];
    char peer_name[256];
    char peer[INET6_ADDRSTRLEN + 300];
    smtpc_tls_policy_t policy;
    tls_client_t *tls;
    smtpc_timeouts_t to;
    smtpc_ready_cb ready;
    void *arg;
    bool user_closed; /* smtpc_close() called: no more callbacks */
    bool freeing;
    bool deferred;    /* done() of a transaction decided locally waits for the timer */
    reply_parser_t parser;
    expect_t *q;
    size_t qhead, qlen, qcap;
    ehlo_caps_t caps; /* what the last EHLO offered; nothing after HELO */
    bool need_rset;
    bool tls_on, verified;
    char tls_version[32];
    char tls_cipher[64];
    char greeting[512];
    smtpc_tx_t *tx;
    buf_t out;
};

static void on_conn(conn_t *conn, conn_event_t ev, void *arg);
static void on_timer(uv_timer_t *t);

/* ---- replies ---------------------------------------------------------------------------- */

static void copy_text(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    for (; src[n] && n + 1 < cap; n++)
        dst[n] = src[n] == '\n' ? ' ' : src[n];
    dst[n] = '\0';
}

static void reply_remote(smtpc_reply_t *out, const reply_t *r)
{
    out->code = r->code;
    memcpy(out->status, r->status, sizeof out->status);
    copy_text(out->text, sizeof out->text, r->text);
    out->local = false;
}

static void reply_vlocal(smtpc_reply_t *out, int code, const char *status, const char *fmt,
                         va_list ap) __attribute__((format(printf, 4, 0)));
static void reply_vlocal(smtpc_reply_t *out, int code, const char *status, const char *fmt,
                         va_list ap)
{
    out->code = code;
    snprintf(out->status, sizeof out->status, "%s", status);
    vsnprintf(out->text, sizeof out->text, fmt, ap);
    out->local = true;
}

static void reply_local(smtpc_reply_t *out, int code, const char *status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_local(smtpc_reply_t *out, int code, const char *status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    reply_vlocal(out, code, status, fmt, ap);
    va_end(ap);
}

static bool positive(int code)
{
    return code >= 200 && code < 300;
}

/* ---- state, timer, expected replies ------------------------------------------------------ */

static void smtpc_enter_state(smtpc_t *c, smtpc_state_t s)
{
    if (c->state != s)
        log_debug("smtp client state", "peer=%s from=%s to=%s", c->peer, state_names[c->state],
                  state_names[s]);
    c->state = s;
}

static unsigned pick(unsigned given, unsigned fallback)
{
    return given ? given : fallback;
}

static unsigned cmd_timeout(const smtpc_t *c, smtpc_cmd_t cmd)
{
    switch (cmd) {
    case CMD_GREETING:
        return c->to.greeting;
    case CMD_EHLO:
    case CMD_HELO:
    case CMD_STARTTLS:
        return c->to.helo;
    case CMD_RSET:
    case CMD_MAIL:
        return c->to.mail;
    case CMD_RCPT:
        return c->to.rcpt;
    case CMD_DATA:
        return c->to.data_init;
    case CMD_DOT:
        return c->to.data_end;
    case CMD_QUIT:
        return c->to.quit;
    }
    return c->to.mail;
}

static void arm(smtpc_t *c, unsigned ms)
{
    uv_timer_start(&c->timer, on_timer, ms, 0);
}

static void expect(smtpc_t *c, smtpc_cmd_t cmd, size_t rcpt)
{
    /* The queue is only ever appended to while replies drain from its head; when empty it
     * starts over. smtpc_send() made room for its group. */
    if (c->qlen == 0)
        c->qhead = 0;
    c->q[c->qhead + c->qlen] = (expect_t){ cmd, rcpt };
    if (++c->qlen == 1)
        arm(c, cmd_timeout(c, cmd));
}

static expect_t pop(smtpc_t *c)
{
    expect_t e = c->q[c->qhead++];
    if (--c->qlen > 0)
        arm(c, cmd_timeout(c, c->q[c->qhead].cmd));
    else
        uv_timer_stop(&c->timer);
    return e;
}

/* ---- ending ---------------------------------------------------------------------------- */

static void tx_free(smtpc_tx_t *tx)
{
    if (!tx)
        return;
    free(tx->sender);
    for (size_t i = 0; i < tx->nrcpts && tx->rcpts; i++)
        free(tx->rcpts[i]);
    free(tx->rcpts);
    free(tx->results);
    free(tx);
}

static void free_cb(uv_handle_t *h)
{
    smtpc_t *c = h->data;
    if (c->live)
        (*c->live)--;
    tx_free(c->tx);
    reply_parser_free(&c->parser);
    buf_free(&c->out);
    free(c->q);
    free(c);
}

/* The memory goes once the user let go and the conn is gone. */
static void maybe_free(smtpc_t *c)
{
    if (!c->user_closed || c->conn || c->freeing)
        return;
    c->freeing = true;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, free_cb);
}

static void close_conn(smtpc_t *c, bool quit)
{
    if (!c->conn || c->conn_closing)
        return;
    if (quit)
        conn_write(c->conn, "QUIT\r\n", 6);
    c->conn_closing = true;
    conn_close(c->conn);
}

/* The transaction is over: done() with every recipient's result. */
static void tx_finish(smtpc_t *c)
{
    smtpc_tx_t *tx = c->tx;
    c->tx = NULL;
    if (c->state != SMTPC_OVER)
        smtpc_enter_state(c, SMTPC_IDLE);
    for (size_t i = 0; i < tx->nrcpts; i++)
        if (tx->results[i].code == 0)
            reply_local(&tx->results[i], 451, "4.3.0", "no reply from %s", c->peer);
    if (!c->user_closed)
        tx->done(tx->arg, c, tx->results, tx->nrcpts);
    tx_free(tx);
}

static void decide_open(smtpc_tx_t *tx, const smtpc_reply_t *r)
{
    for (size_t i = 0; i < tx->nrcpts; i++)
        if (tx->results[i].code == 0)
            tx->results[i] = *r;
}

/* The session ends with r: a setup failure goes to ready(), a transaction's open
 * recipients get r. quit: say QUIT first (the server is still talking to us). */
static void session_fail(smtpc_t *c, const smtpc_reply_t *r, bool quit)
{
    smtpc_state_t was = c->state;
    char text[sizeof r->text];
    snprintf(text, sizeof text, "%s", r->text);
    for (char *p = text; *p; p++)
        if (*p == '"')
            *p = '\'';
    if (was != SMTPC_IDLE)
        log_warn("smtp session failed", "peer=%s state=%s reply=\"%d %s%s%s\" local=%s", c->peer,
                 state_names[was], r->code, r->status, r->status[0] ? " " : "", text,
                 r->local ? "yes" : "no");
    smtpc_enter_state(c, SMTPC_OVER);
    uv_timer_stop(&c->timer);
    c->qlen = 0;
    c->deferred = false;
    close_conn(c, quit);
    if (was == SMTPC_CONNECTING || was == SMTPC_SETUP || was == SMTPC_HANDSHAKE) {
        if (!c->user_closed)
            c->ready(c->arg, c, r);
    } else if (c->tx) {
        decide_open(c->tx, r);
        tx_finish(c);
    }
}

static void fail_local(smtpc_t *c, int code, const char *status, bool quit, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void fail_local(smtpc_t *c, int code, const char *status, bool quit, const char *fmt, ...)
{
    smtpc_reply_t r;
    va_list ap;
    va_start(ap, fmt);
    reply_vlocal(&r, code, status, fmt, ap);
    va_end(ap);
    session_fail(c, &r, quit);
}

/* ---- writing ------------------------------------------------------------------------- */

/* Writes what c->out holds. A failure closes the connection; the session fails from the
 * loop when CONN_CLOSED comes, so that no callback runs inside smtpc_send(). */
static int flush_out(smtpc_t *c)
{
    int rc = conn_write(c->conn, c->out.data, c->out.len);
    buf_reset(&c->out);
    if (rc < 0) {
        c->close_why = "cannot write";
        close_conn(c, false);
        return -1;
    }
    return 0;
}

static int send_cmd(smtpc_t *c, smtpc_cmd_t cmd, size_t rcpt, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int send_cmd(smtpc_t *c, smtpc_cmd_t cmd, size_t rcpt, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&c->out, fmt, ap);
    va_end(ap);
    if (flush_out(c) < 0)
        return -1;
    expect(c, cmd, rcpt);
    return 0;
}

/* ---- session setup ------------------------------------------------------------------------ */

static void setup_done(smtpc_t *c)
{
    smtpc_enter_state(c, SMTPC_IDLE);
    if (!c->user_closed)
        c->ready(c->arg, c, NULL);
}

static void send_ehlo(smtpc_t *c)
{
    memset(&c->caps, 0, sizeof c->caps);
    send_cmd(c, CMD_EHLO, 0, "EHLO %s\r\n", c->helo_name);
}

static bool tls_required(const smtpc_t *c)
{
    return c->policy != SMTPC_TLS_MAY;
}

/* After the 220 to STARTTLS: the server waits for our TLS hello, so a failure here closes
 * without QUIT. */
static void start_tls(smtpc_t *c)
{
    const char *name = c->peer_name[0] ? c->peer_name : NULL;
    SSL *ssl = tls_client_new_ssl(c->tls, name, c->policy == SMTPC_TLS_VERIFY ? name : NULL);
    if (!ssl) {
        fail_local(c, 421, "4.7.5", false, "cannot start TLS with %s", c->peer);
        return;
    }
    smtpc_enter_state(c, SMTPC_HANDSHAKE);
    arm(c, c->to.helo);
    conn_start_tls(c->conn, ssl, false);
}

/* After EHLO (or HELO): STARTTLS as the policy asks, or ready. */
static void after_hello(smtpc_t *c)
{
    if (c->tls_on || (!tls_required(c) && (!c->caps.starttls || !c->tls))) {
        setup_done(c);
    } else if (!c->caps.starttls) {
        fail_local(c, 421, "4.7.4", true, "TLS is required, but was not offered by %s", c->peer);
    } else if (!c->tls) {
        fail_local(c, 421, "4.7.5", true, "TLS is required, but no TLS client is configured");
    } else if (c->policy == SMTPC_TLS_VERIFY && !c->peer_name[0]) {
        fail_local(c, 421, "4.7.5", true,
                   "cannot verify the certificate of %s: no host name to check it against",
                   c->peer);
    } else {
        send_cmd(c, CMD_STARTTLS, 0, "STARTTLS\r\n");
    }
}

static void on_setup_reply(smtpc_t *c, smtpc_cmd_t cmd, const reply_t *r)
{
    smtpc_reply_t fail;
    reply_remote(&fail, r);
    switch (cmd) {
    case CMD_GREETING:
        copy_text(c->greeting, sizeof c->greeting, r->text);
        if (r->code != 220) /* RFC 5321 section 3.1: 554 (or anything else) ends it */
            session_fail(c, &fail, true);
        else
            send_ehlo(c);
        return;
    case CMD_EHLO:
        if (positive(r->code)) {
            ehlo_caps_parse(r->text, &c->caps);
            after_hello(c);
        } else if (r->code >= 500 && !c->tls_on) { /* section 3.2: fall back to HELO */
            send_cmd(c, CMD_HELO, 0, "HELO %s\r\n", c->helo_name);
        } else {
            session_fail(c, &fail, true);
        }
        return;
    case CMD_HELO:
        if (positive(r->code))
            after_hello(c);
        else
            session_fail(c, &fail, true);
        return;
    case CMD_STARTTLS:
        if (r->code == 220) {
            start_tls(c);
        } else if (!tls_required(c)) {
            setup_done(c); /* RFC 3207 section 4: go on without TLS */
        } else {
            fail_local(c, 421, "4.7.4", true, "TLS is required, but %s refused STARTTLS: %d %s%s%s",
                       c->peer, r->code, fail.status, fail.status[0] ? " " : "", fail.text);
        }
        return;
    default:
        return;
    }
}

static void on_tls_ready(smtpc_t *c)
{
    c->tls_on = true;
    c->verified = conn_tls_verified(c->conn);
    snprintf(c->tls_version, sizeof c->tls_version, "%s", conn_tls_version(c->conn));
    snprintf(c->tls_cipher, sizeof c->tls_cipher, "%s", conn_tls_cipher(c->conn));
    if (c->policy == SMTPC_TLS_VERIFY && !c->verified) {
        fail_local(c, 421, "4.7.5", true, "certificate verification failed for %s", c->peer);
        return;
    }
    uv_timer_stop(&c->timer);
    smtpc_enter_state(c, SMTPC_SETUP);
    send_ehlo(c); /* RFC 3207 section 4.2: forget what the first EHLO said */
}

/* ---- the transaction ------------------------------------------------------------------------ */

/* Appends data[0..len) to out as DATA carries it: every line end CRLF (a bare LF gains its
 * CR), a '.' opening a line doubled (RFC 5321 section 4.5.2). Keeps its place in tx across
 * calls. */
static void body_encode(smtpc_tx_t *tx, const char *data, size_t len, buf_t *out)
{
    size_t i = 0;
    while (i < len) {
        if (tx->at_bol && data[i] == '.')
            buf_append(out, ".", 1);
        const char *lf = memchr(data + i, '\n', len - i);
        size_t end = lf ? (size_t)(lf - data) : len;
        if (end > i) {
            buf_append(out, data + i, end - i);
            tx->prev_cr = data[end - 1] == '\r';
            tx->at_bol = false;
        }
        if (!lf)
            break;
        buf_append(out, tx->prev_cr ? "\n" : "\r\n", tx->prev_cr ? 1 : 2);
        tx->at_bol = true;
        tx->prev_cr = false;
        i = end + 1;
    }
}

/* The end of the data: the last line closed, then "." alone. */
static void body_end(smtpc_tx_t *tx, buf_t *out)
{
    if (!tx->at_bol)
        buf_puts(out, tx->prev_cr ? "\n" : "\r\n");
    buf_puts(out, ".\r\n");
}

/* Sends the message while the unsent output stays under the high-water mark, then waits for
 * CONN_WRITABLE; each step of progress restarts the data block timer. */
static void body_pump(smtpc_t *c)
{
    smtpc_tx_t *tx = c->tx;
    while (tx->body_pos < tx->len && conn_pending_output(c->conn) < SMTPC_HIGH_WATER) {
        size_t n = tx->len - tx->body_pos;
        if (n > SMTPC_CHUNK)
            n = SMTPC_CHUNK;
        body_encode(tx, tx->data + tx->body_pos, n, &c->out);
        tx->body_pos += n;
        if (flush_out(c) < 0)
            return;
    }
    if (tx->body_pos < tx->len) {
        arm(c, c->to.data_block);
        conn_notify_writable(c->conn, SMTPC_LOW_WATER);
        return;
    }
    body_end(tx, &c->out);
    smtpc_enter_state(c, SMTPC_BUSY);
    uv_timer_stop(&c->timer);
    if (flush_out(c) == 0)
        expect(c, CMD_DOT, 0);
}

static void mail_command(smtpc_t *c, buf_t *out)
{
    smtpc_tx_t *tx = c->tx;
    buf_printf(out, "MAIL FROM:<%s>", tx->sender);
    if (c->caps.size)
        buf_printf(out, " SIZE=%zu", tx->len);
    if (tx->eight_bit && c->caps.eightbitmime)
        buf_puts(out, " BODY=8BITMIME");
    if (tx->utf8)
        buf_puts(out, " SMTPUTF8");
    buf_puts(out, "\r\n");
}

/* Without PIPELINING: the next RCPT, or DATA after the last, or the end when none was
 * accepted. */
static void next_step(smtpc_t *c)
{
    smtpc_tx_t *tx = c->tx;
    while (tx->next_rcpt < tx->nrcpts && tx->results[tx->next_rcpt].code != 0)
        tx->next_rcpt++;
    if (tx->next_rcpt < tx->nrcpts) {
        size_t i = tx->next_rcpt++;
        send_cmd(c, CMD_RCPT, i, "RCPT TO:<%s>\r\n", tx->rcpts[i]);
    } else if (tx->accepted > 0) {
        send_cmd(c, CMD_DATA, 0, "DATA\r\n");
    } else {
        c->need_rset = true; /* MAIL was accepted: the transaction is open */
        tx_finish(c);
    }
}

static void on_tx_reply(smtpc_t *c, expect_t e, const reply_t *r)
{
    smtpc_tx_t *tx = c->tx;
    smtpc_reply_t rep;
    reply_remote(&rep, r);
    bool pipelined = c->caps.pipelining;
    switch (e.cmd) {
    case CMD_RSET:
        if (positive(r->code))
            c->need_rset = false;
        if (!pipelined) {
            mail_command(c, &c->out);
            if (flush_out(c) == 0)
                expect(c, CMD_MAIL, 0);
        }
        return;
    case CMD_MAIL:
        if (positive(r->code)) {
            tx->mail_ok = true;
            if (!pipelined)
                next_step(c);
            return;
        }
        tx->mail_failed = true;
        decide_open(tx, &rep);
        if (!pipelined) /* pipelined: the RCPT and DATA replies are still to come */
            tx_finish(c);
        return;
    case CMD_RCPT:
        if (!tx->mail_failed) {
            if (positive(r->code))
                tx->accepted++;
            else
                tx->results[e.rcpt] = rep;
        }
        if (!pipelined)
            next_step(c);
        return;
    case CMD_DATA:
        if (r->code == 354) {
            if (tx->mail_failed || tx->accepted == 0) {
                /* RFC 2920 section 3.1: nothing to deliver, but the data phase must end */
                tx->dot_ignored = true;
                send_cmd(c, CMD_DOT, 0, ".\r\n");
                return;
            }
            smtpc_enter_state(c, SMTPC_BODY);
            tx->at_bol = true;
            body_pump(c);
            return;
        }
        if (!tx->mail_failed) {
            decide_open(tx, &rep);
            c->need_rset = tx->mail_ok;
        }
        tx_finish(c);
        return;
    case CMD_DOT:
        if (!tx->dot_ignored)
            decide_open(tx, &rep);
        c->need_rset = false;
        tx_finish(c);
        return;
    default:
        return;
    }
}

/* ---- input ------------------------------------------------------------------------------- */

static void on_reply(smtpc_t *c, const reply_t *r)
{
    if (c->qlen == 0) {
        /* Nothing was asked: a server ending an idle session (421, section 3.8) or
         * talking out of turn. Either way the session is over. */
        smtpc_enter_state(c, SMTPC_OVER);
        close_conn(c, false);
        return;
    }
    expect_t e = pop(c);
    if (e.cmd == CMD_QUIT) {
        close_conn(c, false);
        return;
    }
    if (r->code == 421) { /* section 3.8: the server is closing the channel */
        smtpc_reply_t rep;
        reply_remote(&rep, r);
        session_fail(c, &rep, false);
        return;
    }
    if (c->state == SMTPC_SETUP)
        on_setup_reply(c, e.cmd, r);
    else if (c->tx)
        on_tx_reply(c, e, r);
}

static void on_data(smtpc_t *c)
{
    buf_t *in = conn_input(c->conn);
    while (in->len > 0 && !c->conn_closing && c->state != SMTPC_BODY &&
           c->state != SMTPC_HANDSHAKE) {
        reply_t r;
        const char *error = "";
        int rc = reply_parse(&c->parser, in, &r, &error);
        if (rc == 0)
            break;
        if (rc < 0) {
            if (c->state == SMTPC_QUITTING) {
                close_conn(c, false);
                break;
            }
            fail_local(c, 421, "4.5.0", false, "bad reply from %s: %s", c->peer, error);
            break;
        }
        on_reply(c, &r);
    }
    if (c->conn && !c->conn_closing)
        conn_input_consumed(c->conn);
}

/* ---- events ------------------------------------------------------------------------------- */

static void on_closed(smtpc_t *c, const char *why)
{
    char err[256];
    snprintf(err, sizeof err, "%s",
             c->close_why ? c->close_why : why && why[0] ? why : "connection closed");
    c->conn = NULL;
    c->conn_closing = true;
    switch (c->state) {
    case SMTPC_CONNECTING:
        fail_local(c, 421, "4.4.1", false, "connect to %s: %s", c->peer, err);
        break;
    case SMTPC_HANDSHAKE:
        fail_local(c, 421, "4.7.5", false, "STARTTLS with %s%s: %s", c->peer,
                   c->policy == SMTPC_TLS_VERIFY ? " (certificate verification required)" : "",
                   err);
        break;
    case SMTPC_SETUP:
    case SMTPC_BUSY:
        fail_local(c, 421, "4.4.2", false,
                   "lost connection with %s while waiting for reply to %s: %s",
                   c->peer, c->qlen ? cmd_names[c->q[c->qhead].cmd] : "command", err);
        break;
    case SMTPC_BODY:
        fail_local(c, 421, "4.4.2", false, "lost connection with %s while sending the message: %s",
                   c->peer, err);
        break;
    case SMTPC_IDLE:
        smtpc_enter_state(c, SMTPC_OVER); /* the server hung up on an idle session */
        break;
    case SMTPC_QUITTING:
    case SMTPC_OVER:
        smtpc_enter_state(c, SMTPC_OVER);
        break;
    }
    maybe_free(c);
}

static void on_conn(conn_t *conn, conn_event_t ev, void *arg)
{
    (void)conn;
    smtpc_t *c = arg;
    switch (ev) {
    case CONN_CONNECTED:
        if (c->state != SMTPC_CONNECTING)
            return;
        smtpc_enter_state(c, SMTPC_SETUP);
        uv_timer_stop(&c->timer);
        expect(c, CMD_GREETING, 0);
        return;
    case CONN_DATA:
        on_data(c);
        return;
    case CONN_TLS_READY:
        if (c->state == SMTPC_HANDSHAKE)
            on_tls_ready(c);
        return;
    case CONN_WRITABLE:
        if (c->state != SMTPC_BODY || c->conn_closing)
            return;
        body_pump(c);
        if (c->state == SMTPC_BUSY)
            on_data(c); /* a reply that came early waited in the input */
        return;
    case CONN_CLOSED:
        on_closed(c, conn_error(conn));
        return;
    }
}

static void on_timer(uv_timer_t *t)
{
    smtpc_t *c = t->data;
    if (c->deferred) {
        c->deferred = false;
        tx_finish(c);
        return;
    }
    switch (c->state) {
    case SMTPC_CONNECTING:
        fail_local(c, 421, "4.4.1", false, "timeout connecting to %s", c->peer);
        return;
    case SMTPC_HANDSHAKE:
        fail_local(c, 421, "4.4.2", false, "timeout in the TLS handshake with %s", c->peer);
        return;
    case SMTPC_BODY:
        fail_local(c, 421, "4.4.2", false, "timeout sending the message to %s", c->peer);
        return;
    case SMTPC_QUITTING:
        close_conn(c, false);
        return;
    case SMTPC_SETUP:
    case SMTPC_BUSY:
        fail_local(c, 421, "4.4.2", false, "timeout waiting for reply to %s from %s",
                   c->qlen ? cmd_names[c->q[c->qhead].cmd] : "command", c->peer);
        return;
    case SMTPC_IDLE:
    case SMTPC_OVER:
        return;
    }
}

/* ---- public ------------------------------------------------------------------------------- */

static void format_peer(smtpc_t *c, const struct sockaddr *addr)
{
    char ip[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (addr->sa_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        uv_ip4_name(a, ip, sizeof ip);
        port = ntohs(a->sin_port);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        uv_ip6_name(a, ip, sizeof ip);
        port = ntohs(a->sin6_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s[%s]:%d", c->peer_name, ip, port);
}

smtpc_t *smtpc_open(uv_loop_t *loop, const struct sockaddr *addr, const smtpc_opts_t *opts,
                    smtpc_ready_cb ready, void *arg)
{
    if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
        return NULL;
    smtpc_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->qcap = 8;
    c->q = calloc(c->qcap, sizeof *c->q);
    if (!c->q) {
        free(c);
        return NULL;
    }
    c->ready = ready;
    c->arg = arg;
    c->policy = opts->tls_policy;
    c->tls = opts->tls;
    snprintf(c->helo_name, sizeof c->helo_name, "%s",
             opts->helo_name && opts->helo_name[0] ? opts->helo_name : "localhost");
    snprintf(c->peer_name, sizeof c->peer_name, "%s", opts->peer_name ? opts->peer_name : "");
    const smtpc_timeouts_t *t = &opts->timeouts;
    c->to = (smtpc_timeouts_t){
        .connect = pick(t->connect, 30 * 1000),
        .greeting = pick(t->greeting, 5 * 60 * 1000),
        .helo = pick(t->helo, 5 * 60 * 1000),
        .mail = pick(t->mail, 5 * 60 * 1000),
        .rcpt = pick(t->rcpt, 5 * 60 * 1000),
        .data_init = pick(t->data_init, 2 * 60 * 1000),
        .data_block = pick(t->data_block, 3 * 60 * 1000),
        .data_end = pick(t->data_end, 10 * 60 * 1000),
        .quit = pick(t->quit, 60 * 1000),
    };
    format_peer(c, addr);
    reply_parser_init(&c->parser, 0, 0);
    buf_init(&c->out);
    c->state = SMTPC_CONNECTING;
    c->conn = conn_connect(loop, addr, SMTPC_INPUT_MAX, on_conn, c);
    if (!c->conn) {
        free(c->q);
        free(c);
        return NULL;
    }
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->live = opts->live;
    if (c->live)
        (*c->live)++;
    arm(c, c->to.connect);
    return c;
}

bool smtpc_idle(const smtpc_t *c)
{
    return c->state == SMTPC_IDLE && !c->conn_closing;
}

/* RFC 5321 section 4.1.2 leaves the address to the server; what is refused here is what
 * would break the command line: control bytes, angle brackets, an over-long path. */
static bool address_sendable(const char *a)
{
    size_t n = strlen(a);
    if (n + 2 > SMTPC_PATH_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)a[i];
        if (ch < 0x20 || ch == 0x7f || ch == '<' || ch == '>')
            return false;
    }
    return true;
}

static bool has_8bit(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

static smtpc_tx_t *tx_new(const smtpc_msg_t *msg, smtpc_done_cb done, void *arg)
{
    smtpc_tx_t *tx = calloc(1, sizeof *tx);
    if (!tx)
        return NULL;
    tx->nrcpts = msg->nrcpts;
    tx->sender = strdup(msg->sender ? msg->sender : "");
    tx->rcpts = calloc(msg->nrcpts, sizeof *tx->rcpts);
    tx->results = calloc(msg->nrcpts, sizeof *tx->results);
    bool ok = tx->sender && tx->rcpts && tx->results;
    for (size_t i = 0; ok && i < msg->nrcpts; i++)
        ok = (tx->rcpts[i] = strdup(msg->rcpts[i] ? msg->rcpts[i] : "")) != NULL;
    if (!ok) {
        tx_free(tx);
        return NULL;
    }
    tx->data = msg->data;
    tx->len = msg->len;
    tx->eight_bit = msg->body == SMTPC_BODY_8BIT ||
                    (msg->body == SMTPC_BODY_DETECT && has_8bit(msg->data, msg->len));
    tx->done = done;
    tx->arg = arg;
    return tx;
}

/* Refusals that need no server: the sender or a recipient that cannot be sent, a message
 * larger than the server's SIZE (RFC 1870 section 6.1). Returns whether SMTPUTF8 is
 * needed. */
static bool decide_locally(smtpc_t *c, smtpc_tx_t *tx)
{
    smtpc_reply_t r;
    bool utf8 = has_8bit(tx->sender, strlen(tx->sender));
    if (!address_sendable(tx->sender)) {
        reply_local(&r, 553, "5.1.7", "bad sender address syntax: cannot be sent to %s", c->peer);
        decide_open(tx, &r);
    } else if (utf8 && !c->caps.smtputf8) {
        /* RFC 6531 section 3.2: a non-ASCII address needs a server that takes SMTPUTF8 */
        reply_local(&r, 553, "5.6.7", "%s does not support SMTPUTF8, needed for the sender address",
                    c->peer);
        decide_open(tx, &r);
    } else if (c->caps.size_max && tx->len > c->caps.size_max) {
        reply_local(&r, 552, "5.3.4", "message size %zu exceeds the limit of %s (%llu bytes)",
                    tx->len, c->peer, (unsigned long long)c->caps.size_max);
        decide_open(tx, &r);
    }
    for (size_t i = 0; i < tx->nrcpts; i++) {
        if (tx->results[i].code)
            continue;
        const char *a = tx->rcpts[i];
        bool eight = has_8bit(a, strlen(a));
        if (!a[0] || !address_sendable(a)) {
            reply_local(&tx->results[i], 553, "5.1.3", "bad recipient address syntax");
        } else if (eight && !c->caps.smtputf8) {
            reply_local(&tx->results[i], 553, "5.6.7",
                        "%s does not support SMTPUTF8, needed for this address", c->peer);
        } else {
            utf8 |= eight;
        }
    }
    return utf8;
}

int smtpc_send(smtpc_t *c, const smtpc_msg_t *msg, smtpc_done_cb done, void *arg)
{
    if (!smtpc_idle(c) || c->tx || c->deferred || msg->nrcpts == 0 || !done)
        return -1;
    if (c->qcap < msg->nrcpts + 4) {
        expect_t *q = realloc(c->q, (msg->nrcpts + 4) * sizeof *q);
        if (!q)
            return -1;
        c->q = q;
        c->qcap = msg->nrcpts + 4;
    }
    smtpc_tx_t *tx = tx_new(msg, done, arg);
    if (!tx)
        return -1;
    c->tx = tx;
    smtpc_enter_state(c, SMTPC_BUSY);
    bool utf8 = decide_locally(c, tx);
    size_t open = 0;
    for (size_t i = 0; i < tx->nrcpts; i++)
        open += tx->results[i].code == 0;
    if (open == 0) {
        c->deferred = true;
        arm(c, 0);
        return 0;
    }

    /* RSET and MAIL may lead a pipelined group; DATA must end it (RFC 2920 section 3.1).
     * Without PIPELINING, MAIL waits for the reply to RSET. */
    tx->utf8 = utf8;
    bool pipelined = c->caps.pipelining;
    if (c->need_rset) {
        buf_puts(&c->out, "RSET\r\n");
        expect(c, CMD_RSET, 0);
    }
    if (!c->need_rset || pipelined) {
        mail_command(c, &c->out);
        expect(c, CMD_MAIL, 0);
    }
    if (pipelined) {
        for (size_t i = 0; i < tx->nrcpts; i++) {
            if (tx->results[i].code)
                continue;
            buf_printf(&c->out, "RCPT TO:<%s>\r\n", tx->rcpts[i]);
            expect(c, CMD_RCPT, i);
        }
        buf_puts(&c->out, "DATA\r\n");
        expect(c, CMD_DATA, 0);
    }
    flush_out(c); /* on failure CONN_CLOSED ends the transaction */
    return 0;
}

void smtpc_close(smtpc_t **cp)
{
    smtpc_t *c = cp ? *cp : NULL;
    if (!c)
        return;
    *cp = NULL;
    c->user_closed = true;
    if (c->deferred) {
        c->deferred = false;
        uv_timer_stop(&c->timer);
        tx_free(c->tx);
        c->tx = NULL;
        smtpc_enter_state(c, SMTPC_IDLE);
    }
    if (smtpc_idle(c) && c->conn) {
        smtpc_enter_state(c, SMTPC_QUITTING);
        if (conn_write(c->conn, "QUIT\r\n", 6) == 0)
            expect(c, CMD_QUIT, 0);
        else
            close_conn(c, false);
    } else if (c->state != SMTPC_QUITTING) {
        smtpc_enter_state(c, SMTPC_OVER);
        uv_timer_stop(&c->timer);
        close_conn(c, false);
    }
    maybe_free(c);
}

const char *smtpc_peer(const smtpc_t *c)
{
    return c->peer;
}

const char *smtpc_greeting(const smtpc_t *c)
{
    return c->greeting;
}

const char *smtpc_tls_version(const smtpc_t *c)
{
    return c->tls_version;
}

const char *smtpc_tls_cipher(const smtpc_t *c)
{
    return c->tls_cipher;
}

bool smtpc_tls_verified(const smtpc_t *c)
{
    return c->tls_on && c->verified;
}
