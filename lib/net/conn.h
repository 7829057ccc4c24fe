/* A TCP connection, accepted from a client (conn_accept) or opened to a server
 * (conn_connect): a libuv TCP stream, optionally wrapped in TLS through OpenSSL memory
 * BIOs. Session code never touches the socket or OpenSSL: it reads plaintext from
 * conn_input(), writes with conn_write(), and is told what happened through one event
 * callback. All calls and events are on the loop's thread. */
#ifndef POSTERN_CONN_H
#define POSTERN_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"

typedef enum conn_event {
    CONN_DATA,      /* new plaintext in conn_input() */
    CONN_TLS_READY, /* the TLS handshake finished */
    CONN_WRITABLE,  /* asked for with conn_notify_writable(): the unsent output is down to
                       the low-water mark */
    CONN_CLOSED,    /* the peer went away, connecting, the handshake or I/O failed, or
                       conn_close() finished; conn_error() tells which; the conn is freed
                       right after this event */
    CONN_CONNECTED, /* conn_connect() only: the connection is up; reading starts */
} conn_event_t;

typedef struct conn conn_t;
typedef void (*conn_event_cb)(conn_t *c, conn_event_t ev, void *arg);

/* Accepts a pending connection from server. Returns NULL if accepting fails. Reading
 * starts at once; events go to cb. input_max bounds the unread plaintext kept: past it,
 * reading pauses until the session consumes input. */
conn_t *conn_accept(uv_stream_t *server, size_t input_max, conn_event_cb cb, void *arg);

/* Opens a connection to addr (AF_INET or AF_INET6, with the port set). Returns NULL only
 * when addr is of another family or memory runs out; every failure to connect, even one
 * the system reports at once, comes later as CONN_CLOSED with conn_error() saying why.
 * Otherwise CONN_CONNECTED follows, then CONN_DATA as for an accepted conn. conn_close()
 * before then cancels the attempt; CONN_CLOSED follows, never CONN_CONNECTED. Events are
 * never sent from inside this call. input_max as for conn_accept(). */
conn_t *conn_connect(uv_loop_t *loop, const struct sockaddr *addr, size_t input_max,
                     conn_event_cb cb, void *arg);

/* Starts a TLS handshake with ssl (taken over by the conn), server side or client side as
 * ssl was made (SSL_is_server(): tls_new_ssl() or tls_client_new_ssl()); a client sends
 * its hello at once; ssl NULL (making it failed) fails the handshake. Call it on an
 * established connection. Plaintext input not yet consumed is discarded (RFC 3207
 * section 4.2 / CVE-2011-0411: nothing received before the handshake may be acted on
 * inside TLS, by either end) unless keep_input is set, for implicit TLS after a PROXY
 * header, where what follows the header is the client's TLS hello. CONN_TLS_READY
 * follows (with keep_input, possibly before this returns), or CONN_CLOSED with
 * conn_error() saying why the handshake failed. */
void conn_start_tls(conn_t *c, SSL *ssl, bool keep_input);
bool conn_is_tls(const conn_t *c);
/* After the handshake of an outbound conn: whether the peer's certificate chained to a
 * trusted CA and named the host given to tls_client_new_ssl() (its verify_name, else its
 * sni). False before the handshake and when no name was given to check. */
bool conn_tls_verified(const conn_t *c);
/* Negotiated protocol and cipher, for Received headers and logs ("" before TLS). */
const char *conn_tls_version(const conn_t *c);
const char *conn_tls_cipher(const conn_t *c);

buf_t *conn_input(conn_t *c);
/* Call after consuming from conn_input() so a paused read can resume. An input buffer it
 * finds empty is given back when it has grown past a few KiB. */
void conn_input_consumed(conn_t *c);

/* Output is gathered and sent when the loop is about to wait: everything written during one
 * turn of the loop leaves in one write (one TLS record up to 16 KiB). Returns 0, or -1
 * (closing, during a handshake, out of memory). */
int conn_write(conn_t *c, const void *data, size_t len);
/* While held, output is kept past the loop's turn (up to 64 KiB), so that the replies to a
 * pipelined batch of commands go out together (RFC 2920 section 3.2); released, it goes at
 * the end of the turn. conn_close() and conn_start_tls() send it regardless. */
void conn_hold(conn_t *c, bool hold);
int conn_printf(conn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Bytes written but not yet handed to the kernel. */
size_t conn_pending_output(const conn_t *c);
/* Bytes of output the peer has acknowledged since the conn began (TCP): grows while the
 * peer reads what it was sent. */
uint64_t conn_output_delivered(const conn_t *c);
/* One CONN_WRITABLE event once the unsent output is at most low_water bytes: from the
 * loop, never from inside this call (also when it is already that low). */
void conn_notify_writable(conn_t *c, size_t low_water);

/* Sends what is pending (for up to 10 s), then the FIN; then reads and drops what the peer
 * still sends until it closes its side too (for up to 2 s and 1 MiB), so that the peer can
 * read the last replies instead of getting a reset; then closes; CONN_CLOSED follows. No
 * CONN_DATA is sent once this is called. Safe to call twice. */
void conn_close(conn_t *c);

/* Why the connection ended or failed, for logs and error replies: "" when it was closed
 * with conn_close(), else e.g. "connection closed by peer", "connection refused",
 * "TLS handshake failed: certificate verify failed (self-signed certificate)". Valid until
 * the conn is freed, i.e. still inside the CONN_CLOSED callback. */
const char *conn_error(const conn_t *c);

/* The peer's address as text (IPv4-mapped IPv6 addresses shown as IPv4) and port; the
 * local port (for an accepted conn, the one the client connected to; for an outbound one,
 * 0 until CONN_CONNECTED). */
const char *conn_peer(const conn_t *c);
int conn_peer_port(const conn_t *c);
int conn_local_port(const conn_t *c);

#endif
