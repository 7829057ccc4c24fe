/* The POP3 command table and its handlers (RFC 1939, RFC 2449, RFC 2595, RFC 5034). The
 * dispatcher handles what every command shares: parsing, line length, unknown commands
 * and the state a command is valid in; handlers check their arguments and act. */
#include "pop3d.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc/fe_auth.h"
#include "base/log.h"
#include "auth/sasl.h"

enum {
    CMD_AUTHORIZATION = 1 << 0, /* valid before login */
    CMD_TRANSACTION = 1 << 1,   /* valid once the maildrop is open */
    CMD_LONG_LINE = 1 << 2,     /* may exceed 255 octets (AUTH initial responses) */
};

typedef struct pop3_cmd {
    const char *name;
    void (*fn)(pop3_session_t *s, pop3_request_t *req);
    unsigned flags;
} pop3_cmd_t;

static bool no_args(pop3_session_t *s, pop3_request_t *req)
{
    if (req->argc == 0 && !*req->rest)
        return true;
    pop3_err(s, NULL, "Syntax: %s takes no arguments", req->keyword);
    return false;
}

/* The message named by argument i, or NULL after an -ERR reply. */
static pop3_msg_t *msg_arg(pop3_session_t *s, pop3_request_t *req, int i, unsigned long *n_r)
{
    unsigned long n;
    if (pop3_parse_number(req->argv[i], &n) < 0) {
        pop3_err(s, NULL, "Invalid message number");
        return NULL;
    }
    pop3_msg_t *m = pop3_maildrop_msg(s, n);
    if (!m) {
        bool deleted = n >= 1 && n <= s->drop.count && s->drop.msgs[n - 1].deleted;
        pop3_err(s, NULL, deleted ? "Message %lu is deleted" : "No such message: %lu", n);
        return NULL;
    }
    *n_r = n;
    return m;
}

/* ---- AUTHORIZATION ----------------------------------------------------------------- */

/* RFC 2449 section 5; what is listed depends on the state and on TLS. */
static void cmd_capa(pop3_session_t *s, pop3_request_t *req)
{
    if (!no_args(s, req))
        return;
    bool auth = s->state == POP3_STATE_AUTHORIZATION;
    buf_t *b = &s->out;
    buf_reset(b);
    buf_puts(b, "+OK Capability list follows\r\n"
                "TOP\r\n"
                "UIDL\r\n"
                "RESP-CODES\r\n"
                "AUTH-RESP-CODE\r\n"
                "PIPELINING\r\n");
    if (auth && pop3_auth_allowed(s))
        buf_printf(b, "USER\r\nSASL %s\r\n", sasl_mechanisms());
    if (auth && fe_session_tls_available(&s->fe))
        buf_puts(b, "STLS\r\n");
    buf_puts(b, "IMPLEMENTATION Postern\r\n.\r\n");
    pop3_write(s, b->data, b->len);
}

/* RFC 2595 section 4. */
static void cmd_stls(pop3_session_t *s, pop3_request_t *req)
{
    if (!no_args(s, req))
        return;
    if (fe_session_tls(&s->fe)) {
        pop3_err(s, NULL, "TLS is already active");
        return;
    }
    if (!fe_session_tls_available(&s->fe)) {
        pop3_err(s, NULL, "TLS is not available");
        return;
    }
    pop3_ok(s, "Begin TLS negotiation");
    if (fe_session_starttls(&s->fe) < 0)
        fe_session_close(&s->fe);
}

/* Authentication needs TLS (or auth.allow_plaintext) and the configuration. */
static bool auth_may_start(pop3_session_t *s)
{
    if (!pop3_auth_allowed(s)) {
        pop3_err(s, "AUTH", "Plaintext authentication is disallowed on non-secure connections;"
                            " use STLS first");
        return false;
    }
    if (!config_loaded(s->fe.srv->cfg)) {
        pop3_err_nocount(s, "SYS/TEMP", "Authentication is not available now, try again later");
        return false;
    }
    return true;
}

/* Overwrites the arguments (in the line and in the split copy) once they have been used. */
static void wipe_args(pop3_request_t *req)
{
    size_t n = strlen(req->rest); /* the split copy has the same length, NULs inside */
    OPENSSL_cleanse(req->args, n);
    OPENSSL_cleanse(req->rest, n);
}

static void auth_challenge(fe_session_t *fs, const char *b64)
{
    fe_session_printf(fs, "+ %s\r\n", b64);
}

static void auth_done(fe_session_t *fs, fe_auth_result_t r, const lim_verdict_t *block)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    switch (r) {
    case FE_AUTH_OK:
        pop3_maildrop_open(s);
        break;
    case FE_AUTH_FAIL:
        pop3_err(s, "AUTH", "Authentication failed");
        break;
    case FE_AUTH_TEMP:
        pop3_err_nocount(s, "SYS/TEMP", "Temporary authentication failure, try again later");
        break;
    case FE_AUTH_ABORTED:
        pop3_err(s, NULL, "Authentication aborted");
        break;
    case FE_AUTH_MALFORMED:
        pop3_err(s, NULL, "Cannot decode the authentication response");
        break;
    case FE_AUTH_BLOCKED:
        pop3_blocked_now(s, block);
        break;
    }
}

static const fe_auth_ops_t pop3_auth_ops = { auth_challenge, auth_done };

static void cmd_user(pop3_session_t *s, pop3_request_t *req)
{
    s->have_user = false;
    if (req->argc != 1) {
        pop3_err(s, NULL, "Syntax: USER name");
        return;
    }
    if (!auth_may_start(s))
        return;
    snprintf(s->user_arg, sizeof s->user_arg, "%s", req->argv[0]);
    s->have_user = true;
    /* Says nothing about whether the user exists. */
    pop3_ok(s, "Send PASS");
}

static void cmd_pass(pop3_session_t *s, pop3_request_t *req)
{
    bool have_user = s->have_user;
    s->have_user = false;
    if (!have_user) {
        pop3_err(s, NULL, "USER first");
    } else if (!*req->rest) {
        pop3_err(s, NULL, "Syntax: PASS password");
    } else if (auth_may_start(s)) {
        /* The whole rest of the line: a password may hold spaces. */
        fe_auth_password(&s->fe, "USER", s->user_arg, req->rest, &pop3_auth_ops);
    }
    /* No copy of the password outlives the command. */
    OPENSSL_cleanse(s->user_arg, sizeof s->user_arg);
    wipe_args(req);
}

/* RFC 5034 section 4. A bare AUTH lists the mechanisms (the older RFC 1734 habit some
 * clients still use). */
static void cmd_auth(pop3_session_t *s, pop3_request_t *req)
{
    s->have_user = false;
    if (req->argc > 2) {
        pop3_err(s, NULL, "Syntax: AUTH mechanism [initial-response]");
        return;
    }
    if (!auth_may_start(s))
        return;
    if (req->argc == 0) {
        buf_reset(&s->out);
        buf_puts(&s->out, "+OK Mechanisms follow\r\n");
        char mechs[128];
        snprintf(mechs, sizeof mechs, "%s", sasl_mechanisms());
        for (char *save = NULL, *m = strtok_r(mechs, " ", &save); m; m = strtok_r(NULL, " ", &save))
            buf_printf(&s->out, "%s\r\n", m);
        buf_puts(&s->out, ".\r\n");
        pop3_write(s, s->out.data, s->out.len);
        return;
    }
    const char *initial = req->argc == 2 ? req->argv[1] : NULL;
    if (fe_auth_start(&s->fe, req->argv[0], initial, &pop3_auth_ops) < 0)
        pop3_err(s, NULL, "Unrecognized authentication mechanism");
    /* The initial response (PLAIN: the password) has been decoded and used. */
    wipe_args(req);
}

static void cmd_quit(pop3_session_t *s, pop3_request_t *req)
{
    (void)req;
    if (s->state == POP3_STATE_TRANSACTION) {
        pop3_maildrop_update(s);
        return;
    }
    pop3_ok(s, "%s Postern POP3 server signing off", s->fe.srv->hostname);
    pop3_enter_state(s, POP3_STATE_DONE);
    fe_session_close(&s->fe);
}

/* ---- TRANSACTION ------------------------------------------------------------------- */

static void cmd_stat(pop3_session_t *s, pop3_request_t *req)
{
    if (no_args(s, req))
        pop3_ok(s, "%zu %llu", s->drop.live, (unsigned long long)s->drop.live_size);
}

/* LIST and UIDL share their shape (RFC 1939 section 5 and 7). */
static void list_common(pop3_session_t *s, pop3_request_t *req, bool uidl)
{
    pop3_maildrop_t *d = &s->drop;
    if (req->argc > 1) {
        pop3_err(s, NULL, "Syntax: %s [message]", req->keyword);
        return;
    }
    if (req->argc == 1) {
        unsigned long n;
        pop3_msg_t *m = msg_arg(s, req, 0, &n);
        if (!m)
            return;
        if (uidl)
            pop3_ok(s, "%lu %lld.%lld", n, (long long)d->uidvalidity, (long long)m->uid);
        else
            pop3_ok(s, "%lu %llu", n, (unsigned long long)m->size);
        return;
    }
    buf_t *b = &s->out;
    buf_reset(b);
    if (uidl)
        buf_puts(b, "+OK Unique-ID listing follows\r\n");
    else
        buf_printf(b, "+OK %zu messages (%llu octets)\r\n", d->live,
                   (unsigned long long)d->live_size);
    for (size_t i = 0; i < d->count; i++) {
        const pop3_msg_t *m = &d->msgs[i];
        if (m->deleted)
            continue;
        if (uidl)
            buf_printf(b, "%zu %lld.%lld\r\n", i + 1, (long long)d->uidvalidity, (long long)m->uid);
        else
            buf_printf(b, "%zu %llu\r\n", i + 1, (unsigned long long)m->size);
    }
    if (buf_puts(b, ".\r\n") < 0) {
        pop3_err_nocount(s, "SYS/TEMP", "Out of memory");
        return;
    }
    pop3_write(s, b->data, b->len);
}

static void cmd_list(pop3_session_t *s, pop3_request_t *req)
{
    list_common(s, req, false);
}

/* RFC 1939 section 7: "<uidvalidity>.<uid>" of the INBOX never changes for a message. */
static void cmd_uidl(pop3_session_t *s, pop3_request_t *req)
{
    list_common(s, req, true);
}

static void cmd_retr(pop3_session_t *s, pop3_request_t *req)
{
    unsigned long n;
    if (req->argc != 1) {
        pop3_err(s, NULL, "Syntax: RETR message");
        return;
    }
    if (msg_arg(s, req, 0, &n))
        pop3_maildrop_send(s, n, -1);
}

static void cmd_top(pop3_session_t *s, pop3_request_t *req)
{
    unsigned long n, lines;
    if (req->argc != 2) {
        pop3_err(s, NULL, "Syntax: TOP message lines");
        return;
    }
    if (!msg_arg(s, req, 0, &n))
        return;
    if (pop3_parse_number(req->argv[1], &lines) < 0) {
        pop3_err(s, NULL, "Invalid number of lines");
        return;
    }
    pop3_maildrop_send(s, n, (long)lines);
}

static void cmd_dele(pop3_session_t *s, pop3_request_t *req)
{
    unsigned long n;
    if (req->argc != 1) {
        pop3_err(s, NULL, "Syntax: DELE message");
        return;
    }
    pop3_msg_t *m = msg_arg(s, req, 0, &n);
    if (!m)
        return;
    pop3_maildrop_mark(s, m);
    pop3_ok(s, "Message %lu deleted", n);
}

static void cmd_noop(pop3_session_t *s, pop3_request_t *req)
{
    if (no_args(s, req))
        pop3_ok(s, "%s", "");
}

static void cmd_rset(pop3_session_t *s, pop3_request_t *req)
{
    if (!no_args(s, req))
        return;
    pop3_maildrop_unmark_all(s);
    pop3_ok(s, "Maildrop has %zu messages (%llu octets)", s->drop.live,
            (unsigned long long)s->drop.live_size);
}

static const pop3_cmd_t pop3_commands[] = {
    { "CAPA", cmd_capa, CMD_AUTHORIZATION | CMD_TRANSACTION },
    { "QUIT", cmd_quit, CMD_AUTHORIZATION | CMD_TRANSACTION },
    { "STLS", cmd_stls, CMD_AUTHORIZATION },
    { "USER", cmd_user, CMD_AUTHORIZATION },
    { "PASS", cmd_pass, CMD_AUTHORIZATION },
    { "AUTH", cmd_auth, CMD_AUTHORIZATION | CMD_LONG_LINE },
    { "STAT", cmd_stat, CMD_TRANSACTION },
    { "LIST", cmd_list, CMD_TRANSACTION },
    { "UIDL", cmd_uidl, CMD_TRANSACTION },
    { "RETR", cmd_retr, CMD_TRANSACTION },
    { "TOP", cmd_top, CMD_TRANSACTION },
    { "DELE", cmd_dele, CMD_TRANSACTION },
    { "NOOP", cmd_noop, CMD_TRANSACTION },
    { "RSET", cmd_rset, CMD_TRANSACTION },
    { NULL, NULL, 0 },
};

void pop3_dispatch(pop3_session_t *s, char *line, size_t len, unsigned flags)
{
    pop3_request_t req;
    const char *err = NULL;
    int rc = pop3_parse(line, len, flags, &req, &err);
    const pop3_cmd_t *cmd = NULL;
    if (rc == 0)
        for (cmd = pop3_commands; cmd->name && strcmp(cmd->name, req.keyword) != 0; cmd++)
            ;
    bool long_ok = cmd && cmd->name && (cmd->flags & CMD_LONG_LINE);
    if (len + 2 > POP3_LINE_MAX && !long_ok) {
        pop3_err(s, NULL, "Line too long");
    } else if (rc < 0) {
        pop3_err(s, NULL, "%s", err);
    } else if (!cmd->name) {
        pop3_err(s, NULL, "Unknown command");
    } else if (s->state == POP3_STATE_TRANSACTION && s->drop.lost) {
        pop3_err_nocount(s, "SYS/TEMP", "The maildrop lock was lost; please log in again");
        pop3_enter_state(s, POP3_STATE_DONE);
        fe_session_close(&s->fe);
    } else if (!(cmd->flags & (s->state == POP3_STATE_TRANSACTION ? CMD_TRANSACTION
                                                                   : CMD_AUTHORIZATION))) {
        pop3_err(s, NULL, "%s is not valid in the %s state", cmd->name,
                 s->state == POP3_STATE_TRANSACTION ? "TRANSACTION" : "AUTHORIZATION");
    } else {
        cmd->fn(s, &req);
    }
}
