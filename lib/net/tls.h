/* Server TLS settings: TLS 1.2 and newer only, certificate chain and key from PEM files,
 * reloadable without a restart. Sessions already running keep the context they started
 * with (OpenSSL reference-counts it); new ones get the reloaded one. */
#ifndef POSTERN_TLS_H
#define POSTERN_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

typedef struct tls tls_t;

/* Returns NULL with a message in err when the files cannot be loaded or do not match. */
tls_t *tls_create(const char *cert_file, const char *key_file, char *err, size_t err_len);
void tls_destroy(tls_t **t);
/* Loads the files again; on failure keeps the current context and returns -1. */
int tls_reload(tls_t *t, char *err, size_t err_len);
/* A new server-side SSL object from the current context, or NULL. */
SSL *tls_new_ssl(tls_t *t);

#endif
