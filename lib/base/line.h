/* A line reader over a byte buffer, with a length cap. Lines end at LF; a line whose LF
 * is not preceded by CR is flagged LINE_BARE_LF, one holding a NUL byte LINE_NUL, so the
 * protocol decides what to make of them. A line longer than the cap is reported once as
 * too long, then its bytes are dropped up to and including its LF, even when it arrives
 * byte by byte. */
#ifndef POSTERN_LINE_H
#define POSTERN_LINE_H

#include <stdbool.h>
#include <stddef.h>

#include "base/buf.h"

enum line_flags {
    LINE_BARE_LF = 1 << 0,
    LINE_NUL = 1 << 1,
};

typedef struct line_reader {
    size_t max;      /* longest line accepted, terminator included */
    bool discarding; /* inside a line already reported as too long */
} line_reader_t;

typedef struct line {
    char *text;      /* points into the buffer; the terminator is replaced by NUL */
    size_t len;      /* without the terminator */
    size_t consumed; /* bytes to buf_consume() once the line has been used */
    unsigned flags;
} line_t;

void line_reader_init(line_reader_t *r, size_t max);
/* 1 = got a line in *line (consume line->consumed bytes when done with it),
 * 0 = need more input, -1 = the line is too long (already dropped from in). */
int line_read(line_reader_t *r, buf_t *in, line_t *line);
/* The same over data[0 .. len), which is left in place: *skipped bytes at its start were
 * dropped (a too-long line's, and with -1 the too-long line's own up to its LF), and a
 * line found begins right after them; the caller consumes *skipped, plus line->consumed
 * once done with the line. */
int line_scan(line_reader_t *r, char *data, size_t len, line_t *line, size_t *skipped);

#endif
