/* JetStream on the bus, for the services that keep state in it (the limiter). Kept apart
 * from bus.h, which hides libnats, because the blocking JetStream calls (streams, key-value
 * buckets) are made with libnats's own types, from worker threads (uv_queue_work), never
 * on the loop thread. */
#ifndef POSTERN_BUS_JS_H
#define POSTERN_BUS_JS_H

#include <nats/nats.h>
#include <stdint.h>

#include "bus/bus.h"

/* The bus's JetStream context (made on first use; API calls wait up to 2 s), or NULL.
 * Any thread. */
jsCtx *bus_js(bus_t *bus);

typedef struct bus_sub bus_follow_t;
/* A message of a followed stream: its subject and payload, its stream sequence and the time
 * the stream stored it. Loop thread. */
typedef void (*bus_stream_cb)(void *arg, const char *subject, const void *data, size_t len,
                              uint64_t seq, int64_t time_ms);
/* Follows every subject of stream in order from start_seq (0 or 1: from the first kept),
 * with an ordered consumer: no acks, a gap or a lost consumer is repaired by libnats, which
 * starts a new consumer after the last message delivered. Blocking: a worker thread. The
 * loop gets at most a few thousand messages ahead of the callback. NULL with err on
 * failure. */
bus_follow_t *bus_follow(bus_t *bus, const char *stream, uint64_t start_seq, bus_stream_cb cb,
                         void *arg, char *err, size_t err_len);
/* Stops a follower; nothing more is delivered. Loop thread (libnats may wait for the
 * server to delete the consumer: not for request paths). */
void bus_unfollow(bus_t *bus, bus_follow_t *f);

#endif
