/* The limiter's building blocks: exact sliding windows (edges, growth, wrap-around, removal,
 * tags, weights) and the string-keyed hash table (add, find, remove while walking, compact). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/table.h"
#include "window.h"

/* ---- windows -------------------------------------------------------------------------- */

/* One operation on a window and what it should hold afterwards. */
typedef struct win_step {
    char op;           /* 'p' push, 'e' expire, 'r' remove, 't' trim */
    int64_t t;         /* push/remove: the time; expire: now */
    uint32_t arg;      /* push: weight; expire: interval ms; trim: max */
    uint32_t max;      /* push: cap */
    uint32_t want_len;
    int64_t want_oldest; /* -1: empty */
    uint64_t want_sum;
} win_step_t;

static const win_step_t edge_steps[] = {
    { 'p', 1000, 1, 3, 1, 1000, 1 },
    { 'p', 2000, 2, 3, 2, 1000, 3 },
    { 'p', 3000, 3, 3, 3, 1000, 6 },
    /* At max the oldest makes room. */
    { 'p', 4000, 4, 3, 3, 2000, 9 },
    /* Interval 2000 at now 3999: 2000 is inside (2000 > 1999). */
    { 'e', 3999, 2000, 0, 3, 2000, 9 },
    /* At now 4000 the entry at 2000 has left exactly at the boundary. */
    { 'e', 4000, 2000, 0, 2, 3000, 7 },
    /* Removing by time (a released reservation). */
    { 'r', 3000, 0, 0, 1, 4000, 4 },
    { 'r', 3000, 0, 0, 1, 4000, 4 },
    { 'p', 5000, 5, 3, 2, 4000, 9 },
    { 't', 0, 1, 0, 1, 5000, 5 },
    { 'e', 10000, 1000, 0, 0, -1, 0 },
    /* An emptied window takes pushes again. */
    { 'p', 11000, 7, 3, 1, 11000, 7 },
};

static void run_win_steps(const win_step_t *steps, size_t n)
{
    win_t w;
    win_init(&w, WIN_WEIGHT);
    for (size_t i = 0; i < n; i++) {
        const win_step_t *s = &steps[i];
        switch (s->op) {
        case 'p': assert_int_equal(win_push(&w, s->t, s->arg, 0, s->max), 0); break;
        case 'e': win_expire(&w, s->t, s->arg); break;
        case 'r': win_remove(&w, s->t); break;
        case 't': win_trim(&w, s->arg); break;
        }
        print_message("step %zu: %c t=%lld -> len %u\n", i, s->op, (long long)s->t, win_len(&w));
        assert_int_equal(win_len(&w), s->want_len);
        if (s->want_oldest < 0)
            assert_null(w.mem);
        else
            assert_int_equal(win_time(&w, 0), s->want_oldest);
        assert_int_equal(win_weight_sum(&w), s->want_sum);
    }
    win_free(&w);
}

static void test_window_edges(void **state)
{
    (void)state;
    run_win_steps(edge_steps, sizeof edge_steps / sizeof edge_steps[0]);
}

/* Many pushes through a capped ring: it grows to the cap, wraps, and keeps the newest. */
static void test_window_wraps(void **state)
{
    (void)state;
    win_t w;
    win_init(&w, WIN_WEIGHT | WIN_TAG);
    for (int64_t t = 1; t <= 1000; t++) {
        assert_int_equal(win_push(&w, t, (uint32_t)t, (uint64_t)t * 7, 37), 0);
        uint32_t want = t < 37 ? (uint32_t)t : 37;
        assert_int_equal(win_len(&w), want);
        assert_true(w.cap <= 37);
        for (uint32_t i = 0; i < want; i++) {
            int64_t et = t - want + 1 + i;
            assert_int_equal(win_time(&w, i), et);
            assert_int_equal(win_weight(&w, i), (uint32_t)et);
            assert_int_equal(win_tag(&w, i), (uint64_t)et * 7);
        }
    }
    assert_true(win_has_tag(&w, 1000 * 7));
    assert_false(win_has_tag(&w, 1 * 7));
    assert_int_equal(win_newest(&w), 1000);
    /* Removing from the middle of a wrapped ring keeps the order. */
    assert_true(win_remove(&w, 980));
    assert_false(win_remove(&w, 980));
    assert_int_equal(win_len(&w), 36);
    for (uint32_t i = 1; i < win_len(&w); i++)
        assert_true(win_time(&w, i) > win_time(&w, i - 1));
    /* A lower cap later keeps the newest entries. */
    assert_int_equal(win_push(&w, 1001, 1, 1, 5), 0);
    assert_int_equal(win_len(&w), 5);
    assert_int_equal(win_time(&w, 0), 997);
    assert_int_equal(win_newest(&w), 1001);
    win_free(&w);
}

static void test_window_sizes(void **state)
{
    (void)state;
    win_t w;
    win_init(&w, 0);
    assert_int_equal(win_bytes(&w), 0);
    assert_int_equal(win_push(&w, 1, 0, 0, 10), 0);
    assert_int_equal(win_bytes(&w), 8); /* one time, nothing else */
    win_free(&w);
    win_init(&w, WIN_TAG);
    assert_int_equal(win_push(&w, 1, 0, 0, 10), 0);
    assert_int_equal(win_bytes(&w), 16);
    win_free(&w);
    win_init(&w, WIN_WEIGHT);
    assert_int_equal(win_push(&w, 1, 0, 0, 0), 0); /* max 0 records nothing */
    assert_int_equal(win_len(&w), 0);
    win_free(&w);
}

/* ---- the table ------------------------------------------------------------------------ */

typedef struct item {
    int value;
    char key[24];
} item_t;

static const char *item_key(const void *p)
{
    return ((const item_t *)p)->key;
}

static void test_table_basics(void **state)
{
    (void)state;
    table_t *t = table_create(item_key);
    assert_non_null(t);
    assert_null(table_get(t, "missing"));
    enum { N = 50000 };
    item_t *items = calloc(N, sizeof *items);
    for (int i = 0; i < N; i++) {
        items[i].value = i;
        snprintf(items[i].key, sizeof items[i].key, "key-%d", i);
        assert_int_equal(table_add(t, &items[i]), 0);
    }
    assert_int_equal(table_count(t), N);
    for (int i = 0; i < N; i++) {
        char k[24];
        snprintf(k, sizeof k, "key-%d", i);
        item_t *it = table_get(t, k);
        assert_non_null(it);
        assert_int_equal(it->value, i);
    }
    /* Remove the odd ones while walking; every even one is still found. */
    size_t pos = 0, seen = 0;
    item_t *it;
    while ((it = table_next(t, &pos))) {
        seen++;
        if (it->value % 2)
            table_remove_at(t, pos - 1);
    }
    assert_int_equal(seen, N);
    assert_int_equal(table_count(t), N / 2);
    for (int i = 0; i < N; i++) {
        char k[24];
        snprintf(k, sizeof k, "key-%d", i);
        if (i % 2)
            assert_null(table_get(t, k));
        else
            assert_non_null(table_get(t, k));
    }
    /* Churn: tombstones do not grow the table without bound. */
    size_t slots = table_slots(t);
    for (int round = 0; round < 20; round++)
        for (int i = 1; i < N; i += 2) {
            assert_int_equal(table_add(t, &items[i]), 0);
            assert_ptr_equal(table_remove(t, items[i].key), &items[i]);
        }
    assert_true(table_slots(t) <= slots);
    /* table_ref replaces an item in place. */
    void **ref = table_ref(t, "key-0");
    assert_non_null(ref);
    assert_ptr_equal(*ref, &items[0]);
    /* Compact after most are gone. */
    for (int i = 2; i < N; i += 2)
        assert_non_null(table_remove(t, items[i].key));
    table_compact(t);
    assert_int_equal(table_count(t), 1);
    assert_true(table_slots(t) <= 16);
    assert_ptr_equal(table_get(t, "key-0"), &items[0]);
    table_destroy(&t);
    assert_null(t);
    table_destroy(&t);
    free(items);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_window_wraps),
        cmocka_unit_test(test_window_sizes),
        cmocka_unit_test(test_table_basics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
