#include "net/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tls {
    char *cert_file;
    char *key_file;
    SSL_CTX *ctx;
};

static void tls_error(char *err, size_t err_len, const char *what)
{
    unsigned long e = ERR_get_error();
    char detail[256] = "";
    if (e)
        ERR_error_string_n(e, detail, sizeof detail);
    snprintf(err, err_len, "%s%s%s", what, e ? ": " : "", detail);
    ERR_clear_error();
}

static SSL_CTX *tls_load(const char *cert_file, const char *key_file, char *err, size_t err_len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_error(err, err_len, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_cipher_list(ctx, "HIGH:!aNULL:!MD5:!RC4:!3DES:!SHA1@STRENGTH:ECDHE+AESGCM");
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* An idle session gives its two 16 KiB record buffers back (bench/idle_memory.py). */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        tls_error(err, err_len, "cannot load certificate");
    } else if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        tls_error(err, err_len, "cannot load private key");
    } else if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_error(err, err_len, "certificate and key do not match");
    } else {
        return ctx;
    }
    SSL_CTX_free(ctx);
    return NULL;
}

tls_t *tls_create(const char *cert_file, const char *key_file, char *err, size_t err_len)
{
    SSL_CTX *ctx = tls_load(cert_file, key_file, err, err_len);
    if (!ctx)
        return NULL;
    tls_t *t = calloc(1, sizeof *t);
    if (!t || !(t->cert_file = strdup(cert_file)) || !(t->key_file = strdup(key_file))) {
        if (t) {
            free(t->cert_file);
            free(t);
        }
        SSL_CTX_free(ctx);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    t->ctx = ctx;
    return t;
}

void tls_destroy(tls_t **tp)
{
    tls_t *t = *tp;
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t->cert_file);
    free(t->key_file);
    free(t);
    *tp = NULL;
}

int tls_reload(tls_t *t, char *err, size_t err_len)
{
    SSL_CTX *ctx = tls_load(t->cert_file, t->key_file, err, err_len);
    if (!ctx)
        return -1;
    SSL_CTX_free(t->ctx); /* sessions holding it keep it alive */
    t->ctx = ctx;
    return 0;
}

SSL *tls_new_ssl(tls_t *t)
{
    return t ? SSL_new(t->ctx) : NULL;
}

struct tls_client {
    SSL_CTX *ctx;
};

tls_client_t *tls_client_create(const char *ca_file, char *err, size_t err_len)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        tls_error(err, err_len, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
        tls_error(err, err_len, "cannot load the system's trusted CAs");
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (ca_file && SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        char what[300];
        snprintf(what, sizeof what, "cannot load CA file %s", ca_file);
        tls_error(err, err_len, what);
        SSL_CTX_free(ctx);
        return NULL;
    }
    tls_client_t *t = calloc(1, sizeof *t);
    if (!t) {
        SSL_CTX_free(ctx);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    t->ctx = ctx;
    return t;
}

void tls_client_destroy(tls_client_t **tp)
{
    tls_client_t *t = *tp;
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
    *tp = NULL;
}

static bool tls_is_ip_literal(const char *name)
{
    unsigned char tmp[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, tmp) == 1 || inet_pton(AF_INET6, name, tmp) == 1;
}

/* Makes the chain verification also check that the certificate names name. */
static int tls_expect_name(SSL *ssl, const char *name)
{
    if (tls_is_ip_literal(name))
        return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) == 1 ? 0 : -1;
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    return SSL_set1_host(ssl, name) == 1 ? 0 : -1;
}

SSL *tls_client_new_ssl(tls_client_t *t, const char *sni, const char *verify_name)
{
    if (!t || (verify_name && !*verify_name))
        return NULL;
    SSL *ssl = SSL_new(t->ctx);
    if (!ssl)
        return NULL;
    const char *name = verify_name ? verify_name : sni;
    if ((sni && *sni && !tls_is_ip_literal(sni) && SSL_set_tlsext_host_name(ssl, sni) != 1) ||
        (name && *name && tls_expect_name(ssl, name) < 0)) {
        SSL_free(ssl);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_verify(ssl, verify_name ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    return ssl;
}
