/* The limiter as a process: the loop, PostgreSQL, the bus, timers and signals around the
 * policy (policy.h) and its store (store.h). Bus messages are decoded here and nowhere
 * else; replies go to the request's reply subject. */
#ifndef LIMITER_SERVER_H
#define LIMITER_SERVER_H

typedef struct server_opts {
    const char *database_url;
    const char *nats_url;
    const char *instance; /* names this limiter in logs and to the NATS server */
    int db_pool;          /* PostgreSQL connections */
    int reload_s;         /* settings, exemptions, blocks, accounts reloaded this often */
} server_opts_t;

/* Runs until SIGTERM or SIGINT. Returns the exit status. */
int server_run(const server_opts_t *opts);

#endif
