#include "base/settings.h"

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
    { "smtp.max_commands", "10000", SETTING_INT, 10, 1000000, NULL,
      "commands in one SMTP session before it is closed" },
    { "pop3.idle_timeout", "600", SETTING_INT, 600, 86400, NULL,
      "seconds a POP3 client may stay silent (RFC 1939: at least 600)" },
    { "pop3.max_errors", "20", SETTING_INT, 1, 1000, NULL,
      "errors in one POP3 session before it is closed" },
    { "imap.idle_timeout", "1800", SETTING_INT, 1800, 86400, NULL,
      "seconds an IMAP client may stay silent, IDLE included (RFC 3501 section 5.4: at least 1800)" },
    { "imap.max_errors", "20", SETTING_INT, 1, 1000, NULL,
      "errors in one IMAP session before it is closed" },
    { "pop3.lock_lease", "120", SETTING_INT, 10, 3600, NULL,
      "seconds a POP3 maildrop lock outlives a replica that died" },
    /* HAMR, the Hacked Account Mail Regulator: also at domain and user level. */
    { "hamr.enabled", "on", SETTING_BOOL, 0, 0, NULL,
      "count the messages authenticated users send" },
    { "hamr.max_messages", "100", SETTING_INT, 1, 1000000, NULL,
      "messages a user may send within hamr.interval" },
    { "hamr.interval", "3600", SETTING_INT, 1, 2592000, NULL,
      "the sliding window of HAMR (seconds)" },
    { "hamr.action", "throttle", SETTING_ENUM, 0, 0, "throttle|disable",
      "at the limit: throttle (451 until the window moves) or disable (550 until re-enabled)" },
    { "hamr.alert", "on", SETTING_BOOL, 0, 0, NULL,
      "mail the alert addresses when a user reaches the limit" },
    { "hamr.max_recipients", "0", SETTING_INT, 0, 10000000, NULL,
      "recipients a user may send to within hamr.interval (0: no limit)" },
    { "hamr.alert_owner", "off", SETTING_BOOL, 0, 0, NULL,
      "also tell the account's owner when it reaches the limit" },
    /* Account harvesting; the first four may also be set per service. */
    { "harvest.enabled", "on", SETTING_BOOL, 0, 0, NULL,
      "block client addresses that keep failing to authenticate" },
    { "harvest.max_failures", "10", SETTING_INT, 1, 100000, NULL,
      "failed authentications from one address within harvest.interval before a block" },
    { "harvest.interval", "600", SETTING_INT, 1, 2592000, NULL,
      "the window in which failures count (seconds)" },
    { "harvest.block", "3600", SETTING_INT, 1, 2592000, NULL,
      "how long a first block lasts (seconds)" },
    { "harvest.soft_limit", "5", SETTING_INT, 1, 100000, NULL,
      "invalid SMTP recipients from one address before replies are delayed" },
    { "harvest.hard_limit", "20", SETTING_INT, 1, 100000, NULL,
      "invalid SMTP recipients from one address before it is blocked" },
    /* The login history (table logins), written by the limiter. */
    { "logins.keep_days", "30", SETTING_INT, 1, 3650, NULL,
      "days the login history keeps each authentication outcome" },
    /* The front ends' side of the limiter. */
    { "limiter.timeout_ms", "500", SETTING_INT, 50, 10000, NULL,
      "how long a front end waits for the limiter (milliseconds)" },
    { "limiter.send_on_timeout", "tempfail", SETTING_ENUM, 0, 0, "tempfail|allow",
      "a message when the limiter does not answer: tempfail (451) or allow" },
    { "limiter.login_on_timeout", "local", SETTING_ENUM, 0, 0, "local|deny",
      "a login when the limiter does not answer: local (use the local block copy) or deny" },
    /* The notifier. */
    { "notifier.from", "", SETTING_ADDRESS, 0, 0, NULL,
      "From: of alert mail (empty: postmaster@ the first hosted domain)" },
    { "notifier.interval", "3600", SETTING_INT, 1, 2592000, NULL,
      "at most one alert per cause and user or address within this time (seconds)" },
    /* relayd: delivery of the outbound queue to other hosts. */
    { "relay.max_lifetime", "432000", SETTING_INT, 60, 2592000, NULL,
      "seconds a message may wait in the outbound queue before it is returned to the "
      "sender" },
    { "relay.delay_warning", "14400", SETTING_INT, 0, 2592000, NULL,
      "seconds a message waits before its sender gets one delay notice (0: never)" },
    { "relay.retry_min", "300", SETTING_INT, 1, 86400, NULL,
      "seconds after a message's first failed attempt before the next; each failure "
      "doubles the wait, up to relay.retry_max" },
    { "relay.retry_max", "14400", SETTING_INT, 1, 604800, NULL,
      "the longest wait between two attempts at a deferred message (seconds)" },
    { "relay.lease", "300", SETTING_INT, 5, 3600, NULL,
      "seconds a relayd holds a message it claimed before another replica may take it" },
    { "relay.destination_concurrency", "4", SETTING_INT, 1, 100, NULL,
      "connections one relayd keeps open to one destination at a time" },
    { "relay.concurrency", "50", SETTING_INT, 1, 10000, NULL,
      "messages one relayd delivers at a time" },
    { "relay.allow_private", "off", SETTING_BOOL, 0, 0, NULL,
      "off: never deliver to loopback, private or link-local addresses found in DNS (a "
      "transport may still name one); on: allow them, for tests and closed networks" },
    { NULL, NULL, SETTING_ENUM, 0, 0, NULL, NULL },
};

const char *const settings_services[] = { "smtp", "pop3", "imap", "web", NULL };

/* The harvesting fields that may be set per service. */
static const char *const per_service_fields[] = { "enabled", "max_failures", "interval",
                                                  "block", NULL };

#define HARVEST_PREFIX "harvest."
#define SETTING_ADDRESS_MAX 254

static const setting_def_t *settings_find_exact(const char *key)
{
    for (const setting_def_t *d = settings_table; d->key; d++)
        if (strcmp(d->key, key) == 0)
            return d;
    return NULL;
}

const char *settings_fallback_key(const char *key, char *buf, size_t buf_len)
{
    const size_t plen = sizeof HARVEST_PREFIX - 1;
    if (!key || strncmp(key, HARVEST_PREFIX, plen) != 0)
        return NULL;
    const char *service = key + plen;
    const char *dot = strchr(service, '.');
    if (!dot)
        return NULL;
    size_t slen = (size_t)(dot - service);
    bool known = false;
    for (const char *const *s = settings_services; *s; s++)
        if (strlen(*s) == slen && memcmp(*s, service, slen) == 0)
            known = true;
    if (!known)
        return NULL;
    const char *field = dot + 1;
    for (const char *const *f = per_service_fields; *f; f++) {
        if (strcmp(*f, field) != 0)
            continue;
        int n = snprintf(buf, buf_len, "%s%s", HARVEST_PREFIX, field);
        return n > 0 && (size_t)n < buf_len ? buf : NULL;
    }
    return NULL;
}

const setting_def_t *settings_find(const char *key)
{
    if (!key)
        return NULL;
    const setting_def_t *d = settings_find_exact(key);
    if (d)
        return d;
    char base[64];
    const char *fallback = settings_fallback_key(key, base, sizeof base);
    return fallback ? settings_find_exact(fallback) : NULL;
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

/* RFC 5322 atext. */
static bool is_atext(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           (ch != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", ch) != NULL);
}

/* Empty, or local@domain in lower case: a dot-atom local part of 1..64 characters and a
 * domain of LDH labels (1..63 characters, no leading or trailing '-') with at least one
 * dot; 254 characters at most. Nothing that could end a header line or start another. */
static bool address_valid(const char *value)
{
    size_t len = strlen(value);
    if (len == 0)
        return true;
    if (len > SETTING_ADDRESS_MAX)
        return false;
    const char *at = strchr(value, '@');
    if (!at || strchr(at + 1, '@'))
        return false;
    size_t local = (size_t)(at - value);
    if (local == 0 || local > 64 || value[0] == '.' || value[local - 1] == '.')
        return false;
    for (size_t i = 0; i < local; i++) {
        unsigned char ch = (unsigned char)value[i];
        if (ch == '.' ? value[i + 1] == '.' : !is_atext(ch))
            return false;
    }
    const char *domain = at + 1;
    if (!strchr(domain, '.'))
        return false;
    const char *label = domain;
    for (const char *p = domain;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t n = (size_t)(p - label);
            if (n == 0 || n > 63 || label[0] == '-' || p[-1] == '-')
                return false;
            if (*p == '\0')
                break;
            label = p + 1;
        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-')) {
            return false;
        }
    }
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
    case SETTING_ADDRESS:
        return address_valid(value);
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
    case SETTING_ADDRESS:
        snprintf(buf, buf_len, "an address user@domain, or empty");
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
