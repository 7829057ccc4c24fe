/* What the load generators share (bench/pop3_load.c, bench/imap_load.c): a monotonic clock,
 * a latency list, a blocking TCP connection with a read buffer, and sorting for percentiles.
 * Header-only: each load generator is one program built from one .c file. */
#ifndef POSTERN_BENCH_LOAD_H
#define POSTERN_BENCH_LOAD_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static inline double load_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* Latencies in microseconds, growing as needed (a failed allocation drops the sample). */
typedef struct load_lat {
    double *us;
    size_t n, cap;
} load_lat_t;

static inline void load_lat_record(load_lat_t *l, double us)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4096;
        double *p = realloc(l->us, cap * sizeof *p);
        if (!p)
            return;
        l->us = p;
        l->cap = cap;
    }
    l->us[l->n++] = us;
}

static inline int load_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Moves the samples of from (emptied) to the end of into. */
static inline void load_lat_take(load_lat_t *into, load_lat_t *from)
{
    for (size_t i = 0; i < from->n; i++)
        load_lat_record(into, from->us[i]);
    free(from->us);
    *from = (load_lat_t){ 0 };
}

static inline void load_lat_sort(load_lat_t *l)
{
    if (l->n)
        qsort(l->us, l->n, sizeof *l->us, load_cmp_double);
}

/* The p-quantile (0..1) of sorted samples; 0 without samples. */
static inline double load_lat_pct(const load_lat_t *sorted, double p)
{
    if (sorted->n == 0)
        return 0;
    size_t i = (size_t)(sorted->n * p);
    return sorted->us[i < sorted->n ? i : sorted->n - 1];
}

/* A blocking connection and what has been read from it: buf[off..len) is unread. */
typedef struct load_conn {
    int fd;
    char *buf;
    size_t cap, len, off;
    unsigned long long bytes; /* read in all */
} load_conn_t;

/* Connects to host:port (IPv4 text) with TCP_NODELAY and a 30 s read timeout; the buffer
 * (cap bytes, allocated by the caller) is emptied. Returns 0, or -1. */
static inline int load_connect(load_conn_t *c, const char *host, int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return -1;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct timeval tv = { .tv_sec = 30 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    c->len = c->off = 0;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static inline void load_close(load_conn_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* Reads more bytes after what the buffer holds. Returns 0, or -1 (closed, timeout, full). */
static inline int load_fill(load_conn_t *c)
{
    if (c->off > 0) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == c->cap)
        return -1;
    ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (n <= 0)
        return -1;
    c->len += (size_t)n;
    c->bytes += (unsigned long long)n;
    return 0;
}

#endif
