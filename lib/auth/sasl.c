#include "auth/sasl.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define SASL_IN_MAX 2048    /* longest client message any step accepts */
#define SASL_FIELD_MAX 255  /* user name, authzid, password (RFC 4616 section 2) */
#define SASL_CNONCE_MAX 256 /* client's part of the SCRAM nonce */
#define SASL_SNONCE_RAW 24  /* random bytes in the server's part */
#define SASL_SNONCE_MAX 64  /* server's part as text */
#define SASL_OUT_MAX 512    /* longest server message: server-first */
#define SASL_FAKE_KEY_MAX 64 /* SHA-256 block size, see sasl_create() */
#define SASL_FAKE_SALT_LEN 16

enum sasl_mech { MECH_PLAIN, MECH_LOGIN, MECH_SCRAM };

static const struct mech_def {
    const char *name;
    enum sasl_mech id;
} mech_defs[] = {
    { "PLAIN", MECH_PLAIN },
    { "LOGIN", MECH_LOGIN },
    { "SCRAM-SHA-256", MECH_SCRAM },
};

enum sasl_state {
    ST_START,       /* nothing received yet */
    ST_PLAIN_WAIT,  /* PLAIN: sent the empty challenge */
    ST_LOGIN_USER,  /* LOGIN: asked "Username:" */
    ST_LOGIN_PASS,  /* LOGIN: asked "Password:" */
    ST_SCRAM_FIRST, /* SCRAM: sent the empty challenge, client-first expected */
    ST_NEED_SECRET, /* waiting for sasl_set_secret() */
    ST_NEED_VERIFY, /* PLAIN, LOGIN: waiting for sasl_verify() */
    ST_VERIFIED,    /* sasl_verify() ran, waiting for sasl_verify_result() */
    ST_SCRAM_FINAL, /* SCRAM: sent server-first, client-final expected */
    ST_SCRAM_END,   /* SCRAM: sent server-final, the client's empty reply expected */
    ST_DONE,        /* over; the outcome is in result */
};

struct sasl {
    enum sasl_mech mech;
    enum sasl_state state;
    sasl_status_t result; /* once ST_DONE */
    unsigned char fake_key[SASL_FAKE_KEY_MAX];
    size_t fake_key_len;

    char user[SASL_FIELD_MAX + 1]; /* lowercased authcid */
    size_t user_len;
    char pass[SASL_FIELD_MAX + 1]; /* PLAIN, LOGIN; cleansed in sasl_destroy() */
    size_t pass_len;

    scram_secret_t secret; /* the user's, or a made-up one when !known */
    bool known;
    bool verified; /* outcome of sasl_verify() */

    /* SCRAM (RFC 5802 section 5) */
    char first[SASL_IN_MAX];   /* client-first message as received */
    size_t first_len, gs2_len; /* client-first-message-bare = first + gs2_len */
    char nonce[SASL_CNONCE_MAX + SASL_SNONCE_MAX + 1];
    size_t cnonce_len;
    char test_snonce[SASL_SNONCE_MAX + 1];
    char server_first[SASL_OUT_MAX];
    size_t server_first_len;
    unsigned char client_key[SCRAM_KEY_LEN]; /* recovered from the proof */
    bool have_client_key;

    unsigned char out[SASL_OUT_MAX];
    size_t out_len;
};

/* ---- small helpers ---- */

static char ascii_lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool ascii_alpha(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* RFC 5802 section 7 "printable": %x21-2B / %x2D-7E. */
static bool nonce_valid(const char *p, size_t len, size_t max)
{
    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
            return false;
    return true;
}

static sasl_status_t finish(sasl_t *s, sasl_status_t st)
{
    s->state = ST_DONE;
    s->result = st;
    return st;
}

static sasl_status_t challenge(sasl_t *s, const void *data, size_t len)
{
    memcpy(s->out, data, len);
    s->out_len = len;
    return SASL_CHALLENGE;
}

static void set_out(const unsigned char **out, size_t *out_len, const unsigned char *p,
                    size_t len)
{
    if (out)
        *out = p;
    if (out_len)
        *out_len = len;
}

/* Sets the authentication identity: 1..255 bytes without control characters, lowercased. */
static bool set_user(sasl_t *s, const char *p, size_t len)
{
    if (len == 0 || len > SASL_FIELD_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == 0x7f)
            return false;
        s->user[i] = ascii_lower(p[i]);
    }
    s->user[len] = '\0';
    s->user_len = len;
    return true;
}

/* A password for PLAIN and LOGIN: 1..255 bytes without NUL. */
static bool set_pass(sasl_t *s, const char *p, size_t len)
{
    if (len == 0 || len > SASL_FIELD_MAX || memchr(p, '\0', len))
        return false;
    memcpy(s->pass, p, len);
    s->pass[len] = '\0';
    s->pass_len = len;
    return true;
}

/* An authzid is acceptable if empty or the authcid itself (ASCII case-insensitive). */
static bool authzid_ok(const sasl_t *s, const char *authz, size_t len)
{
    if (len == 0)
        return true;
    if (len != s->user_len)
        return false;
    for (size_t i = 0; i < len; i++)
        if (ascii_lower(authz[i]) != s->user[i])
            return false;
    return true;
}

/* ---- unknown users ---- */

/* HMAC(fake_key, user || 0x00 || label); user names never contain NUL. */
static int fake_hmac(const sasl_t *s, const char *label, unsigned char out[SCRAM_KEY_LEN])
{
    char msg[SASL_FIELD_MAX + 32];
    size_t label_len = strlen(label);
    memcpy(msg, s->user, s->user_len);
    msg[s->user_len] = '\0';
    memcpy(msg + s->user_len + 1, label, label_len);
    return scram_hmac(s->fake_key, s->fake_key_len, msg, s->user_len + 1 + label_len, out);
}

/* The made-up secret of an unknown user, stable per user name and fake_key:
 *   salt       = first 16 bytes of HMAC(fake_key, user)
 *   ClientKey  = HMAC(fake_key, user || 0x00 || "client key"), StoredKey = H(ClientKey)
 *   ServerKey  = HMAC(fake_key, user || 0x00 || "server key")
 * PLAIN and LOGIN run a full PBKDF2 against it; SCRAM shows its salt and checks the proof
 * against its StoredKey exactly as for a real user. */
static int fake_secret(const sasl_t *s, scram_secret_t *secret_r)
{
    unsigned char salt[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
    int rc = -1;
    if (scram_hmac(s->fake_key, s->fake_key_len, s->user, s->user_len, salt) < 0 ||
        fake_hmac(s, "client key", client_key) < 0 ||
        fake_hmac(s, "server key", secret_r->server_key) < 0 ||
        !SHA256(client_key, sizeof client_key, secret_r->stored_key))
        goto out;
    memcpy(secret_r->salt, salt, SASL_FAKE_SALT_LEN);
    secret_r->salt_len = SASL_FAKE_SALT_LEN;
    secret_r->iterations = SCRAM_DEFAULT_ITERATIONS;
    rc = 0;
out:
    OPENSSL_cleanse(client_key, sizeof client_key);
    return rc;
}

/* ---- PLAIN (RFC 4616 section 2): [authzid] NUL authcid NUL passwd ---- */

static sasl_status_t plain_message(sasl_t *s, const unsigned char *in, size_t len)
{
    const unsigned char *end = in + len;
    const unsigned char *nul1 = memchr(in, '\0', len);
    if (!nul1)
        return finish(s, SASL_MALFORMED);
    const unsigned char *authc = nul1 + 1;
    const unsigned char *nul2 = memchr(authc, '\0', (size_t)(end - authc));
    if (!nul2)
        return finish(s, SASL_MALFORMED);
    const unsigned char *pass = nul2 + 1;
    size_t authz_len = (size_t)(nul1 - in);
    if (authz_len > SASL_FIELD_MAX || !set_user(s, (const char *)authc, (size_t)(nul2 - authc)) ||
        !set_pass(s, (const char *)pass, (size_t)(end - pass)))
        return finish(s, SASL_MALFORMED);
    if (!authzid_ok(s, (const char *)in, authz_len))
        return finish(s, SASL_FAIL);
    s->state = ST_NEED_SECRET;
    return SASL_NEED_SECRET;
}

/* ---- LOGIN (draft-murchison-sasl-login): username, then password ---- */

static sasl_status_t login_user(sasl_t *s, const unsigned char *in, size_t len)
{
    if (!set_user(s, (const char *)in, len))
        return finish(s, SASL_MALFORMED);
    s->state = ST_LOGIN_PASS;
    return challenge(s, "Password:", 9);
}

static sasl_status_t login_pass(sasl_t *s, const unsigned char *in, size_t len)
{
    if (!set_pass(s, (const char *)in, len))
        return finish(s, SASL_MALFORMED);
    s->state = ST_NEED_SECRET;
    return SASL_NEED_SECRET;
}

/* ---- SCRAM-SHA-256 (RFC 5802, RFC 7677) ---- */

/* Walks the comma-separated attributes of a SCRAM message. */
struct cursor {
    const char *p, *end;
    bool more; /* an attribute is due at p (start, or after a comma) */
};

/* Reads "x=value" (RFC 5802 section 7: a letter, '=', a non-empty value up to the next comma
 * or the end) and skips that comma. Returns the letter, or 0 if malformed. */
static char attr_next(struct cursor *c, const char **val_r, size_t *len_r)
{
    if (!c->more || c->end - c->p < 3 || !ascii_alpha(c->p[0]) || c->p[1] != '=')
        return 0;
    char letter = c->p[0];
    const char *v = c->p + 2;
    const char *comma = memchr(v, ',', (size_t)(c->end - v));
    const char *vend = comma ? comma : c->end;
    if (vend == v)
        return 0;
    *val_r = v;
    *len_r = (size_t)(vend - v);
    c->more = comma != NULL;
    c->p = comma ? comma + 1 : c->end;
    return letter;
}

/* Skips optional extensions ("x=value" each) up to the end. */
static bool attr_skip_rest(struct cursor *c)
{
    const char *v;
    size_t len;
    while (c->more)
        if (!attr_next(c, &v, &len))
            return false;
    return true;
}

/* RFC 5802 section 5.1 saslname: "=2C" is ',' and "=3D" is '='; any other '=' is an error. */
static bool saslname_decode(const char *in, size_t len, char *out, size_t *out_len_r)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '=') {
            if (len - i < 3)
                return false;
            if (in[i + 1] == '2' && ascii_lower(in[i + 2]) == 'c')
                c = ',';
            else if (in[i + 1] == '3' && ascii_lower(in[i + 2]) == 'd')
                c = '=';
            else
                return false;
            i += 2;
        }
        if (n == SASL_FIELD_MAX)
            return false;
        out[n++] = c;
    }
    *out_len_r = n;
    return true;
}

/* gs2-header (RFC 5802 section 7): "n," or "y," then [ "a=" saslname ] ",". "p=" asks for
 * channel binding, which we never offer (no -PLUS mechanism): RFC 5802 section 6. */
static bool gs2_parse(sasl_t *s, char *authz, size_t *authz_len_r)
{
    const char *f = s->first, *end = s->first + s->first_len;
    if (s->first_len < 3 || (f[0] != 'n' && f[0] != 'y') || f[1] != ',')
        return false;
    const char *a = f + 2;
    const char *comma = memchr(a, ',', (size_t)(end - a));
    if (!comma)
        return false;
    *authz_len_r = 0;
    if (comma > a &&
        (comma - a < 3 || a[0] != 'a' || a[1] != '=' ||
         !saslname_decode(a + 2, (size_t)(comma - a - 2), authz, authz_len_r) ||
         *authz_len_r == 0))
        return false;
    s->gs2_len = (size_t)(comma + 1 - f);
    return true;
}

/* client-first-message-bare: [reserved-mext ","] username "," nonce ["," extensions].
 * "m=" is reserved and must make the server fail (RFC 5802 section 5.1). */
static bool bare_parse(sasl_t *s)
{
    struct cursor c = { s->first + s->gs2_len, s->first + s->first_len, true };
    const char *v;
    size_t len;
    char name[SASL_FIELD_MAX];
    size_t name_len;
    if (attr_next(&c, &v, &len) != 'n' || !saslname_decode(v, len, name, &name_len) ||
        !set_user(s, name, name_len))
        return false;
    if (attr_next(&c, &v, &len) != 'r' || !nonce_valid(v, len, SASL_CNONCE_MAX))
        return false;
    memcpy(s->nonce, v, len);
    s->cnonce_len = len;
    return attr_skip_rest(&c);
}

static sasl_status_t scram_first(sasl_t *s, const unsigned char *in, size_t len)
{
    char authz[SASL_FIELD_MAX];
    size_t authz_len;
    if (len > sizeof s->first || memchr(in, '\0', len))
        return finish(s, SASL_MALFORMED);
    memcpy(s->first, in, len);
    s->first_len = len;
    if (!gs2_parse(s, authz, &authz_len) || !bare_parse(s))
        return finish(s, SASL_MALFORMED);
    if (!authzid_ok(s, authz, authz_len))
        return finish(s, SASL_FAIL);
    s->state = ST_NEED_SECRET;
    return SASL_NEED_SECRET;
}

/* server-first-message: "r=" c-nonce s-nonce ",s=" salt ",i=" iteration-count. */
static int scram_server_first(sasl_t *s)
{
    char snonce[SASL_SNONCE_MAX + 1], salt[4 * ((SCRAM_SALT_MAX + 2) / 3) + 1];
    if (s->test_snonce[0]) {
        memcpy(snonce, s->test_snonce, sizeof snonce);
    } else {
        unsigned char raw[SASL_SNONCE_RAW];
        if (RAND_bytes(raw, sizeof raw) != 1 || scram_b64_encode(raw, sizeof raw, snonce,
                                                                 sizeof snonce) < 0)
            return -1;
    }
    size_t snonce_len = strlen(snonce);
    memcpy(s->nonce + s->cnonce_len, snonce, snonce_len + 1);
    if (scram_b64_encode(s->secret.salt, s->secret.salt_len, salt, sizeof salt) < 0)
        return -1;
    int n = snprintf(s->server_first, sizeof s->server_first, "r=%s,s=%s,i=%u", s->nonce, salt,
                     s->secret.iterations);
    if (n < 0 || (size_t)n >= sizeof s->server_first)
        return -1;
    s->server_first_len = (size_t)n;
    return 0;
}

/* The parts of client-final-message that matter: see scram_final(). */
struct client_final {
    size_t without_proof_len; /* client-final-message-without-proof */
    unsigned char proof[SCRAM_KEY_LEN];
};

/* client-final-message = "c=" b64(gs2-header) ",r=" nonce ["," extensions] ",p=" proof.
 * c= must repeat our gs2 header ("biws" for "n,,", "eSws" for "y,,") and r= the full nonce. */
static bool final_parse(const sasl_t *s, const char *in, size_t len, struct client_final *f)
{
    size_t last = len;
    while (last > 0 && in[last - 1] != ',')
        last--;
    if (last == 0)
        return false;
    f->without_proof_len = last - 1;
    struct cursor pc = { in + last, in + len, true };
    struct cursor c = { in, in + f->without_proof_len, true };
    const char *v;
    size_t vlen;
    unsigned char gs2[SASL_IN_MAX];
    int n;
    if (attr_next(&pc, &v, &vlen) != 'p' || pc.more ||
        scram_b64_decode(v, vlen, f->proof, sizeof f->proof) != SCRAM_KEY_LEN)
        return false;
    if (attr_next(&c, &v, &vlen) != 'c' || (n = scram_b64_decode(v, vlen, gs2, sizeof gs2)) < 0 ||
        (size_t)n != s->gs2_len || memcmp(gs2, s->first, s->gs2_len) != 0)
        return false;
    if (attr_next(&c, &v, &vlen) != 'r' || vlen != strlen(s->nonce) ||
        memcmp(v, s->nonce, vlen) != 0)
        return false;
    return attr_skip_rest(&c);
}

/* AuthMessage = client-first-message-bare "," server-first-message ","
 *               client-final-message-without-proof (RFC 5802 section 3). */
static size_t auth_message(const sasl_t *s, const char *final, size_t final_len, char *am)
{
    size_t bare_len = s->first_len - s->gs2_len, n = 0;
    memcpy(am, s->first + s->gs2_len, bare_len);
    n += bare_len;
    am[n++] = ',';
    memcpy(am + n, s->server_first, s->server_first_len);
    n += s->server_first_len;
    am[n++] = ',';
    memcpy(am + n, final, final_len);
    return n + final_len;
}

/* Verifies the proof and answers "v=" ServerSignature (RFC 5802 section 5.1). A known and an
 * unknown user do the same work; only the known one can succeed. */
static sasl_status_t scram_final(sasl_t *s, const unsigned char *in, size_t len)
{
    struct client_final f;
    char am[2 * SASL_IN_MAX + SASL_OUT_MAX + 2];
    unsigned char sig[SCRAM_KEY_LEN];
    char v[2 + 4 * ((SCRAM_KEY_LEN + 2) / 3) + 1] = "v=";
    if (memchr(in, '\0', len) || !final_parse(s, (const char *)in, len, &f))
        return finish(s, SASL_MALFORMED);
    size_t am_len = auth_message(s, (const char *)in, f.without_proof_len, am);
    bool ok = scram_check_proof(&s->secret, am, am_len, f.proof, s->client_key);
    s->have_client_key = true;
    int rc = scram_server_signature(&s->secret, am, am_len, sig);
    int vlen = scram_b64_encode(sig, sizeof sig, v + 2, sizeof v - 2);
    if (!ok || !s->known || rc < 0 || vlen < 0)
        return finish(s, SASL_FAIL);
    s->state = ST_SCRAM_END;
    return challenge(s, v, 2 + (size_t)vlen);
}

/* After server-final the client has nothing more to say (RFC 5802 section 5). */
static sasl_status_t scram_end(sasl_t *s, size_t len)
{
    return finish(s, len == 0 ? SASL_OK : SASL_MALFORMED);
}

/* ---- public ---- */

const char *sasl_mechanisms(void)
{
    return "PLAIN LOGIN SCRAM-SHA-256";
}

/* A fake_key longer than the SHA-256 block is kept as its hash: HMAC does exactly that
 * itself (RFC 2104 section 2), so the fake salts stay the same. */
sasl_t *sasl_create(const char *mech, const unsigned char *fake_key, size_t fake_key_len)
{
    const struct mech_def *def = NULL;
    for (size_t i = 0; mech && i < sizeof mech_defs / sizeof mech_defs[0]; i++)
        if (strcasecmp(mech, mech_defs[i].name) == 0)
            def = &mech_defs[i];
    if (!def || (!fake_key && fake_key_len > 0))
        return NULL;
    sasl_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->mech = def->id;
    s->state = ST_START;
    if (fake_key_len > SASL_FAKE_KEY_MAX) {
        SHA256(fake_key, fake_key_len, s->fake_key);
        s->fake_key_len = SHA256_DIGEST_LENGTH;
    } else if (fake_key_len > 0) {
        memcpy(s->fake_key, fake_key, fake_key_len);
        s->fake_key_len = fake_key_len;
    }
    return s;
}

void sasl_destroy(sasl_t **s)
{
    if (!s || !*s)
        return;
    OPENSSL_cleanse(*s, sizeof **s);
    free(*s);
    *s = NULL;
}

void sasl_test_set_nonce(sasl_t *s, const char *server_nonce)
{
    if (!s)
        return;
    s->test_snonce[0] = '\0';
    if (server_nonce && nonce_valid(server_nonce, strnlen(server_nonce, SASL_SNONCE_MAX + 1),
                                    SASL_SNONCE_MAX))
        strcpy(s->test_snonce, server_nonce);
}

/* The first call: an initial response, or none (in_len 0). */
static sasl_status_t step_start(sasl_t *s, const unsigned char *in, size_t len)
{
    switch (s->mech) {
    case MECH_PLAIN:
        s->state = ST_PLAIN_WAIT;
        return len ? plain_message(s, in, len) : challenge(s, "", 0);
    case MECH_LOGIN:
        s->state = ST_LOGIN_USER;
        return len ? login_user(s, in, len) : challenge(s, "Username:", 9);
    case MECH_SCRAM:
        s->state = ST_SCRAM_FIRST;
        return len ? scram_first(s, in, len) : challenge(s, "", 0);
    }
    return finish(s, SASL_MALFORMED);
}

static sasl_status_t step_dispatch(sasl_t *s, const unsigned char *in, size_t len)
{
    if (len > SASL_IN_MAX)
        return finish(s, SASL_MALFORMED);
    switch (s->state) {
    case ST_START:
        return step_start(s, in, len);
    case ST_PLAIN_WAIT:
        return plain_message(s, in, len);
    case ST_LOGIN_USER:
        return login_user(s, in, len);
    case ST_LOGIN_PASS:
        return login_pass(s, in, len);
    case ST_SCRAM_FIRST:
        return scram_first(s, in, len);
    case ST_SCRAM_FINAL:
        return scram_final(s, in, len);
    case ST_SCRAM_END:
        return scram_end(s, len);
    case ST_DONE:
        return SASL_MALFORMED; /* keep the recorded outcome */
    default:
        return finish(s, SASL_MALFORMED); /* caller out of order */
    }
}

sasl_status_t sasl_step(sasl_t *s, const unsigned char *in, size_t in_len,
                        const unsigned char **out, size_t *out_len)
{
    set_out(out, out_len, NULL, 0);
    if (!s)
        return SASL_MALFORMED;
    static const unsigned char none[1];
    sasl_status_t st = step_dispatch(s, in ? in : none, in ? in_len : 0);
    if (st == SASL_CHALLENGE)
        set_out(out, out_len, s->out, s->out_len);
    return st;
}

/* A secret that cannot be used (corrupt row) is treated like no user at all. */
sasl_status_t sasl_set_secret(sasl_t *s, const scram_secret_t *secret, const unsigned char **out,
                              size_t *out_len)
{
    set_out(out, out_len, NULL, 0);
    if (!s || s->state == ST_DONE)
        return SASL_MALFORMED;
    if (s->state != ST_NEED_SECRET)
        return finish(s, SASL_MALFORMED); /* caller out of order */
    s->known = secret && secret->salt_len > 0 && secret->salt_len <= SCRAM_SALT_MAX &&
               secret->iterations >= SCRAM_MIN_ITERATIONS &&
               secret->iterations <= SCRAM_MAX_ITERATIONS;
    if (s->known)
        s->secret = *secret;
    else if (fake_secret(s, &s->secret) < 0)
        return finish(s, SASL_FAIL);
    if (s->mech != MECH_SCRAM) {
        s->state = ST_NEED_VERIFY;
        return SASL_NEED_VERIFY;
    }
    if (scram_server_first(s) < 0)
        return finish(s, SASL_FAIL);
    s->state = ST_SCRAM_FINAL;
    challenge(s, s->server_first, s->server_first_len);
    set_out(out, out_len, s->out, s->out_len);
    return SASL_CHALLENGE;
}

/* Thread-safe: reads and writes only *s. An unknown user costs the same PBKDF2 run. */
void sasl_verify(sasl_t *s)
{
    if (!s || s->state != ST_NEED_VERIFY)
        return;
    bool ok = scram_verify_password(&s->secret, s->pass, s->pass_len);
    s->verified = ok && s->known;
    s->state = ST_VERIFIED;
}

sasl_status_t sasl_verify_result(sasl_t *s)
{
    if (!s)
        return SASL_FAIL;
    if (s->state == ST_DONE)
        return s->result;
    return finish(s, s->state == ST_VERIFIED && s->verified ? SASL_OK : SASL_FAIL);
}

const char *sasl_username(const sasl_t *s)
{
    return s && s->user_len ? s->user : NULL;
}

const char *sasl_mech_name(const sasl_t *s)
{
    if (!s)
        return NULL;
    for (size_t i = 0; i < sizeof mech_defs / sizeof mech_defs[0]; i++)
        if (mech_defs[i].id == s->mech)
            return mech_defs[i].name;
    return NULL;
}

/* HMAC(key, user || 0x00 || credential): the password for PLAIN and LOGIN, the ClientKey
 * recovered from the proof for SCRAM (see sasl.h on what that means for a wrong proof). */
int sasl_attempt_digest(const sasl_t *s, const unsigned char *key, size_t key_len,
                        unsigned char out[32])
{
    if (!s || !out || s->state != ST_DONE || (s->result != SASL_OK && s->result != SASL_FAIL) ||
        !s->user_len)
        return -1;
    const void *cred = s->mech == MECH_SCRAM ? (const void *)s->client_key : s->pass;
    size_t cred_len = s->mech == MECH_SCRAM ? (s->have_client_key ? SCRAM_KEY_LEN : 0)
                                            : s->pass_len;
    if (cred_len == 0)
        return -1;
    unsigned char msg[SASL_FIELD_MAX + 1 + SASL_FIELD_MAX];
    memcpy(msg, s->user, s->user_len);
    msg[s->user_len] = 0x00;
    memcpy(msg + s->user_len + 1, cred, cred_len);
    int rc = scram_hmac(key, key_len, msg, s->user_len + 1 + cred_len, out);
    OPENSSL_cleanse(msg, sizeof msg);
    return rc;
}
