/* SMTP replies as relayd reads them from remote servers (services/relayd/reply.c), and the
 * EHLO keywords in them. The stream is parsed twice, whole and in pieces whose sizes the
 * input chooses; both must give the same replies up to the same error.
 *
 * Input: byte 0 = a seed for the piece sizes, byte 1 = the line cap (0: the default, else
 * 16 + 4 * byte), byte 2 = the line count cap (0: the default); the rest is the stream.
 * Checked for each reply: a code from 200 to 559, a status "c.s.d" (class the code's first
 * digit) or "", text without control characters but tab and the '\n' joining the lines. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"

#define MAX_REPLIES 512

typedef struct seen {
    int code;
    char status[16];
    size_t lines;
    uint64_t text_hash;
} seen_t;

typedef struct run {
    seen_t r[MAX_REPLIES];
    size_t n;
    int end; /* 0: input ran out, -1: error */
} run_t;

static run_t whole, pieces;

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void check_reply(const reply_t *r)
{
    if (r->code < 200 || r->code > 559 || r->lines == 0 || !r->text)
        abort();
    size_t sl = strnlen(r->status, sizeof r->status);
    if (sl == sizeof r->status)
        abort();
    if (sl && (sl < 5 || r->status[0] != '0' + r->code / 100 || r->status[1] != '.'))
        abort();
    for (const char *c = r->status; *c; c++)
        if (!isdigit((unsigned char)*c) && *c != '.')
            abort();
    size_t newlines = 0;
    for (const char *c = r->text; *c; c++) {
        if (*c == '\n')
            newlines++;
        else if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
            abort();
    }
    if (newlines + 1 != r->lines)
        abort();
    ehlo_caps_t caps;
    ehlo_caps_parse(r->text, &caps);
    if (caps.size_max && !caps.size)
        abort();
}

static void parse(const uint8_t *data, size_t size, unsigned seed, size_t max_line,
                  size_t max_lines, run_t *out)
{
    reply_parser_t p;
    buf_t in;
    reply_parser_init(&p, max_line, max_lines);
    buf_init(&in);
    out->n = 0;
    out->end = 0;
    size_t pos = 0;
    while (pos < size && out->end == 0) {
        size_t piece = seed ? 1 + (seed >> (pos % 6)) % 23 : size;
        if (piece > size - pos)
            piece = size - pos;
        if (buf_append(&in, data + pos, piece) < 0)
            abort();
        pos += piece;
        for (;;) {
            reply_t r;
            const char *err = NULL;
            int rc = reply_parse(&p, &in, &r, &err);
            if (rc == 0) {
                if (in.len >= (max_line ? max_line : REPLY_LINE_MAX))
                    abort(); /* all of in was taken, or it is less than a line */
                break;
            }
            if (rc < 0) {
                if (!err)
                    abort();
                out->end = -1;
                break;
            }
            check_reply(&r);
            if (out->n < MAX_REPLIES) {
                seen_t *s = &out->r[out->n++];
                s->code = r.code;
                memcpy(s->status, r.status, sizeof s->status);
                s->lines = r.lines;
                s->text_hash = hash(r.text);
            }
        }
    }
    reply_parser_free(&p);
    buf_free(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    unsigned seed = data[0] | 1u;
    size_t max_line = data[1] ? 16 + 4 * (size_t)data[1] : 0;
    size_t max_lines = data[2];
    data += 3;
    size -= 3;
    parse(data, size, 0, max_line, max_lines, &whole);
    parse(data, size, seed, max_line, max_lines, &pieces);
    if (whole.n != pieces.n || whole.end != pieces.end)
        abort();
    for (size_t i = 0; i < whole.n; i++)
        if (whole.r[i].code != pieces.r[i].code || whole.r[i].lines != pieces.r[i].lines ||
            strcmp(whole.r[i].status, pieces.r[i].status) ||
            whole.r[i].text_hash != pieces.r[i].text_hash)
            abort();
    return 0;
}
