/* A whole POP3 session (services/pop3d) with the network, PostgreSQL, NATS and the
 * configuration replaced (fe_fake.h): USER/PASS, APOP-less AUTH (SASL-IR, RFC 5034), CAPA,
 * STLS, then the maildrop: STAT, LIST, UIDL, RETR and TOP (the message read from the store
 * in pieces and dot-stuffed), DELE, RSET, NOOP and QUIT's update.
 *
 * The maildrop: user@example.test (password "pencil") has three messages; the third one's
 * bytes come from the input, so RETR and TOP stuff whatever the fuzzer makes.
 *
 * Input: byte 0 = the setting: bit 1 the database is down, bits 2-3 the limiter (no answer,
 * ALLOW, DISABLED, BLOCKED), bit 4 the maildrop is in use by another session, bit 5
 * auth.allow_plaintext; byte 1 = a seed for the sizes of the pieces the stream arrives in;
 * bytes 2-3 = the length N of message 3 (big-endian, at most 8192), then its N bytes; the
 * rest is what the client sends.
 *
 * Checked beyond the sanitizers: every status line starts "+OK" or "-ERR" (or is a SASL
 * continuation "+ "), no status line holds a CR or LF but its CRLF, and every session gives
 * back its memory and references. */
#include <stdint.h>

#include "fe_fake.h"
#include "pop3d.h"

/* The service's own protocol (protocol.c in its folder): its callbacks, its listeners. */

/* ---- the pretend maildrop ------------------------------------------------------------- */

static const char msg1[] = "Subject: one\r\n\r\nline\r\n.starts with a dot\r\n";
static const char msg2[] = "Subject: two\n\nbare LF\n.\n";
static const char *msg3;
static size_t msg3_len;
static bool in_use;

static const char *raw_of(unsigned long uid, size_t *len)
{
    switch (uid) {
    case 11:
        *len = sizeof msg1 - 1;
        return msg1;
    case 12:
        *len = sizeof msg2 - 1;
        return msg2;
    case 13:
        *len = msg3_len;
        return msg3;
    }
    return NULL;
}

static PGresult *table(int ncols, int nrows, const char *const *cells)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc att[4];
    for (int c = 0; c < ncols; c++)
        att[c] = (PGresAttDesc){ .name = (char *)"c", .typid = 25, .typlen = -1,
                                 .atttypmod = -1 };
    if (!res || !PQsetResultAttrs(res, ncols, att))
        abort();
    for (int r = 0; r < nrows; r++)
        for (int c = 0; c < ncols; c++) {
            const char *v = cells[r * ncols + c];
            if (!PQsetvalue(res, r, c, (char *)v, v ? (int)strlen(v) : -1))
                abort();
        }
    return res;
}

static int db_answer(const char *sql, int nparams, const char *const *values, const int *lengths,
                     PGresult **res_r)
{
    (void)lengths;
    if (strcmp(sql, "SELECT kind, n1, n2, n3 FROM postern_pop3_open($1, $2, $3)") == 0) {
        char s1[24], s2[24], s3[24];
        snprintf(s1, sizeof s1, "%zu", sizeof msg1 - 1);
        snprintf(s2, sizeof s2, "%zu", sizeof msg2 - 1);
        snprintf(s3, sizeof s3, "%zu", msg3_len);
        const char *cells[] = { "maildrop", "1", "7", "1700", "message", "11", s1, NULL,
                                "message", "12", s2, NULL, "message", "13", s3, NULL };
        const char *busy[] = { "in-use", NULL, NULL, NULL };
        *res_r = in_use ? table(4, 1, busy) : table(4, 4, cells);
        return 1;
    }
    if (strncmp(sql, "UPDATE pop3_locks", 17) == 0) {
        *res_r = NULL; /* a renewal that fails leaves the lock held: the session goes on */
        return 1;
    }
    if (strncmp(sql, "WITH l AS (DELETE FROM pop3_locks", 33) == 0) {
        const char *cells[] = { "1", "0", NULL };
        *res_r = table(3, 1, cells);
        return 1;
    }
    if (strncmp(sql, "SELECT substring(raw FROM $3::integer FOR $4::integer)", 53) == 0 &&
        nparams == 4) {
        size_t len;
        const char *raw = raw_of(strtoul(values[1], NULL, 10), &len);
        PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
        PGresAttDesc att[2] = { { .name = (char *)"raw", .format = 1, .typid = 17, .typlen = -1,
                                  .atttypmod = -1 },
                                { .name = (char *)"size", .format = 1, .typid = 20, .typlen = 8,
                                  .atttypmod = -1 } };
        if (!res || !PQsetResultAttrs(res, 2, att))
            abort();
        if (raw) {
            size_t from = strtoul(values[2], NULL, 10), count = strtoul(values[3], NULL, 10);
            size_t off = from > 0 ? from - 1 : 0;
            if (off > len)
                off = len;
            if (count > len - off)
                count = len - off;
            unsigned char size[8];
            for (int i = 0; i < 8; i++)
                size[i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
            if (!PQsetvalue(res, 0, 0, (char *)raw + off, (int)count) ||
                !PQsetvalue(res, 0, 1, (char *)size, 8))
                abort();
        }
        *res_r = res;
        return 1;
    }
    return 0;
}

/* ---- checks ---------------------------------------------------------------------------- */

static void reply_check(const char *line, size_t len)
{
    if (!(len >= 3 && !memcmp(line, "+OK", 3)) && !(len >= 4 && !memcmp(line, "-ERR", 4)) &&
        !(len >= 1 && line[0] == '+'))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int verdicts[4] = { 0, POSTERN__VERDICT__VERDICT_ALLOW,
                                     POSTERN__VERDICT__VERDICT_DISABLED,
                                     POSTERN__VERDICT__VERDICT_BLOCKED };
    if (size < 4)
        return 0;
    fake_server_init(&pop3_protocol);
    fake_reply_check = reply_check;
    fake_db_answer = db_answer;
    fake_db_ok_all = true;
    fake_streaming = true; /* multi-line responses are written with their status lines */
    static bool started;
    if (!started) { /* the server-wide state; its look for stale locks finds none here */
        if (pop3_maildrop_start(&fake_srv) < 0)
            abort();
        started = true;
    }
    unsigned flags = data[0], seed = data[1] | 1u;
    size_t n = (size_t)data[2] << 8 | data[3];
    data += 4;
    size -= 4;
    if (n > 8192 || n > size)
        return 0;
    /* A copy of exactly the message, so that ASan sees any read past its end. */
    char *copy = malloc(n ? n : 1);
    if (!copy)
        abort();
    memcpy(copy, data, n);
    msg3 = copy;
    msg3_len = n;
    data += n;
    size -= n;
    fake_db_down = flags & 2;
    fake_lim_answer = verdicts[(flags >> 2) & 3];
    in_use = flags & 16;
    fake_plaintext_auth = flags & 32;
    fe_session_t *s = fake_session_open(&pop3_protocol.listeners[0], "192.0.2.1");
    size_t pos = 0;
    while (pos < size && !s->closing) {
        size_t piece = 1 + (seed * (pos + 7)) % 97;
        if (piece > size - pos)
            piece = size - pos;
        fake_session_input(s, data + pos, piece);
        pos += piece;
    }
    fake_session_end(s);
    free(copy);
    return 0;
}
