/* Byte-stuffing of multi-line responses (RFC 1939 section 3): every line that begins with
 * the termination octet "." gets one more in front, and the response ends with ".CRLF".
 * Messages are stored with CRLF line ends and go out otherwise unchanged, so a client
 * that removes the stuffing gets back exactly the stored bytes. The stuffer keeps its
 * state between pieces: feeding a message whole or byte by byte gives the same output. */
#include "pop3d.h"

#include <string.h>

void pop3_stuffer_init(pop3_stuffer_t *st, long body_lines)
{
    memset(st, 0, sizeof *st);
    st->body_left = body_lines < 0 ? -1 : body_lines;
    st->line_start = true;
}

/* A line has just ended (its LF sent): counts it for TOP. */
static void line_ended(pop3_stuffer_t *st, bool empty)
{
    st->line_start = true;
    st->line_len = 0;
    if (st->body_left < 0)
        return;
    if (!st->in_body) {
        if (empty) {
            st->in_body = true;
            if (st->body_left == 0)
                st->done = true;
        }
        return;
    }
    if (--st->body_left == 0)
        st->done = true;
}

int pop3_stuffer_feed(pop3_stuffer_t *st, const char *data, size_t len, buf_t *out)
{
    while (len > 0 && !st->done) {
        if (st->line_start && data[0] == '.' && buf_append(out, ".", 1) < 0)
            return -1;
        const char *lf = memchr(data, '\n', len);
        size_t n = lf ? (size_t)(lf - data) + 1 : len;
        if (buf_append(out, data, n) < 0)
            return -1;
        st->sent_any = true;
        if (lf) {
            /* The line's content is what came before the LF, in this piece and earlier. */
            size_t content = st->line_len + n - 1;
            char before_lf = n >= 2 ? data[n - 2] : st->last;
            line_ended(st, content == 0 || (content == 1 && before_lf == '\r'));
        } else {
            st->line_start = false;
            st->line_len += n;
        }
        st->last = data[n - 1];
        data += n;
        len -= n;
    }
    return 0;
}

int pop3_stuffer_end(pop3_stuffer_t *st, buf_t *out)
{
    if (st->sent_any && !st->line_start) {
        const char *eol = st->last == '\r' ? "\n" : "\r\n";
        if (buf_puts(out, eol) < 0)
            return -1;
    }
    return buf_puts(out, ".\r\n");
}
