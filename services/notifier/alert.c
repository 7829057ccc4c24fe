/* notifier: checking an Alert from the bus and composing the message about it. Nothing
 * here does I/O, so the tests can drive it with any input and any clock.
 *
 * Everything that came over the bus is treated as hostile: one line each, cleaned of
 * control characters, cut to a size, so no value can end a header line or start a new
 * header (RFC 5322 section 2.2), and the body is wrapped to short CRLF lines. */
#include "notifier.h"

#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define WRAP_WIDTH 76      /* body lines, in bytes (RFC 5322 section 2.1.1: 78) */
#define LABEL_WIDTH 11     /* "Account:   " */
#define HARD_LINE_MAX 900  /* a word longer than this is cut (limit 998) */

const char *ntf_cause_name(ntf_cause_t cause)
{
    return cause == NTF_CAUSE_HAMR ? "hamr" : "harvest";
}

/* ---- cleaning ---------------------------------------------------------------------- */

/* The length of the UTF-8 sequence at s (1..4) and its code point, or 0 when s does not
 * start a valid, shortest-form sequence of a scalar value. */
static size_t utf8_decode(const unsigned char *s, uint32_t *cp_r)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp, min;
    if (c < 0x80) {
        *cp_r = c;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        n = 2, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0; /* also stops at the NUL */
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    *cp_r = cp;
    return n;
}

void ntf_clean(char *dst, size_t dst_len, const char *src, bool ascii_only)
{
    if (dst_len == 0)
        return;
    size_t n = 0;
    bool space = true; /* drops leading spaces */
    const unsigned char *p = (const unsigned char *)(src ? src : "");
    while (*p) {
        uint32_t cp;
        size_t len = utf8_decode(p, &cp);
        const char *out = (const char *)p;
        size_t out_len = len;
        if (len == 0) {
            out = "?", out_len = 1, len = 1;
        } else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 ||
                   cp == 0x2029 || cp == ' ') {
            out = " ", out_len = 1;
        } else if ((cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069) ||
                   (ascii_only && cp >= 0x80)) {
            out = "?", out_len = 1;
        }
        p += len;
        if (out[0] == ' ') {
            if (space)
                continue;
            space = true;
        } else {
            space = false;
        }
        if (n + out_len >= dst_len)
            break;
        memcpy(dst + n, out, out_len);
        n += out_len;
    }
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

bool ntf_address_ok(const char *address)
{
    size_t len = strlen(address);
    if (len < 3 || len > NTF_ADDRESS_MAX)
        return false;
    const char *at = strchr(address, '@');
    if (!at || at == address || at[1] == '\0' || strchr(at + 1, '@'))
        return false;
    for (const unsigned char *p = (const unsigned char *)address; *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || strchr("\"\\<>()[],;:{}", *p))
            return false;
    return true;
}

/* Characters of an IPv4 or IPv6 address or network in text form. */
static bool client_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= NTF_CLIENT_MAX && strspn(s, "0123456789abcdefABCDEF.:/") == n &&
           strpbrk(s, ".:") != NULL;
}

static void lowercase(char *s)
{
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
}

int ntf_alert_from_ev(const ev_alert_t *in, int64_t now_ms, ntf_alert_t *a, char *why,
                      size_t why_len)
{
    memset(a, 0, sizeof *a);
    const char *cause = in->cause ? in->cause : "";
    if (strcmp(cause, "hamr") == 0) {
        a->cause = NTF_CAUSE_HAMR;
    } else if (strcmp(cause, "harvest") == 0) {
        a->cause = NTF_CAUSE_HARVEST;
    } else {
        char shown[40];
        ntf_clean(shown, sizeof shown, cause, true);
        snprintf(why, why_len, "unknown cause '%s'", shown);
        return -1;
    }

    if (in->user && *in->user) {
        if (strlen(in->user) > NTF_ADDRESS_MAX) {
            snprintf(why, why_len, "the user is longer than %d bytes", NTF_ADDRESS_MAX);
            return -1;
        }
        snprintf(a->user, sizeof a->user, "%s", in->user);
        lowercase(a->user);
        if (!ntf_address_ok(a->user)) {
            snprintf(why, why_len, "the user is not a plain address");
            return -1;
        }
    }
    for (size_t i = 0; in->client_addrs && i < in->n_client_addrs; i++) {
        const char *c = in->client_addrs[i];
        if (!c || !client_ok(c))
            continue; /* dropped: not an address */
        bool dup = false;
        for (size_t j = 0; j < a->nclients; j++)
            if (strcasecmp(a->clients[j], c) == 0)
                dup = true;
        if (dup)
            continue;
        if (a->nclients == NTF_CLIENTS_MAX) {
            a->clients_more++;
            continue;
        }
        snprintf(a->clients[a->nclients], sizeof a->clients[0], "%s", c);
        lowercase(a->clients[a->nclients++]);
    }

    if (a->cause == NTF_CAUSE_HAMR) {
        if (!a->user[0]) {
            snprintf(why, why_len, "a HAMR alert without a user");
            return -1;
        }
        snprintf(a->subject, sizeof a->subject, "%s", a->user);
    } else if (a->nclients > 0) {
        snprintf(a->subject, sizeof a->subject, "%s", a->clients[0]);
    } else if (a->user[0]) {
        snprintf(a->subject, sizeof a->subject, "%s", a->user);
    } else {
        snprintf(why, why_len, "a harvesting alert without a client address or a user");
        return -1;
    }

    ntf_clean(a->limit, sizeof a->limit, in->limit, false);
    ntf_clean(a->action, sizeof a->action, in->action, true);
    lowercase(a->action);
    ntf_clean(a->detail, sizeof a->detail, in->detail, false);
    /* A time more than a day off is not believed. */
    a->time_ms = in->time_ms;
    if (a->time_ms <= 0 || a->time_ms > now_ms + 86400000 || a->time_ms < now_ms - 86400000LL * 365)
        a->time_ms = now_ms;
    a->notify_owner = in->notify_owner && a->user[0];
    a->interval_s = in->interval_s;
    return 0;
}

int ntf_alert_from_pb(const Postern__Alert *pb, int64_t now_ms, ntf_alert_t *a, char *why,
                      size_t why_len)
{
    ev_alert_t ev = {
        .cause = pb->cause,
        .user = pb->user,
        .client_addrs = (const char *const *)pb->client_addrs,
        .n_client_addrs = pb->n_client_addrs,
        .limit = pb->limit,
        .action = pb->action,
        .time_ms = pb->time_ms,
        .detail = pb->detail,
        .notify_owner = pb->notify_owner,
        .interval_s = pb->interval_s,
    };
    return ntf_alert_from_ev(&ev, now_ms, a, why, why_len);
}

void ntf_queue_id(char *out, size_t len)
{
    static const char digits[] = "0123456789BCDFGHJKLMNPQRSTVWXZ";
    unsigned char r[32];
    if (len == 0)
        return;
    if (RAND_bytes(r, sizeof r) != 1)
        memset(r, 0, sizeof r);
    size_t i = 0;
    for (; i + 1 < len && i < sizeof r; i++)
        out[i] = digits[r[i] % (sizeof digits - 1)];
    out[i] = '\0';
}

/* ---- composing --------------------------------------------------------------------- */

/* "throttled", "disabled", "blocked", or the action itself. */
static const char *action_done(const char *action)
{
    if (strcmp(action, "throttle") == 0)
        return "throttled";
    if (strcmp(action, "disable") == 0)
        return "disabled";
    if (strcmp(action, "block") == 0)
        return "blocked";
    if (strcmp(action, "delay") == 0)
        return "slowed down";
    return action[0] ? action : "flagged";
}

/* What the action does, for people. */
static const char *action_meaning(const char *action)
{
    if (strcmp(action, "throttle") == 0)
        return "throttle: further messages get a temporary failure (451 4.7.1) until the "
               "sliding window frees a slot; they go through again as it moves";
    if (strcmp(action, "disable") == 0)
        return "disable: the account may not send (550 5.7.1) until an administrator "
               "re-enables it; it can still receive and read mail";
    if (strcmp(action, "block") == 0)
        return "block: the address is refused at connect on SMTP, POP3 and IMAP until the "
               "block ends or is lifted";
    if (strcmp(action, "delay") == 0)
        return "delay: password checks are slowed down; the account is not locked, and "
               "clients that logged in successfully before are not slowed";
    return action;
}

void ntf_subject_line(const ntf_alert_t *a, char *out, size_t out_len)
{
    if (a->cause == NTF_CAUSE_HAMR)
        snprintf(out, out_len, "[Postern] HAMR: %s %s", a->subject, action_done(a->action));
    else
        snprintf(out, out_len, "[Postern] Harvesting: %s %s", a->subject,
                 action_done(a->action));
}

void ntf_summary(const ntf_alert_t *a, char *out, size_t out_len)
{
    char clients[NTF_CLIENTS_MAX * (NTF_CLIENT_MAX + 2) + 32];
    size_t n = 0;
    clients[0] = '\0';
    for (size_t i = 0; i < a->nclients; i++)
        n += (size_t)snprintf(clients + n, sizeof clients - n, "%s%s", i ? ", " : "",
                              a->clients[i]);
    if (a->clients_more)
        snprintf(clients + n, sizeof clients - n, " and %zu more", a->clients_more);
    char account[NTF_ADDRESS_MAX + 16] = "";
    if (a->user[0] && strcmp(a->user, a->subject) != 0)
        snprintf(account, sizeof account, " (account %s)", a->user);
    snprintf(out, out_len, "%s%s; limit: %s; clients: %s%s%s", action_done(a->action), account,
             a->limit[0] ? a->limit : "-", a->nclients ? clients : "-",
             a->detail[0] ? "; " : "", a->detail);
}

/* A buffer being written that remembers whether memory ran out on the way. */
typedef struct writer {
    buf_t *b;
    bool failed;
} writer_t;

static void w_append(writer_t *w, const char *s, size_t n)
{
    if (buf_append(w->b, s, n) < 0)
        w->failed = true;
}

static void w_puts(writer_t *w, const char *s)
{
    w_append(w, s, strlen(s));
}

static void w_printf(writer_t *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void w_printf(writer_t *w, const char *fmt, ...)
{
    char small[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof small) {
        w->failed = true; /* every caller prints far less */
        return;
    }
    w_append(w, small, (size_t)n);
}

/* Appends text wrapped to WRAP_WIDTH bytes: the first line starts after first_col bytes
 * already on it, the others with indent spaces. Words longer than a line are cut at a
 * character boundary. Ends with CRLF. */
static void wrap(writer_t *out, const char *text, size_t first_col, size_t indent)
{
    size_t col = first_col;
    bool line_empty = true;
    const char *p = text;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        size_t n = strcspn(p, " ");
        /* Cut a word that no line can hold, at a UTF-8 character boundary. */
        size_t room = WRAP_WIDTH > indent ? WRAP_WIDTH - indent : 1;
        if (n > room && n > HARD_LINE_MAX - indent) {
            n = HARD_LINE_MAX - indent;
            while (n > 1 && ((unsigned char)p[n] & 0xc0) == 0x80)
                n--;
        }
        if (!line_empty && col + 1 + n > WRAP_WIDTH) {
            w_puts(out, "\r\n");
            for (size_t i = 0; i < indent; i++)
                w_append(out, " ", 1);
            col = indent;
            line_empty = true;
        }
        if (!line_empty) {
            w_append(out, " ", 1);
            col++;
        }
        w_append(out, p, n);
        col += n;
        line_empty = false;
        p += n;
    }
    w_puts(out, "\r\n");
}

/* "Label:     value" with the value wrapped under itself. */
static void field(writer_t *out, const char *label, const char *value)
{
    char head[LABEL_WIDTH + 1];
    snprintf(head, sizeof head, "%-*s", LABEL_WIDTH, label);
    w_puts(out, head);
    wrap(out, value, LABEL_WIDTH, LABEL_WIDTH);
}

static void utc_text(int64_t ms, char *out, size_t out_len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, out_len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static bool ascii_only(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return false;
    return true;
}

static void body_hamr(const ntf_alert_t *a, writer_t *b)
{
    char line[512];
    snprintf(line, sizeof line,
             "Postern's Hacked Account Mail Regulator (HAMR) %s %s: the account reached its "
             "sending limit.",
             strcmp(a->action, "throttle") == 0   ? "is throttling"
             : strcmp(a->action, "disable") == 0 ? "has disabled sending for"
                                                 : "flagged",
             a->user);
    wrap(b, line, 0, 0);
    w_puts(b, "\r\n");
    field(b, "Account:", a->user);
}

static void body_harvest(const ntf_alert_t *a, writer_t *b)
{
    char line[512];
    if (a->nclients > 0)
        snprintf(line, sizeof line,
                 "Postern's account-harvesting prevention %s %s: it kept failing to "
                 "authenticate, or kept trying unknown recipients.",
                 strcmp(a->action, "block") == 0 ? "has blocked" : "flagged", a->subject);
    else
        snprintf(line, sizeof line,
                 "Postern's account-harvesting prevention sees password guessing against the "
                 "account %s.",
                 a->user);
    wrap(b, line, 0, 0);
    w_puts(b, "\r\n");
    if (a->nclients > 0)
        field(b, "Address:", a->subject);
    if (a->user[0])
        field(b, "Account:", a->user);
}

static void what_to_do(const ntf_alert_t *a, writer_t *b)
{
    w_puts(b, "\r\nWhat to do:\r\n");
    if (a->cause == NTF_CAUSE_HAMR) {
        wrap(b,
             "A stolen password is the usual reason for an account to send this much. Look "
             "at the clients above; if they are not the owner's, change the password:",
             0, 0);
        w_printf(b, "  mailctl user passwd %s\r\n", a->user);
        w_puts(b, "See the account's limits and where they come from:\r\n");
        w_printf(b, "  mailctl hamr show --user %s\r\n", a->user);
        if (strcmp(a->action, "disable") == 0) {
            w_puts(b, "Let it send again (once the password is safe):\r\n");
            w_printf(b, "  mailctl hamr enable --user %s\r\n", a->user);
        }
        w_puts(b, "Raise its limit if this sending is legitimate:\r\n");
        w_printf(b, "  mailctl hamr set --user %s --max N\r\n", a->user);
    } else {
        w_puts(b, "See every active block:\r\n  mailctl harvest blocks\r\n");
        if (a->nclients > 0) {
            w_puts(b, "Lift this block at once, on every server:\r\n");
            w_printf(b, "  mailctl harvest unblock %s\r\n", a->subject);
        }
        w_puts(b, "Never block a network you trust (an exemption beats a block):\r\n"
                  "  mailctl harvest exempt add CIDR\r\n");
        if (a->user[0]) {
            w_puts(b, "If the attacks found the password, change it:\r\n");
            w_printf(b, "  mailctl user passwd %s\r\n", a->user);
        }
    }
}

int ntf_compose(const ntf_alert_t *a, const ntf_mail_t *m, buf_t *out)
{
    buf_t body_buf;
    buf_init(&body_buf);
    writer_t body = { &body_buf, false };
    char when[64], date[64], stamp[32], subject[NTF_ADDRESS_MAX + 64];

    /* ---- body ---- */
    if (a->cause == NTF_CAUSE_HAMR)
        body_hamr(a, &body);
    else
        body_harvest(a, &body);
    if (a->limit[0])
        field(&body, "Limit:", a->limit);
    if (a->interval_s) {
        char interval[96];
        snprintf(interval, sizeof interval, "%u s (the limit counts what happened in the last "
                 "%u seconds)", a->interval_s, a->interval_s);
        field(&body, "Interval:", interval);
    }
    if (a->action[0])
        field(&body, "Action:", action_meaning(a->action));
    utc_text(a->time_ms, when, sizeof when);
    field(&body, "When:", when);
    /* The list, unless it only repeats the Address: line. */
    bool only_subject = a->cause == NTF_CAUSE_HARVEST && a->nclients == 1 &&
                        !a->clients_more && strcmp(a->clients[0], a->subject) == 0;
    if (a->nclients > 0 && !only_subject) {
        buf_t list_buf;
        buf_init(&list_buf);
        writer_t list = { &list_buf, false };
        for (size_t i = 0; i < a->nclients; i++)
            w_printf(&list, "%s%s", a->clients[i], i + 1 < a->nclients ? ", " : "");
        if (a->clients_more)
            w_printf(&list, " and %zu more", a->clients_more);
        field(&body, a->nclients == 1 && !a->clients_more ? "Client:" : "Clients:",
              list_buf.data);
        body.failed |= list.failed;
        buf_free(&list_buf);
    }
    if (a->detail[0]) {
        w_puts(&body, "\r\n");
        wrap(&body, a->detail, 0, 0);
    }
    what_to_do(a, &body);
    w_puts(&body, "\r\n");
    char closing[256];
    snprintf(closing, sizeof closing,
             "This alert goes out at most once every %ld seconds per %s (setting "
             "notifier.interval).%s",
             m->interval_s, a->cause == NTF_CAUSE_HAMR ? "account" : "address",
             m->owner_told ? " The account's owner was told too." : "");
    wrap(&body, closing, 0, 0);
    w_printf(&body, "-- \r\nPostern notifier on %s\r\n", m->hostname);

    /* ---- headers ---- */
    writer_t w = { out, false };
    struct tm tm;
    gmtime_r(&m->now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
    ntf_subject_line(a, subject, sizeof subject);

    w_printf(&w, "Received: by %s (Postern notifier) id %s;\r\n\t%s\r\n", m->hostname,
             m->queue_id, date);
    w_printf(&w, "Date: %s\r\n", date);
    w_printf(&w, "From: Postern <%s>\r\n", m->from);
    if (m->nto == 0) {
        w_puts(&w, "To: undisclosed-recipients:;\r\n");
    } else {
        w_puts(&w, "To: ");
        size_t col = 4;
        for (size_t i = 0; i < m->nto; i++) {
            size_t n = strlen(m->to[i]) + (i + 1 < m->nto ? 1 : 0);
            if (i > 0 && col + 1 + n > WRAP_WIDTH) {
                w_puts(&w, "\r\n ");
                col = 1;
            } else if (i > 0) {
                w_puts(&w, " ");
                col++;
            }
            w_printf(&w, "%s%s", m->to[i], i + 1 < m->nto ? "," : "");
            col += n;
        }
        w_puts(&w, "\r\n");
    }
    w_printf(&w, "Subject: %s\r\n", subject);
    w_printf(&w, "Message-ID: <%s.%s.notifier@%s>\r\n", stamp, m->queue_id, m->hostname);
    w_puts(&w, "Auto-Submitted: auto-generated\r\n");
    w_puts(&w, "X-Auto-Response-Suppress: All\r\n");
    w_puts(&w, "MIME-Version: 1.0\r\n");
    w_puts(&w, "Content-Type: text/plain; charset=utf-8\r\n");
    w_printf(&w, "Content-Transfer-Encoding: %s\r\n",
             ascii_only(body_buf.data, body_buf.len) ? "7bit" : "8bit");
    w_puts(&w, "\r\n");
    w_append(&w, body_buf.data, body_buf.len);
    bool failed = w.failed || body.failed;
    buf_free(&body_buf);
    return failed ? -1 : 0;
}
