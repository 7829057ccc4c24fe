/* smtpd: ESMTP (RFC 5321) on the MX, submission and implicit-TLS ports. */
#ifndef POSTERN_SMTPD_H
#define POSTERN_SMTPD_H

#include <stdbool.h>
#include <stddef.h>

#include "svc/dispatch.h"
#include "svc/fe.h"
#include "base/net.h"

#define SMTP_LINE_MAX 512      /* RFC 5321 section 4.5.3.1.4, CRLF included */
#define SMTP_AUTH_LINE_MAX 12288 /* RFC 4954 section 4: AUTH lines and SASL responses */
#define SMTP_PATH_MAX 256      /* RFC 5321 section 4.5.3.1.3 */
#define SMTP_HEAD_ROOM 2048    /* kept in front of a message for Return-Path: and Received: */

enum smtp_listener_kind { SMTP_LISTENER_MX, SMTP_LISTENER_SUBMISSION };

typedef enum smtp_state {
    SMTP_STATE_INIT,  /* greeted, no EHLO/HELO yet */
    SMTP_STATE_READY, /* EHLO/HELO done, no transaction */
    SMTP_STATE_MAIL,  /* MAIL accepted */
    SMTP_STATE_RCPT,  /* at least one RCPT accepted */
    SMTP_STATE_DATA,  /* reading the message */
    SMTP_STATE_QUIT,
} smtp_state_t;

typedef struct smtp_rcpt {
    char *address; /* normalised: domain lowercased; lowercased entirely when local */
    bool local;
} smtp_rcpt_t;

typedef struct smtp_session {
    fe_session_t fe; /* first: the skeleton's part */
    smtp_state_t state;
    char helo[256];
    bool esmtp;
    /* the transaction, reset by RSET, HELO/EHLO, STARTTLS and after DATA */
    char sender[SMTP_PATH_MAX + 1];
    smtp_rcpt_t *rcpts;
    size_t nrcpts;
    smtp_rcpt_t pending; /* a recipient being looked up */
    char queue_id[24];
    buf_t data;              /* data_room bytes, then the message so far: at most
                              * smtp.max_message_size bytes */
    size_t data_room;        /* kept free in front of the message for its trace headers */
    size_t data_max;         /* smtp.max_message_size when the DATA began */
    bool data_too_big, data_bare_lf, data_nul, data_long_line;
    bool data_no_memory;     /* the message could not be kept: 451 at its end */
} smtp_session_t;

/* A command's arguments, after the verb and its spaces (cmd.c's tokenizer). */
typedef struct smtp_request {
    char *args;
} smtp_request_t;

/* session.c */
/* Writes a one-line reply (fe_session_reply: no control character reaches the client; quote
 * client text with text_echo()); one of 500 and over is a client mistake counted against
 * smtp.max_errors (past it: 421 and the session closes). */
void smtp_reply(smtp_session_t *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void smtp_enter_state(smtp_session_t *s, smtp_state_t state);
void smtp_reset_transaction(smtp_session_t *s);
bool smtp_temp_unavailable(smtp_session_t *s);
/* The limiter blocked the client in mid-session: 421 and the session closes. */
void smtp_blocked_now(smtp_session_t *s, const lim_verdict_t *v);
/* Counts a finished DATA: "accepted", "deferred" (4xx) or "rejected" (5xx). */
void smtp_count_message(smtp_session_t *s, const char *result);

/* cmd.c */
extern const fe_cmd_table_t smtp_cmd_table;
void smtp_dispatch(smtp_session_t *s, char *line, size_t len, unsigned flags);
/* The answer to the lookup of the local recipient in s->pending (a db_cb; arg is the
 * session, which waits and holds a reference for it): 250 and the recipient joins the
 * transaction; unknown: the limiter records the failure and its answer brings the 550 (after
 * a delay it may ask for), or, when it cannot be asked, 550 at once; 451 when the lookup
 * failed. Every path resumes the session exactly once and drops the reference; s->pending
 * is empty after. */
void smtp_rcpt_looked_up(void *arg, PGresult *res);

/* check.c: addresses and relay policy, free of I/O */
typedef struct smtp_path {
    char address[SMTP_PATH_MAX + 1]; /* local@domain, domain lowercased; "" for <> */
    char local[65];
    char domain[256];
    bool literal;                    /* domain is an address literal [...] */
    const char *params;              /* ESMTP parameters after the path, or "" */
} smtp_path_t;

/* Parses "<path> [params]" (what follows "FROM:" or "TO:"). Returns 0, or -1 with a
 * complete reply ("501 5.1.3 ...") in err. */
int smtp_path_parse(const char *arg, bool allow_null, smtp_path_t *path, char *err,
                    size_t err_len);

typedef enum relay_mode { RELAY_NONE, RELAY_SELECT, RELAY_ANYONE } relay_mode_t;
relay_mode_t smtp_relay_mode(const char *setting);
/* The relay decision for a recipient outside the hosted domains. */
bool smtp_may_relay(relay_mode_t mode, bool authenticated, bool client_in_relay_list);
/* True when a local part carries routing characters (%-hack, bang path). */
bool smtp_local_part_routes(const char *local);

/* data.c */
void smtp_data_start(smtp_session_t *s);
void smtp_data_line(smtp_session_t *s, const char *line, size_t len, unsigned flags);

/* store.c: storing accepted messages, several in one transaction when they wait */
typedef struct smtp_store_queue smtp_store_queue_t;
/* The server-wide queue (fe_protocol_t.start/stop; fe_server_t.proto_data). Without it,
 * every message is stored alone. */
int smtp_store_start(fe_server_t *srv);
void smtp_store_stop(fe_server_t *srv);
/* Stores the transaction's message (reserved: the limiter counted it in advance): the
 * session waits and gets 250 once it is committed, 451 when it could not be. Returns 0, or
 * -1 when it failed at once (out of memory): the reply is written, the transaction reset,
 * and the session was not made to wait. */
int smtp_store(smtp_session_t *s, bool reserved);

/* protocol.c: the listeners and callbacks fe_main() runs. */
extern const fe_protocol_t smtp_protocol;

#endif
