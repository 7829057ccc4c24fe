/* The end of a local recipient's lookup (smtp_rcpt_looked_up), each path against a session
 * on a real connection with input pipelined behind the RCPT: a command that waits ("WAIT",
 * as a RCPT whose own lookup is in flight does), then one more ("NOOP"). Resumed once, the
 * session runs WAIT and stops there; resumed twice, it runs NOOP too while WAIT's work is in
 * flight. The limiter's local failure is injected by a server without a limiter client:
 * lim_rcpt_failure() then fails at once, as it does when memory runs out. Results come from
 * PQmakeEmptyPGresult(), so no database is needed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "smtpd.h"

#define PENDING "nobody@example.test"

typedef enum lookup_result {
    LOOKUP_FAILED, /* no result: the database could not be reached */
    LOOKUP_NONE,   /* no such user */
    LOOKUP_FOUND,  /* one row */
} lookup_result_t;

typedef struct rcpt_case {
    const char *name;
    lookup_result_t result;
    bool closing;       /* the session closed while the lookup was in flight */
    const char *reply;  /* what the client reads first, NULL: nothing */
    size_t nrcpts;      /* recipients in the transaction after */
    int ran;            /* pipelined commands run after: 1 (WAIT) when resumed once */
} rcpt_case_t;

static const rcpt_case_t cases[] = {
    { "unknown, the limiter cannot be asked", LOOKUP_NONE, false,
      "550 5.1.1 <" PENDING ">: Recipient address rejected: no such user\r\n", 0, 1 },
    { "lookup failed", LOOKUP_FAILED, false,
      "451 4.3.0 <" PENDING ">: Temporary lookup failure, please try again later\r\n", 0, 1 },
    { "known", LOOKUP_FOUND, false, "250 2.1.5 Ok\r\n", 1, 1 },
    { "closed meanwhile", LOOKUP_NONE, true, NULL, 0, 0 },
};

/* A front-end server of just what the session path uses; srv first, so that a session's
 * srv leads back to the rig. No limiter client, configuration, database or metrics. */
typedef struct rig {
    fe_server_t srv;
    fe_protocol_t proto;
    uv_loop_t loop;
    uv_tcp_t listener;
    int client; /* the test's end of the connection */
    conn_t *conn;
    bool closed;
    char ran[4][16]; /* the pipelined commands the session ran */
    int nran;
} rig_t;

static void rig_line(fe_session_t *fs, char *line, size_t len, unsigned flags)
{
    (void)flags;
    rig_t *r = (rig_t *)fs->srv;
    assert_true(r->nran < 4);
    snprintf(r->ran[r->nran++], sizeof r->ran[0], "%.*s", (int)len, line);
    if (strcmp(line, "WAIT") == 0)
        fe_session_wait(fs);
}

static void rig_release(fe_session_t *fs)
{
    smtp_session_t *s = (smtp_session_t *)fs;
    smtp_reset_transaction(s);
    buf_free(&s->data);
}

static void rig_conn_cb(conn_t *c, conn_event_t ev, void *arg)
{
    (void)c;
    rig_t *r = arg;
    if (ev == CONN_CLOSED)
        r->closed = true;
}

static void rig_accept_cb(uv_stream_t *server, int status)
{
    rig_t *r = server->data;
    assert_int_equal(status, 0);
    r->conn = conn_accept(server, 4096, rig_conn_cb, r);
    assert_non_null(r->conn);
}

static void rig_start(rig_t *r)
{
    memset(r, 0, sizeof *r);
    assert_int_equal(uv_loop_init(&r->loop), 0);
    r->proto.name = "smtpd";
    r->proto.line = rig_line;
    r->proto.release = rig_release;
    r->srv.proto = &r->proto;
    r->srv.loop = &r->loop;
    snprintf(r->srv.hostname, sizeof r->srv.hostname, "mx.test");
    uv_tcp_init(&r->loop, &r->listener);
    r->listener.data = r;
    struct sockaddr_in sin;
    uv_ip4_addr("127.0.0.1", 0, &sin);
    assert_int_equal(uv_tcp_bind(&r->listener, (struct sockaddr *)&sin, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&r->listener, 8, rig_accept_cb), 0);
    int len = sizeof sin;
    uv_tcp_getsockname(&r->listener, (struct sockaddr *)&sin, &len);
    r->client = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(r->client >= 0);
    assert_int_equal(connect(r->client, (struct sockaddr *)&sin, sizeof sin), 0);
    for (int i = 0; i < 1000 && !r->conn; i++)
        uv_run(&r->loop, UV_RUN_ONCE);
    assert_non_null(r->conn);
}

/* What the client has been sent, after the loop has had the time to write it. */
static void rig_read(rig_t *r, char *out, size_t out_len)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < 50 && !strstr(out, "\r\n"); i++) {
        uv_run(&r->loop, UV_RUN_NOWAIT);
        struct pollfd p = { .fd = r->client, .events = POLLIN };
        if (poll(&p, 1, 10) == 1) {
            ssize_t got = recv(r->client, out + n, out_len - 1 - n, 0);
            if (got <= 0)
                break;
            n += (size_t)got;
            out[n] = '\0';
        }
    }
}

static void rig_stop(rig_t *r)
{
    close(r->client);
    conn_close(r->conn);
    for (int i = 0; i < 1000 && !r->closed; i++)
        uv_run(&r->loop, UV_RUN_ONCE);
    assert_true(r->closed);
    uv_close((uv_handle_t *)&r->listener, NULL);
    assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&r->loop), 0);
}

/* A session in a transaction, waiting for the lookup of PENDING, which holds a reference;
 * the test holds the other. */
static smtp_session_t *session_waiting(rig_t *r)
{
    smtp_session_t *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->fe.srv = &r->srv;
    s->fe.conn = r->conn;
    s->fe.id = 1;
    snprintf(s->fe.peer, sizeof s->fe.peer, "127.0.0.1");
    line_reader_init(&s->fe.reader, SMTP_LINE_MAX);
    buf_init(&s->fe.line);
    buf_init(&s->data);
    r->srv.nallocated = 1;
    s->state = SMTP_STATE_MAIL;
    snprintf(s->sender, sizeof s->sender, "sender@example.org");
    s->pending.address = strdup(PENDING);
    assert_non_null(s->pending.address);
    fe_session_wait(&s->fe);
    s->fe.refs = 2;
    static const char pipelined[] = "WAIT\r\nNOOP\r\n";
    assert_int_equal(buf_append(conn_input(r->conn), pipelined, sizeof pipelined - 1), 0);
    return s;
}

static PGresult *make_result(lookup_result_t what)
{
    if (what == LOOKUP_FAILED)
        return NULL;
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    assert_non_null(res);
    if (what == LOOKUP_FOUND) {
        PGresAttDesc col = { .name = (char *)"?column?", .typid = 23, .typlen = 4,
                             .atttypmod = -1 };
        assert_int_equal(PQsetResultAttrs(res, 1, &col), 1);
        assert_int_equal(PQsetvalue(res, 0, 0, (char *)"1", 1), 1);
    }
    return res;
}

static void run_case(const rcpt_case_t *c)
{
    print_message("case: %s\n", c->name);
    rig_t r;
    rig_start(&r);
    smtp_session_t *s = session_waiting(&r);
    s->fe.closing = c->closing;
    PGresult *res = make_result(c->result);
    smtp_rcpt_looked_up(s, res);
    PQclear(res);

    /* WAIT holds the session with NOOP behind it: its reply is kept back with the batch's
     * next ones (conn_hold); let it go to read it. */
    char reply[512];
    conn_hold(r.conn, false);
    rig_read(&r, reply, sizeof reply);
    if (c->reply)
        assert_string_equal(reply, c->reply);
    else
        assert_string_equal(reply, "");
    assert_int_equal(s->fe.refs, 1); /* the lookup's reference went, once */
    assert_null(s->pending.address);
    assert_int_equal(s->nrcpts, c->nrcpts);
    if (c->nrcpts) {
        assert_string_equal(s->rcpts[0].address, PENDING);
        assert_int_equal(s->state, SMTP_STATE_RCPT);
    }
    /* Resumed exactly once: WAIT ran and holds the session; NOOP waits its turn. */
    assert_int_equal(r.nran, c->ran);
    if (c->ran) {
        assert_string_equal(r.ran[0], "WAIT");
        assert_true(s->fe.waiting);
    }
    s->fe.closing = true;
    fe_session_unref(&s->fe);
    assert_int_equal(r.srv.nallocated, 0);
    rig_stop(&r);
}

static void test_each_path_resumes_once(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_path_resumes_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
