/* The commands on the messages of the selected mailbox (RFC 3501 section 6.4): STORE,
 * SEARCH, COPY and MOVE (RFC 6851) with COPYUID (RFC 4315), EXPUNGE and UID EXPUNGE,
 * CLOSE, UNSELECT (RFC 3691), and APPEND with APPENDUID. FETCH is in cmd_fetch.c. */
#include "imapd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "mail/mime.h"

/* ---- message sets ------------------------------------------------------------------ */

void imap_uidset_free(imap_uidset_t *u)
{
    free(u->ranges);
    memset(u, 0, sizeof *u);
}

static int uidset_add(imap_uidset_t *u, uint32_t lo, uint32_t hi)
{
    if (u->n && u->ranges[u->n - 1].hi + 1 >= lo && u->ranges[u->n - 1].lo <= lo) {
        if (hi > u->ranges[u->n - 1].hi)
            u->ranges[u->n - 1].hi = hi;
        return 0;
    }
    if (u->n == u->cap) {
        size_t cap = u->cap ? u->cap * 2 : 8;
        mailstore_range_t *r = realloc(u->ranges, cap * sizeof *r);
        if (!r)
            return -1;
        u->ranges = r;
        u->cap = cap;
    }
    u->ranges[u->n++] = (mailstore_range_t){ lo, hi };
    return 0;
}

/* The sequence set (or UID set) of argument arg as UID ranges of messages this session
 * knows. Sequence numbers past the last message are a client mistake (BAD); UIDs that do
 * not exist are skipped (section 6.4.8). Returns false after a BAD reply. */
bool imap_set_arg(imap_session_t *s, const imap_arg_t *arg, bool uid, imap_uidset_t *out)
{
    imap_mailbox_t *m = &s->mbox;
    imap_seqset_t set, res;
    const char *err = NULL;
    memset(out, 0, sizeof *out);
    imap_seqset_init(&set);
    imap_seqset_init(&res);
    if (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_NUMBER) {
        imap_bad(s, "Invalid message set");
        return false;
    }
    if (imap_seqset_parse(arg->str, arg->len, &set, &err) < 0) {
        imap_seqset_free(&set);
        imap_bad(s, "Invalid message set: %s", err ? err : "syntax");
        return false;
    }
    bool ok = true;
    if (!uid) {
        for (size_t i = 0; i < set.n && ok; i++) {
            uint32_t lo = set.r[i].lo, hi = set.r[i].hi;
            if ((lo != IMAP_SEQ_STAR && lo > m->count) || (hi != IMAP_SEQ_STAR && hi > m->count))
                ok = false;
        }
        if (!ok) {
            imap_seqset_free(&set);
            imap_bad(s, "Invalid message sequence number: the mailbox has %zu messages", m->count);
            return false;
        }
    }
    uint32_t max = uid ? (m->count ? m->msgs[m->count - 1].uid : 0) : (uint32_t)m->count;
    /* "*" in a UID set of an empty mailbox stays "the largest UID", i.e. none. */
    if (imap_seqset_resolve(&set, max, &res) < 0)
        ok = false;
    imap_seqset_free(&set);
    for (size_t i = 0; ok && i < res.n; i++) {
        uint32_t lo = res.r[i].lo, hi = res.r[i].hi;
        if (uid)
            ok = uidset_add(out, lo, hi) == 0;
        else if (lo >= 1 && hi <= m->count)
            ok = uidset_add(out, m->msgs[lo - 1].uid, m->msgs[hi - 1].uid) == 0;
    }
    imap_seqset_free(&res);
    if (!ok) {
        imap_uidset_free(out);
        imap_no(s, "SERVERBUG", "Out of memory");
        return false;
    }
    return true;
}

mailstore_uidset_t imap_uidset_view(const imap_uidset_t *u)
{
    return (mailstore_uidset_t){ u->ranges, u->n };
}

/* ---- STORE (section 6.4.6; UNCHANGEDSINCE and MODIFIED, RFC 7162 section 3.1.3) ------ */

typedef struct store_op {
    imap_session_t *s;
    bool silent, uid;
} store_op_t;

static void store_cb(void *arg, int status, const mailstore_stored_t *rows, size_t n)
{
    store_op_t *op = arg;
    imap_session_t *s = op->s;
    bool silent = op->silent, uid = op->uid;
    free(op);
    if (!imap_store_alive(s))
        return;
    if (status != MAILSTORE_OK) {
        imap_store_no(s, status, "STORE");
        imap_store_end(s);
        return;
    }
    buf_t b, modified;
    buf_init(&b);
    buf_init(&modified);
    uint64_t top = 0;
    for (size_t k = 0; k < n; k++) {
        const mailstore_stored_t *r = &rows[k];
        long i = imap_msg_index(&s->mbox, r->msg.uid);
        if (r->result == MAILSTORE_STORED_MODIFIED) {
            /* [MODIFIED] lists UIDs for UID STORE, sequence numbers otherwise. */
            if (uid || i >= 0)
                buf_printf(&modified, "%s%lu", modified.len ? "," : "",
                           uid ? (unsigned long)r->msg.uid : (unsigned long)(i + 1));
            continue;
        }
        if (i < 0)
            continue;
        imap_list_changed(&s->mbox);
        s->mbox.msgs[i].flags = imap_flags_mask(r->msg.flags, r->msg.nflags);
        s->mbox.msgs[i].modseq = r->msg.modseq;
        if (r->msg.modseq > top)
            top = r->msg.modseq;
        /* .SILENT still reports MODSEQ to a CONDSTORE client (RFC 7162 section 3.2). */
        if (silent && !s->condstore)
            continue;
        buf_reset(&b);
        buf_printf(&b, "%ld FETCH (", i + 1);
        if (!silent)
            imap_append_flags(&b, r->msg.flags, r->msg.nflags, s->mbox.msgs[i].recent);
        if (uid)
            buf_printf(&b, "%sUID %u", silent ? "" : " ", r->msg.uid);
        if (s->condstore)
            buf_printf(&b, "%sMODSEQ (%llu)", (silent && !uid) ? "" : " ",
                       (unsigned long long)r->msg.modseq);
        buf_puts(&b, ")");
        imap_untagged(s, "%.*s", (int)b.len, b.data);
    }
    if (top)
        imap_publish_change(s, s->mbox.id, top, MAILWATCH_FLAGS);
    if (modified.len)
        imap_ok(s, NULL, "[MODIFIED %.*s] Conditional STORE failed", (int)modified.len,
                modified.data);
    else
        imap_ok(s, NULL, "STORE completed");
    buf_free(&b);
    buf_free(&modified);
    imap_store_end(s);
}

void imap_cmd_store(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    if (s->mbox.readonly) {
        imap_no(s, "READ-ONLY", "The mailbox is read-only (EXAMINE)");
        return;
    }
    imap_store_t st;
    const char *err = NULL;
    memset(&st, 0, sizeof st);
    if (imap_store_parse(r->cmd.args, r->cmd.n_args, &st, &err) < 0) {
        imap_store_free(&st);
        imap_bad(s, "%s", err ? err : "Syntax: STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] (flags)");
        return;
    }
    imap_uidset_t set;
    if (!imap_set_arg(s, &r->cmd.args[0], r->cmd.uid, &set)) {
        imap_store_free(&st);
        return;
    }
    if (st.unchangedsince_set)
        s->condstore = true;
    const char *names[5 + 256];
    size_t n = 0;
    for (unsigned i = 0; i < 5; i++)
        if (st.flags.system & (1u << i))
            names[n++] = imap_sysflag_at(i);
    for (size_t k = 0; k < st.flags.n_keywords && n < sizeof names / sizeof names[0]; k++)
        names[n++] = st.flags.keywords[k];
    store_op_t *op = calloc(1, sizeof *op);
    mailstore_uidset_t view = imap_uidset_view(&set);
    if (!op || set.n == 0) {
        free(op);
        imap_uidset_free(&set);
        imap_store_free(&st);
        if (set.n == 0)
            imap_ok(s, NULL, "STORE completed");
        else
            imap_no(s, "SERVERBUG", "Out of memory");
        return;
    }
    *op = (store_op_t){ s, st.silent, r->cmd.uid };
    mailstore_store_mode_t mode = st.op == IMAP_STORE_ADD      ? MAILSTORE_STORE_ADD
                                  : st.op == IMAP_STORE_REMOVE ? MAILSTORE_STORE_REMOVE
                                                               : MAILSTORE_STORE_SET;
    imap_store_begin(s);
    int rc = mailstore_store(imap_store(s), s->mbox.id, &view, mode, names, n,
                             st.unchangedsince_set ? (int64_t)st.unchangedsince : -1, store_cb, op);
    imap_uidset_free(&set);
    imap_store_free(&st);
    if (rc < 0) {
        free(op);
        imap_store_no(s, MAILSTORE_TEMP, "STORE");
        imap_store_end(s);
    }
}

/* ---- SEARCH (section 6.4.4; MODSEQ, RFC 7162 section 3.1.5) ------------------------- */

/* A search with a text key that is not US-ASCII compares decoded text (RFC 3501 section
 * 6.4.4); the messages of the mailbox whose decoded text is not stored yet get it first,
 * SEARCH_INDEX_BATCH at a time, one message in memory at a time. A message larger than
 * SEARCH_PARSE_MAX is not parsed: its decoded text is empty (only its raw bytes were
 * searchable before, and they are not searched in this case either). */
#define SEARCH_INDEX_BATCH 200
#define SEARCH_PARSE_MAX ((uint64_t)8 << 20)

typedef struct search_op {
    imap_session_t *s;
    bool uid, modseq;
    imap_search_t prog;         /* kept for search_view_cb */
    buf_t sql;
    imap_sql_params_t params;
    mailstore_uidsize_t *batch; /* messages still without decoded text */
    size_t n, next;
    bool full;                  /* the batch was as large as asked: there may be more */
} search_op_t;

static void search_op_free(void *arg)
{
    search_op_t *op = arg;
    if (!op)
        return;
    imap_search_free(&op->prog);
    buf_free(&op->sql);
    imap_sql_params_free(&op->params);
    free(op->batch);
    free(op);
}

/* The session closed while the op waited: let go of everything. */
static bool search_alive(search_op_t *op)
{
    imap_session_t *s = op->s;
    if (!s->fe.closing)
        return true;
    s->op = NULL;
    search_op_free(op);
    imap_store_alive(s); /* drops the op's reference */
    return false;
}

static void search_fail(search_op_t *op, int status)
{
    imap_session_t *s = op->s;
    s->op = NULL;
    search_op_free(op);
    imap_store_no(s, status, "SEARCH");
    imap_store_end(s);
}

static int seq_to_uids(void *ctx, const imap_seqset_t *seqs, imap_seqset_t *uids_r,
                       const char **error_r)
{
    imap_session_t *s = ctx;
    imap_mailbox_t *m = &s->mbox;
    imap_seqset_t res;
    imap_seqset_init(&res);
    if (imap_seqset_resolve(seqs, (uint32_t)m->count, &res) < 0) {
        *error_r = "Out of memory";
        return -1;
    }
    for (size_t i = 0; i < res.n; i++)
        if (res.r[i].lo >= 1 && res.r[i].hi <= m->count &&
            imap_seqset_add(uids_r, m->msgs[res.r[i].lo - 1].uid, m->msgs[res.r[i].hi - 1].uid) < 0) {
            imap_seqset_free(&res);
            *error_r = "Out of memory";
            return -1;
        }
    imap_seqset_free(&res);
    return 0;
}

/* The answer: "SEARCH" and the numbers found (in b), with the highest mod-sequence of
 * those messages when the program had a MODSEQ key (RFC 7162 section 3.1.5). */
static void search_answer(imap_session_t *s, buf_t *b, bool modseq, uint64_t top)
{
    if (modseq && top) {
        buf_puts(b, " (MODSEQ ");
        buf_put_uint(b, top);
        buf_puts(b, ")");
    }
    imap_untagged(s, "%.*s", (int)b->len, b->data);
    buf_free(b);
    imap_ok(s, NULL, "SEARCH completed");
    imap_store_end(s);
}

static void search_cb(void *arg, PGresult *res)
{
    search_op_t *op = arg;
    if (!search_alive(op))
        return;
    imap_session_t *s = op->s;
    bool uid = op->uid, modseq = op->modseq;
    s->op = NULL;
    search_op_free(op);
    if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
        log_warn("search failed", "session=%lu error=\"%s\"", s->fe.id,
                 res ? PQresultErrorMessage(res) : "database unavailable");
        imap_no(s, "UNAVAILABLE", "SEARCH: the mail store is not available, try again later");
        imap_store_end(s);
        return;
    }
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "SEARCH");
    uint64_t top = 0;
    int rows = PQntuples(res);
    for (int i = 0; i < rows; i++) {
        uint32_t u = (uint32_t)strtoul(PQgetvalue(res, i, 0), NULL, 10);
        long idx = imap_msg_index(&s->mbox, u);
        if (idx < 0)
            continue; /* not announced to this session yet */
        uint64_t ms = strtoull(PQgetvalue(res, i, 1), NULL, 10);
        if (ms > top)
            top = ms;
        buf_puts(&b, " ");
        buf_put_uint(&b, uid ? u : (uint64_t)idx + 1);
    }
    search_answer(s, &b, modseq, top);
}

/* ---- a program of flags, mod-sequences, numbers and UIDs: on the mailbox's snapshot ---- */

static void search_run(search_op_t *op);

/* Whether the program asks only what the store's snapshot of the mailbox and the session
 * hold: then it is answered without a query of its own (mailstore_select brings the
 * snapshot up to date with one question, for what changed). */
static bool search_on_view(const imap_search_key_t *k)
{
    switch (k->kind) {
    case IMAP_SK_ALL: case IMAP_SK_SEQSET: case IMAP_SK_UIDSET: case IMAP_SK_FLAG:
    case IMAP_SK_RECENT: case IMAP_SK_MODSEQ:
        return true;
    case IMAP_SK_AND: case IMAP_SK_OR: case IMAP_SK_NOT:
        for (size_t i = 0; i < k->n_kids; i++)
            if (!search_on_view(k->kids[i]))
                return false;
        return true;
    default:
        return false;
    }
}

typedef struct view_msg {
    const mailstore_selected_t *sel;
    const imap_mailbox_t *m;
    size_t i, j;        /* the message in the session (seq i + 1) and in the snapshot */
} view_msg_t;

/* What the SQL of imap_search_sql() would say of one message. */
static bool search_match(const imap_search_key_t *k, const view_msg_t *v)
{
    const imap_mailbox_t *m = v->m;
    switch (k->kind) {
    case IMAP_SK_ALL:
        return true;
    case IMAP_SK_AND:
        for (size_t i = 0; i < k->n_kids; i++)
            if (!search_match(k->kids[i], v))
                return false;
        return true;
    case IMAP_SK_OR:
        return search_match(k->kids[0], v) || search_match(k->kids[1], v);
    case IMAP_SK_NOT:
        return !search_match(k->kids[0], v);
    case IMAP_SK_SEQSET:
        return imap_seqset_contains(&k->set, (uint32_t)v->i + 1, (uint32_t)m->count);
    case IMAP_SK_UIDSET:
        return imap_seqset_contains(&k->set, m->msgs[v->i].uid, m->msgs[m->count - 1].uid);
    case IMAP_SK_RECENT:
        return m->msgs[v->i].recent;
    case IMAP_SK_MODSEQ:
        return v->sel->modseqs[v->j] >= k->num;
    case IMAP_SK_FLAG: {
        unsigned bit = imap_sysflag_parse(k->str, strlen(k->str));
        if (bit && k->str[0] == '\\')
            return (v->sel->flags[v->j] & bit) != 0;
        for (size_t w = 0; w < v->sel->nkeywords; w++)
            if (strcmp(v->sel->keywords[w], k->str) == 0)
                return (v->sel->flags[v->j] & (UINT64_C(1) << (MAILSTORE_F_KEYWORD0 + w))) != 0;
        return false;
    }
    default:
        return false; /* not reached: search_on_view() */
    }
}

static void search_view_cb(void *arg, int status, const mailstore_selected_t *sel,
                           int64_t recent_uid)
{
    search_op_t *op = arg;
    (void)recent_uid;
    if (!search_alive(op))
        return;
    imap_session_t *s = op->s;
    const imap_mailbox_t *m = &s->mbox;
    if (!imap_view_usable(s, status, sel)) { /* the query, as for any SEARCH */
        search_run(op);
        return;
    }
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "SEARCH");
    uint64_t top = 0;
    view_msg_t v = { .sel = sel, .m = m };
    for (v.i = 0; v.i < m->count; v.i++) {
        while (v.j < sel->count && sel->uids[v.j] < m->msgs[v.i].uid)
            v.j++;
        if (v.j == sel->count || sel->uids[v.j] != m->msgs[v.i].uid)
            continue; /* expunged meanwhile: not in the store, as for the query */
        if (!search_match(op->prog.root, &v))
            continue;
        if (sel->modseqs[v.j] > top)
            top = sel->modseqs[v.j];
        buf_puts(&b, " ");
        buf_put_uint(&b, op->uid ? m->msgs[v.i].uid : v.i + 1);
    }
    bool modseq = op->modseq;
    s->op = NULL;
    search_op_free(op);
    search_answer(s, &b, modseq, top);
}

/* The query itself: $1 the mailbox, then the program's parameters. */
static void search_run(search_op_t *op)
{
    imap_session_t *s = op->s;
    const char **values = calloc(op->params.n + 1, sizeof *values);
    if (!values) {
        search_fail(op, MAILSTORE_TEMP);
        return;
    }
    char idtext[24];
    snprintf(idtext, sizeof idtext, "%lld", (long long)s->mbox.id);
    values[0] = idtext;
    for (size_t i = 0; i < op->params.n; i++)
        values[i + 1] = op->params.v[i];
    db_query(s->fe.srv->db, op->sql.data, (int)op->params.n + 1, values, NULL, NULL, search_cb,
             op);
    free(values);
}

static void index_next(search_op_t *op);

static void index_saved_cb(void *arg, int status)
{
    search_op_t *op = arg;
    if (!search_alive(op))
        return;
    if (status != MAILSTORE_OK && status != MAILSTORE_NOTFOUND) { /* NOTFOUND: expunged */
        search_fail(op, status);
        return;
    }
    index_next(op);
}

/* Computes and stores the decoded text of message uid from its raw bytes. */
static void index_save(search_op_t *op, uint32_t uid, const char *raw, size_t len)
{
    imap_session_t *s = op->s;
    char *headers = NULL, *body = NULL;
    if (mail_search_text(raw, len, &headers, &body) < 0 ||
        mailstore_save_search(imap_store(s), s->mbox.id, uid, headers, body, index_saved_cb,
                              op) < 0)
        search_fail(op, MAILSTORE_TEMP);
    free(headers);
    free(body);
}

static void index_raw_cb(void *arg, int status, const unsigned char *data, size_t len,
                         uint64_t total)
{
    search_op_t *op = arg;
    (void)total;
    if (!search_alive(op))
        return;
    if (status == MAILSTORE_NOTFOUND) {
        index_next(op); /* expunged meanwhile */
        return;
    }
    if (status != MAILSTORE_OK) {
        search_fail(op, status);
        return;
    }
    index_save(op, op->batch[op->next - 1].uid, (const char *)data, len);
}

static void index_batch_cb(void *arg, int status, const mailstore_uidsize_t *msgs, size_t n)
{
    search_op_t *op = arg;
    if (!search_alive(op))
        return;
    if (status != MAILSTORE_OK) {
        search_fail(op, status);
        return;
    }
    free(op->batch);
    op->batch = NULL;
    op->n = op->next = 0;
    op->full = n == SEARCH_INDEX_BATCH;
    if (n > 0) {
        if (!(op->batch = malloc(n * sizeof *op->batch))) {
            search_fail(op, MAILSTORE_TEMP);
            return;
        }
        memcpy(op->batch, msgs, n * sizeof *op->batch);
        op->n = n;
    }
    index_next(op);
}

/* The next message of the batch, else the next batch, else the query. */
static void index_next(search_op_t *op)
{
    imap_session_t *s = op->s;
    if (op->next < op->n) {
        const mailstore_uidsize_t *m = &op->batch[op->next++];
        if (m->size == 0 || m->size > SEARCH_PARSE_MAX) {
            if (m->size > SEARCH_PARSE_MAX)
                log_info("message too large to decode for SEARCH", "session=%lu uid=%u size=%llu",
                         s->fe.id, m->uid, (unsigned long long)m->size);
            if (mailstore_save_search(imap_store(s), s->mbox.id, m->uid, "", "", index_saved_cb,
                                      op) < 0)
                search_fail(op, MAILSTORE_TEMP);
            return;
        }
        if (mailstore_fetch_raw(imap_store(s), s->mbox.id, m->uid, 0, (size_t)m->size,
                                index_raw_cb, op) < 0)
            search_fail(op, MAILSTORE_TEMP);
        return;
    }
    if (op->full) {
        op->full = false;
        if (mailstore_unindexed(imap_store(s), s->mbox.id, SEARCH_INDEX_BATCH, index_batch_cb,
                                op) < 0)
            search_fail(op, MAILSTORE_TEMP);
        return;
    }
    search_run(op);
}

void imap_cmd_search(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    imap_search_t prog;
    const char *err = NULL;
    memset(&prog, 0, sizeof prog);
    if (imap_search_parse(r->cmd.args, r->cmd.n_args, &prog, &err) < 0) {
        bool charset = prog.badcharset;
        imap_search_free(&prog);
        if (charset)
            imap_no(s, "BADCHARSET (UTF-8 US-ASCII)", "Unsupported charset");
        else
            imap_bad(s, "%s", err ? err : "Invalid search program");
        return;
    }
    if (prog.has_modseq)
        s->condstore = true;
    imap_seqset_t recent;
    imap_seqset_init(&recent);
    search_op_t *op = calloc(1, sizeof *op);
    if (!op || imap_recent_uids(&s->mbox, &recent) < 0) {
        free(op);
        imap_seqset_free(&recent);
        imap_search_free(&prog);
        imap_no(s, "SERVERBUG", "Out of memory");
        return;
    }
    op->s = s;
    op->uid = r->cmd.uid;
    op->modseq = prog.has_modseq;
    buf_init(&op->sql);
    imap_sql_params_init(&op->params);
    imap_sql_ctx_t ctx = {
        .first_param = 2,
        .uid_max = s->mbox.count ? s->mbox.msgs[s->mbox.count - 1].uid : 0,
        .seq_to_uids = seq_to_uids,
        .cb_ctx = s,
        .recent = &recent,
    };
    buf_t where;
    buf_init(&where);
    int rc = imap_search_sql(&prog, &ctx, &where, &op->params, &err);
    bool decode = prog.needs_decoded;
    op->prog = prog; /* freed with the op */
    imap_seqset_free(&recent);
    if (rc < 0) {
        buf_free(&where);
        search_op_free(op);
        imap_bad(s, "%s", err ? err : "Invalid search program");
        return;
    }
    rc = buf_printf(&op->sql, "SELECT m.uid, m.modseq FROM messages m WHERE m.mailbox_id = $1 "
                              "AND (%.*s) ORDER BY m.uid", (int)where.len, where.data);
    buf_free(&where);
    if (rc < 0) {
        search_op_free(op);
        imap_no(s, "SERVERBUG", "Out of memory");
        return;
    }
    s->op = op;
    s->op_free = search_op_free;
    imap_store_begin(s);
    if (s->mbox.count && search_on_view(op->prog.root) &&
        imap_view_ask(s, search_view_cb, op) == 0)
        return;
    /* Decoded text first when the program compares it; a batch "full" starts the loop. */
    op->full = decode;
    index_next(op);
}

/* ---- COPY and MOVE (section 6.4.7, RFC 6851, COPYUID of RFC 4315 section 3) ---------- */

typedef struct copy_op {
    imap_session_t *s;
    bool move, uid;
} copy_op_t;

/* "1:3,7" of a sorted list, into b. */
static void append_uid_list(buf_t *b, const uint32_t *u, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && u[j + 1] == u[j] + 1)
            j++;
        buf_printf(b, "%s%u", i ? "," : "", u[i]);
        if (j > i)
            buf_printf(b, ":%u", u[j]);
        i = j + 1;
    }
}

static void copy_cb(void *arg, int status, const mailstore_copied_t *c)
{
    copy_op_t *op = arg;
    imap_session_t *s = op->s;
    bool move = op->move;
    free(op);
    if (!imap_store_alive(s))
        return;
    const char *what = move ? "MOVE" : "COPY";
    if (status == MAILSTORE_NOTFOUND) {
        /* Section 6.4.7: the client may create the mailbox and try again. */
        imap_no(s, "TRYCREATE", "%s: no such mailbox", what);
        imap_store_end(s);
        return;
    }
    if (status != MAILSTORE_OK) {
        imap_store_no(s, status, what);
        imap_store_end(s);
        return;
    }
    buf_t code;
    buf_init(&code);
    if (c->n > 0) {
        buf_printf(&code, "COPYUID %u ", c->uidvalidity);
        append_uid_list(&code, c->src_uids, c->n);
        buf_puts(&code, " ");
        /* The destination UIDs in the order of the source ones (both ascending). */
        append_uid_list(&code, c->dst_uids, c->n);
        imap_publish_change(s, c->mailbox_id, 0, MAILWATCH_NEW);
    }
    if (move) {
        /* RFC 6851 section 4.3: COPYUID in an untagged OK, then the EXPUNGEs. */
        if (code.len)
            imap_untagged(s, "OK [%.*s] Moved", (int)code.len, code.data);
        for (size_t k = 0; k < c->n; k++) {
            long i = imap_msg_index(&s->mbox, c->src_uids[k]);
            if (i >= 0)
                imap_msg_expunged(s, (size_t)i);
        }
        if (c->n)
            imap_publish_change(s, s->mbox.id, 0, MAILWATCH_EXPUNGE);
        imap_ok(s, NULL, "MOVE completed");
    } else if (code.len) {
        imap_ok(s, code.data, "COPY completed");
    } else {
        imap_ok(s, NULL, "COPY completed");
    }
    buf_free(&code);
    imap_store_end(s);
}

static void copy_common(imap_session_t *s, imap_req_t *r, bool move)
{
    const char *what = move ? "MOVE" : "COPY";
    char dest[IMAP_MAILBOX_NAME_MAX];
    if (r->cmd.n_args != 2) {
        imap_bad(s, "Syntax: %s set mailbox", what);
        return;
    }
    if (move && s->mbox.readonly) {
        imap_no(s, "READ-ONLY", "The mailbox is read-only (EXAMINE)");
        return;
    }
    if (!imap_mailbox_arg(s, &r->cmd.args[1], dest, sizeof dest))
        return;
    imap_uidset_t set;
    if (!imap_set_arg(s, &r->cmd.args[0], r->cmd.uid, &set))
        return;
    if (set.n == 0) {
        imap_ok(s, NULL, "%s completed", what);
        return;
    }
    copy_op_t *op = calloc(1, sizeof *op);
    if (!op) {
        imap_uidset_free(&set);
        imap_no(s, "SERVERBUG", "Out of memory");
        return;
    }
    *op = (copy_op_t){ s, move, r->cmd.uid };
    mailstore_uidset_t view = imap_uidset_view(&set);
    imap_store_begin(s);
    int rc = move ? mailstore_move(imap_store(s), s->mbox.id, &view, s->user_id, dest, copy_cb, op)
                  : mailstore_copy(imap_store(s), s->mbox.id, &view, s->user_id, dest, copy_cb, op);
    imap_uidset_free(&set);
    if (rc < 0) {
        free(op);
        imap_store_no(s, MAILSTORE_TEMP, what);
        imap_store_end(s);
    }
}

void imap_cmd_copy(fe_session_t *fs, void *req)
{
    copy_common((imap_session_t *)fs, req, false);
}

void imap_cmd_move(fe_session_t *fs, void *req)
{
    copy_common((imap_session_t *)fs, req, true);
}

/* ---- EXPUNGE, UID EXPUNGE (RFC 4315 section 2.1), CLOSE, UNSELECT ------------------- */

typedef struct expunge_op {
    imap_session_t *s;
    bool close; /* CLOSE: silently, then leave the mailbox */
} expunge_op_t;

static void expunge_cb(void *arg, int status, const mailstore_expunged_t *e)
{
    expunge_op_t *op = arg;
    imap_session_t *s = op->s;
    bool close = op->close;
    free(op);
    if (!imap_store_alive(s))
        return;
    if (status != MAILSTORE_OK && !close) {
        imap_store_no(s, status, "EXPUNGE");
        imap_store_end(s);
        return;
    }
    if (status == MAILSTORE_OK && e->n > 0) {
        if (!close)
            for (size_t k = 0; k < e->n; k++) {
                long i = imap_msg_index(&s->mbox, e->uids[k]);
                if (i >= 0)
                    imap_msg_expunged(s, (size_t)i);
            }
        imap_publish_change(s, s->mbox.id, e->modseq, MAILWATCH_EXPUNGE);
    }
    if (close) {
        imap_mailbox_forget(s);
        imap_enter_state(s, IMAP_STATE_AUTH);
        imap_ok(s, NULL, "CLOSE completed");
    } else {
        imap_ok(s, NULL, "EXPUNGE completed");
    }
    imap_store_end(s);
}

static void expunge_start(imap_session_t *s, const imap_uidset_t *set, bool close)
{
    expunge_op_t *op = calloc(1, sizeof *op);
    if (!op) {
        imap_no(s, "SERVERBUG", "Out of memory");
        return;
    }
    *op = (expunge_op_t){ s, close };
    mailstore_uidset_t view = set ? imap_uidset_view(set) : (mailstore_uidset_t){ NULL, 0 };
    imap_store_begin(s);
    if (mailstore_expunge(imap_store(s), s->mbox.id, set ? &view : NULL, true, expunge_cb, op) < 0) {
        free(op);
        imap_store_no(s, MAILSTORE_TEMP, close ? "CLOSE" : "EXPUNGE");
        imap_store_end(s);
    }
}

void imap_cmd_expunge(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    if (s->mbox.readonly) {
        imap_no(s, "READ-ONLY", "The mailbox is read-only (EXAMINE)");
        return;
    }
    if (!r->cmd.uid) {
        if (r->cmd.n_args != 0) {
            imap_bad(s, "EXPUNGE takes no arguments");
            return;
        }
        expunge_start(s, NULL, false);
        return;
    }
    if (r->cmd.n_args != 1) {
        imap_bad(s, "Syntax: UID EXPUNGE set");
        return;
    }
    imap_uidset_t set;
    if (!imap_set_arg(s, &r->cmd.args[0], true, &set))
        return;
    if (set.n == 0)
        imap_ok(s, NULL, "EXPUNGE completed");
    else
        expunge_start(s, &set, false);
    imap_uidset_free(&set);
}

/* Section 6.4.2: removes \Deleted messages without EXPUNGE responses (not after EXAMINE). */
void imap_cmd_close(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (((imap_req_t *)req)->cmd.n_args != 0) {
        imap_bad(s, "CLOSE takes no arguments");
        return;
    }
    if (s->mbox.readonly) {
        imap_mailbox_forget(s);
        imap_enter_state(s, IMAP_STATE_AUTH);
        imap_ok(s, NULL, "CLOSE completed");
        return;
    }
    expunge_start(s, NULL, true);
}

/* RFC 3691: leaves the mailbox without removing anything. */
void imap_cmd_unselect(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (((imap_req_t *)req)->cmd.n_args != 0) {
        imap_bad(s, "UNSELECT takes no arguments");
        return;
    }
    imap_mailbox_forget(s);
    imap_enter_state(s, IMAP_STATE_AUTH);
    imap_ok(s, NULL, "UNSELECT completed");
}

/* ---- APPEND (section 6.3.11, APPENDUID of RFC 4315 section 3) ------------------------ */

static void append_cb(void *arg, int status, const mailstore_appended_t *a)
{
    imap_session_t *s = arg;
    if (!imap_store_alive(s))
        return;
    if (status == MAILSTORE_NOTFOUND) {
        imap_no(s, "TRYCREATE", "APPEND: no such mailbox");
    } else if (status != MAILSTORE_OK) {
        imap_store_no(s, status, "APPEND");
    } else {
        imap_publish_change(s, a->mailbox_id, a->modseq, MAILWATCH_NEW);
        imap_ok(s, NULL, "[APPENDUID %u %u] APPEND completed", a->uidvalidity, a->uid);
    }
    imap_store_end(s);
}

void imap_cmd_append(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    char name[IMAP_MAILBOX_NAME_MAX];
    size_t n = r->cmd.n_args;
    const imap_arg_t *a = r->cmd.args;
    if (n < 2 || n > 4 || (a[n - 1].type != IMAP_ARG_LITERAL && a[n - 1].type != IMAP_ARG_QUOTED)) {
        imap_bad(s, "Syntax: APPEND mailbox [(flags)] [date-time] literal");
        return;
    }
    if (!imap_mailbox_arg(s, &a[0], name, sizeof name))
        return;
    imap_flags_t flags;
    memset(&flags, 0, sizeof flags);
    time_t when = 0;
    const char *err = NULL;
    for (size_t i = 1; i + 1 < n; i++) {
        if (a[i].type == IMAP_ARG_LIST && flags.system == 0 && flags.n_keywords == 0 && i == 1) {
            if (imap_flags_parse(&a[i], 1, &flags, &err) < 0) {
                imap_flags_free(&flags);
                imap_bad(s, "%s", err ? err : "Invalid flags");
                return;
            }
        } else if (a[i].type == IMAP_ARG_QUOTED) {
            int tz;
            if (imap_datetime_parse(a[i].str, a[i].len, &when, &tz) < 0) {
                imap_flags_free(&flags);
                imap_bad(s, "Invalid date-time");
                return;
            }
        } else {
            imap_flags_free(&flags);
            imap_bad(s, "Syntax: APPEND mailbox [(flags)] [date-time] literal");
            return;
        }
    }
    const imap_arg_t *msg = &a[n - 1];
    long max = config_get_long(fs->srv->cfg, "smtp.max_message_size");
    if (max > 0 && msg->len > (size_t)max) {
        imap_flags_free(&flags);
        imap_no(s, "TOOBIG", "Message too large");
        return;
    }
    if (msg->len == 0) {
        imap_flags_free(&flags);
        imap_no(s, NULL, "APPEND: the message is empty");
        return;
    }
    const char *names[5 + 256];
    size_t nn = 0;
    for (unsigned i = 0; i < 5; i++)
        if (flags.system & (1u << i))
            names[nn++] = imap_sysflag_at(i);
    for (size_t k = 0; k < flags.n_keywords && nn < sizeof names / sizeof names[0]; k++)
        names[nn++] = flags.keywords[k];
    imap_store_begin(s);
    int rc = mailstore_append(imap_store(s), s->user_id, name, names, nn, (int64_t)when, msg->str,
                              msg->len, append_cb, s);
    imap_flags_free(&flags);
    if (rc < 0) {
        imap_store_no(s, MAILSTORE_TEMP, "APPEND");
        imap_store_end(s);
    }
}
