/* A whole IMAP session (services/imapd) with the network, PostgreSQL, NATS and the
 * configuration replaced (fe_fake.h): commands and literals (synchronising and LITERAL+)
 * through the line reader and the command assembler, the dispatcher, LOGIN and
 * AUTHENTICATE, and the handlers over a small pretend mail store, so that a message stored
 * with APPEND comes back through FETCH (ENVELOPE, BODYSTRUCTURE, BODY[section], computed by
 * lib/mail/mime.c from the stored bytes), SEARCH, STORE, COPY, EXPUNGE and IDLE.
 *
 * The store: user@example.test (password "pencil", user id 1) has INBOX (id 7, uidvalidity
 * 1700) holding UIDs 1, 2 and 3. Message 3 is whatever the last APPEND stored (at first a
 * small multipart message); 1 and 2 are fixed. Queries the store does not answer below get
 * an empty result (or, with input bit 1, every query gets "database unavailable").
 *
 * Input: byte 0 = the setting: bit 1 the database is down, bits 2-3 the limiter (no answer,
 * ALLOW, DISABLED, BLOCKED), bit 5 auth.allow_plaintext; byte 1 = a seed for the sizes of
 * the pieces the stream arrives in; the rest is what the client sends.
 *
 * Checked beyond the sanitizers: every status line is tagged or untagged ("* ", "+ " or a
 * tag and OK/NO/BAD/BYE/PREAUTH), no reply line holds a CR or LF but its CRLF, and every
 * session gives back its memory and references. */
#include <ctype.h>
#include <stdint.h>

#include "fe_fake.h"
#include "imapd.h"

static const fe_listener_conf_t listeners[] = {
    { "imap", "IMAP_PORT", 143, FE_TLS_NONE, 0 },
};

static const fe_protocol_t protocol = {
    .name = "imapd",
    .service = POSTERN__SERVICE__SERVICE_IMAP,
    .session_size = sizeof(imap_session_t),
    .line_max = IMAP_LINE_MAX,
    .listeners = listeners,
    .nlisteners = 1,
    .open = imap_open,
    .line = imap_line,
    .bytes = imap_bytes,
    .line_too_long = imap_line_too_long,
    .tls_ready = imap_tls_ready,
    .timeout = imap_timeout,
    .release = imap_release,
    .blocked = imap_blocked,
    .drain = imap_drain,
    .start = imap_server_start,
    .stop = imap_server_stop,
};

/* ---- the pretend store ----------------------------------------------------------------- */

static const char msg1[] = "From: Alice <alice@example.net>\r\nTo: user@example.test\r\n"
                           "Subject: one\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
                           "Message-ID: <1@example.net>\r\n\r\nHello\r\n";
static const char msg2[] = "Subject: =?UTF-8?B?w6ljaG8=?=\r\n\r\nbody two\r\n";
static const char msg3_initial[] =
    "From: b@example.org\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n"
    "\r\n--x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\npart one\r\n--x\r\n"
    "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--x--\r\n";

static buf_t msg3;

static const char *raw_of(unsigned long uid, size_t *len)
{
    switch (uid) {
    case 1:
        *len = sizeof msg1 - 1;
        return msg1;
    case 2:
        *len = sizeof msg2 - 1;
        return msg2;
    case 3:
        *len = msg3.len;
        return msg3.data;
    }
    return NULL;
}

/* A result of ncols text columns; NULL values are SQL NULLs. */
static PGresult *table(int ncols, int nrows, const char *const *cells, int binary)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc att[10];
    if (!res || ncols > 10)
        abort();
    for (int c = 0; c < ncols; c++)
        att[c] = (PGresAttDesc){ .name = (char *)"c", .format = binary, .typid = 25,
                                 .typlen = -1, .atttypmod = -1 };
    if (!PQsetResultAttrs(res, ncols, att))
        abort();
    for (int r = 0; r < nrows; r++)
        for (int c = 0; c < ncols; c++) {
            const char *v = cells[r * ncols + c];
            if (!PQsetvalue(res, r, c, (char *)v, v ? (int)strlen(v) : -1))
                abort();
        }
    return res;
}

/* "{1,3}" and "{2,3}": the uid ranges of fetch_meta. */
static bool uid_wanted(const char *lo, const char *hi, unsigned long uid)
{
    const char *a = lo + (*lo == '{'), *b = hi + (*hi == '{');
    while (*a && *b) {
        char *ea, *eb;
        unsigned long l = strtoul(a, &ea, 10), h = strtoul(b, &eb, 10);
        if (ea == a || eb == b)
            return false;
        if (uid >= l && uid <= h)
            return true;
        a = ea + (*ea == ',');
        b = eb + (*eb == ',');
    }
    return false;
}

static int db_answer(const char *sql, int nparams, const char *const *values, const int *lengths,
                     PGresult **res_r)
{
    if (strcmp(sql, "SELECT id FROM users WHERE address = lower($1)") == 0) {
        const char *cells[] = { "1" };
        *res_r = table(1, strcasecmp(values[0], "user@example.test") == 0, cells, 0);
        return 1;
    }
    if (strncmp(sql, "SELECT b.id, b.uidvalidity, b.uidnext", 37) == 0) {
        bool inbox = strcasecmp(values[1], "INBOX") == 0;
        const char *cells[] = {
            "7", "1700", "4", "12", "0", "1", "5", "\\Seen",
            "7", "1700", "4", "12", "0", "2", "6", "",
            "7", "1700", "4", "12", "0", "3", "7", "$Junk \\Flagged",
        };
        *res_r = table(8, inbox ? 3 : 0, cells, 0);
        return 1;
    }
    if (strncmp(sql, "SELECT m.uid, m.size, extract(epoch", 35) == 0 && nparams == 3) {
        const char *cells[3 * 9];
        char sizes[3][24];
        int n = 0;
        for (unsigned long uid = 1; uid <= 3; uid++) {
            if (!uid_wanted(values[1], values[2], uid))
                continue;
            size_t len;
            raw_of(uid, &len);
            snprintf(sizes[n], sizeof sizes[n], "%zu", len);
            const char *row[9] = { uid == 1 ? "1" : uid == 2 ? "2" : "3", sizes[n],
                                   "1700000000", uid == 1 ? "5" : uid == 2 ? "6" : "7",
                                   NULL, NULL, NULL, uid == 1 ? "1704103200" : NULL,
                                   uid == 1 ? "\\Seen" : "" };
            memcpy(&cells[n * 9], row, sizeof row);
            n++;
        }
        *res_r = table(9, n, cells, 0);
        return 1;
    }
    if (strncmp(sql, "SELECT substring(raw FROM $3::integer FOR $4::integer)", 53) == 0) {
        size_t len;
        const char *raw = raw_of(strtoul(values[1], NULL, 10), &len);
        if (!raw) {
            *res_r = table(2, 0, NULL, 1);
            return 1;
        }
        size_t from = strtoul(values[2], NULL, 10), count = strtoul(values[3], NULL, 10);
        size_t off = from > 0 ? from - 1 : 0;
        if (off > len)
            off = len;
        if (count > len - off)
            count = len - off;
        unsigned char size[8];
        for (int i = 0; i < 8; i++)
            size[i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
        PGresult *res = table(2, 0, NULL, 1);
        if (!PQsetvalue(res, 0, 0, (char *)raw + off, (int)count) ||
            !PQsetvalue(res, 0, 1, (char *)size, 8))
            abort();
        *res_r = res;
        return 1;
    }
    if (strncmp(sql, "SELECT mailbox_id, uid, uidvalidity, modseq FROM postern_append(", 64) ==
        0) {
        if (nparams != 5 || !lengths || lengths[4] < 0)
            abort();
        buf_reset(&msg3);
        if (buf_append(&msg3, values[4], (size_t)lengths[4]) < 0)
            abort();
        const char *cells[] = { "7", "3", "1700", "13" };
        *res_r = table(4, 1, cells, 0);
        return 1;
    }
    return 0;
}

/* ---- checks ---------------------------------------------------------------------------- */

static void reply_check(const char *line, size_t len)
{
    if (len >= 2 && (line[0] == '*' || line[0] == '+') && line[1] == ' ')
        return;
    const char *sp = memchr(line, ' ', len);
    if (!sp || sp == line)
        abort();
    const char *st = sp + 1;
    size_t rest = len - (size_t)(st - line);
    if (!(rest >= 2 && (!memcmp(st, "OK", 2) || !memcmp(st, "NO", 2))) &&
        !(rest >= 3 && (!memcmp(st, "BAD", 3) || !memcmp(st, "BYE", 3))))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int verdicts[4] = { 0, POSTERN__VERDICT__VERDICT_ALLOW,
                                     POSTERN__VERDICT__VERDICT_DISABLED,
                                     POSTERN__VERDICT__VERDICT_BLOCKED };
    static bool started;
    if (size < 2)
        return 0;
    fake_server_init(&protocol);
    if (!started) {
        if (imap_server_start(&fake_srv) < 0)
            abort();
        buf_init(&msg3);
        started = true;
    }
    buf_reset(&msg3);
    if (buf_append(&msg3, msg3_initial, sizeof msg3_initial - 1) < 0)
        abort();
    fake_reply_check = reply_check;
    fake_db_answer = db_answer;
    fake_db_ok_all = true;
    fake_streaming = true; /* literals and FETCH data are written with the status lines */
    unsigned flags = data[0], seed = data[1] | 1u;
    fake_db_down = flags & 2;
    fake_lim_answer = verdicts[(flags >> 2) & 3];
    fake_plaintext_auth = flags & 32;
    data += 2;
    size -= 2;
    fe_session_t *s = fake_session_open(&listeners[0], "192.0.2.1");
    size_t pos = 0;
    while (pos < size && !s->closing) {
        size_t piece = 1 + (seed * (pos + 7)) % 97;
        if (piece > size - pos)
            piece = size - pos;
        fake_session_input(s, data + pos, piece);
        pos += piece;
    }
    fake_session_end(s);
    return 0;
}
