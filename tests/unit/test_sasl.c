/* Unit tests for lib/auth/scram.c and lib/auth/sasl.c: the RFC 7677 test vector, every mechanism's
 * good and bad paths, unknown users, attempt digests, and truncated or garbage input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "auth/sasl.h"
#include "auth/scram.h"

#define MSG(lit) (const unsigned char *)(lit), sizeof(lit) - 1

static const unsigned char fake_key[] = "unit-test-fake-key";

/* RFC 7677 section 3 */
#define V_USER "user"
#define V_PASS "pencil"
#define V_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define V_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define V_NONCE V_CNONCE V_SNONCE
#define V_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define V_FIRST "n,,n=" V_USER ",r=" V_CNONCE
#define V_SERVER_FIRST "r=" V_NONCE ",s=" V_SALT ",i=4096"
#define V_PROOF "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define V_FINAL "c=biws,r=" V_NONCE ",p=" V_PROOF
#define V_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* ---- helpers ---- */

/* snprintf that fails the test instead of truncating. */
__attribute__((format(printf, 3, 4))) static void fmt(char *buf, size_t len, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(buf, len, f, ap);
    va_end(ap);
    assert_in_range(n, 0, (int)len - 1);
}

/* The RFC 7677 secret: "pencil" under the vector's salt, 4096 iterations. */
static scram_secret_t pencil_secret(void)
{
    unsigned char salt[32];
    int n = scram_b64_decode(V_SALT, strlen(V_SALT), salt, sizeof salt);
    assert_int_equal(n, 16);
    scram_secret_t s;
    assert_int_equal(scram_secret_derive(V_PASS, 6, salt, (size_t)n, 4096, &s), 0);
    return s;
}

/* One client message; data NULL means "no initial response". */
struct msg {
    const unsigned char *data;
    size_t len;
};

/* Plays the client and the caller: feeds msgs in order on each challenge, looks up "user"
 * (any other name is unknown), runs the verification. Returns the final status, or
 * SASL_CHALLENGE if the client ran out of messages. */
static sasl_status_t drive(sasl_t *s, const struct msg *msgs, size_t n,
                           const scram_secret_t *secret)
{
    const unsigned char *out;
    size_t out_len;
    size_t i = 1;
    sasl_status_t st = sasl_step(s, msgs[0].data, msgs[0].len, &out, &out_len);
    for (;;) {
        switch (st) {
        case SASL_CHALLENGE:
            if (i == n)
                return st;
            st = sasl_step(s, msgs[i].data, msgs[i].len, &out, &out_len);
            i++;
            break;
        case SASL_NEED_SECRET: {
            const char *u = sasl_username(s);
            assert_non_null(u);
            st = sasl_set_secret(s, strcmp(u, V_USER) == 0 ? secret : NULL, &out, &out_len);
            break;
        }
        case SASL_NEED_VERIFY:
            sasl_verify(s);
            st = sasl_verify_result(s);
            break;
        default:
            return st;
        }
    }
}

static sasl_status_t drive_new(const char *mech, const struct msg *msgs, size_t n,
                               const scram_secret_t *secret, const char *snonce, sasl_t **s_r)
{
    sasl_t *s = sasl_create(mech, fake_key, sizeof fake_key - 1);
    assert_non_null(s);
    if (snonce)
        sasl_test_set_nonce(s, snonce);
    sasl_status_t st = drive(s, msgs, n, secret);
    if (s_r)
        *s_r = s;
    else
        sasl_destroy(&s);
    return st;
}

/* Minimal SCRAM client (RFC 5802 section 3): from server_first, builds the client-final
 * message for password into out, and the ServerSignature it expects as "v=..." into v_r. */
static void scram_client_final(const char *password, const char *gs2, const char *bare,
                               const char *server_first, char *out, size_t out_len,
                               char *v_r, size_t v_len)
{
    char nonce[512], salt_b64[128];
    unsigned iterations;
    assert_int_equal(sscanf(server_first, "r=%511[^,],s=%127[^,],i=%u", nonce, salt_b64,
                            &iterations), 3);
    unsigned char salt[64], salted[32], ck[32], sk[32], svk[32], sig[32], proof[32];
    int salt_len = scram_b64_decode(salt_b64, strlen(salt_b64), salt, sizeof salt);
    assert_true(salt_len > 0);
    assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, salt_len,
                                       (int)iterations, EVP_sha256(), 32, salted), 1);
    assert_int_equal(scram_hmac(salted, 32, "Client Key", 10, ck), 0);
    assert_int_equal(scram_hmac(salted, 32, "Server Key", 10, svk), 0);
    SHA256(ck, 32, sk);
    char cb[128], without[1024], am[4096], p64[64], v64[64];
    assert_true(scram_b64_encode((const unsigned char *)gs2, strlen(gs2), cb, sizeof cb) > 0);
    fmt(without, sizeof without, "c=%s,r=%s", cb, nonce);
    fmt(am, sizeof am, "%s,%s,%s", bare, server_first, without);
    assert_int_equal(scram_hmac(sk, 32, am, strlen(am), sig), 0);
    for (int i = 0; i < 32; i++)
        proof[i] = ck[i] ^ sig[i];
    assert_int_equal(scram_hmac(svk, 32, am, strlen(am), sig), 0);
    assert_true(scram_b64_encode(proof, 32, p64, sizeof p64) > 0);
    assert_true(scram_b64_encode(sig, 32, v64, sizeof v64) > 0);
    fmt(out, out_len, "%s,p=%s", without, p64);
    fmt(v_r, v_len, "v=%s", v64);
}

/* A full SCRAM exchange with the test client; only "user" has a secret. Returns the final
 * status; *s_r keeps the session for inspection. server_first_r (may be NULL) receives the
 * server-first message. */
static sasl_status_t scram_login(const char *gs2, const char *user, const char *password,
                                 const scram_secret_t *secret, const char *snonce,
                                 sasl_t **s_r, char *server_first_r)
{
    char first[512], bare[512], final[1024], v[128], sf[512];
    fmt(bare, sizeof bare, "n=%s,r=%s", user, V_CNONCE);
    fmt(first, sizeof first, "%s%s", gs2, bare);
    sasl_t *s = sasl_create("SCRAM-SHA-256", fake_key, sizeof fake_key - 1);
    assert_non_null(s);
    *s_r = s;
    if (snonce)
        sasl_test_set_nonce(s, snonce);
    const unsigned char *out;
    size_t out_len;
    sasl_status_t st = sasl_step(s, (const unsigned char *)first, strlen(first), &out, &out_len);
    if (st != SASL_NEED_SECRET)
        return st;
    st = sasl_set_secret(s, strcmp(sasl_username(s), V_USER) == 0 ? secret : NULL, &out,
                         &out_len);
    assert_int_equal(st, SASL_CHALLENGE);
    fmt(sf, sizeof sf, "%.*s", (int)out_len, (const char *)out);
    if (server_first_r)
        strcpy(server_first_r, sf);
    scram_client_final(password, gs2, bare, sf, final, sizeof final, v, sizeof v);
    st = sasl_step(s, (const unsigned char *)final, strlen(final), &out, &out_len);
    if (st != SASL_CHALLENGE)
        return st;
    assert_int_equal(out_len, strlen(v)); /* mutual authentication: the server knows the key */
    assert_memory_equal(out, v, out_len);
    return sasl_step(s, NULL, 0, &out, &out_len);
}

/* ---- scram.c ---- */

static void test_rfc7677_secret(void **state)
{
    (void)state;
    scram_secret_t s = pencil_secret(), back;
    assert_true(scram_verify_password(&s, V_PASS, 6));
    assert_false(scram_verify_password(&s, "pencil2", 7));
    assert_false(scram_verify_password(&s, "", 0));

    char text[SCRAM_SECRET_TEXT_MAX];
    assert_int_equal(scram_secret_encode(&s, text, sizeof text), 0);
    static const char head[] = "SCRAM-SHA-256$4096:" V_SALT "$";
    assert_int_equal(strncmp(text, head, sizeof head - 1), 0);
    assert_int_equal(scram_secret_decode(text, &back), 0);
    assert_memory_equal(&back.salt, &s.salt, s.salt_len);
    assert_int_equal(back.salt_len, s.salt_len);
    assert_int_equal(back.iterations, 4096);
    assert_memory_equal(back.stored_key, s.stored_key, SCRAM_KEY_LEN);
    assert_memory_equal(back.server_key, s.server_key, SCRAM_KEY_LEN);
    assert_true(scram_verify_password(&back, V_PASS, 6));
    assert_int_equal(scram_secret_encode(&s, text, 40), -1); /* too small */
}

static void test_secret_make(void **state)
{
    (void)state;
    scram_secret_t a, b;
    assert_int_equal(scram_secret_make("hunter2", 7, SCRAM_DEFAULT_ITERATIONS, &a), 0);
    assert_int_equal(scram_secret_make("hunter2", 7, SCRAM_DEFAULT_ITERATIONS, &b), 0);
    assert_int_equal(a.salt_len, 16);
    assert_memory_not_equal(a.salt, b.salt, 16); /* random salts */
    assert_true(scram_verify_password(&a, "hunter2", 7));
    assert_false(scram_verify_password(&a, "hunter3", 7));
    assert_int_equal(scram_secret_make("x", 1, 4095, &a), -1);
    assert_int_equal(scram_secret_make("x", 1, SCRAM_MAX_ITERATIONS + 1, &a), -1);
}

static void test_secret_decode_malformed(void **state)
{
    (void)state;
#define K32 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" /* 32 zero bytes */
    static const char *const bad[] = {
        "",
        "SCRAM-SHA-256$",
        "SCRAM-SHA-1$4096:" V_SALT "$" K32 ":" K32,
        "scram-sha-256$4096:" V_SALT "$" K32 ":" K32,
        "SCRAM-SHA-256$4095:" V_SALT "$" K32 ":" K32,           /* too few iterations */
        "SCRAM-SHA-256$10000001:" V_SALT "$" K32 ":" K32,       /* too many */
        "SCRAM-SHA-256$4294971392:" V_SALT "$" K32 ":" K32,     /* overflows 32 bits */
        "SCRAM-SHA-256$:" V_SALT "$" K32 ":" K32,
        "SCRAM-SHA-256$-4096:" V_SALT "$" K32 ":" K32,
        "SCRAM-SHA-256$4096" V_SALT "$" K32 ":" K32,
        "SCRAM-SHA-256$4096:$" K32 ":" K32,                     /* empty salt */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$" K32 ":" K32, /* bad length */
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7so EsUEjb6gQ==$" K32 ":" K32,
        "SCRAM-SHA-256$4096:W2=ZaJ0SNY7soEsUEjb6gQ==$" K32 ":" K32,
        "SCRAM-SHA-256$4096:Y===$" K32 ":" K32,
        "SCRAM-SHA-256$4096:" V_SALT "$" V_SALT ":" K32,        /* StoredKey 16 bytes */
        "SCRAM-SHA-256$4096:" V_SALT "$" K32 K32 ":" K32,        /* 64 bytes */
        "SCRAM-SHA-256$4096:" V_SALT "$" K32 ":" K32 "x",
        "SCRAM-SHA-256$4096:" V_SALT "$" K32 ":" K32 ":",
        "SCRAM-SHA-256$4096:" V_SALT "$" K32 ":" K32 "\n",
        "SCRAM-SHA-256$4096:" V_SALT "$" K32,
        "SCRAM-SHA-256$4096:" V_SALT "$" K32 ":",
        "SCRAM-SHA-256$4096:" V_SALT ":" K32 "$" K32,
        "SCRAM-SHA-256$4096:" V_SALT "$" K32 "$" K32,
    };
    scram_secret_t s;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (scram_secret_decode(bad[i], &s) != -1)
            fail_msg("case %zu decoded: \"%s\"", i, bad[i]);
    }
    assert_int_equal(scram_secret_decode(NULL, &s), -1);
    char long_text[SCRAM_SECRET_TEXT_MAX + 10];
    memset(long_text, 'A', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = '\0';
    assert_int_equal(scram_secret_decode(long_text, &s), -1);
    assert_int_equal(scram_secret_decode("SCRAM-SHA-256$4096:" V_SALT "$" K32 ":" K32, &s), 0);
    assert_int_equal(scram_secret_decode("SCRAM-SHA-256$10000000:" V_SALT "$" K32 ":" K32, &s),
                     0);
#undef K32
}

static void test_b64(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int want; /* byte count, or -1 */
    } cases[] = {
        { "", 0 },      { "YQ==", 1 },  { "YWI=", 2 },   { "YWJj", 3 },  { "YWJjZA==", 4 },
        { "Y===", -1 }, { "=YQ=", -1 }, { "YQ=", -1 },   { "YQ", -1 },   { " YQ==", -1 },
        { "YQ== ", -1 }, { "YQ==YQ==", -1 }, { "YW*j", -1 }, { "YWJ\n", -1 },
    };
    unsigned char out[8];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int n = scram_b64_decode(cases[i].text, strlen(cases[i].text), out, sizeof out);
        if (n != cases[i].want)
            fail_msg("\"%s\": got %d, want %d", cases[i].text, n, cases[i].want);
    }
    /* Exact fit works; one byte short fails without writing past out. */
    assert_int_equal(scram_b64_decode("YWI=", 4, out, 2), 2);
    assert_int_equal(scram_b64_decode("YWI=", 4, out, 1), -1);
    char enc[5];
    assert_int_equal(scram_b64_encode((const unsigned char *)"ab", 2, enc, sizeof enc), 4);
    assert_string_equal(enc, "YWI=");
    assert_int_equal(scram_b64_encode((const unsigned char *)"abcd", 4, enc, sizeof enc), -1);
}

/* ---- SCRAM-SHA-256 ---- */

/* RFC 7677 section 3, byte for byte. */
static void test_rfc7677_exchange(void **state)
{
    (void)state;
    scram_secret_t secret = pencil_secret();
    sasl_t *s = sasl_create("scram-sha-256", fake_key, sizeof fake_key - 1);
    assert_non_null(s);
    assert_string_equal(sasl_mech_name(s), "SCRAM-SHA-256");
    sasl_test_set_nonce(s, V_SNONCE);
    const unsigned char *out;
    size_t out_len;
    assert_null(sasl_username(s));
    assert_int_equal(sasl_step(s, MSG(V_FIRST), &out, &out_len), SASL_NEED_SECRET);
    assert_string_equal(sasl_username(s), V_USER);
    assert_int_equal(sasl_set_secret(s, &secret, &out, &out_len), SASL_CHALLENGE);
    assert_int_equal(out_len, strlen(V_SERVER_FIRST));
    assert_memory_equal(out, V_SERVER_FIRST, out_len);

    /* Our test client agrees with the RFC on the proof. */
    char final[512], v[128];
    scram_client_final(V_PASS, "n,,", "n=" V_USER ",r=" V_CNONCE, V_SERVER_FIRST, final,
                       sizeof final, v, sizeof v);
    assert_string_equal(final, V_FINAL);
    assert_string_equal(v, V_SERVER_FINAL);

    unsigned char digest[32];
    assert_int_equal(sasl_attempt_digest(s, fake_key, 4, digest), -1); /* not over yet */
    assert_int_equal(sasl_step(s, MSG(V_FINAL), &out, &out_len), SASL_CHALLENGE);
    assert_int_equal(out_len, strlen(V_SERVER_FINAL));
    assert_memory_equal(out, V_SERVER_FINAL, out_len);
    assert_int_equal(sasl_step(s, NULL, 0, &out, &out_len), SASL_OK);
    assert_null(out);
    assert_int_equal(sasl_attempt_digest(s, fake_key, 4, digest), 0);
    assert_int_equal(sasl_step(s, NULL, 0, &out, &out_len), SASL_MALFORMED); /* over */
    sasl_destroy(&s);
    assert_null(s);
}

static void test_scram_flows(void **state)
{
    (void)state;
    scram_secret_t secret = pencil_secret();
    static const struct {
        const char *gs2, *user, *pass;
        sasl_status_t want;
    } cases[] = {
        { "n,,", "user", "pencil", SASL_OK },
        { "y,,", "user", "pencil", SASL_OK },       /* c=eSws */
        { "n,a=user,", "user", "pencil", SASL_OK },
        { "n,a=USER,", "User", "pencil", SASL_OK }, /* names are lowercased */
        { "n,,", "user", "pencil2", SASL_FAIL },
        { "n,,", "user", "", SASL_FAIL },
        { "n,,", "ghost", "pencil", SASL_FAIL },    /* unknown user */
        { "n,a=admin,", "user", "pencil", SASL_FAIL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sasl_t *s;
        sasl_status_t st =
            scram_login(cases[i].gs2, cases[i].user, cases[i].pass, &secret, NULL, &s, NULL);
        if (st != cases[i].want)
            fail_msg("case %zu: got %d, want %d", i, st, cases[i].want);
        sasl_destroy(&s);
    }
}

/* RFC 5802 section 5.1: ',' and '=' in names travel as "=2C" and "=3D". */
static void test_scram_saslname(void **state)
{
    (void)state;
    static const struct {
        const char *encoded, *decoded; /* decoded NULL: malformed */
    } cases[] = {
        { "a=2Cb=3Dc", "a,b=c" }, { "=2c=3d", ",=" }, { "A=3D", "a=" },
        { "a=2", NULL },          { "a=", NULL },     { "a=4142", NULL }, { "=", NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char first[128];
        fmt(first, sizeof first, "n,,n=%s,r=abc", cases[i].encoded);
        sasl_t *s = sasl_create("SCRAM-SHA-256", NULL, 0);
        sasl_status_t st = sasl_step(s, (const unsigned char *)first, strlen(first), NULL, NULL);
        if (cases[i].decoded) {
            assert_int_equal(st, SASL_NEED_SECRET);
            assert_string_equal(sasl_username(s), cases[i].decoded);
        } else if (st != SASL_MALFORMED) {
            fail_msg("\"%s\": got %d", cases[i].encoded, st);
        }
        sasl_destroy(&s);
    }
}

static void test_scram_first_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *msg;
        sasl_status_t want;
    } cases[] = {
        { V_FIRST, SASL_NEED_SECRET },
        { V_FIRST ",x=ext", SASL_NEED_SECRET },
        { "p=tls-unique,,n=user,r=abc", SASL_MALFORMED }, /* no -PLUS offered */
        { "p,,n=user,r=abc", SASL_MALFORMED },
        { "x,,n=user,r=abc", SASL_MALFORMED },
        { "n,n=user,r=abc", SASL_MALFORMED },
        { "n,,m=ext,n=user,r=abc", SASL_MALFORMED },
        { "n,,r=abc,n=user", SASL_MALFORMED },
        { "n,,n=user", SASL_MALFORMED },
        { "n,,n=user,", SASL_MALFORMED },
        { "n,,n=user,r=", SASL_MALFORMED },
        { "n,,n=user,r=abc,", SASL_MALFORMED },
        { "n,,n=user,r=abc,=x", SASL_MALFORMED },
        { "n,,n=user,r=abc,x=", SASL_MALFORMED },
        { "n,,n=user,r=ab c", SASL_MALFORMED },
        { "n,,n=,r=abc", SASL_MALFORMED },
        { "n,,n=us\ter,r=abc", SASL_MALFORMED },
        { "n,b=user,n=user,r=abc", SASL_MALFORMED },
        { "n,a=,n=user,r=abc", SASL_MALFORMED },
        { "n,a=other,n=user,r=abc", SASL_FAIL },
        { "n,,", SASL_MALFORMED },
        { "n,", SASL_MALFORMED },
        { "n", SASL_MALFORMED },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sasl_t *s = sasl_create("SCRAM-SHA-256", fake_key, sizeof fake_key - 1);
        /* Once as an initial response, once after the empty challenge. */
        const unsigned char *m = (const unsigned char *)cases[i].msg;
        sasl_status_t st = sasl_step(s, m, strlen(cases[i].msg), NULL, NULL);
        if (st != cases[i].want)
            fail_msg("initial \"%s\": got %d, want %d", cases[i].msg, st, cases[i].want);
        sasl_destroy(&s);
        s = sasl_create("SCRAM-SHA-256", fake_key, sizeof fake_key - 1);
        assert_int_equal(sasl_step(s, NULL, 0, NULL, NULL), SASL_CHALLENGE);
        st = sasl_step(s, m, strlen(cases[i].msg), NULL, NULL);
        if (st != cases[i].want)
            fail_msg("reply \"%s\": got %d, want %d", cases[i].msg, st, cases[i].want);
        sasl_destroy(&s);
    }
}

static void test_scram_final_malformed(void **state)
{
    (void)state;
    scram_secret_t secret = pencil_secret();
#define FLIPPED "eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    static const struct {
        const char *msg;
        sasl_status_t want;
    } cases[] = {
        { V_FINAL, SASL_CHALLENGE },
        { "c=eSws,r=" V_NONCE ",p=" V_PROOF, SASL_MALFORMED }, /* "y,," but we got "n,," */
        { "c=biwsbiws,r=" V_NONCE ",p=" V_PROOF, SASL_MALFORMED },
        { "c=bi,r=" V_NONCE ",p=" V_PROOF, SASL_MALFORMED },
        { "c=biws,r=" V_CNONCE ",p=" V_PROOF, SASL_MALFORMED },  /* client nonce only */
        { "c=biws,r=" V_NONCE "x,p=" V_PROOF, SASL_MALFORMED },
        { "c=biws,r=" V_NONCE, SASL_MALFORMED },
        { "c=biws,r=" V_NONCE ",p=dHzb", SASL_MALFORMED },
        { "c=biws,r=" V_NONCE ",p=" V_PROOF ",", SASL_MALFORMED },
        { "c=biws,r=" V_NONCE ",p=" V_PROOF ",x=y", SASL_MALFORMED },
        { "c=biws,p=" V_PROOF ",r=" V_NONCE, SASL_MALFORMED },
        { "r=" V_NONCE ",c=biws,p=" V_PROOF, SASL_MALFORMED },
        { "c=biws,r=" V_NONCE ",x=ext,p=" V_PROOF, SASL_FAIL }, /* ext changes AuthMessage */
        { "c=biws,r=" V_NONCE ",p=" FLIPPED, SASL_FAIL },
        { ",", SASL_MALFORMED },
        { "", SASL_MALFORMED },
    };
#undef FLIPPED
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sasl_t *s = sasl_create("SCRAM-SHA-256", fake_key, sizeof fake_key - 1);
        sasl_test_set_nonce(s, V_SNONCE);
        assert_int_equal(sasl_step(s, MSG(V_FIRST), NULL, NULL), SASL_NEED_SECRET);
        assert_int_equal(sasl_set_secret(s, &secret, NULL, NULL), SASL_CHALLENGE);
        sasl_status_t st = sasl_step(s, (const unsigned char *)cases[i].msg,
                                     strlen(cases[i].msg), NULL, NULL);
        if (st != cases[i].want)
            fail_msg("\"%s\": got %d, want %d", cases[i].msg, st, cases[i].want);
        if (st == SASL_CHALLENGE) /* anything but the empty reply after server-final */
            assert_int_equal(sasl_step(s, MSG("x"), NULL, NULL), SASL_MALFORMED);
        sasl_destroy(&s);
    }
}

/* An unknown user sees a salt that is stable per name and fake_key, and the default count. */
static void test_scram_unknown_user(void **state)
{
    (void)state;
    char sf1[512], sf2[512], sf3[512], want[128], salt_b64[64];
    sasl_t *s;
    assert_int_equal(scram_login("n,,", "ghost", "pw", NULL, NULL, &s, sf1), SASL_FAIL);
    assert_string_equal(sasl_username(s), "ghost");
    sasl_destroy(&s);
    assert_int_equal(scram_login("n,,", "Ghost", "pw2", NULL, NULL, &s, sf2), SASL_FAIL);
    sasl_destroy(&s);
    assert_int_equal(scram_login("n,,", "ghost2", "pw", NULL, NULL, &s, sf3), SASL_FAIL);
    sasl_destroy(&s);

    unsigned char mac[32];
    assert_int_equal(scram_hmac(fake_key, sizeof fake_key - 1, "ghost", 5, mac), 0);
    assert_true(scram_b64_encode(mac, 16, salt_b64, sizeof salt_b64) > 0);
    fmt(want, sizeof want, ",s=%s,i=%d", salt_b64, SCRAM_DEFAULT_ITERATIONS);
    assert_non_null(strstr(sf1, want));
    assert_non_null(strstr(sf2, want));
    assert_null(strstr(sf3, want));

    /* A fake_key longer than a SHA-256 block gives the same salts as its hash would. */
    unsigned char long_key[100], hashed[32];
    memset(long_key, 'k', sizeof long_key);
    SHA256(long_key, sizeof long_key, hashed);
    sasl_t *a = sasl_create("SCRAM-SHA-256", long_key, sizeof long_key);
    sasl_t *b = sasl_create("SCRAM-SHA-256", hashed, sizeof hashed);
    const unsigned char *oa, *ob;
    size_t la, lb;
    assert_int_equal(sasl_step(a, MSG("n,,n=ghost,r=abc"), NULL, NULL), SASL_NEED_SECRET);
    assert_int_equal(sasl_step(b, MSG("n,,n=ghost,r=abc"), NULL, NULL), SASL_NEED_SECRET);
    assert_int_equal(sasl_set_secret(a, NULL, &oa, &la), SASL_CHALLENGE);
    assert_int_equal(sasl_set_secret(b, NULL, &ob, &lb), SASL_CHALLENGE);
    assert_non_null(memmem(oa, la, ",s=", 3));
    assert_memory_equal(memmem(oa, la, ",s=", 3), memmem(ob, lb, ",s=", 3), 30);
    sasl_destroy(&a);
    sasl_destroy(&b);
}

/* Two random server nonces never repeat and both carry the client's nonce first. */
static void test_scram_nonce(void **state)
{
    (void)state;
    scram_secret_t secret = pencil_secret();
    char sf[2][512];
    for (int i = 0; i < 2; i++) {
        sasl_t *s;
        assert_int_equal(scram_login("n,,", "user", "pencil", &secret, NULL, &s, sf[i]),
                         SASL_OK);
        assert_int_equal(strncmp(sf[i], "r=" V_CNONCE, 2 + strlen(V_CNONCE)), 0);
        assert_int_equal(strcspn(sf[i], ","), 2 + strlen(V_CNONCE) + 32); /* 24 bytes b64 */
        sasl_destroy(&s);
    }
    assert_string_not_equal(sf[0], sf[1]);
}

/* ---- PLAIN ---- */

struct plain_case {
    const char *name;
    const unsigned char *msg;
    size_t len;
    sasl_status_t want;
    const char *want_user; /* NULL: not checked */
};

static void test_plain(void **state)
{
    (void)state;
    scram_secret_t secret = pencil_secret();
    static const struct plain_case cases[] = {
        { "good", MSG("\0user\0pencil"), SASL_OK, "user" },
        { "authzid = authcid", MSG("user\0user\0pencil"), SASL_OK, "user" },
        { "upper case", MSG("USER\0User\0pencil"), SASL_OK, "user" },
        { "wrong password", MSG("\0user\0pencil2"), SASL_FAIL, "user" },
        { "password case", MSG("\0user\0PENCIL"), SASL_FAIL, NULL },
        { "unknown user", MSG("\0ghost\0pencil"), SASL_FAIL, "ghost" },
        { "authzid mismatch", MSG("admin\0user\0pencil"), SASL_FAIL, "user" },
        { "empty authcid", MSG("\0\0pencil"), SASL_MALFORMED, NULL },
        { "empty password", MSG("\0user\0"), SASL_MALFORMED, NULL },
        { "no NUL", MSG("userpencil"), SASL_MALFORMED, NULL },
        { "one NUL", MSG("user\0pencil"), SASL_MALFORMED, NULL },
        { "NUL in password", MSG("\0user\0pen\0cil"), SASL_MALFORMED, NULL },
        { "control in name", MSG("\0us\ter\0pencil"), SASL_MALFORMED, NULL },
        { "only NULs", MSG("\0\0"), SASL_MALFORMED, NULL },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct plain_case *c = &cases[i];
        /* Once as an initial response, once after the empty challenge. */
        struct msg initial[] = { { c->msg, c->len } };
        struct msg reply[] = { { NULL, 0 }, { c->msg, c->len } };
        for (int round = 0; round < 2; round++) {
            sasl_t *s;
            sasl_status_t st = round == 0 ? drive_new("PLAIN", initial, 1, &secret, NULL, &s)
                                          : drive_new("plain", reply, 2, &secret, NULL, &s);
            if (st != c->want)
                fail_msg("%s (round %d): got %d, want %d", c->name, round, st, c->want);
            if (c->want_user)
                assert_string_equal(sasl_username(s), c->want_user);
            sasl_destroy(&s);
        }
    }
}

/* RFC 4616 section 2: each field at most 255 bytes. */
static void test_plain_lengths(void **state)
{
    (void)state;
    unsigned char msg[1024];
    static const struct {
        size_t authz, authc, pass;
        sasl_status_t want;
    } cases[] = {
        { 0, 255, 255, SASL_FAIL },     { 255, 255, 1, SASL_FAIL },
        { 256, 4, 4, SASL_MALFORMED },  { 0, 256, 4, SASL_MALFORMED },
        { 0, 4, 256, SASL_MALFORMED },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = 0;
        memset(msg + n, 'a', cases[i].authz), n += cases[i].authz;
        msg[n++] = 0;
        memset(msg + n, 'a', cases[i].authc), n += cases[i].authc;
        msg[n++] = 0;
        memset(msg + n, 'p', cases[i].pass), n += cases[i].pass;
        struct msg m[] = { { msg, n } };
        sasl_status_t st = drive_new("PLAIN", m, 1, NULL, NULL, NULL);
        if (st != cases[i].want)
            fail_msg("case %zu: got %d, want %d", i, st, cases[i].want);
    }
}

/* ---- LOGIN ---- */

static void test_login(void **state)
{
    (void)state;
    scram_secret_t secret = pencil_secret();
    const unsigned char *out;
    size_t out_len;

    sasl_t *s = sasl_create("LOGIN", fake_key, sizeof fake_key - 1);
    assert_string_equal(sasl_mech_name(s), "LOGIN");
    assert_int_equal(sasl_step(s, NULL, 0, &out, &out_len), SASL_CHALLENGE);
    assert_int_equal(out_len, 9);
    assert_memory_equal(out, "Username:", 9);
    assert_int_equal(sasl_step(s, MSG("User"), &out, &out_len), SASL_CHALLENGE);
    assert_memory_equal(out, "Password:", 9);
    assert_int_equal(sasl_step(s, MSG("pencil"), &out, &out_len), SASL_NEED_SECRET);
    assert_string_equal(sasl_username(s), "user");
    assert_int_equal(sasl_set_secret(s, &secret, &out, &out_len), SASL_NEED_VERIFY);
    sasl_verify(s);
    assert_int_equal(sasl_verify_result(s), SASL_OK);
    assert_int_equal(sasl_verify_result(s), SASL_OK); /* stable */
    sasl_destroy(&s);

    static const struct {
        struct msg msgs[3];
        size_t n;
        sasl_status_t want;
    } cases[] = {
        { { { MSG("user") }, { MSG("pencil") } }, 2, SASL_OK },        /* initial = name */
        { { { NULL, 0 }, { MSG("user") }, { MSG("pencil") } }, 3, SASL_OK },
        { { { NULL, 0 }, { MSG("user") }, { MSG("pencil2") } }, 3, SASL_FAIL },
        { { { NULL, 0 }, { MSG("ghost") }, { MSG("pencil") } }, 3, SASL_FAIL },
        { { { NULL, 0 }, { MSG("") }, { MSG("pencil") } }, 3, SASL_MALFORMED },
        { { { NULL, 0 }, { MSG("user") }, { MSG("") } }, 3, SASL_MALFORMED },
        { { { NULL, 0 }, { MSG("us\0er") }, { MSG("pencil") } }, 3, SASL_MALFORMED },
        { { { NULL, 0 }, { MSG("user") }, { MSG("pen\0cil") } }, 3, SASL_MALFORMED },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sasl_status_t st = drive_new("login", cases[i].msgs, cases[i].n, &secret, NULL, NULL);
        if (st != cases[i].want)
            fail_msg("case %zu: got %d, want %d", i, st, cases[i].want);
    }
}

/* ---- attempt digests ---- */

static void plain_digest(const char *user, const char *pass, const scram_secret_t *secret,
                         unsigned char out[32])
{
    unsigned char msg[128];
    size_t n = 0;
    msg[n++] = 0;
    memcpy(msg + n, user, strlen(user)), n += strlen(user);
    msg[n++] = 0;
    memcpy(msg + n, pass, strlen(pass)), n += strlen(pass);
    struct msg m[] = { { msg, n } };
    sasl_t *s;
    sasl_status_t st = drive_new("PLAIN", m, 1, secret, NULL, &s);
    assert_true(st == SASL_OK || st == SASL_FAIL);
    assert_int_equal(sasl_attempt_digest(s, MSG("digest-key"), out), 0);
    sasl_destroy(&s);
}

/* SCRAM with fixed nonces so that the AuthMessage repeats; see sasl.h on why. */
static void scram_digest(const char *user, const char *pass, const scram_secret_t *secret,
                         const char *snonce, unsigned char out[32])
{
    sasl_t *s;
    sasl_status_t st = scram_login("n,,", user, pass, secret, snonce, &s, NULL);
    assert_true(st == SASL_OK || st == SASL_FAIL);
    assert_int_equal(sasl_attempt_digest(s, MSG("digest-key"), out), 0);
    sasl_destroy(&s);
}

static void test_attempt_digest(void **state)
{
    (void)state;
    scram_secret_t secret = pencil_secret();
    unsigned char a[32], b[32], c[32], d[32];

    plain_digest("user", "wrong1", &secret, a);
    plain_digest("USER", "wrong1", &secret, b);
    plain_digest("user", "wrong2", &secret, c);
    plain_digest("ghost", "wrong1", NULL, d);
    assert_memory_equal(a, b, 32);
    assert_memory_not_equal(a, c, 32);
    assert_memory_not_equal(a, d, 32);

    scram_digest("user", "wrong1", &secret, V_SNONCE, a);
    scram_digest("user", "wrong1", &secret, V_SNONCE, b);
    scram_digest("user", "wrong2", &secret, V_SNONCE, c);
    assert_memory_equal(a, b, 32);
    assert_memory_not_equal(a, c, 32);
    scram_digest("ghost", "wrong1", NULL, V_SNONCE, a); /* unknown user, same rule */
    scram_digest("ghost", "wrong1", NULL, V_SNONCE, b);
    scram_digest("ghost", "wrong2", NULL, V_SNONCE, c);
    assert_memory_equal(a, b, 32);
    assert_memory_not_equal(a, c, 32);
    /* The right password is recovered exactly, whatever the nonces. */
    scram_digest("user", "pencil", &secret, NULL, a);
    scram_digest("user", "pencil", &secret, NULL, b);
    assert_memory_equal(a, b, 32);

    /* Not available before the end or after a malformed exchange. */
    sasl_t *s = sasl_create("PLAIN", NULL, 0);
    assert_int_equal(sasl_attempt_digest(s, MSG("k"), a), -1);
    assert_int_equal(sasl_step(s, MSG("\0user\0"), NULL, NULL), SASL_MALFORMED);
    assert_int_equal(sasl_attempt_digest(s, MSG("k"), a), -1);
    sasl_destroy(&s);
    assert_int_equal(sasl_attempt_digest(NULL, MSG("k"), a), -1);
}

/* ---- robustness ---- */

static void test_api_edges(void **state)
{
    (void)state;
    sasl_t *null_ptr = NULL;
    sasl_destroy(NULL);
    sasl_destroy(&null_ptr);
    assert_null(sasl_create("CRAM-MD5", NULL, 0));
    assert_null(sasl_create("SCRAM-SHA-256-PLUS", NULL, 0));
    assert_null(sasl_create(NULL, NULL, 0));
    assert_null(sasl_create("PLAIN", NULL, 5));
    assert_string_equal(sasl_mechanisms(), "PLAIN LOGIN SCRAM-SHA-256");
    assert_int_equal(sasl_step(NULL, NULL, 0, NULL, NULL), SASL_MALFORMED);
    sasl_verify(NULL);

    /* Calls out of order end the exchange instead of misbehaving. */
    sasl_t *s = sasl_create("PLAIN", NULL, 0);
    assert_int_equal(sasl_set_secret(s, NULL, NULL, NULL), SASL_MALFORMED);
    sasl_destroy(&s);
    s = sasl_create("PLAIN", NULL, 0);
    assert_int_equal(sasl_step(s, MSG("\0user\0pencil"), NULL, NULL), SASL_NEED_SECRET);
    assert_int_equal(sasl_step(s, MSG("x"), NULL, NULL), SASL_MALFORMED);
    sasl_destroy(&s);
    s = sasl_create("PLAIN", NULL, 0);
    assert_int_equal(sasl_step(s, MSG("\0user\0pencil"), NULL, NULL), SASL_NEED_SECRET);
    assert_int_equal(sasl_set_secret(s, NULL, NULL, NULL), SASL_NEED_VERIFY);
    assert_int_equal(sasl_verify_result(s), SASL_FAIL); /* verify never ran */
    sasl_destroy(&s);

    /* A corrupt secret counts as no user. */
    scram_secret_t bad = pencil_secret();
    bad.iterations = 1;
    struct msg m[] = { { MSG("\0user\0pencil") } };
    assert_int_equal(drive_new("PLAIN", m, 1, &bad, NULL, NULL), SASL_FAIL);
}

/* Oversized input is refused at every step of every mechanism. */
static void test_oversize(void **state)
{
    (void)state;
    static unsigned char big[4096];
    memset(big, 'a', sizeof big);
    static const char *const mechs[] = { "PLAIN", "LOGIN", "SCRAM-SHA-256" };
    for (size_t i = 0; i < 3; i++) {
        struct msg first[] = { { big, sizeof big } };
        assert_int_equal(drive_new(mechs[i], first, 1, NULL, NULL, NULL), SASL_MALFORMED);
        struct msg later[] = { { NULL, 0 }, { big, sizeof big } };
        assert_int_equal(drive_new(mechs[i], later, 2, NULL, NULL, NULL), SASL_MALFORMED);
    }
}

struct script {
    const char *mech;
    struct msg msgs[3];
    size_t n;
};

static const struct script scripts[] = {
    { "PLAIN", { { MSG("\0user\0pencil") } }, 1 },
    { "PLAIN", { { NULL, 0 }, { MSG("user\0user\0pencil") } }, 2 },
    { "LOGIN", { { NULL, 0 }, { MSG("user") }, { MSG("pencil") } }, 3 },
    { "SCRAM-SHA-256", { { MSG(V_FIRST) }, { MSG(V_FINAL) }, { NULL, 0 } }, 3 },
    { "SCRAM-SHA-256", { { MSG("y,,n=user,r=" V_CNONCE) }, { MSG(V_FINAL) } }, 2 },
};

/* Each script succeeds as written; every truncation or one-byte change of any message must
 * end in SASL_FAIL or SASL_MALFORMED (ASan/UBSan watch the rest). */
static void test_truncated_and_mutated(void **state)
{
    (void)state;
    scram_secret_t secret = pencil_secret();
    static const unsigned char subst[] = { 0x00, ',', '=', 0xff, 'A' };
    for (size_t k = 0; k < sizeof scripts / sizeof scripts[0]; k++) {
        const struct script *sc = &scripts[k];
        sasl_status_t st = drive_new(sc->mech, sc->msgs, sc->n, &secret, V_SNONCE, NULL);
        assert_int_equal(st, k == 4 ? SASL_MALFORMED : SASL_OK); /* 4: c=biws after "y,," */
        for (size_t m = 0; m < sc->n; m++) {
            size_t len = sc->msgs[m].len;
            unsigned char buf[256];
            if (!sc->msgs[m].data)
                continue;
            struct msg msgs[3];
            memcpy(msgs, sc->msgs, sizeof msgs);
            msgs[m].data = buf;
            memcpy(buf, sc->msgs[m].data, len);
            for (size_t cut = 0; cut < len; cut++) {
                msgs[m].len = cut;
                st = drive_new(sc->mech, msgs, sc->n, &secret, V_SNONCE, NULL);
                if (m == 0 && cut == 0 && st == SASL_CHALLENGE)
                    continue; /* empty = no initial response: PLAIN still waits */
                if (st != SASL_FAIL && st != SASL_MALFORMED)
                    fail_msg("%s msg %zu cut at %zu: got %d", sc->mech, m, cut, st);
            }
            msgs[m].len = len;
            for (size_t pos = 0; pos < len; pos++) {
                for (size_t j = 0; j < sizeof subst; j++) {
                    if (sc->msgs[m].data[pos] == subst[j])
                        continue;
                    buf[pos] = subst[j];
                    st = drive_new(sc->mech, msgs, sc->n, &secret, V_SNONCE, NULL);
                    if (st != SASL_FAIL && st != SASL_MALFORMED)
                        fail_msg("%s msg %zu byte %zu -> %02x: got %d", sc->mech, m, pos,
                                 subst[j], st);
                }
                buf[pos] = sc->msgs[m].data[pos];
            }
        }
    }
}

static uint32_t xorshift(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* Random messages, half of them made of the characters the parsers care about. */
static void test_garbage(void **state)
{
    (void)state;
    static const char alphabet[] = "nypacrmsiv=,2C3D biwsAB+/\xff";
    static const char *const mechs[] = { "PLAIN", "LOGIN", "SCRAM-SHA-256" };
    uint32_t rng = 0x2545f491;
    unsigned char buf[3][600];
    for (int round = 0; round < 600; round++) {
        struct msg msgs[3];
        for (int m = 0; m < 3; m++) {
            size_t len = xorshift(&rng) % (round % 7 == 0 ? sizeof buf[m] : 40);
            for (size_t i = 0; i < len; i++) {
                uint32_t r = xorshift(&rng);
                buf[m][i] = (round & 1) ? (unsigned char)r
                                        : (unsigned char)alphabet[r % (sizeof alphabet)];
            }
            msgs[m] = (struct msg){ buf[m], len };
        }
        sasl_status_t st = drive_new(mechs[round % 3], msgs, 3, NULL, NULL, NULL);
        if (st != SASL_FAIL && st != SASL_MALFORMED)
            fail_msg("round %d (%s): got %d", round, mechs[round % 3], st);
    }
}

/* sasl_verify() runs on worker threads, one session each. */
static void *verify_thread(void *arg)
{
    sasl_verify(arg);
    return NULL;
}

static void test_verify_threads(void **state)
{
    (void)state;
    scram_secret_t secret = pencil_secret();
    sasl_t *s[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        s[i] = sasl_create("PLAIN", fake_key, sizeof fake_key - 1);
        const unsigned char *m = (const unsigned char *)(i % 2 ? "\0user\0pencil" : "\0user\0nope");
        size_t len = i % 2 ? 12 : 10;
        assert_int_equal(sasl_step(s[i], m, len, NULL, NULL), SASL_NEED_SECRET);
        assert_int_equal(sasl_set_secret(s[i], i < 2 ? &secret : NULL, NULL, NULL),
                         SASL_NEED_VERIFY);
        assert_int_equal(pthread_create(&t[i], NULL, verify_thread, s[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(sasl_verify_result(s[i]), i == 1 ? SASL_OK : SASL_FAIL);
        sasl_destroy(&s[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7677_secret),
        cmocka_unit_test(test_secret_make),
        cmocka_unit_test(test_secret_decode_malformed),
        cmocka_unit_test(test_b64),
        cmocka_unit_test(test_rfc7677_exchange),
        cmocka_unit_test(test_scram_flows),
        cmocka_unit_test(test_scram_saslname),
        cmocka_unit_test(test_scram_first_malformed),
        cmocka_unit_test(test_scram_final_malformed),
        cmocka_unit_test(test_scram_unknown_user),
        cmocka_unit_test(test_scram_nonce),
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_plain_lengths),
        cmocka_unit_test(test_login),
        cmocka_unit_test(test_attempt_digest),
        cmocka_unit_test(test_api_edges),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_truncated_and_mutated),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_verify_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
