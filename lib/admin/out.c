/* mailctl: messages on ctl_err(), JSON strings and table widths for ctl_out(). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "admin/admin.h"

static _Thread_local FILE *thread_out, *thread_err;

FILE *ctl_out(void)
{
    return thread_out ? thread_out : stdout;
}

FILE *ctl_err(void)
{
    return thread_err ? thread_err : stderr;
}

void ctl_set_streams(FILE *out, FILE *err)
{
    thread_out = out;
    thread_err = err;
}

int ctl_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mailctl: ", ctl_err());
    vfprintf(ctl_err(), fmt, ap);
    fputc('\n', ctl_err());
    va_end(ap);
    return CTL_USAGE;
}

void ctl_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("mailctl: warning: ", ctl_err());
    vfprintf(ctl_err(), fmt, ap);
    fputc('\n', ctl_err());
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
    fprintf(ctl_out(), "{\"ok\":true,\"action\":");
    json_str(ctl_out(), action);
    fprintf(ctl_out(), ",\"%s\":", key);
    json_str(ctl_out(), value);
}

void out_json_rows(const PGresult *res, const out_col_t *cols, size_t ncols)
{
    fprintf(ctl_out(), "[");
    for (int i = 0; i < PQntuples(res); i++) {
        fprintf(ctl_out(), "%s{", i ? "," : "");
        for (size_t c = 0; c < ncols; c++) {
            const char *v = PQgetvalue(res, i, cols[c].col);
            fprintf(ctl_out(), "%s\"%s\":", c ? "," : "", cols[c].name);
            if (cols[c].kind == OUT_NUM)
                fprintf(ctl_out(), "%s", v);
            else if (cols[c].kind == OUT_BOOL)
                fprintf(ctl_out(), "%s", strcmp(v, "t") == 0 ? "true" : "false");
            else
                json_str(ctl_out(), v);
        }
        fprintf(ctl_out(), "}");
    }
    fprintf(ctl_out(), "]");
}
