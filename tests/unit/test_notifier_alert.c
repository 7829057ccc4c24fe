/* notifier, alert.c: checking Alerts from the bus and composing the message. Tables of
 * alerts, each composed and checked for what every alert mail must hold: CRLF line ends
 * and no bare CR or LF, short lines, exactly the expected headers, once each, and no
 * header a bus value could have smuggled in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "notifier.h"

#define NOW_MS 1795820969000LL /* 2026-11-27 23:09:29 UTC */

/* ---- helpers ----------------------------------------------------------------------- */

static Postern__Alert pb_alert(const char *cause, const char *user, char **addrs, size_t naddrs,
                               const char *limit, const char *action, const char *detail,
                               bool owner)
{
    Postern__Alert a = POSTERN__ALERT__INIT;
    a.cause = (char *)cause;
    a.user = (char *)user;
    a.client_addrs = addrs;
    a.n_client_addrs = naddrs;
    a.limit = (char *)limit;
    a.action = (char *)action;
    a.detail = (char *)detail;
    a.notify_owner = owner;
    a.time_ms = NOW_MS - 5000;
    return a;
}

static const char *const allowed_headers[] = {
    "Received", "Date", "From", "To", "Subject", "Message-ID", "Auto-Submitted",
    "X-Auto-Response-Suppress", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
};
#define NALLOWED (sizeof allowed_headers / sizeof allowed_headers[0])

/* The value of header name in msg (unfolded, without the trailing CRLF), or NULL. */
static char *header_value(const char *msg, const char *name)
{
    size_t nlen = strlen(name);
    const char *p = msg;
    while (*p && !(p[0] == '\r' && p[1] == '\n')) {
        const char *eol = strstr(p, "\r\n");
        assert_non_null(eol);
        if (strncmp(p, name, nlen) == 0 && p[nlen] == ':') {
            char *v = calloc(1, 4096);
            const char *q = p + nlen + 1;
            size_t n = 0;
            for (;;) {
                const char *e = strstr(q, "\r\n");
                memcpy(v + n, q, (size_t)(e - q));
                n += (size_t)(e - q);
                q = e + 2;
                if (*q != ' ' && *q != '\t')
                    break;
            }
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

/* Everything a composed alert must satisfy, whatever went in. */
static void check_wire_form(const char *msg, size_t len)
{
    /* CRLF everywhere, nothing else ends a line, no NUL, lines of at most 998 bytes. */
    assert_int_equal(strlen(msg), len);
    size_t line = 0;
    for (size_t i = 0; i < len; i++) {
        if (msg[i] == '\r') {
            assert_true(i + 1 < len && msg[i + 1] == '\n');
            assert_true(line <= 998);
            line = 0;
            i++;
            continue;
        }
        assert_true(msg[i] != '\n'); /* a bare LF */
        line++;
    }
    assert_int_equal(line, 0); /* ends with CRLF */

    /* The header section: known names only, each once, continuation lines folded. */
    int seen[NALLOWED] = { 0 };
    const char *p = msg;
    while (!(p[0] == '\r' && p[1] == '\n')) {
        const char *eol = strstr(p, "\r\n");
        if (p[0] == ' ' || p[0] == '\t') {
            p = eol + 2;
            continue;
        }
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        assert_non_null(colon);
        bool known = false;
        for (size_t i = 0; i < NALLOWED; i++)
            if (strlen(allowed_headers[i]) == (size_t)(colon - p) &&
                strncmp(p, allowed_headers[i], (size_t)(colon - p)) == 0) {
                seen[i]++;
                known = true;
            }
        if (!known)
            fail_msg("unexpected header line: %.*s", (int)(eol - p), p);
        p = eol + 2;
    }
    for (size_t i = 0; i < NALLOWED; i++)
        if (seen[i] != 1)
            fail_msg("header %s appears %d times", allowed_headers[i], seen[i]);

    char *v = header_value(msg, "Auto-Submitted");
    assert_string_equal(v, " auto-generated");
    free(v);
    v = header_value(msg, "MIME-Version");
    assert_string_equal(v, " 1.0");
    free(v);
    v = header_value(msg, "Content-Type");
    assert_string_equal(v, " text/plain; charset=utf-8");
    free(v);
    v = header_value(msg, "Message-ID");
    assert_non_null(strstr(v, "@mail.example.test>"));
    assert_true(v[1] == '<');
    free(v);
    v = header_value(msg, "Date");
    assert_string_equal(v, " Fri, 27 Nov 2026 23:09:29 +0000");
    free(v);

    /* No line of the body looks like a header a value could have injected. */
    assert_null(strstr(msg, "\r\nBcc:"));
    assert_null(strstr(msg, "\r\nX-Evil:"));
}

static char *compose(const ntf_alert_t *a, const char *const *to, size_t nto, bool owner)
{
    ntf_mail_t m = {
        .from = "postmaster@example.test",
        .to = to,
        .nto = nto,
        .owner_told = owner,
        .hostname = "mail.example.test",
        .queue_id = "B7GX2KQ9LMNP",
        .now = (time_t)(NOW_MS / 1000),
        .interval_s = 3600,
    };
    buf_t out;
    buf_init(&out);
    assert_int_equal(ntf_compose(a, &m, &out), 0);
    check_wire_form(out.data, out.len);
    char *copy = strdup(out.data);
    buf_free(&out);
    return copy;
}

/* ---- composition, table-driven ----------------------------------------------------- */

typedef struct compose_case {
    const char *name;
    const char *cause, *user;
    const char *addrs[4];
    const char *limit, *action, *detail;
    bool owner;
    const char *subject;       /* the Subject: header, exactly */
    const char *must[6];       /* in the message */
    const char *must_not[3];   /* nowhere in the message */
    uint32_t interval_s;       /* Alert.interval_s */
} compose_case_t;

static const compose_case_t compose_cases[] = {
    { "hamr throttle", "hamr", "alice@example.test", { "192.0.2.7", "2001:db8::5" },
      "100 messages per 3600 s (domain level)", "throttle", "Sent 100 messages in 60 s.",
      false, " [Postern] HAMR: alice@example.test throttled",
      { "Account:   alice@example.test\r\n", "Limit:     100 messages per 3600 s (domain level)",
        "Action:    throttle", "When:      2026-11-27 23:09:24 UTC\r\n",
        "Clients:   192.0.2.7, 2001:db8::5\r\n", "mailctl hamr show --user alice@example.test" },
      { "hamr enable", "owner was told", NULL }, 0 },
    { "hamr disable, owner told", "hamr", "Bob@Example.TEST", { "198.51.100.1" },
      "3 messages per 60 s (user level)", "disable", "", true,
      " [Postern] HAMR: bob@example.test disabled",
      { "mailctl hamr enable --user bob@example.test\r\n", "Client:    198.51.100.1\r\n",
        "The account's owner was told too.", "550 5.7.1",
        "Limit:     3 messages per 60 s (user level)\r\nInterval:  60 s (the limit counts what "
        "happened in the last 60 seconds)\r\n", NULL },
      { NULL }, 60 },
    { "harvest block", "harvest", "", { "203.0.113.9" }, "10 failed logins in 600 s (imap)",
      "block", "10 failures for 7 accounts", false,
      " [Postern] Harvesting: 203.0.113.9 blocked",
      { "Address:   203.0.113.9\r\n", "mailctl harvest unblock 203.0.113.9\r\n",
        "mailctl harvest exempt add CIDR", NULL },
      { "Client:", "Account:", "Interval:" }, 0 },
    { "harvest on an account from many addresses", "harvest", "carol@example.test", { NULL },
      "50 failed logins in 600 s", "delay", "", false,
      " [Postern] Harvesting: carol@example.test slowed down",
      { "Account:   carol@example.test\r\n", "mailctl user passwd carol@example.test",
        "password checks are slowed down", NULL },
      { "harvest unblock", "Client", NULL }, 0 },
    { "unknown action word", "harvest", "", { "192.0.2.5/32" }, "", "tarpit", "", false,
      " [Postern] Harvesting: 192.0.2.5/32 tarpit",
      { "Action:    tarpit\r\n", "mailctl harvest unblock 192.0.2.5/32", NULL },
      { "Limit:", NULL }, 0 },
    { "CR and LF in every free text", "hamr", "dave@example.test", { "192.0.2.1" },
      "100\r\nBcc: evil@attacker.example", "throttle\r\nX-Evil: 1",
      "line one\r\nBcc: evil@attacker.example\r\n\r\nX-Evil: yes\n.\r\nQUIT", false,
      " [Postern] HAMR: dave@example.test throttle x-evil: 1",
      { "line one Bcc: evil@attacker.example X-Evil: yes . QUIT", NULL },
      { "\r\n.\r\n", NULL }, 0 },
    { "control characters, bidi overrides, invalid UTF-8", "hamr", "erin@example.test",
      { NULL }, "ten \x1b[31mred\x1b[0m", "disable",
      "caf\xc3\xa9 \xe2\x80\xae\x65vil \xff\xfe tab\there \xe2\x80\xa8next", false,
      " [Postern] HAMR: erin@example.test disabled",
      { "ten [31mred [0m", "caf\xc3\xa9 ?evil ?? tab here next", "8bit", NULL },
      { "\x1b", "\xe2\x80\xae", NULL }, 0 },
};

static void test_compose_table(void **state)
{
    (void)state;
    static const char *const to[] = { "admin@example.test", "ops@example.org" };
    for (size_t i = 0; i < sizeof compose_cases / sizeof compose_cases[0]; i++) {
        const compose_case_t *c = &compose_cases[i];
        char *addrs[4];
        size_t naddrs = 0;
        while (naddrs < 4 && c->addrs[naddrs]) {
            addrs[naddrs] = (char *)c->addrs[naddrs];
            naddrs++;
        }
        Postern__Alert pb =
            pb_alert(c->cause, c->user, addrs, naddrs, c->limit, c->action, c->detail, c->owner);
        pb.interval_s = c->interval_s;
        ntf_alert_t a;
        char why[128];
        if (ntf_alert_from_pb(&pb, NOW_MS, &a, why, sizeof why) != 0)
            fail_msg("%s: refused: %s", c->name, why);
        char *msg = compose(&a, to, 2, c->owner);
        char *subject = header_value(msg, "Subject");
        if (strcmp(subject, c->subject) != 0)
            fail_msg("%s: Subject:%s, expected%s", c->name, subject, c->subject);
        for (size_t k = 0; k < 6 && c->must[k]; k++)
            if (!strstr(msg, c->must[k]))
                fail_msg("%s: missing '%s' in:\n%s", c->name, c->must[k], msg);
        for (size_t k = 0; k < 3 && c->must_not[k]; k++)
            if (strstr(msg, c->must_not[k]))
                fail_msg("%s: unexpected '%s' in:\n%s", c->name, c->must_not[k], msg);
        char *toh = header_value(msg, "To");
        assert_string_equal(toh, " admin@example.test, ops@example.org");
        free(toh);
        free(subject);
        free(msg);
    }
}

static void test_compose_long_values_and_many_recipients(void **state)
{
    (void)state;
    /* A detail without a single space, far longer than a line. */
    char detail[NTF_DETAIL_MAX + 500];
    memset(detail, 'x', sizeof detail - 1);
    detail[sizeof detail - 1] = '\0';
    char *addrs[40];
    char addr_text[40][32];
    for (int i = 0; i < 40; i++) {
        snprintf(addr_text[i], sizeof addr_text[i], "2001:db8::%x", i + 1);
        addrs[i] = addr_text[i];
    }
    Postern__Alert pb = pb_alert("harvest", "", addrs, 40, "limit", "block", detail, false);
    ntf_alert_t a;
    char why[128];
    assert_int_equal(ntf_alert_from_pb(&pb, NOW_MS, &a, why, sizeof why), 0);
    assert_int_equal(a.nclients, NTF_CLIENTS_MAX);
    assert_int_equal(a.clients_more, 40 - NTF_CLIENTS_MAX);
    assert_int_equal(strlen(a.detail), NTF_DETAIL_MAX);

    const char *to[30];
    char to_text[30][64];
    for (int i = 0; i < 30; i++) {
        snprintf(to_text[i], sizeof to_text[i], "administrator-number-%02d@example.test", i);
        to[i] = to_text[i];
    }
    char *msg = compose(&a, to, 30, false);
    assert_non_null(strstr(msg, "and 24 more"));
    char *toh = header_value(msg, "To");
    assert_non_null(strstr(toh, "administrator-number-29@example.test"));
    free(toh);
    free(msg);

    /* No recipient at all still makes a valid message. */
    msg = compose(&a, NULL, 0, false);
    toh = header_value(msg, "To");
    assert_string_equal(toh, " undisclosed-recipients:;");
    free(toh);
    free(msg);
}

/* ---- checking Alerts --------------------------------------------------------------- */

typedef struct check_case {
    const char *name;
    const char *cause, *user;
    const char *addrs[3];
    int64_t time_ms;
    int rc;
    const char *subject; /* when rc is 0 */
    size_t nclients;
} check_case_t;

static const check_case_t check_cases[] = {
    { "hamr by user", "hamr", "Alice@Example.test", { "192.0.2.1" }, NOW_MS, 0,
      "alice@example.test", 1 },
    { "harvest by first address", "harvest", "alice@example.test",
      { "bogus", "2001:DB8::/64", "192.0.2.1" }, NOW_MS, 0, "2001:db8::/64", 2 },
    { "duplicates once", "harvest", "", { "192.0.2.1", "192.0.2.1", "192.0.2.2" }, 0, 0,
      "192.0.2.1", 2 },
    { "harvest by user", "harvest", "bob@example.test", { NULL }, NOW_MS, 0,
      "bob@example.test", 0 },
    { "unknown cause", "spam", "alice@example.test", { NULL }, NOW_MS, -1, NULL, 0 },
    { "empty cause", "", "alice@example.test", { NULL }, NOW_MS, -1, NULL, 0 },
    { "hamr without user", "hamr", "", { "192.0.2.1" }, NOW_MS, -1, NULL, 0 },
    { "user with CRLF", "hamr", "a@b.example\r\nBcc: x@y.example", { NULL }, NOW_MS, -1,
      NULL, 0 },
    { "user with space", "hamr", "a b@example.test", { NULL }, NOW_MS, -1, NULL, 0 },
    { "user with angle brackets", "hamr", "a@example.test>, <x@y", { NULL }, NOW_MS, -1,
      NULL, 0 },
    { "harvest, no valid address, no user", "harvest", "", { "192.0.2.1\r\nX: y" }, NOW_MS,
      -1, NULL, 0 },
};

static void test_alert_checks(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof check_cases / sizeof check_cases[0]; i++) {
        const check_case_t *c = &check_cases[i];
        char *addrs[3];
        size_t n = 0;
        while (n < 3 && c->addrs[n]) {
            addrs[n] = (char *)c->addrs[n];
            n++;
        }
        Postern__Alert pb = pb_alert(c->cause, c->user, addrs, n, "", "", "", false);
        pb.time_ms = c->time_ms;
        ntf_alert_t a;
        char why[128] = "";
        int rc = ntf_alert_from_pb(&pb, NOW_MS, &a, why, sizeof why);
        if (rc != c->rc)
            fail_msg("%s: rc %d, expected %d (%s)", c->name, rc, c->rc, why);
        if (rc != 0) {
            assert_true(why[0] != '\0');
            continue;
        }
        if (strcmp(a.subject, c->subject) != 0)
            fail_msg("%s: subject %s, expected %s", c->name, a.subject, c->subject);
        assert_int_equal(a.nclients, c->nclients);
        assert_true(a.time_ms > 0);
    }
}

static void test_alert_time_sanity(void **state)
{
    (void)state;
    Postern__Alert pb = pb_alert("hamr", "a@example.test", NULL, 0, "", "", "", true);
    ntf_alert_t a;
    char why[64];
    pb.time_ms = NOW_MS + 2 * 86400000LL; /* from the future */
    assert_int_equal(ntf_alert_from_pb(&pb, NOW_MS, &a, why, sizeof why), 0);
    assert_true(a.time_ms == NOW_MS);
    pb.time_ms = -5;
    assert_int_equal(ntf_alert_from_pb(&pb, NOW_MS, &a, why, sizeof why), 0);
    assert_true(a.time_ms == NOW_MS);
    pb.time_ms = NOW_MS - 60000;
    assert_int_equal(ntf_alert_from_pb(&pb, NOW_MS, &a, why, sizeof why), 0);
    assert_true(a.time_ms == NOW_MS - 60000);
    assert_true(a.notify_owner);
}

/* ---- cleaning and addresses -------------------------------------------------------- */

typedef struct clean_case {
    const char *in;
    size_t dst_len;
    bool ascii;
    const char *out;
} clean_case_t;

static const clean_case_t clean_cases[] = {
    { "plain text", 64, false, "plain text" },
    { "  lead and trail  ", 64, false, "lead and trail" },
    { "a\r\nb\rc\nd\te", 64, false, "a b c d e" },
    { "a\r\n\r\n\r\nb", 64, false, "a b" },
    { "nul\x01" "del\x7f" "end", 64, false, "nul del end" },
    { "c1 \xc2\x85 nel", 64, false, "c1 nel" },
    { "ls\xe2\x80\xa8ps\xe2\x80\xa9", 64, false, "ls ps" },
    { "rlo \xe2\x80\xae fsi \xe2\x81\xa8", 64, false, "rlo ? fsi ?" },
    { "bad \xff \xc0\xaf \xed\xa0\x80 end", 64, false, "bad ? ?? ??? end" },
    { "caf\xc3\xa9", 64, false, "caf\xc3\xa9" },
    { "caf\xc3\xa9", 64, true, "caf?" },
    { "caf\xc3\xa9", 5, false, "caf" }, /* é does not fit: never cut in half */
    { "abcdef", 4, false, "abc" },
    { "", 8, false, "" },
};

static void test_clean(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof clean_cases / sizeof clean_cases[0]; i++) {
        const clean_case_t *c = &clean_cases[i];
        char out[64];
        ntf_clean(out, c->dst_len, c->in, c->ascii);
        if (strcmp(out, c->out) != 0)
            fail_msg("case %zu: '%s', expected '%s'", i, out, c->out);
    }
    char out[8];
    ntf_clean(out, sizeof out, NULL, false);
    assert_string_equal(out, "");
}

static void test_address_ok(void **state)
{
    (void)state;
    static const struct {
        const char *a;
        bool ok;
    } cases[] = {
        { "admin@example.test", true },
        { "a.b+c@sub.example.test", true },
        { "no-at.example.test", false },
        { "@example.test", false },
        { "a@", false },
        { "a@b@c", false },
        { "a b@example.test", false },
        { "a@example.test\r\nBcc: x@y", false },
        { "\"q\"@example.test", false },
        { "a@example.test>", false },
        { "a,b@example.test", false },
        { "a@[192.0.2.1]", false },
        { "caf\xc3\xa9@example.test", false },
        { "", false },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (ntf_address_ok(cases[i].a) != cases[i].ok)
            fail_msg("'%s': expected %s", cases[i].a, cases[i].ok ? "ok" : "refused");
}

static void test_queue_id(void **state)
{
    (void)state;
    char a[13], b[13];
    ntf_queue_id(a, sizeof a);
    ntf_queue_id(b, sizeof b);
    assert_int_equal(strlen(a), 12);
    assert_int_equal(strspn(a, "0123456789BCDFGHJKLMNPQRSTVWXZ"), 12);
    assert_string_not_equal(a, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compose_table),
        cmocka_unit_test(test_compose_long_values_and_many_recipients),
        cmocka_unit_test(test_alert_checks),
        cmocka_unit_test(test_alert_time_sanity),
        cmocka_unit_test(test_clean),
        cmocka_unit_test(test_address_ok),
        cmocka_unit_test(test_queue_id),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
