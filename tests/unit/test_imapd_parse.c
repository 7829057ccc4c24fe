/* imapd's parsing layer (services/imapd/parse.c), table-driven. Every command case goes
 * through a line splitter, the command assembler and the parser twice: with the whole
 * input at once and fed byte by byte; both runs must describe the same commands. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parse.h"

#define IN(s) s, sizeof(s) - 1
#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- literal announcements --------------------------------------------------------- */

static void test_literal_at_end(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        int rc;
        uint64_t n;
        bool nonsync;
    } cases[] = {
        { "A1 LOGIN {5}", 1, 5, false },
        { "A1 LOGIN {5+}", 1, 5, true },
        { "{0}", 1, 0, false },
        { "A1 APPEND INBOX {99999999999}", 1, 99999999999ull, false },
        { "A1 X {18446744073709551615}", 1, UINT64_MAX, false },
        { "A1 X {18446744073709551616}", -1, 0, false },
        { "A1 X {12x}", -1, 0, false },
        { "A1 X {}", -1, 0, false },
        { "A1 X {+}", -1, 0, false },
        { "A1 X {-1}", -1, 0, false },
        { "A1 X {1++}", -1, 0, false },
        { "A1 NOOP", 0, 0, false },
        { "A1 SEARCH SUBJECT foo}", 0, 0, false },
        { "A1 SEARCH SUBJECT \"a {5}", 1, 5, false }, /* the line ends in an announcement */
        { "A1 X \"{\" 5}", 0, 0, false },
        { "}", 0, 0, false },
        { "", 0, 0, false },
    };
    for (size_t i = 0; i < N(cases); i++) {
        uint64_t n = 77;
        bool ns = false;
        print_message("literal_at_end: %s\n", cases[i].line);
        assert_int_equal(imap_literal_at_end(cases[i].line, strlen(cases[i].line), &n, &ns),
                         cases[i].rc);
        if (cases[i].rc == 1) {
            assert_true(n == cases[i].n);
            assert_int_equal(ns, cases[i].nonsync);
        }
    }
}

/* ---- commands: splitter, assembler, parser ----------------------------------------- */

static void cat(char *out, size_t out_len, const char *s)
{
    strncat(out, s, out_len - strlen(out) - 1);
}

static void describe_bytes(char *out, size_t out_len, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char t[8];
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            snprintf(t, sizeof t, "%c", c);
        else
            snprintf(t, sizeof t, "\\x%02x", c);
        cat(out, out_len, t);
    }
}

static void describe_args(char *out, size_t out_len, const imap_arg_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char t[64];
        if (i)
            cat(out, out_len, " ");
        switch (a[i].type) {
        case IMAP_ARG_ATOM:
            cat(out, out_len, "a:");
            break;
        case IMAP_ARG_NUMBER:
            snprintf(t, sizeof t, "n%llu:", (unsigned long long)a[i].num);
            cat(out, out_len, t);
            break;
        case IMAP_ARG_QUOTED:
            cat(out, out_len, "q:");
            break;
        case IMAP_ARG_LITERAL:
            snprintf(t, sizeof t, "l%zu:", a[i].len);
            cat(out, out_len, t);
            break;
        case IMAP_ARG_NIL:
            cat(out, out_len, "NIL");
            continue;
        case IMAP_ARG_LIST:
            cat(out, out_len, "(");
            describe_args(out, out_len, a[i].list, a[i].n);
            cat(out, out_len, ")");
            continue;
        }
        describe_bytes(out, out_len, a[i].str, a[i].len);
    }
}

static void describe_command(char *out, size_t out_len, const char *data, size_t len)
{
    imap_command_t cmd;
    const char *err = NULL;
    int rc = imap_parse_command(data, len, &cmd, &err);
    if (rc <= 0) {
        cat(out, out_len, rc < 0 ? "ERR:" : "MORE");
        if (rc < 0)
            cat(out, out_len, err);
        return;
    }
    describe_bytes(out, out_len, cmd.tag, cmd.tag_len);
    cat(out, out_len, cmd.uid ? " UID " : " ");
    cat(out, out_len, cmd.name);
    if (cmd.n_args) {
        cat(out, out_len, " [");
        describe_args(out, out_len, cmd.args, cmd.n_args);
        cat(out, out_len, "]");
    }
    imap_command_free(&cmd);
}

static const imap_cmdbuf_limits_t test_limits = { 200, 100, 3 };

typedef struct feeder {
    imap_cmdbuf_t cb;
    buf_t in;
    uint64_t skip; /* bytes of a refused {N+} literal still to drop */
    bool drop_line; /* ... and then the rest of that command's line */
    char *out;
    size_t out_len;
} feeder_t;

static void feeder_result(feeder_t *f, const char *s)
{
    if (f->out[0])
        cat(f->out, f->out_len, "|");
    cat(f->out, f->out_len, s);
}

/* One line from the splitter: CRLF (or a bare LF) stripped. */
static void feeder_line(feeder_t *f, const char *line, size_t len)
{
    const char *err = NULL;
    int rc = imap_cmdbuf_line(&f->cb, line, len, &err);
    if (rc == 0) {
        if (!f->cb.nonsync)
            feeder_result(f, "+");
        return;
    }
    if (rc < 0) {
        char t[128];
        snprintf(t, sizeof t, "CB:%s", err);
        feeder_result(f, t);
        f->skip = f->cb.lost_sync ? f->cb.skip : 0;
        f->drop_line = f->cb.lost_sync;
        imap_cmdbuf_reset(&f->cb);
        return;
    }
    char desc[2048] = "";
    describe_command(desc, sizeof desc, f->cb.buf.data, f->cb.buf.len);
    feeder_result(f, desc);
    imap_cmdbuf_reset(&f->cb);
}

/* Uses what can be used of the input: dropped bytes, literal bytes, whole lines. */
static void feeder_run(feeder_t *f)
{
    for (;;) {
        if (f->skip && f->in.len) {
            size_t n = f->in.len < f->skip ? f->in.len : (size_t)f->skip;
            buf_consume(&f->in, n);
            f->skip -= n;
            continue;
        }
        if (f->cb.want && f->in.len) {
            size_t n = f->in.len < f->cb.want ? f->in.len : (size_t)f->cb.want;
            const char *err = NULL;
            assert_int_equal(imap_cmdbuf_literal(&f->cb, f->in.data, n, &err), 0);
            buf_consume(&f->in, n);
            continue;
        }
        char *lf = f->cb.want || f->skip ? NULL : memchr(f->in.data, '\n', f->in.len);
        if (!lf)
            return;
        size_t len = (size_t)(lf - f->in.data);
        if (f->drop_line) {
            f->drop_line = false;
            buf_consume(&f->in, len + 1);
            continue;
        }
        feeder_line(f, f->in.data, len > 0 && lf[-1] == '\r' ? len - 1 : len);
        buf_consume(&f->in, len + 1);
    }
}

static void feed_all(const char *input, size_t len, size_t step, const imap_cmdbuf_limits_t *lim,
                     char *out, size_t out_len)
{
    feeder_t f = { .out = out, .out_len = out_len };
    imap_cmdbuf_init(&f.cb, lim);
    buf_init(&f.in);
    out[0] = '\0';
    for (size_t fed = 0; fed < len; fed += step) {
        size_t n = len - fed < step ? len - fed : step;
        buf_append(&f.in, input + fed, n);
        feeder_run(&f);
    }
    if (f.cb.want || f.cb.buf.len)
        feeder_result(&f, "PENDING");
    imap_cmdbuf_free(&f.cb);
    buf_free(&f.in);
}

typedef struct cmd_case {
    const char *input;
    size_t len;
    const char *expect;
} cmd_case_t;

static const cmd_case_t cmd_cases[] = {
    { IN("a1 noop\r\n"), "a1 NOOP" },
    { IN("a1 NOOP\n"), "a1 NOOP" },
    { IN("A2 LOGIN alice \"pa ss\\\"\\\\w\"\r\n"), "A2 LOGIN [a:alice q:pa ss\"\\w]" },
    { IN("A3 LOGIN {5}\r\nalice {3+}\r\npwd\r\n"), "+|A3 LOGIN [l5:alice l3:pwd]" },
    { IN("A4 uid fetch 1:* (FLAGS UID)\r\n"), "A4 UID FETCH [a:1:* (a:FLAGS a:UID)]" },
    { IN("A5 FETCH 1 BODY.PEEK[HEADER.FIELDS (FROM \"X-A B\")]<0.100>\r\n"),
      "A5 FETCH [n1:1 a:BODY.PEEK[HEADER.FIELDS (FROM \"X-A B\")]<0.100>]" },
    { IN("A6 STORE 2 +FLAGS (\\Seen \\Deleted $Junk)\r\n"),
      "A6 STORE [n2:2 a:+FLAGS (a:\\Seen a:\\Deleted a:$Junk)]" },
    { IN("A7 LIST \"\" *\r\n"), "A7 LIST [q: a:*]" },
    { IN("A8 X NIL nil 007 18446744073709551616 ((a) ())\r\n"),
      "A8 X [NIL NIL n7:007 a:18446744073709551616 ((a:a) ())]" },
    { IN("A9 SEARCH SUBJECT [PATCH] x]\r\n"), "A9 SEARCH [a:SUBJECT a:[PATCH] a:x]]" },
    { IN("A10 APPEND INBOX {4}\r\na\0\r\n\r\n"), "+|A10 APPEND [a:INBOX l4:a\\x00\\x0d\\x0a]" },
    { IN("A11 X {8}\r\n{3}\r\nabc\r\n"), "+|A11 X [l8:{3}\\x0d\\x0aabc]" },
    { IN("A12 NOOP  \r\n"), "A12 NOOP" },
    { IN("t]ag NOOP\r\n"), "t]ag NOOP" },
    /* errors, each followed by a command that parses again */
    { IN("\r\nA1 NOOP\r\n"), "ERR:Missing tag|A1 NOOP" },
    { IN(" A1 NOOP\r\n"), "ERR:Missing tag" },
    { IN("A+1 NOOP\r\n"), "ERR:Invalid tag" },
    { IN("A*1 NOOP\r\n"), "ERR:Invalid tag" },
    { IN("A1\r\n"), "ERR:Missing command name" },
    { IN("A1 \r\n"), "ERR:Missing command name" },
    { IN("A1 NO-OP\r\n"), "ERR:Invalid command name" },
    { IN("A1 UID\r\n"), "ERR:Missing command after UID" },
    { IN("A1 X (a b\r\nA2 NOOP\r\n"), "ERR:Missing ')'|A2 NOOP" },
    { IN("A1 X a)\r\n"), "ERR:Unexpected ')'" },
    { IN("A1 X ((a)\r\n"), "ERR:Missing ')'" },
    { IN("A1 X \"abc\r\n"), "ERR:Unterminated quoted string" },
    { IN("A1 X \"abc\\\r\n"), "ERR:Unterminated quoted string" },
    { IN("A1 X \"a\\nb\"\r\n"), "ERR:Invalid escape in quoted string" },
    { IN("A1 X \"caf\xc3\xa9\"\r\n"), "ERR:8-bit character in quoted string" },
    { IN("A1 X caf\xc3\xa9\r\n"), "ERR:Missing space between arguments" },
    { IN("A1 X \xc3\xa9\r\n"), "ERR:8-bit character in atom" },
    { IN("A1 X a\0b\r\n"), "ERR:Missing space between arguments" },
    { IN("A1 X \0\r\n"), "ERR:NUL byte in command" },
    { IN("A1 X \"a\0\"\r\n"), "ERR:NUL byte in quoted string" },
    { IN("A1 X \"a\"b\r\n"), "ERR:Missing space between arguments" },
    { IN("A1 X {3} abc\r\n"), "ERR:Invalid literal" },
    { IN("A1 X BODY[TEXT\r\n"), "ERR:Missing ']' in section" },
    { IN("A1 X BODY[{3}\r\nabc]\r\n"), "+|ERR:Literal in section not supported" },
    /* assembler limits: 200 bytes of lines, literals of 100 bytes, 3 literals */
    { IN("A1 X {12x}\r\nA2 NOOP\r\n"), "CB:Invalid literal announcement|A2 NOOP" },
    { IN("A1 APPEND INBOX {99999999999}\r\nA2 NOOP\r\n"), "CB:Literal too large|A2 NOOP" },
    { IN("A1 X {101}\r\nA2 NOOP\r\n"), "CB:Literal too large|A2 NOOP" },
    { IN("A1 X {3+}\r\nabc {101+}\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789"
         "0123456789012345678901234567890\r\nA2 NOOP\r\n"),
      "CB:Literal too large|A2 NOOP" },
    { IN("A1 X {1}\r\na {1}\r\nb {1}\r\nc {1}\r\nA2 NOOP\r\n"),
      "+|+|+|CB:Too many literals in command|A2 NOOP" },
    { IN("A1 X {100}\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123456789"
         "012345678901234567890123456789\r\n"),
      "+|A1 X [l100:0123456789012345678901234567890123456789012345678901234567890123456789"
      "012345678901234567890123456789]" },
    { IN("A1 X aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nA2 NOOP\r\n"),
      "CB:Command line too long|A2 NOOP" },
    { IN("A1 X {3}\r\nabc aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nA2 NOOP\r\n"),
      "+|CB:Command line too long|A2 NOOP" },
    { IN("A1 X {5}\r\nab"), "+|PENDING" },
};

static void test_commands(void **state)
{
    (void)state;
    for (size_t i = 0; i < N(cmd_cases); i++) {
        char whole[4096], bytes[4096];
        feed_all(cmd_cases[i].input, cmd_cases[i].len, cmd_cases[i].len, &test_limits, whole,
                 sizeof whole);
        feed_all(cmd_cases[i].input, cmd_cases[i].len, 1, &test_limits, bytes, sizeof bytes);
        print_message("case %zu: %s\n", i, cmd_cases[i].expect);
        assert_string_equal(whole, cmd_cases[i].expect);
        assert_string_equal(bytes, cmd_cases[i].expect);
    }
}

/* Deep nesting: 32 levels parse, 33 and 1000 do not, and nothing overflows the stack. */
static void test_nesting(void **state)
{
    (void)state;
    static const struct {
        size_t depth;
        const char *expect;
    } cases[] = {
        { 32, "A1 X [((((((((((((((((((((((((((((((((a:a))))))))))))))))))))))))))))))))]" },
        { 33, "ERR:Too deep nesting of parentheses" },
        { 1000, "ERR:Too deep nesting of parentheses" },
    };
    imap_cmdbuf_limits_t lim = { 10000, 100, 3 };
    for (size_t i = 0; i < N(cases); i++) {
        buf_t in;
        buf_init(&in);
        buf_puts(&in, "A1 X ");
        for (size_t k = 0; k < cases[i].depth; k++)
            buf_puts(&in, "(");
        buf_puts(&in, "a");
        for (size_t k = 0; k < cases[i].depth; k++)
            buf_puts(&in, ")");
        buf_puts(&in, "\r\n");
        char whole[4096], bytes[4096];
        feed_all(in.data, in.len, in.len, &lim, whole, sizeof whole);
        feed_all(in.data, in.len, 1, &lim, bytes, sizeof bytes);
        assert_string_equal(whole, cases[i].expect);
        assert_string_equal(bytes, cases[i].expect);
        buf_free(&in);
    }
}

static void test_too_many_args(void **state)
{
    (void)state;
    buf_t in;
    buf_init(&in);
    buf_puts(&in, "A1 X");
    for (int k = 0; k <= IMAP_PARSE_MAX_ARGS; k++)
        buf_puts(&in, " a");
    imap_command_t cmd;
    const char *err = NULL;
    assert_int_equal(imap_parse_command(in.data, in.len, &cmd, &err), -1);
    assert_string_equal(err, "Too many arguments");
    in.len -= 2; /* exactly the maximum */
    assert_int_equal(imap_parse_command(in.data, in.len, &cmd, &err), 1);
    assert_int_equal(cmd.n_args, IMAP_PARSE_MAX_ARGS);
    imap_command_free(&cmd);
    buf_free(&in);
}

/* A command cut inside a literal needs more; the tag of a broken command can be read. */
static void test_parse_partial_and_tag(void **state)
{
    (void)state;
    imap_command_t cmd;
    const char *err = NULL;
    assert_int_equal(imap_parse_command(IN("A1 X {5}"), &cmd, &err), 0);
    assert_int_equal(imap_parse_command(IN("A1 X {5}\r\nab"), &cmd, &err), 0);
    assert_int_equal(imap_parse_command(IN("A1 X {5}\r\nabcde"), &cmd, &err), 1);
    assert_true(imap_arg_is_word(&cmd.args[0], "x") == false);
    imap_command_free(&cmd);
    assert_int_equal(imap_parse_tag(IN("A12 FOO (")), 3);
    assert_int_equal(imap_parse_tag(IN("A+ FOO")), 0);
    assert_int_equal(imap_parse_tag(IN(" FOO")), 0);
    assert_int_equal(imap_parse_tag(IN("tag")), 3);
}

/* "T X <args>" parsed, for the module tests below. */
typedef struct parsed {
    char line[2048];
    imap_command_t cmd;
} parsed_t;

static void parse_args(parsed_t *p, const char *args)
{
    snprintf(p->line, sizeof p->line, "T X %s", args);
    const char *err = NULL;
    int rc = imap_parse_command(p->line, strlen(p->line), &p->cmd, &err);
    if (rc != 1)
        fail_msg("does not parse: %s: %s", args, err);
}

/* ---- sequence sets ----------------------------------------------------------------- */

static void describe_set(char *out, size_t len, const imap_seqset_t *s)
{
    out[0] = '\0';
    for (size_t i = 0; i < s->n; i++) {
        char t[32];
        if (s->r[i].lo == IMAP_SEQ_STAR)
            snprintf(t, sizeof t, "%s*", i ? "," : "");
        else
            snprintf(t, sizeof t, "%s%u", i ? "," : "", (unsigned)s->r[i].lo);
        cat(out, len, t);
        if (s->r[i].hi == s->r[i].lo)
            continue;
        if (s->r[i].hi == IMAP_SEQ_STAR)
            snprintf(t, sizeof t, ":*");
        else
            snprintf(t, sizeof t, ":%u", (unsigned)s->r[i].hi);
        cat(out, len, t);
    }
}

static void test_seqset(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        const char *parsed;   /* or "ERR" */
        uint32_t max;
        const char *resolved; /* the numbers the iterator yields */
    } cases[] = {
        { "1", "1", 10, "1" },
        { "1:3", "1:3", 10, "1,2,3" },
        { "3:1", "3:1", 10, "1,2,3" },
        { "*", "*", 4, "4" },
        { "2:*", "2:*", 4, "2,3,4" },
        { "*:2", "*:2", 4, "2,3,4" },
        { "8:*", "8:*", 4, "4" },
        { "1:*", "1:*", 0, "" },
        { "5,1:2,2:3,9", "5,1:2,2:3,9", 6, "1,2,3,5" },
        { "4294967295", "*", 3, "3" },
        { "1:4294967294", "1:4294967294", 3, "1,2,3" },
        { "$", "ERR", 0, "" },
        { "", "ERR", 0, "" },
        { "0", "ERR", 0, "" },
        { "1:0", "ERR", 0, "" },
        { "01", "ERR", 0, "" },
        { "a", "ERR", 0, "" },
        { "1:", "ERR", 0, "" },
        { ":1", "ERR", 0, "" },
        { "1,,2", "ERR", 0, "" },
        { "1,", "ERR", 0, "" },
        { ",1", "ERR", 0, "" },
        { "1:2:3", "ERR", 0, "" },
        { "4294967296", "ERR", 0, "" },
        { "99999999999999999999999", "ERR", 0, "" },
        { "1 ", "ERR", 0, "" },
        { "**", "ERR", 0, "" },
    };
    for (size_t i = 0; i < N(cases); i++) {
        imap_seqset_t s, r;
        imap_seqset_init(&s);
        imap_seqset_init(&r);
        const char *err = NULL;
        char got[256];
        print_message("seqset: '%s'\n", cases[i].text);
        int rc = imap_seqset_parse(cases[i].text, strlen(cases[i].text), &s, &err);
        if (strcmp(cases[i].parsed, "ERR") == 0) {
            assert_int_equal(rc, -1);
            assert_non_null(err);
            imap_seqset_free(&s);
            continue;
        }
        assert_int_equal(rc, 1);
        describe_set(got, sizeof got, &s);
        assert_string_equal(got, cases[i].parsed);
        assert_int_equal(imap_seqset_resolve(&s, cases[i].max, &r), 0);
        imap_seqset_iter_t it;
        imap_seqset_iter_init(&it, &r);
        uint32_t n;
        got[0] = '\0';
        while (imap_seqset_iter_next(&it, &n)) {
            char t[16];
            snprintf(t, sizeof t, "%s%u", got[0] ? "," : "", (unsigned)n);
            cat(got, sizeof got, t);
        }
        assert_string_equal(got, cases[i].resolved);
        /* contains() agrees with the iterator on 1..max */
        for (uint32_t k = 1; k <= cases[i].max; k++) {
            char t[16];
            snprintf(t, sizeof t, "%u", (unsigned)k);
            bool listed = false;
            for (const char *p = got; (p = strstr(p, t)); p++)
                if ((p == got || p[-1] == ',') && (p[strlen(t)] == ',' || !p[strlen(t)]))
                    listed = true;
            assert_int_equal(imap_seqset_contains(&s, k, cases[i].max), listed);
        }
        imap_seqset_free(&s);
        imap_seqset_free(&r);
    }
}

/* A range up to the last UID iterates without wrapping past 2^32-1. */
static void test_seqset_iter_top(void **state)
{
    (void)state;
    imap_seqset_t s, r;
    imap_seqset_init(&s);
    imap_seqset_init(&r);
    const char *err;
    assert_int_equal(imap_seqset_parse(IN("4294967293:*"), &s, &err), 1);
    assert_int_equal(imap_seqset_resolve(&s, 4294967294u, &r), 0);
    imap_seqset_iter_t it;
    imap_seqset_iter_init(&it, &r);
    uint32_t n, count = 0;
    while (imap_seqset_iter_next(&it, &n) && count < 10)
        count++;
    assert_int_equal(count, 2);
    assert_true(imap_seqset_contains(&s, 4294967294u, 4294967294u));
    assert_false(imap_seqset_contains(&s, 5, 4294967294u));
    imap_seqset_free(&s);
    imap_seqset_free(&r);
}

/* ---- FETCH ------------------------------------------------------------------------- */

static const char *const kind_names[] = {
    "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE", "UID",
    "MODSEQ", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "SECTION",
};

static void describe_fetch(char *out, size_t len, const imap_fetch_t *f)
{
    out[0] = '\0';
    for (size_t i = 0; i < f->n; i++) {
        const imap_fetch_item_t *it = &f->items[i];
        char t[256];
        if (i)
            cat(out, len, " ");
        cat(out, len, kind_names[it->kind]);
        if (it->kind != IMAP_FETCH_BODY_SECTION)
            continue;
        snprintf(t, sizeof t, "%s[%s]", it->peek ? ".PEEK" : "", it->section);
        cat(out, len, t);
        if (it->partial) {
            snprintf(t, sizeof t, "<%u.%u>", (unsigned)it->origin, (unsigned)it->length);
            cat(out, len, t);
        }
        if (it->n_fields) {
            cat(out, len, "{");
            for (size_t k = 0; k < it->n_fields; k++) {
                cat(out, len, k ? "," : "");
                cat(out, len, it->fields[k]);
            }
            cat(out, len, "}");
        }
    }
    if (f->changedsince_set) {
        char t[64];
        snprintf(t, sizeof t, " changedsince=%llu", (unsigned long long)f->changedsince);
        cat(out, len, t);
    }
}

static void test_fetch(void **state)
{
    (void)state;
    static const struct {
        const char *args;
        const char *expect;
    } cases[] = {
        { "FLAGS", "FLAGS" },
        { "ALL", "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE" },
        { "fast", "FLAGS INTERNALDATE RFC822.SIZE" },
        { "FULL", "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY" },
        { "(uid rfc822.size BODY BODYSTRUCTURE ENVELOPE INTERNALDATE MODSEQ)",
          "UID RFC822.SIZE BODY BODYSTRUCTURE ENVELOPE INTERNALDATE MODSEQ" },
        { "(RFC822 RFC822.HEADER RFC822.TEXT)", "RFC822 RFC822.HEADER RFC822.TEXT" },
        { "BODY[]", "SECTION[]" },
        { "body.peek[]<0.100>", "SECTION.PEEK[]<0.100>" },
        { "BODY[1.2.3]", "SECTION[1.2.3]" },
        { "BODY[text]", "SECTION[TEXT]" },
        { "BODY[1.header]", "SECTION[1.HEADER]" },
        { "BODY[2.MIME]", "SECTION[2.MIME]" },
        { "(FLAGS BODY.PEEK[HEADER.FIELDS (FROM Subject \"X-A\")])",
          "FLAGS SECTION.PEEK[HEADER.FIELDS (FROM Subject X-A)]{FROM,Subject,X-A}" },
        { "BODY[1.2.header.fields.not (To)]<10.5>",
          "SECTION[1.2.HEADER.FIELDS.NOT (To)]<10.5>{To}" },
        { "BODY[HEADER.FIELDS (\"X-]\")]", "SECTION[HEADER.FIELDS (\"X-]\")]{X-]}" },
        { "(FLAGS) (CHANGEDSINCE 12345)", "FLAGS MODSEQ changedsince=12345" },
        { "(FLAGS MODSEQ) (changedsince 0)", "FLAGS MODSEQ changedsince=0" },
        { "ALL (CHANGEDSINCE 9223372036854775807)",
          "FLAGS INTERNALDATE RFC822.SIZE ENVELOPE MODSEQ changedsince=9223372036854775807" },
        /* errors */
        { "", "ERR" },
        { "FOO", "ERR" },
        { "(ALL)", "ERR" },
        { "()", "ERR" },
        { "\"FLAGS\"", "ERR" },
        { "(FLAGS (UID))", "ERR" },
        { "BODY.PEEK", "ERR" },
        { "BINARY[1]", "ERR" },
        { "BODY[0]", "ERR" },
        { "BODY[1.0]", "ERR" },
        { "BODY[1.]", "ERR" },
        { "BODY[.1]", "ERR" },
        { "BODY[MIME]", "ERR" },
        { "BODY[HEADER.FIELDS]", "ERR" },
        { "BODY[HEADER.FIELDS ()]", "ERR" },
        { "BODY[HEADER.FIELDS (A:B)]", "ERR" },
        { "BODY[HEADER.FIELDS (A) x]", "ERR" },
        { "BODY[HEADERS]", "ERR" },
        { "BODY[TEXT.HEADER]", "ERR" },
        { "BODY[]<0>", "ERR" },
        { "BODY[]<0.0>", "ERR" },
        { "BODY[]<a.1>", "ERR" },
        { "BODY[]<0.4294967296>", "ERR" },
        { "BODY[]x", "ERR" },
        { "FLAGS (CHANGEDSINCE)", "ERR" },
        { "FLAGS (CHANGEDSINCE 9223372036854775808)", "ERR" },
        { "FLAGS (CHANGEDSINCE 1 CHANGEDSINCE 2)", "ERR" },
        { "FLAGS (VANISHED)", "ERR" },
        { "FLAGS CHANGEDSINCE", "ERR" },
        { "FLAGS (CHANGEDSINCE 1) x", "ERR" },
    };
    for (size_t i = 0; i < N(cases); i++) {
        parsed_t p;
        parse_args(&p, cases[i].args);
        imap_fetch_t f;
        const char *err = NULL;
        char got[1024];
        print_message("fetch: %s\n", cases[i].args);
        int rc = imap_fetch_parse(p.cmd.args, p.cmd.n_args, &f, &err);
        if (strcmp(cases[i].expect, "ERR") == 0) {
            assert_int_equal(rc, -1);
            assert_non_null(err);
        } else {
            assert_int_equal(rc, 1);
            describe_fetch(got, sizeof got, &f);
            assert_string_equal(got, cases[i].expect);
            imap_fetch_free(&f);
        }
        imap_command_free(&p.cmd);
    }
}

static void test_fetch_seen(void **state)
{
    (void)state;
    static const struct {
        const char *args;
        bool seen;
    } cases[] = {
        { "(FLAGS UID)", false }, { "BODY.PEEK[]", false }, { "RFC822.HEADER", false },
        { "BODY[]", true },       { "RFC822", true },       { "RFC822.TEXT", true },
        { "(FLAGS BODY[1])", true },
    };
    for (size_t i = 0; i < N(cases); i++) {
        parsed_t p;
        parse_args(&p, cases[i].args);
        imap_fetch_t f;
        const char *err;
        assert_int_equal(imap_fetch_parse(p.cmd.args, p.cmd.n_args, &f, &err), 1);
        assert_int_equal(imap_fetch_sets_seen(&f), cases[i].seen);
        assert_false(imap_fetch_has(&f, IMAP_FETCH_UID) && !strstr(cases[i].args, "UID"));
        imap_fetch_free(&f);
        imap_command_free(&p.cmd);
    }
}

/* ---- STORE ------------------------------------------------------------------------- */

static void test_store(void **state)
{
    (void)state;
    static const struct {
        const char *args;
        const char *expect; /* "set op silent sysbits keywords unchangedsince" or ERR */
    } cases[] = {
        { "1 FLAGS (\\Seen)", "1 = 0 1 [] -" },
        { "1:3 +FLAGS.SILENT (\\seen \\ANSWERED \\Flagged \\Deleted \\Draft)", "1:3 + 1 31 [] -" },
        { "* -flags \\Deleted", "* - 0 8 [] -" },
        { "1 +FLAGS \\Seen $Junk Work $Junk", "1 + 0 1 [$Junk,Work] -" },
        { "1 FLAGS ()", "1 = 0 0 [] -" },
        { "2,4 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT ($Label1)",
          "2,4 + 1 0 [$Label1] 320162338" },
        { "1 (UNCHANGEDSINCE 0) FLAGS ()", "1 = 0 0 [] 0" },
        { "1 FLAGS (\\Recent)", "ERR" },
        { "1 FLAGS (\\Bogus)", "ERR" },
        { "1 FLAGS (\"quoted\")", "ERR" },
        { "1 FLAGS (a%b)", "ERR" },
        { "1 FLAGS (a]b)", "ERR" },
        { "1 FLAGS ((\\Seen))", "ERR" },
        { "1 FLAGS (\\Seen) (\\Draft)", "ERR" },
        { "1 FLAGS", "ERR" },
        { "1 FLAG (\\Seen)", "ERR" },
        { "1 *FLAGS (\\Seen)", "ERR" },
        { "0 FLAGS (\\Seen)", "ERR" },
        { "1 (UNCHANGEDSINCE x) FLAGS (\\Seen)", "ERR" },
        { "1 (UNCHANGEDSINCE) FLAGS (\\Seen)", "ERR" },
        { "1 (FOO 1) FLAGS (\\Seen)", "ERR" },
        { "1 (UNCHANGEDSINCE 1) FLAGS", "ERR" },
    };
    for (size_t i = 0; i < N(cases); i++) {
        parsed_t p;
        parse_args(&p, cases[i].args);
        imap_store_t st;
        const char *err = NULL;
        print_message("store: %s\n", cases[i].args);
        int rc = imap_store_parse(p.cmd.args, p.cmd.n_args, &st, &err);
        if (strcmp(cases[i].expect, "ERR") == 0) {
            assert_int_equal(rc, -1);
            assert_non_null(err);
            imap_command_free(&p.cmd);
            continue;
        }
        assert_int_equal(rc, 1);
        char set[128], got[512], t[64];
        describe_set(set, sizeof set, &st.set);
        snprintf(got, sizeof got, "%s %c %d %u [", set, "=+-"[st.op], st.silent,
                 st.flags.system);
        for (size_t k = 0; k < st.flags.n_keywords; k++) {
            cat(got, sizeof got, k ? "," : "");
            cat(got, sizeof got, st.flags.keywords[k]);
        }
        if (st.unchangedsince_set)
            snprintf(t, sizeof t, "] %llu", (unsigned long long)st.unchangedsince);
        else
            snprintf(t, sizeof t, "] -");
        cat(got, sizeof got, t);
        assert_string_equal(got, cases[i].expect);
        imap_store_free(&st);
        imap_command_free(&p.cmd);
    }
}

static void test_sysflags(void **state)
{
    (void)state;
    assert_int_equal(imap_sysflag_parse(IN("\\SEEN")), IMAP_FLAG_SEEN);
    assert_int_equal(imap_sysflag_parse(IN("\\Recent")), 0);
    assert_int_equal(imap_sysflag_parse(IN("Seen")), 0);
    assert_string_equal(imap_sysflag_name(IMAP_FLAG_DRAFT), "\\Draft");
    assert_null(imap_sysflag_name(1 << 9));
}

/* ---- SEARCH ------------------------------------------------------------------------ */

static const char *const sk_names[] = {
    "ALL", "AND", "OR", "NOT", "SEQ", "UID", "FLAG", "RECENT", "BEFORE", "ON", "SINCE",
    "SENTBEFORE", "SENTON", "SENTSINCE", "LARGER", "SMALLER", "HEADER", "BODY", "TEXT",
    "MODSEQ",
};

static void describe_key(char *out, size_t len, const imap_search_key_t *k)
{
    char t[256], set[128];
    cat(out, len, sk_names[k->kind]);
    switch (k->kind) {
    case IMAP_SK_AND: case IMAP_SK_OR: case IMAP_SK_NOT:
        cat(out, len, "(");
        for (size_t i = 0; i < k->n_kids; i++) {
            cat(out, len, i ? " " : "");
            describe_key(out, len, k->kids[i]);
        }
        cat(out, len, ")");
        return;
    case IMAP_SK_SEQSET: case IMAP_SK_UIDSET:
        describe_set(set, sizeof set, &k->set);
        snprintf(t, sizeof t, ":%s", set);
        break;
    case IMAP_SK_FLAG: case IMAP_SK_BODY: case IMAP_SK_TEXT:
        snprintf(t, sizeof t, ":%s", k->str);
        break;
    case IMAP_SK_HEADER:
        snprintf(t, sizeof t, ":%s:%s", k->field, k->str);
        break;
    case IMAP_SK_BEFORE: case IMAP_SK_ON: case IMAP_SK_SINCE:
    case IMAP_SK_SENTBEFORE: case IMAP_SK_SENTON: case IMAP_SK_SENTSINCE:
        snprintf(t, sizeof t, ":%lld", (long long)k->day);
        break;
    case IMAP_SK_LARGER: case IMAP_SK_SMALLER: case IMAP_SK_MODSEQ:
        snprintf(t, sizeof t, ":%llu", (unsigned long long)k->num);
        break;
    default:
        t[0] = '\0';
    }
    cat(out, len, t);
}

static void test_search_parse(void **state)
{
    (void)state;
    static const struct {
        const char *args;
        const char *expect; /* tree, "ERR" or "BADCHARSET" */
    } cases[] = {
        { "ALL", "AND(ALL)" },
        { "seen unseen", "AND(FLAG:\\Seen NOT(FLAG:\\Seen))" },
        { "ANSWERED DELETED DRAFT FLAGGED", "AND(FLAG:\\Answered FLAG:\\Deleted FLAG:\\Draft "
                                            "FLAG:\\Flagged)" },
        { "UNANSWERED UNDELETED UNDRAFT UNFLAGGED",
          "AND(NOT(FLAG:\\Answered) NOT(FLAG:\\Deleted) NOT(FLAG:\\Draft) NOT(FLAG:\\Flagged))" },
        { "KEYWORD $Junk UNKEYWORD Work", "AND(FLAG:$Junk NOT(FLAG:Work))" },
        { "NEW OLD RECENT", "AND(AND(RECENT NOT(FLAG:\\Seen)) NOT(RECENT) RECENT)" },
        { "FROM alice TO \"Bob B\" CC c BCC d SUBJECT {3}\r\nh\xc3\xa9",
          "AND(HEADER:FROM:alice HEADER:TO:Bob B HEADER:CC:c HEADER:BCC:d "
          "HEADER:SUBJECT:h\xc3\xa9)" },
        { "HEADER X-Spam \"\" BODY hello TEXT \"a%b\"",
          "AND(HEADER:X-Spam: BODY:hello TEXT:a%b)" },
        { "BEFORE 1-Jan-1970 ON 02-jan-1970 SINCE \"29-Feb-2024\"",
          "AND(BEFORE:0 ON:1 SINCE:19782)" },
        { "SENTBEFORE 1-Mar-2024 SENTON 31-Dec-1999 SENTSINCE 1-Jan-2000",
          "AND(SENTBEFORE:19783 SENTON:10956 SENTSINCE:10957)" },
        { "LARGER 100 SMALLER 4294967295", "AND(LARGER:100 SMALLER:4294967295)" },
        { "1:3,5 UID 7:* *", "AND(SEQ:1:3,5 UID:7:* SEQ:*)" },
        { "NOT (SEEN FLAGGED) OR DELETED (FROM x)",
          "AND(NOT(AND(FLAG:\\Seen FLAG:\\Flagged)) OR(FLAG:\\Deleted AND(HEADER:FROM:x)))" },
        { "OR OR SEEN DRAFT NOT NOT ALL", "AND(OR(OR(FLAG:\\Seen FLAG:\\Draft) NOT(NOT(ALL))))" },
        { "MODSEQ 620162338", "AND(MODSEQ:620162338)" },
        { "MODSEQ \"/flags/\\\\draft\" all 620162338", "AND(MODSEQ:620162338)" },
        { "CHARSET UTF-8 TEXT x", "AND(TEXT:x)" },
        { "CHARSET UTF-8 NOT BODY {6}\r\ncr\xc3\xa8me", "AND(NOT(BODY:cr\xc3\xa8me))" },
        { "SEEN (OR ALL TEXT {2}\r\n\xc3\xa9)", "AND(FLAG:\\Seen AND(OR(ALL TEXT:\xc3\xa9)))" },
        { "HEADER {4}\r\nX-\xc3\xa9 x", "ERR" },
        { "charset \"us-ascii\" ALL", "AND(ALL)" },
        { "CHARSET ISO-8859-1 ALL", "BADCHARSET" },
        { "CHARSET US-ASCII TEXT \"\xc3\xa9\"", "ERR" },
        { "TEXT {2}\r\n\xc3\x28", "ERR" },
        { "TEXT {3}\r\na\0b", "ERR" },
        { "TEXT {3}\r\n\xed\xa0\x80", "ERR" },
        { "", "ERR" },
        { "CHARSET", "ERR" },
        { "CHARSET UTF-8", "ERR" },
        { "FOO", "ERR" },
        { "FROM", "ERR" },
        { "HEADER X", "ERR" },
        { "HEADER \"A:B\" x", "ERR" },
        { "HEADER \"\" x", "ERR" },
        { "BEFORE 32-Jan-2024", "ERR" },
        { "BEFORE 29-Feb-2023", "ERR" },
        { "BEFORE 1-Foo-2024", "ERR" },
        { "BEFORE 2024-01-01", "ERR" },
        { "ON \" 1-Jan-2024\"", "ERR" },
        { "LARGER x", "ERR" },
        { "LARGER 4294967296", "ERR" },
        { "UID", "ERR" },
        { "UID 0", "ERR" },
        { "1,,2", "ERR" },
        { "$", "ERR" },
        { "KEYWORD \\Seen", "ERR" },
        { "NOT", "ERR" },
        { "OR SEEN", "ERR" },
        { "()", "ERR" },
        { "(SEEN", "ERR" }, /* caught by the command parser: see below */
        { "MODSEQ 9223372036854775808", "ERR" },
        { "MODSEQ \"/flags/x\" bogus 1", "ERR" },
    };
    for (size_t i = 0; i < N(cases); i++) {
        char line[512];
        snprintf(line, sizeof line, "T X %s", cases[i].args);
        imap_command_t cmd;
        const char *err = NULL;
        print_message("search: %s\n", cases[i].args);
        if (imap_parse_command(line, strlen(line), &cmd, &err) != 1) {
            assert_string_equal(cases[i].expect, "ERR");
            continue;
        }
        imap_search_t s;
        int rc = imap_search_parse(cmd.args, cmd.n_args, &s, &err);
        if (strcmp(cases[i].expect, "ERR") == 0 || strcmp(cases[i].expect, "BADCHARSET") == 0) {
            assert_int_equal(rc, -1);
            assert_non_null(err);
            assert_int_equal(s.badcharset, strcmp(cases[i].expect, "BADCHARSET") == 0);
            assert_null(s.root);
        } else {
            assert_int_equal(rc, 1);
            char got[1024] = "";
            describe_key(got, sizeof got, s.root);
            assert_string_equal(got, cases[i].expect);
            assert_int_equal(s.has_modseq, strstr(cases[i].args, "MODSEQ") != NULL);
            /* Every 8-bit string of the cases is a text key's. */
            bool eight = false;
            for (const char *c = cases[i].args; *c; c++)
                eight = eight || (unsigned char)*c >= 0x80;
            assert_int_equal(s.needs_decoded, eight);
            imap_search_free(&s);
        }
        imap_command_free(&cmd);
    }
}

/* A long NOT chain is refused, not recursed into without bound. */
static void test_search_deep(void **state)
{
    (void)state;
    buf_t in;
    buf_init(&in);
    buf_puts(&in, "T SEARCH");
    for (int i = 0; i < 5000; i++)
        buf_puts(&in, " NOT");
    buf_puts(&in, " ALL");
    imap_command_t cmd;
    imap_search_t s;
    const char *err = NULL;
    assert_int_equal(imap_parse_command(in.data, in.len, &cmd, &err), 1);
    assert_int_equal(imap_search_parse(cmd.args, cmd.n_args, &s, &err), -1);
    assert_string_equal(err, "Search program nested too deeply");
    imap_command_free(&cmd);
    buf_free(&in);
}

/* The session's sequence -> UID map: message k has UID 10 * k, 5 messages. */
static int seq_map(void *ctx, const imap_seqset_t *seqs, imap_seqset_t *uids_r,
                   const char **error_r)
{
    uint32_t count = *(uint32_t *)ctx;
    for (size_t i = 0; i < seqs->n; i++) {
        uint32_t lo = seqs->r[i].lo == IMAP_SEQ_STAR ? count : seqs->r[i].lo;
        uint32_t hi = seqs->r[i].hi == IMAP_SEQ_STAR ? count : seqs->r[i].hi;
        if (lo > count || hi > count) {
            *error_r = "Invalid message sequence number";
            return -1;
        }
        for (uint32_t k = lo < hi ? lo : hi; k <= (lo < hi ? hi : lo); k++)
            imap_seqset_add(uids_r, 10 * k, 10 * k);
    }
    return 0;
}

#define RAW "(CASE WHEN position('\\x00'::bytea IN m.raw) = 0 THEN convert_from(m.raw, " \
    "'LATIN1') ELSE convert_from(decode(regexp_replace(encode(m.raw, 'hex'), " \
    "'([1-9a-f][0-9a-f]|0[1-9a-f])|00', '\\1', 'g'), 'hex'), 'LATIN1') END)"
#define PAT(k) "convert_from(convert_to($" k "::text, 'UTF8'), 'LATIN1')"

static void test_search_sql(void **state)
{
    (void)state;
    static const struct {
        const char *args;
        const char *where; /* or "ERR" */
        const char *params; /* joined with "|" */
    } cases[] = {
        { "ALL", "(TRUE)", "" },
        { "SEEN UNDELETED", "((m.flags @> ARRAY[$3::text]) AND (NOT (m.flags @> ARRAY[$4::text])))",
          "\\Seen|\\Deleted" },
        { "NEW", "((FALSE AND (NOT (m.flags @> ARRAY[$3::text]))))", "\\Seen" },
        { "OR LARGER 10 SMALLER 5", "(((m.size > $3::bigint) OR (m.size < $4::bigint)))",
          "10|5" },
        { "MODSEQ 7", "((m.modseq >= $3::bigint))", "7" },
        { "BEFORE 2-Jan-2024", "((m.internal_date < $3::timestamptz))",
          "2024-01-02 00:00:00+00" },
        { "ON 31-Dec-2023",
          "((m.internal_date >= $3::timestamptz AND m.internal_date < $4::timestamptz))",
          "2023-12-31 00:00:00+00|2024-01-01 00:00:00+00" },
        { "SENTSINCE 1-Mar-2024", "(COALESCE(m.hdr_date >= $3::timestamptz, FALSE))",
          "2024-03-01 00:00:00+00" },
        { "NOT SENTBEFORE 1-Mar-2024", "((NOT COALESCE(m.hdr_date < $3::timestamptz, FALSE)))",
          "2024-03-01 00:00:00+00" },
        { "UID 5", "((m.uid BETWEEN $3::bigint AND $4::bigint))", "5|5" },
        { "UID 7:*", "((m.uid BETWEEN $3::bigint AND $4::bigint))", "7|90" },
        { "UID 3,1,2,9", "((EXISTS (SELECT 1 FROM unnest($3::bigint[], $4::bigint[]) AS r(lo, hi) "
                         "WHERE m.uid BETWEEN r.lo AND r.hi)))", "{1,9}|{3,9}" },
        { "UID 1,5,9", "((m.uid = ANY($3::bigint[])))", "{1,5,9}" },
        { "2,4:5", "((m.uid = ANY($3::bigint[])))", "{20,40,50}" },
        { "1:*", "((m.uid = ANY($3::bigint[])))", "{10,20,30,40,50}" },
        { "6", "ERR", "" },
        { "TEXT \"50%_off\\\\\"", "((" RAW " ILIKE " PAT("3") "))", "%50\\%\\_off\\\\%" },
        { "BODY x", "((" RAW " ILIKE " PAT("3") "))", "%\r\n\r\n%x%" },
        { "SUBJECT \"a.b (c)\"",
          "((split_part(" RAW ", E'\\r\\n\\r\\n', 1) ~* " PAT("3") "))",
          "(^|\n)SUBJECT[ \t]*:([^\n]|\n[ \t])*a\\.b\\ \\(c\\)" },
        { "HEADER X-Y.Z \"\"", "((split_part(" RAW ", E'\\r\\n\\r\\n', 1) ~* " PAT("3") "))",
          "(^|\n)X\\-Y\\.Z[ \t]*:([^\n]|\n[ \t])*" },
        /* Not US-ASCII: the decoded text of migration 0009, the raw bytes until computed. */
        { "CHARSET UTF-8 SUBJECT {9}\r\ncaf\xc3\xa9 (1)",
          "((CASE WHEN m.search_body IS NULL THEN (split_part(" RAW ", E'\\r\\n\\r\\n', 1) ~* "
          PAT("4") ") ELSE coalesce(m.search_headers, '') ~* $3::text END))",
          "(^|\n)SUBJECT[ \t]*:[^\n]*caf\xc3\xa9\\ \\(1\\)|"
          "(^|\n)SUBJECT[ \t]*:([^\n]|\n[ \t])*caf\xc3\xa9\\ \\(1\\)" },
        { "BODY {9}\r\ncr\xc3\xa8me 5%",
          "((CASE WHEN m.search_body IS NULL THEN (" RAW " ILIKE " PAT("4") ") "
          "ELSE m.search_body ILIKE $3::text END))",
          "%cr\xc3\xa8me 5\\%%|%\r\n\r\n%cr\xc3\xa8me 5\\%%" },
        { "BODY x TEXT {2}\r\n\xc3\xa9",
          "((" RAW " ILIKE " PAT("3") ") AND (CASE WHEN m.search_body IS NULL THEN (" RAW
          " ILIKE " PAT("5") ") ELSE (coalesce(m.search_headers, '') ILIKE $4::text OR "
          "m.search_body ILIKE $4::text) END))",
          "%\r\n\r\n%x%|%\xc3\xa9%|%\xc3\xa9%" },
    };
    uint32_t count = 5;
    for (size_t i = 0; i < N(cases); i++) {
        char line[512];
        snprintf(line, sizeof line, "T X %s", cases[i].args);
        imap_command_t cmd;
        imap_search_t s;
        const char *err = NULL;
        print_message("sql: %s\n", cases[i].args);
        assert_int_equal(imap_parse_command(line, strlen(line), &cmd, &err), 1);
        assert_int_equal(imap_search_parse(cmd.args, cmd.n_args, &s, &err), 1);
        buf_t where;
        buf_init(&where);
        imap_sql_params_t params;
        imap_sql_params_init(&params);
        imap_sql_ctx_t ctx = { .first_param = 3, .uid_max = 90, .seq_to_uids = seq_map,
                               .cb_ctx = &count };
        int rc = imap_search_sql(&s, &ctx, &where, &params, &err);
        if (strcmp(cases[i].where, "ERR") == 0) {
            assert_int_equal(rc, -1);
            assert_non_null(err);
        } else {
            assert_int_equal(rc, 0);
            assert_string_equal(where.data, cases[i].where);
            char got[1024] = "";
            for (size_t k = 0; k < params.n; k++) {
                cat(got, sizeof got, k ? "|" : "");
                cat(got, sizeof got, params.v[k]);
            }
            assert_string_equal(got, cases[i].params);
        }
        buf_free(&where);
        imap_sql_params_free(&params);
        imap_search_free(&s);
        imap_command_free(&cmd);
    }
}

/* Without the sequence map a bare sequence set can not be translated. */
static void test_search_sql_no_map(void **state)
{
    (void)state;
    imap_command_t cmd;
    imap_search_t s;
    const char *err = NULL;
    assert_int_equal(imap_parse_command(IN("T X 1:3"), &cmd, &err), 1);
    assert_int_equal(imap_search_parse(cmd.args, cmd.n_args, &s, &err), 1);
    buf_t where;
    buf_init(&where);
    imap_sql_params_t params;
    imap_sql_params_init(&params);
    imap_sql_ctx_t ctx = { .first_param = 1 };
    assert_int_equal(imap_search_sql(&s, &ctx, &where, &params, &err), -1);
    buf_free(&where);
    imap_sql_params_free(&params);
    imap_search_free(&s);
    imap_command_free(&cmd);
}

/* ---- dates ------------------------------------------------------------------------- */

static void test_dates(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int rc;
        time_t t;
        int tz;
    } cases[] = {
        { "01-Jan-1970 00:00:00 +0000", 1, 0, 0 },
        { " 1-Jan-1970 01:00:00 +0100", 1, 0, 60 },
        { "17-Jul-1996 02:44:25 -0700", 1, 837596665, -420 },
        { "29-Feb-2024 23:59:60 +0000", 1, 1709251200, 0 },
        { "31-dec-1999 23:59:59 -0030", 1, 946686599, -30 },
        { "1-Jan-2000 00:00:00 +0000", 1, 946684800, 0 },
        { "17-Jul-1996 02:44:25", -1, 0, 0 },
        { "17-Jul-1996 02:44:25 0700", -1, 0, 0 },
        { "17-Jul-1996 24:00:00 +0000", -1, 0, 0 },
        { "17-Jul-1996 02:60:00 +0000", -1, 0, 0 },
        { "17-Jul-1996 02:44:25 +2400", -1, 0, 0 },
        { "17-Jul-1996 02:44:25 +0060", -1, 0, 0 },
        { "30-Feb-2024 00:00:00 +0000", -1, 0, 0 },
        { "00-Jan-2024 00:00:00 +0000", -1, 0, 0 },
        { "17-Jly-1996 02:44:25 -0700", -1, 0, 0 },
        { "17-Jul-96 02:44:25 -0700", -1, 0, 0 },
        { "17-Jul-1996 02:44:25 -0700 ", -1, 0, 0 },
        { "", -1, 0, 0 },
    };
    for (size_t i = 0; i < N(cases); i++) {
        time_t t = 1;
        int tz = 99;
        print_message("datetime: '%s'\n", cases[i].text);
        assert_int_equal(imap_datetime_parse(cases[i].text, strlen(cases[i].text), &t, &tz),
                         cases[i].rc);
        if (cases[i].rc == 1) {
            assert_int_equal(t, cases[i].t);
            assert_int_equal(tz, cases[i].tz);
        }
    }
    char out[IMAP_DATETIME_LEN];
    imap_datetime_format(837596665, -420, out);
    assert_string_equal(out, "17-Jul-1996 02:44:25 -0700");
    imap_datetime_format(0, 0, out);
    assert_string_equal(out, "01-Jan-1970 00:00:00 +0000");
    imap_datetime_format(1709251199, 330, out);
    assert_string_equal(out, "01-Mar-2024 05:29:59 +0530");
    /* what is formatted parses back */
    time_t t;
    int tz;
    assert_int_equal(imap_datetime_parse(out, strlen(out), &t, &tz), 1);
    assert_int_equal(t, 1709251199);
    assert_int_equal(tz, 330);

    int64_t day;
    assert_int_equal(imap_date_parse(IN("1-Feb-1994"), &day), 1);
    assert_int_equal(day, 8797);
    assert_int_equal(imap_date_parse(IN("01-FEB-1994"), &day), 1);
    assert_int_equal(day, 8797);
    assert_int_equal(imap_date_parse(IN("29-Feb-1900"), &day), -1);
    assert_int_equal(imap_date_parse(IN("29-Feb-2000"), &day), 1);
    assert_int_equal(imap_date_parse(IN("1-Feb-1994 "), &day), -1);
    assert_int_equal(imap_date_parse(IN("123-Feb-1994"), &day), -1);
}

/* ---- mailbox names ----------------------------------------------------------------- */

static void test_mutf7(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        const char *utf8; /* or NULL: invalid */
    } cases[] = {
        { "INBOX", "INBOX" },
        { "Sent Items/2024", "Sent Items/2024" },
        { "Tom &- Jerry", "Tom & Jerry" },
        { "~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/"
                                             "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e" },
        { "&AOk-t&AOk-", "\xc3\xa9t\xc3\xa9" },
        { "&2D3eAQ-", "\xf0\x9f\x98\x81" },
        { "&Jjo-!", "\xe2\x98\xba!" },
        { "&AOkA6Q-", "\xc3\xa9\xc3\xa9" },
        { "&", NULL },
        { "&AOk", NULL },
        { "&AOk-&AOk-", NULL },        /* two runs in a row: one should have been used */
        { "&AGE-", NULL },             /* "a" must not be encoded */
        { "&AOl-", NULL },             /* leftover bits not zero */
        { "&AOkA-", NULL },            /* a partial unit */
        { "&2D0-", NULL },             /* a lone high surrogate */
        { "&3gE-", NULL },             /* a lone low surrogate */
        { "&AO*-", NULL },
        { "caf\xc3\xa9", NULL },       /* raw 8-bit */
        { "a\tb", NULL },
        { "a\x7f", NULL },
    };
    for (size_t i = 0; i < N(cases); i++) {
        buf_t out;
        buf_init(&out);
        const char *err = NULL;
        print_message("mutf7: %s\n", cases[i].name);
        int rc = imap_mutf7_decode(cases[i].name, strlen(cases[i].name), &out, &err);
        if (cases[i].utf8) {
            assert_int_equal(rc, 1);
            assert_string_equal(out.data, cases[i].utf8);
            assert_int_equal(imap_mutf7_decode(cases[i].name, strlen(cases[i].name), NULL,
                                               &err), 1);
        } else {
            assert_int_equal(rc, -1);
            assert_non_null(err);
        }
        buf_free(&out);
    }
}

static void test_mailbox_normalize(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        { "inbox", "INBOX" },       { "InBoX/Sub", "INBOX/Sub" }, { "INBOX", "INBOX" },
        { "inboxes", "inboxes" },   { "Work/inbox", "Work/inbox" }, { "", "" },
    };
    for (size_t i = 0; i < N(cases); i++) {
        buf_t out;
        buf_init(&out);
        assert_int_equal(imap_mailbox_normalize(cases[i].in, strlen(cases[i].in), &out), 0);
        assert_string_equal(out.data, cases[i].out);
        buf_free(&out);
    }
}

static void test_list_match(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *name;
        bool match;
    } cases[] = {
        { "*", "INBOX", true },
        { "*", "a/b/c", true },
        { "%", "INBOX", true },
        { "%", "a/b", false },
        { "%/%", "a/b", true },
        { "a/%", "a/b", true },
        { "a/%", "a/b/c", false },
        { "a/*", "a/b/c", true },
        { "a/*", "a", false },
        { "a*", "a", true },
        { "a%", "abc", true },
        { "inbox", "INBOX", true },
        { "INB*", "INBOX/x", true },
        { "inbox/%", "INBOX/Sub", true },
        { "inbox/sub", "INBOX/Sub", false },
        { "work", "Work", false },
        { "Work", "Work", true },
        { "", "", true },
        { "", "a", false },
        { "%a%b%", "xaybz", true },
        { "*a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false },
    };
    for (size_t i = 0; i < N(cases); i++) {
        print_message("list: %s ~ %s\n", cases[i].pattern, cases[i].name);
        assert_int_equal(imap_list_match(cases[i].pattern, cases[i].name), cases[i].match);
    }
}

/* ---- response strings -------------------------------------------------------------- */

static void test_astring(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        size_t len;
        const char *astring;
        size_t alen;
        const char *nstring;
        size_t nlen;
    } cases[] = {
        { IN("INBOX"), IN("INBOX"), IN("\"INBOX\"") },
        { IN(""), IN("\"\""), IN("\"\"") },
        { IN("NIL"), IN("\"NIL\""), IN("\"NIL\"") },
        { IN("a b"), IN("\"a b\""), IN("\"a b\"") },
        { IN("q\"b\\s"), IN("\"q\\\"b\\\\s\""), IN("\"q\\\"b\\\\s\"") },
        { IN("x*"), IN("\"x*\""), IN("\"x*\"") },
        { IN("a]"), IN("\"a]\""), IN("\"a]\"") },
        { IN("caf\xc3\xa9"), IN("{5}\r\ncaf\xc3\xa9"), IN("{5}\r\ncaf\xc3\xa9") },
        { IN("a\r\nb"), IN("{4}\r\na\r\nb"), IN("{4}\r\na\r\nb") },
        { IN("a\0b"), IN("{3}\r\na\0b"), IN("{3}\r\na\0b") },
    };
    for (size_t i = 0; i < N(cases); i++) {
        buf_t a, n;
        buf_init(&a);
        buf_init(&n);
        assert_int_equal(imap_append_astring(&a, cases[i].in, cases[i].len), 0);
        assert_int_equal(imap_append_nstring(&n, cases[i].in, cases[i].len), 0);
        assert_int_equal(a.len, cases[i].alen);
        assert_int_equal(n.len, cases[i].nlen);
        assert_memory_equal(a.data, cases[i].astring, a.len);
        assert_memory_equal(n.data, cases[i].nstring, n.len);
        buf_free(&a);
        buf_free(&n);
    }
    buf_t b;
    buf_init(&b);
    assert_int_equal(imap_append_nstring(&b, NULL, 0), 0);
    assert_string_equal(b.data, "NIL");
    buf_reset(&b);
    char big[2000];
    memset(big, 'x', sizeof big);
    big[0] = ' ';
    assert_int_equal(imap_append_astring(&b, big, sizeof big), 0);
    assert_memory_equal(b.data, "{2000}\r\n ", 9);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_at_end),
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_nesting),
        cmocka_unit_test(test_too_many_args),
        cmocka_unit_test(test_parse_partial_and_tag),
        cmocka_unit_test(test_seqset),
        cmocka_unit_test(test_seqset_iter_top),
        cmocka_unit_test(test_fetch),
        cmocka_unit_test(test_fetch_seen),
        cmocka_unit_test(test_store),
        cmocka_unit_test(test_sysflags),
        cmocka_unit_test(test_search_parse),
        cmocka_unit_test(test_search_deep),
        cmocka_unit_test(test_search_sql),
        cmocka_unit_test(test_search_sql_no_map),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_mutf7),
        cmocka_unit_test(test_mailbox_normalize),
        cmocka_unit_test(test_list_match),
        cmocka_unit_test(test_astring),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
