/* The IMAP command table (RFC 3501 section 6) and the commands valid in any state or
 * before login. The shared dispatcher (lib/svc/dispatch.h) handles unknown commands, the
 * state a command is valid in, authentication before TLS and the error cap. */
#include "imapd.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/text.h"
#include "svc/fe_auth.h"

#define ARGS(req) (((imap_req_t *)(req))->cmd.args)
#define NARGS(req) (((imap_req_t *)(req))->cmd.n_args)

static bool no_args(imap_session_t *s, imap_req_t *req)
{
    if (req->cmd.n_args == 0)
        return true;
    imap_bad(s, "%s takes no arguments", req->cmd.name);
    return false;
}

/* ---- any state (RFC 3501 section 6.1) ---------------------------------------------- */

static void cmd_capability(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (!no_args(s, req))
        return;
    imap_untagged(s, "CAPABILITY %s", imap_capabilities(s));
    imap_ok(s, NULL, "Capability completed");
}

/* NOOP: also the moment to tell the client what changed (section 6.1.2). The updates are
 * sent by imap_cmd_check's shared path. */
static void cmd_noop(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (!no_args(s, req))
        return;
    imap_cmd_check(fs, req);
}

static void cmd_logout(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (!no_args(s, req))
        return;
    fe_session_reply(fs, "* BYE %s Postern IMAP4rev1 server logging out", fs->srv->hostname);
    imap_ok(s, NULL, "Logout completed");
    imap_mailbox_forget(s);
    imap_enter_state(s, IMAP_STATE_LOGOUT);
    fe_session_close(fs);
}

/* RFC 2971: the server says who it is; what the client says is logged. */
static void cmd_id(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    if (r->cmd.n_args != 1 ||
        (r->cmd.args[0].type != IMAP_ARG_NIL && r->cmd.args[0].type != IMAP_ARG_LIST) ||
        (r->cmd.args[0].type == IMAP_ARG_LIST && r->cmd.args[0].n % 2 != 0)) {
        imap_bad(s, "Syntax: ID (field value ...) or ID NIL");
        return;
    }
    const imap_arg_t *l = &r->cmd.args[0];
    for (size_t i = 0; l->type == IMAP_ARG_LIST && i + 1 < l->n && i < 60; i += 2) {
        const char *k, *v;
        size_t kl, vl;
        if (imap_arg_astring(&l->list[i], &k, &kl) && imap_arg_astring(&l->list[i + 1], &v, &vl))
            log_info("client id", "session=%lu %.*s=\"%.*s\"", fs->id, (int)(kl > 30 ? 30 : kl),
                     k, (int)(vl > 100 ? 100 : vl), v);
    }
    imap_untagged(s, "ID (\"name\" \"Postern\" \"vendor\" \"Postern\")");
    imap_ok(s, NULL, "ID completed");
}

/* ---- not authenticated (section 6.2) ----------------------------------------------- */

static void cmd_starttls(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (!no_args(s, req))
        return;
    if (fe_session_tls(fs)) {
        imap_bad(s, "TLS is already active");
        return;
    }
    if (!fe_session_tls_available(fs)) {
        imap_no(s, NULL, "TLS is not available");
        return;
    }
    imap_ok(s, NULL, "Begin TLS negotiation now");
    if (fe_session_starttls(fs) < 0)
        fe_session_close(fs);
}

static void auth_challenge(fe_session_t *fs, const char *b64)
{
    fe_session_reply(fs, "+ %s", b64);
}

static void auth_done(fe_session_t *fs, fe_auth_result_t r, const lim_verdict_t *block)
{
    imap_session_t *s = (imap_session_t *)fs;
    switch (r) {
    case FE_AUTH_OK:
        imap_after_login(s);
        break;
    case FE_AUTH_FAIL:
        imap_no_counted(s, "AUTHENTICATIONFAILED", "Authentication failed");
        break;
    case FE_AUTH_TEMP:
        imap_no(s, "UNAVAILABLE", "Temporary authentication failure, try again later");
        break;
    case FE_AUTH_ABORTED:
        imap_bad(s, "Authentication aborted");
        break;
    case FE_AUTH_MALFORMED:
        imap_bad(s, "Cannot decode the authentication response");
        break;
    case FE_AUTH_BLOCKED:
        fe_session_blocked_now(fs, &imap_cmd_table, block);
        break;
    }
}

static const fe_auth_ops_t imap_auth_ops = { auth_challenge, auth_done };

static bool config_ready(imap_session_t *s)
{
    if (config_loaded(s->fe.srv->cfg))
        return true;
    imap_no(s, "UNAVAILABLE", "Authentication is not available now, try again later");
    return false;
}

/* RFC 3501 section 6.2.3. */
static void cmd_login(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    const char *user, *pass;
    size_t ulen, plen;
    if (r->cmd.n_args != 2 || !imap_arg_astring(&r->cmd.args[0], &user, &ulen) ||
        !imap_arg_astring(&r->cmd.args[1], &pass, &plen)) {
        imap_bad(s, "Syntax: LOGIN user password");
        return;
    }
    if (!config_ready(s))
        return;
    char u[256], p[1024];
    if (ulen >= sizeof u || plen >= sizeof p || memchr(user, 0, ulen) || memchr(pass, 0, plen)) {
        imap_no_counted(s, "AUTHENTICATIONFAILED", "Authentication failed");
        return;
    }
    memcpy(u, user, ulen);
    u[ulen] = '\0';
    memcpy(p, pass, plen);
    p[plen] = '\0';
    fe_auth_password(fs, "LOGIN", u, p, &imap_auth_ops);
    OPENSSL_cleanse(p, sizeof p);
    OPENSSL_cleanse((char *)pass, plen);
}

/* RFC 3501 section 6.2.2 with the initial response of RFC 4959 (SASL-IR). */
static void cmd_authenticate(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    const char *mech, *ir = NULL;
    size_t mlen, irlen = 0;
    if (r->cmd.n_args < 1 || r->cmd.n_args > 2 || r->cmd.args[0].type != IMAP_ARG_ATOM ||
        !imap_arg_astring(&r->cmd.args[0], &mech, &mlen) ||
        (r->cmd.n_args == 2 && r->cmd.args[1].type != IMAP_ARG_ATOM)) {
        imap_bad(s, "Syntax: AUTHENTICATE mechanism [initial-response]");
        return;
    }
    if (!config_ready(s))
        return;
    char m[32], initial[8192];
    if (mlen >= sizeof m) {
        imap_no_counted(s, NULL, "Unsupported authentication mechanism");
        return;
    }
    memcpy(m, mech, mlen);
    m[mlen] = '\0';
    if (r->cmd.n_args == 2) {
        ir = r->cmd.args[1].str;
        irlen = r->cmd.args[1].len;
        if (irlen >= sizeof initial) {
            imap_bad(s, "Initial response too long");
            return;
        }
        memcpy(initial, ir, irlen);
        initial[irlen] = '\0';
    }
    if (fe_auth_start(fs, m, ir ? initial : NULL, &imap_auth_ops) < 0)
        imap_no_counted(s, NULL, "Unsupported authentication mechanism");
    if (ir) {
        OPENSSL_cleanse(initial, irlen);
        OPENSSL_cleanse((char *)ir, irlen);
    }
}

/* ---- authenticated (section 6.3, RFC 5161) ----------------------------------------- */

static void cmd_enable(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    if (r->cmd.n_args == 0) {
        imap_bad(s, "Syntax: ENABLE capability ...");
        return;
    }
    bool now = false;
    for (size_t i = 0; i < r->cmd.n_args; i++)
        if (imap_arg_is_word(&r->cmd.args[i], "CONDSTORE") && !s->condstore)
            now = s->condstore = true;
    if (now)
        imap_untagged(s, "ENABLED CONDSTORE");
    else
        imap_untagged(s, "ENABLED");
    imap_ok(s, NULL, "Enabled");
}

/* ---- the table --------------------------------------------------------------------- */

static const fe_cmd_t imap_cmds[] = {
    { "CAPABILITY", IMAP_ANY, 0, cmd_capability },
    { "NOOP", IMAP_ANY, 0, cmd_noop },
    { "LOGOUT", IMAP_ANY, 0, cmd_logout },
    { "ID", IMAP_ANY, 0, cmd_id },
    { "STARTTLS", IMAP_STATE_NOT_AUTH, 0, cmd_starttls },
    { "LOGIN", IMAP_STATE_NOT_AUTH, FE_CMD_NEEDS_TLS_OR_PLAINTEXT, cmd_login },
    { "AUTHENTICATE", IMAP_STATE_NOT_AUTH, FE_CMD_NEEDS_TLS_OR_PLAINTEXT, cmd_authenticate },
    { "ENABLE", IMAP_STATE_AUTH, 0, cmd_enable },
    { "SELECT", IMAP_AUTHED, 0, imap_cmd_select },
    { "EXAMINE", IMAP_AUTHED, 0, imap_cmd_examine },
    { "CREATE", IMAP_AUTHED, 0, imap_cmd_create },
    { "DELETE", IMAP_AUTHED, 0, imap_cmd_delete },
    { "RENAME", IMAP_AUTHED, 0, imap_cmd_rename },
    { "SUBSCRIBE", IMAP_AUTHED, 0, imap_cmd_subscribe },
    { "UNSUBSCRIBE", IMAP_AUTHED, 0, imap_cmd_unsubscribe },
    { "LIST", IMAP_AUTHED, 0, imap_cmd_list },
    { "LSUB", IMAP_AUTHED, 0, imap_cmd_lsub },
    { "STATUS", IMAP_AUTHED, 0, imap_cmd_status },
    { "APPEND", IMAP_AUTHED, 0, imap_cmd_append },
    { "NAMESPACE", IMAP_AUTHED, 0, imap_cmd_namespace },
    { "IDLE", IMAP_AUTHED, 0, imap_cmd_idle },
    { "CHECK", IMAP_STATE_SELECTED, 0, imap_cmd_check },
    { "CLOSE", IMAP_STATE_SELECTED, 0, imap_cmd_close },
    { "UNSELECT", IMAP_STATE_SELECTED, 0, imap_cmd_unselect },
    { "EXPUNGE", IMAP_STATE_SELECTED, 0, imap_cmd_expunge },
    { "SEARCH", IMAP_STATE_SELECTED, 0, imap_cmd_search },
    { "FETCH", IMAP_STATE_SELECTED, 0, imap_cmd_fetch },
    { "STORE", IMAP_STATE_SELECTED, 0, imap_cmd_store },
    { "COPY", IMAP_STATE_SELECTED, 0, imap_cmd_copy },
    { "MOVE", IMAP_STATE_SELECTED, 0, imap_cmd_move },
};

static int tokenize(fe_session_t *fs, char *line, size_t len, unsigned line_flags, void *req,
                    const char **name_r, const char **error_r)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    size_t tl = imap_parse_tag(line, len);
    s->tag[0] = '\0';
    if (tl > 0 && tl < sizeof s->tag) {
        memcpy(s->tag, line, tl);
        s->tag[tl] = '\0';
    }
    /* NUL outside a literal (RFC 3501 section 9: CHAR8 excludes it). */
    if (line_flags & LINE_NUL) {
        *error_r = "NUL bytes are not allowed in commands";
        return FE_TOKENIZE_FRAMING;
    }
    if (imap_parse_command(line, len, &r->cmd, error_r) != 1) {
        if (!*error_r)
            *error_r = "Incomplete command";
        return FE_TOKENIZE_SYNTAX;
    }
    r->parsed = true;
    /* UID is valid only before COPY, MOVE, FETCH, SEARCH, STORE and EXPUNGE (RFC 3501
     * section 6.4.8, RFC 4315 section 2.1, RFC 6851). */
    if (r->cmd.uid && strcmp(r->cmd.name, "COPY") != 0 && strcmp(r->cmd.name, "MOVE") != 0 &&
        strcmp(r->cmd.name, "FETCH") != 0 && strcmp(r->cmd.name, "SEARCH") != 0 &&
        strcmp(r->cmd.name, "STORE") != 0 && strcmp(r->cmd.name, "EXPUNGE") != 0) {
        *error_r = "Unknown UID command";
        return FE_TOKENIZE_SYNTAX;
    }
    *name_r = r->cmd.name;
    return FE_TOKENIZE_OK;
}

static unsigned state_bit(fe_session_t *fs)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (s->idling || s->state == IMAP_STATE_LOGOUT)
        return 0;
    return s->state;
}

static void refuse(fe_session_t *fs, void *req, fe_refusal_t why, const char *text)
{
    imap_session_t *s = (imap_session_t *)fs;
    (void)req;
    const char *tag = s->tag[0] ? s->tag : "*";
    char echo[41];
    switch (why) {
    case FE_REFUSE_UNKNOWN:
        fe_session_reply(fs, "%s BAD Unknown command %s", tag,
                         text_echo(echo, sizeof echo, text ? text : "", text ? strlen(text) : 0));
        break;
    case FE_REFUSE_STATE:
        fe_session_reply(fs, "%s BAD %s", tag,
                         s->state == IMAP_STATE_NOT_AUTH ? "Log in first"
                         : s->state == IMAP_STATE_AUTH   ? "Select a mailbox first"
                                                         : "Command not valid in this state");
        break;
    case FE_REFUSE_NEEDS_TLS:
        fe_session_reply(fs, "%s NO [PRIVACYREQUIRED] Plaintext authentication is disallowed "
                             "on non-secure connections; use STARTTLS first", tag);
        break;
    case FE_REFUSE_SYNTAX:
        fe_session_reply(fs, "%s BAD %s", tag, text ? text : "Syntax error");
        break;
    case FE_REFUSE_TOO_LONG:
        fe_session_reply(fs, "%s BAD [TOOBIG] Command line too long", tag);
        break;
    case FE_REFUSE_TOO_MANY_ERRORS:
        fe_session_reply(fs, "* BYE Too many errors, closing the connection");
        imap_enter_state(s, IMAP_STATE_LOGOUT);
        break;
    case FE_REFUSE_TOO_MANY_COMMANDS:
        fe_session_reply(fs, "* BYE Too many commands, closing the connection");
        imap_enter_state(s, IMAP_STATE_LOGOUT);
        break;
    }
}

/* A block found during a login: RFC 3501 section 7.1.5 BYE with the reason and until when. */
static void blocked_now(fe_session_t *fs, const char *reason, const char *until)
{
    imap_blocked(fs, reason, until);
}

const fe_cmd_table_t imap_cmd_table = {
    .cmds = imap_cmds,
    .ncmds = sizeof imap_cmds / sizeof imap_cmds[0],
    .line_max = 0,
    .tokenize = tokenize,
    .state = state_bit,
    .refuse = refuse,
    .blocked = blocked_now,
    .blocked_reason = "too many failed logins",
    .max_errors_key = IMAP_MAX_ERRORS_KEY,
    .max_errors_default = IMAP_MAX_ERRORS_DEFAULT,
};
