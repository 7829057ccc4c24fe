/* imapd: settings and listeners; everything else is the shared front-end skeleton. */
#include "imapd.h"

static void imap_overloaded(fe_session_t *fs);

static const fe_listener_conf_t imap_listeners[] = {
    { "imap", "IMAP_PORT", 143, FE_TLS_NONE, 0 },
    { "imaps", "IMAPS_PORT", 993, FE_TLS_IMPLICIT, 0 },
};

static const fe_protocol_t imap_protocol = {
    .name = "imapd",
    .service = POSTERN__SERVICE__SERVICE_IMAP,
    .session_size = sizeof(imap_session_t),
    .line_max = IMAP_LINE_MAX,
    .listeners = imap_listeners,
    .nlisteners = sizeof imap_listeners / sizeof imap_listeners[0],
    .idle_timeout_key = IMAP_IDLE_TIMEOUT_KEY,
    .open = imap_open,
    .line = imap_line,
    .bytes = imap_bytes,
    .line_too_long = imap_line_too_long,
    .tls_ready = imap_tls_ready,
    .timeout = imap_timeout,
    .release = imap_release,
    .blocked = imap_blocked,
    .overloaded = imap_overloaded,
    .drain = imap_drain,
    .start = imap_server_start,
    .stop = imap_server_stop,
};

/* Over the memory budget: BYE instead of the greeting (RFC 3501 section 7.1.5; RFC 5530
 * section 3: UNAVAILABLE, a temporary failure). */
static void imap_overloaded(fe_session_t *fs)
{
    fe_session_reply(fs, "* BYE [UNAVAILABLE] %s Server busy, try again later",
                     fs->srv->hostname);
}

int main(void)
{
    return fe_main(&imap_protocol, "IMAP_HOSTNAME");
}
