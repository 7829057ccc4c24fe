/* Client text inside protocol replies. A reply may quote what the client sent (an unknown
 * parameter, an address, a command name), but never a byte that ends the reply line early,
 * starts another one or drives the terminal of whoever reads the transcript. */
#ifndef POSTERN_TEXT_H
#define POSTERN_TEXT_H

#include <stddef.h>

/* Copies the len bytes at in to out (out_len bytes, at least 1; always NUL-terminated) for
 * quoting in a reply line: every byte outside printable US-ASCII (0x20-0x7E: control
 * characters, DEL, NUL, 8-bit bytes) becomes '?'; text longer than out_len - 1 bytes is cut
 * and ends in "..." (the cap is the caller's buffer). Returns out, for use as a printf
 * argument. */
const char *text_echo(char *out, size_t out_len, const char *in, size_t len);

/* The reply writers' last line of defence: replaces every control character (0x00-0x1F,
 * 0x7F, CR and LF included) in s[0..len) with '?'. Returns how many bytes it replaced. */
size_t text_scrub(char *s, size_t len);

#endif
