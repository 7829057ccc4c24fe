/* webd: the pages, embedded at build time (deploy/embed-www.sh): the console at / (its
 * login form included), the self-service page at /self/, the OpenAPI document. */
#include <stdio.h>
#include <string.h>

#include "webd.h"

typedef struct web_file {
    const char *path;
    const char *data;
    size_t len;
} web_file_t;
extern const web_file_t web_files[];

static const char *content_type(const char *path)
{
    static const char *const types[][2] = {
        { ".html", "text/html; charset=utf-8" },
        { ".css", "text/css; charset=utf-8" },
        { ".js", "text/javascript; charset=utf-8" },
        { ".json", "application/json" },
        { ".svg", "image/svg+xml" },
        { ".txt", "text/plain; charset=utf-8" },
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i][0]) == 0)
            return types[i][1];
    return "application/octet-stream";
}

bool web_static(const char *path, web_resp_t *w)
{
    char want[256];
    size_t n = strlen(path);
    if (n == 0 || n > 200 || strstr(path, ".."))
        return false;
    if (strcmp(path, "/self") == 0)
        snprintf(want, sizeof want, "/self/index.html");
    else
        snprintf(want, sizeof want, "%s%s", path, path[n - 1] == '/' ? "index.html" : "");
    for (const web_file_t *f = web_files; f->path; f++) {
        if (strcmp(f->path, want) != 0)
            continue;
        w->status = 200;
        w->type = content_type(want);
        w->cache = "no-cache";
        buf_reset(&w->body);
        buf_append(&w->body, f->data, f->len);
        return true;
    }
    return false;
}
