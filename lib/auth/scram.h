/* SCRAM-SHA-256 secrets (RFC 5802, RFC 7677) and their storage form (RFC 5803).
 * One secret per user verifies PLAIN, LOGIN and SCRAM-SHA-256: the password itself is
 * never stored. */
#ifndef POSTERN_SCRAM_H
#define POSTERN_SCRAM_H

#include <stdbool.h>
#include <stddef.h>

#define SCRAM_KEY_LEN 32            /* SHA-256 output */
#define SCRAM_SALT_MAX 64
#define SCRAM_DEFAULT_ITERATIONS 4096 /* RFC 7677 section 4: at least 4096 */
#define SCRAM_MIN_ITERATIONS 4096
#define SCRAM_MAX_ITERATIONS 10000000
#define SCRAM_SECRET_TEXT_MAX 256

typedef struct scram_secret {
    unsigned char salt[SCRAM_SALT_MAX];
    size_t salt_len;
    unsigned iterations;
    unsigned char stored_key[SCRAM_KEY_LEN];
    unsigned char server_key[SCRAM_KEY_LEN];
} scram_secret_t;

/* A new secret with a random 16-byte salt. Returns 0, or -1 on failure. */
int scram_secret_make(const char *password, size_t password_len, unsigned iterations,
                      scram_secret_t *secret_r);
/* The secret for a given salt (PBKDF2-HMAC-SHA-256, then RFC 5802 key derivation). */
int scram_secret_derive(const char *password, size_t password_len, const unsigned char *salt,
                        size_t salt_len, unsigned iterations, scram_secret_t *secret_r);
/* Checks a plaintext password (PLAIN, LOGIN) against a secret in constant time with
 * respect to the key comparison. Costs one PBKDF2 derivation: call it off the loop. */
bool scram_verify_password(const scram_secret_t *secret, const char *password,
                           size_t password_len);
/* RFC 5803 text form: "SCRAM-SHA-256$<iterations>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>".
 * encode returns 0, or -1 if out is too small; decode returns 0, or -1 on malformed text. */
int scram_secret_encode(const scram_secret_t *secret, char *out, size_t out_len);
int scram_secret_decode(const char *text, scram_secret_t *secret_r);

/* RFC 5802 section 3, server side of one exchange. auth_msg is the AuthMessage.
 * scram_check_proof recovers ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage) into
 * client_key_r (always, match or not) and checks H(ClientKey) == StoredKey in constant time.
 * scram_server_signature computes HMAC(ServerKey, AuthMessage); returns 0, or -1. */
bool scram_check_proof(const scram_secret_t *secret, const void *auth_msg, size_t auth_len,
                       const unsigned char proof[SCRAM_KEY_LEN],
                       unsigned char client_key_r[SCRAM_KEY_LEN]);
int scram_server_signature(const scram_secret_t *secret, const void *auth_msg, size_t auth_len,
                           unsigned char sig_r[SCRAM_KEY_LEN]);

/* HMAC-SHA-256; key may be NULL when key_len is 0. Returns 0, or -1. */
int scram_hmac(const unsigned char *key, size_t key_len, const void *data, size_t data_len,
               unsigned char out[SCRAM_KEY_LEN]);
/* Standard base64 (RFC 4648 section 4) with padding. encode writes a NUL-terminated string
 * and returns its length, or -1 if out is too small. decode is strict (no whitespace, padding
 * only at the end, length a multiple of 4) and returns the byte count, or -1 if the text is
 * malformed or does not fit in out_len bytes. */
int scram_b64_encode(const unsigned char *in, size_t in_len, char *out, size_t out_len);
int scram_b64_decode(const char *in, size_t in_len, unsigned char *out, size_t out_len);

#endif
