/* webd: the HTTPS server. libmicrohttpd with GnuTLS (TLS 1.2 and 1.3 only), one thread per
 * connection; every response carries HSTS, a strict Content-Security-Policy and the
 * usual hardening headers. A request body is collected up to WEB_BODY_MAX, then the
 * request goes to the API (/api/v1), the self-service API (/api/v1/self) or the pages. */
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "base/log.h"
#include "webd.h"

static const char *const security_headers[][2] = {
    { "Strict-Transport-Security", "max-age=31536000; includeSubDomains" },
    { "Content-Security-Policy",
      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
      "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'" },
    { "X-Content-Type-Options", "nosniff" },
    { "X-Frame-Options", "DENY" },
    { "Referrer-Policy", "no-referrer" },
    { "Cross-Origin-Opener-Policy", "same-origin" },
};

/* A request being read. */
typedef struct pending {
    buf_t body;
    bool too_big;
} pending_t;

const char *web_query(const web_req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *web_header(const web_req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *web_cookie(const web_req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_COOKIE_KIND, name);
}

void web_resp_header(web_resp_t *w, const char *name, const char *value)
{
    if (w->nheaders >= WEB_HEADERS_MAX)
        return;
    w->headers[w->nheaders][0] = strdup(name);
    w->headers[w->nheaders][1] = strdup(value);
    w->nheaders++;
}

void web_json_raw(web_resp_t *w, unsigned status, const char *json, size_t len)
{
    w->status = status;
    w->type = "application/json";
    w->body.len = 0;
    buf_append(&w->body, json, len);
}

void web_json_value(web_resp_t *w, const json_t *j)
{
    char *text = json_dumps(j, JSON_COMPACT);
    if (text)
        web_json_raw(w, 200, text, strlen(text));
    else
        web_json_error(w, 503, "out of memory");
    free(text);
}

/* s as a JSON string into b. */
void web_json_str(buf_t *b, const char *s)
{
    buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            buf_append(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            buf_append(b, esc, 6);
        } else {
            buf_append(b, (const char *)p, 1);
        }
    }
    buf_append(b, "\"", 1);
}

void web_json_error(web_resp_t *w, unsigned status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    w->status = status;
    w->type = "application/json";
    w->body.len = 0;
    buf_append(&w->body, "{\"error\":", 9);
    web_json_str(&w->body, msg);
    buf_append(&w->body, "}", 1);
}

/* The client's address as text; IPv4 clients of the dual-stack socket without ::ffff:. */
static void client_text(struct MHD_Connection *c, char *out, size_t out_len)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, out_len, "unknown");
    if (!ci || !ci->client_addr)
        return;
    socklen_t len = ci->client_addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                           : sizeof(struct sockaddr_in);
    if (getnameinfo(ci->client_addr, len, out, (socklen_t)out_len, NULL, 0, NI_NUMERICHOST) != 0)
        return;
    if (strncmp(out, "::ffff:", 7) == 0 && strchr(out + 7, '.'))
        memmove(out, out + 7, strlen(out + 7) + 1);
}

static void dispatch(web_t *web, const web_req_t *r, web_resp_t *w)
{
    if (strncmp(r->path, "/api/v1/self", 12) == 0 && (r->path[12] == '\0' || r->path[12] == '/'))
        web_self(web, r, w);
    else if (strncmp(r->path, "/api/", 5) == 0 || strcmp(r->path, "/api") == 0)
        web_api(web, r, w);
    else if (strcmp(r->method, "GET") != 0 && strcmp(r->method, "HEAD") != 0)
        web_json_error(w, 405, "only GET and HEAD are served here");
    else if (!web_static(r->path, w))
        web_json_error(w, 404, "no such page: %s", r->path);
}

static enum MHD_Result respond(struct MHD_Connection *c, web_resp_t *w)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(w->body.len, w->body.data,
                                                                MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    for (size_t i = 0; i < sizeof security_headers / sizeof security_headers[0]; i++)
        MHD_add_response_header(resp, security_headers[i][0], security_headers[i][1]);
    MHD_add_response_header(resp, "Content-Type", w->type ? w->type : "application/json");
    MHD_add_response_header(resp, "Cache-Control", w->cache ? w->cache : "no-store");
    for (int i = 0; i < w->nheaders; i++)
        MHD_add_response_header(resp, w->headers[i][0], w->headers[i][1]);
    enum MHD_Result rc = MHD_queue_response(c, w->status ? w->status : 500, resp);
    MHD_destroy_response(resp);
    return rc;
}

static void resp_free(web_resp_t *w)
{
    buf_free(&w->body);
    for (int i = 0; i < w->nheaders; i++) {
        free(w->headers[i][0]);
        free(w->headers[i][1]);
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **state)
{
    (void)version;
    web_t *web = cls;
    pending_t *p = *state;
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return MHD_NO;
        buf_init(&p->body);
        *state = p;
        return MHD_YES;
    }
    if (*upload_size) {
        if (p->body.len + *upload_size > WEB_BODY_MAX)
            p->too_big = true;
        else
            buf_append(&p->body, upload_data, *upload_size);
        *upload_size = 0;
        return MHD_YES;
    }

    web_resp_t w = { 0 };
    buf_init(&w.body);
    char client[WEB_ADDR_MAX];
    client_text(c, client, sizeof client);
    web_req_t r = {
        .method = method,
        .path = url,
        .body = p->body.data ? (const char *)p->body.data : "",
        .body_len = p->body.len,
        .client = client,
        .conn = c,
    };
    if (p->too_big)
        web_json_error(&w, 413, "the request body is larger than %d bytes", WEB_BODY_MAX);
    else
        dispatch(web, &r, &w);
    log_msg(w.status >= 500 ? LOG_WARN : LOG_INFO, "request", "client=%s method=%s path=\"%s\" status=%u",
            client, method, url, w.status);
    enum MHD_Result rc = respond(c, &w);
    resp_free(&w);
    return rc;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **state,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    pending_t *p = *state;
    if (p) {
        buf_free(&p->body);
        free(p);
        *state = NULL;
    }
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    log_msg(LOG_DEBUG, "http", "detail=\"%s\"", msg);
}

struct MHD_Daemon *http_start(web_t *web, int listen_fd, const char *cert, const char *key)
{
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_TLS | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    /* The daemon listens on a duplicate of the caller's socket: libmicrohttpd closes the
     * socket it was given when it does not start (a certificate that does not load at a
     * reload), and the caller's must stay open for the daemon that goes on serving. The
     * daemon closes its duplicate when it stops, or hands it back when quiesced. */
    int fd = fcntl(listen_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    return MHD_start_daemon(flags, 0, NULL, NULL, on_request, web,
                            MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_HTTPS_MEM_KEY, key,
                            MHD_OPTION_HTTPS_MEM_CERT, cert,
                            /* TLS 1.2 and 1.3 only */
                            MHD_OPTION_HTTPS_PRIORITIES,
                            "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                            MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
                            MHD_OPTION_END);
}

unsigned http_connections(struct MHD_Daemon *d)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    return i ? i->num_connections : 0;
}

bool web_is_json(const char *content_type)
{
    if (!content_type || strncasecmp(content_type, "application/json", 16) != 0)
        return false;
    const char *rest = content_type + 16;
    while (*rest == ' ')
        rest++;
    return *rest == '\0' || *rest == ';';
}
