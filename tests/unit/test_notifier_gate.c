/* notifier, gate.c: "at most one alert per (cause, subject) per interval", with an
 * injected clock. Each case is a table of steps: ask whether an alert may go out at time
 * t, or record that one went out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "notifier.h"

#define HOUR 3600000LL

enum { OPEN, NOTE, SIZE, END };

typedef struct step {
    int op;
    const char *cause, *subject;
    int64_t t;        /* OPEN: now; NOTE: when it went out (also "now") */
    int64_t interval;
    long expect;      /* OPEN: 1 may go out, 0 suppressed; SIZE: entries */
} step_t;

typedef struct gate_case {
    const char *name;
    size_t max;
    step_t steps[16];
} gate_case_t;

static const gate_case_t cases[] = {
    { "first alert goes out, repeats within the interval do not", 100,
      { { OPEN, "hamr", "alice@example.test", 1000, HOUR, 1 },
        { NOTE, "hamr", "alice@example.test", 1000, HOUR, 0 },
        { OPEN, "hamr", "alice@example.test", 1001, HOUR, 0 },
        { OPEN, "hamr", "alice@example.test", 1000 + HOUR / 2, HOUR, 0 },
        { END, NULL, NULL, 0, 0, 0 } } },
    { "window edge: interval - 1 ms suppressed, interval exactly goes out", 100,
      { { NOTE, "hamr", "alice@example.test", 1000, HOUR, 0 },
        { OPEN, "hamr", "alice@example.test", 1000 + HOUR - 1, HOUR, 0 },
        { OPEN, "hamr", "alice@example.test", 1000 + HOUR, HOUR, 1 },
        { SIZE, NULL, NULL, 0, 0, 0 }, /* the expired entry was forgotten */
        { END, NULL, NULL, 0, 0, 0 } } },
    { "cause and subject are counted apart", 100,
      { { NOTE, "hamr", "alice@example.test", 0, HOUR, 0 },
        { OPEN, "hamr", "bob@example.test", 10, HOUR, 1 },
        { OPEN, "harvest", "alice@example.test", 10, HOUR, 1 },
        { NOTE, "harvest", "192.0.2.7", 10, HOUR, 0 },
        { OPEN, "harvest", "192.0.2.7", 20, HOUR, 0 },
        { OPEN, "harvest", "192.0.2.70", 20, HOUR, 1 },
        { OPEN, "hamr", "alice@example.test", 20, HOUR, 0 },
        { SIZE, NULL, NULL, 0, 0, 2 },
        { END, NULL, NULL, 0, 0, 0 } } },
    { "a shorter interval set later applies at once", 100,
      { { NOTE, "hamr", "alice@example.test", 0, HOUR, 0 },
        { OPEN, "hamr", "alice@example.test", 120000, HOUR, 0 },
        { OPEN, "hamr", "alice@example.test", 120000, 60000, 1 },
        { END, NULL, NULL, 0, 0, 0 } } },
    { "a clock that goes backwards suppresses", 100,
      { { NOTE, "hamr", "alice@example.test", 5 * HOUR, HOUR, 0 },
        { OPEN, "hamr", "alice@example.test", 2 * HOUR, HOUR, 0 },
        { END, NULL, NULL, 0, 0, 0 } } },
    { "a later note moves the window, an earlier one does not", 100,
      { { NOTE, "harvest", "192.0.2.7", 0, HOUR, 0 },
        { NOTE, "harvest", "192.0.2.7", HOUR / 2, HOUR, 0 },
        { OPEN, "harvest", "192.0.2.7", HOUR + 1, HOUR, 0 },
        { NOTE, "harvest", "192.0.2.7", 10, HOUR, 0 },
        { OPEN, "harvest", "192.0.2.7", HOUR / 2 + HOUR, HOUR, 1 },
        { END, NULL, NULL, 0, 0, 0 } } },
    { "full: expired entries make room first", 2,
      { { NOTE, "harvest", "192.0.2.1", 0, HOUR, 0 },
        { NOTE, "harvest", "192.0.2.2", HOUR, HOUR, 0 },
        { NOTE, "harvest", "192.0.2.3", HOUR + 10, HOUR, 0 }, /* .1 has expired */
        { SIZE, NULL, NULL, 0, 0, 2 },
        { OPEN, "harvest", "192.0.2.2", HOUR + 20, HOUR, 0 },
        { OPEN, "harvest", "192.0.2.3", HOUR + 20, HOUR, 0 },
        { END, NULL, NULL, 0, 0, 0 } } },
    { "full: else the oldest goes (PostgreSQL still decides for it)", 2,
      { { NOTE, "harvest", "192.0.2.1", 0, HOUR, 0 },
        { NOTE, "harvest", "192.0.2.2", 10, HOUR, 0 },
        { NOTE, "harvest", "192.0.2.3", 20, HOUR, 0 },
        { SIZE, NULL, NULL, 0, 0, 2 },
        { OPEN, "harvest", "192.0.2.1", 30, HOUR, 1 },
        { OPEN, "harvest", "192.0.2.2", 30, HOUR, 0 },
        { OPEN, "harvest", "192.0.2.3", 30, HOUR, 0 },
        { END, NULL, NULL, 0, 0, 0 } } },
    { "keys that look alike stay apart", 100,
      { { NOTE, "hamr", "a/b", 0, HOUR, 0 },
        { OPEN, "hamr/a", "b", 1, HOUR, 1 },
        { OPEN, "hamr", "a/b", 1, HOUR, 0 },
        { OPEN, "hamr", "a/", 1, HOUR, 1 },
        { END, NULL, NULL, 0, 0, 0 } } },
};

static void run_case(const gate_case_t *c)
{
    ntf_gate_t *g = ntf_gate_create(c->max);
    assert_non_null(g);
    for (size_t i = 0; c->steps[i].op != END; i++) {
        const step_t *s = &c->steps[i];
        switch (s->op) {
        case OPEN: {
            bool open = ntf_gate_open(g, s->cause, s->subject, s->t, s->interval);
            if (open != (s->expect != 0))
                fail_msg("%s, step %zu: %s/%s at %lld: %s, expected %s", c->name, i, s->cause,
                         s->subject, (long long)s->t, open ? "open" : "shut",
                         s->expect ? "open" : "shut");
            break;
        }
        case NOTE:
            ntf_gate_note(g, s->cause, s->subject, s->t, s->t, s->interval);
            break;
        case SIZE:
            if (ntf_gate_size(g) != (size_t)s->expect)
                fail_msg("%s, step %zu: %zu entries, expected %ld", c->name, i,
                         ntf_gate_size(g), s->expect);
            break;
        }
    }
    ntf_gate_destroy(&g);
    assert_null(g);
}

static void test_gate_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

/* Many subjects (an attack from many addresses) stay within the bound. */
static void test_gate_bound(void **state)
{
    (void)state;
    ntf_gate_t *g = ntf_gate_create(500);
    char subject[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(subject, sizeof subject, "10.0.%d.%d", i / 256, i % 256);
        assert_true(ntf_gate_open(g, "harvest", subject, i, HOUR));
        ntf_gate_note(g, "harvest", subject, i, i, HOUR);
        assert_true(ntf_gate_size(g) <= 500);
    }
    /* The most recent ones are remembered. */
    assert_false(ntf_gate_open(g, "harvest", subject, 5000, HOUR));
    ntf_gate_destroy(&g);
}

static void test_gate_null(void **state)
{
    (void)state;
    ntf_gate_t *g = NULL;
    assert_true(ntf_gate_open(NULL, "hamr", "a@b", 0, HOUR));
    ntf_gate_note(NULL, "hamr", "a@b", 0, 0, HOUR);
    assert_int_equal(ntf_gate_size(NULL), 0);
    ntf_gate_destroy(&g);
    ntf_gate_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gate_table),
        cmocka_unit_test(test_gate_bound),
        cmocka_unit_test(test_gate_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
