/* webd: logins and sessions. An admin logs in to the console with a name from web_admins,
 * a mailbox user to the self-service page with the address and mail password; both are
 * checked against the same kind of SCRAM secret as mail logins. A client address blocked
 * by harvesting is refused before any check, and every outcome is published as an
 * AuthEvent of service web: failed web logins count in the harvesting limits.
 *
 * A session is a random 256-bit token in a Secure, HttpOnly, SameSite=Strict cookie; the
 * database keeps only its SHA-256. Each session has a CSRF token, handed out at login and
 * by GET /api/v1/session, that every change must send back in X-CSRF-Token. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <strings.h>

#include "auth/scram.h"
#include "base/log.h"
#include "bus/events.h"
#include "webd.h"

#define TOKEN_BYTES 32

const char *web_cookie_name(web_kind_t kind)
{
    return kind == WEB_ADMIN ? "postern_admin" : "postern_user";
}

/* n random bytes as unpadded base64url (RFC 4648 section 5) into out (>= 4n/3 + 2). */
static int random_token(char *out, size_t out_len)
{
    unsigned char raw[TOKEN_BYTES];
    char b64[64];
    if (RAND_bytes(raw, sizeof raw) != 1 ||
        scram_b64_encode(raw, sizeof raw, b64, sizeof b64) < 0)
        return -1;
    size_t n = 0;
    for (const char *p = b64; *p && *p != '=' && n + 1 < out_len; p++)
        out[n++] = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    out[n] = '\0';
    OPENSSL_cleanse(raw, sizeof raw);
    return 0;
}

/* The hex SHA-256 of a session token, as stored. */
static void token_hash(const char *token, char hex[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(token, strlen(token), md, &len, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

void web_publish_auth(web_t *web, const web_req_t *r, const char *user, const char *password,
                      bool ok, const char *mechanism)
{
    unsigned char digest[32];
    ev_auth_t ev = {
        .service = POSTERN__SERVICE__SERVICE_WEB,
        .user = user,
        .client_addr = r->client,
        .mechanism = mechanism,
        .tls = true,
        .result = ok ? POSTERN__AUTH_RESULT__AUTH_OK : POSTERN__AUTH_RESULT__AUTH_BAD_CREDENTIALS,
        .instance = web->instance,
    };
    /* Failed attempts carry the keyed digest of (user, password) as the front ends' do:
     * the same wrong password tried again is told apart from a new guess. */
    if (!ok) {
        size_t ul = strlen(user), pl = strlen(password);
        unsigned char *msg = malloc(ul + 1 + pl);
        if (msg) {
            memcpy(msg, user, ul);
            msg[ul] = 0;
            memcpy(msg + ul + 1, password, pl);
            if (scram_hmac(web->secret, web->secret_len, msg, ul + 1 + pl, digest) == 0) {
                ev.attempt_digest = digest;
                ev.attempt_digest_len = sizeof digest;
            }
            OPENSSL_cleanse(msg, ul + 1 + pl);
            free(msg);
        }
    }
    if (ev_publish_auth(web->bus, &ev) < 0)
        log_warn("auth event not published", "client=%s user=\"%s\"", r->client, user);
}

/* Checks password against the secret text (or the dummy secret when secret is NULL, so
 * that unknown names cost the same PBKDF2 derivation). */
static bool password_matches(web_t *web, const char *secret, const char *password)
{
    scram_secret_t s;
    if (scram_secret_decode(secret ? secret : web->dummy_secret, &s) != 0)
        return false;
    bool ok = scram_verify_password(&s, password, strlen(password)) && secret;
    OPENSSL_cleanse(&s, sizeof s);
    return ok;
}

int web_user_password_ok(web_t *web, const char *address, const char *password)
{
    PGconn *pg = pgpool_get(web->pool);
    if (!pg)
        return -1;
    const char *p[] = { address };
    PGresult *res =
        PQexecParams(pg, "SELECT secret FROM users WHERE address = $1", 1, NULL, p, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(res) == PGRES_TUPLES_OK)
        rc = password_matches(web, PQntuples(res) ? PQgetvalue(res, 0, 0) : NULL, password);
    PQclear(res);
    pgpool_put(web->pool, pg);
    return rc;
}

/* The session row for a login: returns the token (cookie) and CSRF token, or -1. */
static int session_create(web_t *web, PGconn *pg, web_kind_t kind, const char *id,
                          const char *client, char token[64], char csrf[64])
{
    char hash[65], idle[16];
    if (random_token(token, 64) < 0 || random_token(csrf, 64) < 0)
        return -1;
    token_hash(token, hash);
    snprintf(idle, sizeof idle, "%d", web->session_idle_s);
    const char *p[] = { hash, id, csrf, client, idle };
    PGresult *res = PQexecParams(
        pg,
        kind == WEB_ADMIN
            ? "INSERT INTO web_sessions (token_hash, admin_id, csrf, client_addr, expires_at)"
              " VALUES (decode($1, 'hex'), $2::bigint, $3, $4::inet,"
              " now() + make_interval(secs => $5::int))"
            : "INSERT INTO web_sessions (token_hash, user_id, csrf, client_addr, expires_at)"
              " VALUES (decode($1, 'hex'), $2::bigint, $3, $4::inet,"
              " now() + make_interval(secs => $5::int))",
        5, NULL, p, NULL, NULL, 0);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc < 0)
        log_warn("session not stored", "error=\"%s\"", PQresultErrorMessage(res));
    PQclear(res);
    /* Sessions long over are swept now and then by the logins themselves. */
    PQclear(PQexec(pg, "DELETE FROM web_sessions WHERE expires_at < now() - interval '1 day'"));
    return rc;
}

static void set_cookie(web_resp_t *w, web_kind_t kind, const char *token)
{
    char cookie[256];
    if (token)
        snprintf(cookie, sizeof cookie, "%s=%s; Path=/; Secure; HttpOnly; SameSite=Strict",
                 web_cookie_name(kind), token);
    else
        snprintf(cookie, sizeof cookie,
                 "%s=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
                 web_cookie_name(kind));
    web_resp_header(w, "Set-Cookie", cookie);
}

/* An Origin header, when sent, must be this host's (https); false with w answered 403. */
static bool origin_ok(const web_req_t *r, web_resp_t *w)
{
    const char *origin = web_header(r, "Origin");
    const char *host = web_header(r, "Host");
    if (origin && strcmp(origin, "null") != 0) {
        const char *o = strncmp(origin, "https://", 8) == 0 ? origin + 8 : NULL;
        if (!o || !host || strcmp(o, host) != 0) {
            web_json_error(w, 403, "the request comes from another site (Origin %s)", origin);
            return false;
        }
    }
    return true;
}

/* The login's JSON body: two string members, name_key and "password". */
static bool login_body(const web_req_t *r, const char *name_key, char *name, size_t name_len,
                       char **password_r, web_resp_t *w)
{
    json_error_t jerr;
    json_t *j = json_loadb(r->body, r->body_len, 0, &jerr);
    const char *n = j ? json_string_value(json_object_get(j, name_key)) : NULL;
    const char *pw = j ? json_string_value(json_object_get(j, "password")) : NULL;
    bool ok = false;
    if (!j)
        web_json_error(w, 400, "the body is not JSON: %s", jerr.text);
    else if (!n || !*n || !pw || !*pw)
        web_json_error(w, 400, "send {\"%s\": ..., \"password\": ...}", name_key);
    else if (strlen(n) >= name_len)
        web_json_error(w, 400, "%s is too long", name_key);
    else {
        size_t i = 0;
        for (; n[i]; i++)
            name[i] = (char)(n[i] >= 'A' && n[i] <= 'Z' ? n[i] - 'A' + 'a' : n[i]);
        name[i] = '\0';
        *password_r = strdup(pw);
        ok = *password_r != NULL;
        if (!ok)
            web_json_error(w, 503, "out of memory");
    }
    json_decref(j);
    return ok;
}

void web_login(web_t *web, const web_req_t *r, web_kind_t kind, web_resp_t *w)
{
    const char *name_key = kind == WEB_ADMIN ? "user" : "address";
    char name[128];
    char *password = NULL;
    /* No session yet, so no CSRF token: another site's page must not be able to log a
     * browser in, nor spend its address's failed logins (a form can send neither
     * application/json nor this site's Origin). */
    if (!origin_ok(r, w))
        return;
    const char *ct = web_header(r, "Content-Type");
    if (!web_is_json(ct)) {
        web_json_error(w, 415, "send the body as application/json");
        return;
    }
    if (!login_body(r, name_key, name, sizeof name, &password, w))
        return;
    /* The limiter first, as for a mail login: a blocked address is refused before its
     * password is looked at, and a delay it asks for is served. */
    web_gate_t g;
    PGconn *pg = NULL;
    web_gate_ask(web, r->client, name, &g);
    if (!g.allowed) {
        if (g.unanswered) {
            web_json_error(w, 503, "the limiter is not answering: try again shortly");
        } else {
            char until[64] = "later";
            time_t t = (time_t)(g.until_ms / 1000);
            struct tm tm;
            if (g.until_ms > 0 && gmtime_r(&t, &tm))
                strftime(until, sizeof until, "%Y-%m-%d %H:%M:%S UTC", &tm);
            web_json_error(w, 403, "your address %s is blocked after too many failed logins "
                                   "until %s", r->client, until);
        }
        goto out;
    }
    if (g.delay_ms)
        usleep((useconds_t)g.delay_ms * 1000);
    if (!(pg = pgpool_get(web->pool))) {
        web_json_error(w, 503, "the database is not available: try again shortly");
        goto out;
    }
    const char *p[] = { name };
    PGresult *res = PQexecParams(pg,
                                 kind == WEB_ADMIN
                                     ? "SELECT id, secret FROM web_admins WHERE name = $1"
                                     : "SELECT id, secret FROM users WHERE address = $1",
                                 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        PQclear(res);
        web_json_error(w, 503, "the database is not available: try again shortly");
        goto out;
    }
    bool found = PQntuples(res) == 1;
    bool ok = password_matches(web, found ? PQgetvalue(res, 0, 1) : NULL, password);
    char id[32];
    snprintf(id, sizeof id, "%s", found ? PQgetvalue(res, 0, 0) : "");
    PQclear(res);
    web_publish_auth(web, r, name, password, ok, kind == WEB_ADMIN ? "web-admin" : "web");
    log_msg(ok ? LOG_INFO : LOG_WARN, "web login", "client=%s kind=%s user=\"%s\" result=%s",
            r->client, kind == WEB_ADMIN ? "admin" : "user", name, ok ? "ok" : "bad-credentials");
    if (!ok) {
        web_json_error(w, 401, "wrong %s or password", kind == WEB_ADMIN ? "name" : "address");
        goto out;
    }
    char token[64], csrf[64];
    if (session_create(web, pg, kind, id, r->client, token, csrf) < 0) {
        web_json_error(w, 503, "the database is not available: try again shortly");
        goto out;
    }
    pgpool_put(web->pool, pg);
    pg = NULL;
    set_cookie(w, kind, token);
    OPENSSL_cleanse(token, sizeof token);
    /* The console asks GET /api/v1/session for the rest (role, domains). */
    w->status = 200;
    w->type = "application/json";
    buf_reset(&w->body);
    buf_puts(&w->body, "{\"ok\":true,\"csrf\":");
    web_json_str(&w->body, csrf);
    buf_puts(&w->body, ",\"name\":");
    web_json_str(&w->body, name);
    buf_puts(&w->body, "}");
out:
    if (pg)
        pgpool_put(web->pool, pg);
    if (password) {
        OPENSSL_cleanse(password, strlen(password));
        free(password);
    }
}

void web_logout(web_t *web, const web_req_t *r, web_kind_t kind, web_resp_t *w)
{
    const char *token = web_cookie(r, web_cookie_name(kind));
    if (token && *token) {
        PGconn *pg = pgpool_get(web->pool);
        if (!pg) {
            web_json_error(w, 503, "the database is not available: try again shortly");
            return;
        }
        char hash[65];
        token_hash(token, hash);
        const char *p[] = { hash };
        PQclear(PQexecParams(pg, "DELETE FROM web_sessions WHERE token_hash = decode($1, 'hex')",
                             1, NULL, p, NULL, NULL, 0));
        pgpool_put(web->pool, pg);
    }
    set_cookie(w, kind, NULL);
    web_json_raw(w, 200, "{\"ok\":true}", 11);
}

int web_session(web_t *web, const web_req_t *r, web_kind_t kind, web_session_t *s,
                web_resp_t *w)
{
    memset(s, 0, sizeof *s);
    s->kind = kind;
    const char *token = web_cookie(r, web_cookie_name(kind));
    if (!token || !*token || strlen(token) > 64) {
        web_json_error(w, 401, "not logged in");
        return 0;
    }
    PGconn *pg = pgpool_get(web->pool);
    if (!pg) {
        web_json_error(w, 503, "the database is not available: try again shortly");
        return -1;
    }
    char hash[65], idle[16], max[16];
    token_hash(token, hash);
    snprintf(idle, sizeof idle, "%d", web->session_idle_s);
    snprintf(max, sizeof max, "%d", web->session_max_s);
    const char *p[] = { hash, idle, max, kind == WEB_ADMIN ? "t" : "f" };
    PGresult *res = PQexecParams(
        pg,
        "WITH s AS (UPDATE web_sessions SET expires_at = now() + make_interval(secs => $2::int)"
        "  WHERE token_hash = decode($1, 'hex') AND expires_at > now()"
        "  AND created_at > now() - make_interval(secs => $3::int)"
        "  AND (admin_id IS NOT NULL) = $4::boolean"
        "  RETURNING admin_id, user_id, csrf)"
        " SELECT s.csrf, coalesce(a.name, u.address), a.role,"
        "  coalesce((SELECT string_agg(d.name, ',' ORDER BY d.name) FROM web_admin_domains ad"
        "   JOIN domains d ON d.id = ad.domain_id WHERE ad.admin_id = a.id), '')"
        " FROM s LEFT JOIN web_admins a ON a.id = s.admin_id"
        " LEFT JOIN users u ON u.id = s.user_id",
        4, NULL, p, NULL, NULL, 0);
    int rc;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        web_json_error(w, 503, "the database is not available: try again shortly");
        rc = -1;
    } else if (PQntuples(res) != 1 || PQgetisnull(res, 0, 1) ||
               (kind == WEB_ADMIN) == PQgetisnull(res, 0, 2)) {
        web_json_error(w, 401, "not logged in, or the session has expired: log in again");
        rc = 0;
    } else {
        snprintf(s->csrf, sizeof s->csrf, "%s", PQgetvalue(res, 0, 0));
        snprintf(s->name, sizeof s->name, "%s", PQgetvalue(res, 0, 1));
        s->system = kind == WEB_ADMIN && strcmp(PQgetvalue(res, 0, 2), "system") == 0;
        snprintf(s->domains, sizeof s->domains, "%s", PQgetvalue(res, 0, 3));
        rc = 1;
    }
    PQclear(res);
    pgpool_put(web->pool, pg);
    return rc;
}

bool web_csrf_ok(const web_req_t *r, const web_session_t *s, web_resp_t *w)
{
    if (strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0)
        return true;
    if (!origin_ok(r, w))
        return false;
    const char *t = web_header(r, "X-CSRF-Token");
    size_t n = strlen(s->csrf);
    if (!t || strlen(t) != n || n == 0 || CRYPTO_memcmp(t, s->csrf, n) != 0) {
        web_json_error(w, 403, "missing or wrong CSRF token: send the session's token in "
                               "X-CSRF-Token");
        return false;
    }
    return true;
}

bool web_admin_has_domain(const web_session_t *s, const char *domain)
{
    if (s->system)
        return true;
    size_t n = strlen(domain);
    for (const char *p = s->domains; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        /* The stored names are lowercase; one from a query string may not be. */
        if (len == n && strncasecmp(p, domain, n) == 0)
            return true;
        if (!comma)
            break;
        p = comma + 1;
    }
    return false;
}

void web_session_json(const web_session_t *s, web_resp_t *w)
{
    w->status = 200;
    w->type = "application/json";
    buf_reset(&w->body);
    buf_puts(&w->body, "{\"kind\":");
    buf_puts(&w->body, s->kind == WEB_ADMIN ? "\"admin\"" : "\"user\"");
    buf_puts(&w->body, ",\"name\":");
    web_json_str(&w->body, s->name);
    if (s->kind == WEB_ADMIN) {
        buf_puts(&w->body, ",\"role\":");
        buf_puts(&w->body, s->system ? "\"system\"" : "\"domain\"");
        buf_puts(&w->body, ",\"domains\":[");
        char list[sizeof s->domains];
        snprintf(list, sizeof list, "%s", s->domains);
        char *save = NULL;
        int n = 0;
        for (char *d = strtok_r(list, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
            if (n++)
                buf_puts(&w->body, ",");
            web_json_str(&w->body, d);
        }
        buf_puts(&w->body, "]");
    }
    buf_puts(&w->body, ",\"csrf\":");
    web_json_str(&w->body, s->csrf);
    buf_puts(&w->body, "}");
}

bool web_authorize(web_t *web, const web_req_t *r, web_kind_t kind, const char *login_path,
                   web_session_t *s, web_resp_t *w)
{
    if (strcmp(r->path, login_path) == 0) {
        if (strcmp(r->method, "POST") != 0)
            web_json_error(w, 405, "log in with POST");
        else
            web_login(web, r, kind, w);
        return false;
    }
    return web_session(web, r, kind, s, w) > 0 && web_csrf_ok(r, s, w);
}
