/* relayd's retry schedule: delays, the deadline and the delay notice, from tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "schedule.h"

#define MIN 300
#define HOUR 3600
#define DAY 86400

typedef struct delay_case {
    const char *name;
    int attempts;
    int64_t min_s, max_s;
    double jitter;
    int64_t expect;
} delay_case_t;

static const delay_case_t delay_cases[] = {
    { "first retry", 1, MIN, 4 * HOUR, 0.5, MIN },
    { "second doubles", 2, MIN, 4 * HOUR, 0.5, 2 * MIN },
    { "fifth", 5, MIN, 4 * HOUR, 0.5, 16 * MIN },
    { "capped", 7, MIN, 4 * HOUR, 0.5, 4 * HOUR },
    { "huge attempt count stays capped", 1000, MIN, 4 * HOUR, 0.5, 4 * HOUR },
    { "zero attempts count as one", 0, MIN, 4 * HOUR, 0.5, MIN },
    { "jitter low: -10%", 3, MIN, 4 * HOUR, 0.0, 1080 },
    { "jitter high: +10%", 3, MIN, 4 * HOUR, 1.0, 1320 },
    { "jitter quarter: -5%", 3, MIN, 4 * HOUR, 0.25, 1140 },
    { "jitter out of range clamped", 3, MIN, 4 * HOUR, 7.0, 1320 },
    { "jitter negative clamped", 3, MIN, 4 * HOUR, -1.0, 1080 },
    { "never below min", 1, MIN, 4 * HOUR, 0.0, MIN },
    { "never above max", 20, MIN, 4 * HOUR, 1.0, 4 * HOUR },
    { "max below min: min", 3, MIN, 10, 0.5, MIN },
    { "min 0: at least 1 s", 1, 0, 100, 0.5, 1 },
};

static void test_delays(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof delay_cases / sizeof delay_cases[0]; i++) {
        const delay_case_t *c = &delay_cases[i];
        print_message("case: %s\n", c->name);
        assert_int_equal(schedule_next_delay_s(c->attempts, c->min_s, c->max_s, c->jitter),
                         c->expect);
    }
}

typedef struct when_case {
    const char *name;
    int64_t created, now, lifetime, warn_after;
    bool warned;
    int attempts;
    bool expired, warn_due;
    int64_t next; /* schedule_next_attempt_s with min MIN, max 4 h, no jitter */
} when_case_t;

static const when_case_t when_cases[] = {
    { "fresh", 1000, 1000, 5 * DAY, 4 * HOUR, false, 1, false, false, 1000 + MIN },
    { "warning due", 0, 4 * HOUR, 5 * DAY, 4 * HOUR, false, 6, false, true, 4 * HOUR + 9600 },
    { "warning already sent", 0, 5 * HOUR, 5 * DAY, 4 * HOUR, true, 6, false, false,
      5 * HOUR + 9600 },
    { "warnings off", 0, 5 * HOUR, 5 * DAY, 0, false, 6, false, false, 5 * HOUR + 9600 },
    { "last attempt lands on the deadline", 0, 5 * DAY - 60, 5 * DAY, 4 * HOUR, true, 30,
      false, false, 5 * DAY },
    { "expired exactly", 0, 5 * DAY, 5 * DAY, 4 * HOUR, false, 30, true, false, 5 * DAY },
    { "expired: no warning, bounce", 0, 6 * DAY, 5 * DAY, 4 * HOUR, false, 30, true, false,
      6 * DAY },
    { "no lifetime: never expires", 0, 400 * DAY, 0, 0, false, 30, false, false,
      400 * DAY + 4 * HOUR },
};

static void test_when(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof when_cases / sizeof when_cases[0]; i++) {
        const when_case_t *c = &when_cases[i];
        print_message("case: %s\n", c->name);
        assert_int_equal(schedule_expired(c->created, c->now, c->lifetime), c->expired);
        assert_int_equal(schedule_delay_warning_due(c->created, c->now, c->warn_after,
                                                    c->lifetime, c->warned),
                         c->warn_due);
        assert_int_equal(schedule_next_attempt_s(c->attempts, c->now, c->created, c->lifetime,
                                                 MIN, 4 * HOUR, 0.5),
                         c->next);
    }
    assert_int_equal(schedule_expires_at(1000, 5 * DAY), 1000 + 5 * DAY);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delays),
        cmocka_unit_test(test_when),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
