/* webd: the self-service API for mailbox users, under /api/v1/self. A user logs in with
 * the mail address and password, sees its own HAMR state and recent logins, and changes
 * its password (the SCRAM secret is computed anew by lib/admin's user passwd, audited as
 * the user itself). */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webd.h"

/* The JSON of a command's answer in w, or NULL when it failed. */
static json_t *command_json(web_t *web, const char *actor, const char *const *argv, int argc)
{
    web_resp_t w = { 0 };
    buf_init(&w.body);
    web_run_command(web, actor, argv, argc, NULL, &w);
    json_t *j = w.status == 200 ? json_loadb(w.body.data, w.body.len, 0, NULL) : NULL;
    buf_free(&w.body);
    for (int i = 0; i < w.nheaders; i++) {
        free(w.headers[i][0]);
        free(w.headers[i][1]);
    }
    return j;
}

static void self_show(web_t *web, const web_req_t *r, const web_session_t *s, web_resp_t *w)
{
    char actor[200], user[160];
    snprintf(actor, sizeof actor, "self:%s from %s", s->name, r->client);
    snprintf(user, sizeof user, "--user=%s", s->name);
    const char *hamr[] = { "hamr", "show", user };
    const char *logins[] = { "user", "logins", s->name, "--limit=20" };
    json_t *h = command_json(web, actor, hamr, 3);
    json_t *l = command_json(web, actor, logins, 4);
    if (!h || !l) {
        json_decref(h);
        json_decref(l);
        web_json_error(w, 503, "the database is not available: try again shortly");
        return;
    }
    json_t *j = json_object();
    json_object_set_new(j, "address", json_string(s->name));
    json_object_set_new(j, "csrf", json_string(s->csrf));
    json_object_set_new(j, "hamr", h);
    json_object_set_new(j, "logins", l);
    web_json_value(w, j);
    json_decref(j);
}

static void self_password(web_t *web, const web_req_t *r, const web_session_t *s,
                          web_resp_t *w)
{
    const char *ct = web_header(r, "Content-Type");
    if (!web_is_json(ct)) {
        web_json_error(w, 415, "send the body as application/json");
        return;
    }
    json_t *body = json_loadb(r->body, r->body_len, 0, NULL);
    const char *current = json_string_value(json_object_get(body, "current"));
    const char *next = json_string_value(json_object_get(body, "new"));
    if (!json_is_object(body) || !current || !next || json_object_size(body) != 2) {
        web_json_error(w, 400, "send {\"current\": the password now, \"new\": the new one}");
        json_decref(body);
        return;
    }
    if (strlen(next) < 8) {
        web_json_error(w, 400, "the new password is too short: at least 8 characters");
        json_decref(body);
        return;
    }
    int ok = web_user_password_ok(web, s->name, current);
    if (ok < 0) {
        web_json_error(w, 503, "the database is not available: try again shortly");
    } else if (!ok) {
        /* A wrong current password counts like a failed login. */
        web_publish_auth(web, r, s->name, current, false, "web");
        web_json_error(w, 403, "the current password is wrong: nothing changed");
    } else {
        char actor[200];
        snprintf(actor, sizeof actor, "self:%s from %s", s->name, r->client);
        const char *argv[] = { "user", "passwd", s->name };
        web_run_command(web, actor, argv, 3, next, w);
    }
    json_decref(body);
}

void web_self(web_t *web, const web_req_t *r, web_resp_t *w)
{
    const char *path = r->path;
    web_session_t s;
    if (!web_authorize(web, r, WEB_USER, "/api/v1/self/login", &s, w))
        return;
    bool is_self = strcmp(path, "/api/v1/self") == 0 || strcmp(path, "/api/v1/self/") == 0;
    bool is_logout = strcmp(path, "/api/v1/self/logout") == 0;
    bool is_password = strcmp(path, "/api/v1/self/password") == 0;
    if (is_logout && strcmp(r->method, "POST") == 0)
        web_logout(web, r, WEB_USER, w);
    else if (is_self && strcmp(r->method, "GET") == 0)
        self_show(web, r, &s, w);
    else if (is_password && strcmp(r->method, "PUT") == 0)
        self_password(web, r, &s, w);
    else if (is_self || is_logout || is_password)
        web_json_error(w, 405, "%s is not allowed on %s", r->method, path);
    else
        web_json_error(w, 404, "no such API path: %s %s", r->method, path);
}
