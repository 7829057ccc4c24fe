/* SASL (lib/auth/sasl.c) fed the client's messages in whatever state the exchange is in, and
 * the SCRAM text forms (lib/auth/scram.c).
 *
 * Input: byte 0 chooses what runs:
 *   bits 0-1  0 PLAIN, 1 LOGIN, 2 SCRAM-SHA-256, 3 the text forms (below)
 *   bit 2     the user exists (its secret is given) rather than not
 *   bit 3     the secret given is unusable (too few iterations): treated as no user
 * then the client's messages (already base64-decoded, as the front end hands them over),
 * separated by "|#|". The server's part of the SCRAM nonce is fixed (sasl_test_set_nonce), so
 * an input can carry a complete, valid exchange: tests/fuzz/corpus/sasl/scram-ok is one for
 * user "user", password "pencil" (the secret below).
 * The PBKDF2 check of PLAIN and LOGIN (sasl_verify) is left out: it parses nothing and costs
 * milliseconds.
 *
 * Text forms (mode 3): the rest is tried as an RFC 5803 secret (scram_secret_decode) and as
 * base64 (scram_b64_decode); what decodes must encode and decode back to the same value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/sasl.h"
#include "auth/scram.h"

#define SEP "|#|"
#define MAX_STEPS 16

static const unsigned char fake_key[] = "fuzz fake key for unknown users";
static const unsigned char salt[16] = "fuzz-salt-16byte";
static scram_secret_t secret, weak;
static int ready;

static void init(void)
{
    if (ready)
        return;
    if (scram_secret_derive("pencil", 6, salt, sizeof salt, SCRAM_MIN_ITERATIONS, &secret) < 0)
        abort();
    weak = secret;
    weak.iterations = 1;
    ready = 1;
}

static void check_out(sasl_status_t st, const unsigned char *out, size_t out_len)
{
    if (st == SASL_CHALLENGE) {
        if (!out && out_len)
            abort();
        if (out_len > 512)
            abort();
    } else if (out || out_len) {
        abort();
    }
}

static void check_user(const sasl_t *s)
{
    const char *u = sasl_username(s);
    if (!u)
        return;
    size_t n = strlen(u);
    if (n == 0 || n > 255)
        abort();
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)u[i] < 0x20 || u[i] == 0x7f || (u[i] >= 'A' && u[i] <= 'Z'))
            abort();
}

static void exchange(const char *mech, unsigned flags, const uint8_t *data, size_t size)
{
    sasl_t *s = sasl_create(mech, fake_key, sizeof fake_key - 1);
    if (!s)
        abort();
    sasl_test_set_nonce(s, "3rfcNHYJY1ZVvWVs7j");
    const uint8_t *p = data, *end = data + size;
    sasl_status_t st = SASL_CHALLENGE;
    for (int step = 0; step < MAX_STEPS && p <= end; step++) {
        const uint8_t *sep = memmem(p, (size_t)(end - p), SEP, 3);
        const uint8_t *msg_end = sep ? sep : end;
        const unsigned char *out = NULL;
        size_t out_len = 0;
        /* A copy of exactly the message, so that ASan sees any read past its end. */
        size_t len = (size_t)(msg_end - p);
        unsigned char *msg = malloc(len ? len : 1);
        if (!msg)
            abort();
        memcpy(msg, p, len);
        st = sasl_step(s, step == 0 && len == 0 ? NULL : msg, len, &out, &out_len);
        free(msg);
        check_out(st, out, out_len);
        check_user(s);
        if (st == SASL_NEED_SECRET) {
            const scram_secret_t *sec = !(flags & 4) ? NULL : (flags & 8) ? &weak : &secret;
            st = sasl_set_secret(s, sec, &out, &out_len);
            check_out(st, out, out_len);
        }
        if (st == SASL_NEED_VERIFY)
            st = sasl_verify_result(s);
        if (st == SASL_OK || st == SASL_FAIL) {
            unsigned char digest[32];
            sasl_attempt_digest(s, fake_key, 8, digest);
        }
        if (!sep)
            break;
        p = sep + 3;
    }
    /* Out of order calls are refused, never acted on. */
    sasl_set_secret(s, &secret, NULL, NULL);
    sasl_verify_result(s);
    if (!sasl_mech_name(s))
        abort();
    sasl_destroy(&s);
    if (s)
        abort();
}

static void text_forms(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        abort();
    memcpy(text, data, size);
    text[size] = '\0';
    scram_secret_t a, b;
    if (scram_secret_decode(text, &a) == 0) {
        char enc[SCRAM_SECRET_TEXT_MAX];
        if (scram_secret_encode(&a, enc, sizeof enc) < 0 || scram_secret_decode(enc, &b) < 0 ||
            memcmp(&a.salt, &b.salt, a.salt_len) || a.salt_len != b.salt_len ||
            a.iterations != b.iterations || memcmp(a.stored_key, b.stored_key, SCRAM_KEY_LEN) ||
            memcmp(a.server_key, b.server_key, SCRAM_KEY_LEN))
            abort();
    }
    unsigned char bin[1024], bin2[1024];
    char enc[1400];
    int n = scram_b64_decode(text, size, bin, sizeof bin);
    if (n >= 0) {
        if ((size_t)n > size || scram_b64_encode(bin, (size_t)n, enc, sizeof enc) < 0 ||
            scram_b64_decode(enc, strlen(enc), bin2, sizeof bin2) != n || memcmp(bin, bin2, n))
            abort();
    }
    /* A too small output buffer must be refused, never overrun. */
    unsigned char small[5];
    n = scram_b64_decode(text, size, small, sizeof small);
    if (n > (int)sizeof small)
        abort();
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const mechs[] = { "PLAIN", "LOGIN", "scram-sha-256" };
    if (size < 1)
        return 0;
    init();
    unsigned flags = data[0];
    if ((flags & 3) == 3)
        text_forms(data + 1, size - 1);
    else
        exchange(mechs[flags & 3], flags, data + 1, size - 1);
    return 0;
}
