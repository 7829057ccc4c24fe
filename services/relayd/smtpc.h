/* An SMTP client session (RFC 5321) over one conn_t on the libuv loop, never blocking:
 * relayd's way of handing a message to another host.
 *
 * smtpc_open() connects and sets the session up: the greeting, EHLO (HELO when EHLO is
 * refused with 5xx, section 3.2), STARTTLS as the TLS policy asks (RFC 3207; EHLO again
 * afterwards, forgetting what the first one offered, section 4.2). ready() tells once
 * whether the session can take messages. smtpc_send() runs one mail transaction: MAIL FROM
 * (SIZE=, RFC 1870; BODY=8BITMIME, RFC 6152; SMTPUTF8, RFC 6531, each when offered and
 * needed), RCPT TO for every recipient, DATA with the body dot-stuffed (section 4.5.2).
 * With PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go out in one write; without, one
 * command at a time. done() gives each recipient the reply that decided it. The session
 * then takes the next message, or smtpc_close() ends it with QUIT. A message with 8-bit
 * bytes goes as it is to a server that does not offer 8BITMIME (RFC 6152 section 3 leaves
 * the choice to the client; no conversion is made).
 *
 * Replies come as smtpc_reply_t: a remote reply as the server sent it, or a local one that
 * stands for what happened on our side (connection refused or lost, a timeout, TLS failing
 * or required but not offered, a message larger than the server takes). Local replies are
 * 4xx (temporary) except the few that no retry can cure (a message too large for the
 * server's announced SIZE, an address that cannot be sent), which are 5xx.
 *
 * Each protocol failure (setup refused, timeout, lost connection, broken reply, TLS) is
 * logged once with log_warn and the peer; per-message results are the caller's to log. */
#ifndef POSTERN_RELAYD_SMTPC_H
#define POSTERN_RELAYD_SMTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

#include "net/tls.h"

typedef enum smtpc_tls_policy {
    SMTPC_TLS_MAY,     /* STARTTLS when offered, any certificate; plaintext otherwise */
    SMTPC_TLS_ENCRYPT, /* STARTTLS required, any certificate */
    SMTPC_TLS_VERIFY,  /* STARTTLS required, the certificate must chain to a trusted CA and
                          name peer_name */
} smtpc_tls_policy_t;

/* Milliseconds; 0 takes the default. RFC 5321 section 4.5.3.2 gives greeting 5 min, MAIL
 * 5 min, RCPT 5 min, DATA initiation 2 min, each data block 3 min, DATA termination 10 min.
 * Defaults where the RFC says nothing: connect 30 s, EHLO/HELO/STARTTLS and the TLS
 * handshake 5 min, QUIT 1 min. RSET waits as long as MAIL. */
typedef struct smtpc_timeouts {
    unsigned connect, greeting, helo, mail, rcpt, data_init, data_block, data_end, quit;
} smtpc_timeouts_t;

typedef struct smtpc_opts {
    const char *helo_name;         /* our name in EHLO/HELO */
    const char *peer_name;         /* the server's host name (the MX): shown in smtpc_peer(),
                                      sent as SNI, checked under SMTPC_TLS_VERIFY; NULL when
                                      only the address is known */
    smtpc_tls_policy_t tls_policy;
    tls_client_t *tls;             /* NULL: no STARTTLS (fails the session unless MAY) */
    smtpc_timeouts_t timeouts;
    size_t *live;                  /* optional: counts the sessions whose memory is not freed
                                      yet (one closing with QUIT included), so that the owner
                                      can wait for them at shutdown */
} smtpc_opts_t;

typedef struct smtpc_reply {
    int code;        /* 200..599 */
    char status[16]; /* enhanced status code (RFC 3463), "" when absent */
    char text[512];  /* the reply's text, lines joined with spaces (no code, no status) */
    bool local;      /* made here, not sent by the server */
} smtpc_reply_t;

typedef struct smtpc smtpc_t;

/* failure: NULL when the session is ready for smtpc_send(), else the reply that ended it
 * (the session is then over: only smtpc_close() remains). */
typedef void (*smtpc_ready_cb)(void *arg, smtpc_t *c, const smtpc_reply_t *failure);
/* results[i] decided msg->rcpts[i]: 2xx delivered, 4xx try again later, 5xx failed.
 * Valid only during the call. */
typedef void (*smtpc_done_cb)(void *arg, smtpc_t *c, const smtpc_reply_t *results, size_t n);

typedef enum smtpc_body {
    SMTPC_BODY_DETECT, /* smtpc looks for 8-bit bytes itself */
    SMTPC_BODY_7BIT,
    SMTPC_BODY_8BIT,
} smtpc_body_t;

/* sender and rcpts are copied by smtpc_send(); data is not. */
typedef struct smtpc_msg {
    const char *sender;        /* "" for the null sender: MAIL FROM:<> */
    const char *const *rcpts;
    size_t nrcpts;
    const char *data;          /* the message as queued, CRLF or LF line ends; kept alive
                                  by the caller until done() */
    size_t len;
    smtpc_body_t body;
} smtpc_msg_t;

/* Starts a session with the server at addr (IPv4 or IPv6, port set). opts is copied.
 * Returns NULL only when addr is not IPv4/IPv6 or memory runs out (ready is then never
 * called); every other failure, also an immediate one, reaches ready() from the loop. */
smtpc_t *smtpc_open(uv_loop_t *loop, const struct sockaddr *addr, const smtpc_opts_t *opts,
                    smtpc_ready_cb ready, void *arg);

/* Runs one transaction; done() follows from the loop, never from inside this call. Returns
 * 0, or -1 (done() is then never called) when the session cannot take a message now: not
 * ready yet, a transaction running, the session over (smtpc_idle() is false), no
 * recipients, or memory ran out. A message every recipient of which is refused here (too
 * large, bad addresses) still gets done() from the loop, and the session stays usable.
 * A transaction left midway (every RCPT refused, DATA refused) is reset with RSET before
 * the next one (RFC 5321 section 4.1.1.5). A timeout or a lost connection gives a local
 * 4xx to every recipient not yet decided, and ends the session. */
int smtpc_send(smtpc_t *c, const smtpc_msg_t *msg, smtpc_done_cb done, void *arg);

/* The session is set up and no transaction is running: smtpc_send() would take a message. */
bool smtpc_idle(const smtpc_t *c);

/* Ends the session and NULLs *c; NULL and an already NULL *c are harmless. When the session
 * is idle, QUIT goes out and the connection closes at the 221 or after the quit timeout;
 * otherwise it closes at once (a running transaction is abandoned). No callback is made
 * after this returns; the memory is freed from the loop once the connection is gone. */
void smtpc_close(smtpc_t **c);

/* "mx.example.com[192.0.2.1]:25" ("[192.0.2.1]:25" without a peer name). */
const char *smtpc_peer(const smtpc_t *c);
/* The greeting's text (after the code), "" before it came. */
const char *smtpc_greeting(const smtpc_t *c);
/* The TLS protocol and cipher in use, "" without TLS. */
const char *smtpc_tls_version(const smtpc_t *c);
const char *smtpc_tls_cipher(const smtpc_t *c);
/* TLS is on and the server's certificate chained to a trusted CA and named peer_name. */
bool smtpc_tls_verified(const smtpc_t *c);

#endif
