/* The SMTP command table and its handlers (RFC 5321 section 4.1.1). The dispatcher
 * handles what every command shares: framing errors, unknown commands, the EHLO-first
 * rule and line length; handlers parse their arguments and act. */
#include "smtpd.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "svc/fe_auth.h"
#include "base/log.h"
#include "auth/sasl.h"

enum {
    CMD_NEEDS_HELO = 1 << 0, /* 503 before EHLO/HELO */
    CMD_LONG_LINE = 1 << 1,  /* may exceed 512 bytes (AUTH initial responses) */
};

typedef struct smtp_cmd {
    const char *name;
    void (*fn)(smtp_session_t *s, char *args);
    unsigned flags;
} smtp_cmd_t;

static bool auth_offered(smtp_session_t *s)
{
    return fe_session_tls(&s->fe) || config_get_bool(s->fe.srv->cfg, "auth.allow_plaintext");
}

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

static void cmd_ehlo(smtp_session_t *s, char *args)
{
    cmd_helo_common(s, args, true);
    if (s->state != SMTP_STATE_READY)
        return;
    fe_session_t *fs = &s->fe;
    fe_session_printf(fs, "250-%s\r\n", fs->srv->hostname);
    fe_session_printf(fs, "250-PIPELINING\r\n");
    fe_session_printf(fs, "250-SIZE %ld\r\n", config_get_long(fs->srv->cfg, "smtp.max_message_size"));
    fe_session_printf(fs, "250-8BITMIME\r\n");
    fe_session_printf(fs, "250-ENHANCEDSTATUSCODES\r\n");
    if (fe_session_tls_available(fs))
        fe_session_printf(fs, "250-STARTTLS\r\n");
    if (auth_offered(s))
        fe_session_printf(fs, "250-AUTH %s\r\n", sasl_mechanisms());
    fe_session_printf(fs, "250 HELP\r\n");
}

static void cmd_helo(smtp_session_t *s, char *args)
{
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
            smtp_reply(s, 555, "5.5.4 Unsupported parameter %.40s", tok);
            return -1;
        }
    }
    return 0;
}

static void cmd_mail(smtp_session_t *s, char *args)
{
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
        smtp_reply(s, 553, "5.7.1 <%s>: Sender address not owned by user %s", path.address,
                   s->fe.user);
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

/* 550 for the unknown recipient in s->pending, then on with the input. */
static void rcpt_reject_unknown(fe_session_t *fs)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    smtp_reply(s, 550, "5.1.1 <%s>: Recipient address rejected: no such user",
               s->pending.address ? s->pending.address : "");
    free(s->pending.address);
    s->pending.address = NULL;
    fe_session_resume(fs);
}

static void rcpt_limit_cb(void *arg, const lim_verdict_t *v)
{
    smtp_session_t *s = arg;
    if (!s->fe.closing) {
        if (v->answered && v->verdict == POSTERN__VERDICT__VERDICT_BLOCKED)
            smtp_blocked_now(s, v);
        else if (v->answered && v->delay_ms > 0)
            fe_session_delay(&s->fe, v->delay_ms, rcpt_reject_unknown);
        else
            rcpt_reject_unknown(&s->fe);
    }
    fe_session_unref(&s->fe);
}

static void rcpt_lookup_cb(void *arg, PGresult *res)
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
        smtp_reply(s, 451, "4.3.0 <%s>: Temporary lookup failure, please try again later", address);
        free(address);
    } else if (PQntuples(res) == 0) {
        log_info("unknown recipient", "session=%lu client=%s rcpt=\"%s\"", s->fe.id, s->fe.peer,
                 address);
        s->pending.address = address;
        /* Dictionary attacks: the limiter may slow this reply down or block the client. */
        if (lim_rcpt_failure(s->fe.srv->lim, POSTERN__SERVICE__SERVICE_SMTP, s->fe.peer, address,
                             rcpt_limit_cb, s) == 0)
            return; /* keeps waiting, and the reference */
        rcpt_reject_unknown(&s->fe);
    } else {
        smtp_reply(s, 250, "2.1.5 Ok");
        rcpt_add(s, address, true);
    }
    fe_session_resume(&s->fe);
    fe_session_unref(&s->fe);
}

static void cmd_rcpt(smtp_session_t *s, char *args)
{
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
    if (local) {
        if (smtp_local_part_routes(path.local)) {
            smtp_reply(s, 550, "5.7.1 <%s>: Routing characters are not accepted in local parts",
                       path.address);
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
        fe_session_wait(&s->fe);
        fe_session_ref(&s->fe);
        db_query(s->fe.srv->db, "SELECT 1 FROM users WHERE address = $1", 1, &param, NULL, NULL,
                 rcpt_lookup_cb, s);
        return;
    }
    net_addr_t client;
    bool listed = net_addr_parse(s->fe.peer, &client) == 0 && config_relay_network(cfg, &client);
    if (!smtp_may_relay(smtp_relay_mode(config_get(cfg, "relay.mode")), s->fe.user != NULL, listed)) {
        log_warn("relay denied", "session=%lu client=%s rcpt=\"%s\"", s->fe.id, s->fe.peer,
                 path.address);
        smtp_reply(s, 554, "5.7.1 <%s>: Relay access denied", path.address);
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

static void cmd_data(smtp_session_t *s, char *args)
{
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

static void cmd_rset(smtp_session_t *s, char *args)
{
    (void)args;
    smtp_reset_transaction(s);
    smtp_reply(s, 250, "2.0.0 Ok");
}

static void cmd_noop(smtp_session_t *s, char *args)
{
    (void)args;
    smtp_reply(s, 250, "2.0.0 Ok");
}

static void cmd_quit(smtp_session_t *s, char *args)
{
    (void)args;
    smtp_reply(s, 221, "2.0.0 Bye");
    smtp_enter_state(s, SMTP_STATE_QUIT);
    fe_session_close(&s->fe);
}

/* RFC 5321 section 3.5.3: 252 reveals nothing about which users exist. */
static void cmd_vrfy(smtp_session_t *s, char *args)
{
    if (!*args) {
        smtp_reply(s, 501, "5.5.4 Syntax: VRFY address");
        return;
    }
    smtp_reply(s, 252, "2.5.2 Cannot VRFY user, but will accept message and attempt delivery");
}

static void cmd_expn(smtp_session_t *s, char *args)
{
    (void)args;
    smtp_reply(s, 502, "5.5.1 EXPN not available");
}

static void cmd_help(smtp_session_t *s, char *args)
{
    (void)args;
    smtp_reply(s, 214, "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY STARTTLS AUTH HELP");
}

static void cmd_starttls(smtp_session_t *s, char *args)
{
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
    fe_session_printf(fs, "334 %s\r\n", b64);
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
static void cmd_auth(smtp_session_t *s, char *args)
{
    if (s->fe.user) {
        smtp_reply(s, 503, "5.5.1 Already authenticated");
        return;
    }
    if (s->state != SMTP_STATE_READY) {
        smtp_reply(s, 503, "5.5.1 AUTH not allowed during a mail transaction");
        return;
    }
    if (!auth_offered(s)) {
        smtp_reply(s, 538, "5.7.11 Encryption required for requested authentication mechanism");
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

static const smtp_cmd_t smtp_commands[] = {
    { "EHLO", cmd_ehlo, 0 },
    { "HELO", cmd_helo, 0 },
    { "MAIL", cmd_mail, CMD_NEEDS_HELO },
    { "RCPT", cmd_rcpt, CMD_NEEDS_HELO },
    { "DATA", cmd_data, CMD_NEEDS_HELO },
    { "RSET", cmd_rset, 0 },
    { "NOOP", cmd_noop, 0 },
    { "QUIT", cmd_quit, 0 },
    { "VRFY", cmd_vrfy, 0 },
    { "EXPN", cmd_expn, 0 },
    { "HELP", cmd_help, 0 },
    { "STARTTLS", cmd_starttls, CMD_NEEDS_HELO },
    { "AUTH", cmd_auth, CMD_NEEDS_HELO | CMD_LONG_LINE },
    { NULL, NULL, 0 },
};

void smtp_dispatch(smtp_session_t *s, char *line, size_t len, unsigned flags)
{
    if (s->state == SMTP_STATE_QUIT)
        return;
    if (flags & LINE_BARE_LF) {
        smtp_reply(s, 500, "5.5.2 Bare LF received; commands end with CRLF");
        return;
    }
    if (flags & LINE_NUL) {
        smtp_reply(s, 500, "5.5.2 NUL byte in command");
        return;
    }
    long max_commands = config_get_long(s->fe.srv->cfg, "smtp.max_commands");
    if (++s->commands > (unsigned long)(max_commands > 0 ? max_commands : 10000)) {
        log_warn("too many commands, disconnecting", "session=%lu client=%s", s->fe.id,
                 s->fe.peer);
        fe_session_printf(&s->fe, "421 4.7.0 %s Error: too many commands\r\n",
                          s->fe.srv->hostname);
        smtp_enter_state(s, SMTP_STATE_QUIT);
        fe_session_close(&s->fe);
        return;
    }
    size_t n = strcspn(line, " ");
    const smtp_cmd_t *cmd = smtp_commands;
    for (; cmd->name; cmd++)
        if (strlen(cmd->name) == n && strncasecmp(cmd->name, line, n) == 0)
            break;
    if (len > SMTP_LINE_MAX - 2 && !(cmd->name && (cmd->flags & CMD_LONG_LINE))) {
        smtp_reply(s, 500, "5.5.2 Line too long");
        return;
    }
    if (!cmd->name) {
        smtp_reply(s, 500, "5.5.1 Command unrecognized");
        return;
    }
    if ((cmd->flags & CMD_NEEDS_HELO) && s->state == SMTP_STATE_INIT) {
        smtp_reply(s, 503, "5.5.1 Error: send HELO/EHLO first");
        return;
    }
    char *args = line + n;
    while (*args == ' ')
        args++;
    cmd->fn(s, args);
}
