/* mailctl queue list|show|retry|delete: the outbound queue relayd works (outbound_queue,
 * each recipient's state in outbound_recipients).
 *
 * mailctl never delivers. retry makes messages due and wakes relayd (ConfigChanged
 * "queue"); delete marks a message cancelled, so that relayd returns its pending recipients
 * to the sender, or with --silent removes it without a word. A message under a live lease
 * (lease_until in the future) is being delivered right now by the relayd named in
 * lease_owner: retry leaves it alone, delete says so.
 *
 * A message is named by its queue id, as smtpd announced it ("queued as ..."). Should two
 * messages share one, a command acts on both and says how many it touched. */
#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"

#define QUEUE_ID_MAX 64
/* queue show reads at most this much of a message to find its header section. */
#define HEADER_FETCH_MAX 1048576
/* queue list shows this many pending recipients of a message, then how many more. */
#define LIST_RCPTS_SHOWN 3

/* ---- text for people and for JSON ---------------------------------------------------- */

/* s on one line for a terminal: line breaks and tabs become spaces, other control
 * characters '?' (a remote server's reply must not drive the administrator's terminal).
 * malloc'd; NULL only when out of memory. */
static char *one_line(const char *s)
{
    char *out = strdup(s ? s : "");
    if (!out)
        return NULL;
    for (unsigned char *p = (unsigned char *)out; *p; p++)
        if (*p == '\r' || *p == '\n' || *p == '\t')
            *p = ' ';
        else if (*p < 0x20 || *p == 0x7f)
            *p = '?';
    return out;
}

static void print_line_value(const char *s)
{
    char *safe = one_line(s);
    fputs(safe ? safe : "?", ctl_out());
    free(safe);
}

/* The value of a column as JSON: null for SQL NULL, else a string. */
static void json_col(const PGresult *res, int row, int col)
{
    json_str(ctl_out(), PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col));
}

static void json_bool_col(const PGresult *res, int row, int col)
{
    fputs(strcmp(PQgetvalue(res, row, col), "t") == 0 ? "true" : "false", ctl_out());
}

/* A column that may be NULL, for people: "-" for NULL or empty. */
static const char *or_dash(const PGresult *res, int row, int col)
{
    const char *v = PQgetvalue(res, row, col);
    return PQgetisnull(res, row, col) || !*v ? "-" : v;
}

static const char *sender_shown(const char *sender)
{
    return *sender ? sender : "<>";
}

/* An age in seconds for people: "42s", "17m", "3h05m", "2d04h". */
static const char *age_text(long long secs, char *buf, size_t len)
{
    if (secs < 0)
        secs = 0;
    if (secs < 60)
        snprintf(buf, len, "%llds", secs);
    else if (secs < 3600)
        snprintf(buf, len, "%lldm", secs / 60);
    else if (secs < 86400)
        snprintf(buf, len, "%lldh%02lldm", secs / 3600, secs % 3600 / 60);
    else
        snprintf(buf, len, "%lldd%02lldh", secs / 86400, secs % 86400 / 3600);
    return buf;
}

/* When relayd tries a message next: "in progress (lease held by X until T)" while a lease
 * is live, "now" when it is due, else the time (RFC 3339, UTC); a cancelled message says
 * so. */
static const char *next_try_text(bool leased, const char *owner, const char *until, bool due,
                                 const char *next, const char *cancelled_by, char *buf,
                                 size_t len)
{
    if (leased)
        snprintf(buf, len, "in progress (lease held by %s until %s)", owner, until);
    else if (due && cancelled_by)
        snprintf(buf, len, "now (cancelled by %s)", cancelled_by);
    else if (due)
        snprintf(buf, len, "now");
    else if (cancelled_by)
        snprintf(buf, len, "%s (cancelled by %s)", next, cancelled_by);
    else
        snprintf(buf, len, "%s", next);
    return buf;
}

/* ---- the command line -------------------------------------------------------------- */

/* A queue id as typed: 1..64 printable ASCII characters, no space. */
static int queue_id_arg(const char *arg)
{
    size_t n = strlen(arg);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)arg[i] < ' ' || (unsigned char)arg[i] >= 0x7f)
            return ctl_error("invalid queue id: use an id `mailctl queue list` shows");
    if (n == 0 || n > QUEUE_ID_MAX || strchr(arg, ' '))
        return ctl_error("invalid queue id '%s': use an id `mailctl queue list` shows (up to "
                         "%d letters and digits)",
                         arg, QUEUE_ID_MAX);
    return CTL_OK;
}

static int queue_not_found(const char *qid)
{
    return ctl_error("no message with queue id %s in the outbound queue (see mailctl queue "
                     "list)",
                     qid);
}

/* Parses the options of retry (--all) or delete (--silent) and the one queue id;
 * *qid_r is "" for --all. */
static int queue_target_args(ctl_t *ctl, char **args, int nargs, const char *flag,
                             bool flag_is_all, const char **qid_r, bool *flag_r)
{
    const opt_spec_t specs[] = { { flag, false } };
    const char *values[1];
    char **pos = calloc((size_t)nargs + 1, sizeof *pos);
    if (!pos)
        return CTL_DB;
    int npos = 0;
    int rc = opt_parse(ctl, specs, 1, args, nargs, values, pos, &npos);
    *flag_r = values[0] != NULL;
    if (rc == CTL_OK && npos > 1) {
        ctl->usage = true;
        rc = ctl_error("unexpected argument '%s' (one queue id at a time)", pos[1]);
    } else if (rc == CTL_OK && flag_is_all && *flag_r && npos > 0) {
        ctl->usage = true;
        rc = ctl_error("give a queue id or --all, not both");
    } else if (rc == CTL_OK && npos == 0 && !(flag_is_all && *flag_r)) {
        ctl->usage = true;
        rc = ctl_error(flag_is_all ? "missing argument: a queue id, or --all"
                                   : "missing argument: a queue id");
    } else if (rc == CTL_OK && npos == 1) {
        rc = queue_id_arg(pos[0]);
        *qid_r = pos[0];
    } else if (rc == CTL_OK) {
        *qid_r = "";
    }
    free(pos);
    return rc;
}

/* ---- queue list -------------------------------------------------------------------- */

enum {
    L_QID, L_SENDER, L_PENDING, L_NPENDING, L_NDELIVERED, L_NBOUNCED, L_ATTEMPTS, L_NEXT,
    L_DUE, L_OWNER, L_UNTIL, L_CREATED, L_AGE, L_REPLY, L_CANCELLED, L_ID,
};

/* Every queued message, oldest first: its pending recipients ('\n' between them, by
 * domain), the counts per state, the lease only while it is live, and the last reply
 * (the message's, else a recipient's latest). */
static const char LIST_SQL[] =
    "SELECT q.queue_id, q.sender, coalesce(r.pending, ''), r.npending, r.ndelivered,"
    " r.nbounced, q.attempts, " SQL_UTC("q.next_attempt") ", q.next_attempt <= now(),"
    " CASE WHEN q.lease_until > now() THEN coalesce(q.lease_owner, '?') END,"
    " CASE WHEN q.lease_until > now() THEN " SQL_UTC("q.lease_until") " END,"
    " " SQL_UTC("q.created_at") ", floor(extract(epoch FROM now() - q.created_at))::bigint,"
    " coalesce(q.last_error, r.last_reply), q.cancelled_by, q.id"
    " FROM outbound_queue q LEFT JOIN LATERAL ("
    "  SELECT string_agg(x.recipient, E'\\n' ORDER BY x.domain, x.recipient)"
    "          FILTER (WHERE x.state = 'pending') AS pending,"
    "         count(*) FILTER (WHERE x.state = 'pending') AS npending,"
    "         count(*) FILTER (WHERE x.state = 'delivered') AS ndelivered,"
    "         count(*) FILTER (WHERE x.state = 'bounced') AS nbounced,"
    "         (array_agg(x.last_reply ORDER BY x.updated_at DESC)"
    "          FILTER (WHERE x.last_reply IS NOT NULL))[1] AS last_reply"
    "  FROM outbound_recipients x WHERE x.message_id = q.id) r ON true"
    " ORDER BY q.created_at, q.id";

/* The '\n'-separated list s as a JSON array of strings. */
static void json_lines(const char *s)
{
    fprintf(ctl_out(), "[");
    bool first = true;
    while (*s) {
        size_t n = strcspn(s, "\n");
        char *item = strndup(s, n);
        fprintf(ctl_out(), "%s", first ? "" : ",");
        json_str(ctl_out(), item ? item : "");
        free(item);
        first = false;
        s += n;
        if (*s == '\n')
            s++;
    }
    fprintf(ctl_out(), "]");
}

static void list_json(const PGresult *res)
{
    fprintf(ctl_out(), "{\"messages\":[");
    for (int i = 0; i < PQntuples(res); i++) {
        fprintf(ctl_out(), "%s{\"id\":%s,\"queue_id\":", i ? "," : "", PQgetvalue(res, i, L_ID));
        json_col(res, i, L_QID);
        fprintf(ctl_out(), ",\"sender\":");
        json_col(res, i, L_SENDER);
        fprintf(ctl_out(), ",\"pending_recipients\":");
        json_lines(PQgetvalue(res, i, L_PENDING));
        fprintf(ctl_out(), ",\"pending\":%s,\"delivered\":%s,\"bounced\":%s,\"attempts\":%s",
               PQgetvalue(res, i, L_NPENDING), PQgetvalue(res, i, L_NDELIVERED),
               PQgetvalue(res, i, L_NBOUNCED), PQgetvalue(res, i, L_ATTEMPTS));
        fprintf(ctl_out(), ",\"next_attempt\":");
        json_col(res, i, L_NEXT);
        fprintf(ctl_out(), ",\"due\":");
        json_bool_col(res, i, L_DUE);
        fprintf(ctl_out(), ",\"lease_owner\":");
        json_col(res, i, L_OWNER);
        fprintf(ctl_out(), ",\"lease_until\":");
        json_col(res, i, L_UNTIL);
        fprintf(ctl_out(), ",\"created_at\":");
        json_col(res, i, L_CREATED);
        fprintf(ctl_out(), ",\"age_seconds\":%s,\"last_reply\":", PQgetvalue(res, i, L_AGE));
        json_col(res, i, L_REPLY);
        fprintf(ctl_out(), ",\"cancelled_by\":");
        json_col(res, i, L_CANCELLED);
        fprintf(ctl_out(), "}");
    }
    fprintf(ctl_out(), "]}\n");
}

/* The RECIPIENTS column: up to LIST_RCPTS_SHOWN pending ones, how many more, and the
 * counts of the delivered and bounced. malloc'd. */
static char *list_recipients(const PGresult *res, int row)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    const char *p = PQgetvalue(res, row, L_PENDING);
    long pending = atol(PQgetvalue(res, row, L_NPENDING));
    long delivered = atol(PQgetvalue(res, row, L_NDELIVERED));
    long bounced = atol(PQgetvalue(res, row, L_NBOUNCED));
    for (int shown = 0; *p && shown < LIST_RCPTS_SHOWN; shown++) {
        size_t n = strcspn(p, "\n");
        fprintf(f, "%s%.*s", shown ? ", " : "", (int)n, p);
        p += n + (p[n] == '\n');
    }
    if (pending == 0)
        fputs("(none pending)", f);
    else if (pending > LIST_RCPTS_SHOWN)
        fprintf(f, " +%ld more", pending - LIST_RCPTS_SHOWN);
    if (delivered || bounced) {
        fputs(" (", f);
        if (delivered)
            fprintf(f, "%ld delivered", delivered);
        if (bounced)
            fprintf(f, "%s%ld bounced", delivered ? ", " : "", bounced);
        fputs(")", f);
    }
    fclose(f);
    char *safe = one_line(out);
    free(out);
    return safe;
}

/* The cells of one line of queue list, for people. */
enum { C_QID, C_SENDER, C_RCPTS, C_TRIES, C_NEXT, C_AGE, C_REPLY, C_N };

static void list_table(const PGresult *res)
{
    static const char *const heads[C_N] = { "QUEUE ID", "SENDER", "RECIPIENTS", "TRIES",
                                            "NEXT TRY", "AGE", "LAST REPLY" };
    int n = PQntuples(res);
    char **cells = calloc((size_t)n * C_N, sizeof *cells);
    if (!cells) {
        ctl_error("out of memory");
        return;
    }
    int width[C_N];
    for (int c = 0; c < C_N; c++)
        width[c] = (int)strlen(heads[c]);
    for (int i = 0; i < n; i++) {
        char next[256], age[32];
        bool leased = !PQgetisnull(res, i, L_OWNER);
        const char *cancelled =
            PQgetisnull(res, i, L_CANCELLED) ? NULL : PQgetvalue(res, i, L_CANCELLED);
        char **row = cells + (size_t)i * C_N;
        row[C_QID] = one_line(PQgetvalue(res, i, L_QID));
        row[C_SENDER] = one_line(sender_shown(PQgetvalue(res, i, L_SENDER)));
        row[C_RCPTS] = list_recipients(res, i);
        row[C_TRIES] = strdup(PQgetvalue(res, i, L_ATTEMPTS));
        row[C_NEXT] = one_line(next_try_text(
            leased, PQgetvalue(res, i, L_OWNER), PQgetvalue(res, i, L_UNTIL),
            strcmp(PQgetvalue(res, i, L_DUE), "t") == 0, PQgetvalue(res, i, L_NEXT),
            cancelled, next, sizeof next));
        row[C_AGE] = strdup(age_text(atoll(PQgetvalue(res, i, L_AGE)), age, sizeof age));
        row[C_REPLY] = one_line(or_dash(res, i, L_REPLY));
        for (int c = 0; c < C_N; c++)
            if (row[c] && (int)strlen(row[c]) > width[c])
                width[c] = (int)strlen(row[c]);
    }
    for (int i = -1; i < n; i++) {
        for (int c = 0; c < C_N; c++) {
            const char *v = i < 0 ? heads[c] : cells[(size_t)i * C_N + c];
            if (!v)
                v = "?";
            if (c == C_REPLY)
                fprintf(ctl_out(), "%s\n", v);
            else if (c == C_TRIES)
                fprintf(ctl_out(), "%*s  ", width[c], v);
            else
                fprintf(ctl_out(), "%-*s  ", width[c], v);
        }
    }
    for (size_t k = 0; k < (size_t)n * C_N; k++)
        free(cells[k]);
    free(cells);
    fprintf(ctl_out(), "%d message%s in the outbound queue\n", n, n == 1 ? "" : "s");
}

int cmd_queue_list(ctl_t *ctl, char **args, int nargs)
{
    (void)args;
    (void)nargs;
    PGresult *res = ctl_query(ctl, LIST_SQL, 0, NULL);
    if (!res)
        return CTL_DB;
    if (ctl->json)
        list_json(res);
    else if (PQntuples(res) == 0)
        fprintf(ctl_out(), "the outbound queue is empty\n");
    else
        list_table(res);
    PQclear(res);
    return CTL_OK;
}

/* ---- queue show -------------------------------------------------------------------- */

enum {
    S_ID, S_QID, S_SENDER, S_CREATED, S_AGE, S_SIZE, S_ATTEMPTS, S_LAST_ATTEMPT, S_NEXT, S_DUE,
    S_OWNER, S_UNTIL, S_LEASED, S_WARNED, S_CANCELLED, S_REPLY, S_RAW,
};

static const char SHOW_SQL[] =
    "SELECT q.id, q.queue_id, q.sender, " SQL_UTC("q.created_at") ","
    " floor(extract(epoch FROM now() - q.created_at))::bigint, octet_length(q.raw),"
    " q.attempts, " SQL_UTC("q.last_attempt") ", " SQL_UTC("q.next_attempt") ","
    " q.next_attempt <= now(), q.lease_owner, " SQL_UTC("q.lease_until") ","
    " coalesce(q.lease_until > now(), false), " SQL_UTC("q.warned_at") ", q.cancelled_by,"
    " q.last_error, substring(q.raw FROM 1 FOR " G_STRINGIFY(HEADER_FETCH_MAX) ")"
    " FROM outbound_queue q WHERE q.queue_id = $1 ORDER BY q.created_at, q.id";

enum { R_MESSAGE, R_RCPT, R_STATE, R_REPLY, R_REMOTE, R_UPDATED };

static const char SHOW_RCPTS_SQL[] =
    "SELECT r.message_id, r.recipient, r.state, r.last_reply, r.remote, "
    SQL_UTC("r.updated_at") " FROM outbound_recipients r"
    " JOIN outbound_queue q ON q.id = r.message_id WHERE q.queue_id = $1"
    " ORDER BY r.message_id, r.domain, r.recipient";

/* The length of the header section of a message (RFC 5322 section 2.1: the lines before
 * the first empty line; all of it when there is none). Both CRLF and bare LF end lines. */
static size_t header_length(const char *raw, size_t len)
{
    if ((len >= 1 && raw[0] == '\n') || (len >= 2 && raw[0] == '\r' && raw[1] == '\n'))
        return 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (raw[i] != '\n')
            continue;
        if (raw[i + 1] == '\n' || (i + 2 < len && raw[i + 1] == '\r' && raw[i + 2] == '\n'))
            return i + 1;
    }
    return len;
}

/* The header section of message row as valid UTF-8 (an invalid sequence becomes U+FFFD, a
 * NUL '?'), malloc'd with g_malloc (g_free it); *cut_r tells whether the section goes on
 * past what was read. NULL when out of memory. */
static char *show_headers(const PGresult *res, int row, bool *cut_r)
{
    size_t raw_len = 0;
    unsigned char *raw = PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, S_RAW),
                                         &raw_len);
    if (!raw)
        return NULL;
    for (size_t i = 0; i < raw_len; i++)
        if (raw[i] == '\0')
            raw[i] = '?';
    size_t hlen = header_length((const char *)raw, raw_len);
    *cut_r = hlen == raw_len && (long long)raw_len < atoll(PQgetvalue(res, row, S_SIZE));
    char *text = g_utf8_make_valid((const char *)raw, (gssize)hlen);
    PQfreemem(raw);
    return text;
}

/* The header section for a terminal: each line indented, CRs dropped, control characters
 * other than tab shown as '?'. */
static void print_headers(const char *text)
{
    bool line_start = true;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (line_start)
            fputs("  ", ctl_out());
        line_start = *p == '\n';
        if (*p == '\r')
            continue;
        if (*p == '\n' || *p == '\t' || (*p >= 0x20 && *p != 0x7f))
            fputc(*p, ctl_out());
        else
            fputc('?', ctl_out());
    }
    if (!line_start)
        fputc('\n', ctl_out());
}

static void show_json(const PGresult *res, int row, const PGresult *rcpts, const char *headers,
                      bool cut)
{
    fprintf(ctl_out(), "{\"id\":%s,\"queue_id\":", PQgetvalue(res, row, S_ID));
    json_col(res, row, S_QID);
    fprintf(ctl_out(), ",\"sender\":");
    json_col(res, row, S_SENDER);
    fprintf(ctl_out(), ",\"created_at\":");
    json_col(res, row, S_CREATED);
    fprintf(ctl_out(), ",\"age_seconds\":%s,\"size\":%s,\"attempts\":%s,\"last_attempt\":",
           PQgetvalue(res, row, S_AGE), PQgetvalue(res, row, S_SIZE),
           PQgetvalue(res, row, S_ATTEMPTS));
    json_col(res, row, S_LAST_ATTEMPT);
    fprintf(ctl_out(), ",\"next_attempt\":");
    json_col(res, row, S_NEXT);
    fprintf(ctl_out(), ",\"due\":");
    json_bool_col(res, row, S_DUE);
    fprintf(ctl_out(), ",\"lease_owner\":");
    json_col(res, row, S_OWNER);
    fprintf(ctl_out(), ",\"lease_until\":");
    json_col(res, row, S_UNTIL);
    fprintf(ctl_out(), ",\"lease_live\":");
    json_bool_col(res, row, S_LEASED);
    fprintf(ctl_out(), ",\"warned_at\":");
    json_col(res, row, S_WARNED);
    fprintf(ctl_out(), ",\"cancelled_by\":");
    json_col(res, row, S_CANCELLED);
    fprintf(ctl_out(), ",\"last_reply\":");
    json_col(res, row, S_REPLY);
    fprintf(ctl_out(), ",\"recipients\":[");
    bool first = true;
    for (int r = 0; r < PQntuples(rcpts); r++) {
        if (strcmp(PQgetvalue(rcpts, r, R_MESSAGE), PQgetvalue(res, row, S_ID)) != 0)
            continue;
        fprintf(ctl_out(), "%s{\"recipient\":", first ? "" : ",");
        json_col(rcpts, r, R_RCPT);
        fprintf(ctl_out(), ",\"state\":");
        json_col(rcpts, r, R_STATE);
        fprintf(ctl_out(), ",\"last_reply\":");
        json_col(rcpts, r, R_REPLY);
        fprintf(ctl_out(), ",\"remote\":");
        json_col(rcpts, r, R_REMOTE);
        fprintf(ctl_out(), ",\"updated_at\":");
        json_col(rcpts, r, R_UPDATED);
        fprintf(ctl_out(), "}");
        first = false;
    }
    fprintf(ctl_out(), "],\"headers\":");
    json_str(ctl_out(), headers);
    fprintf(ctl_out(), ",\"headers_truncated\":%s}", cut ? "true" : "false");
}

static void show_field(const char *name, const char *value)
{
    fprintf(ctl_out(), "%-13s ", name);
    print_line_value(value);
    fputc('\n', ctl_out());
}

static void show_text(const PGresult *res, int row, const PGresult *rcpts, const char *headers,
                      bool cut)
{
    char buf[512], age[32];
    const char *sender = PQgetvalue(res, row, S_SENDER);
    bool leased = strcmp(PQgetvalue(res, row, S_LEASED), "t") == 0;
    const char *cancelled =
        PQgetisnull(res, row, S_CANCELLED) ? NULL : PQgetvalue(res, row, S_CANCELLED);

    show_field("queue id:", PQgetvalue(res, row, S_QID));
    snprintf(buf, sizeof buf, "%s%s", sender_shown(sender),
             *sender ? "" : " (the null sender: a bounce or notice; nothing is returned)");
    show_field("sender:", buf);
    snprintf(buf, sizeof buf, "%s (%s ago)", PQgetvalue(res, row, S_CREATED),
             age_text(atoll(PQgetvalue(res, row, S_AGE)), age, sizeof age));
    show_field("created:", buf);
    snprintf(buf, sizeof buf, "%s bytes", PQgetvalue(res, row, S_SIZE));
    show_field("size:", buf);
    if (PQgetisnull(res, row, S_LAST_ATTEMPT))
        snprintf(buf, sizeof buf, "%s", PQgetvalue(res, row, S_ATTEMPTS));
    else
        snprintf(buf, sizeof buf, "%s (last %s)", PQgetvalue(res, row, S_ATTEMPTS),
                 PQgetvalue(res, row, S_LAST_ATTEMPT));
    show_field("attempts:", buf);
    show_field("next try:",
               next_try_text(leased, or_dash(res, row, S_OWNER), PQgetvalue(res, row, S_UNTIL),
                             strcmp(PQgetvalue(res, row, S_DUE), "t") == 0,
                             PQgetvalue(res, row, S_NEXT), cancelled, buf, sizeof buf));
    if (leased)
        snprintf(buf, sizeof buf, "held by %s until %s", or_dash(res, row, S_OWNER),
                 PQgetvalue(res, row, S_UNTIL));
    else if (!PQgetisnull(res, row, S_UNTIL))
        snprintf(buf, sizeof buf, "none (%s's ran out at %s)", or_dash(res, row, S_OWNER),
                 PQgetvalue(res, row, S_UNTIL));
    else
        snprintf(buf, sizeof buf, "none");
    show_field("lease:", buf);
    if (PQgetisnull(res, row, S_WARNED))
        snprintf(buf, sizeof buf, "no");
    else
        snprintf(buf, sizeof buf, "delay notice sent %s", PQgetvalue(res, row, S_WARNED));
    show_field("warned:", buf);
    if (!cancelled)
        snprintf(buf, sizeof buf, "no");
    else
        snprintf(buf, sizeof buf, "by %s: relayd %s", cancelled,
                 *sender ? "returns the pending recipients to the sender"
                         : "removes it (the null sender gets no notice)");
    show_field("cancelled:", buf);
    show_field("last reply:", or_dash(res, row, S_REPLY));

    fprintf(ctl_out(), "recipients:\n");
    const char *id = PQgetvalue(res, row, S_ID);
    int wr = 9, ws = 5, wm = 6;
    for (int r = 0; r < PQntuples(rcpts); r++) {
        if (strcmp(PQgetvalue(rcpts, r, R_MESSAGE), id) != 0)
            continue;
        if (PQgetlength(rcpts, r, R_RCPT) > wr)
            wr = PQgetlength(rcpts, r, R_RCPT);
        if (PQgetlength(rcpts, r, R_STATE) > ws)
            ws = PQgetlength(rcpts, r, R_STATE);
        if (PQgetlength(rcpts, r, R_REMOTE) > wm)
            wm = PQgetlength(rcpts, r, R_REMOTE);
    }
    fprintf(ctl_out(), "  %-*s  %-*s  %-*s  %-20s  %s\n", wr, "RECIPIENT", ws, "STATE", wm, "REMOTE",
           "UPDATED", "LAST REPLY");
    for (int r = 0; r < PQntuples(rcpts); r++) {
        if (strcmp(PQgetvalue(rcpts, r, R_MESSAGE), id) != 0)
            continue;
        char *rcpt = one_line(PQgetvalue(rcpts, r, R_RCPT));
        char *remote = one_line(or_dash(rcpts, r, R_REMOTE));
        fprintf(ctl_out(), "  %-*s  %-*s  %-*s  %-20s  ", wr, rcpt ? rcpt : "?", ws,
               PQgetvalue(rcpts, r, R_STATE), wm, remote ? remote : "?",
               PQgetvalue(rcpts, r, R_UPDATED));
        print_line_value(or_dash(rcpts, r, R_REPLY));
        fputc('\n', ctl_out());
        free(rcpt);
        free(remote);
    }
    fprintf(ctl_out(), "header section%s:\n", cut ? " (cut: longer than mailctl reads)" : "");
    print_headers(headers);
}

int cmd_queue_show(ctl_t *ctl, char **args, int nargs)
{
    (void)nargs;
    const char *qid = args[0];
    int rc = queue_id_arg(qid);
    if (rc != CTL_OK)
        return rc;
    const char *p[] = { qid };
    /* One snapshot for the message and its recipients. */
    if ((rc = ctl_begin(ctl)) != CTL_OK ||
        (rc = ctl_exec(ctl, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", 0,
                       NULL, NULL)) != CTL_OK)
        return rc;
    PGresult *res = ctl_query(ctl, SHOW_SQL, 1, p);
    if (!res)
        return CTL_DB;
    PGresult *rcpts = ctl_query(ctl, SHOW_RCPTS_SQL, 1, p);
    if (!rcpts) {
        PQclear(res);
        return CTL_DB;
    }
    ctl_rollback(ctl);
    int n = PQntuples(res);
    if (n == 0) {
        PQclear(res);
        PQclear(rcpts);
        return queue_not_found(qid);
    }
    if (ctl->json)
        fprintf(ctl_out(), "{\"messages\":[");
    for (int i = 0; i < n && rc == CTL_OK; i++) {
        bool cut = false;
        char *headers = show_headers(res, i, &cut);
        if (!headers) {
            rc = ctl_error("out of memory");
            break;
        }
        if (ctl->json) {
            fprintf(ctl_out(), "%s", i ? "," : "");
            show_json(res, i, rcpts, headers, cut);
        } else {
            if (i)
                fputc('\n', ctl_out());
            show_text(res, i, rcpts, headers, cut);
        }
        g_free(headers);
    }
    if (ctl->json && rc == CTL_OK)
        fprintf(ctl_out(), "]}\n");
    if (!ctl->json && n > 1)
        fprintf(ctl_out(), "\nnote: %d messages share queue id %s; retry and delete act on all of them\n",
               n, qid);
    PQclear(res);
    PQclear(rcpts);
    return rc;
}

/* ---- queue retry, queue delete ----------------------------------------------------- */

enum { T_ID, T_QID, T_SENDER, T_LEASED, T_OWNER, T_UNTIL, T_CANCELLED, T_PENDING };

/* The messages a command acts on ($1 a queue id, or '' for every message), locked for the
 * rest of the transaction; relayd's claim skips locked rows. */
static const char TARGET_SQL[] =
    "SELECT q.id, q.queue_id, q.sender, coalesce(q.lease_until > now(), false),"
    " coalesce(q.lease_owner, '?'), " SQL_UTC("q.lease_until") ", q.cancelled_by,"
    " (SELECT count(*) FROM outbound_recipients r"
    "  WHERE r.message_id = q.id AND r.state = 'pending')"
    " FROM outbound_queue q WHERE ($1::text = '' OR q.queue_id = $1)"
    " ORDER BY q.created_at, q.id FOR UPDATE OF q";

static bool target_leased(const PGresult *res, int row)
{
    return strcmp(PQgetvalue(res, row, T_LEASED), "t") == 0;
}

/* The messages under a live lease, as JSON members of "in_progress". */
static void json_in_progress(const PGresult *res)
{
    fprintf(ctl_out(), ",\"in_progress\":[");
    bool first = true;
    for (int i = 0; i < PQntuples(res); i++) {
        if (!target_leased(res, i))
            continue;
        fprintf(ctl_out(), "%s{\"queue_id\":", first ? "" : ",");
        json_col(res, i, T_QID);
        fprintf(ctl_out(), ",\"lease_owner\":");
        json_col(res, i, T_OWNER);
        fprintf(ctl_out(), ",\"lease_until\":");
        json_col(res, i, T_UNTIL);
        fprintf(ctl_out(), "}");
        first = false;
    }
    fprintf(ctl_out(), "]");
}

static int queue_retry(ctl_t *ctl, const char *qid)
{
    const char *p[] = { qid };
    int rc = ctl_begin(ctl);
    if (rc != CTL_OK)
        return rc;
    PGresult *res = ctl_query(ctl, TARGET_SQL, 1, p);
    if (!res)
        return CTL_DB;
    int n = PQntuples(res), leased = 0, retried = 0;
    for (int i = 0; i < n; i++)
        leased += target_leased(res, i);
    if (n == 0) {
        PQclear(res);
        ctl_rollback(ctl);
        if (*qid)
            return queue_not_found(qid);
        if (ctl->json) {
            out_json_ok("queue retry", "queue_id", NULL);
            fprintf(ctl_out(), ",\"all\":true,\"retried\":0,\"in_progress\":[]}\n");
        } else {
            fprintf(ctl_out(), "the outbound queue is empty: nothing to retry\n");
        }
        return CTL_OK;
    }
    if (leased < n) {
        /* least(): a message due already keeps its place in relayd's order. */
        rc = ctl_exec(ctl,
                      "UPDATE outbound_queue SET next_attempt = least(next_attempt, now())"
                      " WHERE ($1::text = '' OR queue_id = $1)"
                      " AND NOT coalesce(lease_until > now(), false) RETURNING id",
                      1, p, &retried);
        char detail[QUEUE_ID_MAX + 128];
        int m = snprintf(detail, sizeof detail, "%s: %d message%s due now", *qid ? qid : "all",
                         retried, retried == 1 ? "" : "s");
        if (leased && m > 0 && (size_t)m < sizeof detail)
            snprintf(detail + m, sizeof detail - (size_t)m, ", %d in progress left alone",
                     leased);
        if (rc == CTL_OK)
            rc = ctl_audit_commit(ctl, "queue retry", detail);
        if (rc != CTL_OK) {
            PQclear(res);
            return rc;
        }
    } else {
        ctl_rollback(ctl);
    }

    if (ctl->json) {
        out_json_ok("queue retry", "queue_id", *qid ? qid : NULL);
        fprintf(ctl_out(), ",\"all\":%s,\"retried\":%d", *qid ? "false" : "true", retried);
        json_in_progress(res);
        fprintf(ctl_out(), "}\n");
    } else {
        if (retried == 1 && *qid)
            fprintf(ctl_out(), "%s is due now: relayd tries it at once\n", qid);
        else if (retried > 1 && *qid)
            fprintf(ctl_out(), "%s: %d messages due now: relayd tries them at once\n", qid, retried);
        else if (retried > 0)
            fprintf(ctl_out(), "%d message%s due now: relayd tries %s at once\n", retried,
                   retried == 1 ? "" : "s", retried == 1 ? "it" : "them");
        for (int i = 0; i < n; i++)
            if (target_leased(res, i))
                fprintf(ctl_out(), "%s is being delivered right now (lease held by %s until %s): left as "
                       "it is\n",
                       PQgetvalue(res, i, T_QID), PQgetvalue(res, i, T_OWNER),
                       PQgetvalue(res, i, T_UNTIL));
    }
    fflush(ctl_out());
    PQclear(res);
    if (retried > 0)
        ctl_announce(ctl, "queue");
    return CTL_OK;
}

int cmd_queue_retry(ctl_t *ctl, char **args, int nargs)
{
    const char *qid = NULL;
    bool all = false;
    int rc = queue_target_args(ctl, args, nargs, "--all", true, &qid, &all);
    return rc == CTL_OK ? queue_retry(ctl, qid) : rc;
}

/* What delete tells people about message row of res (as it was before the change). */
static void delete_print(const PGresult *res, int row, bool silent)
{
    bool changed = PQgetisnull(res, row, T_CANCELLED); /* cancelled now, not before */
    const char *qid = PQgetvalue(res, row, T_QID);
    const char *sender = PQgetvalue(res, row, T_SENDER);
    long pending = atol(PQgetvalue(res, row, T_PENDING));
    bool leased = target_leased(res, row);
    if (silent) {
        fprintf(ctl_out(), "deleted %s from the outbound queue without a notice to its sender %s "
               "(%ld pending recipient%s dropped)\n",
               qid, sender_shown(sender), pending, pending == 1 ? "" : "s");
        if (leased)
            fprintf(ctl_out(), "note: %s was being delivered by %s (lease until %s) and is deleted "
                   "anyway; the attempt under way may still reach some recipients\n",
                   qid, PQgetvalue(res, row, T_OWNER), PQgetvalue(res, row, T_UNTIL));
        return;
    }
    if (!changed) {
        fprintf(ctl_out(), "%s was cancelled already (by %s; nothing changed)\n", qid,
               PQgetvalue(res, row, T_CANCELLED));
    } else if (*sender) {
        fprintf(ctl_out(), "cancelled %s: relayd will return it to the sender %s (%ld pending "
               "recipient%s)\n",
               qid, sender, pending, pending == 1 ? "" : "s");
    } else {
        fprintf(ctl_out(), "cancelled %s: its sender is the null sender <>, so nothing is returned; "
               "relayd will remove it\n",
               qid);
    }
    if (leased)
        fprintf(ctl_out(), "note: %s is being delivered right now by %s (lease until %s); the "
               "cancellation takes effect at its next try after that attempt (once the "
               "attempt is over, mailctl queue retry %s makes that now)\n",
               qid, PQgetvalue(res, row, T_OWNER), PQgetvalue(res, row, T_UNTIL), qid);
}

static int queue_delete(ctl_t *ctl, const char *qid, bool silent)
{
    const char *p[] = { qid };
    int rc = ctl_begin(ctl);
    if (rc != CTL_OK)
        return rc;
    PGresult *res = ctl_query(ctl, TARGET_SQL, 1, p);
    if (!res)
        return CTL_DB;
    int n = PQntuples(res), changed = 0;
    if (n == 0) {
        PQclear(res);
        ctl_rollback(ctl);
        return queue_not_found(qid);
    }
    long pending = 0;
    bool leased = false;
    for (int i = 0; i < n; i++) {
        pending += atol(PQgetvalue(res, i, T_PENDING));
        leased = leased || target_leased(res, i);
    }
    if (silent) {
        rc = ctl_exec(ctl, "DELETE FROM outbound_queue WHERE queue_id = $1 RETURNING id", 1, p,
                      &changed);
    } else {
        /* Due now, so that relayd returns it at once rather than at its next try. */
        const char *q[] = { qid, ctl->actor }; /* cancelled by whom: the login, or web:NAME */
        rc = ctl_exec(ctl,
                      "UPDATE outbound_queue SET cancelled_by = $2,"
                      " next_attempt = least(next_attempt, now())"
                      " WHERE queue_id = $1 AND cancelled_by IS NULL RETURNING id",
                      2, q, &changed);
    }
    if (rc != CTL_OK) {
        PQclear(res);
        return rc;
    }
    if (changed > 0) {
        char detail[QUEUE_ID_MAX + NAME_BUF + 160];
        const char *sender = PQgetvalue(res, 0, T_SENDER);
        snprintf(detail, sizeof detail, "%s from %s: %s, %ld pending recipient%s%s%s", qid,
                 sender_shown(sender), silent ? "deleted silently" : "cancelled", pending,
                 pending == 1 ? "" : "s",
                 silent ? " dropped" : (*sender ? " returned to the sender" : " (no notice)"),
                 leased ? "; was being delivered" : "");
        if ((rc = ctl_audit_commit(ctl, "queue delete", detail)) != CTL_OK) {
            PQclear(res);
            return rc;
        }
    } else {
        ctl_rollback(ctl);
    }

    if (ctl->json) {
        out_json_ok("queue delete", "queue_id", qid);
        fprintf(ctl_out(), ",\"silent\":%s,\"changed\":%s,\"messages\":%d,\"pending_recipients\":%ld",
               silent ? "true" : "false", changed > 0 ? "true" : "false", n, pending);
        fprintf(ctl_out(), ",\"returned_to_sender\":%s",
               !silent && *PQgetvalue(res, 0, T_SENDER) ? "true" : "false");
        json_in_progress(res);
        fprintf(ctl_out(), "}\n");
    } else {
        for (int i = 0; i < n; i++)
            delete_print(res, i, silent);
    }
    fflush(ctl_out());
    PQclear(res);
    if (changed > 0)
        ctl_announce(ctl, "queue");
    return CTL_OK;
}

int cmd_queue_delete(ctl_t *ctl, char **args, int nargs)
{
    const char *qid = NULL;
    bool silent = false;
    int rc = queue_target_args(ctl, args, nargs, "--silent", false, &qid, &silent);
    return rc == CTL_OK ? queue_delete(ctl, qid, silent) : rc;
}
