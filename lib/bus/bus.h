/* The Postern bus: a NATS connection owned by one libuv loop. libnats runs its own
 * threads; every message and reply is handed over to the loop thread (uv_async_send),
 * so callbacks here always run on the loop and may touch session state.
 *
 * The connection is made in the background and kept up forever: a service starts and
 * keeps running while NATS is down, and bus_connected() says whether it is up now. */
#ifndef POSTERN_BUS_H
#define POSTERN_BUS_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct bus bus_t;

/* data/len: the payload; reply: the reply subject or NULL. Valid during the call only. */
typedef void (*bus_msg_cb)(void *arg, const char *subject, const void *data, size_t len,
                           const char *reply);
/* data is NULL when no reply came in time. */
typedef void (*bus_reply_cb)(void *arg, const void *data, size_t len);

/* Where the bus is and who connects: what bus_open() and bus_nats_options() take. */
typedef struct bus_opts {
    const char *url;      /* a server, or several comma-separated (the nodes of a cluster:
                             the connection moves to a survivor when its node goes) */
    const char *name;     /* identifies this client to the server (service name) */
    const char *user;     /* NULL or "": no credentials */
    const char *password;
    const char *tls_ca;   /* NULL or "": no TLS unless a URL says tls://; else TLS is
                             required and the server's certificate verified with this CA */
} bus_opts_t;

/* url without "user:password@", for logs and messages. */
void bus_url_public(const char *url, char *out, size_t out_len);

/* The longest password bus_password_file() reads. */
#define BUS_PASSWORD_MAX 256
/* Reads a password file (a mounted Secret): its first line, without the line end.
 * Returns 0, or -1 with errno set (ENAMETOOLONG: too long, EINVAL: empty). */
int bus_password_file(const char *path, char *out, size_t out_len);

/* (bus/nats_opts.h applies a bus_opts_t to libnats options, for programs that make a
 * connection of their own.) */

/* Connects as o says. Returns NULL only on allocation or option errors (logged); an
 * unreachable server, or one that refuses the credentials, is not an error. */
bus_t *bus_open(uv_loop_t *loop, const bus_opts_t *o);
/* bus_open() with a URL and a name only: no credentials, no TLS (tests). */
bus_t *bus_create(uv_loop_t *loop, const char *url, const char *name);
/* Closes the connection; pending requests get their callback with NULL. */
void bus_destroy(bus_t **bus);
bool bus_connected(const bus_t *bus);

int bus_publish(bus_t *bus, const char *subject, const void *data, size_t len);
/* Packs msg and publishes it. Returns 0, or -1 (not connected or a NATS error). */
int bus_publish_msg(bus_t *bus, const char *subject, const ProtobufCMessage *msg);
/* Subscriptions live as long as the bus. Returns 0, or -1. */
int bus_subscribe(bus_t *bus, const char *subject, bus_msg_cb cb, void *arg);
/* cb(arg) on the loop thread each time the connection comes back after it was lost (not at
 * the first connection): what was published meanwhile never arrived, so whoever keeps a copy
 * of something announced on the bus reloads it. At most BUS_RECONNECT_HOOKS; returns 0, or -1. */
#define BUS_RECONNECT_HOOKS 4
int bus_on_reconnect(bus_t *bus, void (*cb)(void *arg), void *arg);
/* Forgets a hook bus_on_reconnect() set (its holder is going). */
void bus_off_reconnect(bus_t *bus, void (*cb)(void *arg), void *arg);
/* Sends a request; cb is called exactly once on the loop thread, with the reply or with
 * NULL after timeout_ms (never from inside bus_request). Returns 0, or -1. */
int bus_request(bus_t *bus, const char *subject, const void *data, size_t len, int timeout_ms,
                bus_reply_cb cb, void *arg);

#endif
