/* How much heap OpenSSL itself keeps for one idle server-side TLS session, made from the
 * front ends' own TLS context (lib/net/tls.c): the floor under bench/idle_memory.py's
 * figure per TLS connection, which Postern's code cannot go below while a session holds its
 * SSL object.
 *
 *   build/bench/tls_session_memory CERT KEY [SESSIONS]
 *
 * Each session: SSL_new from the context, a full handshake with an OpenSSL client over
 * memory BIOs (no sockets: nothing of the kernel's or libuv's is counted), one line each way
 * as a front end's greeting and command would be, the client freed, the server's emptied
 * BIOs replaced by new ones as lib/net/conn.c does. glibc's count of bytes in use
 * (mallinfo2) before and after SESSIONS of them, divided by SESSIONS; the same for SSL_new
 * alone. One line of key=value pairs. */
#include <malloc.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>

#include "net/tls.h"

/* Moves what one side wrote to the other side's input. */
static void carry(BIO *from, BIO *to)
{
    char buf[16384];
    int n;
    while ((n = BIO_read(from, buf, sizeof buf)) > 0)
        BIO_write(to, buf, n);
}

typedef struct pair {
    SSL *server, *client;
    BIO *s_in, *s_out, *c_in, *c_out;
} pair_t;

static int pair_open(pair_t *p, tls_t *tls, SSL_CTX *client_ctx)
{
    p->server = tls_new_ssl(tls);
    p->client = SSL_new(client_ctx);
    p->s_in = BIO_new(BIO_s_mem());
    p->s_out = BIO_new(BIO_s_mem());
    p->c_in = BIO_new(BIO_s_mem());
    p->c_out = BIO_new(BIO_s_mem());
    if (!p->server || !p->client || !p->s_in || !p->s_out || !p->c_in || !p->c_out)
        return -1;
    SSL_set_bio(p->server, p->s_in, p->s_out);
    SSL_set_bio(p->client, p->c_in, p->c_out);
    SSL_set_accept_state(p->server);
    SSL_set_connect_state(p->client);
    for (int round = 0; round < 8; round++) {
        int c = SSL_do_handshake(p->client);
        carry(p->c_out, p->s_in);
        int s = SSL_do_handshake(p->server);
        carry(p->s_out, p->c_in);
        if (c == 1 && s == 1)
            break;
    }
    if (!SSL_is_init_finished(p->server) || !SSL_is_init_finished(p->client))
        return -1;
    /* The greeting, a command and its reply: the client takes the session tickets on the way. */
    char line[64];
    const char greeting[] = "220 ready\r\n", command[] = "NOOP\r\n", reply[] = "250 OK\r\n";
    if (SSL_write(p->server, greeting, sizeof greeting - 1) <= 0)
        return -1;
    carry(p->s_out, p->c_in);
    if (SSL_read(p->client, line, sizeof line) <= 0 ||
        SSL_write(p->client, command, sizeof command - 1) <= 0)
        return -1;
    carry(p->c_out, p->s_in);
    if (SSL_read(p->server, line, sizeof line) <= 0 ||
        SSL_write(p->server, reply, sizeof reply - 1) <= 0)
        return -1;
    carry(p->s_out, p->c_in);
    if (SSL_read(p->client, line, sizeof line) <= 0)
        return -1;
    /* Idle: the client is gone from this process, the server's BIOs start empty again. */
    SSL_free(p->client);
    p->client = NULL;
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    if (!in || !out)
        return -1;
    SSL_set0_rbio(p->server, in);
    SSL_set0_wbio(p->server, out);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CERT KEY [SESSIONS]\n", argv[0]);
        return 2;
    }
    int n = argc > 3 ? atoi(argv[3]) : 1000;
    if (n < 1)
        return 2;
    char err[256];
    tls_t *tls = tls_create(argv[1], argv[2], err, sizeof err);
    SSL_CTX *client_ctx = SSL_CTX_new(TLS_client_method());
    SSL **kept = calloc((size_t)n, sizeof *kept);
    if (!tls || !client_ctx || !kept) {
        fprintf(stderr, "tls_session_memory: %s\n", tls ? "out of memory" : err);
        return 1;
    }
    /* One of each first: OpenSSL's lazily loaded providers and tables are not per session. */
    pair_t warm = { 0 };
    if (pair_open(&warm, tls, client_ctx) < 0) {
        fprintf(stderr, "tls_session_memory: the handshake failed\n");
        ERR_print_errors_fp(stderr);
        return 1;
    }
    SSL_free(warm.server);

    struct mallinfo2 before = mallinfo2();
    for (int i = 0; i < n; i++)
        if (!(kept[i] = tls_new_ssl(tls)))
            return 1;
    struct mallinfo2 fresh = mallinfo2();
    for (int i = 0; i < n; i++)
        SSL_free(kept[i]);

    struct mallinfo2 start = mallinfo2();
    for (int i = 0; i < n; i++) {
        pair_t p = { 0 };
        if (pair_open(&p, tls, client_ctx) < 0) {
            fprintf(stderr, "tls_session_memory: session %d failed\n", i);
            return 1;
        }
        kept[i] = p.server;
    }
    struct mallinfo2 idle = mallinfo2();
    printf("sessions=%d protocol=%s cipher=%s ssl_new_bytes=%.0f idle_session_bytes=%.0f\n", n,
           SSL_get_version(kept[0]), SSL_get_cipher_name(kept[0]),
           (double)(fresh.uordblks - before.uordblks) / n,
           (double)(idle.uordblks - start.uordblks) / n);
    for (int i = 0; i < n; i++)
        SSL_free(kept[i]);
    free(kept);
    SSL_CTX_free(client_ctx);
    tls_destroy(&tls);
    return 0;
}
