#include "svc/service.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <nats/nats.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/buf.h"
#include "base/env.h"
#include "base/log.h"
#include "bus/events.h"
#include "svc/workers.h"

#define SVC_DEFAULT_POOL 2
#define SVC_DEFAULT_REFRESH_S 30

/* What svc_main keeps beside the service's view of it. */
typedef struct svc_run {
    svc_t svc; /* first: svc_stopped() finds the rest from it */
    uv_loop_t loop;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t flush_timer;
    const char *database_url;
    bus_opts_t bus;  /* NATS_URL, NATS_USER, NATS_PASSWORD(_FILE), NATS_TLS_CA */
    char nats_password[BUS_PASSWORD_MAX + 1]; /* from NATS_PASSWORD_FILE */
    int db_pool;
    int health_port;
    bool started;   /* def->start was called */
    bool stopped;   /* svc_stopped() was called */
    bool torn_down;
    unsigned flush_waited_ms;
    size_t rss;             /* resident bytes at rss_read_ms */
    uint64_t rss_read_ms;   /* loop time of the last read; 0: never read */
    bool over_budget;       /* as last logged */
} svc_run_t;

bool svc_hostname_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    return n > 0 && n <= 255 && name[0] != '.' && name[0] != '-' &&
           strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == n;
}

/* A size in bytes: digits, then nothing or K, M, G (KiB, MiB, GiB). Returns -1 for
 * anything else or a size that does not fit. */
static int svc_parse_size(const char *text, size_t *out)
{
    if (!isdigit((unsigned char)text[0]))
        return -1;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(text, &end, 10);
    unsigned shift = 0;
    switch (*end) {
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    default: break;
    }
    if (errno || *end || n > (unsigned long long)(SIZE_MAX >> shift))
        return -1;
    *out = (size_t)n << shift;
    return 0;
}

/* How to reach NATS and log in: NATS_URL (one URL or a comma-separated list), NATS_USER
 * with NATS_PASSWORD or NATS_PASSWORD_FILE (a mounted Secret), NATS_TLS_CA. Returns 0, or
 * -1 after logging what is wrong. */
static int svc_bus_settings(svc_run_t *run)
{
    bus_opts_t *o = &run->bus;
    o->name = run->svc.def->name;
    o->url = env_or("NATS_URL", "nats://127.0.0.1:4222");
    o->user = env_or("NATS_USER", NULL);
    o->password = env_or("NATS_PASSWORD", NULL);
    o->tls_ca = env_or("NATS_TLS_CA", NULL);
    const char *file = env_or("NATS_PASSWORD_FILE", NULL);
    if (file && o->password) {
        log_error("set NATS_PASSWORD or NATS_PASSWORD_FILE, not both", "%s", "");
        return -1;
    }
    if (file) {
        if (bus_password_file(file, run->nats_password, sizeof run->nats_password) < 0) {
            log_error("cannot read NATS_PASSWORD_FILE", "file=\"%s\" error=\"%s\"", file,
                      errno == EINVAL ? "empty" : strerror(errno));
            return -1;
        }
        o->password = run->nats_password;
    }
    if (o->password && !o->user) {
        log_error("a NATS password without NATS_USER", "%s", "");
        return -1;
    }
    return 0;
}

/* The environment. Returns 0, or -1 after logging what is wrong. */
static int svc_settings(svc_run_t *run)
{
    svc_t *svc = &run->svc;
    const svc_def_t *def = svc->def;
    run->database_url = env_or("DATABASE_URL", NULL);
    if (!run->database_url) {
        log_error("DATABASE_URL is not set", "%s", "");
        return -1;
    }
    if (svc_bus_settings(run) < 0)
        return -1;
    run->db_pool = atoi(env_or("DB_POOL", "0"));
    if (run->db_pool <= 0)
        run->db_pool = def->db_pool > 0 ? def->db_pool : SVC_DEFAULT_POOL;
    svc->config_refresh_s = atoi(env_or("CONFIG_REFRESH", "0"));
    if (svc->config_refresh_s <= 0)
        svc->config_refresh_s = SVC_DEFAULT_REFRESH_S;
    run->health_port = atoi(env_or("HEALTH_PORT", "0"));
    svc->memory_budget = SVC_MEMORY_BUDGET_DEFAULT;
    const char *budget = env_or("MEMORY_BUDGET", NULL);
    if (budget && svc_parse_size(budget, &svc->memory_budget) < 0) {
        log_error("bad MEMORY_BUDGET", "value=\"%.64s\" expected=\"bytes, or a number with K, M "
                  "or G\"", budget);
        return -1;
    }
    svc->message_cache = SVC_MESSAGE_CACHE_DEFAULT;
    const char *cache = env_or("MESSAGE_CACHE", NULL);
    if (cache && svc_parse_size(cache, &svc->message_cache) < 0) {
        log_error("bad MESSAGE_CACHE", "value=\"%.64s\" expected=\"bytes, or a number with K, M "
                  "or G\"", cache);
        return -1;
    }

    const char *var = def->hostname_env ? def->hostname_env : "SMTP_HOSTNAME";
    const char *name = env_or(var, NULL);
    if (name && !svc_hostname_ok(name)) {
        log_error("not a host name", "variable=%s", var);
        return -1;
    }
    if (name)
        snprintf(svc->hostname, sizeof svc->hostname, "%s", name);
    else if (gethostname(svc->hostname, sizeof svc->hostname - 1) != 0 ||
             !svc_hostname_ok(svc->hostname))
        snprintf(svc->hostname, sizeof svc->hostname, "localhost");
    /* The instance is the machine (pod) name, not the announced host name, which every
     * replica shares; the pid alone is 1 in every container. */
    char node[256] = "";
    if (gethostname(node, sizeof node - 1) != 0 || !node[0])
        snprintf(node, sizeof node, "%s", svc->hostname);
    snprintf(svc->instance, sizeof svc->instance, "%.250s:%d", node, (int)getpid());
    return 0;
}

/* Resident bytes from /proc/self/statm (its second field, in pages); 0 when unreadable. */
static size_t svc_read_rss(void)
{
    char text[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    unsigned long long size, resident;
    if (sscanf(text, "%llu %llu", &size, &resident) != 2)
        return 0;
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

bool svc_memory_over_budget(svc_t *svc)
{
    svc_run_t *run = (svc_run_t *)svc;
    if (!svc->memory_budget)
        return false;
    uint64_t now = uv_now(svc->loop) + 1; /* 0 stands for "never read" */
    if (run->rss_read_ms && now - run->rss_read_ms < SVC_MEMORY_READ_MS)
        return run->over_budget;
    run->rss = svc_read_rss();
    /* Over it, the heap's free pages are given back first: glibc keeps what a burst of
     * sessions freed (TLS handshakes leave it in pieces between live sessions' memory), and
     * resident, it would refuse sessions for memory nothing uses. The loop thread's spare
     * buffers (buf_recycle) go with them. */
    if (run->rss > svc->memory_budget) {
        bool dropped = buf_drop_spares();
        if (malloc_trim(0) || dropped)
            run->rss = svc_read_rss();
    }
    run->rss_read_ms = now;
    metrics_set(svc->metrics, "postern_memory_resident_bytes",
                "Resident memory of the process as last read for the memory budget", NULL,
                (double)run->rss);
    bool over = run->rss > svc->memory_budget;
    if (over && !run->over_budget)
        log_warn("over the memory budget: refusing new work", "rss=%zu budget=%zu", run->rss,
                 svc->memory_budget);
    else if (!over && run->over_budget)
        log_info("back under the memory budget", "rss=%zu budget=%zu", run->rss,
                 svc->memory_budget);
    run->over_budget = over;
    return over;
}

/* /readyz, on the loop thread. */
static bool svc_ready_cb(void *arg, char *why, size_t why_len)
{
    svc_t *svc = arg;
    const char *missing = svc->stopping                                   ? "stopping"
                          : svc->def->want_config && !config_loaded(svc->cfg) ? "configuration"
                          : !db_available(svc->db)                        ? "database"
                          : !bus_connected(svc->bus)                      ? "bus"
                                                                          : NULL;
    if (missing) {
        snprintf(why, why_len, "%s", missing);
        return false;
    }
    return svc->def->ready ? svc->def->ready(svc, why, why_len) : true;
}

static void walk_close_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h))
        return;
    log_warn("handle left open at stop, closing it", "type=%s",
             uv_handle_type_name(uv_handle_get_type(h)));
    uv_close(h, NULL);
}

/* Everything goes, in the order service.h gives; the loop then ends once the handles have
 * closed. */
static void svc_teardown(svc_run_t *run)
{
    svc_t *svc = &run->svc;
    if (run->torn_down)
        return;
    run->torn_down = true;
    svc->stopping = true;
    uv_close((uv_handle_t *)&run->flush_timer, NULL);
    uv_close((uv_handle_t *)&run->sig_term, NULL);
    uv_close((uv_handle_t *)&run->sig_int, NULL);
    uv_close((uv_handle_t *)&run->sig_hup, NULL);
    if (run->started && svc->def->destroy)
        svc->def->destroy(svc);
    health_stop(&svc->health);
    ev_release(svc->bus);
    bus_destroy(&svc->bus); /* nothing comes in; requests still out are answered with NULL */
    db_destroy(&svc->db);   /* queries still in flight are answered with NULL */
    config_destroy(&svc->cfg);
    /* A handle the service forgot would keep the loop, and the process, running. */
    uv_walk(&run->loop, walk_close_cb, NULL);
}

static void flush_cb(uv_timer_t *t)
{
    svc_run_t *run = t->data;
    svc_t *svc = &run->svc;
    bool busy = db_busy(svc->db) || (svc->def->busy && svc->def->busy(svc));
    if (busy && run->flush_waited_ms < SVC_FLUSH_MAX_MS) {
        run->flush_waited_ms += SVC_FLUSH_STEP_MS;
        uv_timer_start(&run->flush_timer, flush_cb, SVC_FLUSH_STEP_MS, 0);
        return;
    }
    if (busy)
        log_warn("work left unfinished at stop", "waited_ms=%u", run->flush_waited_ms);
    svc_teardown(run);
}

void svc_stopped(svc_t *svc)
{
    svc_run_t *run = (svc_run_t *)svc;
    if (!svc || run->stopped || run->torn_down)
        return;
    run->stopped = true;
    /* From the loop, never from inside the caller (which may be def->stop). */
    uv_timer_start(&run->flush_timer, flush_cb, 0, 0);
}

static void stop_signal_cb(uv_signal_t *h, int signum)
{
    svc_run_t *run = h->data;
    svc_t *svc = &run->svc;
    /* A second SIGTERM or SIGINT ends the process at once (the default action). */
    uv_signal_stop(&run->sig_term);
    uv_signal_stop(&run->sig_int);
    if (svc->stopping)
        return;
    svc->stopping = true;
    log_info("stopping", "signal=%d", signum);
    if (svc->def->stop)
        svc->def->stop(svc);
    else
        svc_stopped(svc);
}

static void hup_signal_cb(uv_signal_t *h, int signum)
{
    svc_run_t *run = h->data;
    svc_t *svc = &run->svc;
    if (svc->def->hup && !svc->stopping)
        svc->def->hup(svc);
    else
        log_info("signal ignored", "signal=%d", signum);
}

/* Makes what every service has. Returns 0, or -1 after logging what failed. */
static int svc_open(svc_run_t *run)
{
    svc_t *svc = &run->svc;
    const svc_def_t *def = svc->def;
    svc->metrics = metrics_create();
    metrics_set(svc->metrics, "postern_memory_budget_bytes",
                "MEMORY_BUDGET: resident memory past which new work is refused (0: none)", NULL,
                (double)svc->memory_budget);
    svc->db = db_create(svc->loop, run->database_url, run->db_pool);
    svc->bus = bus_open(svc->loop, &run->bus);
    if (!svc->metrics || !svc->db || !svc->bus) {
        log_error("cannot start the database or bus client", "%s", "");
        return -1;
    }
    if (def->want_config) {
        svc->cfg = config_create(svc->loop, svc->db, svc->bus, svc->config_refresh_s);
        if (!svc->cfg) {
            log_error("out of memory", "%s", "");
            return -1;
        }
    }
    /* A health port asked for and not served fails the start: probes that cannot reach it
     * would restart the service anyway. */
    if (run->health_port > 0 && svc->worker == 0) {
        svc->health = health_start(svc->loop, run->health_port, svc->metrics, svc_ready_cb, svc);
        if (!svc->health)
            return -1;
    }
    run->started = true;
    if (def->start && def->start(svc) < 0) {
        log_error("cannot start the service", "%s", "");
        return -1;
    }
    return 0;
}

int svc_main(const svc_def_t *def)
{
    log_init(def->name);
    signal(SIGPIPE, SIG_IGN);
    /* Large buffers (a message, a literal) are mapped and unmapped rather than kept in the
     * heap once freed, so the resident size the memory budget reads falls when they go. A
     * fixed threshold also stops glibc from raising it after such a buffer is freed. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    /* Workers are forked before anything starts a thread or opens a connection. */
    int workers = 1, worker = 0;
    if (def->workers) {
        cpu_set_t cpus;
        long ncpu = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 1;
        const char *text = env_or("WORKERS", NULL);
        if ((workers = svc_workers_parse(text, ncpu)) < 0) {
            log_error("bad WORKERS", "value=\"%.64s\" expected=\"a number from 1 to %d, or auto\"",
                      text, SVC_WORKERS_MAX);
            return 2;
        }
        if (workers > 1 && def->prefork && def->prefork(def) < 0)
            return 2;
        int status;
        if (!svc_workers_fork(workers, &worker, &status, def->forked, def))
            return status;
    }
    svc_run_t *run = calloc(1, sizeof *run);
    if (!run) {
        log_error("out of memory", "%s", "");
        return 2;
    }
    svc_t *svc = &run->svc;
    svc->def = def;
    svc->workers = workers;
    svc->worker = worker;
    if (svc_settings(run) < 0) {
        explicit_bzero(run->nats_password, sizeof run->nats_password);
        free(run);
        return 2;
    }
    uv_loop_init(&run->loop);
    svc->loop = &run->loop;
    uv_timer_init(svc->loop, &run->flush_timer);
    uv_signal_init(svc->loop, &run->sig_term);
    uv_signal_init(svc->loop, &run->sig_int);
    uv_signal_init(svc->loop, &run->sig_hup);
    run->flush_timer.data = run->sig_term.data = run->sig_int.data = run->sig_hup.data = run;
    uv_signal_start(&run->sig_term, stop_signal_cb, SIGTERM);
    uv_signal_start(&run->sig_int, stop_signal_cb, SIGINT);
    uv_signal_start(&run->sig_hup, hup_signal_cb, SIGHUP);

    int status = 0;
    if (svc_open(run) < 0) {
        status = 2;
        svc_teardown(run);
    } else {
        log_info("started", "instance=%s hostname=%s worker=%d/%d", svc->instance,
                 svc->hostname, svc->worker, svc->workers);
    }
    uv_run(svc->loop, UV_RUN_DEFAULT);

    int rc = uv_loop_close(svc->loop);
    if (rc != 0)
        log_error("handles left open at exit", "error=\"%s\"", uv_strerror(rc));
    metrics_destroy(&svc->metrics);
    nats_Close();
    log_info("stopped", "instance=%s status=%d", svc->instance, status);
    explicit_bzero(run->nats_password, sizeof run->nats_password);
    free(run);
    return status;
}
