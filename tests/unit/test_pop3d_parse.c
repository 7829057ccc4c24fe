/* pop3d's command parser and the dot-stuffing of multi-line responses, table-driven. Every
 * command case goes through the line reader whole and byte by byte; every stuffing case is
 * fed whole, byte by byte and in uneven pieces, and must give the same bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/line.h"
#include "pop3d.h"

#define IN(s) s, sizeof(s) - 1

/* ---- command lines ----------------------------------------------------------------- */

typedef struct parse_case {
    const char *input; /* one or more lines, CRLF included */
    size_t input_len;
    /* per line: "KEYWORD[arg1][arg2]{rest}", "ERR:text", or "LONG"; joined by '|' */
    const char *expect;
} parse_case_t;

static const parse_case_t parse_cases[] = {
    { IN("STAT\r\n"), "STAT{}" },
    { IN("stat\r\n"), "STAT{}" },
    { IN("rEtR 1\r\n"), "RETR[1]{1}" },
    { IN("TOP 2 10\r\n"), "TOP[2][10]{2 10}" },
    { IN("LIST\r\nUIDL 3\r\n"), "LIST{}|UIDL[3]{3}" },
    { IN("USER alice@example.test\r\n"), "USER[alice@example.test]{alice@example.test}" },
    { IN("PASS  two  spaces \r\n"), "PASS[two][spaces]{ two  spaces }" },
    { IN("AUTH PLAIN AGFsaWNlAHB3\r\n"), "AUTH[PLAIN][AGFsaWNlAHB3]{PLAIN AGFsaWNlAHB3}" },
    { IN("AUTH\r\n"), "AUTH{}" },
    { IN("NOOP\n"), "NOOP{}" },                 /* bare LF is tolerated */
    { IN("\r\n"), "ERR:Empty command" },
    { IN("XYZZY\r\n"), "ERR:Unknown command" },
    { IN("RE\r\n"), "ERR:Unknown command" },
    { IN("RET1 2\r\n"), "ERR:Unknown command" },
    { IN(" STAT\r\n"), "ERR:Unknown command" },
    { IN("STAT\0x\r\n"), "ERR:NUL byte in command" },
    { IN("DELE 1 2 3 4 5\r\n"), "ERR:Too many arguments" },
    { IN("FOO\r\nSTAT\r\n"), "FOO{}|STAT{}" },   /* parses; the table decides it is unknown */
};

static void append(char *out, size_t out_len, const char *s)
{
    strncat(out, s, out_len - strlen(out) - 1);
}

static void describe(char *line, size_t len, unsigned flags, char *out, size_t out_len)
{
    pop3_request_t req;
    const char *err = NULL;
    if (pop3_parse(line, len, flags, &req, &err) < 0) {
        append(out, out_len, "ERR:");
        append(out, out_len, err);
        return;
    }
    append(out, out_len, req.keyword);
    for (int i = 0; i < req.argc; i++) {
        append(out, out_len, "[");
        append(out, out_len, req.argv[i]);
        append(out, out_len, "]");
    }
    append(out, out_len, "{");
    append(out, out_len, req.rest);
    append(out, out_len, "}");
}

static void parse_collect(const parse_case_t *c, bool bytewise, char *out, size_t out_len)
{
    line_reader_t r;
    line_reader_init(&r, POP3_AUTH_LINE_MAX + 2);
    buf_t in;
    buf_init(&in);
    out[0] = '\0';
    bool first = true;
    for (size_t fed = 0; fed < c->input_len;) {
        size_t n = bytewise ? 1 : c->input_len;
        buf_append(&in, c->input + fed, n);
        fed += n;
        line_t l;
        int rc;
        while ((rc = line_read(&r, &in, &l)) != 0) {
            if (!first)
                append(out, out_len, "|");
            first = false;
            if (rc < 0) {
                append(out, out_len, "LONG");
                continue;
            }
            describe(l.text, l.len, l.flags, out, out_len);
            buf_consume(&in, l.consumed);
        }
    }
    buf_free(&in);
}

static void test_parse_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        char whole[512], bytes[512];
        parse_collect(&parse_cases[i], false, whole, sizeof whole);
        parse_collect(&parse_cases[i], true, bytes, sizeof bytes);
        print_message("case %zu: %s\n", i, parse_cases[i].expect);
        assert_string_equal(whole, parse_cases[i].expect);
        assert_string_equal(bytes, parse_cases[i].expect);
    }
}

/* A line over the reader's cap is reported once and the next command still parses. */
static void test_parse_overlong(void **state)
{
    (void)state;
    size_t big = POP3_AUTH_LINE_MAX + 100;
    char *input = malloc(big + 16);
    assert_non_null(input);
    memset(input, 'A', big);
    memcpy(input + big, "\r\nSTAT\r\n", 8);
    parse_case_t c = { input, big + 8, "LONG|STAT{}" };
    char whole[256], bytes[256];
    parse_collect(&c, false, whole, sizeof whole);
    parse_collect(&c, true, bytes, sizeof bytes);
    assert_string_equal(whole, c.expect);
    assert_string_equal(bytes, c.expect);
    free(input);
}

typedef struct number_case {
    const char *text;
    int rc;
    unsigned long value;
} number_case_t;

static void test_numbers(void **state)
{
    (void)state;
    static const number_case_t cases[] = {
        { "1", 0, 1 },        { "0", 0, 0 },          { "42", 0, 42 },
        { "007", 0, 7 },      { "999999999", 0, 999999999 },
        { "1000000000", -1, 0 }, { "", -1, 0 },        { "-1", -1, 0 },
        { "+1", -1, 0 },      { "1x", -1, 0 },        { " 1", -1, 0 },
        { "0x10", -1, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned long v = 12345;
        print_message("number: '%s'\n", cases[i].text);
        assert_int_equal(pop3_parse_number(cases[i].text, &v), cases[i].rc);
        if (cases[i].rc == 0)
            assert_int_equal(v, cases[i].value);
    }
}

/* ---- dot-stuffing ------------------------------------------------------------------ */

typedef struct stuff_case {
    const char *name;
    const char *raw;
    size_t raw_len;
    long body_lines; /* -1: RETR */
    const char *expect;
} stuff_case_t;

#define MSG "Subject: x\r\n.From: dot header\r\n\r\nline 1\r\n.line 2\r\n..line 3\r\n.\r\nline 5\r\n"

static const stuff_case_t stuff_cases[] = {
    { "plain", IN("A: b\r\n\r\nhello\r\n"), -1, "A: b\r\n\r\nhello\r\n.\r\n" },
    { "empty message", IN(""), -1, ".\r\n" },
    { "dots stuffed", IN(MSG), -1,
      "Subject: x\r\n..From: dot header\r\n\r\nline 1\r\n..line 2\r\n...line 3\r\n..\r\n"
      "line 5\r\n.\r\n" },
    { "no final CRLF", IN("A: b\r\n\r\nlast"), -1, "A: b\r\n\r\nlast\r\n.\r\n" },
    { "ends in CR", IN("A: b\r\n\r\nlast\r"), -1, "A: b\r\n\r\nlast\r\n.\r\n" },
    { "dot first byte", IN(".\r\n"), -1, "..\r\n.\r\n" },
    { "bare LF lines", IN("a\n.b\n"), -1, "a\n..b\n.\r\n" },
    { "dot inside a line", IN("a.b\r\n x.\r\n"), -1, "a.b\r\n x.\r\n.\r\n" },
    { "TOP 0", IN(MSG), 0, "Subject: x\r\n..From: dot header\r\n\r\n.\r\n" },
    { "TOP 2", IN(MSG), 2, "Subject: x\r\n..From: dot header\r\n\r\nline 1\r\n..line 2\r\n.\r\n" },
    { "TOP 4", IN(MSG), 4,
      "Subject: x\r\n..From: dot header\r\n\r\nline 1\r\n..line 2\r\n...line 3\r\n..\r\n.\r\n" },
    { "TOP beyond the end", IN(MSG), 100,
      "Subject: x\r\n..From: dot header\r\n\r\nline 1\r\n..line 2\r\n...line 3\r\n..\r\n"
      "line 5\r\n.\r\n" },
    { "TOP without a body", IN("A: b\r\nC: d\r\n"), 3, "A: b\r\nC: d\r\n.\r\n" },
    { "TOP header only, no CRLF", IN("A: b"), 0, "A: b\r\n.\r\n" },
    { "TOP blank line with bare LF", IN("A: b\n\nbody\nmore\n"), 1, "A: b\n\nbody\n.\r\n" },
    { "TOP CR alone is not blank", IN("A: b\r\n\rx\r\n\r\nbody\r\n"), 0,
      "A: b\r\n\rx\r\n\r\n.\r\n" },
};

/* Feeds raw in pieces of the given sizes (cycled); 0 means whole. */
static void stuff_run(const stuff_case_t *c, const size_t *pieces, size_t npieces, buf_t *out)
{
    pop3_stuffer_t st;
    pop3_stuffer_init(&st, c->body_lines);
    buf_reset(out);
    size_t off = 0, k = 0;
    while (off < c->raw_len) {
        size_t n = npieces ? pieces[k++ % npieces] : c->raw_len;
        if (n > c->raw_len - off)
            n = c->raw_len - off;
        assert_int_equal(pop3_stuffer_feed(&st, c->raw + off, n, out), 0);
        off += n;
    }
    assert_int_equal(pop3_stuffer_end(&st, out), 0);
}

static void test_stuff_cases(void **state)
{
    (void)state;
    static const size_t one[] = { 1 };
    static const size_t uneven[] = { 2, 1, 5, 3 };
    buf_t out;
    buf_init(&out);
    for (size_t i = 0; i < sizeof stuff_cases / sizeof stuff_cases[0]; i++) {
        const stuff_case_t *c = &stuff_cases[i];
        print_message("stuff: %s\n", c->name);
        stuff_run(c, NULL, 0, &out);
        assert_int_equal(out.len, strlen(c->expect));
        assert_memory_equal(out.data, c->expect, out.len);
        stuff_run(c, one, 1, &out);
        assert_int_equal(out.len, strlen(c->expect));
        assert_memory_equal(out.data, c->expect, out.len);
        stuff_run(c, uneven, 4, &out);
        assert_int_equal(out.len, strlen(c->expect));
        assert_memory_equal(out.data, c->expect, out.len);
    }
    buf_free(&out);
}

/* What a client does (RFC 1939 section 3): lines up to ".CRLF", one leading "." removed.
 * Returns the bytes it gets back, or -1 when the response is not terminated. */
static long unstuff(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        const char *lf = memchr(in + i, '\n', len - i);
        if (!lf)
            return -1;
        size_t n = (size_t)(lf - (in + i)) + 1;
        if (n == 3 && memcmp(in + i, ".\r\n", 3) == 0)
            return i + n == len ? (long)o : -1;
        size_t skip = in[i] == '.' ? 1 : 0;
        memcpy(out + o, in + i + skip, n - skip);
        o += n - skip;
        i += n;
    }
    return -1;
}

/* Messages made of lines of dots, CRs, letters and CRLF come back byte for byte. */
static void test_stuff_round_trip(void **state)
{
    (void)state;
    static const char alphabet[] = "..\r\nab. ";
    unsigned seed = 12345;
    buf_t out;
    buf_init(&out);
    char raw[600], back[1400];
    for (int round = 0; round < 2000; round++) {
        size_t len = 0;
        int lines = (int)(rand_r(&seed) % 8);
        for (int l = 0; l < lines; l++) {
            int n = (int)(rand_r(&seed) % 12);
            for (int k = 0; k < n; k++) {
                char ch = alphabet[rand_r(&seed) % (sizeof alphabet - 1)];
                raw[len++] = ch == '\n' ? 'x' : ch; /* LF only as part of CRLF */
            }
            if (len > 0 && raw[len - 1] == '\r')
                raw[len - 1] = 'y';
            raw[len++] = '\r';
            raw[len++] = '\n';
        }
        stuff_case_t c = { "random", raw, len, -1, NULL };
        size_t piece = 1 + rand_r(&seed) % 7;
        stuff_run(&c, &piece, 1, &out);
        long got = unstuff(out.data, out.len, back);
        assert_int_equal(got, (long)len);
        assert_memory_equal(back, raw, len);
    }
    buf_free(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_cases),
        cmocka_unit_test(test_parse_overlong),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_stuff_cases),
        cmocka_unit_test(test_stuff_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
