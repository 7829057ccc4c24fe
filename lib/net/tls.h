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

/* Client TLS settings for outbound connections: TLS 1.2 and newer, the system's trusted
 * CAs plus, optionally, a PEM file of private CAs. */
typedef struct tls_client tls_client_t;

/* ca_file: extra trusted CAs, or NULL. Returns NULL with a message in err when the
 * context cannot be made or ca_file cannot be loaded. */
tls_client_t *tls_client_create(const char *ca_file, char *err, size_t err_len);
void tls_client_destroy(tls_client_t **t);

/* A new client-side SSL object, for conn_start_tls(), or NULL (also for an empty
 * verify_name).
 * sni: the server name sent in the hello (RFC 6066 section 3), not sent when it is an IP
 * literal or NULL.
 * verify_name set: the handshake fails unless the peer's chain verifies and its
 * certificate names verify_name (RFC 6125, no partial wildcards; an IP literal is matched
 * against IP address entries).
 * verify_name NULL: opportunistic, any certificate is accepted, but it is still checked
 * against sni so that conn_tls_verified() tells afterwards whether it would have passed. */
SSL *tls_client_new_ssl(tls_client_t *t, const char *sni, const char *verify_name);

#endif
