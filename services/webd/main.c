/* webd: the admin console, its JSON API and the self-service page, over HTTPS only
 * (webd.h). The process is the service skeleton (lib/svc/service.h), whose environment it
 * reads (DATABASE_URL, NATS_URL and credentials, HEALTH_PORT, ...), and:
 *   WEB_PORT          the HTTPS port (default 2443)
 *   LISTEN_ADDRESS    where to listen (default ::, every address, IPv4 too)
 *   TLS_CERT, TLS_KEY the certificate chain and key (PEM), required: there is no plain
 *                     HTTP; SIGHUP reads them again (new connections get the new ones)
 *   WEB_SESSION_IDLE  seconds without a request before a session ends (default 1800)
 *   WEB_SESSION_MAX   seconds after login when a session ends anyway (default 43200)
 *   WEB_DB_POOL       PostgreSQL connections for the request threads (default 4) */
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "auth/scram.h"
#include "base/env.h"
#include "base/log.h"
#include "svc/service.h"
#include "webd.h"

#define WEB_DRAIN_MS 10000 /* at stop and after a reload, how long requests may finish */

typedef struct webd {
    web_t web;
    int fd;                        /* the listening socket, shared by reloaded daemons */
    struct MHD_Daemon *daemon;
    svc_t *svc;
    char *cert, *key;
} webd_t;

/* A daemon that no longer accepts, stopped on a worker thread once its requests are done. */
typedef struct retired {
    uv_work_t work;
    struct MHD_Daemon *daemon;
    int fd;          /* its listening socket (a duplicate of webd_t.fd), closed after it */
    svc_t *svc;      /* set when this is the stop: svc_stopped() afterwards */
} retired_t;

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    buf_t b;
    buf_init(&b);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        buf_append(&b, chunk, n);
    fclose(f);
    if (!b.len) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static int listen_socket(const char *address, const char *port)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(address, port, &hints, &ai);
    if (rc != 0) {
        log_error("bad LISTEN_ADDRESS or WEB_PORT", "address=%s port=%s error=\"%s\"", address,
                  port, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1, off = 0;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    }
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        log_error("cannot listen", "address=%s port=%s error=\"%s\"", address, port,
                  strerror(errno));
        if (fd >= 0)
            close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    return fd;
}

static int no_passphrase_cb(char *buf, int size, int rwflag, void *arg)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)arg;
    return 0; /* never ask on a terminal: an encrypted key is not usable here */
}

/* True when cert (PEM: the chain, the server's certificate first) and key (PEM) are a
 * certificate and its private key. Checked before libmicrohttpd gets them: a broken pair at
 * a reload then changes nothing (libmicrohttpd would leak GnuTLS's half-made credentials). */
static bool cert_key_pair(const char *cert, const char *key)
{
    BIO *cb = BIO_new_mem_buf(cert, -1), *kb = BIO_new_mem_buf(key, -1);
    X509 *x = cb ? PEM_read_bio_X509(cb, NULL, no_passphrase_cb, NULL) : NULL;
    EVP_PKEY *k = kb ? PEM_read_bio_PrivateKey(kb, NULL, no_passphrase_cb, NULL) : NULL;
    bool ok = x && k && X509_check_private_key(x, k) == 1;
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    ERR_clear_error();
    return ok;
}

/* Reads TLS_CERT and TLS_KEY into d, replacing what was there only when they are a usable
 * pair. */
static int load_cert(webd_t *d)
{
    const char *cert = getenv("TLS_CERT"), *key = getenv("TLS_KEY");
    if (!cert || !*cert || !key || !*key) {
        log_error("TLS_CERT and TLS_KEY are required: webd serves HTTPS only", "%s", "");
        return -1;
    }
    char *c = read_file(cert), *k = read_file(key);
    if (!c || !k) {
        log_error("cannot read the certificate or key", "cert=%s key=%s error=\"%s\"", cert, key,
                  strerror(errno));
        free(c);
        free(k);
        return -1;
    }
    if (!cert_key_pair(c, k)) {
        log_error("the certificate or key is not usable (not PEM, or not a pair)",
                  "cert=%s key=%s", cert, key);
        OPENSSL_cleanse(k, strlen(k));
        free(c);
        free(k);
        return -1;
    }
    if (d->key)
        OPENSSL_cleanse(d->key, strlen(d->key));
    free(d->cert);
    free(d->key);
    d->cert = c;
    d->key = k;
    return 0;
}

/* internal.secret keys the digests of failed attempts (the front ends' key); a random one
 * while the database cannot be read (digests then differ from the front ends'). */
static void load_secret(web_t *web)
{
    PGconn *pg = pgpool_get(web->pool);
    PGresult *res = pg ? PQexec(pg, "SELECT value FROM settings WHERE scope = 'system'"
                                    " AND scope_id = 0 AND key = 'internal.secret'")
                       : NULL;
    if (res && PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        PQgetlength(res, 0, 0) > 0) {
        size_t n = (size_t)PQgetlength(res, 0, 0);
        web->secret_len = n < sizeof web->secret ? n : sizeof web->secret;
        memcpy(web->secret, PQgetvalue(res, 0, 0), web->secret_len);
    } else {
        RAND_bytes(web->secret, 32);
        web->secret_len = 32;
    }
    PQclear(res);
    pgpool_put(web->pool, pg);
}

static void retire_work(uv_work_t *w)
{
    retired_t *r = w->data;
    for (int waited = 0; waited < WEB_DRAIN_MS && http_connections(r->daemon) > 0; waited += 50)
        usleep(50 * 1000);
    MHD_stop_daemon(r->daemon);
    if (r->fd >= 0)
        close(r->fd);
}

static void retire_done(uv_work_t *w, int status)
{
    (void)status;
    retired_t *r = w->data;
    if (r->svc)
        svc_stopped(r->svc);
    free(r);
}

/* Stops accepting on the daemon and stops it on a worker thread once its connections have
 * finished (at most WEB_DRAIN_MS); svc: the stop, svc_stopped() afterwards. */
static void retire(webd_t *d, struct MHD_Daemon *daemon, svc_t *svc)
{
    retired_t *r = calloc(1, sizeof *r);
    /* The daemon's own duplicate of d->fd comes back, to be closed once it has stopped
     * (d->fd stays open for the next daemon). */
    int fd = MHD_quiesce_daemon(daemon);
    if (!r) {
        MHD_stop_daemon(daemon);
        if (fd >= 0)
            close(fd);
        if (svc)
            svc_stopped(svc);
        return;
    }
    r->daemon = daemon;
    r->fd = fd;
    r->svc = svc;
    r->work.data = r;
    if (uv_queue_work(d->svc->loop, &r->work, retire_work, retire_done) != 0) {
        MHD_stop_daemon(daemon);
        if (fd >= 0)
            close(fd);
        if (svc)
            svc_stopped(svc);
        free(r);
    }
}

static int webd_start(svc_t *svc)
{
    webd_t *d = calloc(1, sizeof *d);
    if (!d)
        return -1;
    svc->data = d;
    d->svc = svc;
    d->fd = -1;
    web_t *web = &d->web;
    web->bus = svc->bus;
    if (!(web->gate = web_gate_create(svc->loop, svc->bus, svc->cfg, svc->metrics)))
        return -1;
    snprintf(web->instance, sizeof web->instance, "%s", svc->instance);
    web->session_idle_s = (int)env_seconds("WEB_SESSION_IDLE", WEB_SESSION_IDLE_DEFAULT, 60, 86400);
    web->session_max_s = (int)env_seconds("WEB_SESSION_MAX", WEB_SESSION_MAX_DEFAULT, 60, 604800);
    int pool = atoi(env_or("WEB_DB_POOL", "4"));
    if (pool < 1 || pool > 64) {
        log_error("bad WEB_DB_POOL: 1 to 64", "value=%s", getenv("WEB_DB_POOL"));
        return -1;
    }
    const char *pwfile = getenv("NATS_PASSWORD_FILE");
    char pw[BUS_PASSWORD_MAX + 1];
    if (pwfile && *pwfile && bus_password_file(pwfile, pw, sizeof pw) == 0)
        web->nats_password = strdup(pw);
    else if (getenv("NATS_PASSWORD"))
        web->nats_password = strdup(getenv("NATS_PASSWORD"));
    OPENSSL_cleanse(pw, sizeof pw);

    /* Unknown names are checked against a secret of a random password, at the same cost. */
    unsigned char rnd[16];
    scram_secret_t dummy;
    RAND_bytes(rnd, sizeof rnd);
    if (scram_secret_make((const char *)rnd, sizeof rnd, SCRAM_DEFAULT_ITERATIONS, &dummy) != 0 ||
        scram_secret_encode(&dummy, web->dummy_secret, sizeof web->dummy_secret) != 0)
        return -1;

    if (load_cert(d) < 0)
        return -1;
    web->pool = pgpool_create(getenv("DATABASE_URL"), pool);
    if (!web->pool)
        return -1;
    load_secret(web);
    const char *port = env_or("WEB_PORT", WEB_PORT_DEFAULT);
    const char *address = env_or("LISTEN_ADDRESS", "::");
    if ((d->fd = listen_socket(address, port)) < 0)
        return -1;
    d->daemon = http_start(web, d->fd, d->cert, d->key);
    if (!d->daemon) {
        log_error("the HTTPS server did not start (certificate or key not usable?)", "port=%s",
                  port);
        return -1;
    }
    log_info("listening", "address=%s port=%s tls=1.2+", address, port);
    return 0;
}

static void webd_hup(svc_t *svc)
{
    webd_t *d = svc->data;
    if (!d || !d->daemon)
        return;
    if (load_cert(d) < 0) {
        log_error("certificate reload failed: the old one stays", "cert=%s",
                  getenv("TLS_CERT"));
        return;
    }
    /* The new daemon starts on the same socket before the old one stops accepting: a
     * certificate that does not load leaves the old one serving. */
    struct MHD_Daemon *old = d->daemon;
    struct MHD_Daemon *fresh = http_start(&d->web, d->fd, d->cert, d->key);
    if (!fresh) {
        log_error("certificate reload failed: the new certificate or key is not usable; "
                  "the old one stays", "%s", "");
        return;
    }
    d->daemon = fresh;
    retire(d, old, NULL);
    log_info("certificate reloaded", "cert=%s", getenv("TLS_CERT"));
}

static void webd_stop(svc_t *svc)
{
    webd_t *d = svc->data;
    if (!d || !d->daemon) {
        svc_stopped(svc);
        return;
    }
    struct MHD_Daemon *daemon = d->daemon;
    d->daemon = NULL;
    retire(d, daemon, svc);
}

static void webd_destroy(svc_t *svc)
{
    webd_t *d = svc->data;
    if (!d)
        return;
    if (d->daemon)
        MHD_stop_daemon(d->daemon);
    if (d->fd >= 0)
        close(d->fd);
    web_gate_destroy(d->web.gate);
    pgpool_destroy(d->web.pool);
    if (d->key)
        OPENSSL_cleanse(d->key, strlen(d->key));
    free(d->key);
    free(d->cert);
    free(d->web.nats_password);
    free(d);
    svc->data = NULL;
}

static const svc_def_t webd = {
    .name = "webd",
    .db_pool = 1,
    .want_config = true, /* limiter.timeout_ms and .login_on_timeout for the login checks */
    .start = webd_start,
    .stop = webd_stop,
    .destroy = webd_destroy,
    .hup = webd_hup,
};

int main(void)
{
    return svc_main(&webd);
}
