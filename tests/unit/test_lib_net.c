/* lib/base/net: which addresses mail must never go to, and addresses as text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "base/net.h"

typedef struct special_case {
    const char *addr;
    bool special;
} special_case_t;

static const special_case_t special_cases[] = {
    { "0.0.0.0", true },             /* unspecified */
    { "0.1.2.3", true },             /* "this network" */
    { "127.0.0.1", true },           /* loopback */
    { "127.255.255.254", true },
    { "10.0.0.1", true },            /* RFC 1918 */
    { "172.16.0.1", true },
    { "172.31.255.255", true },
    { "172.32.0.1", false },
    { "172.15.255.255", false },
    { "192.168.1.1", true },
    { "169.254.1.1", true },         /* link-local */
    { "100.64.0.1", true },          /* shared CGNAT */
    { "100.127.255.255", true },
    { "100.128.0.1", false },
    { "100.63.255.255", false },
    { "224.0.0.1", true },           /* multicast */
    { "239.255.255.255", true },
    { "240.0.0.1", true },           /* reserved */
    { "255.255.255.255", true },     /* broadcast */
    { "192.0.2.1", true },           /* documentation */
    { "198.51.100.1", true },
    { "203.0.113.1", true },
    { "198.18.0.1", true },          /* benchmarking */
    { "192.0.0.8", true },           /* IETF protocol assignments */
    { "8.8.8.8", false },
    { "1.1.1.1", false },
    { "93.184.216.34", false },
    { "::", true },                  /* unspecified */
    { "::1", true },                 /* loopback */
    { "::192.0.2.1", true },         /* IPv4-compatible, deprecated */
    { "::ffff:127.0.0.1", true },    /* IPv4-mapped forms judged as IPv4 */
    { "::ffff:10.1.2.3", true },
    { "::ffff:8.8.8.8", false },
    { "fe80::1", true },             /* link-local */
    { "febf::1", true },
    { "fec0::1", true },             /* site-local, deprecated */
    { "fc00::1", true },             /* unique local */
    { "fd12:3456::1", true },
    { "ff02::1", true },             /* multicast */
    { "2001:db8::1", true },         /* documentation */
    { "100::1", true },              /* discard-only */
    { "2001:4860:4860::8888", false },
    { "2a00:1450:4001::1", false },
    { "64:ff9b::808:808", false },   /* NAT64 of a public address */
};

/* addr as a socket address with a port, the way DNS results and connections carry it. */
static void to_sockaddr(const char *addr, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(25);
    } else {
        assert_int_equal(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(25);
    }
}

static void test_special(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof special_cases / sizeof special_cases[0]; i++) {
        struct sockaddr_storage ss;
        to_sockaddr(special_cases[i].addr, &ss);
        if (net_sockaddr_special((struct sockaddr *)&ss) != special_cases[i].special)
            fail_msg("%s: expected %s", special_cases[i].addr,
                     special_cases[i].special ? "special" : "deliverable");
    }
    struct sockaddr_storage other = { .ss_family = AF_UNIX };
    assert_true(net_sockaddr_special((struct sockaddr *)&other));
}

typedef struct text_case {
    const char *addr;
    size_t len;
    const char *text;
} text_case_t;

static const text_case_t text_cases[] = {
    { "192.0.2.1", 64, "192.0.2.1" },
    { "2001:db8::1", 64, "2001:db8::1" },
    { "::ffff:192.0.2.1", 64, "::ffff:192.0.2.1" },
    { "192.0.2.1", 6, "192.0" }, /* cut to fit */
};

static void test_text(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof text_cases / sizeof text_cases[0]; i++) {
        struct sockaddr_storage ss;
        char out[64];
        to_sockaddr(text_cases[i].addr, &ss);
        net_sockaddr_text((struct sockaddr *)&ss, out, text_cases[i].len);
        assert_string_equal(out, text_cases[i].text);
    }
    struct sockaddr_storage other = { .ss_family = AF_UNIX };
    char out[16];
    net_sockaddr_text((struct sockaddr *)&other, out, sizeof out);
    assert_string_equal(out, "unknown");
}

static void test_from_sockaddr(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    net_addr_t a, b;
    to_sockaddr("::ffff:192.0.2.1", &ss);
    assert_int_equal(net_addr_from_sockaddr((struct sockaddr *)&ss, &a), 0);
    assert_int_equal(net_addr_parse("192.0.2.1", &b), 0);
    assert_memory_equal(&a, &b, sizeof a);
    net_cidr_t cidr;
    assert_int_equal(net_cidr_parse("192.0.2.0/24", &cidr), 0);
    assert_true(net_cidr_contains(&cidr, &a));
    struct sockaddr_storage other = { .ss_family = AF_UNIX };
    assert_int_equal(net_addr_from_sockaddr((struct sockaddr *)&other, &a), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_special),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_from_sockaddr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
