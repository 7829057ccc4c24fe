/* mailctl: messages on stderr, JSON strings and table widths for stdout. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mailctl.h"

int ctl_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mailctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CTL_USAGE;
}

void ctl_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mailctl: warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void json_str(FILE *f, const char *s)
{
    if (!s) {
        fputs("null", f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\b':
            fputs("\\b", f);
            break;
        case '\f':
            fputs("\\f", f);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

int out_width(const PGresult *res, int col, int min)
{
    int w = min;
    for (int i = 0; i < PQntuples(res); i++) {
        int len = PQgetlength(res, i, col);
        if (len > w)
            w = len;
    }
    return w;
}

void out_json_ok(const char *action, const char *key, const char *value)
{
    printf("{\"ok\":true,\"action\":");
    json_str(stdout, action);
    printf(",\"%s\":", key);
    json_str(stdout, value);
}

void out_json_rows(const PGresult *res, const out_col_t *cols, size_t ncols)
{
    printf("[");
    for (int i = 0; i < PQntuples(res); i++) {
        printf("%s{", i ? "," : "");
        for (size_t c = 0; c < ncols; c++) {
            const char *v = PQgetvalue(res, i, cols[c].col);
            printf("%s\"%s\":", c ? "," : "", cols[c].name);
            if (cols[c].kind == OUT_NUM)
                printf("%s", v);
            else if (cols[c].kind == OUT_BOOL)
                printf("%s", strcmp(v, "t") == 0 ? "true" : "false");
            else
                json_str(stdout, v);
        }
        printf("}");
    }
    printf("]");
}
