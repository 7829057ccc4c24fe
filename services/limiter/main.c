/* limiter: the one authority on HAMR and harvesting counters. Settings come from the
 * environment; everything else is server.c. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/env.h"
#include "base/log.h"
#include "server.h"

int main(void)
{
    log_init("limiter");
    signal(SIGPIPE, SIG_IGN);

    char host[200] = "localhost", instance[256];
    gethostname(host, sizeof host - 1);
    snprintf(instance, sizeof instance, "%s:%d", host, (int)getpid());

    server_opts_t opts = {
        .database_url = env_or("DATABASE_URL", NULL),
        .nats_url = env_or("NATS_URL", "nats://127.0.0.1:4222"),
        .instance = env_or("LIMITER_INSTANCE", instance),
        .db_pool = atoi(env_or("DB_POOL", "4")),
        .reload_s = atoi(env_or("CONFIG_REFRESH", "30")),
    };
    if (!opts.database_url) {
        log_error("DATABASE_URL is not set", "%s", "");
        return 2;
    }
    return server_run(&opts);
}
