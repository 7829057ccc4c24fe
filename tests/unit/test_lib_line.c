/* The CRLF line reader: every case whole and fed byte by byte must give the same lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "base/line.h"

typedef struct line_case {
    const char *name;
    const char *input;
    size_t input_len;
    size_t max;
    const char *expect; /* lines joined by '|', too-long lines as "<LONG>", flags as [B] [N] */
} line_case_t;

#define IN(s) s, sizeof(s) - 1
static const line_case_t cases[] = {
    { "one line", IN("HELO a\r\n"), 64, "HELO a" },
    { "two lines", IN("A\r\nB\r\n"), 64, "A|B" },
    { "partial last line", IN("A\r\nB"), 64, "A" },
    { "empty line", IN("\r\n"), 64, "" },
    { "bare LF flagged", IN("A\nB\r\n"), 64, "A[B]|B" },
    { "NUL flagged", IN("A\0B\r\n"), 64, "A[N]" },
    { "CR inside kept", IN("A\rB\r\n"), 64, "A\rB" },
    { "exactly max", IN("12345678\r\n"), 10, "12345678" },
    { "one over max", IN("123456789\r\nOK\r\n"), 10, "<LONG>|OK" },
    { "very long then ok", IN("123456789012345678901234567890\r\nOK\r\n"), 10, "<LONG>|OK" },
};

static void collect(const line_case_t *c, bool bytewise, char *out, size_t out_len)
{
    line_reader_t r;
    line_reader_init(&r, c->max);
    buf_t in;
    buf_init(&in);
    out[0] = '\0';
    size_t fed = 0;
    bool first = true;
    while (fed < c->input_len) {
        size_t n = bytewise ? 1 : c->input_len;
        buf_append(&in, c->input + fed, n);
        fed += n;
        line_t l;
        int rc;
        while ((rc = line_read(&r, &in, &l)) != 0) {
            if (!first)
                strncat(out, "|", out_len - strlen(out) - 1);
            first = false;
            if (rc < 0) {
                strncat(out, "<LONG>", out_len - strlen(out) - 1);
                continue;
            }
            /* NUL-containing lines are shown up to the NUL. */
            strncat(out, l.text, out_len - strlen(out) - 1);
            if (l.flags & LINE_BARE_LF)
                strncat(out, "[B]", out_len - strlen(out) - 1);
            if (l.flags & LINE_NUL)
                strncat(out, "[N]", out_len - strlen(out) - 1);
            buf_consume(&in, l.consumed);
        }
    }
    buf_free(&in);
}

static void test_line_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char whole[256], bytes[256];
        collect(&cases[i], false, whole, sizeof whole);
        collect(&cases[i], true, bytes, sizeof bytes);
        print_message("case: %s\n", cases[i].name);
        assert_string_equal(whole, cases[i].expect);
        assert_string_equal(bytes, cases[i].expect);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_line_cases) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
