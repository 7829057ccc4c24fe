/* The shared command dispatcher (lib/svc/dispatch.h) driven with a small fake protocol and
 * a zeroed session (no server: the caps come from the table's defaults). Each case feeds a
 * few lines and compares the transcript of what the dispatcher did: which handler ran,
 * which refusal the protocol was asked to word, what the admit hook answered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/line.h"
#include "svc/dispatch.h"

/* ---- the fake protocol --------------------------------------------------------------- */

enum { IN_START = 1u << 0, IN_AUTHED = 1u << 1, ANY = IN_START | IN_AUTHED };

typedef struct fake_session {
    fe_session_t fe; /* first, as in every protocol */
    unsigned state;  /* the state bit itself; 0: takes no commands */
    bool lost;       /* the admit hook refuses everything but QUIT */
    char log[1024];
} fake_session_t;

typedef struct fake_request {
    char verb[16];
    char *args;
} fake_request_t;

static void note(fake_session_t *f, const char *fmt, ...)
{
    size_t used = strlen(f->log);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->log + used, sizeof f->log - used, fmt, ap);
    va_end(ap);
}

static void cmd_run(fe_session_t *s, void *req)
{
    fake_request_t *r = req;
    note((fake_session_t *)s, "run %s(%s);", r->verb, r->args);
}

static void cmd_login(fe_session_t *s, void *req)
{
    cmd_run(s, req);
    ((fake_session_t *)s)->state = IN_AUTHED;
}

static void cmd_lose(fe_session_t *s, void *req)
{
    cmd_run(s, req);
    ((fake_session_t *)s)->lost = true;
}

static void cmd_quit(fe_session_t *s, void *req)
{
    cmd_run(s, req);
    ((fake_session_t *)s)->state = 0;
}

static const fe_cmd_t fake_cmds[] = {
    { "NOOP", ANY, 0, cmd_run },
    { "LOGIN", IN_START, FE_CMD_NEEDS_TLS_OR_PLAINTEXT, cmd_login },
    { "BLOB", ANY, FE_CMD_LONG_LINE, cmd_run },
    { "READ", IN_AUTHED, 0, cmd_run },
    { "PING", ANY, FE_CMD_NO_COUNT, cmd_run },
    { "LOSE", ANY, 0, cmd_lose },
    { "QUIT", ANY, 0, cmd_quit },
};

/* A verb of letters, a space, the arguments. A NUL is a framing error; a verb that does not
 * start with a letter a syntax error. */
static int fake_tokenize(fe_session_t *s, char *line, size_t len, unsigned line_flags,
                         void *req, const char **name_r, const char **error_r)
{
    (void)s;
    (void)len;
    fake_request_t *r = req;
    if (line_flags & LINE_NUL) {
        *error_r = "NUL";
        return FE_TOKENIZE_FRAMING;
    }
    if (!isalpha((unsigned char)line[0])) {
        *error_r = "bad verb";
        return FE_TOKENIZE_SYNTAX;
    }
    size_t n = strcspn(line, " ");
    snprintf(r->verb, sizeof r->verb, "%.*s", (int)n, line);
    r->args = line[n] ? line + n + 1 : line + n;
    *name_r = r->verb;
    return FE_TOKENIZE_OK;
}

static unsigned fake_state(fe_session_t *s)
{
    return ((fake_session_t *)s)->state;
}

static bool fake_admit(fe_session_t *s, const fe_cmd_t *cmd, void *req)
{
    (void)req;
    fake_session_t *f = (fake_session_t *)s;
    if (!f->lost || strcmp(cmd->name, "QUIT") == 0)
        return true;
    note(f, "admit-no %s;", cmd->name);
    return false;
}

static const char *const why_names[] = {
    [FE_REFUSE_UNKNOWN] = "unknown",
    [FE_REFUSE_STATE] = "state",
    [FE_REFUSE_NEEDS_TLS] = "tls",
    [FE_REFUSE_SYNTAX] = "syntax",
    [FE_REFUSE_TOO_LONG] = "long",
    [FE_REFUSE_TOO_MANY_ERRORS] = "errors",
    [FE_REFUSE_TOO_MANY_COMMANDS] = "commands",
};

static void fake_refuse(fe_session_t *s, void *req, fe_refusal_t why, const char *text)
{
    (void)req;
    note((fake_session_t *)s, "%s(%s);", why_names[why], text ? text : "");
}

static void fake_blocked(fe_session_t *s, const char *reason, const char *until)
{
    note((fake_session_t *)s, "blocked(%s until %s);", reason, until);
}

static const fe_cmd_table_t fake_table = {
    .cmds = fake_cmds,
    .ncmds = sizeof fake_cmds / sizeof fake_cmds[0],
    .line_max = 16, /* lines of up to 14 bytes, terminator excluded */
    .tokenize = fake_tokenize,
    .state = fake_state,
    .admit = fake_admit,
    .refuse = fake_refuse,
    .blocked = fake_blocked,
    .blocked_reason = "too many tries",
    .max_errors_key = "fake.max_errors", /* not consulted: the session has no server */
    .max_errors_default = 3,
    .max_commands_key = NULL,
    .max_commands_default = 5,
};

/* ---- cases --------------------------------------------------------------------------- */

typedef struct dispatch_case {
    const char *name;
    unsigned state;
    unsigned flags;         /* the line reader's flags for every line (LINE_NUL) */
    const char *lines[8];
    const char *expect;     /* the transcript */
    unsigned errors;        /* s->errors afterwards */
    unsigned long commands; /* s->commands afterwards */
} dispatch_case_t;

static const dispatch_case_t cases[] = {
    { "a known command runs", IN_START, 0, { "NOOP", "NOOP a b" },
      "run NOOP();run NOOP(a b);", 0, 2 },
    { "names are looked up without regard to case", IN_START, 0, { "nOoP x" },
      "run nOoP(x);", 0, 1 },
    { "unknown command", IN_START, 0, { "XYZZY 1", "NOOP" },
      "unknown(XYZZY);run NOOP();", 1, 2 },
    { "wrong state", IN_START, 0, { "READY", "READ 1" },
      "unknown(READY);state(READ);", 2, 2 },
    { "authentication before TLS is refused", IN_START, 0, { "LOGIN u p", "READ 1" },
      "tls(LOGIN);state(READ);", 2, 2 },
    { "valid in the new state, not the old", IN_AUTHED, 0, { "READ 1", "LOGIN u p" },
      "run READ(1);state(LOGIN);", 1, 2 },
    { "a line over line_max", IN_START, 0, { "NOOP 0123456789", "NOOP 012345678" },
      "long();run NOOP(012345678);", 1, 2 },
    { "FE_CMD_LONG_LINE may exceed it", IN_START, 0, { "BLOB 0123456789abcdef" },
      "run BLOB(0123456789abcdef);", 0, 1 },
    { "an unknown long line is too long, not unknown", IN_START, 0, { "XYZZY 0123456789" },
      "long();", 1, 1 },
    { "syntax error", IN_START, 0, { "1NOOP" }, "syntax(bad verb);", 1, 1 },
    { "a long line that cannot be parsed is too long", IN_START, 0, { "1NOOP 0123456789" },
      "long();", 1, 1 },
    { "a framing error comes first and is not a command", IN_START, LINE_NUL,
      { "BLOB 0123456789abcdef" }, "syntax(NUL);", 1, 0 },
    { "the error cap closes after the third mistake", IN_START, 0,
      { "X1", "NOOP", "X2", "X3" },
      "unknown(X1);run NOOP();unknown(X2);unknown(X3);errors();", 3, 4 },
    { "the command cap: the sixth command is refused", IN_START, 0,
      { "NOOP", "NOOP", "X", "NOOP", "NOOP", "NOOP" },
      "run NOOP();run NOOP();unknown(X);run NOOP();run NOOP();commands();", 1, 6 },
    { "FE_CMD_NO_COUNT is not counted", IN_START, 0,
      { "PING", "PING", "PING", "PING", "PING", "PING" },
      "run PING();run PING();run PING();run PING();run PING();run PING();", 0, 0 },
    { "a session taking no commands drops lines", 0, 0, { "NOOP", "XYZZY" }, "", 0, 0 },
    { "lines after QUIT are dropped", IN_START, 0, { "QUIT", "NOOP", "X" },
      "run QUIT();", 0, 1 },
    { "admit answers instead of the command, uncounted", IN_START, 0,
      { "LOSE", "NOOP", "READ", "XYZZY", "QUIT" },
      "run LOSE();admit-no NOOP;admit-no READ;unknown(XYZZY);run QUIT();", 1, 5 },
};

static void run_case(const dispatch_case_t *c)
{
    fake_session_t f;
    memset(&f, 0, sizeof f);
    f.state = c->state;
    for (size_t i = 0; i < sizeof c->lines / sizeof c->lines[0] && c->lines[i]; i++) {
        char line[64];
        size_t len = strlen(c->lines[i]);
        memcpy(line, c->lines[i], len + 1);
        fake_request_t req = { .args = NULL };
        fe_dispatch(&f.fe, &fake_table, line, len, c->flags, &req);
    }
    if (strcmp(f.log, c->expect) != 0 || f.fe.errors != c->errors ||
        f.fe.commands != c->commands)
        fail_msg("%s:\n  got    %s errors=%u commands=%lu\n  wanted %s errors=%u commands=%lu",
                 c->name, f.log, f.fe.errors, f.fe.commands, c->expect, c->errors, c->commands);
}

static void test_dispatch_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

/* Mistakes a handler finds count against the same cap as the dispatcher's. */
static void test_handler_errors_share_the_cap(void **state)
{
    (void)state;
    fake_session_t f;
    memset(&f, 0, sizeof f);
    f.state = IN_START;
    assert_false(fe_session_error(&f.fe, &fake_table));
    char line[] = "XYZZY";
    fake_request_t req = { .args = NULL };
    fe_dispatch(&f.fe, &fake_table, line, strlen(line), 0, &req);
    assert_string_equal(f.log, "unknown(XYZZY);");
    assert_true(fe_session_error(&f.fe, &fake_table));
    assert_string_equal(f.log, "unknown(XYZZY);errors();");
    assert_int_equal(f.fe.errors, 3);
}

/* A line over the line reader's own cap is refused outside fe_dispatch (no request). */
static void test_refuse_outside_dispatch(void **state)
{
    (void)state;
    fake_session_t f;
    memset(&f, 0, sizeof f);
    for (int i = 0; i < 3; i++)
        fe_dispatch_refuse(&f.fe, &fake_table, NULL, FE_REFUSE_TOO_LONG, NULL);
    assert_string_equal(f.log, "long();long();long();errors();");
}

static void test_auth_needs_tls_without_server(void **state)
{
    (void)state;
    fe_session_t s;
    memset(&s, 0, sizeof s);
    assert_false(fe_session_auth_allowed(&s)); /* no TLS, no setting allows plaintext */
}

static void test_blocked_now(void **state)
{
    (void)state;
    fake_session_t f;
    memset(&f, 0, sizeof f);
    lim_verdict_t v;
    memset(&v, 0, sizeof v);
    v.answered = true;
    v.verdict = POSTERN__VERDICT__VERDICT_BLOCKED;
    snprintf(v.reason, sizeof v.reason, "%s", "harvesting");
    v.until_ms = 1800000000000LL;
    fe_session_blocked_now(&f.fe, &fake_table, &v);
    assert_string_equal(f.log, "blocked(harvesting until 2027-01-15T08:00:00Z);");

    /* No verdict (the limiter did not answer) and nothing known locally. */
    memset(&f, 0, sizeof f);
    fe_session_blocked_now(&f.fe, &fake_table, NULL);
    assert_string_equal(f.log, "blocked(too many tries until later);");

    /* A verdict without a time says nothing either. */
    memset(&f, 0, sizeof f);
    v.until_ms = 0;
    fe_session_blocked_now(&f.fe, &fake_table, &v);
    assert_string_equal(f.log, "blocked(too many tries until later);");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch_cases),
        cmocka_unit_test(test_handler_errors_share_the_cap),
        cmocka_unit_test(test_refuse_outside_dispatch),
        cmocka_unit_test(test_auth_needs_tls_without_server),
        cmocka_unit_test(test_blocked_now),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
