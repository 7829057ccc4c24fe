/* PROXY protocol headers, each case whole and fed byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "net/proxy.h"

typedef struct proxy_case {
    const char *name;
    const unsigned char *data;
    size_t len;
    int rc;
    const char *client;
    int port;
    size_t consumed;
} proxy_case_t;

#define S(x) (const unsigned char *)x, sizeof(x) - 1
static const unsigned char v2_tcp4[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C,
    192, 0, 2, 7, 198, 51, 100, 1, 0xDB, 0xC4, 0x01, 0xBB, 'E', 'H', 'L', 'O' };
static const unsigned char v2_tcp6[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x21, 0x00, 0x24,
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x30, 0x39, 0x00, 0x19 };
static const unsigned char v2_local[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00 };
static const unsigned char v2_bad_version[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x11, 0x11, 0x00, 0x0C,
    192, 0, 2, 7, 198, 51, 100, 1, 0xDB, 0xC4, 0x01, 0xBB };
static const unsigned char v2_short_body[] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 0x04,
    192, 0, 2, 7 };

static const proxy_case_t cases[] = {
    { "v1 tcp4", S("PROXY TCP4 192.0.2.7 198.51.100.1 56260 25\r\nEHLO x\r\n"), 1, "192.0.2.7", 56260, 44 },
    { "v1 tcp6", S("PROXY TCP6 2001:db8::5 2001:db8::1 12345 25\r\n"), 1, "2001:db8::5", 12345, 45 },
    { "v1 unknown", S("PROXY UNKNOWN\r\n"), 1, "", 0, 15 },
    { "v1 unknown with addresses", S("PROXY UNKNOWN ff:: ff:: 1 2\r\n"), 1, "", 0, 29 },
    { "v1 bad family", S("PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n"), -1, NULL, 0, 0 },
    { "v1 bad address", S("PROXY TCP4 192.0.2.700 198.51.100.1 1 2\r\n"), -1, NULL, 0, 0 },
    { "v1 family mismatch", S("PROXY TCP4 2001:db8::5 198.51.100.1 1 2\r\n"), -1, NULL, 0, 0 },
    { "v1 bad port", S("PROXY TCP4 192.0.2.7 198.51.100.1 99999 2\r\n"), -1, NULL, 0, 0 },
    { "v1 trailing junk", S("PROXY TCP4 192.0.2.7 198.51.100.1 1 2 x\r\n"), -1, NULL, 0, 0 },
    { "v1 no CRLF within 107 bytes",
      S("PROXY TCP6 aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa:aaaa bbbb:bbbb:bbbb:bbbb:bbbb:bbbb:bbbb:bbbb 65535 65535 xxxxxxxxxxxx\r\n"),
      -1, NULL, 0, 0 },
    { "not a header", S("EHLO client.example\r\n"), -1, NULL, 0, 0 },
    { "TLS hello", S("\x16\x03\x01\x02\x00\x01"), -1, NULL, 0, 0 },
    { "v2 tcp4", v2_tcp4, sizeof v2_tcp4, 1, "192.0.2.7", 56260, 28 },
    { "v2 tcp6", v2_tcp6, sizeof v2_tcp6, 1, "2001:db8::5", 12345, 52 },
    { "v2 local", v2_local, sizeof v2_local, 1, "", 0, 16 },
    { "v2 bad version", v2_bad_version, sizeof v2_bad_version, -1, NULL, 0, 0 },
    { "v2 body too short for tcp4", v2_short_body, sizeof v2_short_body, -1, NULL, 0, 0 },
};

static void check(const proxy_case_t *c, int rc, const proxy_header_t *h, size_t consumed)
{
    assert_int_equal(rc, c->rc);
    if (rc == 1) {
        assert_string_equal(h->client, c->client);
        assert_int_equal(h->client_port, c->port);
        assert_int_equal(consumed, c->consumed);
    }
}

static void test_whole(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        proxy_header_t h;
        size_t consumed;
        print_message("case: %s\n", cases[i].name);
        int rc = proxy_parse(cases[i].data, cases[i].len, &h, &consumed);
        check(&cases[i], rc, &h, consumed);
    }
}

/* Feeding a growing prefix: 0 until the header is complete, then the same answer. */
static void test_byte_by_byte(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        proxy_header_t h;
        size_t consumed = 0;
        int rc = 0;
        size_t n = 1;
        for (; n <= cases[i].len; n++) {
            rc = proxy_parse(cases[i].data, n, &h, &consumed);
            if (rc != 0)
                break;
        }
        print_message("case: %s (decided after %zu bytes)\n", cases[i].name, n);
        check(&cases[i], rc, &h, consumed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_whole),
                                        cmocka_unit_test(test_byte_by_byte) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
