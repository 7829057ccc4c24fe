/* The limiter as a service (lib/svc/service.h): its requests and events on the bus, its
 * timers, and the hooks through which the policy's decisions (policy.h) reach the bus and
 * PostgreSQL (store.h). Messages arrive and leave as plain C (lib/bus/events.h). */
#ifndef LIMITER_SERVER_H
#define LIMITER_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "svc/service.h"

/* The svc_def_t callbacks. Ready once the first load from PostgreSQL has completed (before
 * it, checks go unanswered). */
int server_start(svc_t *svc);
bool server_ready(svc_t *svc, char *why, size_t why_len);
void server_stop(svc_t *svc);
/* True while a JetStream call of the replica is in flight. */
bool server_busy(svc_t *svc);
void server_destroy(svc_t *svc);

#endif
