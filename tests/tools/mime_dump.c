/* mime_dump FILE: prints the IMAP ENVELOPE, BODYSTRUCTURE and BODY of the message in FILE
 * (lib/mail), one per line in that order, for tests/e2e/test_mime_diff.py. A string that
 * needs a literal carries its CRLF inside the line, as on the wire.
 * mime_dump FILE SECTION...: for each BODY[SECTION] (mail_section) prints "RC LEN", a line
 * break, the LEN bytes and a line break. Exit 1 on errors. */
#include "mail/mime.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: mime_dump FILE.eml [SECTION...]\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        perror(argv[1]);
        return 1;
    }
    char *raw = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            char *p = realloc(raw, cap);
            if (!p) {
                fprintf(stderr, "mime_dump: out of memory\n");
                return 1;
            }
            raw = p;
        }
        size_t n = fread(raw + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    if (argc > 2) {
        for (int i = 2; i < argc; i++) {
            size_t off, n;
            char *copy;
            int rc = mail_section(raw, len, argv[i], &off, &n, &copy);
            if (rc != 0)
                n = 0;
            printf("%d %zu\n", rc, n);
            fwrite(copy ? copy : raw + off, 1, n, stdout);
            printf("\n");
            free(copy);
        }
        free(raw);
        return 0;
    }
    mail_info_t info;
    if (mail_info_compute(raw, len, &info) < 0) {
        fprintf(stderr, "mime_dump: out of memory\n");
        return 1;
    }
    printf("%s\n%s\n%s\n", info.envelope, info.bodystructure, info.body);
    mail_info_free(&info);
    free(raw);
    return 0;
}
