#include "bus/config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "base/settings.h"
#include "bus/subjects.h"


typedef struct config_snapshot {
    char **keys, **values;
    size_t nsettings;
    char **domains; /* sorted, lowercase */
    size_t ndomains;
    net_cidr_t *relay;
    size_t nrelay;
} config_snapshot_t;

struct config {
    db_t *db;
    uv_timer_t timer;
    int refresh_ms;
    bool loading;
    bool again; /* a change was announced while loading */
    config_snapshot_t *snap;
    config_loaded_fn on_load;
    void *on_load_arg;
};

static const char config_sql[] =
    "SELECT 's', key, value FROM settings WHERE scope = 'system' "
    "UNION ALL SELECT 'd', name, '' FROM domains "
    "UNION ALL SELECT 'r', network::text, '' FROM relay_networks";

static void snapshot_free(config_snapshot_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nsettings; i++) {
        free(s->keys[i]);
        free(s->values[i]);
    }
    for (size_t i = 0; i < s->ndomains; i++)
        free(s->domains[i]);
    free(s->keys);
    free(s->values);
    free(s->domains);
    free(s->relay);
    free(s);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static config_snapshot_t *snapshot_build(PGresult *res)
{
    int n = PQntuples(res);
    config_snapshot_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->keys = calloc((size_t)n + 1, sizeof *s->keys);
    s->values = calloc((size_t)n + 1, sizeof *s->values);
    s->domains = calloc((size_t)n + 1, sizeof *s->domains);
    s->relay = calloc((size_t)n + 1, sizeof *s->relay);
    if (!s->keys || !s->values || !s->domains || !s->relay) {
        snapshot_free(s);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const char *kind = PQgetvalue(res, i, 0), *a = PQgetvalue(res, i, 1);
        if (*kind == 's') {
            s->keys[s->nsettings] = strdup(a);
            s->values[s->nsettings++] = strdup(PQgetvalue(res, i, 2));
        } else if (*kind == 'd') {
            s->domains[s->ndomains++] = strdup(a);
        } else if (net_cidr_parse(a, &s->relay[s->nrelay]) == 0) {
            s->nrelay++;
        }
    }
    for (size_t i = 0; i < s->nsettings; i++)
        if (!s->keys[i] || !s->values[i]) {
            snapshot_free(s);
            return NULL;
        }
    for (size_t i = 0; i < s->ndomains; i++)
        if (!s->domains[i]) {
            snapshot_free(s);
            return NULL;
        }
    qsort(s->domains, s->ndomains, sizeof *s->domains, cmp_str);
    return s;
}

static void config_reload(config_t *cfg);

static void reload_timer_cb(uv_timer_t *t)
{
    config_reload(t->data);
}

static void loaded_cb(void *arg, PGresult *res)
{
    config_t *cfg = arg;
    cfg->loading = false;
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("configuration not loaded", "error=\"%s\"",
                 res ? PQresultErrorMessage(res) : "database unavailable");
        uv_timer_start(&cfg->timer, reload_timer_cb, 1000, 0);
        return;
    }
    config_snapshot_t *s = snapshot_build(res);
    if (s) {
        bool first = !cfg->snap;
        snapshot_free(cfg->snap);
        cfg->snap = s;
        const char *mode = config_get(cfg, "relay.mode");
        if (first || (mode && strcmp(mode, "anyone") == 0))
            log_msg(mode && strcmp(mode, "anyone") == 0 ? LOG_WARN : LOG_INFO,
                    mode && strcmp(mode, "anyone") == 0
                        ? "OPEN RELAY: relay.mode is anyone, every client may relay"
                        : "configuration loaded",
                    "domains=%zu relay_networks=%zu relay_mode=%s", s->ndomains, s->nrelay,
                    mode ? mode : "none");
        if (cfg->on_load)
            cfg->on_load(cfg->on_load_arg);
    }
    if (cfg->again) {
        cfg->again = false;
        config_reload(cfg);
        return;
    }
    uv_timer_start(&cfg->timer, reload_timer_cb, (uint64_t)cfg->refresh_ms, 0);
}

static void config_reload(config_t *cfg)
{
    if (cfg->loading) {
        cfg->again = true;
        return;
    }
    cfg->loading = true;
    uv_timer_stop(&cfg->timer);
    db_query(cfg->db, config_sql, 0, NULL, NULL, NULL, loaded_cb, cfg);
}

static void changed_cb(void *arg, const char *subject, const void *data, size_t len,
                       const char *reply)
{
    (void)subject;
    (void)data;
    (void)len;
    (void)reply;
    config_reload(arg);
}

/* A change announced while the bus was away never came. */
static void reconnected_cb(void *arg)
{
    config_reload(arg);
}

config_t *config_create(uv_loop_t *loop, db_t *db, bus_t *bus, int refresh_seconds)
{
    config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return NULL;
    cfg->db = db;
    cfg->refresh_ms = (refresh_seconds > 0 ? refresh_seconds : 30) * 1000;
    uv_timer_init(loop, &cfg->timer);
    cfg->timer.data = cfg;
    if (bus) {
        bus_subscribe(bus, BUS_SUBJECT_CONFIG_CHANGED, changed_cb, cfg);
        bus_on_reconnect(bus, reconnected_cb, cfg);
    }
    config_reload(cfg);
    return cfg;
}

void config_on_load(config_t *cfg, config_loaded_fn cb, void *arg)
{
    if (!cfg)
        return;
    cfg->on_load = cb;
    cfg->on_load_arg = arg;
}

static void config_close_cb(uv_handle_t *h)
{
    config_t *cfg = h->data;
    snapshot_free(cfg->snap);
    free(cfg);
}

void config_destroy(config_t **cp)
{
    config_t *cfg = *cp;
    if (!cfg)
        return;
    *cp = NULL;
    uv_close((uv_handle_t *)&cfg->timer, config_close_cb);
}

bool config_loaded(const config_t *cfg)
{
    return cfg && cfg->snap;
}

static const char *config_stored(const config_t *cfg, const char *key)
{
    if (cfg && cfg->snap)
        for (size_t i = 0; i < cfg->snap->nsettings; i++)
            if (strcmp(cfg->snap->keys[i], key) == 0)
                return cfg->snap->values[i];
    return NULL;
}

const char *config_get(const config_t *cfg, const char *key)
{
    const char *v = config_stored(cfg, key);
    char base[128];
    /* harvest.pop3.block inherits harvest.block before the default. */
    const char *fallback = v ? NULL : settings_fallback_key(key, base, sizeof base);
    if (!v && fallback)
        v = config_stored(cfg, fallback);
    if (v)
        return v;
    const setting_def_t *def = settings_find(key);
    return def ? def->default_value : NULL;
}

long config_get_long(const config_t *cfg, const char *key)
{
    const char *v = config_get(cfg, key);
    return v ? strtol(v, NULL, 10) : 0;
}

bool config_get_bool(const config_t *cfg, const char *key)
{
    const char *v = config_get(cfg, key);
    return v && (!strcasecmp(v, "on") || !strcasecmp(v, "yes") || !strcasecmp(v, "true") ||
                 !strcmp(v, "1"));
}

bool config_domain_hosted(const config_t *cfg, const char *domain)
{
    if (!cfg || !cfg->snap)
        return false;
    char lower[256];
    size_t n = strlen(domain);
    if (n >= sizeof lower)
        return false;
    for (size_t i = 0; i <= n; i++)
        lower[i] = (char)((domain[i] >= 'A' && domain[i] <= 'Z') ? domain[i] + 32 : domain[i]);
    const char *key = lower;
    return bsearch(&key, cfg->snap->domains, cfg->snap->ndomains, sizeof(char *), cmp_str) != NULL;
}

bool config_relay_network(const config_t *cfg, const net_addr_t *client)
{
    if (!cfg || !cfg->snap)
        return false;
    for (size_t i = 0; i < cfg->snap->nrelay; i++)
        if (net_cidr_contains(&cfg->snap->relay[i], client))
            return true;
    return false;
}
