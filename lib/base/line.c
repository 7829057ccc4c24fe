#include "base/line.h"

#include <string.h>

void line_reader_init(line_reader_t *r, size_t max)
{
    r->max = max;
    r->discarding = false;
}

int line_read(line_reader_t *r, buf_t *in, line_t *line)
{
    for (;;) {
        char *lf = memchr(in->data, '\n', in->len);
        if (r->discarding) {
            if (!lf) {
                buf_reset(in);
                return 0;
            }
            buf_consume(in, (size_t)(lf - in->data) + 1);
            r->discarding = false;
            continue;
        }
        size_t upto = lf ? (size_t)(lf - in->data) + 1 : in->len;
        if (upto > r->max || (!lf && in->len >= r->max)) {
            if (lf) {
                buf_consume(in, upto);
            } else {
                buf_reset(in);
                r->discarding = true;
            }
            return -1;
        }
        if (!lf)
            return 0;
        size_t len = (size_t)(lf - in->data);
        line->flags = 0;
        if (len > 0 && in->data[len - 1] == '\r')
            len--;
        else
            line->flags |= LINE_BARE_LF;
        if (memchr(in->data, '\0', len))
            line->flags |= LINE_NUL;
        in->data[len] = '\0';
        line->text = in->data;
        line->len = len;
        line->consumed = upto;
        return 1;
    }
}
