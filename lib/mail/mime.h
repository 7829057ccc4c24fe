/* The structure of a stored message as IMAP4rev1 shows it (RFC 3501), parsed with GMime 3.
 *
 * The raw message is never copied: section ranges point into it. Sizes are octets of the raw
 * message as given (a message stored with bare LF line ends reports bare-LF sizes, which
 * match what mail_section hands out). Thread-safe: GMime is initialised once. */
#ifndef POSTERN_MAIL_MIME_H
#define POSTERN_MAIL_MIME_H

#include <stddef.h>

/* IMAP4rev1 (RFC 3501 section 7.4.2) representations of a message, computed once. Each is
 * NUL-terminated IMAP syntax ready to be sent; strings that cannot be quoted strings are
 * literals ({n}CRLF...), so the text may hold CRLF. */
typedef struct mail_info {
    char *envelope;      /* "(date subject from sender reply-to to cc bcc in-reply-to message-id)" */
    char *bodystructure; /* BODYSTRUCTURE, with extension data (body-ext-1part / body-ext-mpart) */
    char *body;          /* BODY (no extension data) */
} mail_info_t;

/* Returns 0, or -1 when memory runs out (out is then empty). Broken MIME still gives an
 * answer: a multipart without parts shows one empty text/plain part (the grammar of
 * RFC 3501 section 9 needs at least one), a missing closing boundary ends at the end of
 * the enclosing part, an unparsable Content-Type is the RFC 2045 section 5.2 default. */
int mail_info_compute(const char *raw, size_t len, mail_info_t *out);
/* Frees the strings and empties info; NULL and an emptied info are harmless. */
void mail_info_free(mail_info_t *info);

/* Where a BODY[section] lives in raw (RFC 3501 section 6.4.5 FETCH BODY[<section>]).
 * section is the text inside the brackets, e.g. "", "HEADER", "TEXT", "1", "1.2",
 * "1.2.MIME", "2.HEADER", "2.TEXT", "HEADER.FIELDS (From Subject)",
 * "1.HEADER.FIELDS.NOT (Received)" (keywords case-insensitive). On success either
 * *off_r and *len_r give a range of raw (no copy; the caller streams it) and *copy_r is NULL,
 * or *copy_r is an allocated result (HEADER.FIELDS[.NOT]: the matching fields and the
 * blank line) of *len_r bytes that the caller frees.
 * Returns 0; 1 when the part does not exist (RFC 3501: an empty string is returned; also
 * HEADER/TEXT of a part that is not message/rfc822); -1 for a section that does not parse
 * (the caller answers BAD), or when memory runs out. */
int mail_section(const char *raw, size_t len, const char *section, size_t *off_r,
                 size_t *len_r, char **copy_r);

/* The text of a message as RFC 3501 section 6.4.4 SEARCH compares it in a charset other
 * than US-ASCII: "[MIME-IMB] content transfer encodings, and [MIME-HDRS] strings in
 * headers, MUST be decoded".
 * *headers_r: the top-level header fields, one "Name: value\n" each in their order, the
 * value unfolded (RFC 5322 section 2.2.3) with RFC 2047 encoded words decoded.
 * *body_r: the text of every part of media type "text" (also inside attached
 * message/rfc822 parts, after that message's header fields in the form above), its
 * Content-Transfer-Encoding (RFC 2045 section 6) undone and its charset (RFC 2046
 * section 4.1.2) converted to UTF-8, parts joined with "\n".
 * Both are NUL-terminated valid UTF-8 (an invalid sequence becomes U+FFFD; a NUL byte
 * ends the text of its part), so they can be stored as PostgreSQL text. Returns 0 (the caller frees
 * both), or -1 when memory runs out (both NULL). */
int mail_search_text(const char *raw, size_t len, char **headers_r, char **body_r);

#endif
