/* POP3 load: C client threads against one POP3 server, for a fixed time, reported as
 * operations per second and p50/p99 latency. The same program drives Postern's pop3d and
 * Dovecot's in bench/pop3_bench.sh, so the ratio compares the servers, not the clients.
 *
 *   login: connect, greeting, USER, PASS, QUIT, close; one operation per login (the
 *          latency is from connect to the reply to PASS).
 *   retr:  each client logs in once, then RETRs messages 1..n in turn (n from STAT) until
 *          the time is up; one operation per message, and the bytes received.
 *   top:   the same with TOP n 10 (the header and the first 10 lines of the body, RFC 1939
 *          section 7: what a client that previews messages asks for).
 *
 * Client i logs in as the user --user-format gives for i (one user per client: a maildrop
 * takes one session at a time). Plain TCP: USER/PASS must be allowed without TLS.
 *
 *   pop3_load --port 2110 --mode login|retr|top --clients 4 --seconds 15
 *             --user-format 'bench%d@bench.test' --password PW [--host 127.0.0.1]
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "load.h"

typedef struct load {
    const char *host;
    int port;
    const char *mode;
    const char *user_format;
    const char *password;
    double deadline_us;
} load_t;

typedef struct client {
    const load_t *load;
    int index;
    load_lat_t lat;
    unsigned long failures;
    /* a connection */
    load_conn_t conn;
    char buf[65536];
} client_t;

/* One reply line into line (NUL-terminated, CRLF removed). Returns 0, or -1. */
static int read_line(client_t *c, char *line, size_t line_len)
{
    for (;;) {
        char *lf = memchr(c->conn.buf + c->conn.off, '\n', c->conn.len - c->conn.off);
        if (lf) {
            size_t n = (size_t)(lf - (c->conn.buf + c->conn.off));
            size_t copy = n < line_len - 1 ? n : line_len - 1;
            memcpy(line, c->conn.buf + c->conn.off, copy);
            line[copy] = '\0';
            if (copy > 0 && line[copy - 1] == '\r')
                line[copy - 1] = '\0';
            c->conn.off += n + 1;
            return 0;
        }
        if (load_fill(&c->conn) < 0)
            return -1;
    }
}

/* Skips a multi-line body up to and including ".\r\n" on a line of its own. Dot-stuffing
 * guarantees "\r\n.\r\n" cannot occur inside it. */
static int skip_multi(client_t *c)
{
    const char *end = "\r\n.\r\n";
    /* The status line's CRLF has been consumed: a body may also be just ".\r\n". */
    bool at_start = true;
    for (;;) {
        const char *p = c->conn.buf + c->conn.off;
        size_t avail = c->conn.len - c->conn.off;
        if (at_start && avail >= 3 && memcmp(p, ".\r\n", 3) == 0) {
            c->conn.off += 3;
            return 0;
        }
        const char *hit = avail >= 5 ? memmem(p, avail, end, 5) : NULL;
        if (hit) {
            c->conn.off += (size_t)(hit - p) + 5;
            return 0;
        }
        if (avail >= 3)
            at_start = false;
        /* Keep the last 4 bytes: the terminator may straddle two reads. */
        if (avail > 4)
            c->conn.off += avail - 4;
        if (load_fill(&c->conn) < 0)
            return -1;
    }
}

static int command(client_t *c, const char *cmd, char *reply, size_t reply_len)
{
    size_t n = strlen(cmd);
    if (write(c->conn.fd, cmd, n) != (ssize_t)n)
        return -1;
    if (read_line(c, reply, reply_len) < 0)
        return -1;
    return strncmp(reply, "+OK", 3) == 0 ? 0 : -1;
}

static int login(client_t *c)
{
    char line[512], cmd[512];
    if (read_line(c, line, sizeof line) < 0 || strncmp(line, "+OK", 3) != 0)
        return -1;
    char user[256];
    snprintf(user, sizeof user, c->load->user_format, c->index);
    snprintf(cmd, sizeof cmd, "USER %s\r\n", user);
    if (command(c, cmd, line, sizeof line) < 0)
        return -1;
    snprintf(cmd, sizeof cmd, "PASS %s\r\n", c->load->password);
    if (command(c, cmd, line, sizeof line) < 0) {
        fprintf(stderr, "client %d: PASS: %s\n", c->index, line);
        return -1;
    }
    return 0;
}

static void run_login(client_t *c)
{
    char line[512];
    while (load_now_us() < c->load->deadline_us) {
        double t0 = load_now_us();
        if (load_connect(&c->conn, c->load->host, c->load->port) < 0 || login(c) < 0) {
            c->failures++;
            load_close(&c->conn);
            usleep(10000);
            continue;
        }
        load_lat_record(&c->lat, load_now_us() - t0);
        command(c, "QUIT\r\n", line, sizeof line);
        load_close(&c->conn);
    }
}

/* retr and top: one session, the messages over and over. */
static void run_read(client_t *c, bool top)
{
    char line[512], cmd[64];
    if (load_connect(&c->conn, c->load->host, c->load->port) < 0 || login(c) < 0 ||
        command(c, "STAT\r\n", line, sizeof line) < 0) {
        c->failures++;
        load_close(&c->conn);
        return;
    }
    long count = strtol(line + 4, NULL, 10);
    if (count <= 0) {
        fprintf(stderr, "client %d: empty maildrop\n", c->index);
        c->failures++;
        load_close(&c->conn);
        return;
    }
    c->conn.bytes = 0;
    for (long i = 0; load_now_us() < c->load->deadline_us; i = (i + 1) % count) {
        double t0 = load_now_us();
        if (top)
            snprintf(cmd, sizeof cmd, "TOP %ld 10\r\n", i + 1);
        else
            snprintf(cmd, sizeof cmd, "RETR %ld\r\n", i + 1);
        if (command(c, cmd, line, sizeof line) < 0 || skip_multi(c) < 0) {
            c->failures++;
            break;
        }
        load_lat_record(&c->lat, load_now_us() - t0);
    }
    command(c, "QUIT\r\n", line, sizeof line);
    load_close(&c->conn);
}

static void *client_main(void *arg)
{
    client_t *c = arg;
    c->conn.buf = c->buf;
    c->conn.cap = sizeof c->buf;
    if (strcmp(c->load->mode, "retr") == 0 || strcmp(c->load->mode, "top") == 0)
        run_read(c, strcmp(c->load->mode, "top") == 0);
    else
        run_login(c);
    return NULL;
}

int main(int argc, char **argv)
{
    load_t load = { "127.0.0.1", 0, "login", "bench%d@bench.test", NULL, 0 };
    int clients = 4;
    double seconds = 10;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v && strcmp(a, "--host") == 0)
            load.host = v;
        else if (v && strcmp(a, "--port") == 0)
            load.port = atoi(v);
        else if (v && strcmp(a, "--mode") == 0)
            load.mode = v;
        else if (v && strcmp(a, "--clients") == 0)
            clients = atoi(v);
        else if (v && strcmp(a, "--seconds") == 0)
            seconds = atof(v);
        else if (v && strcmp(a, "--user-format") == 0)
            load.user_format = v;
        else if (v && strcmp(a, "--password") == 0)
            load.password = v;
        else {
            fprintf(stderr, "usage: %s --port P --password PW [--mode login|retr|top] [--clients N]"
                            " [--seconds S] [--user-format 'bench%%d@bench.test'] [--host A]\n",
                    argv[0]);
            return 2;
        }
        i++;
    }
    if (load.port <= 0 || !load.password || clients <= 0 || seconds <= 0 ||
        (strcmp(load.mode, "login") != 0 && strcmp(load.mode, "retr") != 0 &&
         strcmp(load.mode, "top") != 0)) {
        fprintf(stderr,
                "%s: need --port, --password, a mode login|retr|top, clients and seconds > 0\n",
                argv[0]);
        return 2;
    }
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
    unsigned long long bytes = 0;
    for (int i = 0; i < clients; i++) {
        pthread_join(ts[i], NULL);
        total += cs[i].lat.n;
        failures += cs[i].failures;
        bytes += cs[i].conn.bytes;
    }
    double elapsed = (load_now_us() - start) / 1e6;
    load_lat_t all = { 0 };
    for (int i = 0; i < clients; i++)
        load_lat_take(&all, &cs[i].lat);
    load_lat_sort(&all);
    printf("mode=%s clients=%d ops=%zu failures=%lu seconds=%.3f ops_per_s=%.1f p50_us=%.0f "
           "p99_us=%.0f mb_per_s=%.2f\n",
           load.mode, clients, total, failures, elapsed, total / elapsed,
           load_lat_pct(&all, 0.5), load_lat_pct(&all, 0.99), bytes / elapsed / 1e6);
    free(all.us);
    free(cs);
    free(ts);
    return failures > 0 && total == 0 ? 1 : 0;
}
