/* Authentication for every front end: drives a SASL exchange (lib/auth/sasl) over the
 * protocol's own challenge syntax, looks the user's secret up in PostgreSQL, verifies
 * passwords on a worker thread, delays failures by auth.failure_delay_ms, and publishes
 * an AuthEvent for every outcome. The protocol only formats challenges and the final
 * reply. */
#ifndef POSTERN_FE_AUTH_H
#define POSTERN_FE_AUTH_H

#include <stddef.h>

#include "svc/fe.h"
#include "bus/lim.h"

typedef enum fe_auth_result {
    FE_AUTH_OK,        /* s->user is set */
    FE_AUTH_FAIL,      /* bad credentials */
    FE_AUTH_TEMP,      /* a dependency is down: tell the client to try later */
    FE_AUTH_ABORTED,   /* the client sent "*" */
    FE_AUTH_MALFORMED, /* bad base64 or a response the mechanism cannot parse */
    FE_AUTH_BLOCKED,   /* the client address is blocked: say so and close */
} fe_auth_result_t;

typedef struct fe_auth_ops {
    /* Send one challenge; b64 is the base64 text ("" for an empty challenge). */
    void (*challenge)(fe_session_t *s, const char *b64);
    /* The exchange is over; write the reply. For FE_AUTH_BLOCKED, block says why and until
     * when (until_ms 0 when neither the limiter nor the local copy knew); else NULL. */
    void (*done)(fe_session_t *s, fe_auth_result_t result, const lim_verdict_t *block);
} fe_auth_ops_t;

/* Before a password is verified the limiter is asked whether this client address and
 * account may try (account harvesting); its answer may block or slow the attempt. When it
 * does not answer in time, limiter.login_on_timeout decides: "local" goes on with the
 * local copy of the blocks, "deny" fails the attempt temporarily.
 *
 * initial is the initial response: NULL for none, "=" for an empty one (RFC 4954).
 * Returns -1 (nothing started) for an unknown mechanism. */
int fe_auth_start(fe_session_t *s, const char *mech, const char *initial,
                  const fe_auth_ops_t *ops);
/* A user name and password given in the clear by the protocol (POP3 USER/PASS, IMAP
 * LOGIN): verified as PLAIN, reported under the label. */
void fe_auth_password(fe_session_t *s, const char *label, const char *user, const char *password,
                      const fe_auth_ops_t *ops);

/* Strict base64 (RFC 4648, padded, no whitespace). Returns 0, or -1. */
int fe_base64_decode(const char *text, size_t len, buf_t *out);
int fe_base64_encode(const unsigned char *data, size_t len, buf_t *out);

#endif
