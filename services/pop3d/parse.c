/* POP3 command lines (RFC 1939 section 3, RFC 2449 section 3): a case-insensitive
 * keyword of three or four letters, then arguments separated by spaces. The whole text
 * after the keyword stays available as rest, for PASS (a password may hold spaces) and
 * AUTH. */
#include "pop3d.h"

#include <ctype.h>
#include <string.h>

#include "base/line.h"

int pop3_parse(char *line, size_t len, unsigned flags, pop3_request_t *req, const char **err_r)
{
    memset(req->keyword, 0, sizeof req->keyword);
    req->rest = line + len; /* "" */
    req->argc = 0;
    req->args[0] = '\0';
    if (flags & LINE_NUL) {
        *err_r = "NUL byte in command";
        return -1;
    }
    if (len == 0) {
        *err_r = "Empty command";
        return -1;
    }
    size_t k = 0;
    while (k < len && line[k] != ' ') {
        if (k >= 4 || !isalpha((unsigned char)line[k])) {
            *err_r = "Unknown command";
            return -1;
        }
        req->keyword[k] = (char)toupper((unsigned char)line[k]);
        k++;
    }
    if (k < 3) {
        *err_r = "Unknown command";
        return -1;
    }
    if (k == len)
        return 0;
    req->rest = line + k + 1;
    size_t rest_len = len - k - 1;
    if (rest_len >= sizeof req->args) {
        *err_r = "Line too long";
        return -1;
    }
    memcpy(req->args, req->rest, rest_len);
    req->args[rest_len] = '\0';
    char *p = req->args;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        if (req->argc == POP3_ARGS_MAX) {
            *err_r = "Too many arguments";
            return -1;
        }
        req->argv[req->argc++] = p;
        while (*p && *p != ' ')
            p++;
        if (*p)
            *p++ = '\0';
    }
    return 0;
}

int pop3_parse_number(const char *text, unsigned long *n_r)
{
    size_t n = strspn(text, "0123456789");
    if (n == 0 || n > 9 || text[n] != '\0')
        return -1;
    unsigned long v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (unsigned long)(text[i] - '0');
    *n_r = v;
    return 0;
}
