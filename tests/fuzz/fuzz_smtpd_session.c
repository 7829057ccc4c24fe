/* A whole SMTP session (services/smtpd: session.c, cmd.c, check.c, data.c) with the network,
 * PostgreSQL, NATS and the configuration replaced (fe_fake.h): the client's bytes go through
 * the line reader, the shared dispatcher and the command tokenizer, the handlers, AUTH
 * (lib/svc/fe_auth.c and the SASL mechanisms, password checks included), DATA and the
 * store request; the database and the limiter answer as the input chooses.
 *
 * Input: byte 0 = the setting:
 *   bit 0  the submission listener (else MX)       bit 1  the database is down
 *   bits 2-3  the limiter: no answer, ALLOW, DISABLED, BLOCKED
 *   bit 4  the client is 127.0.0.1 (relay network; else 192.0.2.1)
 *   bit 5  auth.allow_plaintext
 * byte 1 = a seed for the sizes of the pieces the stream arrives in; the rest is what the
 * client sends. Hosted domain example.test; users postmaster@ and user@example.test,
 * password "pencil"; smtp.max_message_size 100000.
 *
 * Checked beyond the sanitizers: every reply line is "ddd" and ' ' or '-' and text, with a
 * code from 2xx to 5xx; no write holds a CR or LF but its CRLF (no reply injection); the
 * message handed to the store starts with Return-Path and its size matches; every session
 * gives back its memory and references. */
#include <ctype.h>
#include <stdint.h>

#include "fe_fake.h"
#include "smtpd.h"

/* The service's own protocol (protocol.c in its folder): its callbacks, its listeners. */

/* ---- checks ---------------------------------------------------------------------------- */

static void reply_check(const char *line, size_t len)
{
    if (len < 4 || line[0] < '2' || line[0] > '5' || !isdigit((unsigned char)line[1]) ||
        !isdigit((unsigned char)line[2]) || (line[3] != ' ' && line[3] != '-'))
        abort();
}

/* postern_deliver($1 queue id, $2 sender, $3 local rcpts, $4 raw, $5 relay rcpts, $6 raw). */
static int db_answer(const char *sql, int nparams, const char *const *values, const int *lengths,
                     PGresult **res_r)
{
    if (strncmp(sql, "SELECT postern_deliver(", 23) != 0)
        return 0;
    if (nparams != 6 || !lengths || lengths[3] < 0 || lengths[5] < 0 || lengths[5] > lengths[3])
        abort();
    if (lengths[3] < 14 || memcmp(values[3], "Return-Path: <", 14) != 0)
        abort();
    if (!*values[0] || (lengths[5] && memcmp(values[5], values[3] + lengths[3] - lengths[5],
                                             (size_t)lengths[5]) != 0))
        abort();
    *res_r = fake_rows(1, "");
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const int verdicts[4] = { 0, POSTERN__VERDICT__VERDICT_ALLOW,
                                     POSTERN__VERDICT__VERDICT_DISABLED,
                                     POSTERN__VERDICT__VERDICT_BLOCKED };
    if (size < 2)
        return 0;
    fake_server_init(&smtp_protocol);
    if (!fake_srv.proto_data && smtp_protocol.start(&fake_srv) < 0)
        abort(); /* the store's queue (store.c): one session's messages go one at a time */
    fake_reply_check = reply_check;
    fake_db_answer = db_answer;
    unsigned flags = data[0], seed = data[1] | 1u;
    fake_db_down = flags & 2;
    fake_lim_answer = verdicts[(flags >> 2) & 3];
    fake_plaintext_auth = flags & 32;
    data += 2;
    size -= 2;
    fe_session_t *s = fake_session_open(&smtp_protocol.listeners[flags & 1],
                                        flags & 16 ? "127.0.0.1" : "192.0.2.1");
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
