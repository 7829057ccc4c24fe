/* Client text quoted in replies (text_echo) and the reply writers' scrub (text_scrub): no
 * control character survives either, and text_echo keeps to its cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "base/text.h"

typedef struct echo_case {
    const char *name;
    const char *input;
    size_t input_len;
    size_t out_len;     /* the caller's buffer: the cap is one less */
    const char *expect;
} echo_case_t;

#define IN(s) s, sizeof(s) - 1
static const echo_case_t echo_cases[] = {
    { "plain text kept", IN("X=1"), 64, "X=1" },
    { "empty", IN(""), 64, "" },
    { "CR inside", IN("X=\rFAKE"), 64, "X=?FAKE" },
    { "CRLF inside", IN("a\r\n250 ok"), 64, "a??250 ok" },
    { "bare LF", IN("a\nb"), 64, "a?b" },
    { "NUL does not end it", IN("a\0b"), 64, "a?b" },
    { "ESC sequence", IN("\x1b[31mred"), 64, "?[31mred" },
    { "DEL", IN("a\x7f"), 64, "a?" },
    { "tab", IN("a\tb"), 64, "a?b" },
    { "8-bit bytes", IN("caf\xc3\xa9"), 64, "caf??" },
    { "space and tilde kept", IN(" ~"), 64, " ~" },
    { "exactly the cap", IN("12345"), 6, "12345" },
    { "one over the cap", IN("123456"), 6, "12..." },
    { "long text cut", IN("abcdefghijklmnopqrstuvwxyz"), 11, "abcdefg..." },
    { "cap too small for the mark", IN("abc"), 3, "ab" },
    { "cut after a control byte", IN("\r\r\r\r\r\r\r\r"), 6, "??..." },
    { "room for nothing", IN("abc"), 1, "" },
};

static void test_echo_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof echo_cases / sizeof echo_cases[0]; i++) {
        const echo_case_t *c = &echo_cases[i];
        char out[64];
        memset(out, 'Z', sizeof out);
        print_message("case: %s\n", c->name);
        const char *r = text_echo(out, c->out_len, c->input, c->input_len);
        assert_ptr_equal(r, out);
        assert_string_equal(out, c->expect);
        assert_true(strlen(out) < c->out_len);
        for (const char *p = out; *p; p++)
            assert_true(*p >= 0x20 && *p < 0x7f);
    }
}

/* Every byte value alone: printable ASCII stays, everything else becomes '?'. */
static void test_echo_every_byte(void **state)
{
    (void)state;
    for (int b = 0; b < 256; b++) {
        char in = (char)b, out[2];
        text_echo(out, sizeof out, &in, 1);
        assert_int_equal(out[0], b >= 0x20 && b < 0x7f ? b : '?');
        assert_int_equal(out[1], '\0');
    }
}

typedef struct scrub_case {
    const char *name;
    const char *input;
    size_t input_len;
    const char *expect;
    size_t replaced;
} scrub_case_t;

static const scrub_case_t scrub_cases[] = {
    { "clean line kept", IN("250 2.0.0 Ok"), "250 2.0.0 Ok", 0 },
    { "CR and LF", IN("555 X=\rFAKE\n"), "555 X=?FAKE?", 2 },
    { "NUL and ESC", IN("a\0b\x1b"), "a?b?", 2 },
    { "DEL", IN("\x7f"), "?", 1 },
    { "8-bit kept", IN("caf\xc3\xa9"), "caf\xc3\xa9", 0 },
};

static void test_scrub_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof scrub_cases / sizeof scrub_cases[0]; i++) {
        const scrub_case_t *c = &scrub_cases[i];
        char buf[64];
        memcpy(buf, c->input, c->input_len);
        print_message("case: %s\n", c->name);
        assert_int_equal(text_scrub(buf, c->input_len), c->replaced);
        assert_memory_equal(buf, c->expect, c->input_len);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo_cases),
        cmocka_unit_test(test_echo_every_byte),
        cmocka_unit_test(test_scrub_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
