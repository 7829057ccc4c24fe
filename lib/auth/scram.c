#include "auth/scram.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define SCRAM_NEW_SALT_LEN 16
#define SCRAM_ITER_DIGITS_MAX 8 /* "10000000" */

static const char scram_prefix[] = "SCRAM-SHA-256$";
static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* ---- primitives ---- */

int scram_hmac(const unsigned char *key, size_t key_len, const void *data, size_t data_len,
               unsigned char out[SCRAM_KEY_LEN])
{
    static const unsigned char empty[1];
    unsigned int len = 0;
    if (key_len > INT_MAX || (key == NULL && key_len > 0))
        return -1;
    if (!HMAC(EVP_sha256(), key ? key : empty, (int)key_len, data ? data : empty, data_len, out,
              &len) ||
        len != SCRAM_KEY_LEN)
        return -1;
    return 0;
}

int scram_b64_encode(const unsigned char *in, size_t in_len, char *out, size_t out_len)
{
    if (in_len > (INT_MAX / 4) * 3 - 3 || out_len < 4 * ((in_len + 2) / 3) + 1)
        return -1;
    return EVP_EncodeBlock((unsigned char *)out, in, (int)in_len);
}

static bool b64_char(char c)
{
    return c != '\0' && strchr(b64_alphabet, c) != NULL;
}

/* True if in is canonical-looking base64: groups of 4, '=' only as the last one or two
 * characters. EVP_DecodeBlock alone would accept "Y===", "=YQ=" and surrounding blanks. */
static bool b64_valid(const char *in, size_t in_len)
{
    if (in_len % 4 != 0)
        return false;
    size_t pad = 0;
    if (in_len >= 1 && in[in_len - 1] == '=')
        pad = (in_len >= 2 && in[in_len - 2] == '=') ? 2 : 1;
    for (size_t i = 0; i < in_len - pad; i++)
        if (!b64_char(in[i]))
            return false;
    return true;
}

/* Decodes one group at a time so that DecodeBlock's padding quirk (it always writes 3 bytes
 * per group, counting padding as zero bytes) never writes past out. */
int scram_b64_decode(const char *in, size_t in_len, unsigned char *out, size_t out_len)
{
    if (in == NULL || in_len > INT_MAX || !b64_valid(in, in_len))
        return -1;
    size_t n = 0;
    unsigned char group[3];
    for (size_t i = 0; i < in_len; i += 4) {
        if (EVP_DecodeBlock(group, (const unsigned char *)in + i, 4) != 3)
            return -1;
        size_t take = 3;
        if (i + 4 == in_len)
            take -= (in[i + 3] == '=') + (in[i + 2] == '=');
        if (n + take > out_len) {
            OPENSSL_cleanse(group, sizeof group);
            return -1;
        }
        memcpy(out + n, group, take);
        n += take;
    }
    OPENSSL_cleanse(group, sizeof group);
    return (int)n;
}

/* ---- secrets ---- */

static bool iterations_ok(unsigned iterations)
{
    return iterations >= SCRAM_MIN_ITERATIONS && iterations <= SCRAM_MAX_ITERATIONS;
}

static bool secret_ok(const scram_secret_t *secret)
{
    return secret && secret->salt_len > 0 && secret->salt_len <= SCRAM_SALT_MAX &&
           iterations_ok(secret->iterations);
}

/* RFC 5802 section 3: SaltedPassword = Hi(password, salt, i); ClientKey = HMAC(SaltedPassword,
 * "Client Key"); StoredKey = H(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key"). */
int scram_secret_derive(const char *password, size_t password_len, const unsigned char *salt,
                        size_t salt_len, unsigned iterations, scram_secret_t *secret_r)
{
    if (!secret_r || (!password && password_len > 0) || password_len > INT_MAX || !salt ||
        salt_len == 0 || salt_len > SCRAM_SALT_MAX || !iterations_ok(iterations))
        return -1;
    unsigned char salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    int rc = -1;
    if (PKCS5_PBKDF2_HMAC(password ? password : "", (int)password_len, salt, (int)salt_len,
                          (int)iterations, EVP_sha256(), sizeof salted, salted) != 1)
        goto out;
    if (scram_hmac(salted, sizeof salted, "Client Key", 10, client_key) < 0 ||
        scram_hmac(salted, sizeof salted, "Server Key", 10, secret_r->server_key) < 0)
        goto out;
    if (!SHA256(client_key, sizeof client_key, secret_r->stored_key))
        goto out;
    memmove(secret_r->salt, salt, salt_len);
    secret_r->salt_len = salt_len;
    secret_r->iterations = iterations;
    rc = 0;
out:
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client_key, sizeof client_key);
    return rc;
}

int scram_secret_make(const char *password, size_t password_len, unsigned iterations,
                      scram_secret_t *secret_r)
{
    unsigned char salt[SCRAM_NEW_SALT_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1)
        return -1;
    return scram_secret_derive(password, password_len, salt, sizeof salt, iterations, secret_r);
}

bool scram_verify_password(const scram_secret_t *secret, const char *password,
                           size_t password_len)
{
    if (!secret_ok(secret))
        return false;
    scram_secret_t tmp;
    bool ok = scram_secret_derive(password, password_len, secret->salt, secret->salt_len,
                                  secret->iterations, &tmp) == 0 &&
              CRYPTO_memcmp(tmp.stored_key, secret->stored_key, SCRAM_KEY_LEN) == 0;
    OPENSSL_cleanse(&tmp, sizeof tmp);
    return ok;
}

/* ---- one SCRAM exchange ---- */

bool scram_check_proof(const scram_secret_t *secret, const void *auth_msg, size_t auth_len,
                       const unsigned char proof[SCRAM_KEY_LEN],
                       unsigned char client_key_r[SCRAM_KEY_LEN])
{
    unsigned char signature[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
    bool ok = false;
    memset(client_key_r, 0, SCRAM_KEY_LEN);
    if (!secret || !proof ||
        scram_hmac(secret->stored_key, SCRAM_KEY_LEN, auth_msg, auth_len, signature) < 0)
        goto out;
    for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
        client_key_r[i] = proof[i] ^ signature[i];
    if (!SHA256(client_key_r, SCRAM_KEY_LEN, stored))
        goto out;
    ok = CRYPTO_memcmp(stored, secret->stored_key, SCRAM_KEY_LEN) == 0;
out:
    OPENSSL_cleanse(signature, sizeof signature);
    OPENSSL_cleanse(stored, sizeof stored);
    return ok;
}

int scram_server_signature(const scram_secret_t *secret, const void *auth_msg, size_t auth_len,
                           unsigned char sig_r[SCRAM_KEY_LEN])
{
    if (!secret)
        return -1;
    return scram_hmac(secret->server_key, SCRAM_KEY_LEN, auth_msg, auth_len, sig_r);
}

/* ---- RFC 5803 text form ---- */

int scram_secret_encode(const scram_secret_t *secret, char *out, size_t out_len)
{
    char salt[4 * ((SCRAM_SALT_MAX + 2) / 3) + 1];
    char stored[4 * ((SCRAM_KEY_LEN + 2) / 3) + 1], server[sizeof stored];
    if (!secret_ok(secret) || !out ||
        scram_b64_encode(secret->salt, secret->salt_len, salt, sizeof salt) < 0 ||
        scram_b64_encode(secret->stored_key, SCRAM_KEY_LEN, stored, sizeof stored) < 0 ||
        scram_b64_encode(secret->server_key, SCRAM_KEY_LEN, server, sizeof server) < 0)
        return -1;
    int n = snprintf(out, out_len, "%s%u:%s$%s:%s", scram_prefix, secret->iterations, salt,
                     stored, server);
    return (n < 0 || (size_t)n >= out_len) ? -1 : 0;
}

/* Parses 1..8 decimal digits ending at stop; *p is moved past them. */
static int parse_iterations(const char **p, char stop, unsigned *iterations_r)
{
    unsigned long v = 0;
    size_t digits = 0;
    const char *s = *p;
    while (*s >= '0' && *s <= '9' && digits < SCRAM_ITER_DIGITS_MAX) {
        v = v * 10 + (unsigned long)(*s - '0');
        s++, digits++;
    }
    if (digits == 0 || *s != stop || v > UINT_MAX || !iterations_ok((unsigned)v))
        return -1;
    *iterations_r = (unsigned)v;
    *p = s + 1;
    return 0;
}

/* Decodes the base64 field from *p up to stop (or the end when stop is '\0') into out and
 * requires between min and max bytes; *p is moved past the stop character. */
static int parse_b64_field(const char **p, char stop, unsigned char *out, size_t min, size_t max)
{
    const char *end = strchr(*p, stop); /* stop '\0' finds the terminator */
    if (!end)
        return -1;
    int n = scram_b64_decode(*p, (size_t)(end - *p), out, max);
    if (n < 0 || (size_t)n < min)
        return -1;
    *p = stop ? end + 1 : end;
    return n;
}

int scram_secret_decode(const char *text, scram_secret_t *secret_r)
{
    if (!text || !secret_r || strnlen(text, SCRAM_SECRET_TEXT_MAX) >= SCRAM_SECRET_TEXT_MAX ||
        strncmp(text, scram_prefix, sizeof scram_prefix - 1) != 0)
        return -1;
    scram_secret_t s;
    const char *p = text + sizeof scram_prefix - 1;
    int salt_len;
    int rc = -1;
    if (parse_iterations(&p, ':', &s.iterations) < 0 ||
        (salt_len = parse_b64_field(&p, '$', s.salt, 1, SCRAM_SALT_MAX)) < 0 ||
        parse_b64_field(&p, ':', s.stored_key, SCRAM_KEY_LEN, SCRAM_KEY_LEN) < 0 ||
        parse_b64_field(&p, '\0', s.server_key, SCRAM_KEY_LEN, SCRAM_KEY_LEN) < 0)
        goto out;
    s.salt_len = (size_t)salt_len;
    *secret_r = s;
    rc = 0;
out:
    OPENSSL_cleanse(&s, sizeof s);
    return rc;
}
