/* Exact sliding windows: the times of the last events for one key, oldest first, in a ring
 * that grows on demand up to a cap and is freed when it empties.
 *
 * An event at time t is inside the window of length L at time now when t > now - L: at
 * now = t + L it has just left. Times are milliseconds from an injected clock; pushes must
 * not go back in time (the caller keeps its clock monotonic).
 *
 * Besides its time an entry may carry a weight (recipients of a message) and a 64-bit tag
 * (the start of an attempt digest), chosen once by win_init(). The whole window is 24
 * bytes plus 8, 12, 16 or 20 bytes per entry held. */
#ifndef LIMITER_WINDOW_H
#define LIMITER_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

enum {
    WIN_WEIGHT = 1, /* entries carry a uint32 weight */
    WIN_TAG = 2,    /* entries carry a uint64 tag */
};

typedef struct win {
    void *mem;     /* times, then tags, then weights; NULL while empty */
    uint32_t cap;  /* entries mem holds */
    uint32_t head; /* index of the oldest */
    uint32_t len;
    uint8_t flags;
} win_t;

void win_init(win_t *w, unsigned flags);
void win_free(win_t *w);

/* Forgets the entries that have left the window of interval_ms at now. */
void win_expire(win_t *w, int64_t now, int64_t interval_ms);
/* Keeps only the newest max entries. */
void win_trim(win_t *w, uint32_t max);

/* Appends an entry. At max entries the oldest is dropped to make room. Returns 0, or -1
 * when memory ran out (the entry is not recorded). max 0 records nothing. */
int win_push(win_t *w, int64_t t, uint32_t weight, uint64_t tag, uint32_t max);
/* Removes the newest entry at time t (a released reservation). True if one was found. */
bool win_remove(win_t *w, int64_t t);
void win_clear(win_t *w);

static inline uint32_t win_len(const win_t *w)
{
    return w->len;
}
/* The i-th entry, 0 being the oldest; i < win_len(). */
int64_t win_time(const win_t *w, uint32_t i);
uint32_t win_weight(const win_t *w, uint32_t i);
uint64_t win_tag(const win_t *w, uint32_t i);
/* The time of the newest entry, or INT64_MIN when empty. */
int64_t win_newest(const win_t *w);
/* The sum of the weights of all entries. */
uint64_t win_weight_sum(const win_t *w);
/* True when an entry carries tag. */
bool win_has_tag(const win_t *w, uint64_t tag);

/* Bytes held for entries (not counting the win_t itself). */
uint64_t win_bytes(const win_t *w);

#endif
