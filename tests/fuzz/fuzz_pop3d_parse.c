/* POP3 command lines and message numbers (services/pop3d/parse.c), and the dot-stuffing of
 * multi-line responses (services/pop3d/stuff.c) over bytes of a stored message.
 *
 * Input: byte 0 = the line reader's flags for the command (bit 0 LINE_BARE_LF, bit 1
 * LINE_NUL), byte 1 = TOP's line count (255: RETR, the whole message), byte 2 = a seed for
 * the piece sizes the message is stuffed in; the rest up to the first LF is the command line,
 * and the whole rest is also the message.
 *
 * Checked: a parsed command has a keyword of 3 or 4 upper-case letters and at most
 * POP3_ARGS_MAX non-empty arguments without spaces; a number has at most 9 digits; stuffing
 * whole and in pieces gives the same bytes; for RETR, removing the stuffing gives back the
 * message (with its last line ended), and only the final line is ".". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/line.h"
#include "pop3d.h"

static pop3_request_t req;

static void check_command(const uint8_t *data, size_t size, unsigned flags)
{
    const uint8_t *lf = memchr(data, '\n', size);
    size_t len = lf ? (size_t)(lf - data) : size;
    if (len > POP3_AUTH_LINE_MAX)
        len = POP3_AUTH_LINE_MAX;
    char *line = malloc(len + 1);
    if (!line)
        abort();
    memcpy(line, data, len);
    line[len] = '\0';
    if (memchr(line, '\0', len))
        flags |= LINE_NUL;
    const char *err = NULL;
    if (pop3_parse(line, len, flags, &req, &err) == 0) {
        size_t k = strlen(req.keyword);
        if (k < 3 || k > 4 || req.argc < 0 || req.argc > POP3_ARGS_MAX || !req.rest ||
            req.rest < line || req.rest > line + len)
            abort();
        for (size_t i = 0; i < k; i++)
            if (req.keyword[i] < 'A' || req.keyword[i] > 'Z')
                abort();
        for (int i = 0; i < req.argc; i++) {
            if (!*req.argv[i] || strchr(req.argv[i], ' '))
                abort();
            unsigned long n;
            if (pop3_parse_number(req.argv[i], &n) == 0 && n > 999999999UL)
                abort();
        }
    } else if (!err || !*err) {
        abort();
    }
    free(line);
}

static void stuff(pop3_stuffer_t *st, long lines, const char *msg, size_t len, unsigned seed,
                  buf_t *out)
{
    pop3_stuffer_init(st, lines);
    size_t pos = 0;
    while (pos < len) {
        size_t piece = seed ? 1 + (seed >> (pos % 5)) % 9 : len;
        if (piece > len - pos)
            piece = len - pos;
        if (pop3_stuffer_feed(st, msg + pos, piece, out) < 0)
            abort();
        pos += piece;
    }
    if (pop3_stuffer_end(st, out) < 0)
        abort();
}

static void check_stuffing(const char *msg, size_t len, long lines, unsigned seed)
{
    pop3_stuffer_t a, b;
    buf_t whole, pieces, back;
    buf_init(&whole);
    buf_init(&pieces);
    buf_init(&back);
    stuff(&a, lines, msg, len, 0, &whole);
    stuff(&b, lines, msg, len, seed | 1u, &pieces);
    if (whole.len != pieces.len || memcmp(whole.data, pieces.data, whole.len) != 0)
        abort();
    if (whole.len < 3 || memcmp(whole.data + whole.len - 3, ".\r\n", 3) != 0)
        abort();
    /* Unstuff: each line loses one leading '.'; the terminator is the only "." line. */
    size_t end = whole.len - 3, p = 0;
    if (end > 0 && whole.data[end - 1] != '\n')
        abort(); /* the terminator starts a line */
    while (p < end) {
        const char *lf = memchr(whole.data + p, '\n', end - p);
        size_t n = lf ? (size_t)(lf - (whole.data + p)) + 1 : end - p;
        const char *l = whole.data + p;
        if (l[0] == '.') {
            if (n == 1 || (n == 2 && l[1] == '\n') || (n == 3 && l[1] == '\r' && l[2] == '\n'))
                abort(); /* ".CRLF" before the end */
            if (n < 2 || l[1] != '.')
                abort(); /* a line starting with '.' must have been stuffed */
            l++, n--;
        }
        if (buf_append(&back, l, n) < 0)
            abort();
        p += n + (l != whole.data + p);
    }
    if (lines < 0) {
        /* RETR: the message, its last line ended with CRLF (LF after a lone CR). */
        if (back.len < len || memcmp(back.data, msg, len) != 0)
            abort();
        size_t extra = back.len - len;
        if (len == 0 ? extra != 0
                     : msg[len - 1] == '\n' ? extra != 0
                     : msg[len - 1] == '\r' ? extra != 1
                                            : extra != 2)
            abort();
    } else if (back.len > len + 2 || memcmp(back.data, msg, back.len < len ? back.len : len)) {
        abort(); /* TOP: a prefix of the message */
    }
    buf_free(&whole);
    buf_free(&pieces);
    buf_free(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    unsigned flags = (data[0] & 1 ? LINE_BARE_LF : 0) | (data[0] & 2 ? LINE_NUL : 0);
    long lines = data[1] == 255 ? -1 : data[1];
    unsigned seed = data[2];
    data += 3;
    size -= 3;
    check_command(data, size, flags);
    check_stuffing((const char *)data, size, lines, seed);
    return 0;
}
