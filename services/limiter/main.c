/* limiter: the one authority on HAMR and harvesting counters. The policy is policy.c, its
 * PostgreSQL side store.c, its bus side server.c; the process around them is the service
 * skeleton (lib/svc/service.h), whose environment it reads: DATABASE_URL, NATS_URL,
 * DB_POOL, CONFIG_REFRESH (settings, exemptions, blocks and accounts are reloaded this
 * often), HEALTH_PORT. */
#include "server.h"

static const svc_def_t limiter = {
    .name = "limiter",
    .db_pool = 4,
    .start = server_start,
    .ready = server_ready,
    .stop = server_stop,
    .busy = server_busy,
    .destroy = server_destroy,
};

int main(void)
{
    return svc_main(&limiter);
}
