#include "conf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/settings.h"

static const char *const hamr_keys[HAMR_NFIELDS] = {
    [HAMR_ENABLED] = "hamr.enabled",
    [HAMR_MAX_MESSAGES] = "hamr.max_messages",
    [HAMR_INTERVAL] = "hamr.interval",
    [HAMR_ACTION] = "hamr.action",
    [HAMR_ALERT] = "hamr.alert",
    [HAMR_MAX_RECIPIENTS] = "hamr.max_recipients",
    [HAMR_ALERT_OWNER] = "hamr.alert_owner",
};

/* Defaults when lib/base/settings.c does not know a key (they agree with it). */
static const char *const hamr_fallback[HAMR_NFIELDS] = {
    [HAMR_ENABLED] = "on",     [HAMR_MAX_MESSAGES] = "100", [HAMR_INTERVAL] = "3600",
    [HAMR_ACTION] = "throttle", [HAMR_ALERT] = "on",         [HAMR_MAX_RECIPIENTS] = "0",
    [HAMR_ALERT_OWNER] = "off",
};

static const char *const harvest_fields[HARVEST_NFIELDS] = {
    [HARVEST_ENABLED] = "enabled",       [HARVEST_MAX_FAILURES] = "max_failures",
    [HARVEST_INTERVAL] = "interval",     [HARVEST_BLOCK] = "block",
    [HARVEST_SOFT_LIMIT] = "soft_limit", [HARVEST_HARD_LIMIT] = "hard_limit",
};

static const char *const harvest_fallback[HARVEST_NFIELDS] = {
    [HARVEST_ENABLED] = "on",   [HARVEST_MAX_FAILURES] = "10", [HARVEST_INTERVAL] = "600",
    [HARVEST_BLOCK] = "3600",   [HARVEST_SOFT_LIMIT] = "5",    [HARVEST_HARD_LIMIT] = "20",
};

const char *conf_service_name(int service)
{
    switch (service) {
    case CONF_SVC_SMTP: return "smtp";
    case CONF_SVC_POP3: return "pop3";
    case CONF_SVC_IMAP: return "imap";
    case CONF_SVC_WEB: return "web";
    }
    return "any";
}

int conf_service_number(const char *name)
{
    for (int s = CONF_SVC_NONE + 1; s < CONF_NSERVICES; s++)
        if (name && strcmp(name, conf_service_name(s)) == 0)
            return s;
    return CONF_SVC_NONE;
}

const char *conf_level_name(conf_level_t level, int service)
{
    switch (level) {
    case CONF_DEFAULT: return "default";
    case CONF_SYSTEM: return "system";
    case CONF_DOMAIN: return "domain";
    case CONF_USER: return "user";
    case CONF_SERVICE: return conf_service_name(service);
    }
    return "?";
}

/* Checks value by the rules of lib/base/settings.c: 1 (with *num set for an integer), or -1 when
 * invalid. A key lib/base/settings.c does not define (an older table) is taken as it is. */
static int conf_parse(const char *key, const char *value, uint32_t *num)
{
    const setting_def_t *def = settings_find(key);
    if (def) {
        if (!settings_valid(def, value))
            return -1;
        if (def->kind == SETTING_INT) {
            long long v = settings_int(def, value);
            if (v < 0 || v > UINT32_MAX)
                return -1;
            *num = (uint32_t)v;
        }
        return 1;
    }
    size_t n = strspn(value, "0123456789");
    if (n > 0 && n < 10 && value[n] == '\0')
        *num = (uint32_t)strtoul(value, NULL, 10);
    return 1;
}

/* Sets one HAMR field from a text value already known to be valid. */
static int hamr_set(hamr_conf_t *c, hamr_field_t f, const char *key, const char *value)
{
    uint32_t num = 0;
    if (conf_parse(key, value, &num) < 0)
        return -1;
    switch (f) {
    case HAMR_ENABLED: c->enabled = settings_bool(value); break;
    case HAMR_ALERT: c->alert = settings_bool(value); break;
    case HAMR_ALERT_OWNER: c->alert_owner = settings_bool(value); break;
    case HAMR_ACTION:
        if (strcmp(value, "throttle") == 0)
            c->action = HAMR_THROTTLE;
        else if (strcmp(value, "disable") == 0)
            c->action = HAMR_DISABLE;
        else
            return -1;
        break;
    case HAMR_MAX_MESSAGES:
        if (num < 1)
            return -1;
        c->max_messages = num;
        break;
    case HAMR_INTERVAL:
        if (num < 1)
            return -1;
        c->interval_s = num;
        break;
    case HAMR_MAX_RECIPIENTS: c->max_recipients = num; break;
    case HAMR_NFIELDS: return -1;
    }
    return 1;
}

void hamr_conf_init(hamr_conf_t *c)
{
    memset(c, 0, sizeof *c);
    for (int f = 0; f < HAMR_NFIELDS; f++) {
        const setting_def_t *def = settings_find(hamr_keys[f]);
        const char *v = def && def->default_value ? def->default_value : hamr_fallback[f];
        if (hamr_set(c, (hamr_field_t)f, hamr_keys[f], v) < 0)
            hamr_set(c, (hamr_field_t)f, hamr_keys[f], hamr_fallback[f]);
        c->level[f] = CONF_DEFAULT;
    }
}

int hamr_conf_apply(hamr_conf_t *c, conf_level_t level, const char *key, const char *value)
{
    for (int f = 0; f < HAMR_NFIELDS; f++) {
        if (strcmp(key, hamr_keys[f]) != 0)
            continue;
        if (c->level[f] > level)
            return 0;
        hamr_conf_t trial = *c;
        if (hamr_set(&trial, (hamr_field_t)f, key, value) < 0)
            return -1;
        *c = trial;
        c->level[f] = (uint8_t)level;
        return 1;
    }
    return 0;
}

const char *hamr_conf_limit(const hamr_conf_t *c, bool recipients, char *buf, size_t len)
{
    hamr_field_t f = recipients ? HAMR_MAX_RECIPIENTS : HAMR_MAX_MESSAGES;
    snprintf(buf, len, "%u %s (%s level) per %u s (%s level)",
             recipients ? c->max_recipients : c->max_messages,
             recipients ? "recipients" : "messages", conf_level_name(c->level[f], 0),
             c->interval_s, conf_level_name(c->level[HAMR_INTERVAL], 0));
    return buf;
}

static int harvest_set(harvest_conf_t *c, harvest_field_t f, const char *key, const char *value)
{
    uint32_t num = 0;
    if (conf_parse(key, value, &num) < 0)
        return -1;
    if (f == HARVEST_ENABLED) {
        if (strcmp(value, "on") != 0 && strcmp(value, "off") != 0)
            return -1;
        c->enabled = settings_bool(value);
        return 1;
    }
    if (num < 1)
        return -1;
    switch (f) {
    case HARVEST_MAX_FAILURES: c->max_failures = num; break;
    case HARVEST_INTERVAL: c->interval_s = num; break;
    case HARVEST_BLOCK: c->block_s = num; break;
    case HARVEST_SOFT_LIMIT: c->soft_limit = num; break;
    case HARVEST_HARD_LIMIT: c->hard_limit = num; break;
    default: return -1;
    }
    return 1;
}

void harvest_conf_init(harvest_conf_t *c, int service)
{
    memset(c, 0, sizeof *c);
    c->service = (uint8_t)(service >= 0 && service < CONF_NSERVICES ? service : 0);
    for (int f = 0; f < HARVEST_NFIELDS; f++) {
        char key[64];
        snprintf(key, sizeof key, "harvest.%s", harvest_fields[f]);
        const setting_def_t *def = settings_find(key);
        const char *v = def && def->default_value ? def->default_value : harvest_fallback[f];
        if (harvest_set(c, (harvest_field_t)f, key, v) < 0)
            harvest_set(c, (harvest_field_t)f, key, harvest_fallback[f]);
        c->level[f] = CONF_DEFAULT;
    }
}

int harvest_conf_apply(harvest_conf_t *c, const char *key, const char *value)
{
    if (strncmp(key, "harvest.", 8) != 0)
        return 0;
    const char *rest = key + 8;
    conf_level_t level = CONF_SYSTEM;
    const char *dot = strchr(rest, '.');
    if (dot) {
        const char *svc = conf_service_name(c->service);
        if (c->service == CONF_SVC_NONE || (size_t)(dot - rest) != strlen(svc) ||
            strncmp(rest, svc, strlen(svc)) != 0)
            return 0;
        /* Only the fields lib/base/settings.c lets a service override. */
        if (!settings_find(key))
            return 0;
        rest = dot + 1;
        level = CONF_SERVICE;
    }
    for (int f = 0; f < HARVEST_NFIELDS; f++) {
        if (strcmp(rest, harvest_fields[f]) != 0)
            continue;
        if (c->level[f] > level)
            return 0;
        harvest_conf_t trial = *c;
        if (harvest_set(&trial, (harvest_field_t)f, key, value) < 0)
            return -1;
        *c = trial;
        c->level[f] = (uint8_t)level;
        return 1;
    }
    return 0;
}

const char *harvest_conf_limit(const harvest_conf_t *c, harvest_field_t count_field,
                               const char *what, char *buf, size_t len)
{
    uint32_t n = count_field == HARVEST_MAX_FAILURES ? c->max_failures
                 : count_field == HARVEST_SOFT_LIMIT ? c->soft_limit
                                                     : c->hard_limit;
    snprintf(buf, len, "%u %s (%s level) per %u s (%s level)", n, what,
             conf_level_name(c->level[count_field], c->service), c->interval_s,
             conf_level_name(c->level[HARVEST_INTERVAL], c->service));
    return buf;
}
