/* webd: the web side over HTTPS only. An admin console and its JSON API (/api/v1, the same
 * operations as mailctl: lib/admin), and a self-service page for mailbox users.
 *
 * libmicrohttpd serves TLS (GnuTLS, TLS 1.2 and 1.3 only) with a thread per connection;
 * requests run on those threads and use blocking libpq from a small pool of their own
 * (never the loop's database pool) and the service's bus for publishing (thread-safe).
 * Stateless: sessions live in PostgreSQL (web_sessions), so any replica serves any request.
 * The loop thread only starts and stops the daemon and reloads the certificate (SIGHUP). */
#ifndef WEBD_H
#define WEBD_H

#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"
#include "bus/bus.h"

#define WEB_BODY_MAX (64 * 1024)      /* the largest request body accepted */
#define WEB_PORT_DEFAULT "2443"
#define WEB_SESSION_IDLE_DEFAULT 1800 /* seconds without a request before a session ends */
#define WEB_SESSION_MAX_DEFAULT 43200 /* seconds after login when a session ends anyway */
#define WEB_DB_POOL_DEFAULT 4
#define WEB_ADDR_MAX 64

/* ---- pgpool.c: blocking PostgreSQL connections for the request threads ---------------- */
typedef struct pgpool pgpool_t;
pgpool_t *pgpool_create(const char *url, int size);
void pgpool_destroy(pgpool_t *p);
/* A connection, waiting up to 10 s for one to be free; NULL when none could be had (the
 * database is down: the caller answers 503). */
PGconn *pgpool_get(pgpool_t *p);
/* Gives c back; a connection that broke is reset on its next use. */
void pgpool_put(pgpool_t *p, PGconn *c);

/* ---- gate.c: the limiter's word before a login ------------------------------------------ */
typedef struct web_gate {
    bool allowed;       /* false: blocked (or the limiter silent and login_on_timeout deny) */
    bool unanswered;    /* the limiter did not answer in time */
    char reason[256];   /* why blocked */
    int64_t until_ms;   /* blocked until */
    uint32_t delay_ms;  /* wait this long before answering */
} web_gate_t;
typedef struct web_gate_loop web_gate_loop_t;
struct config;
struct metrics;
/* On the loop thread. */
web_gate_loop_t *web_gate_create(uv_loop_t *loop, bus_t *bus, struct config *cfg,
                                 struct metrics *metrics);
void web_gate_destroy(web_gate_loop_t *g);

/* ---- the process's shared state ------------------------------------------------------- */
typedef struct web {
    pgpool_t *pool;
    bus_t *bus;                   /* publishing only, from any thread */
    web_gate_loop_t *gate;        /* the limiter's client, on the loop */
    char instance[300];
    int session_idle_s, session_max_s;
    unsigned char secret[64];     /* internal.secret: keys failed-attempt digests */
    size_t secret_len;
    char dummy_secret[256];       /* verified against for unknown names (same cost) */
    char *nats_password;          /* for commands that make their own NATS connection
                                     (limiter status) */
} web_t;

/* From a request thread: may the client (and user) try a password now? Blocks until the
 * loop has the answer (within limiter.timeout_ms). */
void web_gate_ask(web_t *web, const char *client, const char *user, web_gate_t *out);

/* ---- a request and its response ------------------------------------------------------- */
#define WEB_HEADERS_MAX 4
typedef struct web_req {
    const char *method, *path;   /* path without the query */
    const char *body;            /* NUL-terminated */
    size_t body_len;
    const char *client;          /* the client's address, text */
    void *conn;                  /* struct MHD_Connection */
} web_req_t;

typedef struct web_resp {
    unsigned status;
    const char *type;            /* Content-Type */
    buf_t body;
    const char *cache;           /* Cache-Control; NULL: no-store */
    char *headers[WEB_HEADERS_MAX][2]; /* extra headers (malloc'd name, value) */
    int nheaders;
} web_resp_t;

/* http.c: the daemon on a listening socket of the caller's, with the certificate and key
 * (PEM text); NULL when it cannot start. */
struct MHD_Daemon;
struct MHD_Daemon *http_start(web_t *web, int listen_fd, const char *cert, const char *key);
/* The connections a daemon has open now. */
unsigned http_connections(struct MHD_Daemon *d);
/* s as a JSON string (quotes included) into b. */
void web_json_str(buf_t *b, const char *s);
/* True for a Content-Type of application/json (parameters such as charset allowed). */
bool web_is_json(const char *content_type);
/* Request data. */
const char *web_query(const web_req_t *r, const char *name);
const char *web_header(const web_req_t *r, const char *name);
const char *web_cookie(const web_req_t *r, const char *name);
/* Response building. web_json_error: {"error": message}. */
void web_resp_header(web_resp_t *w, const char *name, const char *value);
void web_json_error(web_resp_t *w, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void web_json_raw(web_resp_t *w, unsigned status, const char *json, size_t len);
/* 200 with the JSON value j (503 when it cannot be written out). */
struct json_t;
void web_json_value(web_resp_t *w, const struct json_t *j);

/* ---- auth.c: logins, sessions, CSRF ---------------------------------------------------- */
typedef enum web_kind { WEB_ADMIN, WEB_USER } web_kind_t;
typedef struct web_session {
    web_kind_t kind;
    char name[128];              /* the admin's name or the user's address */
    bool system;                 /* admin: role system */
    char domains[2048];          /* admin, role domain: its domains, comma-separated */
    char csrf[64];
} web_session_t;

/* The cookie of a kind of session. */
const char *web_cookie_name(web_kind_t kind);
/* POST login for kind: {"user"|"address", "password"}; answers w. */
void web_login(web_t *web, const web_req_t *r, web_kind_t kind, web_resp_t *w);
void web_logout(web_t *web, const web_req_t *r, web_kind_t kind, web_resp_t *w);
/* The session of the request's cookie of kind, its idle expiry pushed forward. Returns
 * 1 with *s filled, 0 when there is none or it expired (w answered 401), -1 when the
 * database failed (w answered 503). */
int web_session(web_t *web, const web_req_t *r, web_kind_t kind, web_session_t *s,
                web_resp_t *w);
/* For a change (any method but GET/HEAD): the X-CSRF-Token header must be the session's
 * and an Origin header, when sent, this host's. False with w answered 403. */
bool web_csrf_ok(const web_req_t *r, const web_session_t *s, web_resp_t *w);
/* The start of every API request of a kind: a POST to login_path logs in; any other request
 * needs the session (web_session) and, for a change, its CSRF token (web_csrf_ok). True
 * when the request goes on with *s; false when w has been answered. */
bool web_authorize(web_t *web, const web_req_t *r, web_kind_t kind, const char *login_path,
                   web_session_t *s, web_resp_t *w);
/* {"kind","name","role","domains","csrf"} of a session. */
void web_session_json(const web_session_t *s, web_resp_t *w);
/* Checks a mailbox user's password (self-service password change). 1 right, 0 wrong,
 * -1 database error. */
int web_user_password_ok(web_t *web, const char *address, const char *password);
/* Publishes the AuthEvent (service web) of a password check: ok, or a failure that counts
 * in the harvesting limits. */
void web_publish_auth(web_t *web, const web_req_t *r, const char *user, const char *password,
                      bool ok, const char *mechanism);
/* True when an admin session may act on domain (system admins: any). */
bool web_admin_has_domain(const web_session_t *s, const char *domain);

/* ---- api.c: /api/v1 -------------------------------------------------------------------- */
void web_api(web_t *web, const web_req_t *r, web_resp_t *w);
/* Runs an admin command (words, then args) as actor with the JSON output, on a connection
 * of the pool; password: for commands that set one. Answers w: 200 with the command's
 * JSON, 400 with its message, 503 when the database failed. */
void web_run_command(web_t *web, const char *actor, const char *const *argv, int argc,
                     const char *password, web_resp_t *w);
/* The same with the command's --domain option (user list) set to domain (or NULL). */
void web_run_command_domain(web_t *web, const char *actor, const char *const *argv, int argc,
                            const char *password, const char *domain, web_resp_t *w);
/* dashboard.c: GET /api/v1/dashboard, the figures that matter, for a system admin. */
void web_dashboard(web_t *web, web_resp_t *w);

/* ---- self.c: the self-service API (/api/v1/self) --------------------------------------- */
void web_self(web_t *web, const web_req_t *r, web_resp_t *w);

/* ---- static.c: the pages (embedded www/) ----------------------------------------------- */
/* Answers w with the file at path ("/" is the console, "/self/" the self-service page);
 * false when there is none. */
bool web_static(const char *path, web_resp_t *w);

#endif
