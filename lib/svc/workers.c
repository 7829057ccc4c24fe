/* Worker processes of a front end (workers.h). */
#include "svc/workers.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/log.h"

int svc_workers_parse(const char *text, long cpus)
{
    if (!text || !*text)
        return 1;
    if (strcmp(text, "auto") == 0)
        return cpus < 1 ? 1 : cpus > SVC_WORKERS_MAX ? SVC_WORKERS_MAX : (int)cpus;
    char *end;
    errno = 0;
    long n = strtol(text, &end, 10);
    if (errno || *end || end == text || n < 1 || n > SVC_WORKERS_MAX)
        return -1;
    return (int)n;
}

/* Sends sig to every worker still running. */
static void tell(const pid_t *pids, int n, int sig)
{
    for (int i = 0; i < n; i++)
        if (pids[i] > 0)
            kill(pids[i], sig);
}

/* The parent: passes SIGTERM, SIGINT and SIGHUP on, and waits until every worker is gone.
 * A worker that ends before a stop was asked for ends the others too: the process as a
 * whole then exits as that worker did, for whatever restarts it to see. */
static int supervise(pid_t *pids, int n, const sigset_t *waited)
{
    int left = n, status = 0;
    bool stopping = false;
    while (left > 0) {
        int sig = sigwaitinfo(waited, NULL);
        if (sig < 0)
            continue; /* EINTR */
        if (sig != SIGCHLD) {
            stopping = stopping || sig != SIGHUP;
            tell(pids, n, sig);
            continue;
        }
        int ws;
        pid_t pid;
        while ((pid = waitpid(-1, &ws, WNOHANG)) > 0) {
            int i = 0;
            while (i < n && pids[i] != pid)
                i++;
            if (i == n)
                continue;
            pids[i] = 0;
            left--;
            int code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
            if (code != 0 && status == 0)
                status = code;
            if (!stopping) {
                log_error("a worker ended: stopping the others", "worker=%d pid=%d status=%d",
                          i, (int)pid, code);
                if (status == 0)
                    status = 2; /* a worker has no reason to end on its own */
                stopping = true;
                tell(pids, n, SIGTERM);
            }
        }
    }
    return status;
}

bool svc_workers_fork(int n, int *worker, int *status, void (*forked)(const struct svc_def *),
                      const struct svc_def *arg)
{
    *worker = 0;
    *status = 0;
    if (n <= 1)
        return true;
    sigset_t waited, old;
    sigemptyset(&waited);
    sigaddset(&waited, SIGTERM);
    sigaddset(&waited, SIGINT);
    sigaddset(&waited, SIGHUP);
    sigaddset(&waited, SIGCHLD);
    sigprocmask(SIG_BLOCK, &waited, &old);
    pid_t *pids = calloc((size_t)n, sizeof *pids);
    if (!pids) {
        log_error("out of memory", "%s", "");
        *status = 2;
        return false;
    }
    pid_t parent = getpid();
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            free(pids);
            /* A worker goes with its parent, even one killed outright. */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent)
                _exit(2);
            sigprocmask(SIG_SETMASK, &old, NULL);
            *worker = i;
            return true;
        }
        if (pid < 0) {
            log_error("cannot start a worker", "worker=%d error=\"%s\"", i, strerror(errno));
            tell(pids, i, SIGTERM);
            n = i; /* wait for those started */
            *status = 2;
            break;
        }
        pids[i] = pid;
    }
    if (forked)
        forked(arg);
    if (*status == 0)
        log_info("workers started", "workers=%d", n);
    int st = supervise(pids, n, &waited);
    if (*status == 0)
        *status = st;
    free(pids);
    log_info("workers stopped", "status=%d", *status);
    return false;
}
