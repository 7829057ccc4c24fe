/* The SMTP command table and its handlers (RFC 5321 section 4.1.1). The shared dispatcher
 * (lib/svc/dispatch.h) handles what every command shares: framing errors, the command and
 * error caps, line length, unknown commands, the EHLO-first rule and AUTH before TLS; this
 * file words its refusals, and handlers parse their arguments and act. */
#include "smtpd.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "svc/fe_auth.h"
#include "base/log.h"
#include "base/text.h"
#include "auth/sasl.h"

/* The states of fe_cmd_t.states; DATA and QUIT take no commands. */
enum {
    SMTP_IN_INIT = 1u << SMTP_STATE_INIT,
    SMTP_IN_READY = 1u << SMTP_STATE_READY,
    SMTP_IN_MAIL = 1u << SMTP_STATE_MAIL,
    SMTP_IN_RCPT = 1u << SMTP_STATE_RCPT,
    SMTP_ANY = SMTP_IN_INIT | SMTP_IN_READY | SMTP_IN_MAIL | SMTP_IN_RCPT,
    SMTP_AFTER_HELO = SMTP_IN_READY | SMTP_IN_MAIL | SMTP_IN_RCPT, /* 503 before EHLO/HELO */
};

static void cmd_helo_common(smtp_session_t *s, char *args, bool esmtp)
{
    if (!*args) {
        smtp_reply(s, 501, "5.5.4 Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
        return;
    }
    smtp_reset_transaction(s);
    snprintf(s->helo, sizeof s->helo, "%s", args);
    for (char *c = s->helo; *c; c++)
        if (!isgraph((unsigned char)*c))
            *c = '?';
    s->esmtp = esmtp;
    smtp_enter_state(s, SMTP_STATE_READY);
}

static void cmd_ehlo(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    char *args = ((smtp_request_t *)req)->args;
    cmd_helo_common(s, args, true);
    if (s->state != SMTP_STATE_READY)
        return;
    fe_session_reply(fs, "250-%s", fs->srv->hostname);
    fe_session_reply(fs, "250-PIPELINING");
    fe_session_reply(fs, "250-SIZE %ld", config_get_long(fs->srv->cfg, "smtp.max_message_size"));
    fe_session_reply(fs, "250-8BITMIME");
    fe_session_reply(fs, "250-ENHANCEDSTATUSCODES");
    if (fe_session_tls_available(fs))
        fe_session_reply(fs, "250-STARTTLS");
    if (fe_session_auth_allowed(fs))
        fe_session_reply(fs, "250-AUTH %s", sasl_mechanisms());
    fe_session_reply(fs, "250 HELP");
}

static void cmd_helo(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    char *args = ((smtp_request_t *)req)->args;
    cmd_helo_common(s, args, false);
    if (s->state == SMTP_STATE_READY)
        smtp_reply(s, 250, "%s", s->fe.srv->hostname);
}

/* RFC 1870 SIZE, RFC 6152 BODY, RFC 4954 section 5 AUTH=. */
static int mail_params(smtp_session_t *s, const char *params)
{
    char copy[SMTP_LINE_MAX];
    snprintf(copy, sizeof copy, "%s", params);
    for (char *save = NULL, *tok = strtok_r(copy, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        if (strncasecmp(tok, "SIZE=", 5) == 0) {
            char *end;
            unsigned long long n = strtoull(tok + 5, &end, 10);
            if (!tok[5] || *end || !isdigit((unsigned char)tok[5])) {
                smtp_reply(s, 501, "5.5.4 Bad SIZE parameter");
                return -1;
            }
            long max = config_get_long(s->fe.srv->cfg, "smtp.max_message_size");
            if (n > (unsigned long long)max) {
                smtp_reply(s, 552, "5.3.4 Message size exceeds fixed limit of %ld bytes", max);
                return -1;
            }
        } else if (strncasecmp(tok, "BODY=", 5) == 0) {
            if (strcasecmp(tok + 5, "7BIT") && strcasecmp(tok + 5, "8BITMIME")) {
                smtp_reply(s, 501, "5.5.4 Unsupported BODY type");
                return -1;
            }
        } else if (strncasecmp(tok, "AUTH=", 5) != 0) {
            char echo[41];
            smtp_reply(s, 555, "5.5.4 Unsupported parameter %s",
                       text_echo(echo, sizeof echo, tok, strlen(tok)));
            return -1;
        }
    }
    return 0;
}

static void cmd_mail(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    char *args = ((smtp_request_t *)req)->args;
    if (s->state != SMTP_STATE_READY) {
        smtp_reply(s, 503, "5.5.1 Error: nested MAIL command");
        return;
    }
    if (strncasecmp(args, "FROM:", 5) != 0) {
        smtp_reply(s, 501, "5.5.4 Syntax: MAIL FROM:<address>");
        return;
    }
    /* RFC 6409 section 4.3: the submission service requires authentication. */
    if (s->fe.listener->kind == SMTP_LISTENER_SUBMISSION && !s->fe.user) {
        smtp_reply(s, 530, "5.7.0 Authentication required");
        return;
    }
    smtp_path_t path;
    char err[256];
    if (smtp_path_parse(args + 5, true, &path, err, sizeof err) < 0) {
        smtp_reply(s, atoi(err), "%s", err + 4);
        return;
    }
    if (mail_params(s, path.params) < 0)
        return;
    if (s->fe.user && config_get_bool(s->fe.srv->cfg, "auth.sender_must_match") &&
        strcasecmp(path.address, s->fe.user) != 0) {
        char echo[SMTP_PATH_MAX + 1], user[SMTP_PATH_MAX + 1];
        smtp_reply(s, 553, "5.7.1 <%s>: Sender address not owned by user %s",
                   text_echo(echo, sizeof echo, path.address, strlen(path.address)),
                   text_echo(user, sizeof user, s->fe.user, strlen(s->fe.user)));
        return;
    }
    if (smtp_temp_unavailable(s))
        return;
    snprintf(s->sender, sizeof s->sender, "%s", path.address);
    smtp_enter_state(s, SMTP_STATE_MAIL);
    smtp_reply(s, 250, "2.1.0 Ok");
}

static bool rcpt_known(smtp_session_t *s, const char *address)
{
    for (size_t i = 0; i < s->nrcpts; i++)
        if (strcmp(s->rcpts[i].address, address) == 0)
            return true;
    return false;
}

static int rcpt_add(smtp_session_t *s, char *address, bool local)
{
    smtp_rcpt_t *r = realloc(s->rcpts, (s->nrcpts + 1) * sizeof *r);
    if (!r) {
        free(address);
        return -1;
    }
    s->rcpts = r;
    r[s->nrcpts].address = address;
    r[s->nrcpts].local = local;
    s->nrcpts++;
    smtp_enter_state(s, SMTP_STATE_RCPT);
    return 0;
}

/* 550 for the unknown recipient in s->pending, which goes. */
static void rcpt_reply_unknown(smtp_session_t *s)
{
    const char *address = s->pending.address ? s->pending.address : "";
    char echo[SMTP_PATH_MAX + 1];
    smtp_reply(s, 550, "5.1.1 <%s>: Recipient address rejected: no such user",
               text_echo(echo, sizeof echo, address, strlen(address)));
    free(s->pending.address);
    s->pending.address = NULL;
}

/* The limiter has recorded the failure (or did not answer), after its delay: 550, then on
 * with the input. */
static void rcpt_reject_unknown(fe_session_t *fs)
{
    rcpt_reply_unknown((smtp_session_t *)fs);
    fe_session_resume(fs);
}

static void rcpt_limit_cb(void *arg, const lim_verdict_t *v)
{
    smtp_session_t *s = arg;
    if (!s->fe.closing) {
        if (v->answered && v->verdict == POSTERN__VERDICT__VERDICT_BLOCKED)
            smtp_blocked_now(s, v);
        else if (v->answered && v->delay_ms > 0 && !s->fe.delay_cb) /* one delay at a time */
            fe_session_delay(&s->fe, v->delay_ms, rcpt_reject_unknown);
        else
            rcpt_reject_unknown(&s->fe);
    }
    fe_session_unref(&s->fe);
}

void smtp_rcpt_looked_up(void *arg, PGresult *res)
{
    smtp_session_t *s = arg;
    char *address = s->pending.address;
    s->pending.address = NULL;
    if (s->fe.closing) {
        free(address);
        fe_session_unref(&s->fe);
        return;
    }
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("recipient lookup failed", "session=%lu error=\"%s\"", s->fe.id,
                 res ? PQresultErrorMessage(res) : "database unavailable");
        char echo[SMTP_PATH_MAX + 1];
        smtp_reply(s, 451, "4.3.0 <%s>: Temporary lookup failure, please try again later",
                   text_echo(echo, sizeof echo, address, strlen(address)));
        free(address);
    } else if (PQntuples(res) == 0) {
        log_info("unknown recipient", "session=%lu client=%s rcpt=\"%s\"", s->fe.id, s->fe.peer,
                 address);
        s->pending.address = address;
        /* Dictionary attacks: the limiter may slow this reply down or block the client.
         * Once asked, the limiter's callback replies and resumes; if it cannot be asked
         * (out of memory, stopping), the reply goes out now, without it. */
        if (lim_rcpt_failure(s->fe.srv->lim, POSTERN__SERVICE__SERVICE_SMTP, s->fe.peer, address,
                             rcpt_limit_cb, s) == 0)
            return; /* keeps waiting, and the reference */
        log_warn("recipient failure not recorded by the limiter", "session=%lu client=%s",
                 s->fe.id, s->fe.peer);
        rcpt_reply_unknown(s);
    } else if (rcpt_add(s, address, true) == 0) {
        smtp_reply(s, 250, "2.1.5 Ok");
    } else {
        smtp_reply(s, 451, "4.3.0 Temporary failure, please try again later");
    }
    fe_session_resume(&s->fe);
    fe_session_unref(&s->fe);
}

static void cmd_rcpt(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    char *args = ((smtp_request_t *)req)->args;
    if (s->state != SMTP_STATE_MAIL && s->state != SMTP_STATE_RCPT) {
        smtp_reply(s, 503, "5.5.1 Error: need MAIL command");
        return;
    }
    if (strncasecmp(args, "TO:", 3) != 0) {
        smtp_reply(s, 501, "5.5.4 Syntax: RCPT TO:<address>");
        return;
    }
    smtp_path_t path;
    char err[256];
    if (smtp_path_parse(args + 3, false, &path, err, sizeof err) < 0) {
        smtp_reply(s, atoi(err), "%s", err + 4);
        return;
    }
    if (*path.params) {
        smtp_reply(s, 555, "5.5.4 Unsupported RCPT parameters");
        return;
    }
    config_t *cfg = s->fe.srv->cfg;
    long max = config_get_long(cfg, "smtp.max_recipients");
    if (s->nrcpts >= (size_t)(max > 0 ? max : 100)) {
        smtp_reply(s, 452, "4.5.3 Too many recipients");
        return;
    }
    bool local = !path.literal && config_domain_hosted(cfg, path.domain);
    char echo[SMTP_PATH_MAX + 1];
    text_echo(echo, sizeof echo, path.address, strlen(path.address));
    if (local) {
        if (smtp_local_part_routes(path.local)) {
            smtp_reply(s, 550, "5.7.1 <%s>: Routing characters are not accepted in local parts",
                       echo);
            return;
        }
        for (char *c = path.address; *c; c++)
            *c = (char)tolower((unsigned char)*c);
        if (rcpt_known(s, path.address)) {
            smtp_reply(s, 250, "2.1.5 Ok");
            return;
        }
        s->pending.address = strdup(path.address);
        if (!s->pending.address) {
            smtp_reply(s, 451, "4.3.0 Temporary failure");
            return;
        }
        const char *param = s->pending.address;
        if (db_query(s->fe.srv->db, "SELECT 1 FROM users WHERE address = $1", 1, &param, NULL,
                     NULL, smtp_rcpt_looked_up, s) < 0) {
            free(s->pending.address); /* no database client (stopping) */
            s->pending.address = NULL;
            smtp_reply(s, 451, "4.3.0 Temporary lookup failure, please try again later");
            return;
        }
        fe_session_wait(&s->fe); /* smtp_rcpt_looked_up() resumes, and drops the reference */
        fe_session_ref(&s->fe);
        return;
    }
    net_addr_t client;
    bool listed = net_addr_parse(s->fe.peer, &client) == 0 && config_relay_network(cfg, &client);
    if (!smtp_may_relay(smtp_relay_mode(config_get(cfg, "relay.mode")), s->fe.user != NULL, listed)) {
        log_warn("relay denied", "session=%lu client=%s rcpt=\"%s\"", s->fe.id, s->fe.peer,
                 path.address);
        smtp_reply(s, 554, "5.7.1 <%s>: Relay access denied", echo);
        return;
    }
    if (rcpt_known(s, path.address)) {
        smtp_reply(s, 250, "2.1.5 Ok");
        return;
    }
    char *copy = strdup(path.address);
    if (!copy || rcpt_add(s, copy, false) < 0) {
        smtp_reply(s, 451, "4.3.0 Temporary failure");
        return;
    }
    smtp_reply(s, 250, "2.1.5 Ok");
}

static void cmd_data(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    char *args = ((smtp_request_t *)req)->args;
    if (*args) {
        smtp_reply(s, 501, "5.5.4 Syntax: DATA");
        return;
    }
    if (s->state == SMTP_STATE_MAIL) {
        smtp_reply(s, 554, "5.5.1 Error: no valid recipients");
        return;
    }
    if (s->state != SMTP_STATE_RCPT) {
        smtp_reply(s, 503, "5.5.1 Error: need RCPT command");
        return;
    }
    smtp_data_start(s);
}

static void cmd_rset(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    (void)req;
    smtp_reset_transaction(s);
    smtp_reply(s, 250, "2.0.0 Ok");
}

static void cmd_noop(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    (void)req;
    smtp_reply(s, 250, "2.0.0 Ok");
}

static void cmd_quit(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    (void)req;
    smtp_reply(s, 221, "2.0.0 Bye");
    smtp_enter_state(s, SMTP_STATE_QUIT);
    fe_session_close(&s->fe);
}

/* RFC 5321 section 3.5.3: 252 reveals nothing about which users exist. */
static void cmd_vrfy(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    char *args = ((smtp_request_t *)req)->args;
    if (!*args) {
        smtp_reply(s, 501, "5.5.4 Syntax: VRFY address");
        return;
    }
    smtp_reply(s, 252, "2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_expn(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    (void)req;
    smtp_reply(s, 502, "5.5.1 EXPN not available");
}

static void cmd_help(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    (void)req;
    smtp_reply(s, 214, "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS AUTH HELP");
}

static void cmd_starttls(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    char *args = ((smtp_request_t *)req)->args;
    if (*args) {
        smtp_reply(s, 501, "5.5.4 Syntax: STARTTLS");
        return;
    }
    if (fe_session_tls(&s->fe)) {
        smtp_reply(s, 503, "5.5.1 TLS already active");
        return;
    }
    if (!fe_session_tls_available(&s->fe)) {
        smtp_reply(s, 454, "4.7.0 TLS not available");
        return;
    }
    smtp_reply(s, 220, "2.0.0 Ready to start TLS");
    if (fe_session_starttls(&s->fe) < 0)
        fe_session_close(&s->fe);
}

static void auth_challenge(fe_session_t *fs, const char *b64)
{
    fe_session_reply(fs, "334 %s", b64);
}

static void auth_done(fe_session_t *fs, fe_auth_result_t r, const lim_verdict_t *block)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    switch (r) {
    case FE_AUTH_OK:
        smtp_reply(s, 235, "2.7.0 Authentication successful");
        break;
    case FE_AUTH_FAIL:
        smtp_reply(s, 535, "5.7.8 Authentication credentials invalid");
        break;
    case FE_AUTH_TEMP:
        smtp_reply(s, 454, "4.7.0 Temporary authentication failure");
        break;
    case FE_AUTH_ABORTED:
        smtp_reply(s, 501, "5.0.0 Authentication aborted");
        break;
    case FE_AUTH_MALFORMED:
        smtp_reply(s, 501, "5.5.2 Cannot decode response");
        break;
    case FE_AUTH_BLOCKED:
        smtp_blocked_now(s, block);
        break;
    }
}

static const fe_auth_ops_t smtp_auth_ops = { auth_challenge, auth_done };

/* RFC 4954 section 4. */
static void cmd_auth(fe_session_t *fs, void *req)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    char *args = ((smtp_request_t *)req)->args;
    if (s->fe.user) {
        smtp_reply(s, 503, "5.5.1 Already authenticated");
        return;
    }
    if (s->state != SMTP_STATE_READY) {
        smtp_reply(s, 503, "5.5.1 AUTH not allowed during a mail transaction");
        return;
    }
    if (!config_loaded(s->fe.srv->cfg)) {
        smtp_reply(s, 454, "4.7.0 Temporary authentication failure");
        return;
    }
    char *initial = strchr(args, ' ');
    if (initial) {
        *initial++ = '\0';
        if (!*initial || strchr(initial, ' ')) {
            smtp_reply(s, 501, "5.5.4 Syntax: AUTH mechanism [initial-response]");
            return;
        }
    }
    if (!*args) {
        smtp_reply(s, 501, "5.5.4 Syntax: AUTH mechanism [initial-response]");
        return;
    }
    if (fe_auth_start(&s->fe, args, initial, &smtp_auth_ops) < 0)
        smtp_reply(s, 504, "5.5.4 Unrecognized authentication type");
}

static const fe_cmd_t smtp_commands[] = {
    { "EHLO", SMTP_ANY, 0, cmd_ehlo },
    { "HELO", SMTP_ANY, 0, cmd_helo },
    { "MAIL", SMTP_AFTER_HELO, 0, cmd_mail },
    { "RCPT", SMTP_AFTER_HELO, 0, cmd_rcpt },
    { "DATA", SMTP_AFTER_HELO, 0, cmd_data },
    { "RSET", SMTP_ANY, 0, cmd_rset },
    { "NOOP", SMTP_ANY, 0, cmd_noop },
    { "QUIT", SMTP_ANY, 0, cmd_quit },
    { "VRFY", SMTP_ANY, 0, cmd_vrfy },
    { "EXPN", SMTP_ANY, 0, cmd_expn },
    { "HELP", SMTP_ANY, 0, cmd_help },
    { "STARTTLS", SMTP_AFTER_HELO, 0, cmd_starttls },
    { "AUTH", SMTP_AFTER_HELO, FE_CMD_NEEDS_TLS_OR_PLAINTEXT | FE_CMD_LONG_LINE, cmd_auth },
};

/* A command line is a verb, then its arguments after spaces (RFC 5321 section 4.1.1);
 * lines end with CRLF and hold no NUL (section 2.3.8). */
static int smtp_tokenize(fe_session_t *fs, char *line, size_t len, unsigned line_flags,
                         void *req, const char **name_r, const char **error_r)
{
    (void)fs;
    (void)len;
    if (line_flags & LINE_BARE_LF) {
        *error_r = "5.5.2 Bare LF received; commands end with CRLF";
        return FE_TOKENIZE_FRAMING;
    }
    if (line_flags & LINE_NUL) {
        *error_r = "5.5.2 NUL byte in command";
        return FE_TOKENIZE_FRAMING;
    }
    char *args = line + strcspn(line, " ");
    if (*args)
        *args++ = '\0';
    while (*args == ' ')
        args++;
    ((smtp_request_t *)req)->args = args;
    *name_r = line;
    return FE_TOKENIZE_OK;
}

static unsigned smtp_state_bit(fe_session_t *fs)
{
    smtp_state_t st = ((smtp_session_t *)fs)->state;
    return st <= SMTP_STATE_RCPT ? 1u << st : 0;
}

/* The dispatcher's refusals; it counts them as errors (smtp_reply() would count twice). */
static void smtp_refuse(fe_session_t *fs, void *req, fe_refusal_t why, const char *text)
{
    (void)req;
    smtp_session_t *s = (smtp_session_t *)fs;
    switch (why) {
    case FE_REFUSE_UNKNOWN:
        fe_session_reply(fs, "500 5.5.1 Command unrecognized");
        break;
    case FE_REFUSE_STATE:
        fe_session_reply(fs, "503 5.5.1 Error: send HELO/EHLO first");
        break;
    case FE_REFUSE_NEEDS_TLS:
        fe_session_reply(fs, "538 5.7.11 Encryption required for requested authentication "
                             "mechanism");
        break;
    case FE_REFUSE_SYNTAX:
        fe_session_reply(fs, "500 %s", text);
        break;
    case FE_REFUSE_TOO_LONG:
        fe_session_reply(fs, "500 5.5.2 Line too long");
        break;
    /* Postfix: smtpd_hard_error_limit; RFC 5321 section 3.8: 421 before closing. */
    case FE_REFUSE_TOO_MANY_ERRORS:
        fe_session_reply(fs, "421 4.7.0 %s Error: too many errors", fs->srv->hostname);
        smtp_enter_state(s, SMTP_STATE_QUIT);
        break;
    case FE_REFUSE_TOO_MANY_COMMANDS:
        fe_session_reply(fs, "421 4.7.0 %s Error: too many commands", fs->srv->hostname);
        smtp_enter_state(s, SMTP_STATE_QUIT);
        break;
    }
}

/* Blocked in mid-session (a login, a recipient, a message): 421 and hang up. */
static void smtp_blocked_reply(fe_session_t *fs, const char *reason, const char *until)
{
    fe_session_reply(fs, "421 4.7.1 %s Your address %s is blocked until %s: %s",
                     fs->srv->hostname, fs->peer, until, reason);
    smtp_enter_state((smtp_session_t *)fs, SMTP_STATE_QUIT);
}

const fe_cmd_table_t smtp_cmd_table = {
    .cmds = smtp_commands,
    .ncmds = sizeof smtp_commands / sizeof smtp_commands[0],
    .line_max = SMTP_LINE_MAX,
    .tokenize = smtp_tokenize,
    .state = smtp_state_bit,
    .refuse = smtp_refuse,
    .blocked = smtp_blocked_reply,
    .blocked_reason = "too many failures",
    .max_errors_key = "smtp.max_errors",
    .max_errors_default = 20,
    .max_commands_key = "smtp.max_commands",
    .max_commands_default = 10000,
};

void smtp_dispatch(smtp_session_t *s, char *line, size_t len, unsigned flags)
{
    smtp_request_t req = { .args = NULL };
    fe_dispatch(&s->fe, &smtp_cmd_table, line, len, flags, &req);
}
