/* The limiter's login history (services/limiter/logins.c) against a fake pool: which rows
 * are kept and how, one INSERT at a time at most once a second unless a batch is full,
 * rows waiting (bounded) while PostgreSQL is away, refused batches dropped, pruning by the
 * hour, and a history destroyed while a query is in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "logins.h"

#define S(x) ((int64_t)(x) * 1000) /* seconds, in ms */
#define T0 S(1700000000)

/* ---- the fake pool ------------------------------------------------------------------------ */

#define FAKE_MAX 4

typedef struct query {
    char *sql;
    int nparams;
    char **values; /* copies; NULL stays NULL */
    db_cb cb;
    void *arg;
} query_t;

typedef struct fake {
    bool available;
    query_t q[FAKE_MAX]; /* in flight, oldest first */
    int nq;
    int sent;
    query_t last; /* the last query answered (its copies kept until the next) */
} fake_t;

static void query_free(query_t *q)
{
    for (int i = 0; i < q->nparams; i++)
        free(q->values[i]);
    free(q->values);
    free(q->sql);
    memset(q, 0, sizeof *q);
}

static int fake_query(void *arg, const char *sql, int nparams, const char *const *values, db_cb cb,
                      void *cb_arg)
{
    fake_t *f = arg;
    assert_true(f->nq < FAKE_MAX);
    query_t *q = &f->q[f->nq++];
    q->sql = strdup(sql);
    q->nparams = nparams;
    q->values = calloc((size_t)nparams + 1, sizeof *q->values);
    for (int i = 0; i < nparams; i++)
        q->values[i] = values[i] ? strdup(values[i]) : NULL;
    q->cb = cb;
    q->arg = cb_arg;
    f->sent++;
    return 0;
}

static bool fake_available(void *arg)
{
    return ((fake_t *)arg)->available;
}

enum { ANSWER_OK, ANSWER_UNAVAILABLE, ANSWER_REFUSED };

/* Answers the oldest query in flight; it stays readable in f->last. */
static void answer(fake_t *f, int how)
{
    assert_true(f->nq > 0);
    query_free(&f->last);
    f->last = f->q[0];
    memmove(f->q, f->q + 1, (size_t)(f->nq - 1) * sizeof f->q[0]);
    f->nq--;
    PGresult *res = how == ANSWER_UNAVAILABLE ? NULL
                    : PQmakeEmptyPGresult(NULL, how == ANSWER_OK ? PGRES_COMMAND_OK
                                                                 : PGRES_FATAL_ERROR);
    f->last.cb(f->last.arg, res);
    PQclear(res);
}

static logins_t *fake_history(fake_t *f)
{
    memset(f, 0, sizeof *f);
    f->available = true;
    logins_io_t io = { .arg = f, .query = fake_query, .available = fake_available };
    logins_t *lg = logins_create(&io, NULL);
    assert_non_null(lg);
    return lg;
}

static void fake_done(fake_t *f)
{
    for (int i = 0; i < f->nq; i++)
        query_free(&f->q[i]);
    query_free(&f->last);
}

static ev_auth_t event(const char *user, int result)
{
    ev_auth_t ev = {
        .service = POSTERN__SERVICE__SERVICE_IMAP,
        .user = user,
        .client_addr = "192.0.2.7",
        .mechanism = "PLAIN",
        .tls = true,
        .result = result,
        .time_ms = T0,
    };
    return ev;
}

static void add_n(logins_t *lg, int n, int64_t now)
{
    for (int i = 0; i < n; i++) {
        ev_auth_t ev = event("alice@example.test", POSTERN__AUTH_RESULT__AUTH_OK);
        assert_true(logins_add(lg, &ev, now));
    }
}

static logins_stats_t stats(const logins_t *lg)
{
    logins_stats_t st;
    logins_stats(lg, &st);
    return st;
}

/* ---- what a row holds ------------------------------------------------------------------- */

typedef struct row_case {
    const char *name;
    ev_auth_t ev;
    bool kept;
    /* the parameters of the row: address, at (ms), service, client (NULL), mechanism, tls,
     * result */
    const char *want[7];
} row_case_t;

#define EV(svc_, user_, client_, mech_, tls_, result_, time_)                                   \
    { .service = (svc_), .user = (user_), .client_addr = (client_), .mechanism = (mech_),       \
      .tls = (tls_), .result = (result_), .time_ms = (time_) }
#define OK POSTERN__AUTH_RESULT__AUTH_OK
#define BAD POSTERN__AUTH_RESULT__AUTH_BAD_CREDENTIALS
#define SMTP POSTERN__SERVICE__SERVICE_SMTP
#define WEB POSTERN__SERVICE__SERVICE_WEB

static const row_case_t row_cases[] = {
    { "an IMAP login", EV(POSTERN__SERVICE__SERVICE_IMAP, "bob@example.test", "192.0.2.7", "LOGIN",
                         true, OK, T0 + 5),
      true, { "bob@example.test", "1700000000005", "imap", "192.0.2.7", "LOGIN", "t", "ok" } },
    { "lower-cased, IPv6", EV(SMTP, "Bob@Example.TEST", "2001:db8::5", "PLAIN", false, BAD, T0),
      true, { "bob@example.test", "1700000000000", "smtp", "2001:db8::5", "PLAIN", "f",
              "bad-credentials" } },
    { "web, every result", EV(WEB, "carol@example.test", "198.51.100.9", "PASSWORD", true,
                              POSTERN__AUTH_RESULT__AUTH_TEMP_FAILURE, T0),
      true, { "carol@example.test", "1700000000000", "web", "198.51.100.9", "PASSWORD", "t",
              "temporary-failure" } },
    { "pop3 aborted", EV(POSTERN__SERVICE__SERVICE_POP3, "d@example.test", "192.0.2.1", "USER",
                         false, POSTERN__AUTH_RESULT__AUTH_ABORTED, T0),
      true, { "d@example.test", "1700000000000", "pop3", "192.0.2.1", "USER", "f", "aborted" } },
    { "malformed, UTF-8 name kept", EV(SMTP, "j\xc3\xb6rg@example.test", "192.0.2.1", "PLAIN", true,
                                       POSTERN__AUTH_RESULT__AUTH_MALFORMED, T0),
      true, { "j\xc3\xb6rg@example.test", "1700000000000", "smtp", "192.0.2.1", "PLAIN", "t",
              "malformed" } },
    { "no address: NULL; odd mechanism cut", EV(SMTP, "e@example.test", "not-an-ip", "A B\x01"
                                                "CDEFGHIJKLMNOPQRSTUVWXYZ0123456789", true, OK, T0),
      true, { "e@example.test", "1700000000000", "smtp", NULL,
              "A?B?CDEFGHIJKLMNOPQRSTUVWXYZ0123", "t", "ok" } },
    { "no time, or one from the future: now", EV(SMTP, "f@example.test", "192.0.2.1", "PLAIN",
                                                 true, OK, T0 + S(3600)),
      true, { "f@example.test", "1700000000000", "smtp", "192.0.2.1", "PLAIN", "t", "ok" } },
    { "no user", EV(SMTP, "", "192.0.2.1", "PLAIN", true, POSTERN__AUTH_RESULT__AUTH_ABORTED, T0),
      false, { 0 } },
    { "not UTF-8", EV(SMTP, "x\xff@example.test", "192.0.2.1", "PLAIN", true, BAD, T0), false,
      { 0 } },
    { "a surrogate", EV(SMTP, "x\xed\xa0\x80@example.test", "192.0.2.1", "PLAIN", true, BAD, T0),
      false, { 0 } },
    { "an overlong form", EV(SMTP, "x\xc0\xaf@example.test", "192.0.2.1", "PLAIN", true, BAD, T0),
      false, { 0 } },
    { "no service", EV(POSTERN__SERVICE__SERVICE_UNSPECIFIED, "g@example.test", "192.0.2.1",
                       "PLAIN", true, OK, T0),
      false, { 0 } },
    { "an unknown service", EV(9, "g@example.test", "192.0.2.1", "PLAIN", true, OK, T0), false,
      { 0 } },
    { "no result", EV(SMTP, "g@example.test", "192.0.2.1", "PLAIN", true,
                      POSTERN__AUTH_RESULT__AUTH_RESULT_UNSPECIFIED, T0),
      false, { 0 } },
};

static void test_rows(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof row_cases / sizeof row_cases[0]; i++) {
        const row_case_t *c = &row_cases[i];
        print_message("case: %s\n", c->name);
        fake_t f;
        logins_t *lg = fake_history(&f);
        assert_int_equal(logins_add(lg, &c->ev, T0), c->kept);
        logins_tick(lg, T0, 0);
        if (!c->kept) {
            assert_int_equal(f.sent, 0);
            assert_int_equal(stats(lg).skipped, 1);
            logins_destroy(&lg);
            fake_done(&f);
            continue;
        }
        assert_int_equal(f.nq, 1);
        assert_int_equal(f.q[0].nparams, 7);
        for (int p = 0; p < 7; p++) {
            if (!c->want[p])
                assert_null(f.q[0].values[p]);
            else
                assert_string_equal(f.q[0].values[p], c->want[p]);
        }
        answer(&f, ANSWER_OK);
        assert_int_equal(stats(lg).written, 1);
        logins_destroy(&lg);
        fake_done(&f);
    }
    /* A user name of LOGINS_USER_MAX bytes is kept, one byte more is not. */
    char name[LOGINS_USER_MAX + 2];
    memset(name, 'a', sizeof name);
    name[LOGINS_USER_MAX + 1] = '\0';
    fake_t f;
    logins_t *lg = fake_history(&f);
    ev_auth_t ev = event(name, OK);
    assert_false(logins_add(lg, &ev, T0));
    name[LOGINS_USER_MAX] = '\0';
    assert_true(logins_add(lg, &ev, T0));
    logins_destroy(&lg);
    fake_done(&f);
}

/* ---- batches ------------------------------------------------------------------------------ */

static void test_once_a_second(void **state)
{
    (void)state;
    fake_t f;
    logins_t *lg = fake_history(&f);
    add_n(lg, 3, T0);
    assert_int_equal(f.sent, 0); /* nothing before a tick */
    logins_tick(lg, T0, 0);
    assert_int_equal(f.sent, 1);
    assert_int_equal(f.q[0].nparams, 3 * 7);
    assert_non_null(strstr(f.q[0].sql, "INSERT INTO logins"));
    assert_non_null(strstr(f.q[0].sql, "$21"));
    add_n(lg, 2, T0 + 100);
    logins_tick(lg, T0 + 500, 0);
    assert_int_equal(f.sent, 1); /* one INSERT at a time */
    answer(&f, ANSWER_OK);
    assert_int_equal(stats(lg).written, 3);
    assert_int_equal(stats(lg).pending, 2);
    logins_tick(lg, T0 + 900, 0);
    assert_int_equal(f.sent, 1); /* less than a second after the last batch */
    logins_tick(lg, T0 + 1000, 0);
    assert_int_equal(f.sent, 2);
    assert_int_equal(f.q[0].nparams, 2 * 7);
    answer(&f, ANSWER_OK);
    assert_int_equal(stats(lg).written, 5);
    assert_int_equal(stats(lg).pending, 0);
    logins_tick(lg, T0 + 5000, 0);
    assert_int_equal(f.sent, 2); /* nothing waits */
    logins_destroy(&lg);
    fake_done(&f);
}

static void test_full_batch_at_once(void **state)
{
    (void)state;
    fake_t f;
    logins_t *lg = fake_history(&f);
    add_n(lg, LOGINS_BATCH_ROWS - 1, T0);
    assert_int_equal(f.sent, 0);
    add_n(lg, 1, T0);
    assert_int_equal(f.sent, 1); /* full: at once, no tick needed */
    assert_int_equal(f.q[0].nparams, LOGINS_BATCH_ROWS * 7);
    add_n(lg, LOGINS_BATCH_ROWS + 100, T0);
    assert_int_equal(f.sent, 1);
    answer(&f, ANSWER_OK); /* a full batch waits: it goes at once */
    assert_int_equal(f.sent, 2);
    assert_int_equal(f.q[0].nparams, LOGINS_BATCH_ROWS * 7);
    answer(&f, ANSWER_OK); /* 100 left: they wait for a tick */
    assert_int_equal(f.sent, 2);
    logins_tick(lg, T0 + 1000, 0);
    assert_int_equal(f.sent, 3);
    assert_int_equal(f.q[0].nparams, 100 * 7);
    answer(&f, ANSWER_OK);
    assert_int_equal(stats(lg).written, 2 * LOGINS_BATCH_ROWS + 100);
    logins_destroy(&lg);
    fake_done(&f);
}

/* PostgreSQL away: nothing is sent, rows wait up to LOGINS_PENDING_MAX, the rest is dropped
 * and counted; a batch the pool could not deliver is sent again, one it refused is not. */
static void test_outage(void **state)
{
    (void)state;
    fake_t f;
    logins_t *lg = fake_history(&f);
    f.available = false;
    add_n(lg, LOGINS_PENDING_MAX - 1, T0);
    ev_auth_t ev = event("alice@example.test", OK);
    assert_true(logins_add(lg, &ev, T0));
    for (int i = 0; i < 10; i++)
        assert_false(logins_add(lg, &ev, T0));
    logins_tick(lg, T0 + S(5), 30);
    assert_int_equal(f.sent, 0);
    assert_int_equal(stats(lg).pending, LOGINS_PENDING_MAX);
    assert_int_equal(stats(lg).dropped, 10);

    f.available = true;
    logins_tick(lg, T0 + S(6), 0);
    assert_int_equal(f.sent, 1);
    answer(&f, ANSWER_UNAVAILABLE); /* the connection broke: the rows stay */
    assert_int_equal(stats(lg).pending, LOGINS_PENDING_MAX);
    assert_int_equal(f.sent, 1);
    logins_tick(lg, T0 + S(6) + 500, 0);
    assert_int_equal(f.sent, 1); /* not before a second has passed */
    logins_tick(lg, T0 + S(7), 0);
    assert_int_equal(f.sent, 2);
    answer(&f, ANSWER_REFUSED); /* refused: dropped, never sent again */
    assert_int_equal(stats(lg).dropped, 10 + LOGINS_BATCH_ROWS);
    assert_int_equal(stats(lg).pending, LOGINS_PENDING_MAX - LOGINS_BATCH_ROWS);
    /* What is left goes out batch after batch (each one is full). */
    while (f.nq)
        answer(&f, ANSWER_OK);
    logins_tick(lg, T0 + S(9), 0);
    while (f.nq)
        answer(&f, ANSWER_OK);
    assert_int_equal(stats(lg).pending, 0);
    assert_int_equal(stats(lg).written, LOGINS_PENDING_MAX - LOGINS_BATCH_ROWS);
    assert_true(logins_add(lg, &ev, T0 + S(10)));
    logins_destroy(&lg);
    fake_done(&f);
}

/* Stopping: what waits goes out batch after batch, without waiting for ticks. */
static void test_drain(void **state)
{
    (void)state;
    fake_t f;
    logins_t *lg = fake_history(&f);
    f.available = false;
    add_n(lg, LOGINS_BATCH_ROWS + 10, T0);
    f.available = true;
    logins_drain(lg);
    assert_int_equal(f.sent, 1);
    answer(&f, ANSWER_OK);
    assert_int_equal(f.sent, 2);
    assert_int_equal(f.q[0].nparams, 10 * 7);
    assert_true(logins_busy(lg));
    answer(&f, ANSWER_OK);
    assert_false(logins_busy(lg));
    assert_int_equal(stats(lg).written, LOGINS_BATCH_ROWS + 10);
    logins_destroy(&lg);
    fake_done(&f);
}

/* ---- pruning ------------------------------------------------------------------------------ */

static void test_prune(void **state)
{
    (void)state;
    fake_t f;
    logins_t *lg = fake_history(&f);
    logins_tick(lg, T0, 0); /* not answering, or the settings not known */
    assert_int_equal(f.sent, 0);
    logins_tick(lg, T0 + S(1), 30);
    assert_int_equal(f.sent, 1);
    assert_non_null(strstr(f.q[0].sql, "DELETE FROM logins"));
    assert_int_equal(f.q[0].nparams, 1);
    assert_string_equal(f.q[0].values[0], "30");
    add_n(lg, 1, T0 + S(1));
    logins_tick(lg, T0 + S(2), 30); /* the INSERT goes beside the DELETE; no second DELETE */
    assert_int_equal(f.sent, 2);
    answer(&f, ANSWER_OK);
    answer(&f, ANSWER_OK);
    logins_tick(lg, T0 + S(1) + LOGINS_PRUNE_MS - 1, 7);
    assert_int_equal(f.sent, 2);
    logins_tick(lg, T0 + S(1) + LOGINS_PRUNE_MS, 7);
    assert_int_equal(f.sent, 3);
    assert_string_equal(f.q[0].values[0], "7");
    answer(&f, ANSWER_UNAVAILABLE); /* tried again in an hour */
    logins_tick(lg, T0 + S(10) + LOGINS_PRUNE_MS, 7);
    assert_int_equal(f.sent, 3);
    logins_destroy(&lg);
    fake_done(&f);
}

/* Destroyed with queries in flight: their answers (the pool's at its own destroy) free it. */
static void test_destroy_in_flight(void **state)
{
    (void)state;
    fake_t f;
    logins_t *lg = fake_history(&f);
    add_n(lg, 5, T0);
    logins_tick(lg, T0, 30);
    assert_int_equal(f.nq, 2);
    logins_destroy(&lg);
    assert_null(lg);
    answer(&f, ANSWER_UNAVAILABLE);
    answer(&f, ANSWER_UNAVAILABLE);
    fake_done(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_once_a_second),
        cmocka_unit_test(test_full_batch_at_once),
        cmocka_unit_test(test_outage),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_prune),
        cmocka_unit_test(test_destroy_in_flight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
