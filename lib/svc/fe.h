/* The front-end skeleton shared by smtpd, pop3d and imapd, standing on the service
 * skeleton (svc/service.h: environment, database, bus, configuration cache, metrics,
 * health, signals, ordered stop): listeners (plain, STARTTLS-capable, implicit TLS),
 * sessions with an idle timer, the line loop, STARTTLS, the limiter's client; SIGHUP
 * reloads the certificate, SIGTERM/SIGINT drain (the service's stop) and exit.
 *
 * A protocol supplies a fe_protocol_t: its listeners and a few callbacks. Its session
 * struct starts with a fe_session_t. Handlers run on the loop thread; one that waits for
 * the database, the bus or a worker calls fe_session_wait() and returns, and the
 * completion calls fe_session_resume(), which goes on with the input already buffered. */
#ifndef POSTERN_FE_H
#define POSTERN_FE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "bus/bus.h"
#include "bus/config.h"
#include "net/conn.h"
#include "store/db.h"
#include "bus/lim.h"
#include "net/health.h"
#include "base/line.h"
#include "base/net.h"
#include "base/metrics.h"
#include "net/tls.h"
#include "postern.pb-c.h"
#include "svc/service.h"

typedef struct fe_server fe_server_t;
typedef struct fe_session fe_session_t;
typedef struct fe_auth fe_auth_t;

typedef enum fe_tls_mode {
    FE_TLS_NONE,     /* STARTTLS offered when a certificate is configured */
    FE_TLS_IMPLICIT, /* TLS from the first byte (RFC 8314) */
} fe_tls_mode_t;

/* Something that takes the session's input lines for a while instead of the protocol: a
 * SASL exchange (lib/svc/fe_auth.h). */
typedef struct fe_input_hook {
    void (*line)(fe_session_t *s, char *line, size_t len, unsigned flags);
    void (*release)(fe_session_t *s); /* the session goes away while the hook is set */
} fe_input_hook_t;

typedef struct fe_listener_conf {
    const char *name;     /* "smtp", "submission", "smtps" */
    const char *port_env; /* environment variable holding the port; "0" disables */
    int default_port;
    fe_tls_mode_t tls;
    int kind;             /* protocol-defined, e.g. submission */
} fe_listener_conf_t;

typedef struct fe_protocol {
    const char *name;                  /* service name for logs and the bus */
    Postern__Service service;
    size_t session_size;               /* of the protocol's session struct */
    size_t line_max;                   /* command line cap, terminator included */
    const fe_listener_conf_t *listeners;
    size_t nlisteners;
    const char *idle_timeout_key;      /* setting holding the idle timeout in seconds */
    void (*open)(fe_session_t *s);     /* send the greeting */
    void (*line)(fe_session_t *s, char *line, size_t len, unsigned flags);
    /* Input asked for with fe_session_read_bytes(), in pieces as it arrives; last is set on
     * the piece that completes it. data is valid during the call only. */
    void (*bytes)(fe_session_t *s, const char *data, size_t len, bool last);
    void (*line_too_long)(fe_session_t *s);
    void (*tls_ready)(fe_session_t *s);/* after STARTTLS: forget what the client said */
    void (*timeout)(fe_session_t *s);  /* idle too long: say so; the session then closes */
    void (*release)(fe_session_t *s);  /* free protocol state */
    /* The client address is blocked: say so, and until when; the session then closes. */
    void (*blocked)(fe_session_t *s, const char *reason, const char *until);
    /* The process is over its memory budget (MEMORY_BUDGET, svc_memory_over_budget()):
     * refuse the new session with the protocol's temporary error instead of the greeting
     * (SMTP 421, POP3 -ERR [SYS/TEMP], IMAP BYE [UNAVAILABLE]); it then closes. Not called
     * on an implicit-TLS listener, where the session closes without a word. */
    void (*overloaded)(fe_session_t *s);
    /* Optional: the server drains. Called for every open session when the drain begins
     * (deadline false): a session that only waits (IMAP IDLE) may say goodbye and close now
     * instead of at the deadline. Called again at the deadline (deadline true) for every
     * session still open, which the skeleton closes right after: say so (SMTP 421, POP3
     * -ERR, IMAP BYE) unless a reply is half written. Not called at the deadline while a
     * writer waits for fe_session_when_writable(), nor for a session not greeted yet. */
    void (*drain)(fe_session_t *s, bool deadline);
    /* Optional: the protocol's own server-wide state, made once the database and the bus
     * clients exist (start returns 0, or -1 to fail the start) and undone before they go
     * (stop runs once the sessions are gone, or after a failed start). */
    int (*start)(fe_server_t *srv);
    void (*stop)(fe_server_t *srv);
} fe_protocol_t;

/* The skeleton's clients (db, bus, cfg, metrics, health, hostname, instance) are copied
 * from the service (svc) and cleared before they go at the stop. */
struct fe_server {
    svc_t *svc;
    uv_loop_t *loop;
    const fe_protocol_t *proto;
    db_t *db;
    bus_t *bus;
    config_t *cfg;
    lim_t *lim;             /* the limiter's client and the local copy of blocks */
    metrics_t *metrics;
    health_t *health;       /* HTTP /healthz /readyz /metrics when HEALTH_PORT is set */
    void *proto_data;       /* the protocol's server-wide state (fe_protocol_t.start) */
    net_cidr_t *proxy_nets; /* PROXY_TRUSTED_NETWORKS: load balancers that send PROXY */
    size_t nproxy;
    tls_t *tls;             /* NULL when no certificate is configured */
    char hostname[256];     /* hostname_env, else the system's host name */
    char instance[300];     /* node:pid */
    unsigned char secret[32]; /* seeds fake SCRAM salts and attempt digests */
    size_t nsessions;
    size_t nallocated;      /* sessions not yet released (closed ones wait for callbacks) */
    unsigned long next_session_id;
    bool draining;
    long drain_timeout_s;   /* DRAIN_TIMEOUT: sessions left after it are closed */
    size_t drain_sessions;  /* open when the drain began */
    size_t drain_forced;    /* closed by the drain deadline */
    bool stopping;          /* the sessions are gone; database work left is finishing */
    uv_tcp_t *listen;       /* one per listener conf */
    bool *listening;
    uv_timer_t drain_timer;
    int closing_handles;    /* at the stop: the server is freed when none is left */
    struct fe_session *sessions;
};

struct fe_session {
    fe_server_t *srv;
    const fe_listener_conf_t *listener;
    conn_t *conn;
    unsigned long id;
    char peer[64];
    uv_timer_t idle_timer;
    uint64_t idle_sent;     /* conn_output_delivered() at the idle timer's last start */
    uv_timer_t delay_timer;  /* for deliberate delays (failed auth, tarpits) */
    void (*delay_cb)(fe_session_t *s); /* pending delay, holding a reference */
    line_reader_t reader;
    buf_t line;              /* the current line, copied out of the input */
    int refs;
    bool closing;
    bool waiting;
    bool processing;
    bool input_replaced;     /* STARTTLS dropped the input fe_session_process() reads */
    bool want_tls;           /* switch to TLS once the pending reply is written */
    bool awaiting_proxy;     /* from a trusted proxy: its PROXY header comes first */
    fe_auth_t *auth;         /* an authentication exchange in progress */
    const fe_input_hook_t *hook; /* takes the input lines while set */
    uint64_t bytes_left;     /* input to hand to proto->bytes before the next line */
    void (*writable_cb)(fe_session_t *s); /* fe_session_when_writable() */
    char *user;              /* the authenticated user, or NULL */
    unsigned errors;         /* client mistakes so far (lib/svc/dispatch.h) */
    unsigned long commands;  /* commands dispatched so far */
    struct fe_session *prev, *next;
};

/* Runs a front end on svc_main(): reads the environment (the skeleton's DATABASE_URL,
 * NATS_URL, DB_POOL, CONFIG_REFRESH, HEALTH_PORT and hostname_env; TLS_CERT, TLS_KEY,
 * LISTEN_ADDRESS, PROXY_TRUSTED_NETWORKS, the listeners' port variables, DRAIN_TIMEOUT),
 * listens, serves until SIGTERM or SIGINT, then drains: stops listening, lets open sessions
 * go on for up to DRAIN_TIMEOUT seconds (default 10; 0 closes them at once), closes those
 * still open and exits. Returns the process exit status (2 for a bad setting or a port that
 * cannot be served). */
int fe_main(const fe_protocol_t *proto, const char *hostname_env);

void fe_session_ref(fe_session_t *s);
void fe_session_unref(fe_session_t *s);
/* Sends what is pending, then closes. */
void fe_session_close(fe_session_t *s);
/* Writes formatted bytes of any length as they are, line ends and all: not for replies,
 * which go through fe_session_reply(). Returns 0, or -1 when the session is closing. */
int fe_session_printf(fe_session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes one reply line of any length: the text fmt makes, with every control character in
 * it (CR and LF included) replaced by '?', then the CRLF that ends it; whatever the
 * arguments hold, exactly one line goes out. The protocols' status replies go through it;
 * client text in them is quoted with text_echo() (base/text.h) all the same, for its length
 * and its 8-bit bytes. Data that may span lines (an IMAP literal, a POP3 multi-line
 * response) is written with fe_session_write(). Returns 0, or -1 when the session is
 * closing. */
int fe_session_reply(fe_session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int fe_session_write(fe_session_t *s, const void *data, size_t len);
/* Back-pressure for long output (a 25 MB FETCH): cb runs, from the loop, once the output
 * not yet taken by the kernel is down to FE_WRITE_LOW_WATER bytes. A writer writes a piece
 * of at most about FE_WRITE_CHUNK bytes, then waits for this. One callback at a time. When
 * the session closes first, cb still runs once, with s->closing set, so that the writer can
 * let go of what it holds. */
#define FE_WRITE_LOW_WATER (64 * 1024)
#define FE_WRITE_CHUNK (256 * 1024)
void fe_session_when_writable(fe_session_t *s, void (*cb)(fe_session_t *s));
/* Input mode: the next n bytes go to proto->bytes (an IMAP literal), then lines again. */
void fe_session_read_bytes(fe_session_t *s, uint64_t n);
/* hook takes the input lines until fe_session_release_input(). */
void fe_session_take_input(fe_session_t *s, const fe_input_hook_t *hook);
void fe_session_release_input(fe_session_t *s);
void fe_session_wait(fe_session_t *s);
void fe_session_resume(fe_session_t *s);
/* After the protocol has written its "go ahead" reply: starts the TLS handshake.
 * Returns -1 when no certificate is configured. */
int fe_session_starttls(fe_session_t *s);
bool fe_session_tls(const fe_session_t *s);
/* TLS is offered on this session (configured and not active yet). */
bool fe_session_tls_available(const fe_session_t *s);
/* Refuses the session when its client is blocked (local copy of the limiter's blocks):
 * writes the protocol's refusal, closes, and returns true. */
bool fe_session_refuse_if_blocked(fe_session_t *s);
/* Formats a Unix time in ms as RFC 3339 UTC ("2026-11-27T23:09:29Z"). */
void fe_format_time(int64_t ms, char *out, size_t out_len);
/* Runs cb after ms milliseconds unless the session closes first; one delay at a time. */
void fe_session_delay(fe_session_t *s, unsigned ms, void (*cb)(fe_session_t *s));

#endif
