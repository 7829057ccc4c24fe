/* lib/store/mailstore.c and migration 0007 against a real PostgreSQL, and the mailbox
 * watch registry of lib/bus/mailwatch.c. POSTERN_TEST_DATABASE_URL names the database
 * (tests/run.sh starts one); the migrations are applied to it, and every test works on
 * users of its own. Without the variable the database tests are skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/log.h"
#include "bus/mailwatch.h"
#include "store/mailstore.h"
#include "store/migrate.h"

static const char *test_url(void)
{
    const char *url = getenv("POSTERN_TEST_DATABASE_URL");
    return url && *url ? url : NULL;
}

#define NEED_DATABASE()                                                                     \
    do {                                                                                    \
        if (!test_url()) {                                                                  \
            print_message("skipped: set POSTERN_TEST_DATABASE_URL to run the store tests\n"); \
            skip();                                                                         \
        }                                                                                   \
    } while (0)

/* ---- a fixture: the loop, the pool, a blocking connection for setup, a fresh user ---- */

typedef struct fx {
    uv_loop_t loop;
    db_t *db;
    mailstore_t *ms;
    PGconn *pg;
    char address[128];
    int64_t user;
} fx_t;

static PGresult *sql(fx_t *f, const char *q)
{
    PGresult *res = PQexec(f->pg, q);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
        fail_msg("%s: %s", q, PQresultErrorMessage(res));
    return res;
}

static long long sql_ll(fx_t *f, const char *q)
{
    PGresult *res = sql(f, q);
    assert_true(PQntuples(res) >= 1);
    long long v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

/* A new user in a new domain, named after the test and the time. */
static int64_t new_user(fx_t *f, char *address, size_t len)
{
    static unsigned n;
    char q[512];
    snprintf(address, len, "u%ld-%u-%d@store%ld-%u.test", (long)time(NULL), n, getpid(),
             (long)time(NULL), n);
    n++;
    snprintf(q, sizeof q,
             "WITH d AS (INSERT INTO domains (name) VALUES (split_part('%s', '@', 2)) "
             "RETURNING id) INSERT INTO users (domain_id, address, secret) "
             "SELECT id, '%s', 'x' FROM d RETURNING id", address, address);
    return sql_ll(f, q);
}

static int fx_setup(void **state)
{
    if (!test_url()) {
        *state = NULL;
        return 0;
    }
    fx_t *f = calloc(1, sizeof *f);
    f->pg = PQconnectdb(test_url());
    if (PQstatus(f->pg) != CONNECTION_OK) {
        print_error("cannot connect: %s", PQerrorMessage(f->pg));
        return -1;
    }
    char err[512];
    if (migrate_apply(f->pg, err, sizeof err) < 0) {
        print_error("migrations: %s", err);
        return -1;
    }
    uv_loop_init(&f->loop);
    f->db = db_create(&f->loop, test_url(), 4);
    f->ms = mailstore_create(f->db);
    /* The pool connects in the background: let it, so that a test which then blocks the
     * loop (filling a table through f->pg) does not leave it half-connected. */
    uv_update_time(&f->loop);
    uint64_t end = uv_now(&f->loop) + 10000;
    while (!db_available(f->db) && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    f->user = new_user(f, f->address, sizeof f->address);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    fx_t *f = *state;
    if (!f)
        return 0;
    mailstore_destroy(&f->ms);
    db_destroy(&f->db);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
    PQfinish(f->pg);
    free(f);
    return 0;
}

static void tick_cb(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until *counter reaches target (or 60 s pass: a failure). */
static void wait_for(fx_t *f, const int *counter, int target)
{
    uv_timer_t tick;
    uv_timer_init(&f->loop, &tick);
    uv_timer_start(&tick, tick_cb, 20, 20);
    uv_update_time(&f->loop);
    uint64_t end = uv_now(&f->loop) + 60000;
    while (*counter < target && uv_now(&f->loop) < end)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(*counter, target);
}

/* ---- what the callbacks saw --------------------------------------------------------- */

typedef struct got {
    int calls, status;
    int64_t id;
    uint32_t uidvalidity, uid;
    uint64_t modseq, total;
    size_t n;
    uint32_t a[64], b[64];    /* uids: copies, expunges, store rows */
    int result[64];
    char text[4096];          /* names, flags, bytes joined */
    mailstore_selected_t *sel;  /* a copy, freed by the test */
    int64_t recent_uid;
    bool complete;
} got_t;

static void user_cb(void *arg, int status, int64_t id)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->id = id;
}

static void mailbox_cb(void *arg, int status, int64_t id, uint32_t uidvalidity)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->id = id;
    g->uidvalidity = uidvalidity;
}

static void list_cb(void *arg, int status, const mailstore_mailbox_t *boxes, size_t n)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->n = n;
    g->text[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char one[256];
        snprintf(one, sizeof one, "%s%s:%s:%lld:%lld:%c", i ? " " : "", boxes[i].name,
                 boxes[i].special_use ? boxes[i].special_use : "-",
                 (long long)boxes[i].messages, (long long)boxes[i].unseen,
                 boxes[i].subscribed ? 's' : 'u');
        strncat(g->text, one, sizeof g->text - strlen(g->text) - 1);
        g->uidvalidity = boxes[i].uidvalidity;
        g->id = boxes[i].id;
    }
}

static void append_cb(void *arg, int status, const mailstore_appended_t *a)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    if (a) {
        g->id = a->mailbox_id;
        g->uid = a->uid;
        g->uidvalidity = a->uidvalidity;
        g->modseq = a->modseq;
    }
}

static void select_cb(void *arg, int status, const mailstore_selected_t *sel,
                      int64_t recent_uid)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->sel = sel ? mailstore_selected_copy(sel) : NULL;
    g->recent_uid = recent_uid;
}

static void join_flags(char *out, size_t cap, const char *const *flags, size_t n)
{
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (i)
            strncat(out, " ", cap - strlen(out) - 1);
        strncat(out, flags[i], cap - strlen(out) - 1);
    }
}

static void meta_cb(void *arg, int status, const mailstore_meta_t *msgs, size_t n)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->n = n;
    g->text[0] = '\0';
    for (size_t i = 0; i < n && i < 64; i++) {
        char flags[256], one[512];
        join_flags(flags, sizeof flags, msgs[i].flags, msgs[i].nflags);
        snprintf(one, sizeof one, "%s%u:%llu:[%s]:%s:%s", i ? " " : "", msgs[i].uid,
                 (unsigned long long)msgs[i].size, flags,
                 msgs[i].envelope ? msgs[i].envelope : "-",
                 msgs[i].has_hdr_date ? "d" : "-");
        strncat(g->text, one, sizeof g->text - strlen(g->text) - 1);
        g->a[i] = msgs[i].uid;
        g->modseq = msgs[i].modseq;
    }
}

static void raw_cb(void *arg, int status, const unsigned char *data, size_t len, uint64_t total)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->n = len;
    g->total = total;
    size_t take = len < sizeof g->text - 1 ? len : sizeof g->text - 1;
    if (data)
        memcpy(g->text, data, take);
    g->text[data ? take : 0] = '\0';
}

static void done_cb(void *arg, int status)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
}

static void copy_cb(void *arg, int status, const mailstore_copied_t *c)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    if (c) {
        g->n = c->n;
        g->id = c->mailbox_id;
        g->uidvalidity = c->uidvalidity;
        for (size_t i = 0; i < c->n && i < 64; i++) {
            g->a[i] = c->src_uids[i];
            g->b[i] = c->dst_uids[i];
        }
    }
}

static void expunge_cb(void *arg, int status, const mailstore_expunged_t *e)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    if (e) {
        g->n = e->n;
        g->modseq = e->modseq;
        for (size_t i = 0; i < e->n && i < 64; i++)
            g->a[i] = e->uids[i];
    }
}

static void store_cb(void *arg, int status, const mailstore_stored_t *rows, size_t n)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->n = n;
    g->text[0] = '\0';
    for (size_t i = 0; i < n && i < 64; i++) {
        char flags[256], one[300];
        join_flags(flags, sizeof flags, rows[i].msg.flags, rows[i].msg.nflags);
        snprintf(one, sizeof one, "%s%u:[%s]", i ? " " : "", rows[i].msg.uid, flags);
        strncat(g->text, one, sizeof g->text - strlen(g->text) - 1);
        g->a[i] = rows[i].msg.uid;
        g->result[i] = rows[i].result;
        if (rows[i].result == MAILSTORE_STORED_CHANGED)
            g->modseq = rows[i].msg.modseq;
    }
}

static void changes_cb(void *arg, int status, const mailstore_changes_t *ch)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->text[0] = '\0';
    if (!ch)
        return;
    g->modseq = ch->highestmodseq;
    g->complete = ch->expunged_complete;
    g->n = ch->nexpunged;
    for (size_t i = 0; i < ch->nexpunged && i < 64; i++)
        g->b[i] = ch->expunged[i];
    for (size_t i = 0; i < ch->nmsgs; i++) {
        char flags[256], one[300];
        join_flags(flags, sizeof flags, ch->msgs[i].flags, ch->msgs[i].nflags);
        snprintf(one, sizeof one, "%s%u:[%s]", i ? " " : "", ch->msgs[i].uid, flags);
        strncat(g->text, one, sizeof g->text - strlen(g->text) - 1);
    }
}

static void listing_cb(void *arg, int status, int64_t mailbox_id, uint32_t uidvalidity,
                       const mailstore_uidsize_t *msgs, size_t n)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->id = mailbox_id;
    g->uidvalidity = uidvalidity;
    g->n = n;
    for (size_t i = 0; i < n && i < 64; i++) {
        g->a[i] = msgs[i].uid;
        g->b[i] = (uint32_t)msgs[i].size;
    }
}

/* Synchronous helpers: start a call, run the loop until its callback ran once. */
#define RUN(f, g, call)                                  \
    do {                                                 \
        memset(&(g), 0, sizeof(g));                      \
        assert_int_equal((call), 0);                     \
        assert_int_equal((g).calls, 0);                  \
        wait_for((f), &(g).calls, 1);                    \
    } while (0)

static const mailstore_range_t ALL[] = { { 1, UINT32_MAX } };
static const mailstore_uidset_t ALL_SET = { ALL, 1 };

static void append_text(fx_t *f, const char *box, const char *text, const char *flag)
{
    got_t g;
    const char *flags[1] = { flag };
    RUN(f, g, mailstore_append(f->ms, f->user, box, flags, flag ? 1 : 0, 0, text, strlen(text),
                               append_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
}

static void deliver(fx_t *f, const char *text)
{
    char q[1024];
    snprintf(q, sizeof q, "SELECT postern_deliver('q', 's', ARRAY['%s'], '%s'::bytea, '{}', '')",
             f->address, text);
    PQclear(sql(f, q));
}

/* ---- tests -------------------------------------------------------------------------- */

static void test_user_and_special_use(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    got_t g;
    RUN(f, g, mailstore_user_id(f->ms, f->address, user_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.id, f->user);
    RUN(f, g, mailstore_user_id(f->ms, "nobody@nowhere.test", user_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);

    /* A new user has INBOX and the four special-use folders (RFC 6154), subscribed. */
    RUN(f, g, mailstore_list(f->ms, f->user, NULL, true, list_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_string_equal(g.text, "Drafts:\\Drafts:0:0:s INBOX:-:0:0:s Junk:\\Junk:0:0:s "
                                "Sent:\\Sent:0:0:s Trash:\\Trash:0:0:s");
    /* postern_inbox() still finds the INBOX created by the trigger. */
    char q[256];
    snprintf(q, sizeof q, "SELECT postern_inbox(%lld) = (SELECT id FROM mailboxes WHERE "
             "user_id = %lld AND name = 'INBOX')::bigint", (long long)f->user,
             (long long)f->user);
    PGresult *res = sql(f, q);
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);

    deliver(f, "one");
    append_text(f, "INBOX", "two", "\\Seen");
    RUN(f, g, mailstore_list(f->ms, f->user, "inbox", true, list_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_string_equal(g.text, "INBOX:-:2:1:s");
    RUN(f, g, mailstore_list(f->ms, f->user, "INBOX", false, list_cb, &g));
    assert_string_equal(g.text, "INBOX:-:-1:-1:s");
    RUN(f, g, mailstore_list(f->ms, f->user, "nope", false, list_cb, &g));
    assert_int_equal(g.n, 0);

    /* pop3d's listing of the same INBOX. */
    RUN(f, g, mailstore_listing(f->ms, f->user, listing_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.a[0], 1);
    assert_int_equal(g.b[0], 3);
    assert_int_equal(g.a[1], 2);
}

static void test_append_select_fetch(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    got_t g;
    const char *flags[3] = { "\\Flagged", "$Work", "\\Seen" };
    RUN(f, g, mailstore_append(f->ms, f->user, "Drafts", flags, 3, 1700000000, "Subject: a\r\n\r\nbody\r\n",
                               21, append_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.uid, 1);
    uint32_t validity = g.uidvalidity;
    int64_t drafts = g.id;
    RUN(f, g, mailstore_append(f->ms, f->user, "Drafts", NULL, 0, 0, "x", 1, append_cb, &g));
    assert_int_equal(g.uid, 2);
    RUN(f, g, mailstore_append(f->ms, f->user, "Nope", NULL, 0, 0, "x", 1, append_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);

    RUN(f, g, mailstore_select(f->ms, f->user, "Drafts", select_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    mailstore_selected_t *s = g.sel;
    assert_non_null(s);
    assert_int_equal(s->id, drafts);
    assert_int_equal(s->uidvalidity, validity);
    assert_int_equal(s->uidnext, 3);
    assert_int_equal(s->count, 2);
    assert_int_equal(s->unseen, 1);
    assert_int_equal(s->uids[0], 1);
    assert_int_equal(s->uids[1], 2);
    assert_true(s->modseqs[1] > s->modseqs[0]);
    assert_int_equal(s->highestmodseq, s->modseqs[1]);
    assert_int_equal(s->nkeywords, 1);
    assert_string_equal(s->keywords[0], "$Work");
    assert_int_equal(s->flags[0], MAILSTORE_F_SEEN | MAILSTORE_F_FLAGGED |
                                      (UINT64_C(1) << MAILSTORE_F_KEYWORD0));
    assert_int_equal(s->flags[1], 0);
    mailstore_selected_free(&g.sel);
    assert_null(g.sel);
    RUN(f, g, mailstore_select(f->ms, f->user, "Nope", select_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);
    assert_null(g.sel);

    mailstore_range_t one[] = { { 1, 1 } };
    mailstore_uidset_t set = { one, 1 };
    RUN(f, g, mailstore_fetch_meta(f->ms, drafts, &set, meta_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_string_equal(g.text, "1:21:[$Work \\Flagged \\Seen]:-:-");
    RUN(f, g, mailstore_save_cache(f->ms, drafts, 1, "(\"env\")", "(\"text\")", NULL, true,
                                   1699999999, done_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    RUN(f, g, mailstore_save_cache(f->ms, drafts, 99, "x", NULL, NULL, false, 0, done_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);
    RUN(f, g, mailstore_fetch_meta(f->ms, drafts, &ALL_SET, meta_cb, &g));
    assert_string_equal(g.text, "1:21:[$Work \\Flagged \\Seen]:(\"env\"):d 2:1:[]:-:-");
    /* Without the structures: the same messages and flags, the cached forms not read. */
    RUN(f, g, mailstore_fetch_flags(f->ms, drafts, &ALL_SET, meta_cb, &g));
    assert_string_equal(g.text, "1:21:[$Work \\Flagged \\Seen]:-:d 2:1:[]:-:-");

    /* The raw bytes in chunks: offset and length, total size each time. */
    RUN(f, g, mailstore_fetch_raw(f->ms, drafts, 1, 0, 9, raw_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_string_equal(g.text, "Subject: ");
    assert_int_equal(g.total, 21);
    RUN(f, g, mailstore_fetch_raw(f->ms, drafts, 1, 9, 100, raw_cb, &g));
    assert_string_equal(g.text, "a\r\n\r\nbody\r\n");
    RUN(f, g, mailstore_fetch_raw(f->ms, drafts, 1, 21, 100, raw_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.n, 0);
    RUN(f, g, mailstore_fetch_raw(f->ms, drafts, 7, 0, 100, raw_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);

    /* Once read whole, a message is answered from the process's cache: the same slices,
     * never from inside the call (RUN checks), even after its row is gone. Another process
     * (a store made afresh) reads PostgreSQL and finds nothing. */
    RUN(f, g, mailstore_fetch_raw(f->ms, drafts, 1, 0, 100, raw_cb, &g));
    assert_string_equal(g.text, "Subject: a\r\n\r\nbody\r\n");
    char q[160];
    snprintf(q, sizeof q, "DELETE FROM messages WHERE mailbox_id = %lld AND uid = 1",
             (long long)drafts);
    PQclear(sql(f, q));
    RUN(f, g, mailstore_fetch_raw(f->ms, drafts, 1, 0, 9, raw_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_string_equal(g.text, "Subject: ");
    assert_int_equal(g.total, 21);
    RUN(f, g, mailstore_fetch_raw(f->ms, drafts, 1, 9, 100, raw_cb, &g));
    assert_string_equal(g.text, "a\r\n\r\nbody\r\n");
    RUN(f, g, mailstore_fetch_raw(f->ms, drafts, 1, 21, 100, raw_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.n, 0);
    assert_int_equal(g.total, 21);
    mailstore_t *other = mailstore_create(f->db);
    RUN(f, g, mailstore_fetch_raw(other, drafts, 1, 0, 100, raw_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);
    mailstore_destroy(&other);
}

static void recent_cb(void *arg, int status, uint32_t old)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->uid = old;
}

/* \Recent: the first claim up to a UID takes what lies above the old mark; a look (EXAMINE)
 * leaves the mark alone; a claim never moves it down. */
static void test_claim_recent(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    got_t g;
    RUN(f, g, mailstore_append(f->ms, f->user, "Junk", NULL, 0, 0, "x", 1, append_cb, &g));
    int64_t junk = g.id;
    RUN(f, g, mailstore_append(f->ms, f->user, "Junk", NULL, 0, 0, "y", 1, append_cb, &g));
    RUN(f, g, mailstore_claim_recent(f->ms, junk, 2, false, recent_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.uid, 0);
    RUN(f, g, mailstore_claim_recent(f->ms, junk, 1, true, recent_cb, &g));
    assert_int_equal(g.uid, 0);
    RUN(f, g, mailstore_claim_recent(f->ms, junk, 2, true, recent_cb, &g));
    assert_int_equal(g.uid, 1);
    RUN(f, g, mailstore_claim_recent(f->ms, junk, 1, true, recent_cb, &g));
    assert_int_equal(g.uid, 2);
    RUN(f, g, mailstore_claim_recent(f->ms, junk, 2, false, recent_cb, &g));
    assert_int_equal(g.uid, 2);
    /* SELECT brings the mark with the mailbox; again with nothing changed (the answer kept),
     * the same; after a new message, the new one and the same mark. */
    for (int round = 0; round < 3; round++) {
        if (round == 2)
            RUN(f, g, mailstore_append(f->ms, f->user, "Junk", NULL, 0, 0, "z", 1, append_cb, &g));
        RUN(f, g, mailstore_select(f->ms, f->user, "Junk", select_cb, &g));
        assert_int_equal(g.status, MAILSTORE_OK);
        assert_int_equal(g.recent_uid, 2);
        assert_int_equal(g.sel->count, round == 2 ? 3 : 2);
        assert_int_equal(g.sel->uids[g.sel->count - 1], g.sel->count);
        mailstore_selected_free(&g.sel);
    }
    RUN(f, g, mailstore_claim_recent(f->ms, 0, 2, true, recent_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);
}

static void test_large_message_chunks(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    /* 3 MB with a known pattern, read back 1 MB at a time. */
    size_t len = 3 * 1024 * 1024 + 17;
    char *big = malloc(len);
    for (size_t i = 0; i < len; i++)
        big[i] = (char)('a' + i % 26);
    got_t g;
    RUN(f, g, mailstore_append(f->ms, f->user, "Junk", NULL, 0, 0, big, len, append_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    int64_t junk = g.id;
    uint32_t uid = g.uid;
    uint64_t off = 0;
    int chunks = 0;
    for (;;) {
        RUN(f, g, mailstore_fetch_raw(f->ms, junk, uid, off, 1024 * 1024, raw_cb, &g));
        assert_int_equal(g.status, MAILSTORE_OK);
        assert_int_equal(g.total, len);
        if (g.n == 0)
            break;
        assert_memory_equal(g.text, big + off, strlen(g.text));
        off += g.n;
        chunks++;
    }
    assert_int_equal(off, len);
    assert_int_equal(chunks, 4);
    free(big);
}

static void test_store_flags_and_changes(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    for (int i = 0; i < 4; i++)
        deliver(f, "m");
    got_t g;
    RUN(f, g, mailstore_select(f->ms, f->user, "INBOX", select_cb, &g));
    mailstore_selected_t *s = g.sel;
    int64_t inbox = s->id;
    uint64_t known = s->highestmodseq;
    assert_int_equal(s->count, 4);
    mailstore_selected_free(&g.sel);

    mailstore_range_t r13[] = { { 3, 3 }, { 1, 2 }, { 2, 2 } };
    mailstore_uidset_t set = { r13, 3 };
    const char *seen[] = { "\\Seen", "$Label" };
    RUN(f, g, mailstore_store(f->ms, inbox, &set, MAILSTORE_STORE_ADD, seen, 2, -1, store_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_string_equal(g.text, "1:[$Label \\Seen] 2:[$Label \\Seen] 3:[$Label \\Seen]");
    assert_int_equal(g.result[0], MAILSTORE_STORED_CHANGED);
    uint64_t after_add = g.modseq;
    assert_true(after_add > known);

    /* Unchanged when the flags are so already; MODIFIED for UNCHANGEDSINCE below. */
    mailstore_range_t r14[] = { { 1, 4 } };
    mailstore_uidset_t set14 = { r14, 1 };
    RUN(f, g, mailstore_store(f->ms, inbox, &set14, MAILSTORE_STORE_ADD, seen, 1,
                              (int64_t)known, store_cb, &g));
    assert_int_equal(g.n, 4);
    assert_int_equal(g.result[0], MAILSTORE_STORED_MODIFIED);
    assert_int_equal(g.result[1], MAILSTORE_STORED_MODIFIED);
    assert_int_equal(g.result[2], MAILSTORE_STORED_MODIFIED);
    assert_int_equal(g.result[3], MAILSTORE_STORED_CHANGED); /* uid 4 was not touched */
    RUN(f, g, mailstore_store(f->ms, inbox, &set14, MAILSTORE_STORE_ADD, seen, 1, -1, store_cb, &g));
    for (int i = 0; i < 4; i++)
        assert_int_equal(g.result[i], MAILSTORE_STORED_UNCHANGED);
    const char *label[] = { "$Label" };
    RUN(f, g, mailstore_store(f->ms, inbox, &set14, MAILSTORE_STORE_REMOVE, label, 1, -1,
                              store_cb, &g));
    assert_string_equal(g.text, "1:[\\Seen] 2:[\\Seen] 3:[\\Seen] 4:[\\Seen]");
    uint64_t after_remove = g.modseq;
    const char *none[] = { NULL };
    mailstore_range_t r4[] = { { 4, 4 } };
    mailstore_uidset_t set4 = { r4, 1 };
    RUN(f, g, mailstore_store(f->ms, inbox, &set4, MAILSTORE_STORE_SET, none, 0, -1, store_cb, &g));
    assert_string_equal(g.text, "4:[]");
    RUN(f, g, mailstore_store(f->ms, 0, &set4, MAILSTORE_STORE_SET, none, 0, -1, store_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);

    /* A writer that knows nothing of modseqs (a bare UPDATE): the trigger still gives the
     * row the mailbox's next modseq. */
    RUN(f, g, mailstore_changes(f->ms, inbox, after_remove, 4, changes_cb, &g));
    uint64_t before = g.modseq;
    char q[200];
    snprintf(q, sizeof q, "UPDATE messages SET flags = '{$Bare}' WHERE mailbox_id = %lld "
             "AND uid = 2", (long long)inbox);
    PQclear(sql(f, q));
    RUN(f, g, mailstore_changes(f->ms, inbox, before, 4, changes_cb, &g));
    assert_string_equal(g.text, "2:[$Bare]");
    assert_int_equal(g.modseq, before + 1);
    after_remove = g.modseq;

    /* Since after_remove: only uid 4 changed; a new delivery shows up by UID. */
    deliver(f, "late");
    RUN(f, g, mailstore_changes(f->ms, inbox, after_remove, 4, changes_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_string_equal(g.text, "5:[]");
    assert_int_equal(g.n, 0);
    assert_true(g.complete);
    assert_true(g.modseq > after_remove);
    uint64_t now = g.modseq;
    RUN(f, g, mailstore_changes(f->ms, inbox, now, 5, changes_cb, &g));
    assert_string_equal(g.text, "");
    RUN(f, g, mailstore_changes(f->ms, -1, 0, 0, changes_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);
}

static void test_expunge_and_tracking(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    for (int i = 0; i < 5; i++)
        append_text(f, "Sent", "m", i % 2 ? "\\Deleted" : NULL);
    got_t g;
    RUN(f, g, mailstore_select(f->ms, f->user, "Sent", select_cb, &g));
    int64_t sent = g.sel->id;
    uint64_t known = g.sel->highestmodseq;
    mailstore_selected_free(&g.sel);

    /* UID EXPUNGE 4:5 removes only 4 (\Deleted and in the set). */
    mailstore_range_t r45[] = { { 4, 5 } };
    mailstore_uidset_t set45 = { r45, 1 };
    RUN(f, g, mailstore_expunge(f->ms, sent, &set45, true, expunge_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.a[0], 4);
    uint64_t first = g.modseq;
    assert_true(first > known);
    /* EXPUNGE: the other \Deleted one. */
    RUN(f, g, mailstore_expunge(f->ms, sent, NULL, true, expunge_cb, &g));
    assert_int_equal(g.n, 1);
    assert_int_equal(g.a[0], 2);
    /* Nothing left to expunge: the modseq stays. */
    uint64_t second = g.modseq;
    RUN(f, g, mailstore_expunge(f->ms, sent, NULL, true, expunge_cb, &g));
    assert_int_equal(g.n, 0);
    assert_int_equal(g.modseq, second);
    /* pop3d's form: a set, whatever the flags. */
    mailstore_range_t r1[] = { { 1, 1 } };
    mailstore_uidset_t set1 = { r1, 1 };
    RUN(f, g, mailstore_expunge(f->ms, sent, &set1, false, expunge_cb, &g));
    assert_int_equal(g.n, 1);

    RUN(f, g, mailstore_changes(f->ms, sent, known, 5, changes_cb, &g));
    assert_int_equal(g.n, 3);
    assert_int_equal(g.b[0], 1);
    assert_int_equal(g.b[1], 2);
    assert_int_equal(g.b[2], 4);
    RUN(f, g, mailstore_changes(f->ms, sent, first, 5, changes_cb, &g));
    assert_int_equal(g.n, 2);
    assert_int_equal(g.b[0], 1);
    assert_int_equal(g.b[1], 2);

    /* Records older than the retention are dropped at the next change; the floor then
     * says that a session knowing less must compare UID lists. */
    char q[256];
    snprintf(q, sizeof q, "UPDATE expunged SET at = now() - interval '31 days' "
             "WHERE mailbox_id = %lld AND uid = 4", (long long)sent);
    PQclear(sql(f, q));
    append_text(f, "Sent", "m", NULL);
    RUN(f, g, mailstore_changes(f->ms, sent, known, 6, changes_cb, &g));
    assert_int_equal(g.n, 2);
    assert_false(g.complete);
    RUN(f, g, mailstore_changes(f->ms, sent, first, 6, changes_cb, &g));
    assert_true(g.complete);
}

static void test_copy_move(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    for (int i = 0; i < 4; i++)
        append_text(f, "INBOX", "c", i == 2 ? "\\Flagged" : NULL);
    append_text(f, "Trash", "t", NULL); /* Trash's UIDNEXT is 2 now */
    got_t g;
    RUN(f, g, mailstore_select(f->ms, f->user, "INBOX", select_cb, &g));
    int64_t inbox = g.sel->id;
    mailstore_selected_free(&g.sel);

    /* COPY 2,3,4,9 (9 does not exist) to Trash: a block of new UIDs, in order. */
    mailstore_range_t r[] = { { 3, 4 }, { 9, 9 }, { 2, 2 } };
    mailstore_uidset_t set = { r, 3 };
    RUN(f, g, mailstore_copy(f->ms, inbox, &set, f->user, "Trash", copy_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(g.a[i], 2 + i);
        assert_int_equal(g.b[i], 2 + i);
    }
    int64_t trash = g.id;
    RUN(f, g, mailstore_fetch_meta(f->ms, trash, &ALL_SET, meta_cb, &g));
    assert_string_equal(g.text, "1:1:[]:-:- 2:1:[]:-:- 3:1:[\\Flagged]:-:- 4:1:[]:-:-");
    RUN(f, g, mailstore_copy(f->ms, inbox, &set, f->user, "Nope", copy_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);

    /* MOVE 1,3 to Trash: new UIDs 5,6; gone from INBOX, recorded as expunged there. */
    RUN(f, g, mailstore_select(f->ms, f->user, "INBOX", select_cb, &g));
    uint64_t known = g.sel->highestmodseq;
    mailstore_selected_free(&g.sel);
    mailstore_range_t m[] = { { 1, 1 }, { 3, 3 } };
    mailstore_uidset_t mset = { m, 2 };
    RUN(f, g, mailstore_move(f->ms, inbox, &mset, f->user, "Trash", copy_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.a[0], 1);
    assert_int_equal(g.b[0], 5);
    assert_int_equal(g.a[1], 3);
    assert_int_equal(g.b[1], 6);
    RUN(f, g, mailstore_fetch_meta(f->ms, trash, &ALL_SET, meta_cb, &g));
    assert_string_equal(g.text, "1:1:[]:-:- 2:1:[]:-:- 3:1:[\\Flagged]:-:- 4:1:[]:-:- "
                                "5:1:[]:-:- 6:1:[\\Flagged]:-:-");
    RUN(f, g, mailstore_changes(f->ms, inbox, known, 4, changes_cb, &g));
    assert_int_equal(g.n, 2);
    assert_int_equal(g.b[0], 1);
    assert_int_equal(g.b[1], 3);
    RUN(f, g, mailstore_list(f->ms, f->user, "INBOX", true, list_cb, &g));
    assert_string_equal(g.text, "INBOX:-:2:2:s");
    /* Into the same mailbox: not permitted. */
    RUN(f, g, mailstore_move(f->ms, inbox, &mset, f->user, "INBOX", copy_cb, &g));
    assert_int_equal(g.status, MAILSTORE_DENIED);
}

static void uidsizes_cb(void *arg, int status, const mailstore_uidsize_t *msgs, size_t n)
{
    got_t *g = arg;
    g->calls++;
    g->status = status;
    g->n = n;
    for (size_t i = 0; i < n && i < 64; i++) {
        g->a[i] = msgs[i].uid;
        g->b[i] = (uint32_t)msgs[i].size;
    }
}

/* Migration 0009: the decoded search text, computed batch by batch, copied along. */
static void test_search_text(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    append_text(f, "INBOX", "a", NULL);
    append_text(f, "INBOX", "bb", NULL);
    append_text(f, "INBOX", "ccc", NULL);
    got_t g;
    RUN(f, g, mailstore_select(f->ms, f->user, "INBOX", select_cb, &g));
    int64_t inbox = g.sel->id;
    uint64_t modseq = g.sel->highestmodseq;
    mailstore_selected_free(&g.sel);

    RUN(f, g, mailstore_unindexed(f->ms, inbox, 2, uidsizes_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.a[0], 1);
    assert_int_equal(g.b[0], 1);
    assert_int_equal(g.a[1], 2);
    assert_int_equal(g.b[1], 2);

    RUN(f, g, mailstore_save_search(f->ms, inbox, 1, "Subject: caf\xc3\xa9\n", "", done_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    RUN(f, g, mailstore_save_search(f->ms, inbox, 2, "", "cr\xc3\xa8me", done_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    RUN(f, g, mailstore_save_search(f->ms, inbox, 99, "", "", done_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);
    /* Not UTF-8: refused by the database. */
    RUN(f, g, mailstore_save_search(f->ms, inbox, 3, "", "\xff", done_cb, &g));
    assert_int_equal(g.status, MAILSTORE_TEMP);

    RUN(f, g, mailstore_unindexed(f->ms, inbox, 200, uidsizes_cb, &g));
    assert_int_equal(g.n, 1);
    assert_int_equal(g.a[0], 3);
    assert_int_equal(g.b[0], 3);
    RUN(f, g, mailstore_save_search(f->ms, inbox, 3, "", "", done_cb, &g));
    RUN(f, g, mailstore_unindexed(f->ms, inbox, 200, uidsizes_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.n, 0);
    RUN(f, g, mailstore_unindexed(f->ms, -1, 200, uidsizes_cb, &g));
    assert_int_equal(g.n, 0);
    assert_int_equal(mailstore_unindexed(f->ms, inbox, 0, uidsizes_cb, &g), -1);
    assert_int_equal(mailstore_save_search(f->ms, inbox, 1, NULL, "", done_cb, &g), -1);

    /* Saving changed no modseq. */
    RUN(f, g, mailstore_select(f->ms, f->user, "INBOX", select_cb, &g));
    assert_int_equal(g.sel->highestmodseq, modseq);
    mailstore_selected_free(&g.sel);

    /* The stored text matches case-insensitively; COPY takes it along. */
    char q[512];
    snprintf(q, sizeof q, "SELECT count(*) FROM messages WHERE mailbox_id = %lld AND "
             "(search_headers ILIKE '%%CAF\xc3\xa9%%' OR search_body ILIKE '%%cr\xc3\xa8me%%')",
             (long long)inbox);
    assert_int_equal(sql_ll(f, q), 2);
    /* Where the server has ICU, letters beyond ASCII fold too. */
    if (sql_ll(f, "SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu'") == 1) {
        snprintf(q, sizeof q, "SELECT count(*) FROM messages WHERE mailbox_id = %lld AND "
                 "search_headers ILIKE '%%CAF\xc3\x89%%'", (long long)inbox);
        assert_int_equal(sql_ll(f, q), 1);
    }
    mailstore_range_t r[] = { { 1, 2 } };
    mailstore_uidset_t set = { r, 1 };
    RUN(f, g, mailstore_copy(f->ms, inbox, &set, f->user, "Trash", copy_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    RUN(f, g, mailstore_unindexed(f->ms, g.id, 200, uidsizes_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_int_equal(g.n, 0);
}

static void test_mailbox_operations(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    got_t g;
    RUN(f, g, mailstore_create_mailbox(f->ms, f->user, "a/b", NULL, mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    uint32_t first_validity = g.uidvalidity;
    RUN(f, g, mailstore_create_mailbox(f->ms, f->user, "a/b", NULL, mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_EXISTS);
    RUN(f, g, mailstore_create_mailbox(f->ms, f->user, "inbox", NULL, mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_EXISTS);
    RUN(f, g, mailstore_create_mailbox(f->ms, f->user, "Arch", "\\Archive", mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    RUN(f, g, mailstore_create_mailbox(f->ms, f->user, "bad*name", NULL, mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_DENIED);

    /* RENAME a to z renames a/b too. */
    append_text(f, "a/b", "in ab", NULL);
    RUN(f, g, mailstore_rename_mailbox(f->ms, f->user, "a", "z", mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    RUN(f, g, mailstore_rename_mailbox(f->ms, f->user, "a", "y", mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);
    RUN(f, g, mailstore_rename_mailbox(f->ms, f->user, "z", "Sent", mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_EXISTS);
    RUN(f, g, mailstore_list(f->ms, f->user, NULL, true, list_cb, &g));
    assert_string_equal(g.text,
                        "Arch:\\Archive:0:0:s Drafts:\\Drafts:0:0:s INBOX:-:0:0:s "
                        "Junk:\\Junk:0:0:s Sent:\\Sent:0:0:s Trash:\\Trash:0:0:s "
                        "z:-:0:0:s z/b:-:1:1:s");

    /* RENAME INBOX (RFC 3501 6.3.5): the messages move, INBOX stays, empty. */
    deliver(f, "one");
    deliver(f, "two");
    RUN(f, g, mailstore_select(f->ms, f->user, "INBOX", select_cb, &g));
    int64_t inbox = g.sel->id;
    uint64_t known = g.sel->highestmodseq;
    uint32_t inbox_next = g.sel->uidnext;
    mailstore_selected_free(&g.sel);
    RUN(f, g, mailstore_rename_mailbox(f->ms, f->user, "INBOX", "Old/Inbox", mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_true(g.id != inbox);
    RUN(f, g, mailstore_list(f->ms, f->user, "INBOX", true, list_cb, &g));
    assert_string_equal(g.text, "INBOX:-:0:0:s");
    assert_int_equal(g.id, inbox);
    RUN(f, g, mailstore_select(f->ms, f->user, "Old/Inbox", select_cb, &g));
    assert_int_equal(g.sel->count, 2);
    assert_int_equal(g.sel->uids[0], 1);
    assert_int_equal(g.sel->uidnext, inbox_next);
    mailstore_selected_free(&g.sel);
    RUN(f, g, mailstore_list(f->ms, f->user, "Old", false, list_cb, &g));
    assert_int_equal(g.n, 1); /* the superior name was created */
    RUN(f, g, mailstore_changes(f->ms, inbox, known, inbox_next - 1, changes_cb, &g));
    assert_int_equal(g.n, 2);
    /* New mail still lands in INBOX, with a UID above the old ones. */
    deliver(f, "three");
    RUN(f, g, mailstore_listing(f->ms, f->user, listing_cb, &g));
    assert_int_equal(g.n, 1);
    assert_int_equal(g.a[0], inbox_next);

    /* DELETE: INBOX refused; a re-created name gets a greater UIDVALIDITY. */
    RUN(f, g, mailstore_delete_mailbox(f->ms, f->user, "INBOX", mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_DENIED);
    RUN(f, g, mailstore_delete_mailbox(f->ms, f->user, "z/b", mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    RUN(f, g, mailstore_delete_mailbox(f->ms, f->user, "z/b", mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);
    RUN(f, g, mailstore_create_mailbox(f->ms, f->user, "z/b", NULL, mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    assert_true(g.uidvalidity > first_validity);

    /* SUBSCRIBE / UNSUBSCRIBE. */
    RUN(f, g, mailstore_subscribe(f->ms, f->user, "Junk", false, mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_OK);
    RUN(f, g, mailstore_list(f->ms, f->user, "Junk", false, list_cb, &g));
    assert_string_equal(g.text, "Junk:\\Junk:-1:-1:u");
    RUN(f, g, mailstore_subscribe(f->ms, f->user, "Nope", true, mailbox_cb, &g));
    assert_int_equal(g.status, MAILSTORE_NOTFOUND);
}

/* Deliveries (postern_deliver, as smtpd runs it) and flag updates of one mailbox at the
 * same time on four connections: none fails (no deadlock), every message gets its own
 * modseq, and highestmodseq is the largest. */
typedef struct tally {
    int calls, errors;
} tally_t;

static void tally_db_cb(void *arg, PGresult *res)
{
    tally_t *t = arg;
    t->calls++;
    if (!res || (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)) {
        t->errors++;
        print_message("error: %s\n", res ? PQresultErrorMessage(res) : "unavailable");
    }
}

static void tally_store_cb(void *arg, int status, const mailstore_stored_t *rows, size_t n)
{
    (void)rows;
    (void)n;
    tally_t *t = arg;
    t->calls++;
    t->errors += status != MAILSTORE_OK;
}

static void tally_append_cb(void *arg, int status, const mailstore_appended_t *a)
{
    (void)a;
    tally_t *t = arg;
    t->calls++;
    t->errors += status != MAILSTORE_OK;
}

static void test_concurrent_writers(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    for (int i = 0; i < 10; i++)
        deliver(f, "seed");
    got_t g;
    RUN(f, g, mailstore_select(f->ms, f->user, "INBOX", select_cb, &g));
    int64_t inbox = g.sel->id;
    mailstore_selected_free(&g.sel);

    tally_t t = { 0 };
    char rcpt[200];
    snprintf(rcpt, sizeof rcpt, "{%s}", f->address);
    const char *const kw[] = { "$A", "$B" };
    mailstore_range_t all[] = { { 1, 1000 } };
    mailstore_uidset_t set = { all, 1 };
    int n = 0;
    for (int i = 0; i < 40; i++) {
        const char *v[6] = { "q", "s", rcpt, "body", "{}", "" };
        assert_int_equal(db_query(f->db, "SELECT postern_deliver($1, $2, $3::text[], $4::bytea, "
                                  "$5::text[], $6::bytea)", 6, v, NULL, NULL, tally_db_cb, &t), 0);
        n++;
        assert_int_equal(mailstore_store(f->ms, inbox, &set, i % 2 ? MAILSTORE_STORE_ADD
                                                                   : MAILSTORE_STORE_REMOVE,
                                         &kw[i % 2], 1, -1, tally_store_cb, &t), 0);
        n++;
        assert_int_equal(mailstore_append(f->ms, f->user, "INBOX", NULL, 0, 0, "appended", 8,
                                          tally_append_cb, &t), 0);
        n++;
    }
    wait_for(f, &t.calls, n);
    assert_int_equal(t.errors, 0);

    RUN(f, g, mailstore_select(f->ms, f->user, "INBOX", select_cb, &g));
    mailstore_selected_t *s = g.sel;
    assert_int_equal(s->count, 90);
    uint64_t max = 0;
    for (size_t i = 0; i < s->count; i++)
        if (s->modseqs[i] > max)
            max = s->modseqs[i];
    assert_int_equal(s->highestmodseq, max);
    /* Each delivery and append was its own transaction: the new messages' modseqs
     * (those no later flag update touched) are distinct. */
    for (size_t i = 11; i < s->count; i++)
        assert_true(s->uids[i] > s->uids[i - 1]);
    mailstore_selected_free(&g.sel);
    char q[200];
    snprintf(q, sizeof q, "SELECT count(DISTINCT modseq) = count(*) FROM messages "
             "WHERE mailbox_id = %lld AND uid > 10 AND flags = '{}'", (long long)inbox);
    PGresult *res = sql(f, q);
    assert_string_equal(PQgetvalue(res, 0, 0), "t");
    PQclear(res);
    /* The mailbox row's counter moved exactly once per writing transaction. */
    snprintf(q, sizeof q, "SELECT highestmodseq FROM mailboxes WHERE id = %lld", (long long)inbox);
    assert_true(sql_ll(f, q) >= 10 + 80);
}

/* SELECT of 100,000 messages: one statement, compact arrays. */
static void test_select_100k(void **state)
{
    NEED_DATABASE();
    fx_t *f = *state;
    char q[512];
    snprintf(q, sizeof q,
             "WITH b AS (UPDATE mailboxes SET uidnext = uidnext + 100000 "
             "           WHERE user_id = %lld AND name = 'Trash' RETURNING id) "
             "INSERT INTO messages (mailbox_id, uid, size, flags, raw) "
             "SELECT b.id, g, 10, CASE WHEN g %% 3 = 0 THEN '{\\\\Seen}'::text[] "
             "WHEN g %% 1000 = 0 THEN '{$Big}' ELSE '{}' END, 'x' "
             "FROM b, generate_series(1, 100000) g",
             (long long)f->user);
    PQclear(sql(f, q));
    got_t g;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    RUN(f, g, mailstore_select(f->ms, f->user, "Trash", select_cb, &g));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    print_message("select of 100000 messages: %.3f s\n", secs);
    assert_int_equal(g.status, MAILSTORE_OK);
    mailstore_selected_t *s = g.sel;
    assert_int_equal(s->count, 100000);
    assert_int_equal(s->uidnext, 100001);
    assert_int_equal(s->unseen, 100000 - 33333);
    for (size_t i = 0; i < s->count; i++)
        assert_int_equal(s->uids[i], i + 1);
    assert_int_equal(s->flags[2], MAILSTORE_F_SEEN);
    assert_int_equal(s->nkeywords, 1);
    assert_int_equal(s->flags[999], UINT64_C(1) << MAILSTORE_F_KEYWORD0);
    /* All inserted by one statement, one transaction: one modseq. */
    assert_int_equal(s->modseqs[0], s->modseqs[99999]);
    assert_int_equal(s->highestmodseq, s->modseqs[0]);
    assert_true(secs < 30);
    mailstore_selected_free(&g.sel);
}

/* ---- the watch registry (no bus needed: events handed in directly) ----------------- */

typedef struct seen {
    int calls;
    mailwatch_kind_t kind;
    mailwatch_watch_t **unwatch; /* unwatched from inside the callback */
} seen_t;

static void seen_cb(void *arg, const mailwatch_event_t *ev)
{
    seen_t *s = arg;
    s->calls++;
    s->kind = ev->kind;
    if (s->unwatch)
        mailwatch_unwatch(s->unwatch);
}

static void test_mailwatch_registry(void **state)
{
    (void)state;
    mailwatch_t *mw = mailwatch_create(NULL);
    assert_non_null(mw);
    enum { N = 3000 };
    static mailwatch_watch_t *w[N];
    static seen_t seen[N];
    char user[64];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof user, "User%d@Example.TEST", i % 1000); /* 3 sessions each */
        w[i] = mailwatch_watch(mw, user, seen_cb, &seen[i]);
        assert_non_null(w[i]);
    }
    mailwatch_event_t ev = { .user = "user7@example.test", .kind = MAILWATCH_NEW };
    mailwatch_dispatch(mw, &ev);
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i].calls, i % 1000 == 7 ? 1 : 0);
    assert_int_equal(seen[7].kind, MAILWATCH_NEW);
    /* A watcher that unwatches itself, and then one that unwatches a neighbour. */
    seen[7].unwatch = &w[7];
    ev.kind = MAILWATCH_EXPUNGE;
    mailwatch_dispatch(mw, &ev);
    assert_null(w[7]);
    assert_int_equal(seen[1007].calls, 2);
    seen[1007].unwatch = &w[2007];
    mailwatch_dispatch(mw, &ev);
    assert_null(w[2007]);
    mailwatch_dispatch(mw, &ev);
    assert_int_equal(seen[7].calls, 2);
    assert_int_equal(seen[2007].calls, 2 + (seen[2007].calls > 2)); /* at most once more */
    assert_int_equal(seen[1007].calls, 4);
    ev.user = "nobody@example.test";
    mailwatch_dispatch(mw, &ev);
    for (int i = 0; i < N; i++)
        mailwatch_unwatch(&w[i]);
    mailwatch_unwatch(&w[0]); /* harmless */
    ev.user = "user8@example.test";
    mailwatch_dispatch(mw, &ev);
    assert_int_equal(seen[8].calls, 0);
    /* Watches left at destroy are freed with the registry. */
    assert_non_null(mailwatch_watch(mw, "left@example.test", seen_cb, &seen[0]));
    mailwatch_destroy(&mw);
    assert_null(mw);
    assert_int_equal(mailwatch_publish_changed(NULL, "a@b", 0, 0, MAILWATCH_NEW), -1);
}

int main(void)
{
    log_init("test_store_mailstore");
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_user_and_special_use, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_append_select_fetch, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_large_message_chunks, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_claim_recent, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_store_flags_and_changes, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_expunge_and_tracking, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_copy_move, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_mailbox_operations, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_search_text, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_select_100k, fx_setup, fx_teardown),
        cmocka_unit_test(test_mailwatch_registry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
