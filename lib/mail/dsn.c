/* RFC 3464 notifications assembled as a GMime tree (multipart/report of RFC 6522) and
 * written with CRLF line ends. The delivery-status fields are written here: GMime has no
 * type for them, and their syntax is a plain block of header-like fields. */
#include "mail/dsn.h"

#include <gmime/gmime.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <sys/time.h>

static pthread_once_t dsn_gmime_once = PTHREAD_ONCE_INIT;

static void dsn_gmime_init(void)
{
    g_mime_init();
}

static const char *const action_names[] = {
    [DSN_ACTION_FAILED] = "failed",     [DSN_ACTION_DELAYED] = "delayed",
    [DSN_ACTION_DELIVERED] = "delivered", [DSN_ACTION_RELAYED] = "relayed",
    [DSN_ACTION_EXPANDED] = "expanded",
};

/* Appends s with line breaks as spaces and bytes outside printable US-ASCII as '?', at most
 * max bytes of it. */
static void put_safe(GString *g, const char *s, size_t max)
{
    for (size_t i = 0; s && s[i] && i < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\r' || ch == '\n' || ch == '\t')
            g_string_append_c(g, ' ');
        else if (ch < 0x20 || ch >= 0x7f)
            g_string_append_c(g, '?');
        else
            g_string_append_c(g, (char)ch);
    }
}

static GDateTime *date_from_ms(int64_t ms)
{
    GDateTime *utc = g_date_time_new_from_unix_utc(ms / 1000);
    if (!utc)
        return NULL;
    GDateTime *local = g_date_time_to_local(utc);
    g_date_time_unref(utc);
    return local;
}

/* An RFC 5322 date-time (RFC 3464 section 2.1.1 uses it for every date field). */
static void put_date(GString *g, int64_t ms)
{
    GDateTime *dt = date_from_ms(ms);
    if (!dt)
        return;
    char *s = g_mime_utils_header_format_date(dt);
    g_string_append(g, s);
    g_free(s);
    g_date_time_unref(dt);
}

static const char *rcpt_status(const dsn_rcpt_t *r)
{
    if (r->status && r->status[0])
        return r->status;
    switch (r->action) {
    case DSN_ACTION_FAILED:
        return "5.0.0";
    case DSN_ACTION_DELAYED:
        return "4.0.0";
    default:
        return "2.0.0";
    }
}

/* The part a person reads. */
static void human_text(const dsn_t *d, GString *g)
{
    g_string_append(g, "This report comes from the Postern mail server at ");
    put_safe(g, d->reporting_mta, 255);
    g_string_append(g, ".\n\n");
    if (d->kind == DSN_FAILED) {
        g_string_append(g, "Your message could not be delivered to the recipients listed below,\n"
                           "and delivery will not be tried again. The reason for each is given\n"
                           "with it. Your message (or, when it is large, its header) follows\n"
                           "this report.\n\n");
    } else {
        g_string_append(g, "Your message has not been delivered yet to the recipients listed\n"
                           "below. Delivery goes on being tried; you do not need to send the\n"
                           "message again.\n");
        if (d->retry_until_ms > 0) {
            g_string_append(g, "It will be tried until ");
            put_date(g, d->retry_until_ms);
            g_string_append(g, ", and returned to you if it cannot go by then.\n");
        }
        g_string_append(g, "\n");
    }
    for (size_t i = 0; i < d->nrcpts; i++) {
        const dsn_rcpt_t *r = &d->rcpts[i];
        g_string_append(g, "<");
        put_safe(g, r->address, 512);
        g_string_append(g, ">: ");
        g_string_append(g, action_names[r->action]);
        if (r->remote_mta && r->remote_mta[0]) {
            const char *host = strchr(r->remote_mta, ';');
            host = host ? host + 1 : r->remote_mta;
            while (*host == ' ')
                host++;
            g_string_append(g, ", host ");
            put_safe(g, host, 255);
            g_string_append(g, " said");
        }
        if (r->diagnostic && r->diagnostic[0]) {
            const char *text = strchr(r->diagnostic, ';');
            text = text ? text + 1 : r->diagnostic;
            while (*text == ' ')
                text++;
            g_string_append(g, ":\n    ");
            put_safe(g, text, 900);
        }
        g_string_append(g, "\n\n");
    }
}

/* The message/delivery-status body (RFC 3464 section 2). */
static void status_fields(const dsn_t *d, int64_t now_ms, GString *g)
{
    g_string_append(g, "Reporting-MTA: dns; ");
    put_safe(g, d->reporting_mta, 255);
    g_string_append(g, "\n");
    if (d->queue_id && d->queue_id[0]) {
        g_string_append(g, "X-Postern-Queue-ID: ");
        put_safe(g, d->queue_id, 128);
        g_string_append(g, "\n");
    }
    if (d->envelope_id && d->envelope_id[0]) {
        g_string_append(g, "Original-Envelope-Id: ");
        put_safe(g, d->envelope_id, 100);
        g_string_append(g, "\n");
    }
    if (d->arrival_ms > 0) {
        g_string_append(g, "Arrival-Date: ");
        put_date(g, d->arrival_ms);
        g_string_append(g, "\n");
    }
    for (size_t i = 0; i < d->nrcpts; i++) {
        const dsn_rcpt_t *r = &d->rcpts[i];
        g_string_append(g, "\nFinal-Recipient: rfc822; ");
        put_safe(g, r->address, 512);
        g_string_append_printf(g, "\nAction: %s\nStatus: ", action_names[r->action]);
        put_safe(g, rcpt_status(r), 15);
        g_string_append(g, "\n");
        if (r->remote_mta && r->remote_mta[0]) {
            g_string_append(g, "Remote-MTA: ");
            put_safe(g, r->remote_mta, 255);
            g_string_append(g, "\n");
        }
        if (r->diagnostic && r->diagnostic[0]) {
            g_string_append(g, "Diagnostic-Code: ");
            put_safe(g, r->diagnostic, 900);
            g_string_append(g, "\n");
        }
        g_string_append(g, "Last-Attempt-Date: ");
        put_date(g, r->last_attempt_ms > 0 ? r->last_attempt_ms : now_ms);
        g_string_append(g, "\n");
        if (r->action == DSN_ACTION_DELAYED && d->retry_until_ms > 0) {
            g_string_append(g, "Will-Retry-Until: ");
            put_date(g, d->retry_until_ms);
            g_string_append(g, "\n");
        }
    }
}

/* A leaf part holding bytes as they are (no transfer encoding but the identity ones). */
static GMimePart *leaf(const char *type, const char *subtype, const void *data, size_t len,
                       GMimeContentEncoding enc)
{
    GMimePart *part = g_mime_part_new_with_type(type, subtype);
    GMimeStream *stream = g_mime_stream_mem_new_with_buffer(data, len);
    GMimeDataWrapper *content =
        g_mime_data_wrapper_new_with_stream(stream, GMIME_CONTENT_ENCODING_DEFAULT);
    g_mime_part_set_content(part, content);
    g_mime_part_set_content_encoding(part, enc);
    g_object_unref(content);
    g_object_unref(stream);
    return part;
}

static bool has_8bit(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return true;
    return false;
}

/* s with every line end as CRLF (a bare LF gains its CR). */
static GString *crlf_copy(const char *s, size_t len)
{
    GString *g = g_string_sized_new(len + len / 32 + 2);
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
            g_string_append_c(g, '\r');
        g_string_append_c(g, s[i]);
    }
    return g;
}

/* Length of the header block of msg (CRLF line ends), without the blank line that ends it,
 * cut at a line end so that it is at most max bytes. */
static size_t header_block_len(const char *msg, size_t len, size_t max)
{
    const char *end = g_strstr_len(msg, (gssize)len, "\r\n\r\n");
    size_t hlen = end ? (size_t)(end - msg) + 2 : len;
    if (hlen <= max)
        return hlen;
    size_t cut = 0;
    for (size_t i = 0; i + 1 < max; i++)
        if (msg[i] == '\r' && msg[i + 1] == '\n')
            cut = i + 2;
    return cut;
}

static GMimeObject *original_part(const dsn_t *d)
{
    size_t max = d->original_max ? d->original_max : DSN_ORIGINAL_MAX;
    GString *orig = crlf_copy(d->original, d->original_len);
    GMimePart *part;
    if (d->kind == DSN_FAILED && orig->len <= max) {
        part = leaf("message", "rfc822", orig->str, orig->len,
                    has_8bit(orig->str, orig->len) ? GMIME_CONTENT_ENCODING_8BIT
                                                   : GMIME_CONTENT_ENCODING_7BIT);
    } else {
        size_t hlen = header_block_len(orig->str, orig->len, max);
        part = leaf("text", "rfc822-headers", orig->str, hlen,
                    has_8bit(orig->str, hlen) ? GMIME_CONTENT_ENCODING_8BIT
                                              : GMIME_CONTENT_ENCODING_7BIT);
    }
    g_string_free(orig, TRUE);
    return GMIME_OBJECT(part);
}

static void add_text_part(GMimeMultipart *report, const char *type, const char *subtype,
                          GString *text)
{
    GString *crlf = crlf_copy(text->str, text->len);
    GMimePart *part = leaf(type, subtype, crlf->str, crlf->len, GMIME_CONTENT_ENCODING_7BIT);
    if (strcmp(type, "text") == 0)
        g_mime_object_set_content_type_parameter(GMIME_OBJECT(part), "charset", "us-ascii");
    g_mime_multipart_add(report, GMIME_OBJECT(part));
    g_object_unref(part);
    g_string_free(crlf, TRUE);
}

static bool usable(const dsn_t *d)
{
    return d->nrcpts > 0 && d->rcpts && d->to && d->to[0] && d->from && d->from[0] &&
           d->reporting_mta && d->reporting_mta[0];
}

int dsn_build(const dsn_t *d, buf_t *out)
{
    if (!usable(d))
        return -1;
    for (size_t i = 0; i < d->nrcpts; i++)
        if (!d->rcpts[i].address || (unsigned)d->rcpts[i].action > DSN_ACTION_EXPANDED)
            return -1;
    pthread_once(&dsn_gmime_once, dsn_gmime_init);
    int64_t now_ms = d->now_ms;
    if (now_ms <= 0) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        now_ms = (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    }

    GMimeMessage *msg = g_mime_message_new(TRUE);
    GString *tmp = g_string_new(NULL);
    put_safe(tmp, d->from, 512);
    g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_FROM,
                               d->from_name ? d->from_name : "Mail Delivery System", tmp->str);
    g_string_truncate(tmp, 0);
    put_safe(tmp, d->to, 512);
    g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_TO, NULL, tmp->str);
    g_mime_message_set_subject(msg,
                               d->kind == DSN_FAILED ? "Returned mail: delivery failed"
                                                     : "Delayed mail: still trying to deliver",
                               NULL);
    GDateTime *date = date_from_ms(now_ms);
    if (date) {
        g_mime_message_set_date(msg, date);
        g_date_time_unref(date);
    }
    g_string_truncate(tmp, 0);
    put_safe(tmp, d->reporting_mta, 255);
    char *msgid = g_mime_utils_generate_message_id(tmp->str);
    g_mime_message_set_message_id(msg, msgid);
    g_free(msgid);
    g_mime_object_set_header(GMIME_OBJECT(msg), "Auto-Submitted", "auto-replied", NULL);

    GMimeMultipart *report = g_mime_multipart_new_with_subtype("report");
    g_mime_object_set_content_type_parameter(GMIME_OBJECT(report), "report-type",
                                             "delivery-status");
    g_string_truncate(tmp, 0);
    human_text(d, tmp);
    add_text_part(report, "text", "plain", tmp);
    g_string_truncate(tmp, 0);
    status_fields(d, now_ms, tmp);
    add_text_part(report, "message", "delivery-status", tmp);
    if (d->original) {
        GMimeObject *orig = original_part(d);
        g_mime_multipart_add(report, orig);
        g_object_unref(orig);
    }
    g_mime_message_set_mime_part(msg, GMIME_OBJECT(report));
    g_object_unref(report);
    g_string_free(tmp, TRUE);

    GMimeFormatOptions *opts = g_mime_format_options_new();
    g_mime_format_options_set_newline_format(opts, GMIME_NEWLINE_FORMAT_DOS);
    GMimeStream *mem = g_mime_stream_mem_new();
    ssize_t n = g_mime_object_write_to_stream(GMIME_OBJECT(msg), opts, mem);
    g_mime_format_options_free(opts);
    g_object_unref(msg);
    int rc = -1;
    if (n >= 0) {
        GByteArray *bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
        GString *crlf = crlf_copy((const char *)bytes->data, bytes->len);
        size_t before = out->len;
        rc = buf_append(out, crlf->str, crlf->len);
        if (rc < 0) {
            out->len = before;
            if (out->cap)
                out->data[before] = '\0';
        }
        g_string_free(crlf, TRUE);
    }
    g_object_unref(mem);
    return rc;
}
