/* Envelope addresses (RFC 5321 section 4.1.2) and the relay decision. Strict on purpose:
 * every classic relay trick (source routes, %-hack, bang paths, quoted local parts holding
 * '@', trailing dots, address literals) either fails to parse or is caught here. */
#include "smtpd.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <string.h>

static bool is_atext(int c)
{
    /* RFC 5322 section 3.2.3 */
    return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static bool dot_atom_valid(const char *s, size_t len)
{
    if (len == 0 || s[0] == '.' || s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '.') {
            if (s[i + 1] == '.')
                return false;
        } else if (c >= 0x80 || !is_atext(c)) {
            return false;
        }
    }
    return true;
}

static bool domain_valid(const char *d, size_t len)
{
    if (len == 0 || len > 255)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)d[i];
        if (c == '.') {
            if (label == 0 || d[i - 1] == '-')
                return false;
            label = 0;
        } else if (isalnum(c) || (c == '-' && label > 0)) {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0 && d[len - 1] != '-'; /* no trailing dot, no trailing hyphen */
}

static bool literal_valid(const char *d, size_t len)
{
    char tmp[64];
    unsigned char out[16];
    if (len < 3 || d[0] != '[' || d[len - 1] != ']' || len - 2 >= sizeof tmp)
        return false;
    memcpy(tmp, d + 1, len - 2);
    tmp[len - 2] = '\0';
    if (strncasecmp(tmp, "IPv6:", 5) == 0)
        return inet_pton(AF_INET6, tmp + 5, out) == 1;
    return inet_pton(AF_INET, tmp, out) == 1;
}

#define FAIL(...)                                                                          \
    do {                                                                                   \
        snprintf(err, err_len, __VA_ARGS__);                                               \
        return -1;                                                                         \
    } while (0)

/* Splits "local@domain" (local already unquoted) into path. */
static int path_mailbox(const char *local, size_t llen, const char *domain, size_t dlen,
                        smtp_path_t *p, char *err, size_t err_len)
{
    if (llen > 64)
        FAIL("501 5.1.3 Local part too long");
    if (!dot_atom_valid(local, llen))
        FAIL("501 5.1.3 Bad local part syntax");
    if (dlen > 0 && domain[0] == '[') {
        if (!literal_valid(domain, dlen))
            FAIL("501 5.1.3 Bad address literal");
        p->literal = true;
    } else if (!domain_valid(domain, dlen)) {
        FAIL("501 5.1.3 Bad domain syntax");
    }
    memcpy(p->local, local, llen);
    p->local[llen] = '\0';
    for (size_t i = 0; i < dlen; i++)
        p->domain[i] = (char)tolower((unsigned char)domain[i]);
    p->domain[dlen] = '\0';
    if (llen + 1 + dlen > SMTP_PATH_MAX - 2)
        FAIL("501 5.1.3 Address too long");
    memcpy(p->address, p->local, llen);
    p->address[llen] = '@';
    memcpy(p->address + llen + 1, p->domain, dlen + 1);
    return 0;
}

int smtp_path_parse(const char *arg, bool allow_null, smtp_path_t *p, char *err, size_t err_len)
{
    memset(p, 0, sizeof *p);
    p->params = "";
    while (*arg == ' ')
        arg++; /* "MAIL FROM: <a@b>" is common enough to accept */
    if (*arg != '<')
        FAIL("501 5.1.3 Address must be enclosed in <>");
    const char *start = arg + 1, *q = start;
    bool quoted = false;
    for (; *q && (quoted || *q != '>'); q++) {
        if (*q == '\\' && quoted && q[1])
            q++;
        else if (*q == '"')
            quoted = !quoted;
    }
    if (*q != '>')
        FAIL("501 5.1.3 Missing > after address");
    size_t len = (size_t)(q - start);
    if (q[1] != '\0' && q[1] != ' ')
        FAIL("501 5.5.4 Unexpected text after address");
    for (p->params = q + 1; *p->params == ' '; p->params++)
        ;
    if (len == 0) {
        if (!allow_null)
            FAIL("501 5.1.3 Empty address not allowed here");
        return 0;
    }
    if (len > SMTP_PATH_MAX - 2)
        FAIL("501 5.1.3 Address too long");
    if (start[0] == '@')
        FAIL("553 5.1.3 Source routes are not accepted");

    char local[SMTP_PATH_MAX];
    size_t llen = 0;
    const char *at;
    if (start[0] == '"') {
        /* A quoted local part is accepted only when it says what a plain one could. */
        const char *c = start + 1;
        for (; c < q && *c != '"'; c++) {
            if (*c == '\\' && c + 1 < q)
                c++;
            local[llen++] = *c;
        }
        if (c >= q || c[1] != '@' || !dot_atom_valid(local, llen))
            FAIL("553 5.1.3 Quoted local parts are not accepted");
        at = c + 1;
    } else {
        at = memchr(start, '@', len);
        if (!at)
            FAIL("501 5.1.3 Address needs a domain");
        llen = (size_t)(at - start);
        memcpy(local, start, llen);
    }
    return path_mailbox(local, llen, at + 1, (size_t)(q - at - 1), p, err, err_len);
}

relay_mode_t smtp_relay_mode(const char *setting)
{
    if (setting && strcmp(setting, "anyone") == 0)
        return RELAY_ANYONE;
    if (setting && strcmp(setting, "select") == 0)
        return RELAY_SELECT;
    return RELAY_NONE; /* unknown values fail closed */
}

bool smtp_may_relay(relay_mode_t mode, bool authenticated, bool client_in_relay_list)
{
    if (authenticated || mode == RELAY_ANYONE)
        return true;
    return mode == RELAY_SELECT && client_in_relay_list;
}

bool smtp_local_part_routes(const char *local)
{
    return strpbrk(local, "%!@") != NULL;
}
