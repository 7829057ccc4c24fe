#include "base/text.h"

#include <string.h>

#define TEXT_ELLIPSIS "..."

const char *text_echo(char *out, size_t out_len, const char *in, size_t len)
{
    if (out_len == 0)
        return "";
    size_t n = len < out_len - 1 ? len : out_len - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    out[n] = '\0';
    size_t mark = sizeof TEXT_ELLIPSIS - 1;
    if (n < len && n >= mark)
        memcpy(out + n - mark, TEXT_ELLIPSIS, mark);
    return out;
}

size_t text_scrub(char *s, size_t len)
{
    size_t replaced = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            s[i] = '?';
            replaced++;
        }
    }
    return replaced;
}
