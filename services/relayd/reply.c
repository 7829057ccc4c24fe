#include "reply.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void reply_parser_init(reply_parser_t *p, size_t max_line, size_t max_lines)
{
    line_reader_init(&p->lr, max_line ? max_line : REPLY_LINE_MAX);
    p->max_lines = max_lines ? max_lines : REPLY_LINES_MAX;
    p->lines = 0;
    p->code = 0;
    p->status[0] = '\0';
    buf_init(&p->text);
}

void reply_parser_free(reply_parser_t *p)
{
    buf_free(&p->text);
    p->lines = 0;
}

/* Length of an RFC 3463 enhanced status code at s ("class.subject.detail", class 2, 4 or
 * 5 and the same as the reply's first digit, subject and detail 1-3 digits) followed by a
 * space or the end of the text; 0 when s does not start with one. */
static size_t status_len(const char *s, size_t len, int code)
{
    if (len < 5 || s[0] != '0' + code / 100 || s[1] != '.')
        return 0;
    size_t i = 2;
    for (int part = 0; part < 2; part++) {
        size_t start = i;
        while (i < len && i - start < 3 && isdigit((unsigned char)s[i]))
            i++;
        if (i == start || (i < len && isdigit((unsigned char)s[i])))
            return 0;
        if (part == 0) {
            if (i >= len || s[i] != '.')
                return 0;
            i++;
        }
    }
    return (i == len || s[i] == ' ') ? i : 0;
}

static int append_text(reply_parser_t *p, const char *s, size_t len)
{
    if (p->lines > 1 && buf_append(&p->text, "\n", 1) < 0)
        return -1;
    size_t at = p->text.len;
    if (buf_append(&p->text, s, len) < 0)
        return -1;
    for (size_t i = at; i < p->text.len; i++) {
        unsigned char ch = (unsigned char)p->text.data[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            p->text.data[i] = '?';
    }
    return 0;
}

static void reset_reply(reply_parser_t *p)
{
    p->lines = 0;
    p->code = 0;
    p->status[0] = '\0';
    buf_reset(&p->text);
}

/* One line of a reply; 1 = it was the last, 0 = more follow, -1 = error. */
static int parse_line(reply_parser_t *p, const char *s, size_t len, const char **error_r)
{
    /* RFC 5321 section 4.2: Reply-code = %x32-35 %x30-35 %x30-39 */
    if (len < 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '5' ||
        !isdigit((unsigned char)s[2])) {
        *error_r = "not an SMTP reply line";
        return -1;
    }
    int code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
    if (len > 3 && s[3] != ' ' && s[3] != '-') {
        *error_r = "no space or hyphen after the reply code";
        return -1;
    }
    if (p->lines > 0 && code != p->code) {
        *error_r = "lines of one reply with different codes";
        return -1;
    }
    if (++p->lines > p->max_lines) {
        *error_r = "too many lines in one reply";
        return -1;
    }
    bool last = len == 3 || s[3] == ' ';
    const char *text = len > 3 ? s + 4 : s + 3;
    size_t tlen = len > 3 ? len - 4 : 0;
    if (p->lines == 1) {
        p->code = code;
        size_t n = status_len(text, tlen, code);
        if (n > 0 && n < sizeof p->status) {
            memcpy(p->status, text, n);
            p->status[n] = '\0';
        }
    }
    size_t sl = strlen(p->status);
    if (sl && tlen >= sl && memcmp(text, p->status, sl) == 0 && (tlen == sl || text[sl] == ' ')) {
        text += sl;
        tlen -= sl;
        if (tlen) {
            text++;
            tlen--;
        }
    }
    if (append_text(p, text, tlen) < 0) {
        *error_r = "out of memory";
        return -1;
    }
    return last ? 1 : 0;
}

int reply_parse(reply_parser_t *p, buf_t *in, reply_t *r, const char **error_r)
{
    if (p->lines == 0 && p->code != 0)
        reset_reply(p); /* the previous call returned a reply */
    for (;;) {
        line_t l;
        int rc = line_read(&p->lr, in, &l);
        if (rc == 0)
            return 0;
        if (rc < 0) {
            *error_r = "reply line too long";
            return -1;
        }
        rc = parse_line(p, l.text, l.len, error_r);
        buf_consume(in, l.consumed);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            r->code = p->code;
            memcpy(r->status, p->status, sizeof r->status);
            r->text = p->text.data;
            r->lines = p->lines;
            p->lines = 0; /* the text stays until the next call */
            return 1;
        }
    }
}

static bool keyword_is(const char *kw, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(kw, name, len) == 0;
}

/* SIZE's parameter (RFC 1870 section 4): decimal digits; anything else is no maximum. */
static uint64_t size_param(const char *s, size_t len)
{
    char num[24];
    if (len == 0 || len >= sizeof num)
        return 0;
    memcpy(num, s, len);
    num[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)num[i]))
            return 0;
    return strtoull(num, NULL, 10);
}

void ehlo_caps_parse(const char *text, ehlo_caps_t *caps)
{
    memset(caps, 0, sizeof *caps);
    const char *line = strchr(text, '\n'); /* the first line is the server's name */
    while (line) {
        line++;
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        size_t kw = 0;
        while (kw < len && line[kw] != ' ')
            kw++;
        if (keyword_is(line, kw, "PIPELINING")) {
            caps->pipelining = true;
        } else if (keyword_is(line, kw, "SIZE")) {
            caps->size = true;
            if (kw < len)
                caps->size_max = size_param(line + kw + 1, len - kw - 1);
        } else if (keyword_is(line, kw, "8BITMIME")) {
            caps->eightbitmime = true;
        } else if (keyword_is(line, kw, "STARTTLS")) {
            caps->starttls = true;
        } else if (keyword_is(line, kw, "SMTPUTF8")) {
            caps->smtputf8 = true;
        } else if (keyword_is(line, kw, "ENHANCEDSTATUSCODES")) {
            caps->enhancedstatuscodes = true;
        }
        line = end;
    }
}
