/* The known system settings (table settings, scope 'system'): their keys, defaults and
 * what a valid value looks like. mailctl validates against this table before it stores a
 * value; services use the same table for the defaults of keys nobody has set.
 *
 * Values are stored as text in their canonical form: enums and booleans in lower case
 * ("on"/"off"), integers as plain decimal digits, addresses in lower case. settings_valid()
 * accepts only that form.
 *
 * HAMR keys (hamr.*) are also stored at scope 'domain' and 'user' with the same keys and
 * rules. Harvesting keys may be set per service as harvest.<smtp|pop3|imap|web>.<field>
 * for the fields enabled, max_failures, interval and block: settings_find() knows such a
 * key by its system key (the definition returned names harvest.<field>), and an unset
 * per-service key falls back to the system key, then to the default
 * (settings_fallback_key()). */
#ifndef POSTERN_SETTINGS_H
#define POSTERN_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

typedef enum setting_kind {
    SETTING_ENUM, /* one of the words in choices */
    SETTING_BOOL, /* "on" or "off" */
    SETTING_INT,  /* a decimal integer from min to max, inclusive */
    SETTING_ADDRESS, /* empty, or a mail address local@domain (dot-atom, lower case) */
} setting_kind_t;

typedef struct setting_def {
    const char *key;
    const char *default_value;
    setting_kind_t kind;
    long long min, max;  /* SETTING_INT only */
    const char *choices; /* SETTING_ENUM only: "a|b|c" */
    const char *help;    /* one line for people */
} setting_def_t;

/* Every known setting; the entry after the last has key NULL. */
extern const setting_def_t settings_table[];

/* The definition of key, or NULL when the key is not known. For a per-service harvesting
 * key (harvest.pop3.block) this is the definition of its system key (harvest.block). */
const setting_def_t *settings_find(const char *key);
/* For a per-service harvesting key "harvest.<service>.<field>" whose field may be set per
 * service, writes the system key it inherits from ("harvest.<field>") into buf and
 * returns buf; NULL for every other key (or when buf is too small). */
const char *settings_fallback_key(const char *key, char *buf, size_t buf_len);
/* The services a harvesting key may name, NULL-terminated: "smtp", "pop3", "imap", "web"
 * (webd's logins), in the order of the proto's Service. */
extern const char *const settings_services[];
/* True when value is a valid (canonical) value for def. */
bool settings_valid(const setting_def_t *def, const char *value);
/* What a valid value looks like, for error messages: "none|select|anyone", "on|off",
 * "an integer from 1 to 10000". Returns buf. */
const char *settings_expected(const setting_def_t *def, char *buf, size_t buf_len);

/* Parsing helpers for services. settings_bool() is true only for "on". settings_int()
 * returns value as a number when it is valid for def, otherwise def's default (value may
 * be NULL for "not set"). */
bool settings_bool(const char *value);
long long settings_int(const setting_def_t *def, const char *value);

#endif
