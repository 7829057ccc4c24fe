/* A growable byte buffer. The data is always followed by a NUL byte that is not part
 * of len, so a buffer holding text can be used as a C string. Capacity doubles as the
 * buffer grows; buf_reset() keeps it for reuse, buf_free() and a buf_consume() that
 * empties a buffer grown past BUF_KEEP give it back. */
#ifndef POSTERN_BUF_H
#define POSTERN_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
} buf_t;

/* What an emptied buffer may keep for reuse in buf_consume(). */
#define BUF_KEEP (64 * 1024)

void buf_init(buf_t *b);
void buf_free(buf_t *b);
/* Empties b and keeps its capacity: b->data stays valid. */
void buf_reset(buf_t *b);
/* Return 0, or -1 when memory runs out (the buffer is left as it was). */
int buf_append(buf_t *b, const void *data, size_t len);
/* As buf_append(), but the capacity never grows past cap_max bytes (the NUL included):
 * doubling stops there. Returns -1, leaving b as it was, when len more bytes do not fit
 * in cap_max or memory runs out. For buffers with a known bound (a message under
 * smtp.max_message_size), which then never hold more than the bound. */
int buf_append_capped(buf_t *b, const void *data, size_t len, size_t cap_max);
/* Inserts len bytes before the data (which moves). Returns 0, or -1 when memory runs out
 * (the buffer is left as it was). */
int buf_prepend(buf_t *b, const void *data, size_t len);
int buf_puts(buf_t *b, const char *s);
/* v in decimal (what "%llu" writes, without printf's cost on a hot path). */
int buf_put_uint(buf_t *b, uint64_t v);
int buf_printf(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf_t *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Drops the first n bytes. A buffer that this empties gives its memory back when its
 * capacity is over BUF_KEEP (an input buffer that a burst made large does not stay
 * large); b->data is then the empty string. */
void buf_consume(buf_t *b, size_t n);

/* Large buffers for reuse, a few per thread. A buffer over glibc's mmap threshold (128 KiB,
 * fixed in svc_main) is mapped when it grows there and unmapped when freed, its pages
 * faulted in one by one in between: for a reply or a message of 64 KiB to 128 KiB that is
 * made and dropped again and again (a FETCH, a RETR), that cost more than the copy itself.
 * buf_recycle() frees b, keeping its memory when its capacity is from BUF_SPARE_MIN to
 * BUF_SPARE_MAX and it is larger than the smallest of the BUF_SPARES kept; buf_from_spare()
 * gives b one of them, what it holds copied in, when appending extra bytes would make it
 * grow past BUF_SPARE_MIN and a spare is large enough. At most BUF_SPARES * BUF_SPARE_MAX
 * bytes a thread. */
#define BUF_SPARES 4
#define BUF_SPARE_MIN (64 * 1024)
#define BUF_SPARE_MAX (256 * 1024)
void buf_recycle(buf_t *b);
void buf_from_spare(buf_t *b, size_t extra);
/* Frees the calling thread's spares (a process over its memory budget). True when there
 * were any. */
bool buf_drop_spares(void);

#endif
