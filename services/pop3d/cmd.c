/* The POP3 command table and its handlers (RFC 1939, RFC 2449, RFC 2595, RFC 5034). The
 * shared dispatcher (lib/svc/dispatch.h) handles what every command shares: parsing, line
 * length, unknown commands, the state a command is valid in, logins before TLS and the
 * error cap; this file words its refusals, and handlers check their arguments and act. */
#include "pop3d.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "svc/fe_auth.h"
#include "base/log.h"
#include "base/text.h"
#include "auth/sasl.h"

/* The states of fe_cmd_t.states; the others take no commands. */
enum {
    POP3_IN_AUTHORIZATION = 1u << 0, /* before login */
    POP3_IN_TRANSACTION = 1u << 1,   /* once the maildrop is open */
};

static bool no_args(pop3_session_t *s, pop3_request_t *req)
{
    if (req->argc == 0 && !*req->rest)
        return true;
    char echo[sizeof req->keyword];
    pop3_err(s, NULL, "Syntax: %s takes no arguments",
             text_echo(echo, sizeof echo, req->keyword, strlen(req->keyword)));
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
static void cmd_capa(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
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
    if (auth && fe_session_auth_allowed(fs))
        buf_printf(b, "USER\r\nSASL %s\r\n", sasl_mechanisms());
    if (auth && fe_session_tls_available(&s->fe))
        buf_puts(b, "STLS\r\n");
    buf_puts(b, "IMPLEMENTATION Postern\r\n.\r\n");
    pop3_write(s, b->data, b->len);
}

/* RFC 2595 section 4. */
static void cmd_stls(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
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

/* Authentication needs the configuration. (TLS or auth.allow_plaintext: the dispatcher
 * checks that, FE_CMD_NEEDS_TLS_OR_PLAINTEXT.) */
static bool auth_may_start(pop3_session_t *s)
{
    if (!config_loaded(s->fe.srv->cfg)) {
        pop3_err_nocount(s, "SYS/TEMP", "Authentication is not available now, try again later");
        return false;
    }
    return true;
}

static void auth_challenge(fe_session_t *fs, const char *b64)
{
    fe_session_reply(fs, "+ %s", b64);
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
        fe_session_blocked_now(fs, &pop3_cmd_table, block);
        break;
    }
}

static const fe_auth_ops_t pop3_auth_ops = { auth_challenge, auth_done };

static void cmd_user(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
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

static void cmd_pass(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
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
    /* No copy of the password outlives the command (pop3_dispatch() wipes the line). */
    OPENSSL_cleanse(s->user_arg, sizeof s->user_arg);
}

/* RFC 5034 section 4. A bare AUTH lists the mechanisms (the older RFC 1734 habit some
 * clients still use). */
static void cmd_auth(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
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
}

static void cmd_quit(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    (void)r;
    if (s->state == POP3_STATE_TRANSACTION) {
        pop3_maildrop_update(s);
        return;
    }
    pop3_ok(s, "%s Postern POP3 server signing off", s->fe.srv->hostname);
    pop3_enter_state(s, POP3_STATE_DONE);
    fe_session_close(&s->fe);
}

/* ---- TRANSACTION ------------------------------------------------------------------- */

static void cmd_stat(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
    if (no_args(s, req))
        pop3_ok(s, "%zu %llu", s->drop.live, (unsigned long long)s->drop.live_size);
}

/* LIST and UIDL share their shape (RFC 1939 section 5 and 7). */
static void list_common(pop3_session_t *s, pop3_request_t *req, bool uidl)
{
    pop3_maildrop_t *d = &s->drop;
    if (req->argc > 1) {
        char echo[sizeof req->keyword];
        pop3_err(s, NULL, "Syntax: %s [message]",
                 text_echo(echo, sizeof echo, req->keyword, strlen(req->keyword)));
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

static void cmd_list(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
    list_common(s, req, false);
}

/* RFC 1939 section 7: "<uidvalidity>.<uid>" of the INBOX never changes for a message. */
static void cmd_uidl(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
    list_common(s, req, true);
}

static void cmd_retr(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
    unsigned long n;
    if (req->argc != 1) {
        pop3_err(s, NULL, "Syntax: RETR message");
        return;
    }
    if (msg_arg(s, req, 0, &n))
        pop3_maildrop_send(s, n, -1);
}

static void cmd_top(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
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

static void cmd_dele(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
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

static void cmd_noop(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
    if (no_args(s, req))
        pop3_ok(s, "%s", "");
}

static void cmd_rset(fe_session_t *fs, void *r)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_request_t *req = r;
    if (!no_args(s, req))
        return;
    pop3_maildrop_unmark_all(s);
    pop3_ok(s, "Maildrop has %zu messages (%llu octets)", s->drop.live,
            (unsigned long long)s->drop.live_size);
}

static const fe_cmd_t pop3_commands[] = {
    { "CAPA", POP3_IN_AUTHORIZATION | POP3_IN_TRANSACTION, 0, cmd_capa },
    { "QUIT", POP3_IN_AUTHORIZATION | POP3_IN_TRANSACTION, 0, cmd_quit },
    { "STLS", POP3_IN_AUTHORIZATION, 0, cmd_stls },
    { "USER", POP3_IN_AUTHORIZATION, FE_CMD_NEEDS_TLS_OR_PLAINTEXT, cmd_user },
    { "PASS", POP3_IN_AUTHORIZATION, FE_CMD_NEEDS_TLS_OR_PLAINTEXT, cmd_pass },
    { "AUTH", POP3_IN_AUTHORIZATION, FE_CMD_NEEDS_TLS_OR_PLAINTEXT | FE_CMD_LONG_LINE, cmd_auth },
    { "STAT", POP3_IN_TRANSACTION, 0, cmd_stat },
    { "LIST", POP3_IN_TRANSACTION, 0, cmd_list },
    { "UIDL", POP3_IN_TRANSACTION, 0, cmd_uidl },
    { "RETR", POP3_IN_TRANSACTION, 0, cmd_retr },
    { "TOP", POP3_IN_TRANSACTION, 0, cmd_top },
    { "DELE", POP3_IN_TRANSACTION, 0, cmd_dele },
    { "NOOP", POP3_IN_TRANSACTION, 0, cmd_noop },
    { "RSET", POP3_IN_TRANSACTION, 0, cmd_rset },
};

static int pop3_tokenize(fe_session_t *fs, char *line, size_t len, unsigned line_flags,
                         void *req, const char **name_r, const char **error_r)
{
    (void)fs;
    pop3_request_t *r = req;
    if (pop3_parse(line, len, line_flags, r, error_r) < 0)
        return FE_TOKENIZE_SYNTAX;
    *name_r = r->keyword;
    return FE_TOKENIZE_OK;
}

/* OPENING waits for the maildrop, so a command pipelined behind PASS/AUTH stays in the
 * input; UPDATE and DONE are saying goodbye. */
static unsigned pop3_state_bit(fe_session_t *fs)
{
    switch (((pop3_session_t *)fs)->state) {
    case POP3_STATE_AUTHORIZATION:
        return POP3_IN_AUTHORIZATION;
    case POP3_STATE_TRANSACTION:
        return POP3_IN_TRANSACTION;
    default:
        return 0;
    }
}

/* A maildrop whose lock was taken over by another session is not served any more. */
static bool pop3_admit(fe_session_t *fs, const fe_cmd_t *cmd, void *req)
{
    (void)cmd;
    (void)req;
    pop3_session_t *s = (pop3_session_t *)fs;
    if (s->state != POP3_STATE_TRANSACTION || !s->drop.lost)
        return true;
    pop3_err_nocount(s, "SYS/TEMP", "The maildrop lock was lost; please log in again");
    pop3_enter_state(s, POP3_STATE_DONE);
    fe_session_close(fs);
    return false;
}

/* The dispatcher's refusals; it counts them as errors (pop3_err() would count twice). */
static void pop3_refuse(fe_session_t *fs, void *req, fe_refusal_t why, const char *text)
{
    (void)req;
    pop3_session_t *s = (pop3_session_t *)fs;
    switch (why) {
    case FE_REFUSE_UNKNOWN:
        pop3_err_nocount(s, NULL, "Unknown command");
        break;
    case FE_REFUSE_STATE:
        pop3_err_nocount(s, NULL, "%s is not valid in the %s state", text,
                         s->state == POP3_STATE_TRANSACTION ? "TRANSACTION" : "AUTHORIZATION");
        break;
    /* RFC 2595 section 2.1; RFC 3206 section 4: the AUTH response code. */
    case FE_REFUSE_NEEDS_TLS:
        pop3_err_nocount(s, "AUTH", "Plaintext authentication is disallowed on non-secure "
                                    "connections; use STLS first");
        break;
    case FE_REFUSE_SYNTAX:
        pop3_err_nocount(s, NULL, "%s", text);
        break;
    case FE_REFUSE_TOO_LONG:
        pop3_err_nocount(s, NULL, "Line too long");
        break;
    case FE_REFUSE_TOO_MANY_ERRORS:
        pop3_err_nocount(s, NULL, "Too many errors, closing the connection");
        pop3_enter_state(s, POP3_STATE_DONE);
        break;
    case FE_REFUSE_TOO_MANY_COMMANDS:
        pop3_err_nocount(s, NULL, "Too many commands, closing the connection");
        pop3_enter_state(s, POP3_STATE_DONE);
        break;
    }
}

/* Blocked by the limiter during a login: the connect-time wording, then goodbye. */
static void pop3_blocked_now_reply(fe_session_t *fs, const char *reason, const char *until)
{
    pop3_session_t *s = (pop3_session_t *)fs;
    pop3_blocked_reply(s, reason, until);
    pop3_enter_state(s, POP3_STATE_DONE);
}

const fe_cmd_table_t pop3_cmd_table = {
    .cmds = pop3_commands,
    .ncmds = sizeof pop3_commands / sizeof pop3_commands[0],
    .line_max = POP3_LINE_MAX,
    .tokenize = pop3_tokenize,
    .state = pop3_state_bit,
    .admit = pop3_admit,
    .refuse = pop3_refuse,
    .blocked = pop3_blocked_now_reply,
    .blocked_reason = "too many failed logins",
    .max_errors_key = POP3_MAX_ERRORS_KEY,
    .max_errors_default = POP3_MAX_ERRORS_DEFAULT,
};

void pop3_dispatch(pop3_session_t *s, char *line, size_t len, unsigned flags)
{
    pop3_request_t req;
    req.rest = line + len; /* "" until the tokenizer has run */
    fe_dispatch(&s->fe, &pop3_cmd_table, line, len, flags, &req);
    /* No copy of a password (PASS, an AUTH initial response) outlives its command, whether
     * it ran or was refused: the line and the split copy of its arguments are wiped. */
    size_t n = strlen(req.rest); /* the split copy has the same length, NULs inside */
    OPENSSL_cleanse(req.args, n < sizeof req.args ? n : sizeof req.args);
    OPENSSL_cleanse(req.rest, n);
}
