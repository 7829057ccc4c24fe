#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/* Set once at start, before any thread exists; read-only afterwards. */
static const char *log_service = "postern";
static enum log_level log_threshold = LOG_INFO;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_init(const char *service)
{
    log_service = service;
    setvbuf(stderr, NULL, _IOLBF, 0);
}

void log_set_level(enum log_level level)
{
    log_threshold = level;
}

/* "ts=YYYY-MM-DDTHH:MM:SS" of second sec, formatted once a second per thread. */
static const char *log_second(time_t sec)
{
    static _Thread_local time_t cached = -1;
    static _Thread_local char text[64];
    if (sec != cached) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        snprintf(text, sizeof text, "ts=%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cached = sec;
    }
    return text;
}

void log_msg(enum log_level level, const char *msg, const char *fmt, ...)
{
    if (level < log_threshold)
        return;
    char line[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    int n = snprintf(line, sizeof line, "%s.%03ldZ level=%s svc=%s msg=\"%s\"",
                     log_second(tv.tv_sec), (long)(tv.tv_usec / 1000), level_names[level],
                     log_service, msg);
    if (n < 0 || (size_t)n >= sizeof line - 1)
        n = sizeof line - 2;
    if (fmt && *fmt && (size_t)n < sizeof line - 3) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof line - 1 - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0)
            n += m;
        if ((size_t)n >= sizeof line - 1)
            n = sizeof line - 2;
    }
    /* Never let a client-supplied byte break the one-line-per-event rule. */
    for (int i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, stderr); /* one line, one write (stderr is line-buffered) */
}

void log_value(char *out, size_t out_len, const char *text)
{
    if (out_len == 0)
        return;
    size_t n = 0;
    for (const char *p = text ? text : ""; *p && n + 1 < out_len; p++) {
        char ch = *p;
        if (ch == '"')
            ch = '\'';
        else if (ch == '\n' || ch == '\r' || ch == '\t')
            ch = ' ';
        out[n++] = ch;
    }
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}
