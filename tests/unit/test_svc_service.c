/* The service skeleton (lib/svc/service.h) as a process: each case runs svc_main() in a
 * child with an environment of its own and a small fake service that reports its callbacks
 * through a pipe; the parent sends signals and checks the calls, their order and the exit
 * status. PostgreSQL and NATS are addresses nobody answers: the skeleton starts, serves and
 * stops without them. A case that hangs is killed after CHILD_TIMEOUT_S and fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "svc/service.h"
#include "svc/workers.h"

#define CHILD_TIMEOUT_S 20
#define NOBODY_DB "postgresql://postern@127.0.0.1:1/postern?connect_timeout=1"
#define NOBODY_NATS "nats://127.0.0.1:1"

enum stop_mode { STOP_NOW, STOP_LATER, STOP_DEFAULT };

typedef struct svc_case {
    const char *name;
    const char *env[6];      /* NAME=value; "HEALTH_PORT=" gets a port chosen by the test */
    bool want_config;
    int start_rc;            /* what start returns */
    enum stop_mode stop;
    bool leave_handle;       /* start makes a timer that nothing closes */
    bool hup;                /* SIGHUP before the stop signal */
    int signal;              /* sent once start has reported; 0: none */
    bool busy_health_port;   /* the test holds the health port */
    const char *readyz;      /* expected in /readyz before the stop signal */
    int want_status;
    const char *want_calls;
} svc_case_t;

/* ---- the fake service, in the child ------------------------------------------------- */

static int report_fd = -1; /* the child's end of the pipe */

static void report(const char *what)
{
    char line[300];
    int n = snprintf(line, sizeof line, "%s;", what);
    if (write(report_fd, line, (size_t)n) != n)
        _exit(99);
}

typedef struct fake {
    const svc_case_t *c;
    uv_timer_t later;   /* STOP_LATER: calls svc_stopped() a little after the signal */
} fake_t;

static const svc_case_t *child_case;
static uv_timer_t forgot; /* leave_handle: never closed by the service */

static void forgot_cb(uv_timer_t *t)
{
    (void)t;
    report("the forgotten timer fired");
}

static int fake_start(svc_t *svc)
{
    fake_t *f = calloc(1, sizeof *f);
    svc->data = f;
    f->c = child_case;
    uv_timer_init(svc->loop, &f->later);
    f->later.data = svc;
    if (f->c->leave_handle) {
        uv_timer_init(svc->loop, &forgot);
        uv_timer_start(&forgot, forgot_cb, 3600 * 1000, 0);
    }
    char line[400];
    snprintf(line, sizeof line, "start %s", svc->hostname);
    report(line);
    report(strchr(svc->instance, ':') && svc->cfg == NULL ? "instance nocfg"
           : strchr(svc->instance, ':')                   ? "instance cfg"
                                                          : "instance ?");
    return f->c->start_rc;
}

static void later_cb(uv_timer_t *t)
{
    report("stopped");
    svc_stopped(t->data);
}

static void fake_stop(svc_t *svc)
{
    fake_t *f = svc->data;
    report("stop");
    if (f->c->stop == STOP_LATER) {
        uv_timer_start(&f->later, later_cb, 100, 0);
        return;
    }
    report("stopped");
    svc_stopped(svc);
    svc_stopped(svc); /* harmless twice */
}

static void fake_hup(svc_t *svc)
{
    (void)svc;
    report("hup");
}

static void free_cb(uv_handle_t *h)
{
    free(h->data);
}

static void fake_destroy(svc_t *svc)
{
    fake_t *f = svc->data;
    report(svc->bus && svc->db ? "destroy" : "destroy without bus or db");
    svc->data = NULL;
    f->later.data = f;
    uv_close((uv_handle_t *)&f->later, free_cb);
}

static void run_child(const svc_case_t *c, int fd, int health_port)
{
    report_fd = fd;
    child_case = c;
    bool show_log = getenv("SVC_TEST_LOG") != NULL;
    clearenv();
    for (size_t i = 0; i < sizeof c->env / sizeof c->env[0] && c->env[i]; i++) {
        char *kv = strdup(c->env[i]);
        char *eq = strchr(kv, '=');
        *eq = '\0';
        if (strcmp(kv, "HEALTH_PORT") == 0) {
            char port[16];
            snprintf(port, sizeof port, "%d", health_port);
            setenv(kv, port, 1);
        } else {
            setenv(kv, eq + 1, 1);
        }
        free(kv);
    }
    svc_def_t def = {
        .name = "svc-test",
        .db_pool = 1,
        .want_config = c->want_config,
        .start = fake_start,
        .stop = c->stop == STOP_DEFAULT ? NULL : fake_stop,
        .destroy = fake_destroy,
        .hup = fake_hup,
    };
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull >= 0 && !show_log)
        dup2(devnull, STDERR_FILENO);
    int status = svc_main(&def);
    close(fd);
    exit(status); /* exit, not _exit: LeakSanitizer checks the child too */
}

/* ---- the parent ------------------------------------------------------------------------ */

/* A TCP port bound on every address (the health endpoint's way), left bound when hold. */
static int tcp_port(int *fd_r)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY) };
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t len = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &len);
    *fd_r = fd;
    return ntohs(sa.sin_port);
}

/* Reads what the child reported so far (without waiting past timeout_ms). */
static void read_reports(int fd, char *out, size_t cap, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    while (poll(&p, 1, timeout_ms) > 0) {
        size_t used = strlen(out);
        ssize_t n = read(fd, out + used, cap - used - 1);
        if (n <= 0)
            return;
        out[used + (size_t)n] = '\0';
        timeout_ms = 0;
    }
}

/* GET path from 127.0.0.1:port; the whole answer, or "" when nobody answers. */
static void http_get(int port, const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        char req[128];
        int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
        if (write(fd, req, (size_t)n) == n) {
            size_t used = 0;
            ssize_t got;
            while (used + 1 < cap && (got = read(fd, out + used, cap - used - 1)) > 0)
                used += (size_t)got;
            out[used] = '\0';
        }
    }
    close(fd);
}

static void wait_for_readyz(int port, const char *want)
{
    char body[1024];
    for (int i = 0; i < 100; i++) {
        http_get(port, "/readyz", body, sizeof body);
        if (strstr(body, want))
            return;
        usleep(100 * 1000);
    }
    fail_msg("/readyz never said \"%s\"; last: %s", want, body);
}

static void run_case(const svc_case_t *c)
{
    int held = -1, port = 0;
    if (c->busy_health_port) {
        port = tcp_port(&held);
    } else {
        int probe;
        port = tcp_port(&probe);
        close(probe);
    }
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        if (held >= 0)
            close(held); /* the listening socket stays bound through the parent */
        run_child(c, p[1], port);
    }
    close(p[1]);
    char calls[2048] = "";
    if (c->signal) {
        for (int i = 0; i < 100 && !strstr(calls, "start"); i++)
            read_reports(p[0], calls, sizeof calls, 100);
        assert_non_null(strstr(calls, "start"));
        if (c->readyz)
            wait_for_readyz(port, c->readyz);
        if (c->hup) {
            kill(pid, SIGHUP);
            for (int i = 0; i < 50 && !strstr(calls, "hup"); i++)
                read_reports(p[0], calls, sizeof calls, 100);
        }
        kill(pid, c->signal);
    }
    int status = -1;
    time_t deadline = time(NULL) + CHILD_TIMEOUT_S;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        read_reports(p[0], calls, sizeof calls, 50);
        if (time(NULL) > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("%s: no exit within %d s; calls: %s", c->name, CHILD_TIMEOUT_S, calls);
        }
    }
    read_reports(p[0], calls, sizeof calls, 0);
    close(p[0]);
    if (held >= 0)
        close(held);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != c->want_status)
        fail_msg("%s: exit status %d (signal %d), wanted %d; calls: %s", c->name,
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0, c->want_status, calls);
    if (strcmp(calls, c->want_calls) != 0)
        fail_msg("%s: calls\n  got  %s\n  want %s", c->name, calls, c->want_calls);
}

static const svc_case_t cases[] = {
    { .name = "no DATABASE_URL", .env = { "NATS_URL=" NOBODY_NATS }, .want_status = 2,
      .want_calls = "" },
    { .name = "bad host name",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS, "SMTP_HOSTNAME=bad host" },
      .want_status = 2, .want_calls = "" },
    { .name = "start fails: destroy all the same, before the bus and the database",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS,
               "SMTP_HOSTNAME=mx.example.test" },
      .start_rc = -1, .want_status = 2,
      .want_calls = "start mx.example.test;instance nocfg;destroy;" },
    { .name = "NATS_PASSWORD and NATS_PASSWORD_FILE both: no start",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS, "NATS_USER=smtpd",
               "NATS_PASSWORD=pw", "NATS_PASSWORD_FILE=/etc/hostname" },
      .want_status = 2, .want_calls = "" },
    { .name = "NATS_PASSWORD_FILE unreadable: no start",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS, "NATS_USER=smtpd",
               "NATS_PASSWORD_FILE=/nonexistent/password" },
      .want_status = 2, .want_calls = "" },
    { .name = "a NATS password without NATS_USER: no start",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS, "NATS_PASSWORD=pw" },
      .want_status = 2, .want_calls = "" },
    { .name = "NATS_TLS_CA unreadable: no start",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS,
               "NATS_TLS_CA=/nonexistent/ca.pem" },
      .want_status = 2, .want_calls = "" },
    { .name = "a list of NATS URLs, a user and a password: starts",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS ", " NOBODY_NATS,
               "NATS_USER=smtpd", "NATS_PASSWORD=pw", "SMTP_HOSTNAME=mx.example.test" },
      .signal = SIGTERM, .want_status = 0,
      .want_calls = "start mx.example.test;instance nocfg;stop;stopped;destroy;" },
    { .name = "health port taken: no start",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS, "HEALTH_PORT=" },
      .busy_health_port = true, .want_status = 2, .want_calls = "" },
    { .name = "SIGTERM: stop, stopped, destroy",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS,
               "SMTP_HOSTNAME=mx.example.test" },
      .signal = SIGTERM, .want_status = 0,
      .want_calls = "start mx.example.test;instance nocfg;stop;stopped;destroy;" },
    { .name = "SIGINT, svc_stopped() later from the loop",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS,
               "SMTP_HOSTNAME=mx.example.test" },
      .stop = STOP_LATER, .signal = SIGINT, .want_status = 0,
      .want_calls = "start mx.example.test;instance nocfg;stop;stopped;destroy;" },
    { .name = "no stop callback: stopped at once",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS,
               "SMTP_HOSTNAME=mx.example.test" },
      .stop = STOP_DEFAULT, .signal = SIGTERM, .want_status = 0,
      .want_calls = "start mx.example.test;instance nocfg;destroy;" },
    { .name = "SIGHUP, then SIGTERM; a handle the service forgot does not hang the exit",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS,
               "SMTP_HOSTNAME=mx.example.test" },
      .leave_handle = true, .hup = true, .signal = SIGTERM, .want_status = 0,
      .want_calls = "start mx.example.test;instance nocfg;hup;stop;stopped;destroy;" },
    { .name = "readiness: the configuration first; /readyz served until the stop",
      .env = { "DATABASE_URL=" NOBODY_DB, "NATS_URL=" NOBODY_NATS,
               "SMTP_HOSTNAME=mx.example.test", "HEALTH_PORT=" },
      .want_config = true, .signal = SIGTERM, .readyz = "not ready: configuration",
      .want_status = 0,
      .want_calls = "start mx.example.test;instance cfg;stop;stopped;destroy;" },
};

static void test_lifecycle(void **state)
{
    (void)state;
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_case(&cases[i]);
}

/* WORKERS: a count in range, or "auto" for one per CPU (capped); anything else refused. */
static void test_workers_parse(void **state)
{
    (void)state;
    assert_int_equal(svc_workers_parse(NULL, 8), 1);
    assert_int_equal(svc_workers_parse("", 8), 1);
    assert_int_equal(svc_workers_parse("1", 8), 1);
    assert_int_equal(svc_workers_parse("3", 8), 3);
    assert_int_equal(svc_workers_parse("64", 8), 64);
    assert_int_equal(svc_workers_parse("auto", 8), 8);
    assert_int_equal(svc_workers_parse("auto", 0), 1);
    assert_int_equal(svc_workers_parse("auto", 200), SVC_WORKERS_MAX);
    assert_int_equal(svc_workers_parse("0", 8), -1);
    assert_int_equal(svc_workers_parse("65", 8), -1);
    assert_int_equal(svc_workers_parse("-2", 8), -1);
    assert_int_equal(svc_workers_parse("2x", 8), -1);
    assert_int_equal(svc_workers_parse("Auto", 8), -1);
    assert_int_equal(svc_workers_parse("99999999999999999999", 8), -1);
}

static void test_hostname_ok(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        bool ok;
    } t[] = {
        { "mx.example.test", true },     { "localhost", true },   { "a-b.c1", true },
        { "", false },                   { ".example", false },   { "-mx.example", false },
        { "mx example", false },         { "mx_1.example", false }, { "mx\r\n.example", false },
        { NULL, false },
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (svc_hostname_ok(t[i].name) != t[i].ok)
            fail_msg("svc_hostname_ok(\"%s\") != %d", t[i].name ? t[i].name : "(null)",
                     t[i].ok);
    char long_name[300];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_false(svc_hostname_ok(long_name));
    long_name[255] = '\0';
    assert_true(svc_hostname_ok(long_name));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostname_ok),
        cmocka_unit_test(test_workers_parse),
        cmocka_unit_test(test_lifecycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
