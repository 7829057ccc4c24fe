/* Server side of the SASL mechanisms PLAIN (RFC 4616), LOGIN and SCRAM-SHA-256
 * (RFC 5802, RFC 7677), without any I/O: the caller moves bytes (already base64-decoded)
 * between the client and sasl_step(), looks the user's secret up where sasl_step()
 * asks for it, and runs the expensive password check off the event loop.
 *
 *   s = sasl_create("PLAIN")
 *   st = sasl_step(s, initial_response...)   -> SASL_CHALLENGE: send *out, feed reply
 *                                             -> SASL_NEED_SECRET: look up sasl_username(s)
 *   st = sasl_set_secret(s, secret_or_NULL)  -> SASL_NEED_VERIFY (PLAIN, LOGIN)
 *                                             -> SASL_CHALLENGE   (SCRAM server-first)
 *   sasl_verify(s)      on a worker thread (PBKDF2); touches nothing but s
 *   st = sasl_verify_result(s)               -> SASL_OK or SASL_FAIL
 * SCRAM: the client-final message goes through sasl_step() and yields SASL_CHALLENGE with
 * the server-final message (v=...) on success, then the client's empty reply gives SASL_OK.
 *
 * An unknown user (secret NULL) follows the same path and the same cost as a known one and
 * ends in SASL_FAIL: replies and timing cannot tell the two apart. */
#ifndef POSTERN_SASL_H
#define POSTERN_SASL_H

#include <stddef.h>

#include "auth/scram.h"

typedef enum sasl_status {
    SASL_CHALLENGE,   /* send out/out_len to the client and feed its reply to sasl_step() */
    SASL_NEED_SECRET, /* look up sasl_username() and call sasl_set_secret() */
    SASL_NEED_VERIFY, /* call sasl_verify() off the loop, then sasl_verify_result() */
    SASL_OK,          /* authenticated as sasl_username() */
    SASL_FAIL,        /* bad credentials (unknown user and wrong password alike) */
    SASL_MALFORMED,   /* the client's data does not parse; the exchange is over */
} sasl_status_t;

typedef struct sasl sasl_t;

/* mech is case-insensitive. fake_key (any length, may be shared by replicas) seeds the
 * made-up salt shown to SCRAM clients for unknown users, so it is stable per user name.
 * Returns NULL for an unknown mechanism. */
sasl_t *sasl_create(const char *mech, const unsigned char *fake_key, size_t fake_key_len);
void sasl_destroy(sasl_t **s);

/* Mechanism names this module implements, for EHLO/CAPA/CAPABILITY: "PLAIN LOGIN SCRAM-SHA-256". */
const char *sasl_mechanisms(void);

/* in may be NULL/0 (no initial response). *out points into s, valid until the next call. */
sasl_status_t sasl_step(sasl_t *s, const unsigned char *in, size_t in_len,
                        const unsigned char **out, size_t *out_len);
/* secret is copied; NULL means no such user. */
sasl_status_t sasl_set_secret(sasl_t *s, const scram_secret_t *secret, const unsigned char **out,
                              size_t *out_len);
void sasl_verify(sasl_t *s);
sasl_status_t sasl_verify_result(sasl_t *s);

/* The authentication identity, lowercased, once known (NULL before). */
const char *sasl_username(const sasl_t *s);
const char *sasl_mech_name(const sasl_t *s);
/* A keyed hash (HMAC-SHA-256 under key) of the user name and the credential the client
 * presented, so that the same wrong password tried twice gives the same digest while the
 * password is never kept. For SCRAM the credential is the ClientKey recovered from the
 * proof. Valid once the exchange ended in SASL_OK or SASL_FAIL; returns 0, or -1. */
int sasl_attempt_digest(const sasl_t *s, const unsigned char *key, size_t key_len,
                        unsigned char out[32]);
/* Note on SCRAM: a wrong proof cannot be unmasked without the client's own StoredKey, so the
 * recovered "ClientKey" of a failed SCRAM attempt also depends on the exchange's nonces: two
 * tries of the same wrong password give the same digest only if the nonces match as well.
 * An unknown user is handled with a made-up secret keyed by fake_key, the same way. The
 * digest is -1 when no credential was presented (e.g. SCRAM authzid mismatch). */

/* For tests only: use server_nonce as the server's part of the SCRAM nonce (RFC 5802
 * section 5.1 "r=" = client nonce + this) instead of 24 random bytes. Printable ASCII
 * without ',', at most 64 characters; anything else restores the random nonce. */
void sasl_test_set_nonce(sasl_t *s, const char *server_nonce);

#endif
