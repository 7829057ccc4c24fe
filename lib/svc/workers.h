/* Worker processes: a front end may serve from several processes on one machine (WORKERS),
 * each a whole instance of the service (its own loop, database pool, bus connection and
 * caches, as replicas on several machines are), accepting connections from the same
 * listening sockets, made before the fork (svc_def_t.prefork). One loop is one core; this
 * is how a front end uses the others without threads in its session code.
 *
 * The parent forks the workers before anything else starts (no thread yet: libnats starts
 * its own), passes SIGTERM, SIGINT and SIGHUP on to them, and exits once they have all
 * exited: with status 0 when each did, else the first other status. A worker that ends
 * before a stop was asked for ends the others (the whole is restarted as one process would
 * be); a worker ends with its parent. */
#ifndef POSTERN_WORKERS_H
#define POSTERN_WORKERS_H

#include <stdbool.h>

#define SVC_WORKERS_MAX 64

/* WORKERS: a number from 1 to SVC_WORKERS_MAX, or "auto" for one per CPU the process may
 * run on (cpus). Unset or empty: 1. Returns the number, or -1 when text is neither. */
int svc_workers_parse(const char *text, long cpus);

/* With n > 1, forks n workers, then calls forked(arg) (when not NULL) in the parent. Returns
 * true in a worker (worker: its index, from 0), to go on and serve; false in the parent once
 * every worker has exited (status: what the process exits with), or after a failure to fork
 * (status 2, the workers started stopped). With n <= 1: true at once, worker 0, no process
 * made. */
struct svc_def;
bool svc_workers_fork(int n, int *worker, int *status, void (*forked)(const struct svc_def *),
                      const struct svc_def *arg);

#endif
