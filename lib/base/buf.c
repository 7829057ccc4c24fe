#include "base/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char empty[1];

void buf_init(buf_t *b)
{
    b->data = (char *)empty;
    b->len = 0;
    b->cap = 0;
}

void buf_free(buf_t *b)
{
    if (b->cap)
        free(b->data);
    buf_init(b);
}

void buf_reset(buf_t *b)
{
    b->len = 0;
    if (b->cap)
        b->data[0] = '\0';
}

/* Room for extra more bytes and the NUL, doubling the capacity but never past cap_max. */
static int buf_reserve(buf_t *b, size_t extra, size_t cap_max)
{
    if (extra > cap_max || b->len + 1 > cap_max - extra)
        return -1;
    if (b->len + extra + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > ((size_t)-1) / 2)
            return -1;
        cap *= 2;
    }
    if (cap > cap_max)
        cap = cap_max;
    char *p = b->cap ? realloc(b->data, cap) : malloc(cap);
    if (!p)
        return -1;
    if (!b->cap)
        p[0] = '\0';
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append_capped(buf_t *b, const void *data, size_t len, size_t cap_max)
{
    if (buf_reserve(b, len, cap_max) < 0)
        return -1;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

int buf_append(buf_t *b, const void *data, size_t len)
{
    return buf_append_capped(b, data, len, (size_t)-1);
}

int buf_prepend(buf_t *b, const void *data, size_t len)
{
    if (buf_reserve(b, len, (size_t)-1) < 0)
        return -1;
    if (len) {
        memmove(b->data + len, b->data, b->len + 1);
        memcpy(b->data, data, len);
    }
    b->len += len;
    return 0;
}

int buf_puts(buf_t *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_put_uint(buf_t *b, uint64_t v)
{
    char d[20];
    size_t n = sizeof d;
    do {
        d[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return buf_append(b, d + n, sizeof d - n);
}

int buf_vprintf(buf_t *b, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n < 0 || buf_reserve(b, (size_t)n, (size_t)-1) < 0) {
        va_end(again);
        return -1;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, again);
    va_end(again);
    b->len += (size_t)n;
    return 0;
}

int buf_printf(buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void buf_consume(buf_t *b, size_t n)
{
    if (n >= b->len) {
        if (b->cap > BUF_KEEP)
            buf_free(b);
        else
            buf_reset(b);
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

static _Thread_local buf_t spares[BUF_SPARES];

void buf_recycle(buf_t *b)
{
    if (b->cap >= BUF_SPARE_MIN && b->cap <= BUF_SPARE_MAX) {
        int smallest = 0;
        for (int i = 1; i < BUF_SPARES; i++)
            if (spares[i].cap < spares[smallest].cap)
                smallest = i;
        if (b->cap > spares[smallest].cap) {
            buf_free(&spares[smallest]);
            spares[smallest] = *b;
            buf_init(b);
            return;
        }
    }
    buf_free(b);
}

void buf_from_spare(buf_t *b, size_t extra)
{
    if (extra > SIZE_MAX - 1 - b->len)
        return;
    size_t need = b->len + extra + 1; /* and the NUL */
    if (need <= b->cap || need <= BUF_SPARE_MIN)
        return; /* no growth, or one that stays small */
    for (int i = 0; i < BUF_SPARES; i++) {
        if (spares[i].cap < need)
            continue;
        buf_t s = spares[i];
        buf_init(&spares[i]);
        memcpy(s.data, b->data, b->len + 1); /* an empty one's "" too */
        s.len = b->len;
        buf_free(b);
        *b = s;
        return;
    }
}

bool buf_drop_spares(void)
{
    bool any = false;
    for (int i = 0; i < BUF_SPARES; i++) {
        any = any || spares[i].cap > 0;
        buf_free(&spares[i]);
    }
    return any;
}
