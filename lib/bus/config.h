/* The tiered configuration as a service sees it: system settings (with the defaults
 * from settings.h), hosted domains and the relay list, loaded from PostgreSQL in one
 * snapshot, refreshed when mailctl announces a change on the bus
 * (postern.config.changed) and every refresh interval in any case. */
#ifndef POSTERN_CONFIG_H
#define POSTERN_CONFIG_H

#include <stdbool.h>
#include <uv.h>

#include "bus/bus.h"
#include "store/db.h"
#include "base/net.h"

typedef struct config config_t;

config_t *config_create(uv_loop_t *loop, db_t *db, bus_t *bus, int refresh_seconds);
void config_destroy(config_t **cfg);

/* cb(arg) after every snapshot loaded (the first, a change announced, a refresh), on the
 * loop: for a service that derives state from the settings. One hook; NULL removes it. */
typedef void (*config_loaded_fn)(void *arg);
void config_on_load(config_t *cfg, config_loaded_fn cb, void *arg);

/* False until the first snapshot has been loaded: callers answer with temporary errors. */
bool config_loaded(const config_t *cfg);

/* A system setting: the stored value, else the default from settings.h, else NULL. */
const char *config_get(const config_t *cfg, const char *key);
long config_get_long(const config_t *cfg, const char *key);
/* "on", "yes", "true", "1" are true. */
bool config_get_bool(const config_t *cfg, const char *key);

/* domain is compared case-insensitively. */
bool config_domain_hosted(const config_t *cfg, const char *domain);
bool config_relay_network(const config_t *cfg, const net_addr_t *client);

#endif
