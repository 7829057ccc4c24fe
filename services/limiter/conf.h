/* The limiter's settings, resolved from the rows of table settings.
 *
 * HAMR (hamr.*) has three levels, user over domain over system; each field is inherited on
 * its own. Harvesting (harvest.*) is a system setting that a service may override field by
 * field as harvest.<smtp|pop3|imap|web>.<field>. Rows may come in any order: a value applies
 * unless a higher level has already set the field. Invalid values (by lib/base/settings.h rules)
 * are ignored, so the field is inherited as if it were unset. Defaults come from the same
 * table mailctl uses. */
#ifndef LIMITER_CONF_H
#define LIMITER_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Services, numbered as in the proto's Service. 0 stands for "no particular service": the
 * system-level harvesting settings, used for per-account counting. */
enum {
    CONF_SVC_NONE = 0,
    CONF_SVC_SMTP = 1,
    CONF_SVC_POP3 = 2,
    CONF_SVC_IMAP = 3,
    CONF_SVC_WEB = 4, /* webd: the console and the self-service page */
};
#define CONF_NSERVICES 5

typedef enum conf_level {
    CONF_DEFAULT = 0,
    CONF_SYSTEM = 1,
    CONF_DOMAIN = 2,  /* HAMR only */
    CONF_USER = 3,    /* HAMR only */
    CONF_SERVICE = 4, /* harvesting only: harvest.<service>.<field> */
} conf_level_t;

typedef enum hamr_field {
    HAMR_ENABLED,
    HAMR_MAX_MESSAGES,
    HAMR_INTERVAL,
    HAMR_ACTION,
    HAMR_ALERT,
    HAMR_MAX_RECIPIENTS,
    HAMR_ALERT_OWNER,
    HAMR_NFIELDS
} hamr_field_t;

typedef enum hamr_action { HAMR_THROTTLE, HAMR_DISABLE } hamr_action_t;

typedef struct hamr_conf {
    uint32_t max_messages;   /* at least 1 */
    uint32_t interval_s;     /* at least 1 */
    uint32_t max_recipients; /* 0: no limit */
    bool enabled, alert, alert_owner;
    uint8_t action;                /* hamr_action_t */
    uint8_t level[HAMR_NFIELDS];   /* conf_level_t each field came from */
} hamr_conf_t;

typedef enum harvest_field {
    HARVEST_ENABLED,
    HARVEST_MAX_FAILURES,
    HARVEST_INTERVAL,
    HARVEST_BLOCK,
    HARVEST_SOFT_LIMIT,
    HARVEST_HARD_LIMIT,
    HARVEST_NFIELDS
} harvest_field_t;

typedef struct harvest_conf {
    bool enabled;
    uint32_t max_failures, interval_s, block_s, soft_limit, hard_limit;
    uint8_t service; /* whose per-service keys apply; CONF_SVC_NONE: none */
    uint8_t level[HARVEST_NFIELDS];
} harvest_conf_t;

void hamr_conf_init(hamr_conf_t *c);
/* Applies key = value found at level (CONF_SYSTEM, CONF_DOMAIN or CONF_USER). Returns 1
 * when it applied, 0 when the key is not a HAMR key or a higher level already set the field,
 * -1 when the value is not valid for the key. */
int hamr_conf_apply(hamr_conf_t *c, conf_level_t level, const char *key, const char *value);
/* "100 messages (domain level) per 3600 s (system level)", or with recipients true the
 * same for max_recipients. Returns buf. */
const char *hamr_conf_limit(const hamr_conf_t *c, bool recipients, char *buf, size_t len);

void harvest_conf_init(harvest_conf_t *c, int service);
/* Applies a system setting: harvest.<field>, or harvest.<service>.<field> for this conf's
 * service (other services' keys are not for it: 0). Returns 1, 0 or -1 as above. */
int harvest_conf_apply(harvest_conf_t *c, const char *key, const char *value);
/* "10 failures (system level) per 600 s (imap level)". Returns buf. */
const char *harvest_conf_limit(const harvest_conf_t *c, harvest_field_t count_field,
                               const char *what, char *buf, size_t len);

/* "default", "system", "domain", "user", or the service's name for CONF_SERVICE. */
const char *conf_level_name(conf_level_t level, int service);
/* "smtp", "pop3", "imap", "web", or "any". */
const char *conf_service_name(int service);
/* The service named "smtp", "pop3", "imap" or "web"; CONF_SVC_NONE for any other name. */
int conf_service_number(const char *name);

#endif
