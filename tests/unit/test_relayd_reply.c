/* relayd's SMTP reply parser and EHLO keywords: every reply case whole and fed byte by byte
 * must give the same replies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "reply.h"

typedef struct reply_case {
    const char *name;
    const char *input;
    size_t input_len;
    size_t max_line, max_lines; /* 0: defaults */
    /* replies as "CODE[STATUS]text" joined by " || " (text lines joined by '\n'), then
     * " || ERR" after an error; a partial reply left at the end shows as " || ..." */
    const char *expect;
} reply_case_t;

#define IN(s) s, sizeof(s) - 1
static const reply_case_t cases[] = {
    { "single line", IN("220 mx.example.com ESMTP\r\n"), 0, 0, "220[]mx.example.com ESMTP" },
    { "enhanced status", IN("250 2.1.0 Ok\r\n"), 0, 0, "250[2.1.0]Ok" },
    { "multi-line, status on every line",
      IN("550-5.1.1 no such\r\n550-5.1.1 user\r\n550 5.1.1 here\r\n"), 0, 0,
      "550[5.1.1]no such\nuser\nhere" },
    { "multi-line EHLO", IN("250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n"), 0, 0,
      "250[]mx\nPIPELINING\nSIZE 1000" },
    { "two replies", IN("250 a\r\n354 go\r\n"), 0, 0, "250[]a || 354[]go" },
    { "bare LF", IN("250-a\n250 b\n"), 0, 0, "250[]a\nb" },
    { "code only", IN("250\r\n"), 0, 0, "250[]" },
    { "code and space only", IN("221 \r\n"), 0, 0, "221[]" },
    { "empty continuation", IN("250-\r\n250 x\r\n"), 0, 0, "250[]\nx" },
    { "status class differs from code: text", IN("250 5.1.1 x\r\n"), 0, 0, "250[]5.1.1 x" },
    { "status alone", IN("451 4.3.0\r\n"), 0, 0, "451[4.3.0]" },
    { "not a status: four digits", IN("250 2.1234.0 x\r\n"), 0, 0, "250[]2.1234.0 x" },
    { "not a status: no space after", IN("250 2.1.0x\r\n"), 0, 0, "250[]2.1.0x" },
    { "control bytes shown as ?", IN("250 a\x01" "b\r\n"), 0, 0, "250[]a?b" },
    { "partial reply", IN("250-a\r\n250 b"), 0, 0, "..." },
    { "not a reply", IN("hello\r\n"), 0, 0, "ERR" },
    { "code out of range", IN("650 x\r\n"), 0, 0, "ERR" },
    { "second digit out of range", IN("260 x\r\n"), 0, 0, "ERR" },
    { "text glued to code", IN("250ok\r\n"), 0, 0, "ERR" },
    { "short line", IN("25\r\n"), 0, 0, "ERR" },
    { "codes differ", IN("250-a\r\n251 b\r\n"), 0, 0, "ERR" },
    { "after a good reply", IN("250 a\r\nxyz\r\n"), 0, 0, "250[]a || ERR" },
    { "too many lines", IN("250-a\r\n250-b\r\n250 c\r\n"), 0, 2, "ERR" },
    { "lines at the cap", IN("250-a\r\n250 b\r\n"), 0, 2, "250[]a\nb" },
    { "line too long", IN("250 0123456789\r\n"), 10, 0, "ERR" },
    { "line at the length cap", IN("250 01234\r\n"), 11, 0, "250[]01234" },
};

static void append(char *out, size_t out_len, const char *s)
{
    strncat(out, s, out_len - strlen(out) - 1);
}

static void collect(const reply_case_t *c, bool bytewise, char *out, size_t out_len)
{
    reply_parser_t p;
    reply_parser_init(&p, c->max_line, c->max_lines);
    buf_t in;
    buf_init(&in);
    out[0] = '\0';
    size_t fed = 0;
    bool failed = false;
    while (fed < c->input_len && !failed) {
        size_t n = bytewise ? 1 : c->input_len;
        buf_append(&in, c->input + fed, n);
        fed += n;
        reply_t r;
        const char *error = NULL;
        int rc;
        while ((rc = reply_parse(&p, &in, &r, &error)) != 0) {
            if (out[0])
                append(out, out_len, " || ");
            if (rc < 0) {
                assert_non_null(error);
                append(out, out_len, "ERR");
                failed = true;
                break;
            }
            char head[32];
            snprintf(head, sizeof head, "%d[%s]", r.code, r.status);
            append(out, out_len, head);
            append(out, out_len, r.text);
        }
    }
    if (!failed && p.lines > 0)
        append(out, out_len, out[0] ? " || ..." : "...");
    reply_parser_free(&p);
    buf_free(&in);
}

static void test_reply_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char whole[512], bytes[512];
        print_message("case: %s\n", cases[i].name);
        collect(&cases[i], false, whole, sizeof whole);
        collect(&cases[i], true, bytes, sizeof bytes);
        assert_string_equal(whole, cases[i].expect);
        assert_string_equal(bytes, cases[i].expect);
    }
}

typedef struct ehlo_case {
    const char *name;
    const char *text; /* reply_t.text of the 250 reply */
    ehlo_caps_t expect;
} ehlo_case_t;

static const ehlo_case_t ehlo_cases[] = {
    { "name only", "mx.example.com", { 0 } },
    { "all known",
      "mx\nPIPELINING\nSIZE 10240000\n8BITMIME\nSTARTTLS\nSMTPUTF8\nENHANCEDSTATUSCODES",
      { .pipelining = true, .size = true, .size_max = 10240000, .eightbitmime = true,
        .starttls = true, .smtputf8 = true, .enhancedstatuscodes = true } },
    { "lower case, unknown skipped", "mx\nauth PLAIN\npipelining\nstarttls\nXFOO bar",
      { .pipelining = true, .starttls = true } },
    { "SIZE without a number", "mx\nSIZE", { .size = true } },
    { "SIZE 0: no maximum", "mx\nSIZE 0", { .size = true } },
    { "SIZE garbage", "mx\nSIZE 12x", { .size = true } },
    { "keyword in the name line is not a keyword", "STARTTLS", { 0 } },
    { "prefix of a keyword is not it", "mx\nPIPELIN\nSTARTTLSX", { 0 } },
};

static void test_ehlo_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof ehlo_cases / sizeof ehlo_cases[0]; i++) {
        const ehlo_case_t *c = &ehlo_cases[i];
        print_message("case: %s\n", c->name);
        ehlo_caps_t got;
        ehlo_caps_parse(c->text, &got);
        assert_int_equal(got.pipelining, c->expect.pipelining);
        assert_int_equal(got.size, c->expect.size);
        assert_int_equal(got.size_max, c->expect.size_max);
        assert_int_equal(got.eightbitmime, c->expect.eightbitmime);
        assert_int_equal(got.starttls, c->expect.starttls);
        assert_int_equal(got.smtputf8, c->expect.smtputf8);
        assert_int_equal(got.enhancedstatuscodes, c->expect.enhancedstatuscodes);
    }
}

/* The EHLO parser on what the reply parser made of a wire reply. */
static void test_ehlo_from_wire(void **state)
{
    (void)state;
    reply_parser_t p;
    reply_parser_init(&p, 0, 0);
    buf_t in;
    buf_init(&in);
    buf_puts(&in, "250-mx.example.com Hello\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
                  "250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n");
    reply_t r;
    const char *error = NULL;
    assert_int_equal(reply_parse(&p, &in, &r, &error), 1);
    assert_int_equal(r.lines, 5);
    ehlo_caps_t caps;
    ehlo_caps_parse(r.text, &caps);
    assert_true(caps.size && caps.eightbitmime && caps.enhancedstatuscodes && caps.starttls);
    assert_false(caps.pipelining);
    assert_int_equal(caps.size_max, 52428800);
    assert_int_equal(in.len, 0);
    reply_parser_free(&p);
    buf_free(&in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_cases),
        cmocka_unit_test(test_ehlo_cases),
        cmocka_unit_test(test_ehlo_from_wire),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
