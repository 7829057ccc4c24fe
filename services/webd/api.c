/* webd: the JSON API under /api/v1. Each route names one of lib/admin's commands (the ones
 * mailctl runs) and how its arguments come from the path, the query and the JSON body, so
 * validation, the audit_log row and the announcement are the command's own. The command
 * prints JSON on this thread's output stream; its messages on the error stream become the
 * {"error": ...} of a 400.
 *
 * Permissions: a system admin may call every route; a domain admin only routes whose
 * scope (a domain, or an address's domain) is one of its domains, and the domain and user
 * lists come back filtered to them. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "base/log.h"
#include "webd.h"

#define ARGS_MAX 24
#define PARAMS_MAX 4

typedef enum perm {
    PERM_SYSTEM, /* system admins only */
    PERM_SCOPE,  /* domain admins for their domains: see route.scope */
    PERM_ANY,    /* any admin (lists filtered to its domains) */
} perm_t;

enum {
    R_PASSWORD = 1 << 0,       /* body "password" is the new password */
    R_FILTER_DOMAINS = 1 << 1, /* a domain admin sees array items whose "name" is its domain */
    R_FILTER_USERS = 1 << 2,   /* ... whose "address" is in its domains */
    R_UNSET_FIELDS = 1 << 3,   /* query "fields" (comma-separated) become --field flags,
                                  none: --all */
    R_CTL_DOMAIN = 1 << 4,     /* query "domain" is the command's --domain */
};

typedef struct route {
    const char *method;
    const char *path;  /* segments; "{name}" is a parameter */
    const char *words; /* the command: "user passwd" */
    /* The command's arguments, space-separated: a literal; "{p}" a path parameter; "$f" a
     * required body member, "$f?" an optional one; "%q" / "%q?" a query parameter;
     * "--opt=$f?" / "--opt=%q?" an option with that value when present; "--flag!f" the
     * flag when body member or query parameter f is true. */
    const char *args;
    perm_t perm;
    const char *scope; /* PERM_SCOPE: "{domain}", "{address}" or "$address": the domain
                          (of the address) a domain admin must have */
    unsigned flags;
} route_t;

#define HAMR_FIELDS                                                                        \
    "--enabled=$enabled? --max=$max? --interval=$interval? --action=$action? "          \
    "--alert=$alert? --max-recipients=$max_recipients? --alert-owner=$alert_owner?"
#define HARVEST_FIELDS                                                                     \
    "--enabled=$enabled? --max-failures=$max_failures? --interval=$interval? "          \
    "--block=$block? --soft-limit=$soft_limit? --hard-limit=$hard_limit?"

static const route_t routes[] = {
    { "GET", "/api/v1/domains", "domain list", "", PERM_ANY, NULL, R_FILTER_DOMAINS },
    { "POST", "/api/v1/domains", "domain add", "$name", PERM_SYSTEM, NULL, 0 },
    { "DELETE", "/api/v1/domains/{domain}", "domain del", "{domain}", PERM_SYSTEM, NULL, 0 },

    { "GET", "/api/v1/users", "user list", "", PERM_ANY, NULL, R_FILTER_USERS | R_CTL_DOMAIN },
    { "POST", "/api/v1/users", "user add", "$address", PERM_SCOPE, "$address", R_PASSWORD },
    { "PUT", "/api/v1/users/{address}/password", "user passwd", "{address}", PERM_SCOPE,
      "{address}", R_PASSWORD },
    { "DELETE", "/api/v1/users/{address}", "user del", "{address}", PERM_SCOPE, "{address}", 0 },
    { "GET", "/api/v1/users/{address}/logins", "user logins", "{address} --limit=%limit?",
      PERM_SCOPE, "{address}", 0 },

    { "GET", "/api/v1/relay", "relay list", "", PERM_SYSTEM, NULL, 0 },
    { "PUT", "/api/v1/relay/mode", "relay mode", "$mode", PERM_SYSTEM, NULL, 0 },
    { "POST", "/api/v1/relay/networks", "relay allow", "$network", PERM_SYSTEM, NULL, 0 },
    { "DELETE", "/api/v1/relay/networks", "relay deny", "%network", PERM_SYSTEM, NULL, 0 },
    { "GET", "/api/v1/relay/tls-policies", "relay tls-policy", "", PERM_SYSTEM, NULL, 0 },
    { "PUT", "/api/v1/relay/tls-policies/{domain}", "relay tls-policy", "{domain} $policy",
      PERM_SYSTEM, NULL, 0 },
    { "DELETE", "/api/v1/relay/tls-policies/{domain}", "relay tls-policy", "{domain} --unset",
      PERM_SYSTEM, NULL, 0 },

    { "GET", "/api/v1/transports", "transport list", "", PERM_SYSTEM, NULL, 0 },
    { "PUT", "/api/v1/transports/{domain}", "transport set", "{domain} $destination",
      PERM_SYSTEM, NULL, 0 },
    { "DELETE", "/api/v1/transports/{domain}", "transport del", "{domain}", PERM_SYSTEM, NULL,
      0 },

    { "GET", "/api/v1/config", "config show", "", PERM_SYSTEM, NULL, 0 },
    { "PUT", "/api/v1/config/{key}", "config set", "{key} $value", PERM_SYSTEM, NULL, 0 },
    { "DELETE", "/api/v1/config/{key}", "config unset", "{key}", PERM_SYSTEM, NULL, 0 },

    { "GET", "/api/v1/hamr/status", "hamr status", "", PERM_SYSTEM, NULL, 0 },
    { "GET", "/api/v1/hamr/system", "hamr show", "--system", PERM_SYSTEM, NULL, 0 },
    { "PUT", "/api/v1/hamr/system", "hamr set", "--system " HAMR_FIELDS, PERM_SYSTEM, NULL, 0 },
    { "DELETE", "/api/v1/hamr/system", "hamr unset", "--system", PERM_SYSTEM, NULL,
      R_UNSET_FIELDS },
    { "POST", "/api/v1/hamr/system/reset", "hamr reset", "--system", PERM_SYSTEM, NULL, 0 },
    { "GET", "/api/v1/hamr/domains/{domain}", "hamr show", "--domain={domain}", PERM_SCOPE,
      "{domain}", 0 },
    { "PUT", "/api/v1/hamr/domains/{domain}", "hamr set", "--domain={domain} " HAMR_FIELDS,
      PERM_SCOPE, "{domain}", 0 },
    { "DELETE", "/api/v1/hamr/domains/{domain}", "hamr unset", "--domain={domain}", PERM_SCOPE,
      "{domain}", R_UNSET_FIELDS },
    { "POST", "/api/v1/hamr/domains/{domain}/reset", "hamr reset", "--domain={domain}",
      PERM_SCOPE, "{domain}", 0 },
    { "GET", "/api/v1/hamr/users/{address}", "hamr show", "--user={address}", PERM_SCOPE,
      "{address}", 0 },
    { "PUT", "/api/v1/hamr/users/{address}", "hamr set", "--user={address} " HAMR_FIELDS,
      PERM_SCOPE, "{address}", 0 },
    { "DELETE", "/api/v1/hamr/users/{address}", "hamr unset", "--user={address}", PERM_SCOPE,
      "{address}", R_UNSET_FIELDS },
    { "POST", "/api/v1/hamr/users/{address}/reset", "hamr reset", "--user={address}",
      PERM_SCOPE, "{address}", 0 },
    { "POST", "/api/v1/hamr/users/{address}/enable", "hamr enable", "--user={address}",
      PERM_SCOPE, "{address}", 0 },
    { "GET", "/api/v1/limiter", "limiter status", "", PERM_SYSTEM, NULL, 0 },

    { "GET", "/api/v1/harvest", "harvest show", "", PERM_SYSTEM, NULL, 0 },
    { "PUT", "/api/v1/harvest", "harvest set", "--service=$service? " HARVEST_FIELDS,
      PERM_SYSTEM, NULL, 0 },
    { "DELETE", "/api/v1/harvest", "harvest unset", "--service=%service?", PERM_SYSTEM, NULL,
      R_UNSET_FIELDS },
    { "GET", "/api/v1/harvest/blocks", "harvest blocks", "", PERM_SYSTEM, NULL, 0 },
    { "POST", "/api/v1/harvest/unblock", "harvest unblock", "$network", PERM_SYSTEM, NULL, 0 },
    { "GET", "/api/v1/harvest/exemptions", "harvest exempt list", "", PERM_SYSTEM, NULL, 0 },
    { "POST", "/api/v1/harvest/exemptions", "harvest exempt add", "$network", PERM_SYSTEM, NULL,
      0 },
    { "DELETE", "/api/v1/harvest/exemptions", "harvest exempt del", "%network", PERM_SYSTEM,
      NULL, 0 },

    { "GET", "/api/v1/alert-addresses", "alert-address list", "", PERM_SYSTEM, NULL, 0 },
    { "POST", "/api/v1/alert-addresses", "alert-address add", "$address", PERM_SYSTEM, NULL, 0 },
    { "DELETE", "/api/v1/alert-addresses/{address}", "alert-address del", "{address}",
      PERM_SYSTEM, NULL, 0 },

    { "GET", "/api/v1/queue", "queue list", "", PERM_SYSTEM, NULL, 0 },
    { "GET", "/api/v1/queue/{id}", "queue show", "{id}", PERM_SYSTEM, NULL, 0 },
    { "POST", "/api/v1/queue/retry", "queue retry", "--all", PERM_SYSTEM, NULL, 0 },
    { "POST", "/api/v1/queue/{id}/retry", "queue retry", "{id}", PERM_SYSTEM, NULL, 0 },
    { "DELETE", "/api/v1/queue/{id}", "queue delete", "{id} --silent!silent", PERM_SYSTEM, NULL,
      0 },

    { "GET", "/api/v1/admins", "admin list", "", PERM_SYSTEM, NULL, 0 },
    { "POST", "/api/v1/admins", "admin add", "$name --role=$role? --domains=$domains?",
      PERM_SYSTEM, NULL, R_PASSWORD },
    { "PUT", "/api/v1/admins/{name}/password", "admin passwd", "{name}", PERM_SYSTEM, NULL,
      R_PASSWORD },
    { "DELETE", "/api/v1/admins/{name}", "admin del", "{name}", PERM_SYSTEM, NULL, 0 },
    { NULL, NULL, NULL, NULL, 0, NULL, 0 },
};

/* ---- matching ------------------------------------------------------------------------- */

typedef struct params {
    const char *name[PARAMS_MAX];
    size_t name_len[PARAMS_MAX];
    char value[PARAMS_MAX][256];
    int n;
} params_t;

/* True when path matches the route's pattern, with its parameters in *ps. A parameter is
 * one non-empty segment (MHD has already decoded %XX). */
static bool path_match(const char *pattern, const char *path, params_t *ps)
{
    ps->n = 0;
    while (*pattern && *path) {
        if (*pattern == '{') {
            const char *end = strchr(pattern, '}');
            size_t n = strcspn(path, "/");
            if (!end || n == 0 || n >= sizeof ps->value[0] || ps->n >= PARAMS_MAX)
                return false;
            ps->name[ps->n] = pattern + 1;
            ps->name_len[ps->n] = (size_t)(end - pattern - 1);
            memcpy(ps->value[ps->n], path, n);
            ps->value[ps->n][n] = '\0';
            ps->n++;
            pattern = end + 1;
            path += n;
        } else if (*pattern++ != *path++) {
            return false;
        }
    }
    if (*path == '/' && path[1] == '\0')
        path++;
    return !*pattern && !*path;
}

static const char *param(const params_t *ps, const char *name, size_t len)
{
    for (int i = 0; i < ps->n; i++)
        if (ps->name_len[i] == len && strncmp(ps->name[i], name, len) == 0)
            return ps->value[i];
    return NULL;
}

/* ---- arguments ------------------------------------------------------------------------- */

typedef struct argv_build {
    char *v[ARGS_MAX];
    int n;
} argv_build_t;

static bool argv_push(argv_build_t *a, const char *prefix, const char *value)
{
    if (a->n >= ARGS_MAX)
        return false;
    size_t n = strlen(prefix) + strlen(value) + 1;
    a->v[a->n] = malloc(n);
    if (!a->v[a->n])
        return false;
    snprintf(a->v[a->n], n, "%s%s", prefix, value);
    a->n++;
    return true;
}

static void argv_free(argv_build_t *a)
{
    for (int i = 0; i < a->n; i++)
        free(a->v[i]);
    a->n = 0;
}

/* A body member as command-line text: strings as they are, integers in decimal, true and
 * false as on and off. NULL (with why) for other types. */
static const char *member_text(json_t *v, char *buf, size_t len, const char **why)
{
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v)) {
        snprintf(buf, len, "%lld", (long long)json_integer_value(v));
        return buf;
    }
    if (json_is_boolean(v))
        return json_is_true(v) ? "on" : "off";
    *why = "a string, an integer or true/false";
    return NULL;
}

static bool truthy(const char *s)
{
    return s && (strcmp(s, "1") == 0 || strcmp(s, "true") == 0 || strcmp(s, "on") == 0 ||
                 strcmp(s, "yes") == 0);
}

/* Builds the command's arguments from the route's template. Answers w (400) and returns
 * false on a missing or mistyped value or a body member the route does not take. */
static bool build_args(const route_t *rt, const web_req_t *r, const params_t *ps, json_t *body,
                       argv_build_t *a, web_resp_t *w)
{
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s", rt->args);
    char *save = NULL;
    for (char *tok = strtok_r(tmpl, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        char prefix[64] = "";
        char *ref = tok;
        char *eq = strchr(tok, '=');
        char *bang = strchr(tok, '!');
        if (tok[0] == '-' && bang) {
            /* --flag!name: the flag when name is true in the body or the query */
            *bang = '\0';
            json_t *v = body ? json_object_get(body, bang + 1) : NULL;
            bool on = v ? json_is_true(v) : truthy(web_query(r, bang + 1));
            if (on && !argv_push(a, tok, ""))
                goto oom;
            continue;
        }
        if (tok[0] == '-' && eq) {
            *eq = '\0';
            snprintf(prefix, sizeof prefix, "%s=", tok);
            ref = eq + 1;
        }
        size_t len = strlen(ref);
        bool optional = len > 0 && ref[len - 1] == '?';
        if (optional)
            ref[--len] = '\0';
        const char *value = NULL;
        char num[32];
        if (ref[0] == '{') {
            value = param(ps, ref + 1, len - 2);
        } else if (ref[0] == '$') {
            json_t *v = body ? json_object_get(body, ref + 1) : NULL;
            const char *why = NULL;
            if (v && !json_is_null(v)) {
                value = member_text(v, num, sizeof num, &why);
                if (!value) {
                    web_json_error(w, 400, "%s must be %s", ref + 1, why);
                    return false;
                }
            }
            if (!value && !optional) {
                web_json_error(w, 400, "missing member \"%s\" in the JSON body", ref + 1);
                return false;
            }
        } else if (ref[0] == '%') {
            value = web_query(r, ref + 1);
            if (value && !*value)
                value = NULL;
            if (!value && !optional) {
                web_json_error(w, 400, "missing query parameter %s", ref + 1);
                return false;
            }
        } else {
            value = ref; /* a literal */
        }
        if (value && !argv_push(a, prefix, value))
            goto oom;
    }
    if (rt->flags & R_UNSET_FIELDS) {
        const char *fields = web_query(r, "fields");
        if (!fields || !*fields) {
            if (!argv_push(a, "--all", ""))
                goto oom;
        } else {
            char list[256];
            snprintf(list, sizeof list, "%s", fields);
            char *s2 = NULL;
            for (char *f = strtok_r(list, ",", &s2); f; f = strtok_r(NULL, ",", &s2)) {
                for (char *c = f; *c; c++)
                    if (*c == '_')
                        *c = '-';
                if (!argv_push(a, "--", f))
                    goto oom;
            }
        }
    }
    return true;
oom:
    web_json_error(w, 503, "out of memory");
    return false;
}

/* True when every member of body is one the route takes ("$name" in its template, or the
 * password); answers w (400) otherwise. */
static bool body_members_known(const route_t *rt, json_t *body, web_resp_t *w)
{
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v) {
        (void)v;
        if ((rt->flags & R_PASSWORD) && strcmp(key, "password") == 0)
            continue;
        char pat[80];
        snprintf(pat, sizeof pat, "$%s", key);
        const char *hit = strstr(rt->args, pat);
        size_t n = strlen(pat);
        bool known = false;
        for (; hit; hit = strstr(hit + 1, pat))
            if (hit[n] == '\0' || hit[n] == ' ' || hit[n] == '?')
                known = true;
        char flag[80];
        snprintf(flag, sizeof flag, "!%s", key);
        if (!known && !strstr(rt->args, flag)) {
            web_json_error(w, 400, "unknown member \"%s\" in the JSON body", key);
            return false;
        }
    }
    return true;
}

/* ---- running a command ---------------------------------------------------------------- */

static int bus_publish_cb(void *arg, const char *subject, const void *data, size_t len)
{
    return bus_publish(arg, subject, data, len);
}

/* The command's messages as one line: "mailctl: " prefixes and "usage:" blocks dropped. */
static void error_text(const char *err, char *out, size_t out_len)
{
    size_t n = 0;
    out[0] = '\0';
    char *copy = strdup(err ? err : ""), *save = NULL;
    bool usage = false;
    for (char *line = copy ? strtok_r(copy, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "usage:", 6) == 0)
            usage = true;
        if (usage)
            continue;
        if (strncmp(line, "mailctl: ", 9) == 0)
            line += 9;
        int m = snprintf(out + n, out_len - n, "%s%s", n ? "; " : "", line);
        if (m < 0 || (size_t)m >= out_len - n)
            break;
        n += (size_t)m;
    }
    free(copy);
}

/* True when a command's refusal says that what it was asked about does not exist. */
static bool not_found(const char *msg)
{
    static const char *const starts[] = { "no admin ", "no user ", "no message with ",
                                          "there is no " };
    static const char *const parts[] = { "no such", "not hosted", "does not exist",
                                         " is not blocked", " is not an alert address",
                                         " is not in the " };
    for (size_t i = 0; i < sizeof starts / sizeof starts[0]; i++)
        if (strncmp(msg, starts[i], strlen(starts[i])) == 0)
            return true;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (strstr(msg, parts[i]))
            return true;
    return false;
}

void web_run_command(web_t *web, const char *actor, const char *const *argv, int argc,
                     const char *password, web_resp_t *w)
{
    web_run_command_domain(web, actor, argv, argc, password, NULL, w);
}

void web_run_command_domain(web_t *web, const char *actor, const char *const *argv, int argc,
                            const char *password, const char *domain, web_resp_t *w)
{
    char *words[3];
    int nwords = argc < 3 ? argc : 3, used = 0;
    bool group_known = false;
    for (int i = 0; i < nwords; i++)
        words[i] = (char *)argv[i];
    const command_t *cmd = argc ? admin_command_find(words, nwords, &used, &group_known) : NULL;
    if (!cmd) {
        web_json_error(w, 500, "no such command");
        return;
    }
    int nargs = argc - used;
    if (!(cmd->flags & CMD_OPTIONS) && (nargs < cmd->min_args || nargs > cmd->max_args)) {
        web_json_error(w, 400, "%s", nargs < cmd->min_args ? "missing argument" : "too many arguments");
        return;
    }
    ctl_t ctl = { 0 };
    ctl.json = true;
    ctl.password = password;
    ctl.domain = domain;
    ctl.publish = bus_publish_cb;
    ctl.publish_arg = web->bus;
    snprintf(ctl.actor, sizeof ctl.actor, "%s", actor);
    ctl.nats_url = getenv("NATS_URL");
    ctl.nats_user = getenv("NATS_USER");
    ctl.nats_tls_ca = getenv("NATS_TLS_CA");
    ctl.nats_password = web->nats_password;
    if (!(cmd->flags & CMD_NO_DB)) {
        ctl.pg = pgpool_get(web->pool);
        if (!ctl.pg) {
            web_json_error(w, 503, "the database is not available: try again shortly");
            return;
        }
        ctl.pg_borrowed = true;
    }
    PGconn *pg = ctl.pg;
    char *out = NULL, *err = NULL;
    size_t out_len = 0, err_len = 0;
    FILE *fo = open_memstream(&out, &out_len), *fe = open_memstream(&err, &err_len);
    if (!fo || !fe) {
        if (fo)
            fclose(fo);
        if (fe)
            fclose(fe);
        pgpool_put(web->pool, pg);
        web_json_error(w, 503, "out of memory");
        return;
    }
    ctl_set_streams(fo, fe);
    int rc = admin_command_run(&ctl, cmd, (char **)argv + used, nargs);
    ctl_set_streams(NULL, NULL);
    fclose(fo);
    fclose(fe);
    pgpool_put(web->pool, pg);

    char msg[2048];
    error_text(err, msg, sizeof msg);
    if (rc == CTL_OK) {
        json_error_t jerr;
        json_t *j = out_len ? json_loadb(out, out_len, 0, &jerr) : json_object();
        if (!j) {
            web_json_error(w, 500, "the command's output is not JSON");
        } else {
            if (*msg && json_is_object(j))
                json_object_set_new(j, "warning", json_string(msg));
            web_json_value(w, j);
            json_decref(j);
        }
    } else if (rc == CTL_DB) {
        web_json_error(w, 503, "%s", *msg ? msg : "the database is not available");
    } else {
        /* Refusals of something that does not exist are 404s, the rest bad input. */
        unsigned status = not_found(msg) ? 404 : 400;
        web_json_error(w, status, "%s", *msg ? msg : "refused");
    }
    free(out);
    free(err);
}

/* ---- filtering lists for domain admins ---------------------------------------------- */

/* Keeps the items of the list (the answer itself, or its member list) whose member names
 * one of the session's domains (address: the domain of the address it holds). */
static void filter_list(const web_session_t *s, const char *list, const char *member,
                        bool address, web_resp_t *w)
{
    json_t *j = json_loadb(w->body.data, w->body.len, 0, NULL);
    json_t *arr = json_is_array(j) ? j : json_object_get(j, list);
    if (!json_is_array(arr)) {
        json_decref(j);
        return;
    }
    json_t *keep = json_array();
    size_t i;
    json_t *item;
    json_array_foreach(arr, i, item) {
        const char *v = json_string_value(json_object_get(item, member));
        const char *d = v && address ? strrchr(v, '@') : v;
        if (d && address)
            d++;
        if (d && web_admin_has_domain(s, d))
            json_array_append(keep, item);
    }
    json_t *out = keep;
    if (arr != j) {
        json_object_set_new(j, list, keep);
        out = j;
    }
    web_json_value(w, out);
    json_decref(j);
    if (out == keep)
        json_decref(keep);
}

/* ---- the API --------------------------------------------------------------------------- */

static const char *scope_domain(const route_t *rt, const params_t *ps, json_t *body,
                                char *buf, size_t len)
{
    const char *v = NULL;
    if (rt->scope[0] == '{')
        v = param(ps, rt->scope + 1, strlen(rt->scope) - 2);
    else if (rt->scope[0] == '$' && body)
        v = json_string_value(json_object_get(body, rt->scope + 1));
    if (!v)
        return NULL;
    const char *at = strrchr(v, '@');
    snprintf(buf, len, "%s", at ? at + 1 : v);
    for (char *c = buf; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return buf;
}

void web_api(web_t *web, const web_req_t *r, web_resp_t *w)
{
    const char *path = r->path;
    if (strcmp(path, "/api/v1/openapi.json") == 0) {
        if (!web_static("/openapi.json", w))
            web_json_error(w, 404, "no OpenAPI document");
        return;
    }
    web_session_t s;
    if (!web_authorize(web, r, WEB_ADMIN, "/api/v1/login", &s, w))
        return;
    if (strcmp(path, "/api/v1/logout") == 0) {
        if (strcmp(r->method, "POST") != 0)
            web_json_error(w, 405, "log out with POST");
        else
            web_logout(web, r, WEB_ADMIN, w);
        return;
    }
    if (strcmp(path, "/api/v1/session") == 0) {
        if (strcmp(r->method, "GET") != 0)
            web_json_error(w, 405, "%s is not allowed on %s", r->method, path);
        else
            web_session_json(&s, w);
        return;
    }
    if (strcmp(path, "/api/v1/dashboard") == 0 && strcmp(r->method, "GET") == 0) {
        if (!s.system)
            web_json_error(w, 403, "the dashboard is for system admins");
        else
            web_dashboard(web, w);
        return;
    }

    const route_t *rt = NULL;
    bool path_known = false;
    params_t ps;
    for (const route_t *x = routes; x->method; x++) {
        if (!path_match(x->path, path, &ps))
            continue;
        path_known = true;
        if (strcmp(x->method, r->method) == 0) {
            rt = x;
            break;
        }
    }
    if (!rt) {
        if (path_known)
            web_json_error(w, 405, "%s is not allowed on %s", r->method, path);
        else
            web_json_error(w, 404, "no such API path: %s", path);
        return;
    }
    json_t *body = NULL;
    if (r->body_len) {
        const char *ct = web_header(r, "Content-Type");
        if (!web_is_json(ct)) {
            web_json_error(w, 415, "send the body as application/json");
            return;
        }
        json_error_t jerr;
        body = json_loadb(r->body, r->body_len, 0, &jerr);
        if (!json_is_object(body)) {
            web_json_error(w, 400, "the body is not a JSON object%s%s", body ? "" : ": ",
                           body ? "" : jerr.text);
            json_decref(body);
            return;
        }
        if (!body_members_known(rt, body, w)) {
            json_decref(body);
            return;
        }
    }

    char domain[256];
    if (!s.system) {
        const char *d = rt->perm == PERM_SCOPE ? scope_domain(rt, &ps, body, domain, sizeof domain)
                                               : NULL;
        if (rt->perm == PERM_SYSTEM || (rt->perm == PERM_SCOPE && (!d || !web_admin_has_domain(&s, d)))) {
            web_json_error(w, 403, "%s", rt->perm == PERM_SYSTEM
                                             ? "only a system admin may do this"
                                             : "this concerns a domain you do not manage");
            json_decref(body);
            return;
        }
    }
    const char *ctl_domain = (rt->flags & R_CTL_DOMAIN) ? web_query(r, "domain") : NULL;
    if (ctl_domain && !*ctl_domain)
        ctl_domain = NULL;
    if (ctl_domain && !web_admin_has_domain(&s, ctl_domain)) {
        web_json_error(w, 403, "this concerns a domain you do not manage");
        json_decref(body);
        return;
    }

    argv_build_t a = { 0 };
    char words[64];
    snprintf(words, sizeof words, "%s", rt->words);
    char *save = NULL;
    bool ok = true;
    for (char *wd = strtok_r(words, " ", &save); wd && ok; wd = strtok_r(NULL, " ", &save))
        ok = argv_push(&a, "", wd);
    if (ok && build_args(rt, r, &ps, body, &a, w)) {
        const char *password = NULL;
        if (rt->flags & R_PASSWORD) {
            password = body ? json_string_value(json_object_get(body, "password")) : NULL;
            if (!password || !*password) {
                web_json_error(w, 400, "missing member \"password\" in the JSON body");
                goto out;
            }
        }
        char actor[160];
        snprintf(actor, sizeof actor, "web:%s from %s", s.name, r->client);
        web_run_command_domain(web, actor, (const char *const *)a.v, a.n, password, ctl_domain,
                               w);
        if (w->status == 200 && !s.system && (rt->flags & (R_FILTER_DOMAINS | R_FILTER_USERS)))
            filter_list(&s, rt->flags & R_FILTER_DOMAINS ? "domains" : "users",
                        rt->flags & R_FILTER_DOMAINS ? "name" : "address",
                        rt->flags & R_FILTER_USERS, w);
    } else if (!ok) {
        web_json_error(w, 503, "out of memory");
    }
out:
    argv_free(&a);
    json_decref(body);
}
