/* The bus's connection settings applied to libnats options, for the programs that make a
 * NATS connection of their own instead of a bus_t (mailctl). Kept apart from bus.h, which
 * hides libnats. */
#ifndef POSTERN_BUS_NATS_OPTS_H
#define POSTERN_BUS_NATS_OPTS_H

#include <nats/nats.h>
#include <stddef.h>

#include "bus/bus.h"

/* Applies o to opts: the servers (every URL of the comma-separated list; servers the
 * cluster announces are ignored, they are not in the certificate), the client name, the
 * user and password, TLS with o->tls_ca, and an inbox prefix of the user's own,
 * _INBOX.<user>, the only replies the server lets that user read. Returns NATS_OK, or the
 * first error with its reason in err. */
natsStatus bus_nats_options(natsOptions *opts, const bus_opts_t *o, char *err, size_t err_len);

#endif
