/* SMTP replies as a client reads them (RFC 5321 section 4.2) and the EHLO keywords they
 * announce (section 4.1.1.1).
 *
 * A reply is one or more lines "CODE-text" ending with a line "CODE text"; every line has the
 * same three-digit code. A server's enhanced status code (RFC 3463, announced with
 * ENHANCEDSTATUSCODES, RFC 2034) opens the text of each line: "550-5.1.1 no such" /
 * "550 5.1.1 user". The parser takes it from the first line, drops it from every line
 * that repeats it, and joins the texts with '\n'.
 *
 * Tolerated, as servers send them: a bare LF as line end, and a last line that is only the
 * code ("250\r\n"). Anything else that is not a reply line is an error ("250ok" too: the
 * code must be followed by ' ', '-' or the end of the line), so are more lines or longer
 * lines than the caps allow. */
#ifndef POSTERN_RELAYD_REPLY_H
#define POSTERN_RELAYD_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "base/line.h"

/* RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. Servers
 * exceed it; the default cap leaves room. */
#define REPLY_LINE_MAX 2048
#define REPLY_LINES_MAX 100

typedef struct reply {
    int code;        /* 200..559 */
    char status[16]; /* enhanced status code, "5.1.1"; "" when the reply has none */
    const char *text; /* the lines' texts joined with '\n', NUL-terminated; control bytes
                         shown as '?'; valid until the next call on the parser */
    size_t lines;
} reply_t;

typedef struct reply_parser {
    line_reader_t lr;
    size_t max_lines;
    size_t lines; /* lines of the reply being read */
    int code;
    char status[16];
    buf_t text;
} reply_parser_t;

/* max_line: longest line accepted, its line end included; max_lines: lines in one reply.
 * 0 takes REPLY_LINE_MAX / REPLY_LINES_MAX. */
void reply_parser_init(reply_parser_t *p, size_t max_line, size_t max_lines);
void reply_parser_free(reply_parser_t *p);
/* Reads from in (consuming what it used) until one reply is complete.
 * 1 = a reply in *r, 0 = need more input (all of in was taken), -1 = not a valid reply
 * (*error_r says why; the stream cannot be trusted afterwards). */
int reply_parse(reply_parser_t *p, buf_t *in, reply_t *r, const char **error_r);

/* What an EHLO reply offers (RFC 5321 section 4.1.1.1: the first line is the server's name,
 * each further line one keyword with its parameters, keywords case-insensitive). */
typedef struct ehlo_caps {
    bool pipelining;          /* RFC 2920 */
    bool size;                /* RFC 1870 */
    uint64_t size_max;        /* SIZE n; 0: no fixed maximum announced */
    bool eightbitmime;        /* RFC 6152 */
    bool starttls;            /* RFC 3207 */
    bool smtputf8;            /* RFC 6531 */
    bool enhancedstatuscodes; /* RFC 2034 */
} ehlo_caps_t;

/* text: the joined text of a 250 reply to EHLO (reply_t.text). Unknown keywords are
 * ignored; a SIZE parameter that is not a number counts as no fixed maximum. */
void ehlo_caps_parse(const char *text, ehlo_caps_t *caps);

#endif
