/* The line reader (lib/base/line.c) fed the same bytes twice: whole, and in pieces whose
 * sizes the input chooses. Both must give the same lines, flags and too-long reports
 * (line.h: a long line is reported once "even when it arrives byte by byte"), and every
 * line must keep the contract: no LF inside, NUL-terminated, shorter than the cap.
 *
 * Input: byte 0 = the cap (1..256), byte 1 = a seed for the piece sizes, the rest = the
 * stream. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/line.h"

#define MAX_EVENTS 4096

typedef struct event {
    int rc;         /* 1 or -1 */
    size_t off;     /* a line: where its text starts in the stream */
    size_t len;
    unsigned flags;
} event_t;

typedef struct run {
    event_t ev[MAX_EVENTS];
    size_t n;
    size_t left;    /* bytes left in the buffer at the end */
} run_t;

static void check_line(const line_reader_t *r, const buf_t *in, const line_t *l,
                       const uint8_t *stream, size_t off)
{
    if (l->text != in->data || memcmp(l->text, stream + off, l->len) != 0 || l->text[l->len] != '\0' || memchr(l->text, '\n', l->len) ||
        l->consumed > in->len || l->consumed < l->len + 1 || l->consumed > r->max)
        abort();
    if (!!memchr(l->text, '\0', l->len) != !!(l->flags & LINE_NUL))
        abort();
    if ((l->consumed == l->len + 1) != !!(l->flags & LINE_BARE_LF))
        abort();
}

/* Feeds data in pieces (each 1..16 bytes, chosen by seed; seed 0: all at once). */
static void feed(const uint8_t *data, size_t size, size_t max, unsigned seed, run_t *out)
{
    line_reader_t r;
    buf_t in;
    line_reader_init(&r, max);
    buf_init(&in);
    out->n = 0;
    size_t pos = 0; /* bytes fed so far; in.data[0] is at stream offset pos - in.len */
    while (pos < size) {
        size_t piece = seed ? 1 + (seed >> (pos % 7)) % 16 : size;
        if (piece > size - pos)
            piece = size - pos;
        if (buf_append(&in, data + pos, piece) < 0)
            abort();
        pos += piece;
        for (;;) {
            line_t l;
            size_t had = in.len;
            int rc = line_read(&r, &in, &l);
            if (rc == 0)
                break;
            if (out->n == MAX_EVENTS)
                goto done;
            event_t *e = &out->ev[out->n++];
            e->rc = rc;
            e->off = e->len = 0;
            e->flags = 0;
            if (rc == 1) {
                e->off = pos - in.len;
                check_line(&r, &in, &l, data, e->off);
                e->len = l.len;
                e->flags = l.flags;
                buf_consume(&in, l.consumed);
            } else if (rc == -1) {
                if (in.len >= had)
                    abort(); /* a too-long report drops bytes */
            } else {
                abort();
            }
        }
    }
done:
    out->left = in.len;
    buf_free(&in);
}

static run_t whole, pieces;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t max = 1 + data[0];
    unsigned seed = data[1] | 1u;
    data += 2;
    size -= 2;
    feed(data, size, max, 0, &whole);
    feed(data, size, max, seed, &pieces);
    if (whole.n == MAX_EVENTS || pieces.n == MAX_EVENTS)
        return 0;
    if (whole.n != pieces.n || whole.left != pieces.left)
        abort();
    for (size_t i = 0; i < whole.n; i++) {
        const event_t *a = &whole.ev[i], *b = &pieces.ev[i];
        if (a->rc != b->rc || a->flags != b->flags || a->len != b->len || a->off != b->off)
            abort();
    }
    return 0;
}
