/* Structured logging: one line per event on stderr, as key=value pairs.
 *   ts=2026-11-27T23:09:29.123Z level=info svc=smtpd msg="..." key=value ...
 * log_init() names the service once at start; everything else takes a format. */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_init(const char *service);
void log_set_level(enum log_level level);
/* fmt produces the rest of the line after msg, e.g. log_msg(LOG_INFO, "listening", "port=%d", p). */
void log_msg(enum log_level level, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies text (NULL: "") for a key="..." field: one line (CR, LF and tab become spaces),
 * double quotes turned into single ones, trailing white space dropped, cut to fit out_len. */
void log_value(char *out, size_t out_len, const char *text);

#define log_info(msg, ...)  log_msg(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...)  log_msg(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_msg(LOG_ERROR, msg, __VA_ARGS__)
#define log_debug(msg, ...) log_msg(LOG_DEBUG, msg, __VA_ARGS__)

#endif
