#include "window.h"

#include <stdlib.h>
#include <string.h>

/* Bytes of one entry, all parts together. */
static size_t win_entry_size(unsigned flags)
{
    return sizeof(int64_t) + ((flags & WIN_TAG) ? sizeof(uint64_t) : 0) +
           ((flags & WIN_WEIGHT) ? sizeof(uint32_t) : 0);
}

static int64_t *win_times(const win_t *w)
{
    return (int64_t *)w->mem;
}

static uint64_t *win_tags(const win_t *w)
{
    return (uint64_t *)((char *)w->mem + (size_t)w->cap * sizeof(int64_t));
}

static uint32_t *win_weights(const win_t *w)
{
    size_t off = (size_t)w->cap * sizeof(int64_t);
    if (w->flags & WIN_TAG)
        off += (size_t)w->cap * sizeof(uint64_t);
    return (uint32_t *)((char *)w->mem + off);
}

/* The ring index of the i-th oldest entry. */
static uint32_t win_at(const win_t *w, uint32_t i)
{
    uint32_t k = w->head + i;
    return k >= w->cap ? k - w->cap : k;
}

void win_init(win_t *w, unsigned flags)
{
    memset(w, 0, sizeof *w);
    w->flags = (uint8_t)flags;
}

void win_free(win_t *w)
{
    free(w->mem);
    w->mem = NULL;
    w->cap = w->head = w->len = 0;
}

void win_clear(win_t *w)
{
    win_free(w);
}

int64_t win_time(const win_t *w, uint32_t i)
{
    return win_times(w)[win_at(w, i)];
}

uint32_t win_weight(const win_t *w, uint32_t i)
{
    return (w->flags & WIN_WEIGHT) ? win_weights(w)[win_at(w, i)] : 1;
}

uint64_t win_tag(const win_t *w, uint32_t i)
{
    return (w->flags & WIN_TAG) ? win_tags(w)[win_at(w, i)] : 0;
}

int64_t win_newest(const win_t *w)
{
    return w->len ? win_time(w, w->len - 1) : INT64_MIN;
}

uint64_t win_weight_sum(const win_t *w)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < w->len; i++)
        sum += win_weight(w, i);
    return sum;
}

bool win_has_tag(const win_t *w, uint64_t tag)
{
    if (!(w->flags & WIN_TAG))
        return false;
    for (uint32_t i = 0; i < w->len; i++)
        if (win_tags(w)[win_at(w, i)] == tag)
            return true;
    return false;
}

uint64_t win_bytes(const win_t *w)
{
    return (uint64_t)w->cap * win_entry_size(w->flags);
}

/* Drops the n oldest entries. */
static void win_drop_oldest(win_t *w, uint32_t n)
{
    if (n >= w->len) {
        win_free(w);
        return;
    }
    w->head = win_at(w, n);
    w->len -= n;
}

void win_expire(win_t *w, int64_t now, int64_t interval_ms)
{
    uint32_t n = 0;
    while (n < w->len && win_time(w, n) <= now - interval_ms)
        n++;
    if (n)
        win_drop_oldest(w, n);
}

void win_trim(win_t *w, uint32_t max)
{
    if (w->len > max)
        win_drop_oldest(w, w->len - max);
}

/* Moves the entries into a fresh block of cap entries, oldest at index 0. */
static int win_realloc(win_t *w, uint32_t cap)
{
    void *mem = malloc((size_t)cap * win_entry_size(w->flags));
    if (!mem)
        return -1;
    win_t n = { .mem = mem, .cap = cap, .head = 0, .len = w->len, .flags = w->flags };
    for (uint32_t i = 0; i < w->len; i++) {
        uint32_t k = win_at(w, i);
        win_times(&n)[i] = win_times(w)[k];
        if (w->flags & WIN_TAG)
            win_tags(&n)[i] = win_tags(w)[k];
        if (w->flags & WIN_WEIGHT)
            win_weights(&n)[i] = win_weights(w)[k];
    }
    free(w->mem);
    *w = n;
    return 0;
}

int win_push(win_t *w, int64_t t, uint32_t weight, uint64_t tag, uint32_t max)
{
    if (max == 0)
        return 0;
    win_trim(w, max);
    if (w->len == max) {
        w->head = win_at(w, 1); /* the oldest makes room; keep the memory */
        w->len--;
    } else if (w->len == w->cap) {
        /* Grow by half (at least 2), never past max. */
        uint64_t want = (uint64_t)w->cap + (w->cap / 2 > 2 ? w->cap / 2 : 2);
        if (w->cap == 0)
            want = 1;
        if (want > max)
            want = max;
        if (win_realloc(w, (uint32_t)want) < 0)
            return -1;
    }
    uint32_t k = win_at(w, w->len);
    win_times(w)[k] = t;
    if (w->flags & WIN_TAG)
        win_tags(w)[k] = tag;
    if (w->flags & WIN_WEIGHT)
        win_weights(w)[k] = weight;
    w->len++;
    return 0;
}

bool win_remove(win_t *w, int64_t t)
{
    for (uint32_t i = w->len; i-- > 0;) {
        if (win_time(w, i) != t)
            continue;
        /* Shift the newer entries down by one. */
        for (uint32_t j = i; j + 1 < w->len; j++) {
            uint32_t to = win_at(w, j), from = win_at(w, j + 1);
            win_times(w)[to] = win_times(w)[from];
            if (w->flags & WIN_TAG)
                win_tags(w)[to] = win_tags(w)[from];
            if (w->flags & WIN_WEIGHT)
                win_weights(w)[to] = win_weights(w)[from];
        }
        if (--w->len == 0)
            win_free(w);
        return true;
    }
    return false;
}
