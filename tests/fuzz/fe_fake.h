/* A front end with the network, PostgreSQL, NATS and the configuration replaced, for the
 * session harnesses (fuzz_*_session.c): include it in exactly one file of a harness. It
 * defines the functions of lib/svc/fe.h (sessions), lib/store/db.h, lib/bus/bus.h and
 * lib/bus/config.h, the few of lib/net/conn.h that sessions call, and uv_queue_work, so the
 * linker takes none of fe.o, db.o, bus.o, config.o or conn.o, and a cheap stand-in for
 * OpenSSL's PKCS5_PBKDF2_HMAC (see there); the protocol's own code,
 * lib/svc/dispatch.c, fe_auth.c, lim.c, events.c, the SASL code and the parsers are the real
 * ones.
 *
 * The session runs as lib/svc/fe.c runs it (fe_session_process: lines through the line
 * reader, raw bytes for fe_session_read_bytes(), an input hook while set, nothing while
 * waiting or closing). What the real ones do later from the loop is queued and run by
 * fake_settle(): database answers, limiter answers, worker jobs; delays run when the next
 * bytes arrive (time has passed) or when the client goes away. STARTTLS is
 * pretended: the handshake "succeeds" after the reply, input already received is dropped
 * (RFC 3207 section 4.2), then proto->tls_ready runs.
 *
 * Database answers, by query text (anything else gets a "database unavailable" NULL):
 *   SELECT 1 FROM users WHERE address = $1 .... a row for fake_users
 *   SELECT secret FROM users WHERE address = $1  their secret (password "pencil")
 *   anything else, when fake_db_ok_all ......... an empty TUPLES_OK result
 * The harness adds its own answers with fake_db_answer (return 1 when answered).
 *
 * FUZZ_TRACE=1 in the environment shows what the server writes (reproducing an input).
 *
 * Checks: every write is whole lines (CRLF-terminated, no bare CR or LF inside), and
 * fake_reply_check (set by the harness) vets each line. */
#ifndef POSTERN_FUZZ_FE_FAKE_H
#define POSTERN_FUZZ_FE_FAKE_H

#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <uv.h>

#include "auth/scram.h"
#include "base/buf.h"
#include "base/line.h"
#include "base/net.h"
#include "base/settings.h"
#include "bus/bus.h"
#include "bus/config.h"
#include "bus/lim.h"
#include "net/conn.h"
#include "store/db.h"
#include "svc/fe.h"

/* ---- what the harness sets ------------------------------------------------------------ */

static const char *const fake_users[] = { "postmaster@example.test", "user@example.test" };
static bool fake_db_down;        /* every query gets NULL */
static bool fake_db_ok_all;      /* unknown queries get an empty result instead of NULL */
static int fake_lim_answer;      /* 0 no answer, else a Postern__Verdict */
static bool fake_plaintext_auth; /* auth.allow_plaintext */
static bool fake_streaming;      /* the protocol reads bytes (imapd): a write may be a piece */
static int (*fake_db_answer)(const char *sql, int nparams, const char *const *values,
                             const int *lengths, PGresult **res_r);
static void (*fake_reply_check)(const char *line, size_t len);

static int fake_trace = -1; /* FUZZ_TRACE=1 in the environment: writes go to stderr */

/* ---- queued work ---------------------------------------------------------------------- */

typedef struct fake_job {
    int kind; /* 0 db, 1 bus reply, 2 worker, 3 delay, 4 writable, 5 db_later, 6 db_batch */
    db_cb db;
    db_batch_cb batch;
    PGresult **results; /* a batch's: NULL when the database is down */
    int nresults;
    bool committed;
    void (*later)(void *arg);
    PGresult *res;
    bus_reply_cb reply;
    void *arg;
    uv_work_t *work;
    uv_work_cb work_cb;
    uv_after_work_cb after_cb;
    fe_session_t *s;
    void (*session_cb)(fe_session_t *s);
    struct fake_job *next;
} fake_job_t;

static fake_job_t *fake_jobs, **fake_jobs_tail = &fake_jobs;
/* Delays (fe_session_delay) wait for time to pass: until the client's next bytes, or its
 * going away. A renewal that schedules itself again cannot spin. */
static fake_job_t *fake_delays, **fake_delays_tail = &fake_delays;

static void fake_queue(fake_job_t *j)
{
    fake_job_t *copy = malloc(sizeof *copy);
    if (!copy)
        abort();
    *copy = *j;
    copy->next = NULL;
    if (j->kind == 3) {
        *fake_delays_tail = copy;
        fake_delays_tail = &copy->next;
        return;
    }
    *fake_jobs_tail = copy;
    fake_jobs_tail = &copy->next;
}

/* Time passes: the delays due so far join the work to run. */
static void fake_time_passes(void)
{
    if (!fake_delays)
        return;
    *fake_jobs_tail = fake_delays;
    fake_jobs_tail = fake_delays_tail;
    fake_delays = NULL;
    fake_delays_tail = &fake_delays;
}

/* ---- the configuration ---------------------------------------------------------------- */

struct config {
    int unused;
};

bool config_loaded(const config_t *cfg)
{
    return cfg != NULL;
}

const char *config_get(const config_t *cfg, const char *key)
{
    (void)cfg;
    if (strcmp(key, "auth.allow_plaintext") == 0)
        return fake_plaintext_auth ? "on" : "off";
    if (strcmp(key, "auth.failure_delay_ms") == 0)
        return "0";
    if (strcmp(key, "smtp.max_message_size") == 0)
        return "100000";
    if (strcmp(key, "limiter.send_on_timeout") == 0)
        return "allow";
    const setting_def_t *def = settings_find(key);
    return def ? def->default_value : NULL;
}

long config_get_long(const config_t *cfg, const char *key)
{
    const char *v = config_get(cfg, key);
    return v ? strtol(v, NULL, 10) : 0;
}

bool config_get_bool(const config_t *cfg, const char *key)
{
    const char *v = config_get(cfg, key);
    return v && (!strcasecmp(v, "on") || !strcasecmp(v, "yes") || !strcasecmp(v, "true") ||
                 !strcmp(v, "1"));
}

bool config_domain_hosted(const config_t *cfg, const char *domain)
{
    (void)cfg;
    return strcasecmp(domain, "example.test") == 0;
}

bool config_relay_network(const config_t *cfg, const net_addr_t *client)
{
    (void)cfg;
    net_cidr_t lo;
    return net_cidr_parse("127.0.0.0/8", &lo) == 0 && net_cidr_contains(&lo, client);
}

config_t *config_create(uv_loop_t *loop, db_t *db, bus_t *bus, int refresh_seconds)
{
    (void)loop, (void)db, (void)bus, (void)refresh_seconds;
    return calloc(1, sizeof(config_t));
}

void config_destroy(config_t **cfg)
{
    free(*cfg);
    *cfg = NULL;
}

/* ---- PostgreSQL ----------------------------------------------------------------------- */

struct db {
    int unused;
};

static scram_secret_t fake_secret;
static char fake_secret_text[SCRAM_SECRET_TEXT_MAX];

static PGresult *fake_rows(int nrows, const char *value)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc att = { .name = (char *)"c", .format = 0, .typid = 25, .typlen = -1,
                         .atttypmod = -1 };
    if (!res || !PQsetResultAttrs(res, 1, &att))
        abort();
    for (int i = 0; i < nrows; i++)
        if (!PQsetvalue(res, i, 0, (char *)value, (int)strlen(value)))
            abort();
    return res;
}

static bool fake_known_user(const char *address)
{
    for (size_t i = 0; i < sizeof fake_users / sizeof fake_users[0]; i++)
        if (strcmp(address, fake_users[i]) == 0)
            return true;
    return false;
}

/* The answer to one statement: NULL when the database is down or the statement unknown. */
static PGresult *fake_db_result(const char *sql, int nparams, const char *const *values,
                                const int *lengths, const int *binary)
{
    for (int i = 0; i < nparams; i++)
        if (values[i] && !(binary && binary[i]))
            (void)strlen(values[i]); /* text parameters are C strings */
        else if (values[i] && binary && binary[i] && lengths && lengths[i] < 0)
            abort();
    PGresult *res = NULL;
    if (fake_trace > 0)
        fprintf(stderr, "DB: %.70s\n", sql);
    if (fake_db_down) {
        res = NULL;
    } else if (fake_db_answer && fake_db_answer(sql, nparams, values, lengths, &res)) {
        /* the harness answered */
    } else if (strcmp(sql, "SELECT 1 FROM users WHERE address = $1") == 0 && nparams == 1) {
        res = fake_rows(fake_known_user(values[0]) ? 1 : 0, "1");
    } else if (strcmp(sql, "SELECT secret FROM users WHERE address = $1") == 0 && nparams == 1) {
        res = fake_rows(fake_known_user(values[0]) ? 1 : 0, fake_secret_text);
    } else if (fake_db_ok_all) {
        bool command = !strncmp(sql, "UPDATE", 6) || !strncmp(sql, "INSERT", 6) ||
                       !strncmp(sql, "DELETE", 6);
        res = command ? PQmakeEmptyPGresult(NULL, PGRES_COMMAND_OK) : fake_rows(0, "");
    }
    return res;
}

int db_query(db_t *db, const char *sql, int nparams, const char *const *values,
             const int *lengths, const int *binary, db_cb cb, void *arg)
{
    if (!db)
        return -1;
    fake_job_t j = { .kind = 0, .db = cb, .arg = arg };
    j.res = fake_db_result(sql, nparams, values, lengths, binary);
    fake_queue(&j);
    return 0;
}

/* Every statement answered as by db_query; committed when all succeeded. A statement the
 * fake does not know, or a database that is down, fails the batch as unreachable. */
int db_batch(db_t *db, int n, const db_stmt_in_t *stmts, db_batch_cb cb, void *arg)
{
    if (!db || !cb || n < 1 || n > DB_BATCH_MAX)
        return -1;
    fake_job_t j = { .kind = 6, .batch = cb, .arg = arg, .nresults = n, .committed = true };
    j.results = calloc((size_t)n, sizeof *j.results);
    if (!j.results)
        abort();
    for (int i = 0; i < n; i++) {
        j.results[i] = fake_db_result(stmts[i].sql, stmts[i].nparams, stmts[i].values,
                                      stmts[i].lengths, stmts[i].binary);
        if (!j.results[i]) {
            for (int k = 0; k < i; k++)
                PQclear(j.results[k]);
            free(j.results);
            j.results = NULL;
            j.committed = false;
            break;
        }
        ExecStatusType st = PQresultStatus(j.results[i]);
        j.committed = j.committed && (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK);
    }
    fake_queue(&j);
    return 0;
}

int db_pool_size(const db_t *db)
{
    return db ? 2 : 0;
}

int db_query_take(db_t *db, const char *sql, int nparams, const char *const *values,
                  const int *lengths, const int *binary, void *block, size_t block_len,
                  db_cb cb, void *arg)
{
    (void)block_len;
    int rc = db_query(db, sql, nparams, values, lengths, binary, cb, arg);
    free(block); /* the fake reads the parameters only now */
    return rc;
}

int db_query_binary(db_t *db, const char *sql, int nparams, const char *const *values,
                    const int *lengths, const int *binary, db_cb cb, void *arg)
{
    return db_query(db, sql, nparams, values, lengths, binary, cb, arg);
}

int db_later(db_t *db, void (*cb)(void *arg), void *arg)
{
    if (!db || !cb)
        return -1;
    fake_job_t j = { .kind = 5, .later = cb, .arg = arg };
    fake_queue(&j);
    return 0;
}

bool db_available(const db_t *db)
{
    return db && !fake_db_down;
}

bool db_busy(const db_t *db)
{
    (void)db;
    return fake_jobs != NULL;
}

db_t *db_create(uv_loop_t *loop, const char *conninfo, int pool_size)
{
    (void)loop, (void)conninfo, (void)pool_size;
    return calloc(1, sizeof(db_t));
}

void db_destroy(db_t **db)
{
    free(*db);
    *db = NULL;
}

/* ---- NATS ----------------------------------------------------------------------------- */

struct bus {
    int unused;
};

bus_t *bus_create(uv_loop_t *loop, const char *url, const char *name)
{
    (void)loop, (void)url, (void)name;
    return calloc(1, sizeof(bus_t));
}

void bus_destroy(bus_t **bus)
{
    free(*bus);
    *bus = NULL;
}

bool bus_connected(const bus_t *bus)
{
    return bus != NULL;
}

int bus_publish(bus_t *bus, const char *subject, const void *data, size_t len)
{
    (void)bus, (void)subject, (void)data, (void)len;
    return 0;
}

int bus_publish_msg(bus_t *bus, const char *subject, const ProtobufCMessage *msg)
{
    (void)bus, (void)subject;
    uint8_t tmp[4096];
    if (protobuf_c_message_get_packed_size(msg) <= sizeof tmp)
        protobuf_c_message_pack(msg, tmp);
    return 0;
}

int bus_on_reconnect(bus_t *bus, void (*cb)(void *arg), void *arg)
{
    (void)bus, (void)cb, (void)arg;
    return 0;
}

void bus_off_reconnect(bus_t *bus, void (*cb)(void *arg), void *arg)
{
    (void)bus, (void)cb, (void)arg;
}

int bus_subscribe(bus_t *bus, const char *subject, bus_msg_cb cb, void *arg)
{
    (void)bus, (void)subject, (void)cb, (void)arg;
    return 0;
}

/* The limiter's requests: answered with fake_lim_answer's verdict, or not at all (the real
 * bus then calls back with NULL after the timeout). */
int bus_request(bus_t *bus, const char *subject, const void *data, size_t len, int timeout_ms,
                bus_reply_cb cb, void *arg)
{
    (void)bus, (void)subject, (void)data, (void)len, (void)timeout_ms;
    fake_job_t j = { .kind = 1, .reply = cb, .arg = arg };
    fake_queue(&j);
    return 0;
}

/* ---- libuv's thread pool, run in order on this thread --------------------------------- */

int uv_queue_work(uv_loop_t *loop, uv_work_t *req, uv_work_cb work_cb,
                  uv_after_work_cb after_work_cb)
{
    (void)loop;
    fake_job_t j = { .kind = 2, .work = req, .work_cb = work_cb, .after_cb = after_work_cb };
    fake_queue(&j);
    return 0;
}

/* ---- PBKDF2, cheap ----------------------------------------------------------------------
 * Every PLAIN or LOGIN attempt costs a PBKDF2 run of at least 4096 iterations (scram.h), a
 * millisecond or more: too slow for a fuzzer. This one, which lib/auth/scram.c calls
 * instead of OpenSSL's, is one HMAC of the salt and the count under the password; the
 * secrets are derived with it too, so the right password still verifies. */
int PKCS5_PBKDF2_HMAC(const char *pass, int passlen, const unsigned char *salt, int saltlen,
                      int iter, const EVP_MD *digest, int keylen, unsigned char *out)
{
    unsigned char msg[SCRAM_SALT_MAX + sizeof iter], mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    if (saltlen < 0 || (size_t)saltlen > SCRAM_SALT_MAX || keylen < 0)
        return 0;
    memcpy(msg, salt, (size_t)saltlen);
    memcpy(msg + saltlen, &iter, sizeof iter);
    if (!HMAC(digest, pass, passlen, msg, (size_t)saltlen + sizeof iter, mac, &maclen) ||
        (unsigned)keylen > maclen)
        return 0;
    memcpy(out, mac, (size_t)keylen);
    return 1;
}

/* ---- what sessions ask of their connection ------------------------------------------ *
 * Sessions see a connection (s->conn is never NULL while they run); its state is
 * fake_conn below. */
struct conn {
    int unused;
};

static conn_t fake_conn_handle;

/* ---- -------------------------------------------------- */

const char *conn_tls_version(const conn_t *c)
{
    (void)c;
    return "TLSv1.3";
}

const char *conn_tls_cipher(const conn_t *c)
{
    (void)c;
    return "TLS_AES_256_GCM_SHA384";
}

/* Everything is taken by the kernel at once. */
size_t conn_pending_output(const conn_t *c)
{
    (void)c;
    return 0;
}

static size_t fake_conn_written;

/* Straight to the connection (pop3d's multi-line responses): taken as it is. */
int conn_write(conn_t *c, const void *data, size_t len)
{
    if (!c || (len && !data))
        abort();
    fake_conn_written += len;
    return 0;
}

/* ---- sessions ------------------------------------------------------------------------- */

typedef struct fake_conn {
    buf_t in;        /* received, not yet consumed */
    bool tls;
    bool tls_pending;
    size_t out_bytes;
} fake_conn_t;

static fake_conn_t fake_conn;

void fe_session_ref(fe_session_t *s)
{
    s->refs++;
}

void fe_session_unref(fe_session_t *s)
{
    if (--s->refs > 0)
        return;
    if (s->refs < 0)
        abort();
    if (s->hook && s->hook->release)
        s->hook->release(s);
    if (s->srv->proto->release)
        s->srv->proto->release(s);
    buf_free(&s->line);
    free(s->user);
    s->srv->nallocated--;
    free(s);
}

void fe_session_close(fe_session_t *s)
{
    s->closing = true;
}

/* Output is whole lines: CRLF at the end of every write, no CR or LF elsewhere except
 * in data (fake_streaming: literals and multi-line responses) */
static void fake_output(const char *p, size_t len)
{
    if (fake_trace)
        fprintf(stderr, "S: %.*s", (int)len, p);
    fake_conn.out_bytes += len;
    if (fake_streaming)
        return;
    if (len < 2 || p[len - 2] != '\r' || p[len - 1] != '\n')
        abort();
    const char *line = p, *end = p + len;
    while (line < end) {
        const char *crlf = memmem(line, (size_t)(end - line), "\r\n", 2);
        size_t n = (size_t)(crlf - line);
        if (memchr(line, '\r', n) || memchr(line, '\n', n))
            abort(); /* a bare CR or LF would let client text start a reply of its own */
        if (fake_reply_check)
            fake_reply_check(line, n);
        line = crlf + 2;
    }
}

/* Data that may span lines (a literal, a multi-line response): taken as it is. */
int fe_session_write(fe_session_t *s, const void *data, size_t len)
{
    if (s->closing)
        return -1;
    if (len && !data)
        abort();
    fake_conn.out_bytes += len;
    return 0;
}

int fe_session_printf(fe_session_t *s, const char *fmt, ...)
{
    if (s->closing)
        return -1;
    buf_t b;
    buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (rc == 0)
        fake_output(b.data, b.len);
    buf_free(&b);
    return rc;
}

/* As fe.c: one line, control characters shown as '?'. */
int fe_session_reply(fe_session_t *s, const char *fmt, ...)
{
    if (s->closing)
        return -1;
    buf_t b;
    buf_init(&b);
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(&b, fmt, ap);
    va_end(ap);
    if (rc == 0) {
        for (size_t i = 0; i < b.len; i++)
            if ((unsigned char)b.data[i] < 0x20 || b.data[i] == 0x7f)
                b.data[i] = '?';
        rc = buf_append(&b, "\r\n", 2);
    }
    if (rc == 0) {
        bool streaming = fake_streaming;
        fake_streaming = false;
        fake_output(b.data, b.len);
        fake_streaming = streaming;
    }
    buf_free(&b);
    return rc;
}

void fe_session_when_writable(fe_session_t *s, void (*cb)(fe_session_t *s))
{
    fake_job_t j = { .kind = 4, .s = s, .session_cb = cb };
    fake_queue(&j);
}

void fe_session_read_bytes(fe_session_t *s, uint64_t n)
{
    s->bytes_left = n;
}

void fe_session_take_input(fe_session_t *s, const fe_input_hook_t *hook)
{
    s->hook = hook;
}

void fe_session_release_input(fe_session_t *s)
{
    s->hook = NULL;
}

static void fake_process(fe_session_t *s);

void fe_session_wait(fe_session_t *s)
{
    s->waiting = true;
}

void fe_session_resume(fe_session_t *s)
{
    s->waiting = false;
    if (!s->closing)
        fake_process(s);
}

int fe_session_starttls(fe_session_t *s)
{
    if (fake_conn.tls || fake_conn.tls_pending)
        return -1;
    line_reader_init(&s->reader, s->srv->proto->line_max);
    buf_reset(&fake_conn.in); /* RFC 3207 section 4.2: nothing before the handshake counts */
    fake_conn.tls_pending = true;
    return 0;
}

bool fe_session_tls(const fe_session_t *s)
{
    (void)s;
    return fake_conn.tls;
}

bool fe_session_tls_available(const fe_session_t *s)
{
    (void)s;
    return !fake_conn.tls;
}

bool fe_session_refuse_if_blocked(fe_session_t *s)
{
    (void)s;
    return false;
}

void fe_format_time(int64_t ms, char *out, size_t out_len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, out_len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

void fe_session_delay(fe_session_t *s, unsigned ms, void (*cb)(fe_session_t *s))
{
    (void)ms;
    if (s->closing || s->delay_cb)
        return;
    s->delay_cb = cb;
    fe_session_ref(s);
    fake_job_t j = { .kind = 3, .s = s, .session_cb = cb };
    fake_queue(&j);
}

/* fe.c's fe_session_process over the fake connection's input. */
static void fake_process(fe_session_t *s)
{
    if (s->processing)
        return;
    s->processing = true;
    fe_session_ref(s);
    const fe_protocol_t *p = s->srv->proto;
    while (!s->closing && !s->waiting && !fake_conn.tls_pending) {
        buf_t *in = &fake_conn.in;
        if (s->bytes_left > 0) {
            if (in->len == 0)
                break;
            size_t n = in->len < s->bytes_left ? in->len : (size_t)s->bytes_left;
            s->bytes_left -= n;
            p->bytes(s, in->data, n, s->bytes_left == 0);
            buf_consume(in, n);
            continue;
        }
        line_t l;
        int r = line_read(&s->reader, in, &l);
        if (r == 0)
            break;
        if (r < 0) {
            p->line_too_long(s);
            continue;
        }
        buf_reset(&s->line);
        if (buf_append(&s->line, l.text, l.len) < 0) {
            fe_session_close(s);
            break;
        }
        unsigned flags = l.flags;
        buf_consume(in, l.consumed);
        if (s->hook)
            s->hook->line(s, s->line.data, s->line.len, flags);
        else
            p->line(s, s->line.data, s->line.len, flags);
    }
    s->processing = false;
    fe_session_unref(s);
}

/* ---- the server and the loop ---------------------------------------------------------- */

static uv_loop_t fake_loop;
static config_t fake_cfg;
static db_t fake_db;
static bus_t fake_bus;
static fe_server_t fake_srv;
static svc_t fake_svc; /* what a front end reads of its service: the message cache's size */

static void fake_server_init(const fe_protocol_t *proto)
{
    if (fake_srv.proto)
        return;
    fake_trace = getenv("FUZZ_TRACE") != NULL;
    if (scram_secret_derive("pencil", 6, (const unsigned char *)"fuzz-salt-16byte", 16,
                            SCRAM_MIN_ITERATIONS, &fake_secret) < 0 ||
        scram_secret_encode(&fake_secret, fake_secret_text, sizeof fake_secret_text) < 0)
        abort();
    uv_loop_init(&fake_loop);
    fake_srv.loop = &fake_loop;
    fake_svc.message_cache = SVC_MESSAGE_CACHE_DEFAULT;
    fake_srv.svc = &fake_svc;
    fake_srv.proto = proto;
    fake_srv.cfg = &fake_cfg;
    fake_srv.db = &fake_db;
    fake_srv.bus = &fake_bus;
    fake_srv.lim = lim_create(&fake_loop, &fake_bus, &fake_cfg, NULL);
    uv_run(&fake_loop, UV_RUN_NOWAIT); /* the limiter's first block-list sync */
    snprintf(fake_srv.hostname, sizeof fake_srv.hostname, "mx.example.test");
    snprintf(fake_srv.instance, sizeof fake_srv.instance, "mx.example.test:1");
    memcpy(fake_srv.secret, "fuzz fake-user secret, 32 bytes", 32);
    /* Drop the block-list request made at the start: nobody answers it. */
    while (fake_jobs) {
        fake_job_t *j = fake_jobs;
        fake_jobs = j->next;
        free(j);
    }
    fake_jobs_tail = &fake_jobs;
}

static uint8_t fake_verdict_buf[64];

/* Runs what the loop would run later, until nothing is left. */
static void fake_settle(void)
{
    while (fake_jobs) {
        fake_job_t *j = fake_jobs;
        fake_jobs = j->next;
        if (!fake_jobs)
            fake_jobs_tail = &fake_jobs;
        switch (j->kind) {
        case 0:
            j->db(j->arg, j->res);
            if (j->res)
                PQclear(j->res);
            break;
        case 5:
            j->later(j->arg);
            break;
        case 6:
            j->batch(j->arg, j->committed, j->results, j->nresults);
            for (int i = 0; j->results && i < j->nresults; i++)
                PQclear(j->results[i]);
            free(j->results);
            break;
        case 1:
            if (fake_lim_answer) {
                Postern__CheckReply r = POSTERN__CHECK_REPLY__INIT;
                r.verdict = (Postern__Verdict)fake_lim_answer;
                r.reason = (char *)"fuzz";
                r.retry_after_s = 5;
                r.until_ms = 4102444800000;
                size_t n = postern__check_reply__pack(&r, fake_verdict_buf);
                j->reply(j->arg, fake_verdict_buf, n);
            } else {
                j->reply(j->arg, NULL, 0);
            }
            break;
        case 2:
            j->work_cb(j->work);
            j->after_cb(j->work, 0);
            break;
        case 3: {
            fe_session_t *s = j->s;
            void (*cb)(fe_session_t *) = s->delay_cb;
            s->delay_cb = NULL;
            if (cb && !s->closing)
                cb(s);
            fe_session_unref(s);
            break;
        }
        case 4:
            j->session_cb(j->s);
            break;
        }
        free(j);
    }
}

/* A new session as fe.c's accept makes it, greeted. */
static fe_session_t *fake_session_open(const fe_listener_conf_t *listener, const char *peer)
{
    const fe_protocol_t *p = fake_srv.proto;
    fe_session_t *s = calloc(1, p->session_size);
    if (!s)
        abort();
    s->srv = &fake_srv;
    s->listener = listener;
    s->conn = &fake_conn_handle;
    s->id = ++fake_srv.next_session_id;
    snprintf(s->peer, sizeof s->peer, "%s", peer);
    line_reader_init(&s->reader, p->line_max);
    buf_init(&s->line);
    s->refs = 1;
    fake_srv.nallocated++;
    buf_init(&fake_conn.in);
    fake_conn.tls = fake_conn.tls_pending = false;
    fake_conn.out_bytes = 0;
    p->open(s);
    return s;
}

/* Bytes from the client; then the session and the queued work run until all is quiet. */
static void fake_session_input(fe_session_t *s, const void *data, size_t len)
{
    if (s->closing)
        return;
    if (buf_append(&fake_conn.in, data, len) < 0)
        abort();
    fake_time_passes();
    fake_settle();
    if (s->closing)
        return;
    fake_process(s);
    for (int round = 0; round < 64; round++) {
        fake_settle();
        if (fake_conn.tls_pending && !s->closing) {
            fake_conn.tls_pending = false;
            fake_conn.tls = true;
            if (s->srv->proto->tls_ready)
                s->srv->proto->tls_ready(s);
        }
        if (s->closing || s->waiting || fake_conn.in.len == 0)
            break;
        fake_process(s);
    }
}

/* The client goes away: what is pending finishes (seeing the session closing), then the
 * session is released. */
static void fake_session_end(fe_session_t *s)
{
    s->closing = true;
    s->conn = NULL; /* as fe.c once the connection is gone */
    fake_time_passes();
    fake_settle();
    buf_free(&fake_conn.in);
    fe_session_unref(s);
    fake_settle();
    if (fake_srv.nallocated != 0)
        abort(); /* a reference was never given back */
}

#endif
