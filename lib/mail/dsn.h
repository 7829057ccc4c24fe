/* Delivery status notifications (RFC 3464) as the sender receives them: a bounce for
 * recipients that failed, a delay notice for recipients still being retried. Built with
 * GMime 3; free of I/O. Thread-safe: GMime is initialised once.
 *
 * The result is a complete RFC 5322 message with CRLF line ends:
 *   Date, Message-ID, From ("Mail Delivery System" <from>), To, Subject,
 *   Auto-Submitted: auto-replied (RFC 3834 section 5), MIME-Version,
 *   Content-Type: multipart/report; report-type=delivery-status (RFC 6522), whose parts are
 *   1. text/plain: what happened, one paragraph per recipient with the reply;
 *   2. message/delivery-status (RFC 3464 section 2): the per-message fields, a blank line,
 *      then the fields of each recipient, blocks separated by blank lines;
 *   3. the original: for a bounce, the whole message (message/rfc822) when it is at most
 *      original_max bytes, else its header fields (text/rfc822-headers, RFC 6522 section 4);
 *      for a delay notice its header fields only. Left out when no original is given. */
#ifndef POSTERN_MAIL_DSN_H
#define POSTERN_MAIL_DSN_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

#define DSN_ORIGINAL_MAX (64 * 1024)

typedef enum dsn_kind {
    DSN_FAILED,  /* "Returned mail: delivery failed" */
    DSN_DELAYED, /* "Delayed mail: still trying to deliver" */
} dsn_kind_t;

/* RFC 3464 section 2.3.3 Action values. */
typedef enum dsn_action {
    DSN_ACTION_FAILED,
    DSN_ACTION_DELAYED,
    DSN_ACTION_DELIVERED,
    DSN_ACTION_RELAYED,
    DSN_ACTION_EXPANDED,
} dsn_action_t;

typedef struct dsn_rcpt {
    const char *address;         /* Final-Recipient: rfc822; address */
    dsn_action_t action;
    const char *status;          /* "5.1.1" (RFC 3463); NULL or "": 5.0.0 for failed,
                                    4.0.0 for delayed, 2.0.0 otherwise */
    const char *remote_mta;      /* "dns; mx.example.com", or NULL */
    const char *diagnostic;      /* "smtp; 550 5.1.1 no such user", or NULL */
    int64_t last_attempt_ms;     /* Last-Attempt-Date; 0: left out */
} dsn_rcpt_t;

typedef struct dsn {
    dsn_kind_t kind;
    const char *reporting_mta;   /* our host name: "Reporting-MTA: dns; <name>" */
    const char *from;            /* "MAILER-DAEMON@host" */
    const char *from_name;       /* NULL: "Mail Delivery System" */
    const char *to;              /* the original envelope sender; never empty (RFC 5321
                                    section 4.5.5: nothing goes to the null sender) */
    const char *queue_id;        /* X-Postern-Queue-ID; NULL or "": left out */
    const char *envelope_id;     /* Original-Envelope-Id (RFC 3461 ENVID); NULL or "": left out */
    int64_t arrival_ms;          /* Arrival-Date; 0: left out */
    int64_t retry_until_ms;      /* delay notices: Will-Retry-Until of each delayed recipient */
    int64_t now_ms;              /* Date; 0: the current time */
    const dsn_rcpt_t *rcpts;
    size_t nrcpts;
    const char *original;        /* the message as queued (CRLF or LF line ends); NULL: none */
    size_t original_len;
    size_t original_max;         /* 0: DSN_ORIGINAL_MAX */
} dsn_t;

/* Appends the notification to out. Returns 0, or -1 when d is unusable (no recipients, no
 * sender to return to, a reporting MTA or From missing) or memory runs out (out is then as
 * it was). Text given in the fields is made safe for a header: line breaks become spaces,
 * bytes outside printable US-ASCII become '?'. */
int dsn_build(const dsn_t *d, buf_t *out);

#endif
