#include "svc/fe_auth.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "auth/sasl.h"
#include "base/log.h"
#include "bus/events.h"

#define FE_AUTH_SECRET_KEY "internal.secret"

struct fe_auth {
    fe_session_t *session;
    const fe_auth_ops_t *ops;
    sasl_t *sasl;
    uv_work_t work;
    char label[32];
    fe_auth_result_t result;
    lim_verdict_t block; /* why and until when, for FE_AUTH_BLOCKED */
};

static void auth_status(fe_auth_t *a, sasl_status_t st, const unsigned char *out, size_t out_len);
static void auth_check_cb(void *arg, const lim_verdict_t *v);
static void secret_cb(void *arg, PGresult *res);
static void auth_line(fe_session_t *s, char *line, size_t len, unsigned flags);
static void auth_release(fe_session_t *s);

/* The exchange takes the session's input lines until it finishes. */
static const fe_input_hook_t fe_auth_hook = { auth_line, auth_release };

int fe_base64_decode(const char *text, size_t len, buf_t *out)
{
    buf_reset(out);
    unsigned char *tmp = malloc(len / 4 * 3 + 1);
    if (!tmp)
        return -1;
    int n = scram_b64_decode(text, len, tmp, len / 4 * 3 + 1);
    int rc = n < 0 ? -1 : buf_append(out, tmp, (size_t)n);
    free(tmp);
    return rc;
}

int fe_base64_encode(const unsigned char *data, size_t len, buf_t *out)
{
    buf_reset(out);
    size_t cap = 4 * ((len + 2) / 3) + 1;
    char *tmp = malloc(cap);
    if (!tmp)
        return -1;
    int n = scram_b64_encode(data, len, tmp, cap);
    int rc = n < 0 ? -1 : buf_append(out, tmp, (size_t)n);
    free(tmp);
    return rc;
}

static const unsigned char *auth_key(fe_session_t *s, size_t *len_r)
{
    const char *k = config_get(s->srv->cfg, FE_AUTH_SECRET_KEY);
    if (k && *k) {
        *len_r = strlen(k);
        return (const unsigned char *)k;
    }
    *len_r = sizeof s->srv->secret;
    return s->srv->secret;
}

static Postern__AuthResult event_result(fe_auth_result_t r)
{
    switch (r) {
    case FE_AUTH_OK: return POSTERN__AUTH_RESULT__AUTH_OK;
    case FE_AUTH_FAIL: return POSTERN__AUTH_RESULT__AUTH_BAD_CREDENTIALS;
    case FE_AUTH_TEMP: return POSTERN__AUTH_RESULT__AUTH_TEMP_FAILURE;
    case FE_AUTH_ABORTED: return POSTERN__AUTH_RESULT__AUTH_ABORTED;
    case FE_AUTH_MALFORMED: return POSTERN__AUTH_RESULT__AUTH_MALFORMED;
    case FE_AUTH_BLOCKED: return POSTERN__AUTH_RESULT__AUTH_TEMP_FAILURE;
    }
    return POSTERN__AUTH_RESULT__AUTH_RESULT_UNSPECIFIED;
}

static const char *result_name(fe_auth_result_t r)
{
    static const char *const names[] = { "ok", "bad-credentials", "temporary-failure",
                                         "aborted", "malformed", "blocked" };
    return names[r];
}

static void auth_publish(fe_auth_t *a)
{
    fe_session_t *s = a->session;
    const char *user = sasl_username(a->sasl);
    unsigned char digest[32];
    size_t klen;
    const unsigned char *key = auth_key(s, &klen);
    ev_auth_t ev = {
        .service = s->srv->proto->service,
        .user = user ? user : "",
        .client_addr = s->peer,
        .mechanism = a->label,
        .tls = fe_session_tls(s),
        .result = event_result(a->result),
        .instance = s->srv->instance,
    };
    if (a->result == FE_AUTH_FAIL && sasl_attempt_digest(a->sasl, key, klen, digest) == 0) {
        ev.attempt_digest = digest;
        ev.attempt_digest_len = sizeof digest;
    }
    if (a->result != FE_AUTH_BLOCKED && ev_publish_auth(s->srv->bus, &ev) < 0)
        log_warn("auth event not published", "session=%lu", s->id);
    char labels[96];
    snprintf(labels, sizeof labels, "mechanism=\"%s\",result=\"%s\"", a->label,
             result_name(a->result));
    metrics_add(s->srv->metrics, "postern_auth_total", "Authentication outcomes", labels, 1);
    log_msg(a->result == FE_AUTH_OK ? LOG_INFO : LOG_WARN, "authentication",
            "session=%lu client=%s user=\"%s\" mechanism=%s tls=%s result=%s", s->id, s->peer,
            user ? user : "", a->label, ev.tls ? "yes" : "no", result_name(a->result));
}

static void auth_complete(fe_session_t *s)
{
    fe_auth_t *a = s->auth;
    fe_auth_result_t r = a->result;
    const fe_auth_ops_t *ops = a->ops;
    lim_verdict_t block = a->block;
    if (r == FE_AUTH_OK) {
        free(s->user);
        s->user = strdup(sasl_username(a->sasl));
        if (!s->user)
            r = FE_AUTH_TEMP;
    }
    auth_release(s);
    /* done() may start a wait of its own (pop3d opens the maildrop): resume only if not. */
    s->waiting = false;
    ops->done(s, r, r == FE_AUTH_BLOCKED ? &block : NULL);
    if (!s->waiting)
        fe_session_resume(s);
}

static void auth_finish(fe_auth_t *a, fe_auth_result_t r)
{
    fe_session_t *s = a->session;
    a->result = r;
    auth_publish(a);
    fe_session_wait(s);
    long delay = config_get_long(s->srv->cfg, "auth.failure_delay_ms");
    if (r == FE_AUTH_FAIL && delay > 0)
        fe_session_delay(s, (unsigned)delay, auth_complete);
    else
        auth_complete(s);
}

static void verify_work_cb(uv_work_t *w)
{
    fe_auth_t *a = w->data;
    sasl_verify(a->sasl);
}

static void verify_after_cb(uv_work_t *w, int status)
{
    fe_auth_t *a = w->data;
    fe_session_t *s = a->session;
    if (s->closing || status != 0) {
        fe_session_unref(s);
        return;
    }
    auth_status(a, sasl_verify_result(a->sasl), NULL, 0);
    fe_session_unref(s);
}

static void secret_cb(void *arg, PGresult *res)
{
    fe_auth_t *a = arg;
    fe_session_t *s = a->session;
    if (s->closing) {
        fe_session_unref(s);
        return;
    }
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("user lookup failed", "session=%lu error=\"%s\"", s->id,
                 res ? PQresultErrorMessage(res) : "database unavailable");
        auth_finish(a, FE_AUTH_TEMP);
        fe_session_unref(s);
        return;
    }
    scram_secret_t secret;
    bool found = PQntuples(res) == 1 && scram_secret_decode(PQgetvalue(res, 0, 0), &secret) == 0;
    const unsigned char *out = NULL;
    size_t out_len = 0;
    sasl_status_t st = sasl_set_secret(a->sasl, found ? &secret : NULL, &out, &out_len);
    auth_status(a, st, out, out_len);
    fe_session_unref(s);
}

static void auth_lookup(fe_session_t *s)
{
    fe_auth_t *a = s->auth;
    const char *user = sasl_username(a->sasl);
    fe_session_ref(s);
    db_query(s->srv->db, "SELECT secret FROM users WHERE address = $1", 1, &user, NULL, NULL,
             secret_cb, a);
}

/* The limiter's answer to "may this client try?" (or its silence). */
static void auth_check_cb(void *arg, const lim_verdict_t *v)
{
    fe_auth_t *a = arg;
    fe_session_t *s = a->session;
    if (s->closing) {
        fe_session_unref(s);
        return;
    }
    bool blocked = v->answered && v->verdict == POSTERN__VERDICT__VERDICT_BLOCKED;
    if (!v->answered) {
        const char *policy = config_get(s->srv->cfg, "limiter.login_on_timeout");
        log_warn("limiter did not answer an auth check", "session=%lu policy=%s", s->id,
                 policy ? policy : "local");
        if (policy && strcmp(policy, "deny") == 0) {
            auth_finish(a, FE_AUTH_TEMP);
            fe_session_unref(s);
            return;
        }
        blocked = lim_blocked(s->srv->lim, s->peer, a->block.reason, sizeof a->block.reason,
                              &a->block.until_ms);
    } else if (blocked) {
        a->block = *v;
    }
    if (blocked)
        auth_finish(a, FE_AUTH_BLOCKED);
    else if (v->answered && v->delay_ms > 0)
        fe_session_delay(s, v->delay_ms, auth_lookup);
    else
        auth_lookup(s);
    fe_session_unref(s);
}

static void auth_status(fe_auth_t *a, sasl_status_t st, const unsigned char *out, size_t out_len)
{
    fe_session_t *s = a->session;
    switch (st) {
    case SASL_CHALLENGE: {
        buf_t b;
        buf_init(&b);
        if (fe_base64_encode(out, out_len, &b) < 0) {
            buf_free(&b);
            auth_finish(a, FE_AUTH_TEMP);
            return;
        }
        a->ops->challenge(s, b.data);
        buf_free(&b);
        fe_session_resume(s);
        return;
    }
    case SASL_NEED_SECRET:
        fe_session_wait(s);
        fe_session_ref(s);
        if (lim_check_auth(s->srv->lim, s->srv->proto->service, s->peer, sasl_username(a->sasl),
                           auth_check_cb, a) < 0) {
            fe_session_unref(s);
            auth_finish(a, FE_AUTH_TEMP);
        }
        return;
    case SASL_NEED_VERIFY:
        fe_session_wait(s);
        fe_session_ref(s);
        a->work.data = a;
        if (uv_queue_work(s->srv->loop, &a->work, verify_work_cb, verify_after_cb) < 0) {
            fe_session_unref(s);
            auth_finish(a, FE_AUTH_TEMP);
        }
        return;
    case SASL_OK:
        auth_finish(a, FE_AUTH_OK);
        return;
    case SASL_FAIL:
        auth_finish(a, FE_AUTH_FAIL);
        return;
    case SASL_MALFORMED:
        auth_finish(a, FE_AUTH_MALFORMED);
        return;
    }
}

static fe_auth_t *auth_create(fe_session_t *s, const char *mech, const char *label,
                              const fe_auth_ops_t *ops)
{
    size_t klen;
    const unsigned char *key = auth_key(s, &klen);
    sasl_t *sasl = sasl_create(mech, key, klen);
    if (!sasl)
        return NULL;
    fe_auth_t *a = calloc(1, sizeof *a);
    if (!a) {
        sasl_destroy(&sasl);
        return NULL;
    }
    a->session = s;
    a->ops = ops;
    a->sasl = sasl;
    snprintf(a->label, sizeof a->label, "%s", label ? label : sasl_mech_name(sasl));
    s->auth = a;
    fe_session_take_input(s, &fe_auth_hook);
    return a;
}

int fe_auth_start(fe_session_t *s, const char *mech, const char *initial,
                  const fe_auth_ops_t *ops)
{
    fe_auth_t *a = auth_create(s, mech, NULL, ops);
    if (!a)
        return -1;
    const unsigned char *out = NULL;
    size_t out_len = 0;
    if (!initial) {
        auth_status(a, sasl_step(a->sasl, NULL, 0, &out, &out_len), out, out_len);
        return 0;
    }
    buf_t b;
    buf_init(&b);
    bool empty = strcmp(initial, "=") == 0;
    if (!empty && fe_base64_decode(initial, strlen(initial), &b) < 0) {
        buf_free(&b);
        auth_finish(a, FE_AUTH_MALFORMED);
        return 0;
    }
    sasl_status_t st = sasl_step(a->sasl, (const unsigned char *)b.data, b.len, &out, &out_len);
    buf_free(&b);
    auth_status(a, st, out, out_len);
    return 0;
}

void fe_auth_password(fe_session_t *s, const char *label, const char *user, const char *password,
                      const fe_auth_ops_t *ops)
{
    fe_auth_t *a = auth_create(s, "PLAIN", label, ops);
    if (!a) {
        ops->done(s, FE_AUTH_TEMP, NULL);
        return;
    }
    buf_t b;
    buf_init(&b);
    buf_append(&b, "", 1);
    buf_puts(&b, user);
    buf_append(&b, "", 1);
    buf_puts(&b, password);
    const unsigned char *out = NULL;
    size_t out_len = 0;
    sasl_status_t st = sasl_step(a->sasl, (const unsigned char *)b.data, b.len, &out, &out_len);
    OPENSSL_cleanse(b.data, b.len);
    buf_free(&b);
    auth_status(a, st, out, out_len);
}

static void auth_line(fe_session_t *s, char *line, size_t len, unsigned flags)
{
    fe_auth_t *a = s->auth;
    (void)flags;
    /* RFC 4954 section 4: "*" cancels the exchange. */
    if (len == 1 && line[0] == '*') {
        auth_finish(a, FE_AUTH_ABORTED);
        return;
    }
    buf_t b;
    buf_init(&b);
    if (fe_base64_decode(line, len, &b) < 0) {
        buf_free(&b);
        auth_finish(a, FE_AUTH_MALFORMED);
        return;
    }
    const unsigned char *out = NULL;
    size_t out_len = 0;
    sasl_status_t st = sasl_step(a->sasl, (const unsigned char *)b.data, b.len, &out, &out_len);
    OPENSSL_cleanse(b.data, b.len);
    buf_free(&b);
    auth_status(a, st, out, out_len);
}

static void auth_release(fe_session_t *s)
{
    fe_auth_t *a = s->auth;
    if (!a)
        return;
    s->auth = NULL;
    if (s->hook == &fe_auth_hook)
        fe_session_release_input(s);
    sasl_destroy(&a->sasl);
    free(a);
}
