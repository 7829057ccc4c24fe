/* relayd: delivers the outbound queue to other hosts.
 *
 *   queue.c    claims due messages from PostgreSQL with a lease, renews it, and records
 *              each attempt (recipient states, next try, bounce and delay notices)
 *   route.c    where a domain's mail goes: a transport (relay_transports) or its MX hosts
 *              (lib/net/dns.h), and its STARTTLS policy (relay_tls_policy)
 *   deliver.c  destinations: a queue of jobs and a few SMTP client sessions each
 *              (smtpc.h), reused for the next message to the same place
 *   reply.c, smtpc.c, schedule.c  the SMTP client and the retry schedule
 *
 * A claimed message becomes one job per recipient domain; when every job has reported,
 * the message's attempt is recorded in one transaction. */
#ifndef POSTERN_RELAYD_H
#define POSTERN_RELAYD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "net/dns.h"
#include "net/tls.h"
#include "smtpc.h"
#include "svc/service.h"

typedef struct relayd relayd_t;
typedef struct rmsg rmsg_t;
typedef struct dest dest_t;

/* One recipient of a claimed message and what this attempt made of it. */
typedef enum rcpt_state { RCPT_PENDING, RCPT_DELIVERED, RCPT_BOUNCED } rcpt_state_t;

typedef struct rcpt {
    char *address;
    const char *domain;     /* points into address */
    rcpt_state_t state;
    bool decided;           /* this attempt has a result for it */
    char reply[600];        /* "550 5.1.1 no such user" or a local explanation */
    char status[16];        /* enhanced status for a DSN: "5.1.1" */
    char remote[300];       /* "mx.example.com[192.0.2.1]:25", "" when none was reached */
} rcpt_t;

/* A claimed message. */
struct rmsg {
    relayd_t *rd;
    int64_t id;             /* outbound_queue.id */
    char *queue_id;
    char *sender;           /* "" for the null sender */
    int64_t created_ms;
    int attempts;
    bool warned;            /* the delay notice went out before */
    bool cancelled;         /* mailctl queue delete: bounce what is pending */
    rcpt_t *rcpts;          /* sorted by domain */
    size_t nrcpts;
    char *raw;              /* the message as queued */
    size_t raw_len;
    bool eightbit;
    size_t jobs_left;       /* jobs not yet reported */
    bool loading;           /* its bytes are being read */
    bool started;           /* its jobs went out */
    bool orphan;            /* relayd went away while its database work was out */
    bool finishing;         /* its attempt is being recorded */
    rmsg_t *prev, *next;
};

/* The recipients of one message in one domain: what one SMTP transaction delivers. */
typedef struct job {
    rmsg_t *msg;
    size_t first, count;    /* msg->rcpts[first .. first + count) */
    struct job *next;
} job_t;

/* Settings read when a message is claimed (the configuration may change between). */
typedef struct relay_settings {
    int64_t max_lifetime_s, delay_warning_s, retry_min_s, retry_max_s, lease_s;
    long destination_concurrency, concurrency;
    bool allow_private;
} relay_settings_t;

struct relayd {
    svc_t *svc;
    dns_t *dns;
    tls_client_t *tls;
    int mx_port;            /* RELAY_SMTP_PORT: where MX hosts are contacted (25) */
    long drain_timeout_s;   /* DRAIN_TIMEOUT: deliveries in hand may finish this long */
    relay_settings_t set;
    /* queue.c */
    rmsg_t *msgs;           /* claimed, in flight */
    size_t nmsgs;
    bool claiming;          /* a claim query is out */
    bool again;             /* something woke us while a claim was out */
    uv_timer_t poll_timer;  /* the next due message, or the fallback poll */
    uv_timer_t renew_timer; /* keeps the leases of messages in flight */
    uv_timer_t stop_timer;  /* the drain deadline */
    bool stopping;
    bool deadline_passed;   /* the drain deadline: attempts not recorded are given up */
    bool releasing;         /* the messages in hand are being handed back */
    bool queue_started;     /* queue_start() made the timers */
    bool destroyed;         /* relayd_destroy() ran: callbacks still to come do nothing */
    /* route.c */
    struct route_table *routes;
    /* deliver.c */
    dest_t *dests;
    uint64_t sessions;      /* SMTP sessions opened, for logs */
    size_t live_sessions;   /* smtpc sessions not yet freed (closing ones included) */
};

/* queue.c */
int queue_start(relayd_t *rd);
/* Claims more messages when there is room (from the loop: after a wake-up, a finished
 * message, the poll timer). */
void queue_pump(relayd_t *rd);
/* A job has its recipients decided: when it was the message's last, records the attempt. */
void queue_job_done(rmsg_t *m);
/* Stops claiming; when nothing is in flight, or at the drain deadline, hands the messages
 * back (leases released) and calls svc_stopped(). */
void queue_stop(relayd_t *rd);
void queue_destroy(relayd_t *rd);
/* Reads the relay.* settings from the configuration. */
void queue_read_settings(relayd_t *rd);

/* route.c */
typedef enum route_tls { ROUTE_TLS_MAY, ROUTE_TLS_ENCRYPT, ROUTE_TLS_VERIFY } route_tls_t;
int route_start(relayd_t *rd);
void route_destroy(relayd_t *rd);
/* Reloads transports and TLS policies from PostgreSQL (on a configuration change). */
void route_reload(relayd_t *rd);
bool route_loaded(const relayd_t *rd);
/* The next hop for domain: writes "host:port" of a transport into hop (and true), or the
 * domain itself (false: MX lookup). */
bool route_next_hop(const relayd_t *rd, const char *domain, char *hop, size_t hop_len,
                    char *host, size_t host_len, int *port);
route_tls_t route_tls_policy(const relayd_t *rd, const char *domain);
const char *route_tls_name(route_tls_t t);

/* deliver.c */
/* Queues a job to its destination; its result comes back through queue_job_done(). */
void deliver_job(relayd_t *rd, job_t *job);
/* Closes every destination; jobs not finished are dropped without a result. */
void deliver_destroy(relayd_t *rd);
size_t deliver_busy(const relayd_t *rd);

/* Records a result for recipients [first, first+count) of m from an SMTP reply or a local
 * decision (code 0 with text: a local temporary failure). */
void rcpt_set(rmsg_t *m, size_t first, size_t count, int code, const char *status,
              const char *text, const char *remote);

#endif
