/* webd: a few blocking libpq connections shared by the request threads. Connections are
 * made on first use and reset when they broke, so webd starts and keeps running while
 * PostgreSQL is down; requests then get 503. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "webd.h"

#define PGPOOL_WAIT_S 10

struct pgpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *url;
    int size;
    PGconn **conns;
    bool *busy;
};

pgpool_t *pgpool_create(const char *url, int size)
{
    pgpool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->url = strdup(url);
    p->size = size;
    p->conns = calloc((size_t)size, sizeof *p->conns);
    p->busy = calloc((size_t)size, sizeof *p->busy);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (!p->url || !p->conns || !p->busy || pthread_mutex_init(&p->mu, NULL) != 0 ||
        pthread_cond_init(&p->cv, &ca) != 0) {
        free(p->url);
        free(p->conns);
        free(p->busy);
        free(p);
        p = NULL;
    }
    pthread_condattr_destroy(&ca);
    return p;
}

void pgpool_destroy(pgpool_t *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->size; i++)
        if (p->conns[i])
            PQfinish(p->conns[i]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->url);
    free(p->conns);
    free(p->busy);
    free(p);
}

static void quiet_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* False when an idle connection has been closed by the server (a restart, an administrator's
 * pg_terminate_backend): libpq only notices at the next query, which would then fail. The
 * server's goodbye makes the socket readable; reading it tells. */
static bool conn_alive(PGconn *c)
{
    for (int round = 0; round < 4; round++) {
        if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE)
            return false;
        struct pollfd pfd = { .fd = PQsocket(c), .events = POLLIN };
        if (pfd.fd < 0)
            return false;
        if (poll(&pfd, 1, 0) <= 0)
            return true; /* nothing to read: as good as a connection can be known to be */
        if (!PQconsumeInput(c))
            return false;
        PGnotify *n;
        while ((n = PQnotifies(c)))
            PQfreemem(n);
    }
    return PQstatus(c) == CONNECTION_OK;
}

/* A working connection in slot i (made or reset here, outside the lock), or NULL. */
static PGconn *slot_ready(pgpool_t *p, PGconn *c)
{
    if (c && conn_alive(c))
        return c;
    if (c)
        PQfinish(c);
    const char *keys[] = { "connect_timeout", "dbname", "application_name", "options", NULL };
    const char *vals[] = { "5", p->url, "webd", "-c statement_timeout=15000", NULL };
    c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        log_warn("database connection failed", "error=\"%s\"",
                 c ? strtok(PQerrorMessage(c), "\n") : "out of memory");
        if (c)
            PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, quiet_notice, NULL);
    return c;
}

PGconn *pgpool_get(pgpool_t *p)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += PGPOOL_WAIT_S;
    pthread_mutex_lock(&p->mu);
    int slot = -1;
    while (slot < 0) {
        for (int i = 0; i < p->size && slot < 0; i++)
            if (!p->busy[i])
                slot = i;
        if (slot < 0 && pthread_cond_timedwait(&p->cv, &p->mu, &until) == ETIMEDOUT)
            break;
    }
    PGconn *c = NULL;
    if (slot >= 0) {
        p->busy[slot] = true;
        c = p->conns[slot];
        p->conns[slot] = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    if (slot < 0)
        return NULL;
    c = slot_ready(p, c);
    pthread_mutex_lock(&p->mu);
    p->conns[slot] = c;
    if (!c) {
        p->busy[slot] = false;
        pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return c;
}

void pgpool_put(pgpool_t *p, PGconn *c)
{
    if (!c)
        return;
    /* A request that failed mid-transaction leaves it to be rolled back here. */
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
        PQclear(PQexec(c, "ROLLBACK"));
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->size; i++)
        if (p->conns[i] == c) {
            p->busy[i] = false;
            break;
        }
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}
