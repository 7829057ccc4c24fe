/* lib/mail/dsn: notifications built, then read back with GMime as a mail client would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <gmime/gmime.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "mail/dsn.h"

#define ORIGINAL                                                                          \
    "From: Alice <alice@example.test>\r\nTo: bad@remote.test\r\nSubject: hello\r\n"        \
    "Message-ID: <m1@example.test>\r\n\r\nline one\r\n.a dot\r\n"

static const dsn_rcpt_t two_rcpts[] = {
    { "bad@remote.test", DSN_ACTION_FAILED, "5.1.1", "dns; mx.remote.test",
      "smtp; 550 5.1.1 no such user", 1700000000000 },
    { "gone@remote.test", DSN_ACTION_FAILED, NULL, NULL,
      "X-Postern; connect to mx.remote.test[192.0.2.1]:25: connection refused", 0 },
};

static dsn_t base_dsn(dsn_kind_t kind, const char *orig, size_t len)
{
    dsn_t d = {
        .kind = kind,
        .reporting_mta = "mx.example.test",
        .from = "MAILER-DAEMON@mx.example.test",
        .to = "alice@example.test",
        .queue_id = "Q1234",
        .arrival_ms = 1699990000000,
        .retry_until_ms = 1700400000000,
        .now_ms = 1700000100000,
        .rcpts = two_rcpts,
        .nrcpts = 2,
        .original = orig,
        .original_len = len,
    };
    return d;
}

/* The built message, parsed. */
typedef struct parsed {
    buf_t raw;
    GMimeMessage *msg;
    GMimeMultipart *report;
} parsed_t;

static void build_and_parse(const dsn_t *d, parsed_t *p)
{
    buf_init(&p->raw);
    assert_int_equal(dsn_build(d, &p->raw), 0);
    /* CRLF only: every LF has its CR, no CR stands alone. */
    for (size_t i = 0; i < p->raw.len; i++) {
        if (p->raw.data[i] == '\n')
            assert_true(i > 0 && p->raw.data[i - 1] == '\r');
        if (p->raw.data[i] == '\r')
            assert_true(i + 1 < p->raw.len && p->raw.data[i + 1] == '\n');
    }
    GMimeStream *s = g_mime_stream_mem_new_with_buffer(p->raw.data, p->raw.len);
    GMimeParser *parser = g_mime_parser_new_with_stream(s);
    p->msg = g_mime_parser_construct_message(parser, NULL);
    g_object_unref(parser);
    g_object_unref(s);
    assert_non_null(p->msg);
    GMimeObject *top = g_mime_message_get_mime_part(p->msg);
    assert_true(GMIME_IS_MULTIPART(top));
    GMimeContentType *ct = g_mime_object_get_content_type(top);
    assert_true(g_mime_content_type_is_type(ct, "multipart", "report"));
    assert_string_equal(g_mime_content_type_get_parameter(ct, "report-type"), "delivery-status");
    p->report = GMIME_MULTIPART(top);
}

static void parsed_free(parsed_t *p)
{
    g_object_unref(p->msg);
    buf_free(&p->raw);
}

static bool part_is(GMimeObject *o, const char *type, const char *subtype)
{
    return g_mime_content_type_is_type(g_mime_object_get_content_type(o), type, subtype);
}

/* The decoded content of a leaf part, NUL-terminated; the caller frees it. */
static char *part_text(GMimeObject *o)
{
    GMimeStream *out = g_mime_stream_mem_new();
    if (GMIME_IS_MESSAGE_PART(o)) {
        GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(o));
        g_mime_object_write_to_stream(GMIME_OBJECT(m), NULL, out);
    } else {
        g_mime_data_wrapper_write_to_stream(g_mime_part_get_content(GMIME_PART(o)), out);
    }
    GByteArray *a = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out));
    char *text = malloc(a->len + 1);
    memcpy(text, a->data, a->len);
    text[a->len] = '\0';
    g_object_unref(out);
    return text;
}

static const char *header(GMimeMessage *m, const char *name)
{
    return g_mime_object_get_header(GMIME_OBJECT(m), name);
}

static void test_bounce_structure(void **state)
{
    (void)state;
    dsn_t d = base_dsn(DSN_FAILED, ORIGINAL, sizeof ORIGINAL - 1);
    parsed_t p;
    build_and_parse(&d, &p);

    assert_string_equal(header(p.msg, "Subject"), "Returned mail: delivery failed");
    assert_string_equal(header(p.msg, "Auto-Submitted"), "auto-replied");
    assert_string_equal(header(p.msg, "MIME-Version"), "1.0");
    assert_non_null(header(p.msg, "Date"));
    assert_non_null(strstr(header(p.msg, "Message-ID"), "@mx.example.test>"));
    assert_string_equal(header(p.msg, "To"), "alice@example.test");
    assert_non_null(strstr(header(p.msg, "From"), "Mail Delivery System"));
    assert_non_null(strstr(header(p.msg, "From"), "<MAILER-DAEMON@mx.example.test>"));

    assert_int_equal(g_mime_multipart_get_count(p.report), 3);
    GMimeObject *human = g_mime_multipart_get_part(p.report, 0);
    GMimeObject *status = g_mime_multipart_get_part(p.report, 1);
    GMimeObject *orig = g_mime_multipart_get_part(p.report, 2);
    assert_true(part_is(human, "text", "plain"));
    assert_true(part_is(status, "message", "delivery-status"));
    assert_true(part_is(orig, "message", "rfc822"));

    char *text = part_text(human);
    assert_non_null(strstr(text, "<bad@remote.test>"));
    assert_non_null(strstr(text, "550 5.1.1 no such user"));
    assert_non_null(strstr(text, "connection refused"));
    free(text);

    char *fields = part_text(status);
    static const char *const want[] = {
        "Reporting-MTA: dns; mx.example.test\r\n",
        "X-Postern-Queue-ID: Q1234\r\n",
        "Arrival-Date: ",
        "\r\n\r\nFinal-Recipient: rfc822; bad@remote.test\r\nAction: failed\r\n"
        "Status: 5.1.1\r\nRemote-MTA: dns; mx.remote.test\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\nLast-Attempt-Date: ",
        "\r\n\r\nFinal-Recipient: rfc822; gone@remote.test\r\nAction: failed\r\n"
        "Status: 5.0.0\r\nDiagnostic-Code: X-Postern; connect to",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        print_message("field: %s\n", want[i]);
        assert_non_null(strstr(fields, want[i]));
    }
    assert_null(strstr(fields, "Original-Envelope-Id"));
    assert_null(strstr(fields, "Will-Retry-Until"));
    assert_int_equal(strncmp(fields, "Reporting-MTA:", 14), 0);
    free(fields);

    GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(orig));
    assert_string_equal(header(inner, "Subject"), "hello");
    assert_non_null(strstr(p.raw.data, "Content-Type: message/rfc822\r\n"
                                       "Content-Transfer-Encoding: 7bit\r\n\r\n" ORIGINAL
                                       "\r\n--"));
    parsed_free(&p);
}

/* The original part keeps its bytes: 8-bit text, line ends made CRLF. */
static void test_bounce_8bit_original(void **state)
{
    (void)state;
    static const char orig[] = "Subject: caf\xc3\xa9\nContent-Type: text/plain; charset=utf-8\n"
                               "\nna\xc3\xafve\nend";
    dsn_t d = base_dsn(DSN_FAILED, orig, sizeof orig - 1);
    d.envelope_id = "ENV-42";
    parsed_t p;
    build_and_parse(&d, &p);
    const char *expect = "Content-Transfer-Encoding: 8bit\r\n\r\n"
                         "Subject: caf\xc3\xa9\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         "\r\nna\xc3\xafve\r\nend\r\n--";
    assert_non_null(strstr(p.raw.data, expect));
    char *fields = part_text(g_mime_multipart_get_part(p.report, 1));
    assert_non_null(strstr(fields, "Original-Envelope-Id: ENV-42\r\n"));
    free(fields);
    parsed_free(&p);
}

/* Longer than the cap: the header fields only, as text/rfc822-headers. */
static void test_bounce_long_original(void **state)
{
    (void)state;
    buf_t orig;
    buf_init(&orig);
    buf_puts(&orig, "From: alice@example.test\r\nSubject: big\r\n\r\n");
    while (orig.len < DSN_ORIGINAL_MAX + 10)
        buf_puts(&orig, "01234567890123456789012345678901234567890123456789\r\n");
    dsn_t d = base_dsn(DSN_FAILED, orig.data, orig.len);
    parsed_t p;
    build_and_parse(&d, &p);
    GMimeObject *o = g_mime_multipart_get_part(p.report, 2);
    assert_true(part_is(o, "text", "rfc822-headers"));
    char *text = part_text(o);
    assert_string_equal(text, "From: alice@example.test\r\nSubject: big\r\n");
    free(text);
    assert_true(p.raw.len < DSN_ORIGINAL_MAX);

    /* A smaller cap: a short message is still whole. */
    parsed_free(&p);
    d.original = ORIGINAL;
    d.original_len = sizeof ORIGINAL - 1;
    d.original_max = 40;
    build_and_parse(&d, &p);
    o = g_mime_multipart_get_part(p.report, 2);
    assert_true(part_is(o, "text", "rfc822-headers"));
    text = part_text(o);
    /* Header fields cut at a line end within the cap. */
    assert_string_equal(text, "From: Alice <alice@example.test>\r\n");
    free(text);
    parsed_free(&p);
    buf_free(&orig);
}

static void test_delay_notice(void **state)
{
    (void)state;
    static const dsn_rcpt_t late[] = {
        { "late@remote.test", DSN_ACTION_DELAYED, "4.4.1", "dns; mx.remote.test",
          "smtp; 451 4.4.1 try later", 1700000000000 },
    };
    dsn_t d = base_dsn(DSN_DELAYED, ORIGINAL, sizeof ORIGINAL - 1);
    d.rcpts = late;
    d.nrcpts = 1;
    parsed_t p;
    build_and_parse(&d, &p);
    assert_string_equal(header(p.msg, "Subject"), "Delayed mail: still trying to deliver");
    GMimeObject *o = g_mime_multipart_get_part(p.report, 2);
    assert_true(part_is(o, "text", "rfc822-headers"));
    char *text = part_text(o);
    assert_null(strstr(text, "line one"));
    assert_non_null(strstr(text, "Subject: hello\r\n"));
    free(text);
    char *fields = part_text(g_mime_multipart_get_part(p.report, 1));
    assert_non_null(strstr(fields, "Action: delayed\r\nStatus: 4.4.1\r\n"));
    assert_non_null(strstr(fields, "Will-Retry-Until: "));
    free(fields);
    char *human = part_text(g_mime_multipart_get_part(p.report, 0));
    assert_non_null(strstr(human, "you do not need to send the\r\nmessage again"));
    free(human);
    parsed_free(&p);
}

/* Header-breaking text in a field stays on its line; no original: two parts. */
static void test_unsafe_text(void **state)
{
    (void)state;
    static const dsn_rcpt_t odd[] = {
        { "x@remote.test", DSN_ACTION_FAILED, "5.7.1", "dns; mx\r\nBcc: evil@x",
          "smtp; 550 5.7.1 bad\r\nX-Injected: yes \xff", 0 },
    };
    dsn_t d = base_dsn(DSN_FAILED, NULL, 0);
    d.rcpts = odd;
    d.nrcpts = 1;
    parsed_t p;
    build_and_parse(&d, &p);
    assert_int_equal(g_mime_multipart_get_count(p.report), 2);
    char *fields = part_text(g_mime_multipart_get_part(p.report, 1));
    assert_non_null(strstr(fields, "Remote-MTA: dns; mx  Bcc: evil@x\r\n"));
    assert_non_null(strstr(fields, "Diagnostic-Code: smtp; 550 5.7.1 bad  X-Injected: yes ?\r\n"));
    free(fields);
    parsed_free(&p);
}

static void test_unusable(void **state)
{
    (void)state;
    buf_t out;
    buf_init(&out);
    buf_puts(&out, "kept");
    dsn_t d = base_dsn(DSN_FAILED, NULL, 0);
    d.to = "";
    assert_int_equal(dsn_build(&d, &out), -1);
    d = base_dsn(DSN_FAILED, NULL, 0);
    d.nrcpts = 0;
    assert_int_equal(dsn_build(&d, &out), -1);
    d = base_dsn(DSN_FAILED, NULL, 0);
    d.reporting_mta = NULL;
    assert_int_equal(dsn_build(&d, &out), -1);
    assert_string_equal(out.data, "kept");
    buf_free(&out);
}

int main(void)
{
    g_mime_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounce_structure),
        cmocka_unit_test(test_bounce_8bit_original),
        cmocka_unit_test(test_bounce_long_original),
        cmocka_unit_test(test_delay_notice),
        cmocka_unit_test(test_unsafe_text),
        cmocka_unit_test(test_unusable),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    g_mime_shutdown();
    return rc;
}
