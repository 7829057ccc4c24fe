/* A client connection: a libuv TCP stream, optionally wrapped in TLS through OpenSSL
 * memory BIOs. Session code never touches the socket or OpenSSL: it reads plaintext
 * from conn_input(), writes with conn_write(), and is told what happened through one
 * event callback. */
#ifndef POSTERN_CONN_H
#define POSTERN_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "base/buf.h"

typedef enum conn_event {
    CONN_DATA,      /* new plaintext in conn_input() */
    CONN_TLS_READY, /* the TLS handshake finished */
    CONN_WRITABLE,  /* asked for with conn_notify_writable(): the unsent output is down to
                       the low-water mark */
    CONN_CLOSED,    /* the peer went away, the handshake or I/O failed, or conn_close()
                       finished; the conn is freed right after this event */
} conn_event_t;

typedef struct conn conn_t;
typedef void (*conn_event_cb)(conn_t *c, conn_event_t ev, void *arg);

/* Accepts a pending connection from server. Returns NULL if accepting fails. Reading
 * starts at once; events go to cb. input_max bounds the unread plaintext kept: past it,
 * reading pauses until the session consumes input. */
conn_t *conn_accept(uv_stream_t *server, size_t input_max, conn_event_cb cb, void *arg);

/* Starts a server-side TLS handshake with ssl (taken over by the conn). Plaintext input
 * not yet consumed is discarded (RFC 3207 section 4.2 / CVE-2011-0411: nothing sent
 * before the handshake may be acted on inside TLS) unless keep_input is set, for implicit
 * TLS after a PROXY header, where what follows the header is the client's TLS hello.
 * CONN_TLS_READY follows (with keep_input, possibly before this returns). */
void conn_start_tls(conn_t *c, SSL *ssl, bool keep_input);
bool conn_is_tls(const conn_t *c);
/* Negotiated protocol and cipher, for Received headers and logs ("" before TLS). */
const char *conn_tls_version(const conn_t *c);
const char *conn_tls_cipher(const conn_t *c);

buf_t *conn_input(conn_t *c);
/* Call after consuming from conn_input() so a paused read can resume. */
void conn_input_consumed(conn_t *c);

int conn_write(conn_t *c, const void *data, size_t len);
int conn_printf(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Bytes written but not yet handed to the kernel. */
size_t conn_pending_output(const conn_t *c);
/* One CONN_WRITABLE event once the unsent output is at most low_water bytes: from the
 * loop, never from inside this call (also when it is already that low). */
void conn_notify_writable(conn_t *c, size_t low_water);

/* Sends what is pending, then closes; CONN_CLOSED follows. Safe to call twice. */
void conn_close(conn_t *c);

/* The peer's address as text (IPv4-mapped IPv6 addresses shown as IPv4) and the local
 * port the client connected to. */
const char *conn_peer(const conn_t *c);
int conn_local_port(const conn_t *c);

#endif
