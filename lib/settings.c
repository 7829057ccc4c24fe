#include "settings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const setting_def_t settings_table[] = {
    { "relay.mode", "none", SETTING_ENUM, 0, 0, "none|select|anyone",
      "who may relay: none (authenticated clients only), select (plus the relay list), "
      "anyone (open relay)" },
    { "auth.sender_must_match", "on", SETTING_BOOL, 0, 0, NULL,
      "an authenticated user may only use sender addresses it owns" },
    { "auth.allow_plaintext", "off", SETTING_BOOL, 0, 0, NULL,
      "offer authentication outside TLS" },
    { "auth.failure_delay_ms", "1000", SETTING_INT, 0, 10000, NULL,
      "delay before answering a failed authentication (milliseconds)" },
    { "smtp.max_message_size", "26214400", SETTING_INT, 1024, 1073741824, NULL,
      "largest message accepted (bytes)" },
    { "smtp.max_recipients", "100", SETTING_INT, 1, 10000, NULL,
      "most recipients in one SMTP transaction" },
    { "smtp.idle_timeout", "300", SETTING_INT, 10, 3600, NULL,
      "seconds an SMTP client may stay silent" },
    { "smtp.max_errors", "20", SETTING_INT, 1, 1000, NULL,
      "errors in one SMTP session before it is closed" },
    { NULL, NULL, SETTING_ENUM, 0, 0, NULL, NULL },
};

const setting_def_t *settings_find(const char *key)
{
    if (!key)
        return NULL;
    for (const setting_def_t *d = settings_table; d->key; d++)
        if (strcmp(d->key, key) == 0)
            return d;
    return NULL;
}

/* True when word is one of the '|'-separated choices. */
static bool choice_valid(const char *choices, const char *word)
{
    size_t len = strlen(word);
    if (len == 0)
        return false;
    const char *p = choices;
    while (*p) {
        const char *end = strchr(p, '|');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && memcmp(p, word, len) == 0)
            return true;
        if (!end)
            break;
        p = end + 1;
    }
    return false;
}

/* Parses a canonical decimal integer: an optional '-', then digits, no leading zeros
 * (except "0" itself), at most 18 digits so it cannot overflow. */
static bool int_parse(const char *s, long long *out)
{
    const char *p = s;
    bool neg = false;
    if (*p == '-') {
        neg = true;
        p++;
    }
    size_t n = strspn(p, "0123456789");
    if (n == 0 || p[n] != '\0' || n > 18 || (n > 1 && p[0] == '0') || (neg && p[0] == '0'))
        return false;
    long long v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (p[i] - '0');
    *out = neg ? -v : v;
    return true;
}

bool settings_valid(const setting_def_t *def, const char *value)
{
    if (!def || !value)
        return false;
    long long v;
    switch (def->kind) {
    case SETTING_ENUM:
        return def->choices && choice_valid(def->choices, value);
    case SETTING_BOOL:
        return strcmp(value, "on") == 0 || strcmp(value, "off") == 0;
    case SETTING_INT:
        return int_parse(value, &v) && v >= def->min && v <= def->max;
    }
    return false;
}

const char *settings_expected(const setting_def_t *def, char *buf, size_t buf_len)
{
    if (buf_len == 0)
        return buf;
    switch (def->kind) {
    case SETTING_ENUM:
        snprintf(buf, buf_len, "%s", def->choices ? def->choices : "");
        break;
    case SETTING_BOOL:
        snprintf(buf, buf_len, "on|off");
        break;
    case SETTING_INT:
        snprintf(buf, buf_len, "an integer from %lld to %lld", def->min, def->max);
        break;
    default:
        buf[0] = '\0';
    }
    return buf;
}

bool settings_bool(const char *value)
{
    return value && strcmp(value, "on") == 0;
}

long long settings_int(const setting_def_t *def, const char *value)
{
    long long v = 0;
    if (value && settings_valid(def, value) && int_parse(value, &v))
        return v;
    if (def && def->default_value && int_parse(def->default_value, &v))
        return v;
    return 0;
}
