/* lib/store/db.c against a real PostgreSQL: POSTERN_TEST_DATABASE_URL names it (any database
 * will do: the queries touch no table but the batch test's own, made and dropped there).
 * Without it, every test is skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/db.h"
#include "base/log.h"

/* Set while the test is inside db_query(): a callback must never see it set. */
static bool in_db_query;

typedef struct tally {
    int calls, ok, null, error;
    char last[64];
    unsigned answered; /* bit v set when a result's first column was v (0..31) */
    db_t **destroy_on_call; /* when set, the first callback destroys the pool */
    db_t *chain_db;         /* when set, each callback queues one more query */
    int chain_left;
    char seconds[4][16]; /* distinct values of the second column seen (up to 4) */
    int nseconds;
} tally_t;

static const char *test_url(void)
{
    const char *url = getenv("POSTERN_TEST_DATABASE_URL");
    return url && *url ? url : NULL;
}

static void query(db_t *db, const char *sql, int n, const char *const *values, const int *lengths,
                  const int *binary, tally_t *t);

static void tally_cb(void *arg, PGresult *res)
{
    tally_t *t = arg;
    assert_false(in_db_query);
    t->calls++;
    if (!res)
        t->null++;
    else if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        t->ok++;
        if (PQntuples(res) > 0) {
            snprintf(t->last, sizeof t->last, "%s", PQgetvalue(res, 0, 0));
            int v = atoi(t->last);
            if (v >= 0 && v < 32)
                t->answered |= 1u << v;
        }
        if (PQntuples(res) > 0 && PQnfields(res) > 1) {
            const char *v = PQgetvalue(res, 0, 1);
            bool seen = false;
            for (int i = 0; i < t->nseconds; i++)
                seen = seen || strcmp(t->seconds[i], v) == 0;
            if (!seen && t->nseconds < 4)
                snprintf(t->seconds[t->nseconds++], sizeof t->seconds[0], "%s", v);
        }
    } else
        t->error++;
    if (t->destroy_on_call && *t->destroy_on_call) {
        db_destroy(t->destroy_on_call);
        assert_null(*t->destroy_on_call);
    }
    if (t->chain_db && t->chain_left > 0) {
        t->chain_left--;
        query(t->chain_db, "SELECT 1", 0, NULL, NULL, NULL, t);
    }
}

static void query(db_t *db, const char *sql, int n, const char *const *values, const int *lengths,
                  const int *binary, tally_t *t)
{
    in_db_query = true;
    assert_int_equal(db_query(db, sql, n, values, lengths, binary, tally_cb, t), 0);
    in_db_query = false;
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *counter reaches target or timeout_ms pass. */
static void run_until(uv_loop_t *loop, const int *counter, int target, int timeout_ms)
{
    uv_timer_t tick;
    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, tick_cb, 20, 20);
    uv_update_time(loop);
    uint64_t end = uv_now(loop) + (uint64_t)timeout_ms;
    while (*counter < target && uv_now(loop) < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* Destroys the pool and checks that the loop then ends with nothing left open. */
static void finish(uv_loop_t *loop, db_t **db)
{
    db_destroy(db);
    assert_null(*db);
    assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(loop), 0);
}

#define NEED_DATABASE()                                                                    \
    do {                                                                                   \
        if (!test_url()) {                                                                 \
            print_message("skipped: set POSTERN_TEST_DATABASE_URL to run the db tests\n"); \
            skip();                                                                        \
        }                                                                                  \
    } while (0)

static void test_concurrent_queries(void **state)
{
    (void)state;
    NEED_DATABASE();
    uv_loop_t loop;
    uv_loop_init(&loop);
    db_t *db = db_create(&loop, test_url(), 2);
    assert_non_null(db);
    tally_t t = { 0 };
    char nums[10][12];
    for (int i = 0; i < 10; i++) {
        snprintf(nums[i], sizeof nums[i], "%d", i);
        const char *v[] = { nums[i] };
        query(db, "SELECT $1::int + 1, pg_backend_pid(), pg_sleep(0.1)", 1, v, NULL, NULL, &t);
    }
    assert_int_equal(t.calls, 0); /* never from inside db_query */
    run_until(&loop, &t.calls, 10, 20000);
    assert_int_equal(t.ok, 10);
    /* Each query got its own answer (1..10). Which of the last two, on different
     * connections, finishes first is up to the server: FIFO is checked on one connection. */
    assert_int_equal(t.answered, 0x7fe);
    assert_true(db_available(db));
    /* Both connections of the pool served: two server processes answered. */
    assert_int_equal(t.nseconds, 2);
    finish(&loop, &db);
}

static void test_error_result_and_params(void **state)
{
    (void)state;
    NEED_DATABASE();
    uv_loop_t loop;
    uv_loop_init(&loop);
    db_t *db = db_create(&loop, test_url(), 1);
    tally_t err = { 0 }, ok = { 0 };
    query(db, "SELECT 1/0", 0, NULL, NULL, NULL, &err);
    const char bytes[] = { 0, 1, 2 };
    const char *v[] = { NULL, bytes, "it's" };
    const int len[] = { 0, 3, 0 };
    const int bin[] = { 0, 1, 0 };
    query(db, "SELECT ($1::text IS NULL)::text || ' ' || $2::bytea::text || ' ' || $3", 3, v, len,
          bin, &ok);
    run_until(&loop, &ok.calls, 1, 10000);
    assert_int_equal(err.calls, 1); /* FIFO: the first query answered first */
    assert_int_equal(err.error, 1);
    assert_int_equal(ok.ok, 1);
    assert_string_equal(ok.last, "true \\x000102 it's");
    finish(&loop, &db);
}

/* A statement sent a second time is prepared on the connection and runs by name; its
 * answers are the same as unnamed ones. */
static void test_repeated_statement_is_prepared(void **state)
{
    (void)state;
    NEED_DATABASE();
    uv_loop_t loop;
    uv_loop_init(&loop);
    db_t *db = db_create(&loop, test_url(), 1);
    tally_t t = { 0 };
    char nums[5][12];
    for (int i = 0; i < 5; i++) {
        snprintf(nums[i], sizeof nums[i], "%d", i);
        const char *v[] = { nums[i] };
        query(db, "SELECT $1::int + 1", 1, v, NULL, NULL, &t);
    }
    run_until(&loop, &t.calls, 5, 10000);
    assert_int_equal(t.ok, 5);
    assert_int_equal(t.answered, 0x3e); /* 1..5: every call its own parameter */
    tally_t named = { 0 };
    query(db, "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT $1::int + 1'",
          0, NULL, NULL, NULL, &named);
    run_until(&loop, &named.calls, 1, 10000);
    assert_int_equal(named.ok, 1);
    assert_string_equal(named.last, "1");
    /* A statement PostgreSQL will not prepare (two commands) gets its own error, as
     * unnamed, every time. */
    tally_t two = { 0 };
    for (int i = 0; i < 2; i++)
        query(db, "SELECT 1; SELECT 2", 0, NULL, NULL, NULL, &two);
    run_until(&loop, &two.calls, 2, 10000);
    assert_int_equal(two.error, 2);
    finish(&loop, &db);
}

/* A prepared statement whose table changed shape still answers, with the new shape: the
 * connection forgets it and sends the query unnamed. */
static void test_prepared_statement_after_table_change(void **state)
{
    (void)state;
    NEED_DATABASE();
    uv_loop_t loop;
    uv_loop_init(&loop);
    db_t *db = db_create(&loop, test_url(), 1);
    tally_t setup = { 0 };
    query(db, "CREATE TABLE IF NOT EXISTS db_prepare_test (a int)", 0, NULL, NULL, NULL, &setup);
    query(db, "TRUNCATE db_prepare_test", 0, NULL, NULL, NULL, &setup);
    query(db, "ALTER TABLE db_prepare_test DROP COLUMN IF EXISTS b", 0, NULL, NULL, NULL, &setup);
    query(db, "INSERT INTO db_prepare_test VALUES (7)", 0, NULL, NULL, NULL, &setup);
    run_until(&loop, &setup.calls, 4, 10000);
    tally_t before = { 0 };
    for (int i = 0; i < 3; i++)
        query(db, "SELECT * FROM db_prepare_test", 0, NULL, NULL, NULL, &before);
    run_until(&loop, &before.calls, 3, 10000);
    assert_int_equal(before.ok, 3);
    assert_int_equal(before.nseconds, 0); /* one column */
    tally_t alter = { 0 };
    query(db, "ALTER TABLE db_prepare_test ADD COLUMN b text DEFAULT 'x'", 0, NULL, NULL, NULL,
          &alter);
    tally_t after = { 0 };
    query(db, "SELECT * FROM db_prepare_test", 0, NULL, NULL, NULL, &after);
    run_until(&loop, &after.calls, 1, 10000);
    assert_int_equal(after.ok, 1);
    assert_string_equal(after.last, "7");
    assert_int_equal(after.nseconds, 1);
    assert_string_equal(after.seconds[0], "x");
    tally_t drop = { 0 };
    query(db, "DROP TABLE db_prepare_test", 0, NULL, NULL, NULL, &drop);
    run_until(&loop, &drop.calls, 1, 10000);
    finish(&loop, &db);
}

static void test_callback_queues_more(void **state)
{
    (void)state;
    NEED_DATABASE();
    uv_loop_t loop;
    uv_loop_init(&loop);
    db_t *db = db_create(&loop, test_url(), 2);
    tally_t t = { 0 };
    t.chain_db = db;
    t.chain_left = 20;
    query(db, "SELECT 1", 0, NULL, NULL, NULL, &t);
    run_until(&loop, &t.calls, 21, 10000);
    assert_int_equal(t.ok, 21);
    finish(&loop, &db);
}

/* No server to reach (a missing socket directory, a name that does not resolve): every
 * query gets NULL (a temporary failure), none waits forever. */
static void test_unreachable_fails(void **state)
{
    (void)state;
    static const char *const conninfos[] = {
        "postgresql:///postern?host=/nonexistent-postern-test",
        "host=nonexistent.invalid port=5432 dbname=postern",
    };
    for (size_t i = 0; i < sizeof conninfos / sizeof conninfos[0]; i++) {
        print_message("case: %s\n", conninfos[i]);
        uv_loop_t loop;
        uv_loop_init(&loop);
        db_t *db = db_create(&loop, conninfos[i], 2);
        assert_non_null(db);
        assert_false(db_available(db));
        tally_t t = { 0 };
        query(db, "SELECT 1", 0, NULL, NULL, NULL, &t);
        query(db, "SELECT 2", 0, NULL, NULL, NULL, &t);
        assert_int_equal(t.calls, 0);
        run_until(&loop, &t.calls, 2, 20000);
        assert_int_equal(t.null, 2);
        assert_false(db_available(db));
        finish(&loop, &db);
    }
}

/* "user=U dbname=D" of the test server into base, its TCP port into port ("5432" if the
 * URL names none). */
static void test_server_params(char *base, size_t base_len, char *port, size_t port_len)
{
    char *err = NULL;
    PQconninfoOption *opts = PQconninfoParse(test_url(), &err);
    assert_non_null(opts);
    const char *user = "", *dbname = "";
    snprintf(port, port_len, "5432");
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val)
            continue;
        if (strcmp(o->keyword, "user") == 0)
            user = o->val;
        else if (strcmp(o->keyword, "dbname") == 0)
            dbname = o->val;
        else if (strcmp(o->keyword, "port") == 0)
            snprintf(port, port_len, "%s", o->val);
    }
    snprintf(base, base_len, "user='%s' dbname='%s'", user, dbname);
    PQconninfoFree(opts);
}

/* The test server by a host name: libpq gets the address as hostaddr and connects over TCP. */
static void test_connect_by_host_name(void **state)
{
    (void)state;
    NEED_DATABASE();
    char base[256], port[16];
    test_server_params(base, sizeof base, port, sizeof port);
    static const struct {
        const char *hosts;
        const char *ports; /* %s is the server's port */
    } cases[] = {
        { "localhost", "%s" },
        { "nonexistent.invalid,localhost", "%s" }, /* a name that does not resolve is skipped */
        { "127.0.0.1,localhost", "1,%s" },         /* a port per host */
        { "/nonexistent-postern-test,localhost", "%s" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char ports[64], conninfo[512];
        snprintf(ports, sizeof ports, cases[i].ports, port);
        snprintf(conninfo, sizeof conninfo, "host=%s port=%s %s", cases[i].hosts, ports, base);
        print_message("case: %s\n", conninfo);
        uv_loop_t loop;
        uv_loop_init(&loop);
        db_t *db = db_create(&loop, conninfo, 1);
        assert_non_null(db);
        tally_t t = { 0 };
        query(db, "SELECT inet_server_port()", 0, NULL, NULL, NULL, &t);
        run_until(&loop, &t.calls, 1, 20000);
        assert_int_equal(t.ok, 1);
        assert_string_equal(t.last, port); /* over TCP: a socket connection gives NULL */
        assert_true(db_available(db));
        finish(&loop, &db);
    }
}

static void test_destroy_while_resolving(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    /* db_create starts the lookups; the loop has not run, so they are all still in flight. */
    db_t *db = db_create(&loop, "host=localhost,nonexistent.invalid port=1 dbname=postern", 3);
    assert_non_null(db);
    tally_t t = { 0 };
    query(db, "SELECT 1", 0, NULL, NULL, NULL, &t);
    db_destroy(&db);
    assert_int_equal(t.null, 1);
    /* The orphaned lookups finish (or are cancelled) with the pool gone; nothing stays open. */
    finish(&loop, &db);
    assert_int_equal(t.calls, 1);
}

static void test_bad_conninfo(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    assert_null(db_create(&loop, "host='unterminated", 1));
    assert_int_equal(db_query(NULL, "SELECT 1", 0, NULL, NULL, NULL, tally_cb, NULL), -1);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_destroy_fails_pending(void **state)
{
    (void)state;
    NEED_DATABASE();
    uv_loop_t loop;
    uv_loop_init(&loop);
    db_t *db = db_create(&loop, test_url(), 1);
    tally_t first = { 0 }, t = { 0 };
    query(db, "SELECT 1", 0, NULL, NULL, NULL, &first);
    run_until(&loop, &first.calls, 1, 10000);
    assert_int_equal(first.ok, 1);
    for (int i = 0; i < 5; i++)
        query(db, "SELECT pg_sleep(0.5)", 0, NULL, NULL, NULL, &t);
    /* One in flight, four queued: all five get NULL, at once. */
    db_destroy(&db);
    assert_int_equal(t.calls, 5);
    assert_int_equal(t.null, 5);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_destroy_inside_callback(void **state)
{
    (void)state;
    NEED_DATABASE();
    uv_loop_t loop;
    uv_loop_init(&loop);
    db_t *db = db_create(&loop, test_url(), 2);
    tally_t t = { 0 };
    t.destroy_on_call = &db;
    for (int i = 0; i < 4; i++)
        query(db, "SELECT pg_sleep(0.05)", 0, NULL, NULL, NULL, &t);
    run_until(&loop, &t.calls, 4, 10000);
    assert_null(db);
    assert_int_equal(t.calls, 4);
    assert_true(t.ok >= 1);
    assert_int_equal(t.ok + t.null, 4);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* What a batch's callback saw. */
typedef struct batch_tally {
    int calls;
    bool committed, got_results;
    ExecStatusType status[8];
    char first[8][32];
} batch_tally_t;

static void batch_cb(void *arg, bool committed, PGresult *const *results, int n)
{
    batch_tally_t *t = arg;
    assert_false(in_db_query);
    t->calls++;
    t->committed = committed;
    t->got_results = results != NULL;
    for (int i = 0; results && i < n && i < 8; i++) {
        t->status[i] = PQresultStatus(results[i]);
        snprintf(t->first[i], sizeof t->first[i], "%s",
                 PQntuples(results[i]) > 0 ? PQgetvalue(results[i], 0, 0) : "");
    }
}

static void batch(db_t *db, int n, const db_stmt_in_t *stmts, batch_tally_t *t)
{
    in_db_query = true;
    assert_int_equal(db_batch(db, n, stmts, batch_cb, t), 0);
    in_db_query = false;
}

/* A batch runs as one transaction: every statement's result in order when all succeed;
 * when one fails, nothing of it stays (the rows inserted before it are gone), its result is
 * the error and those after it were not run. Statements repeated within and across batches
 * are prepared in the pipeline and give the same answers. Binary parameters are the
 * caller's. */
static void test_batch(void **state)
{
    (void)state;
    NEED_DATABASE();
    uv_loop_t loop;
    uv_loop_init(&loop);
    db_t *db = db_create(&loop, test_url(), 1);
    tally_t setup = { 0 };
    query(db, "DROP TABLE IF EXISTS postern_db_test_batch", 0, NULL, NULL, NULL, &setup);
    query(db, "CREATE TABLE postern_db_test_batch (v bytea)", 0, NULL, NULL, NULL, &setup);
    run_until(&loop, &setup.calls, 2, 10000);
    assert_int_equal(setup.null, 0); /* (a command's result counts as an error here) */

    const char raw[] = { 'a', 0, 'b' };
    const char *bv[] = { raw };
    const int blen[] = { 3 };
    const int bbin[] = { 1 };
    const char *tv[] = { "41" };
    const char *ins = "INSERT INTO postern_db_test_batch VALUES ($1) RETURNING length(v)";
    for (int round = 0; round < 3; round++) {
        db_stmt_in_t ok[] = {
            { ins, 1, bv, blen, bbin },
            { "SELECT $1::int + 1", 1, tv, NULL, NULL },
            { ins, 1, bv, blen, bbin },
        };
        batch_tally_t t = { 0 };
        batch(db, 3, ok, &t);
        assert_int_equal(t.calls, 0);
        run_until(&loop, &t.calls, 1, 10000);
        assert_int_equal(t.calls, 1);
        assert_true(t.committed);
        assert_true(t.got_results);
        assert_int_equal(t.status[0], PGRES_TUPLES_OK);
        assert_string_equal(t.first[0], "3");
        assert_string_equal(t.first[1], "42");
        assert_string_equal(t.first[2], "3");
    }
    db_stmt_in_t bad[] = {
        { ins, 1, bv, blen, bbin },
        { "SELECT 1/0", 0, NULL, NULL, NULL },
        { ins, 1, bv, blen, bbin },
    };
    batch_tally_t t = { 0 };
    batch(db, 3, bad, &t);
    run_until(&loop, &t.calls, 1, 10000);
    assert_int_equal(t.calls, 1);
    assert_false(t.committed);
    assert_true(t.got_results);
    assert_int_equal(t.status[0], PGRES_TUPLES_OK); /* ran, then rolled back */
    assert_int_equal(t.status[1], PGRES_FATAL_ERROR);
    assert_int_equal(t.status[2], PGRES_PIPELINE_ABORTED);

    /* The connection is usable as before, and only the good batches' rows are there. */
    tally_t count = { 0 };
    query(db, "SELECT count(*) FROM postern_db_test_batch WHERE v = '\\x610062'", 0, NULL, NULL,
          NULL, &count);
    query(db, "DROP TABLE postern_db_test_batch", 0, NULL, NULL, NULL, &count);
    run_until(&loop, &count.calls, 2, 10000);
    assert_int_equal(count.ok, 1);
    assert_string_equal(count.last, "6");

    /* Out of range: refused, no callback. */
    assert_int_equal(db_batch(db, 0, bad, batch_cb, &t), -1);
    assert_int_equal(db_batch(NULL, 1, bad, batch_cb, &t), -1);
    finish(&loop, &db);
}

/* A batch still waiting when the pool goes gets its one callback, without results. */
static void test_batch_destroyed(void **state)
{
    (void)state;
    NEED_DATABASE();
    uv_loop_t loop;
    uv_loop_init(&loop);
    db_t *db = db_create(&loop, test_url(), 1);
    db_stmt_in_t one[] = { { "SELECT 1", 0, NULL, NULL, NULL },
                           { "SELECT 2", 0, NULL, NULL, NULL } };
    batch_tally_t t = { 0 };
    batch(db, 2, one, &t);
    db_destroy(&db);
    assert_int_equal(t.calls, 1);
    assert_false(t.committed);
    assert_false(t.got_results);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    log_init("test_db");
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_queries),
        cmocka_unit_test(test_error_result_and_params),
        cmocka_unit_test(test_repeated_statement_is_prepared),
        cmocka_unit_test(test_prepared_statement_after_table_change),
        cmocka_unit_test(test_callback_queues_more),
        cmocka_unit_test(test_unreachable_fails),
        cmocka_unit_test(test_connect_by_host_name),
        cmocka_unit_test(test_destroy_while_resolving),
        cmocka_unit_test(test_bad_conninfo),
        cmocka_unit_test(test_destroy_fails_pending),
        cmocka_unit_test(test_destroy_inside_callback),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_batch_destroyed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
