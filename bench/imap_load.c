/* IMAP load: C client threads against one IMAP server (RFC 3501) over plain TCP, for a
 * fixed time or a fixed number of operations, reported as operations per second, untagged
 * responses per second, MB/s received and p50/p90/p99 latency. bench/imap_bench.sh drives
 * Postern's imapd and Dovecot's imap with it under the same load, so the ratio compares the
 * servers, not the clients.
 *
 *   login:   connect, greeting, LOGIN, LOGOUT (up to its tagged OK), close; one operation
 *            per cycle, timed from connect to the tagged reply to LOGOUT.
 *   command: each client connects and logs in once, SELECTs --select (when given), then
 *            sends --command again and again, reading every response up to the tagged
 *            OK; one operation per command. "%n" in the command is replaced by a message
 *            number cycling --first .. --last (so "FETCH %n BODY.PEEK[]" walks the
 *            mailbox), "%%" by "%". The untagged responses (e.g. one "* n FETCH" per
 *            message) are counted as items.
 *
 * Client i logs in as --user-format with i (e.g. 'login%d@bench.test'; a format without
 * %d gives every client the same user). LOGIN must be allowed without TLS. A tagged NO or
 * BAD, a closed connection or a 30 s silence is a failure; the first reply of that kind
 * is printed to stderr.
 *
 *   imap_load --port P --password PW [--mode login|command] [--clients N] [--seconds S]
 *             [--ops N] [--user-format F] [--select MAILBOX] [--command CMD]
 *             [--first N] [--last N] [--host 127.0.0.1]
 *
 * Output, one line: mode=.. clients=.. ops=.. failures=.. seconds=.. ops_per_s=..
 * items_per_s=.. mb_per_s=.. p50_us=.. p90_us=.. p99_us=.. max_us=..
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "load.h"

#define RBUF_SIZE (1024 * 1024) /* longest response line (without literals) accepted */

typedef struct load {
    const char *host;
    int port;
    bool login_mode;
    const char *user_format;
    const char *password;
    const char *select;
    const char *command;
    long first, last;
    unsigned long max_ops;  /* per client; 0: until the deadline */
    double deadline_us;
    pthread_mutex_t report_lock;
    bool reported;          /* the first failure has been printed */
} load_t;

typedef struct client {
    load_t *load;
    int index;
    load_lat_t lat;
    unsigned long failures;
    unsigned long long items;
    unsigned tagno;
    /* a connection */
    load_conn_t conn;
} client_t;

static void report(client_t *c, const char *what, const char *line)
{
    pthread_mutex_lock(&c->load->report_lock);
    if (!c->load->reported) {
        c->load->reported = true;
        fprintf(stderr, "imap_load: client %d: %s: %.300s\n", c->index, what, line ? line : "");
    }
    pthread_mutex_unlock(&c->load->report_lock);
}

/* The next line: *line points into the buffer (valid until the next read), CRLF removed
 * and NUL-terminated. Returns 0, or -1. */
static int read_line(client_t *c, char **line, size_t *len)
{
    size_t scanned = 0;
    for (;;) {
        char *start = c->conn.buf + c->conn.off;
        char *lf = memchr(start + scanned, '\n', c->conn.len - c->conn.off - scanned);
        if (lf) {
            size_t n = (size_t)(lf - start);
            *lf = '\0';
            if (n > 0 && start[n - 1] == '\r')
                start[--n] = '\0';
            c->conn.off += (size_t)(lf - start) + 1;
            *line = start;
            *len = n;
            return 0;
        }
        scanned = c->conn.len - c->conn.off;
        if (load_fill(&c->conn) < 0)
            return -1;
    }
}

/* Skips n bytes of a literal (RFC 3501 section 4.3). */
static int skip_bytes(client_t *c, unsigned long long n)
{
    while (n > 0) {
        size_t avail = c->conn.len - c->conn.off;
        if (avail == 0) {
            c->conn.off = c->conn.len = 0;
            if (load_fill(&c->conn) < 0)
                return -1;
            continue;
        }
        size_t take = avail < n ? avail : (size_t)n;
        c->conn.off += take;
        n -= take;
    }
    return 0;
}

/* The literal announced at the end of a response line ("{123}"), or -1 for none. */
static long long literal_at_end(const char *line, size_t len)
{
    if (len < 3 || line[len - 1] != '}')
        return -1;
    size_t i = len - 1;
    while (i > 0 && line[i - 1] >= '0' && line[i - 1] <= '9')
        i--;
    if (i == 0 || i == len - 1 || line[i - 1] != '{')
        return -1;
    return strtoll(line + i, NULL, 10);
}

/* Reads responses up to the tagged one of tag. Counts the untagged responses into
 * c->items. Returns 0 for a tagged OK, -1 otherwise (reported). */
static int read_until_tagged(client_t *c, const char *tag)
{
    size_t taglen = strlen(tag);
    bool continued = false; /* the line goes on after a literal: not a new response */
    for (;;) {
        char *line;
        size_t len;
        if (read_line(c, &line, &len) < 0) {
            report(c, "connection closed or timed out waiting for", tag);
            return -1;
        }
        if (!continued && len > taglen && memcmp(line, tag, taglen) == 0 && line[taglen] == ' ') {
            if (strncmp(line + taglen + 1, "OK", 2) == 0)
                return 0;
            report(c, "tagged reply", line);
            return -1;
        }
        if (!continued && line[0] == '*')
            c->items++;
        long long lit = literal_at_end(line, len);
        if (lit >= 0) {
            if (skip_bytes(c, (unsigned long long)lit) < 0) {
                report(c, "connection closed inside a literal", tag);
                return -1;
            }
            continued = true;
        } else {
            continued = false;
        }
    }
}

/* Sends "<tag> text\r\n" and reads up to the tagged reply. */
static int command(client_t *c, const char *text)
{
    char tag[32], out[4096];
    snprintf(tag, sizeof tag, "c%u", ++c->tagno);
    int n = snprintf(out, sizeof out, "%s %s\r\n", tag, text);
    if (n <= 0 || (size_t)n >= sizeof out)
        return -1;
    if (write(c->conn.fd, out, (size_t)n) != n) {
        report(c, "write failed for", text);
        return -1;
    }
    return read_until_tagged(c, tag);
}

static int login(client_t *c)
{
    char *line, cmd[512], user[256];
    size_t len;
    if (read_line(c, &line, &len) < 0 || strncmp(line, "* OK", 4) != 0) {
        report(c, "greeting", c->conn.fd >= 0 ? "not * OK" : "none");
        return -1;
    }
    snprintf(user, sizeof user, c->load->user_format, c->index);
    snprintf(cmd, sizeof cmd, "LOGIN \"%s\" \"%s\"", user, c->load->password);
    return command(c, cmd);
}

static void run_login(client_t *c)
{
    for (unsigned long k = 0; load_now_us() < c->load->deadline_us &&
                              (c->load->max_ops == 0 || k < c->load->max_ops); k++) {
        double t0 = load_now_us();
        if (load_connect(&c->conn, c->load->host, c->load->port) < 0 || login(c) < 0 || command(c, "LOGOUT") < 0) {
            c->failures++;
            load_close(&c->conn);
            usleep(10000);
            continue;
        }
        load_lat_record(&c->lat, load_now_us() - t0);
        load_close(&c->conn);
    }
}

/* The command with "%n" replaced by n and "%%" by "%". */
static void expand(const char *tmpl, long n, char *out, size_t out_len)
{
    size_t o = 0;
    for (const char *p = tmpl; *p && o + 24 < out_len; p++) {
        if (p[0] == '%' && p[1] == 'n') {
            o += (size_t)snprintf(out + o, out_len - o, "%ld", n);
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            out[o++] = '%';
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static void run_command(client_t *c)
{
    char cmd[1024];
    if (load_connect(&c->conn, c->load->host, c->load->port) < 0 || login(c) < 0) {
        c->failures++;
        load_close(&c->conn);
        return;
    }
    if (c->load->select) {
        snprintf(cmd, sizeof cmd, "SELECT \"%s\"", c->load->select);
        if (command(c, cmd) < 0) {
            c->failures++;
            load_close(&c->conn);
            return;
        }
    }
    c->conn.bytes = 0;
    c->items = 0;
    long span = c->load->last - c->load->first + 1;
    /* Clients start at different messages, so they do not read the same one together. */
    long n = c->load->first + (long)c->index * (span / 8 + 1) % span;
    for (unsigned long k = 0; load_now_us() < c->load->deadline_us &&
                              (c->load->max_ops == 0 || k < c->load->max_ops); k++) {
        expand(c->load->command, n, cmd, sizeof cmd);
        double t0 = load_now_us();
        if (command(c, cmd) < 0) {
            c->failures++;
            break;
        }
        load_lat_record(&c->lat, load_now_us() - t0);
        n = n + 1 > c->load->last ? c->load->first : n + 1;
    }
    /* Not counted: the LOGOUT's bytes and its reply. */
    unsigned long long bytes = c->conn.bytes, items = c->items;
    command(c, "LOGOUT");
    c->conn.bytes = bytes;
    c->items = items;
    load_close(&c->conn);
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
    if (c->load->login_mode)
        run_login(c);
    else
        run_command(c);
    free(c->conn.buf);
    return NULL;
}

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s --port P --password PW [--mode login|command] [--clients N]\n"
            "       [--seconds S] [--ops N] [--user-format F] [--select MAILBOX]\n"
            "       [--command CMD] [--first N] [--last N] [--host A]\n",
            prog);
    return 2;
}

int main(int argc, char **argv)
{
    load_t load = { .host = "127.0.0.1", .user_format = "bench%d@bench.test", .first = 1,
                    .last = 1 };
    const char *mode = "login";
    int clients = 8;
    double seconds = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage(argv[0]);
        if (strcmp(a, "--host") == 0)
            load.host = v;
        else if (strcmp(a, "--port") == 0)
            load.port = atoi(v);
        else if (strcmp(a, "--mode") == 0)
            mode = v;
        else if (strcmp(a, "--clients") == 0)
            clients = atoi(v);
        else if (strcmp(a, "--seconds") == 0)
            seconds = atof(v);
        else if (strcmp(a, "--ops") == 0)
            load.max_ops = strtoul(v, NULL, 10);
        else if (strcmp(a, "--user-format") == 0)
            load.user_format = v;
        else if (strcmp(a, "--password") == 0)
            load.password = v;
        else if (strcmp(a, "--select") == 0)
            load.select = v;
        else if (strcmp(a, "--command") == 0)
            load.command = v;
        else if (strcmp(a, "--first") == 0)
            load.first = atol(v);
        else if (strcmp(a, "--last") == 0)
            load.last = atol(v);
        else
            return usage(argv[0]);
        i++;
    }
    load.login_mode = strcmp(mode, "login") == 0;
    if (load.port <= 0 || !load.password || clients <= 0 || seconds <= 0 ||
        (!load.login_mode && (strcmp(mode, "command") != 0 || !load.command)) ||
        load.first < 1 || load.last < load.first)
        return usage(argv[0]);
    pthread_mutex_init(&load.report_lock, NULL);
    client_t *cs = calloc((size_t)clients, sizeof *cs);
    pthread_t *ts = calloc((size_t)clients, sizeof *ts);
    if (!cs || !ts)
        return 1;
    double start = load_now_us();
    load.deadline_us = start + seconds * 1e6;
    for (int i = 0; i < clients; i++) {
        cs[i].load = &load;
        cs[i].index = i;
        cs[i].conn.fd = -1;
        pthread_create(&ts[i], NULL, client_main, &cs[i]);
    }
    size_t total = 0;
    unsigned long failures = 0;
    unsigned long long bytes = 0, items = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(ts[i], NULL);
        total += cs[i].lat.n;
        failures += cs[i].failures;
        bytes += cs[i].conn.bytes;
        items += cs[i].items;
    }
    double elapsed = (load_now_us() - start) / 1e6;
    load_lat_t all = { 0 };
    for (int i = 0; i < clients; i++)
        load_lat_take(&all, &cs[i].lat);
    load_lat_sort(&all);
    printf("mode=%s clients=%d ops=%zu failures=%lu seconds=%.3f ops_per_s=%.1f "
           "items_per_s=%.1f mb_per_s=%.2f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f\n",
           mode, clients, total, failures, elapsed, total / elapsed, items / elapsed,
           bytes / elapsed / 1e6, load_lat_pct(&all, 0.5), load_lat_pct(&all, 0.9),
           load_lat_pct(&all, 0.99), load_lat_pct(&all, 1));
    free(all.us);
    free(cs);
    free(ts);
    pthread_mutex_destroy(&load.report_lock);
    return failures > 0 && total == 0 ? 1 : 0;
}
