#include "svc/dispatch.h"

#include <stdio.h>
#include <strings.h>

#include "base/log.h"

/* A positive number from the settings, else dflt; dflt also when the session has no server
 * (unit tests drive a zeroed session). */
static long table_setting(const fe_session_t *s, const char *key, long dflt)
{
    if (!key || !s->srv || !s->srv->cfg)
        return dflt;
    long v = config_get_long(s->srv->cfg, key);
    return v > 0 ? v : dflt;
}

static const fe_cmd_t *fe_cmd_find(const fe_cmd_table_t *t, const char *name)
{
    for (size_t i = 0; i < t->ncmds; i++)
        if (strcasecmp(t->cmds[i].name, name) == 0)
            return &t->cmds[i];
    return NULL;
}

bool fe_session_error(fe_session_t *s, const fe_cmd_table_t *t)
{
    long max = table_setting(s, t->max_errors_key, t->max_errors_default);
    ++s->errors;
    if (max <= 0 || s->errors < (unsigned long)max)
        return false;
    log_warn("too many errors, disconnecting", "session=%lu client=%s errors=%u", s->id, s->peer,
             s->errors);
    t->refuse(s, NULL, FE_REFUSE_TOO_MANY_ERRORS, NULL);
    fe_session_close(s);
    return true;
}

void fe_dispatch_refuse(fe_session_t *s, const fe_cmd_table_t *t, void *req, fe_refusal_t why,
                        const char *text)
{
    t->refuse(s, req, why, text);
    fe_session_error(s, t);
}

/* Counts a command; true when that is one too many (replied, and the session is closing). */
static bool too_many_commands(fe_session_t *s, const fe_cmd_table_t *t, void *req)
{
    long max = table_setting(s, t->max_commands_key, t->max_commands_default);
    ++s->commands;
    if (max <= 0 || s->commands <= (unsigned long)max)
        return false;
    log_warn("too many commands, disconnecting", "session=%lu client=%s commands=%lu", s->id,
             s->peer, s->commands);
    t->refuse(s, req, FE_REFUSE_TOO_MANY_COMMANDS, NULL);
    fe_session_close(s);
    return true;
}

void fe_dispatch(fe_session_t *s, const fe_cmd_table_t *t, char *line, size_t len,
                 unsigned line_flags, void *req)
{
    if (s->closing)
        return;
    unsigned state = t->state(s);
    if (!state)
        return;
    const char *name = "", *error = NULL;
    int rc = t->tokenize(s, line, len, line_flags, req, &name, &error);
    if (rc == FE_TOKENIZE_FRAMING) {
        fe_dispatch_refuse(s, t, req, FE_REFUSE_SYNTAX, error);
        return;
    }
    const fe_cmd_t *cmd = rc == FE_TOKENIZE_OK ? fe_cmd_find(t, name) : NULL;
    if (!(cmd && (cmd->flags & FE_CMD_NO_COUNT)) && too_many_commands(s, t, req))
        return;
    if (t->line_max && len + 2 > t->line_max && !(cmd && (cmd->flags & FE_CMD_LONG_LINE)))
        fe_dispatch_refuse(s, t, req, FE_REFUSE_TOO_LONG, NULL);
    else if (rc != FE_TOKENIZE_OK)
        fe_dispatch_refuse(s, t, req, FE_REFUSE_SYNTAX, error ? error : "Syntax error");
    else if (!cmd)
        fe_dispatch_refuse(s, t, req, FE_REFUSE_UNKNOWN, name);
    else if (t->admit && !t->admit(s, cmd, req))
        return;
    else if (!(cmd->states & state))
        fe_dispatch_refuse(s, t, req, FE_REFUSE_STATE, cmd->name);
    else if ((cmd->flags & FE_CMD_NEEDS_TLS_OR_PLAINTEXT) && !fe_session_auth_allowed(s))
        fe_dispatch_refuse(s, t, req, FE_REFUSE_NEEDS_TLS, cmd->name);
    else
        cmd->fn(s, req);
}

/* RFC 2595 section 2.1 and DESIGN.md: passwords only inside TLS unless the administrator
 * allows plaintext. */
bool fe_session_auth_allowed(const fe_session_t *s)
{
    return fe_session_tls(s) ||
           (s->srv && s->srv->cfg && config_get_bool(s->srv->cfg, "auth.allow_plaintext"));
}

void fe_session_blocked_now(fe_session_t *s, const fe_cmd_table_t *t, const lim_verdict_t *v)
{
    char reason[200], until[32] = "later";
    snprintf(reason, sizeof reason, "%s", t->blocked_reason ? t->blocked_reason : "blocked");
    int64_t until_ms;
    if (v && v->until_ms) {
        snprintf(reason, sizeof reason, "%.199s", v->reason);
        fe_format_time(v->until_ms, until, sizeof until);
    } else if (s->srv && lim_blocked(s->srv->lim, s->peer, reason, sizeof reason, &until_ms)) {
        fe_format_time(until_ms, until, sizeof until);
    }
    log_warn("client blocked", "session=%lu client=%s until=%s reason=\"%s\"", s->id, s->peer,
             until, reason);
    if (s->srv)
        metrics_add(s->srv->metrics, "postern_blocked_sessions_total",
                    "Sessions closed because the limiter blocked the client during them", NULL, 1);
    if (t->blocked)
        t->blocked(s, reason, until);
    else if (s->srv)
        s->srv->proto->blocked(s, reason, until);
    fe_session_close(s);
}
