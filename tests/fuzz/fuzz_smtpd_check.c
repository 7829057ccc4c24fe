/* SMTP envelope addresses (services/smtpd/check.c): what follows "MAIL FROM:" or "RCPT TO:"
 * as the client sent it. A parsed path must be what the relay decision can trust: a local
 * part of dot-atoms (no quotes, no routing characters hidden in a quoted string), a domain
 * of LDH labels in lower case or a valid address literal, and the address exactly
 * local@domain. A refusal must be a complete reply that smtpd can send as it is
 * ("5xx x.x.x text": cmd.c reads the code with atoi() and the text from the fifth byte).
 *
 * Input: byte 0 bit 0 = the null path <> is allowed (MAIL) or not (RCPT); the rest is the
 * argument (a NUL ends it, as the line reader's LINE_NUL lines never get here). */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtpd.h"

static void check_refusal(const char *err)
{
    size_t n = strlen(err);
    if (n < 5 || err[0] != '5' || !isdigit((unsigned char)err[1]) ||
        !isdigit((unsigned char)err[2]) || err[3] != ' ' || err[4] == '\0')
        abort();
    int code = atoi(err);
    if (code < 500 || code > 559)
        abort();
}

static void check_path(const char *arg, const smtp_path_t *p, bool allow_null)
{
    size_t alen = strlen(p->address), llen = strlen(p->local), dlen = strlen(p->domain);
    if (!p->params || p->params < arg || p->params > arg + strlen(arg) || *p->params == ' ')
        abort();
    if (alen == 0) {
        if (!allow_null || llen || dlen)
            abort();
        return;
    }
    if (alen > SMTP_PATH_MAX - 2 || llen == 0 || llen > 64 || dlen == 0 ||
        alen != llen + 1 + dlen || memcmp(p->address, p->local, llen) != 0 ||
        p->address[llen] != '@' || strcmp(p->address + llen + 1, p->domain) != 0)
        abort();
    for (size_t i = 0; i < llen; i++) {
        unsigned char c = (unsigned char)p->local[i];
        if (c <= ' ' || c >= 0x7f || strchr("\"(),:;<>@[\\]", c))
            abort();
    }
    if (p->local[0] == '.' || p->local[llen - 1] == '.' || strstr(p->local, ".."))
        abort();
    for (size_t i = 0; i < dlen; i++) {
        unsigned char c = (unsigned char)p->domain[i];
        if (isupper(c) || c <= ' ' || c >= 0x7f)
            abort();
        if (!p->literal && !isalnum(c) && c != '-' && c != '.')
            abort();
    }
    if (p->literal != (p->domain[0] == '['))
        abort();
    smtp_local_part_routes(p->local);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    bool allow_null = data[0] & 1;
    char *arg = malloc(size);
    if (!arg)
        return 0;
    memcpy(arg, data + 1, size - 1);
    arg[size - 1] = '\0';
    smtp_path_t path;
    char err[256];
    if (smtp_path_parse(arg, allow_null, &path, err, sizeof err) == 0)
        check_path(arg, &path, allow_null);
    else
        check_refusal(err);
    /* The relay decision is a pure function of its inputs: refuse unknown modes. */
    relay_mode_t mode = smtp_relay_mode(arg);
    if (mode != RELAY_NONE && strcmp(arg, "anyone") && strcmp(arg, "select"))
        abort();
    if (smtp_may_relay(RELAY_NONE, false, true) || smtp_may_relay(mode, false, false) !=
                                                       (mode == RELAY_ANYONE))
        abort();
    free(arg);
    return 0;
}
