/* A message as the store keeps it and IMAP and relayd show it: lib/mail/mime.c computes its
 * ENVELOPE, BODYSTRUCTURE and BODY (mail_info_compute, at delivery), hands out its sections
 * (mail_section, FETCH BODY[...]) and its decoded text (mail_search_text, for SEARCH), and
 * lib/mail/dsn.c quotes it in a bounce or a delay notice.
 *
 * Input: the raw message. When it starts with "#S ", the rest of its first line is the
 * section asked for (as FETCH BODY[...] gives it), besides two of a fixed list; when it
 * starts with "#D ", a bounce is built with the original cut to a few hundred bytes.
 *
 * Checked: the IMAP strings are NUL-terminated and their literals ({n} CRLF) have their n
 * bytes; a section range lies inside the message; the search text is valid UTF-8; a DSN is
 * built for a usable notice and ends with CRLF. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "mail/dsn.h"
#include "mail/mime.h"

static bool utf8_ok(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                                : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (n == 0 || i + n > len)
            return false;
        for (size_t k = 1; k < n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        i += n;
    }
    return true;
}

/* Literals inside IMAP syntax carry exactly the bytes they announce; quoted strings end. */
static void check_imap(const char *s)
{
    if (!s)
        abort();
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '"') {
            for (i++; i < len && s[i] != '"'; i++) {
                if (s[i] == '\r' || s[i] == '\n')
                    abort();
                if (s[i] == '\\')
                    i++;
            }
            if (i >= len)
                abort(); /* unterminated quoted string */
        } else if (s[i] == '{') {
            char *end;
            size_t n = strtoul(s + i + 1, &end, 10);
            if (end == s + i + 1 || end[0] != '}' || end[1] != '\r' || end[2] != '\n')
                abort();
            size_t at = (size_t)(end + 3 - s);
            if (at + n > len)
                abort();
            i = at + n - 1;
        }
    }
}

static void section(const char *raw, size_t len, const char *sec)
{
    size_t off = 0, n = 0;
    char *copy = NULL;
    int rc = mail_section(raw, len, sec, &off, &n, &copy);
    if (rc == 0) {
        if (!copy && (off > len || n > len - off))
            abort();
        free(copy);
    } else if (rc != 1 && rc != -1) {
        abort();
    } else if (copy) {
        abort();
    }
}

static void dsn(const char *raw, size_t len, size_t original_max, dsn_kind_t kind)
{
    dsn_rcpt_t rcpts[2] = {
        { .address = "bob@example.net", .action = DSN_ACTION_FAILED, .status = "5.1.1",
          .remote_mta = "dns; mx.example.net", .diagnostic = "smtp; 550 5.1.1 no such user",
          .last_attempt_ms = 1700000000000 },
        { .address = "carol@example.org", .action = DSN_ACTION_DELAYED },
    };
    dsn_t d = {
        .kind = kind,
        .reporting_mta = "mx.example.com",
        .from = "MAILER-DAEMON@mx.example.com",
        .to = "alice@example.com",
        .queue_id = "q1",
        .arrival_ms = 1700000000000,
        .retry_until_ms = 1700400000000,
        .now_ms = 1700000100000,
        .rcpts = rcpts,
        .nrcpts = 2,
        .original = raw,
        .original_len = len,
        .original_max = original_max,
    };
    buf_t out;
    buf_init(&out);
    if (dsn_build(&d, &out) < 0 || out.len < 2 || memcmp(out.data + out.len - 2, "\r\n", 2))
        abort();
    buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const sections[] = {
        "", "HEADER", "TEXT", "1", "2", "1.MIME", "1.2", "2.1.TEXT", "2.HEADER",
        "HEADER.FIELDS (From Subject Content-Type)", "1.HEADER.FIELDS.NOT (Received)",
        "3.2.1.MIME",
    };
    if (size > 256 * 1024)
        return 0;
    /* A copy of exactly the message, so that ASan sees any read past its end. */
    char *raw = malloc(size ? size : 1);
    if (!raw)
        return 0;
    memcpy(raw, data, size);
    char asked[256] = "";
    bool bounce = false;
    if (size >= 3 && memcmp(raw, "#S ", 3) == 0) {
        const char *lf = memchr(raw + 3, '\n', size - 3);
        size_t n = lf ? (size_t)(lf - raw - 3) : size - 3;
        if (n < sizeof asked) {
            memcpy(asked, raw + 3, n);
            asked[n] = '\0';
        }
    } else if (size >= 3 && memcmp(raw, "#D ", 3) == 0) {
        bounce = true;
    }

    mail_info_t info;
    if (mail_info_compute(raw, size, &info) == 0) {
        check_imap(info.envelope);
        check_imap(info.bodystructure);
        check_imap(info.body);
        if (info.envelope[0] != '(' || info.bodystructure[0] != '(' || info.body[0] != '(')
            abort();
    }
    mail_info_free(&info);
    mail_info_free(&info);

    /* Each section parses the message again: two of the list per input. */
    size_t nsec = sizeof sections / sizeof sections[0];
    section(raw, size, sections[size % nsec]);
    section(raw, size, sections[(size / nsec + 1) % nsec]);
    if (asked[0] && !memchr(asked, '\0', strlen(asked)))
        section(raw, size, asked);

    char *headers = NULL, *body = NULL;
    if (mail_search_text(raw, size, &headers, &body) == 0) {
        if (!headers || !body || !utf8_ok((const unsigned char *)headers, strlen(headers)) ||
            !utf8_ok((const unsigned char *)body, strlen(body)))
            abort();
    }
    free(headers);
    free(body);

    if (bounce) {
        dsn(raw, size, 300, DSN_FAILED);
        dsn(raw, size, 0, DSN_DELAYED);
    }
    free(raw);
    return 0;
}
