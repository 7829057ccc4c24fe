/* pop3d: POP3 (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), SASL (RFC 5034) and
 * extended response codes (RFC 3206) over the shared mailbox store, on the plain
 * (STLS-capable) and implicit-TLS ports. */
#ifndef POSTERN_POP3D_H
#define POSTERN_POP3D_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "svc/dispatch.h"
#include "store/mailstore.h"
#include "svc/fe.h"

#define POP3_LINE_MAX 255          /* RFC 2449 section 4: a command, CRLF included */
#define POP3_AUTH_LINE_MAX 12288   /* RFC 5034 section 4: SASL responses may be longer */
#define POP3_ARGS_MAX 4            /* no command takes more than two; extra ones are errors */

/* Settings (lib/base/settings.c) and the values used while a key is unknown there. */
#define POP3_IDLE_TIMEOUT_KEY "pop3.idle_timeout" /* RFC 1939 section 3: at least 600 s */
#define POP3_MAX_ERRORS_KEY "pop3.max_errors"
#define POP3_MAX_ERRORS_DEFAULT 20
#define POP3_LOCK_LEASE_KEY "pop3.lock_lease"
#define POP3_LOCK_LEASE_DEFAULT 120 /* seconds; renewed every third of it */

/* ---- parse.c: command lines and message numbers, free of I/O ------------------------ */

typedef struct pop3_request {
    char keyword[8];              /* upper case: "RETR" */
    char *rest;                   /* everything after the keyword and its space ("" if none) */
    char *argv[POP3_ARGS_MAX];    /* rest split at spaces, into args */
    int argc;
    char args[POP3_AUTH_LINE_MAX + 1];
} pop3_request_t;

/* Parses one command line (without its CRLF, NUL-terminated at len) into req; rest points
 * into line, so that PASS can wipe the password from it. Returns 0, or -1 with a reply
 * text for "-ERR ..." in *err_r. */
int pop3_parse(char *line, size_t len, unsigned flags, pop3_request_t *req, const char **err_r);
/* A message number or a line count: decimal digits only, at most 9 of them.
 * Returns 0, or -1. */
int pop3_parse_number(const char *text, unsigned long *n_r);

/* ---- stuff.c: multi-line responses (RFC 1939 section 3), free of I/O ----------------- */

/* Dot-stuffs a message given in pieces of any size: a line that starts with "." gets
 * another "." in front. For TOP it stops after the header, the blank line and body_lines
 * lines of the body. Lines end at LF; the message is sent byte for byte otherwise. */
typedef struct pop3_stuffer {
    long body_left;    /* body lines still to send; -1: the whole message */
    bool line_start;   /* the next byte begins a line */
    bool in_body;      /* the blank line after the header has been sent */
    bool done;         /* TOP: everything asked for has been sent */
    bool sent_any;
    size_t line_len;   /* bytes of the current line so far, LF excluded */
    char last;         /* the last byte sent */
} pop3_stuffer_t;

/* body_lines: -1 for RETR (everything), n >= 0 for TOP n. */
void pop3_stuffer_init(pop3_stuffer_t *st, long body_lines);
/* Appends the dot-stuffed form of data to out. Returns 0, or -1 when memory runs out. */
int pop3_stuffer_feed(pop3_stuffer_t *st, const char *data, size_t len, buf_t *out);
/* Ends the response: completes an unterminated last line with CRLF, then ".\r\n". */
int pop3_stuffer_end(pop3_stuffer_t *st, buf_t *out);

/* ---- the session ------------------------------------------------------------------- */

typedef enum pop3_state {
    POP3_STATE_AUTHORIZATION, /* greeted, not logged in */
    POP3_STATE_OPENING,       /* logged in; locking and loading the maildrop */
    POP3_STATE_TRANSACTION,
    POP3_STATE_UPDATE,        /* QUIT: deleting what was marked, then closing */
    POP3_STATE_DONE,          /* said goodbye; the connection is closing */
} pop3_state_t;

typedef struct pop3_msg {
    int64_t uid;
    uint64_t size;
    bool deleted;
} pop3_msg_t;

/* The INBOX as it was when the session locked it; messages are numbered 1..n by UID. */
typedef struct pop3_maildrop {
    int64_t user_id, mailbox_id, uidvalidity;
    pop3_msg_t *msgs;
    size_t count;
    size_t live;        /* not marked deleted */
    uint64_t live_size;
    mailstore_t *store; /* the server's mail store (RETR, TOP), not the session's own */
    char owner[400];    /* this session's lock owner id: instance/run/session/random */
    bool locked;        /* the lock row is (believed to be) ours */
    bool lost;          /* a renewal found the lock taken over */
} pop3_maildrop_t;

typedef struct pop3_session {
    fe_session_t fe; /* first: the skeleton's part */
    pop3_state_t state;
    bool pending;            /* a command waits for the database */
    unsigned long send_n;    /* RETR/TOP in progress: the message number */
    long send_lines;         /* and the body lines (-1: all) */
    uint64_t send_off;       /* bytes of the message read so far */
    pop3_stuffer_t send_st;
    char user_arg[256];      /* USER's argument, waiting for PASS */
    bool have_user;
    pop3_maildrop_t drop;
    buf_t out;               /* a multi-line response being built */
} pop3_session_t;

/* session.c: one-line replies (fe_session_reply: no control character reaches the client;
 * quote client text with text_echo()) */
void pop3_ok(pop3_session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A client's mistake: counted, and past pop3.max_errors the session is closed. code is a
 * response code without brackets ("AUTH") or NULL. */
void pop3_err(pop3_session_t *s, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A dependency is down or busy: "-ERR [code] ...", never counted. */
void pop3_err_nocount(pop3_session_t *s, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writes bytes (a multi-line response). */
int pop3_write(pop3_session_t *s, const void *data, size_t len);
void pop3_enter_state(pop3_session_t *s, pop3_state_t state);
/* The session waits for the database; pop3_resume() goes on with the buffered input. */
void pop3_wait(pop3_session_t *s);
void pop3_resume(pop3_session_t *s);
/* The client address is blocked (at connect, or by the limiter during a login). */
void pop3_blocked_reply(pop3_session_t *s, const char *reason, const char *until);
long pop3_setting(pop3_session_t *s, const char *key, long fallback);

/* The server-wide state (fe_server_t.proto_data). */
typedef struct pop3_server {
    char run[17]; /* random, per process: tells this run's locks from an earlier one's */
    struct unlock_req *retries; /* lock deletions waiting to be tried again (maildrop.c) */
    mailstore_t *store; /* RETR and TOP of every session: one cache of messages read */
} pop3_server_t;

/* cmd.c */
extern const fe_cmd_table_t pop3_cmd_table;
void pop3_dispatch(pop3_session_t *s, char *line, size_t len, unsigned flags);

/* maildrop.c: the lock, the listing, RETR/TOP and the UPDATE state */
/* After a login: locks and loads the user's INBOX, then answers +OK, [IN-USE] or
 * [SYS/TEMP]. */
void pop3_maildrop_open(pop3_session_t *s);
/* 1-based message number to message, or NULL when there is none or it is deleted. */
pop3_msg_t *pop3_maildrop_msg(pop3_session_t *s, unsigned long n);
void pop3_maildrop_mark(pop3_session_t *s, pop3_msg_t *m);
void pop3_maildrop_unmark_all(pop3_session_t *s);
/* RETR (body_lines -1) and TOP: reads the message and sends it dot-stuffed. */
void pop3_maildrop_send(pop3_session_t *s, unsigned long n, long body_lines);
/* QUIT in the TRANSACTION state: one statement removes the marked messages and the lock. */
void pop3_maildrop_update(pop3_session_t *s);
/* The session is going away: frees the listing and gives the lock back (no deletions). */
void pop3_maildrop_release(pop3_session_t *s);
/* fe_protocol_t.start/stop: the server's state, and the release of the maildrop locks an
 * earlier pop3d on this machine left when it died (see maildrop.c). */
int pop3_maildrop_start(fe_server_t *srv);
void pop3_maildrop_stop(fe_server_t *srv);

/* protocol.c: the listeners and callbacks fe_main() runs. */
extern const fe_protocol_t pop3_protocol;

#endif
