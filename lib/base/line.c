#include "base/line.h"

#include <string.h>

void line_reader_init(line_reader_t *r, size_t max)
{
    r->max = max;
    r->discarding = false;
}

int line_scan(line_reader_t *r, char *data, size_t len, line_t *line, size_t *skipped)
{
    *skipped = 0;
    for (;;) {
        char *lf = memchr(data, '\n', len);
        if (r->discarding) {
            size_t drop = lf ? (size_t)(lf - data) + 1 : len;
            *skipped += drop;
            if (!lf)
                return 0;
            data += drop;
            len -= drop;
            r->discarding = false;
            continue;
        }
        size_t upto = lf ? (size_t)(lf - data) + 1 : len;
        if (upto > r->max || (!lf && len >= r->max)) {
            *skipped += upto;
            r->discarding = !lf;
            return -1;
        }
        if (!lf)
            return 0;
        size_t n = (size_t)(lf - data);
        line->flags = 0;
        if (n > 0 && data[n - 1] == '\r')
            n--;
        else
            line->flags |= LINE_BARE_LF;
        if (memchr(data, '\0', n))
            line->flags |= LINE_NUL;
        data[n] = '\0';
        line->text = data;
        line->len = n;
        line->consumed = upto;
        return 1;
    }
}

int line_read(line_reader_t *r, buf_t *in, line_t *line)
{
    size_t skipped;
    int rc = line_scan(r, in->data, in->len, line, &skipped);
    if (rc == 1 && skipped) {
        /* the line starts after what was dropped: move it to the front */
        buf_consume(in, skipped);
        line->text -= skipped;
    } else if (skipped) {
        buf_consume(in, skipped);
    }
    return rc;
}
