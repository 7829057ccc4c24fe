/* lib/mail/mime: ENVELOPE, BODYSTRUCTURE and BODY of small messages, and where
 * BODY[section] lies (RFC 3501 sections 6.4.5, 7.4.2). The corpus of real-world messages
 * is checked against Dovecot in tests/e2e/test_mime_diff.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "mail/mime.h"

#define IN(s) s, sizeof(s) - 1

/* ---- mail_info_compute ------------------------------------------------------------------ */

typedef struct info_case {
    const char *name;
    const char *raw;
    size_t len;
    const char *envelope;      /* NULL: not checked */
    const char *bodystructure; /* NULL: not checked */
    const char *body;          /* NULL: not checked */
} info_case_t;

static const info_case_t info_cases[] = {
    { "plain, defaults",
      IN("From: A <a@x.org>\r\nSubject: hi\r\n\r\nbody\r\n"),
      "(NIL \"hi\" ((\"A\" NIL \"a\" \"x.org\")) ((\"A\" NIL \"a\" \"x.org\")) "
      "((\"A\" NIL \"a\" \"x.org\")) NIL NIL NIL NIL NIL)",
      "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1 NIL NIL NIL NIL)",
      "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 6 1)" },
    { "no header at all",
      IN("\r\nonly body"),
      "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)",
      "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 9 0 NIL NIL NIL NIL)", NULL },
    { "empty message", IN(""), "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)", NULL,
      "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)" },
    { "sender and reply-to given, encoded word kept, folded subject squeezed",
      IN("Subject: =?UTF-8?Q?a?=\r\n  b\r\nFrom: f@x\r\nSender: s@x\r\nReply-To: r@x\r\n"
         "To: g: m@x;\r\n\r\n"),
      "(NIL \"=?UTF-8?Q?a?= b\" ((NIL NIL \"f\" \"x\")) ((NIL NIL \"s\" \"x\")) ((NIL NIL \"r\" \"x\")) "
      "((NIL NIL \"g\" NIL)(NIL NIL \"m\" \"x\")(NIL NIL NIL NIL)) NIL NIL NIL NIL)", NULL, NULL },
    { "8-bit name becomes a literal, quotes escaped",
      IN("From: J\xc3\xbcrg <j@x>\r\nSubject: a\"b\\c\r\n\r\n"),
      "(NIL \"a\\\"b\\\\c\" (({5}\r\nJ\xc3\xbcrg NIL \"j\" \"x\")) (({5}\r\nJ\xc3\xbcrg NIL \"j\" \"x\")) "
      "(({5}\r\nJ\xc3\xbcrg NIL \"j\" \"x\")) NIL NIL NIL NIL NIL)",
      NULL, NULL },
    { "address without domain, comment as name, route",
      IN("To: bob (Bob B), <@r.x:c@d>\r\n\r\n"),
      "(NIL NIL NIL NIL NIL ((NIL NIL \"bob\" \"MISSING_DOMAIN\")(NIL \"@r.x\" \"c\" \"d\")) NIL NIL NIL NIL)",
      NULL, NULL },
    { "multipart with extension data",
      IN("Content-Type: multipart/mixed; boundary=b\r\nContent-Language: en\r\n\r\n"
         "--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-ID: <i>\r\n"
         "Content-Disposition: inline; filename=a.txt\r\n\r\nx\r\n"
         "--b\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
         "Content-Location: a.png\r\n\r\nAAAA\r\n--b--\r\n"),
      NULL,
      "((\"text\" \"plain\" (\"charset\" \"utf-8\") \"<i>\" NIL \"7bit\" 1 0 NIL (\"inline\" (\"filename\" \"a.txt\")) NIL NIL)"
      "(\"image\" \"png\" NIL NIL NIL \"base64\" 4 NIL NIL NIL \"a.png\") \"mixed\" (\"boundary\" \"b\") NIL (\"en\") NIL)",
      "((\"text\" \"plain\" (\"charset\" \"utf-8\") \"<i>\" NIL \"7bit\" 1 0)(\"image\" \"png\" NIL NIL NIL \"base64\" 4) \"mixed\")" },
    { "message/rfc822 inside",
      IN("Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nhello\r\n"),
      NULL,
      "(\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 22 (NIL \"in\" NIL NIL NIL NIL NIL NIL NIL NIL) "
      "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 7 1 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)",
      NULL },
    { "multipart without boundary: one empty part",
      IN("Content-Type: multipart/mixed\r\n\r\nstuff\r\n"), NULL, NULL,
      "((\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0) \"mixed\")" },
    { "RFC 2231 continuation joined",
      IN("Content-Type: application/x; a=1;\r\n name*0*=utf-8''x%20; name*1=y\r\n\r\n"), NULL,
      "(\"application\" \"x\" (\"a\" \"1\" \"name*\" \"UTF-8''x%20y\") NIL NIL \"7bit\" 0 NIL NIL NIL NIL)",
      NULL },
};

static void test_info_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof info_cases / sizeof info_cases[0]; i++) {
        const info_case_t *c = &info_cases[i];
        print_message("case: %s\n", c->name);
        /* A copy of exactly len bytes, so a read past the end shows under ASan. */
        char *raw = malloc(c->len ? c->len : 1);
        assert_non_null(raw);
        memcpy(raw, c->raw, c->len);
        mail_info_t info;
        assert_int_equal(mail_info_compute(raw, c->len, &info), 0);
        if (c->envelope)
            assert_string_equal(info.envelope, c->envelope);
        if (c->bodystructure)
            assert_string_equal(info.bodystructure, c->bodystructure);
        if (c->body)
            assert_string_equal(info.body, c->body);
        mail_info_free(&info);
        mail_info_free(&info); /* an emptied info is harmless */
        free(raw);
    }
    mail_info_free(NULL);
}

/* ---- mail_section ------------------------------------------------------------------------ */

static const char nested[] =
    "Subject: outer\r\n"
    "Content-Type: multipart/mixed; boundary=o\r\n"
    "\r\n"
    "preamble\r\n"
    "--o\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "part one\r\n"
    "--o\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "Subject: inner\r\n"
    "Received: x\r\n"
    "From: i@x\r\n"
    "Content-Type: multipart/alternative; boundary=i\r\n"
    "\r\n"
    "--i\r\n"
    "\r\n"
    "alt one\r\n"
    "--i\r\n"
    "Content-Type: text/html\r\n"
    "\r\n"
    "<p>alt two</p>\r\n"
    "--i--\r\n"
    "\r\n"
    "--o--\r\n"
    "epilogue\r\n";

static const char single[] = "From: a@x\r\nSubject: s\r\n\r\nline 1\r\nline 2\r\n";

typedef struct section_case {
    const char *name;
    const char *raw;
    const char *section;
    int rc;
    const char *expect; /* the bytes of the result (rc 0) */
} section_case_t;

static const section_case_t section_cases[] = {
    { "whole", single, "", 0, single },
    { "header", single, "HEADER", 0, "From: a@x\r\nSubject: s\r\n\r\n" },
    { "text", single, "text", 0, "line 1\r\nline 2\r\n" },
    { "1 of a single part is the body", single, "1", 0, "line 1\r\nline 2\r\n" },
    { "1.MIME of a single part is the header", single, "1.MIME", 0, "From: a@x\r\nSubject: s\r\n\r\n" },
    { "2 of a single part does not exist", single, "2", 1, NULL },
    { "fields", single, "HEADER.FIELDS (subject)", 0, "Subject: s\r\n\r\n" },
    { "fields, quoted name", single, "HEADER.FIELDS (\"From\")", 0, "From: a@x\r\n\r\n" },
    { "fields none match", single, "HEADER.FIELDS (X-Nothing)", 0, "\r\n" },
    { "fields not", single, "HEADER.FIELDS.NOT (From)", 0, "Subject: s\r\n\r\n" },
    { "part 1", nested, "1", 0, "part one" },
    { "part 1 MIME", nested, "1.MIME", 0, "Content-Type: text/plain\r\n\r\n" },
    { "part 2 is the whole embedded message", nested, "2", 0,
      "Subject: inner\r\nReceived: x\r\nFrom: i@x\r\n"
      "Content-Type: multipart/alternative; boundary=i\r\n\r\n--i\r\n\r\nalt one\r\n--i\r\n"
      "Content-Type: text/html\r\n\r\n<p>alt two</p>\r\n--i--\r\n" },
    { "2.HEADER", nested, "2.HEADER", 0,
      "Subject: inner\r\nReceived: x\r\nFrom: i@x\r\n"
      "Content-Type: multipart/alternative; boundary=i\r\n\r\n" },
    { "2.HEADER.FIELDS.NOT", nested, "2.HEADER.FIELDS.NOT (Received Content-Type)", 0,
      "Subject: inner\r\nFrom: i@x\r\n\r\n" },
    { "2.TEXT", nested, "2.TEXT", 0,
      "--i\r\n\r\nalt one\r\n--i\r\nContent-Type: text/html\r\n\r\n<p>alt two</p>\r\n--i--\r\n" },
    { "2.1 without headers", nested, "2.1", 0, "alt one" },
    { "2.1.MIME is the empty header", nested, "2.1.MIME", 0, "\r\n" },
    { "2.2", nested, "2.2", 0, "<p>alt two</p>" },
    { "2.2.MIME", nested, "2.2.MIME", 0, "Content-Type: text/html\r\n\r\n" },
    { "2.3 does not exist", nested, "2.3", 1, NULL },
    { "3 does not exist", nested, "3", 1, NULL },
    { "1.TEXT of a text part does not exist", nested, "1.TEXT", 1, NULL },
    { "top header", nested, "HEADER", 0,
      "Subject: outer\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n" },
    { "MIME without part", nested, "MIME", -1, NULL },
    { "zero part", nested, "0", -1, NULL },
    { "leading zero", nested, "01", -1, NULL },
    { "trailing dot", nested, "1.", -1, NULL },
    { "unknown keyword", nested, "1.BODY", -1, NULL },
    { "fields without list", nested, "HEADER.FIELDS", -1, NULL },
    { "fields empty list", nested, "HEADER.FIELDS ()", -1, NULL },
    { "fields unclosed", nested, "HEADER.FIELDS (From", -1, NULL },
    { "junk after", nested, "TEXT x", -1, NULL },
};

static void test_section_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof section_cases / sizeof section_cases[0]; i++) {
        const section_case_t *c = &section_cases[i];
        print_message("case: %s [%s]\n", c->name, c->section);
        size_t len = strlen(c->raw);
        char *raw = malloc(len);
        assert_non_null(raw);
        memcpy(raw, c->raw, len);
        size_t off = 99, n = 99;
        char *copy = (char *)1;
        int rc = mail_section(raw, len, c->section, &off, &n, &copy);
        assert_int_equal(rc, c->rc);
        if (rc == 0) {
            const char *got = copy ? copy : raw + off;
            if (!copy)
                assert_true(off + n <= len);
            assert_int_equal(n, strlen(c->expect));
            assert_memory_equal(got, c->expect, n);
        } else {
            assert_null(copy);
        }
        free(copy);
        free(raw);
    }
}

/* ---- mail_search_text ----------------------------------------------------------------- */

typedef struct search_case {
    const char *name;
    const char *raw;
    size_t len;
    const char *headers;
    const char *body;
} search_case_t;

static const search_case_t search_cases[] = {
    { "encoded-word subject, folded field, quoted-printable body",
      IN("From: =?iso-8859-1?q?J=FCrg?= <j@x>\r\nSubject: =?utf-8?q?caf=C3=A9_menu?=\r\n"
         "X-Long: one\r\n\ttwo\r\nContent-Type: text/plain; charset=utf-8\r\n"
         "Content-Transfer-Encoding: quoted-printable\r\n\r\ncr=C3=A8me br=C3=BB=\r\nl=C3=A9e\r\n"),
      "From: J\xc3\xbcrg <j@x>\nSubject: caf\xc3\xa9 menu\nX-Long: one\ttwo\n"
      "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n",
      "cr\xc3\xa8me br\xc3\xbbl\xc3\xa9" "e\r\n" },
    { "base64 body in Latin-1",
      IN("Subject: x\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
         "Content-Transfer-Encoding: base64\r\n\r\nZ3L8bmUgV2llc2U=\r\n"),
      "Subject: x\nContent-Type: text/plain; charset=iso-8859-1\n"
      "Content-Transfer-Encoding: base64\n",
      "gr\xc3\xbcne Wiese" },
    { "multipart: text parts joined, image skipped, attached message followed",
      IN("Subject: m\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
         "--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
         "--b\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         "Y2Fmw6k=\r\n"
         "--b\r\nContent-Type: text/html; charset=utf-8\r\n"
         "Content-Transfer-Encoding: base64\r\n\r\nPGI+Y2Fmw6k8L2I+\r\n"
         "--b\r\nContent-Type: message/rfc822\r\n\r\n"
         "Subject: =?utf-8?b?w6l0w6k=?=\r\n\r\ninner\r\n"
         "--b--\r\n"),
      "Subject: m\nContent-Type: multipart/mixed; boundary=b\n",
      "first\n<b>caf\xc3\xa9</b>\nSubject: \xc3\xa9t\xc3\xa9\ninner" },
    { "invalid UTF-8 dropped, 8-bit header kept",
      IN("Subject: caf\xc3\xa9\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nab\xff\r\n"),
      "Subject: caf\xc3\xa9\nContent-Type: text/plain; charset=utf-8\n",
      "ab\r\n" },
    { "unknown charset: invalid UTF-8 replaced",
      IN("Subject: s\r\nContent-Type: text/plain; charset=x-bogus\r\n\r\nab\xff\r\n"),
      "Subject: s\nContent-Type: text/plain; charset=x-bogus\n",
      "ab\xef\xbf\xbd\r\n" },
    { "empty message", IN(""), "", "" },
};

static void test_search_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof search_cases / sizeof search_cases[0]; i++) {
        const search_case_t *c = &search_cases[i];
        print_message("case: %s\n", c->name);
        char *raw = malloc(c->len + 1);
        assert_non_null(raw);
        memcpy(raw, c->raw, c->len);
        char *headers = NULL, *body = NULL;
        assert_int_equal(mail_search_text(raw, c->len, &headers, &body), 0);
        assert_string_equal(headers, c->headers);
        assert_string_equal(body, c->body);
        free(headers);
        free(body);
        free(raw);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info_cases),
        cmocka_unit_test(test_section_cases),
        cmocka_unit_test(test_search_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
