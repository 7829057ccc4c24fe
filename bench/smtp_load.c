/* SMTP load: C client threads, each running whole SMTP sessions one after the other against
 * one server (RFC 5321), until a fixed number of sessions has run; reported as sessions and
 * messages per second and the latency of a whole session. bench/smtp_bench.sh drives
 * Postern's submission port and Postfix's (with Dovecot SASL) with it under the same load,
 * so the ratio compares the servers, not the clients.
 *
 * A session: connect, greeting, EHLO, STARTTLS and the TLS handshake (RFC 3207; a full one
 * every time: no session is resumed), EHLO again, AUTH PLAIN with the initial response
 * (RFC 4954), then --per-session messages, each MAIL FROM, RCPT TO, DATA, the message and
 * "." (every command waits for its reply: no pipelining, as smtp-source), QUIT, close. Its
 * latency is from connect to the reply to QUIT. --no-tls leaves STARTTLS out; without
 * --user there is no AUTH. Clients take sessions from one shared count (--sessions), so the
 * number of messages sent is known in advance: --sessions x --per-session.
 *
 * The message is --size bytes exactly, headers included, CRLF line ends, no line starting
 * with "."; the same bytes every time. A reply other than the expected one, a closed
 * connection or a 30 s silence fails the session (the first such reply is printed to
 * stderr); the client then starts its next session.
 *
 *   smtp_load --port P --rcpt ADDR [--user U --password PW] [--from ADDR] [--clients N]
 *             [--sessions N] [--per-session K] [--size BYTES] [--no-tls]
 *             [--helo NAME] [--host 127.0.0.1]
 *
 * Output, one line: clients=.. sessions=.. per_session=.. messages=.. failures=..
 * seconds=.. sessions_per_s=.. msgs_per_s=.. p50_us=.. p90_us=.. p99_us=.. max_us=..
 * tls=VERSION/CIPHER (or tls=none)
 */
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "load.h"

#define RBUF_SIZE 16384 /* replies are short lines */

typedef struct load {
    const char *host;
    int port;
    const char *helo;
    const char *user;     /* NULL: no AUTH */
    const char *password;
    const char *from;
    const char *rcpt;
    bool tls;
    unsigned long per_session;
    unsigned long sessions;   /* in all, shared by the clients */
    atomic_ulong next;        /* sessions taken so far */
    SSL_CTX *ssl_ctx;
    char *auth_plain;         /* "AUTH PLAIN <base64>" */
    char *message;            /* the message, dot-terminated */
    size_t message_len;
    pthread_mutex_t report_lock;
    bool reported;            /* the first failure has been printed */
    char tls_desc[96];        /* the first session's TLS version and cipher */
} load_t;

typedef struct client {
    load_t *load;
    int index;
    load_lat_t lat;
    unsigned long failures, messages;
    load_conn_t conn;
    SSL *ssl; /* after STARTTLS */
} client_t;

static void report(client_t *c, const char *what, const char *line)
{
    pthread_mutex_lock(&c->load->report_lock);
    if (!c->load->reported) {
        c->load->reported = true;
        fprintf(stderr, "smtp_load: client %d: %s: %.300s\n", c->index, what, line ? line : "");
    }
    pthread_mutex_unlock(&c->load->report_lock);
}

/* Reads more bytes after what the buffer holds, through TLS once it is on. Returns 0, or -1
 * (closed, timeout, full). */
static int fill(client_t *c)
{
    if (!c->ssl)
        return load_fill(&c->conn);
    load_conn_t *k = &c->conn;
    if (k->off > 0) {
        memmove(k->buf, k->buf + k->off, k->len - k->off);
        k->len -= k->off;
        k->off = 0;
    }
    if (k->len == k->cap)
        return -1;
    int n = SSL_read(c->ssl, k->buf + k->len, (int)(k->cap - k->len));
    if (n <= 0)
        return -1;
    k->len += (size_t)n;
    k->bytes += (unsigned long long)n;
    return 0;
}

static int send_all(client_t *c, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = c->ssl ? SSL_write(c->ssl, data, (int)(len < (1u << 30) ? len : (1u << 30)))
                           : write(c->conn.fd, data, len);
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* The next line, CRLF removed and NUL-terminated, in line (at most line_len - 1 bytes).
 * Returns 0, or -1. */
static int read_line(client_t *c, char *line, size_t line_len)
{
    for (;;) {
        char *start = c->conn.buf + c->conn.off;
        char *lf = memchr(start, '\n', c->conn.len - c->conn.off);
        if (lf) {
            size_t n = (size_t)(lf - start);
            size_t copy = n < line_len - 1 ? n : line_len - 1;
            memcpy(line, start, copy);
            line[copy] = '\0';
            if (copy > 0 && line[copy - 1] == '\r')
                line[copy - 1] = '\0';
            c->conn.off += n + 1;
            return 0;
        }
        if (fill(c) < 0)
            return -1;
    }
}

/* Reads a whole reply (RFC 5321 section 4.2.1: "xyz-" lines, then "xyz "). Returns 0 when
 * its code is expect, -1 otherwise (reported, with what the client was doing). */
static int reply(client_t *c, int expect, const char *what)
{
    char line[1024];
    for (;;) {
        if (read_line(c, line, sizeof line) < 0) {
            report(c, "connection closed or timed out waiting for the reply to", what);
            return -1;
        }
        if (strlen(line) >= 3 && line[3] == '-')
            continue;
        if (atoi(line) == expect)
            return 0;
        char where[1200];
        snprintf(where, sizeof where, "%s: %s", what, line);
        report(c, "unexpected reply to", where);
        return -1;
    }
}

/* Sends "text\r\n" and reads the reply. */
static int command(client_t *c, const char *text, int expect)
{
    char out[1024];
    int n = snprintf(out, sizeof out, "%s\r\n", text);
    if (n <= 0 || (size_t)n >= sizeof out || send_all(c, out, (size_t)n) < 0) {
        report(c, "write failed for", text);
        return -1;
    }
    return reply(c, expect, text);
}

static int starttls(client_t *c)
{
    if (command(c, "STARTTLS", 220) < 0)
        return -1;
    if (c->conn.off != c->conn.len) { /* RFC 3207 section 5: nothing may follow in clear */
        report(c, "bytes after the reply to", "STARTTLS");
        return -1;
    }
    c->ssl = SSL_new(c->load->ssl_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->conn.fd) != 1 || SSL_connect(c->ssl) != 1) {
        char err[256];
        ERR_error_string_n(ERR_get_error(), err, sizeof err);
        report(c, "TLS handshake failed", err);
        return -1;
    }
    load_t *l = c->load;
    pthread_mutex_lock(&l->report_lock);
    if (!l->tls_desc[0])
        snprintf(l->tls_desc, sizeof l->tls_desc, "%s/%s", SSL_get_version(c->ssl),
                 SSL_get_cipher_name(c->ssl));
    pthread_mutex_unlock(&l->report_lock);
    return 0;
}

static int transaction(client_t *c)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "MAIL FROM:<%s>", c->load->from);
    if (command(c, cmd, 250) < 0)
        return -1;
    snprintf(cmd, sizeof cmd, "RCPT TO:<%s>", c->load->rcpt);
    if (command(c, cmd, 250) < 0 || command(c, "DATA", 354) < 0)
        return -1;
    if (send_all(c, c->load->message, c->load->message_len) < 0) {
        report(c, "write failed for", "the message");
        return -1;
    }
    if (reply(c, 250, "the end of the message") < 0)
        return -1;
    c->messages++;
    return 0;
}

static void end_session(client_t *c)
{
    if (c->ssl) {
        SSL_shutdown(c->ssl); /* close_notify; the server's is not waited for */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    load_close(&c->conn);
}

static int session(client_t *c)
{
    load_t *l = c->load;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "EHLO %s", l->helo);
    if (load_connect(&c->conn, l->host, l->port) < 0) {
        report(c, "cannot connect", "");
        return -1;
    }
    if (reply(c, 220, "the greeting") < 0 || command(c, cmd, 250) < 0)
        return -1;
    if (l->tls && (starttls(c) < 0 || command(c, cmd, 250) < 0))
        return -1;
    if (l->user && command(c, l->auth_plain, 235) < 0)
        return -1;
    for (unsigned long k = 0; k < l->per_session; k++)
        if (transaction(c) < 0)
            return -1;
    return command(c, "QUIT", 221);
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    c->conn.buf = malloc(RBUF_SIZE);
    c->conn.cap = RBUF_SIZE;
    if (!c->conn.buf) {
        c->failures++;
        return NULL;
    }
    while (atomic_fetch_add(&c->load->next, 1) < c->load->sessions) {
        double t0 = load_now_us();
        int rc = session(c);
        end_session(c);
        if (rc < 0) {
            c->failures++;
            usleep(10000);
            continue;
        }
        load_lat_record(&c->lat, load_now_us() - t0);
    }
    free(c->conn.buf);
    return NULL;
}

/* "AUTH PLAIN " and base64 of "\0user\0password" (RFC 4616). */
static char *auth_plain(const char *user, const char *password)
{
    size_t ul = strlen(user), pl = strlen(password), rawlen = ul + pl + 2;
    unsigned char *raw = malloc(rawlen);
    char *out = malloc(11 + 4 * ((rawlen + 2) / 3) + 1);
    if (!raw || !out) {
        free(raw);
        free(out);
        return NULL;
    }
    raw[0] = '\0';
    memcpy(raw + 1, user, ul);
    raw[ul + 1] = '\0';
    memcpy(raw + ul + 2, password, pl);
    memcpy(out, "AUTH PLAIN ", 11);
    EVP_EncodeBlock((unsigned char *)out + 11, raw, (int)rawlen);
    free(raw);
    return out;
}

/* The message: headers, then lines of 70 characters, size bytes in all, then ".\r\n". */
static char *make_message(const char *from, const char *rcpt, size_t size, size_t *len_r)
{
    char head[1024];
    int hl = snprintf(head, sizeof head,
                      "From: <%s>\r\nTo: <%s>\r\nSubject: smtp_load\r\n"
                      "Date: Thu, 03 Dec 2026 12:00:00 +0000\r\n"
                      "Message-ID: <smtp-load@bench.test>\r\nMIME-Version: 1.0\r\n"
                      "Content-Type: text/plain; charset=us-ascii\r\n\r\n",
                      from, rcpt);
    if (hl <= 0 || (size_t)hl >= sizeof head || size < (size_t)hl + 4)
        return NULL;
    char *m = malloc(size + 4);
    if (!m)
        return NULL;
    memcpy(m, head, (size_t)hl);
    size_t o = (size_t)hl;
    while (o < size) {
        /* Lines of 70; the last one takes the rest (1 to 72 characters). */
        size_t rest = size - o, line = rest >= 75 || rest == 72 ? 70 : rest - 2;
        memset(m + o, 'x', line);
        memcpy(m + o + line, "\r\n", 2);
        o += line + 2;
    }
    memcpy(m + o, ".\r\n", 3);
    *len_r = o + 3;
    return m;
}

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s --port P --rcpt ADDR [--user U --password PW] [--from ADDR]\n"
            "       [--clients N] [--sessions N] [--per-session K] [--size BYTES] [--no-tls]\n"
            "       [--helo NAME] [--host A]\n",
            prog);
    return 2;
}

int main(int argc, char **argv)
{
    load_t load = { .host = "127.0.0.1", .helo = "client.bench.test", .tls = true,
                    .per_session = 1, .sessions = 100 };
    int clients = 8;
    size_t size = 1024;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--no-tls") == 0) {
            load.tls = false;
            continue;
        }
        if (!v)
            return usage(argv[0]);
        if (strcmp(a, "--host") == 0)
            load.host = v;
        else if (strcmp(a, "--port") == 0)
            load.port = atoi(v);
        else if (strcmp(a, "--helo") == 0)
            load.helo = v;
        else if (strcmp(a, "--user") == 0)
            load.user = v;
        else if (strcmp(a, "--password") == 0)
            load.password = v;
        else if (strcmp(a, "--from") == 0)
            load.from = v;
        else if (strcmp(a, "--rcpt") == 0)
            load.rcpt = v;
        else if (strcmp(a, "--clients") == 0)
            clients = atoi(v);
        else if (strcmp(a, "--sessions") == 0)
            load.sessions = strtoul(v, NULL, 10);
        else if (strcmp(a, "--per-session") == 0)
            load.per_session = strtoul(v, NULL, 10);
        else if (strcmp(a, "--size") == 0)
            size = strtoul(v, NULL, 10);
        else
            return usage(argv[0]);
        i++;
    }
    if (!load.from)
        load.from = load.user ? load.user : "sender@client.bench.test";
    if (load.port <= 0 || !load.rcpt || clients <= 0 || load.sessions == 0 ||
        load.per_session == 0 || !load.user != !load.password || strlen(load.from) > 256 ||
        strlen(load.rcpt) > 256 || strlen(load.helo) > 255)
        return usage(argv[0]);
    load.message = make_message(load.from, load.rcpt, size, &load.message_len);
    if (!load.message) {
        fprintf(stderr, "smtp_load: --size %zu is too small for the headers\n", size);
        return 2;
    }
    if (load.user && !(load.auth_plain = auth_plain(load.user, load.password)))
        return 1;
    if (load.tls) {
        load.ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (!load.ssl_ctx)
            return 1;
        /* Loopback and a throwaway certificate: nothing to verify; no session kept, so every
         * handshake is a full one. */
        SSL_CTX_set_verify(load.ssl_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_session_cache_mode(load.ssl_ctx, SSL_SESS_CACHE_OFF);
    }
    signal(SIGPIPE, SIG_IGN); /* a server that hung up fails the session, not the program */
    pthread_mutex_init(&load.report_lock, NULL);
    client_t *cs = calloc((size_t)clients, sizeof *cs);
    pthread_t *ts = calloc((size_t)clients, sizeof *ts);
    if (!cs || !ts)
        return 1;
    double start = load_now_us();
    for (int i = 0; i < clients; i++) {
        cs[i].load = &load;
        cs[i].index = i;
        cs[i].conn.fd = -1;
        pthread_create(&ts[i], NULL, client_main, &cs[i]);
    }
    unsigned long failures = 0, messages = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(ts[i], NULL);
        failures += cs[i].failures;
        messages += cs[i].messages;
    }
    double elapsed = (load_now_us() - start) / 1e6;
    load_lat_t all = { 0 };
    for (int i = 0; i < clients; i++)
        load_lat_take(&all, &cs[i].lat);
    load_lat_sort(&all);
    printf("clients=%d sessions=%zu per_session=%lu messages=%lu failures=%lu seconds=%.3f "
           "sessions_per_s=%.1f msgs_per_s=%.1f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f "
           "tls=%s\n",
           clients, all.n, load.per_session, messages, failures, elapsed, all.n / elapsed,
           messages / elapsed, load_lat_pct(&all, 0.5), load_lat_pct(&all, 0.9),
           load_lat_pct(&all, 0.99), load_lat_pct(&all, 1),
           load.tls ? (load.tls_desc[0] ? load.tls_desc : "failed") : "none");
    free(all.us);
    free(cs);
    free(ts);
    free(load.message);
    free(load.auth_plain);
    SSL_CTX_free(load.ssl_ctx);
    pthread_mutex_destroy(&load.report_lock);
    return failures > 0 && all.n == 0 ? 1 : 0;
}
