/* The mail store over db_query(): one statement per call (the SQL functions of migration
 * 0007 do what needs several), results turned into plain C data here and the PGresult
 * freed by the pool when the callback returns. */
#include "store/mailstore.h"
#include "store/mbcache.h"
#include "store/rawcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/buf.h"

#define MAILSTORE_CACHE_MSGS 1000000 /* messages of selected mailboxes kept (20 bytes each) */
#define MAILSTORE_RAW_CACHE_BYTES (32u << 20) /* messages read whole lately, kept in all */

struct mailstore {
    db_t *db;
    mbcache_t *cache; /* the mailboxes selected last (NULL: none kept) */
    rawcache_t *raw;  /* messages read whole lately (NULL until the first read) */
    size_t raw_bytes; /* its size; 0: none kept */
};

typedef struct req {
    union {
        mailstore_user_cb user;
        mailstore_list_cb list;
        mailstore_mailbox_cb mailbox;
        mailstore_select_cb select;
        mailstore_changes_cb changes;
        mailstore_meta_cb meta;
        mailstore_done_cb done;
        mailstore_append_cb append;
        mailstore_copy_cb copy;
        mailstore_expunge_cb expunge;
        mailstore_store_cb store;
        mailstore_listing_cb listing;
        mailstore_recent_cb recent;
        mailstore_uidsizes_cb uidsizes;
    } cb;
    void *arg;
    bool counts;
} req_t;

const char *mailstore_strerror(int status)
{
    switch (status) {
    case MAILSTORE_OK: return "ok";
    case MAILSTORE_TEMP: return "temporary failure";
    case MAILSTORE_NOTFOUND: return "no such mailbox or message";
    case MAILSTORE_EXISTS: return "mailbox exists";
    case MAILSTORE_DENIED: return "not permitted";
    default: return "unknown";
    }
}

mailstore_t *mailstore_create(db_t *db)
{
    if (!db)
        return NULL;
    mailstore_t *ms = calloc(1, sizeof *ms);
    if (ms) {
        ms->db = db; /* the cache comes with the first SELECT: pop3d makes none */
        ms->raw_bytes = MAILSTORE_RAW_CACHE_BYTES;
    }
    return ms;
}

void mailstore_set_message_cache(mailstore_t *ms, size_t bytes)
{
    if (!ms)
        return;
    rawcache_unref(&ms->raw);
    ms->raw_bytes = bytes;
}

void mailstore_destroy(mailstore_t **ms)
{
    if (!ms || !*ms)
        return;
    mbcache_unref(&(*ms)->cache);
    rawcache_unref(&(*ms)->raw);
    free(*ms);
    *ms = NULL;
}

/* ---- helpers ----------------------------------------------------------------------- */

/* The status of a result: the SQLSTATEs raised by the functions of migration 0007 are the
 * client's errors, anything else is temporary. */
static int result_status(PGresult *res, ExecStatusType want)
{
    if (!res)
        return MAILSTORE_TEMP;
    if (PQresultStatus(res) == want)
        return MAILSTORE_OK;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!state)
        return MAILSTORE_TEMP;
    if (strcmp(state, "P0002") == 0)
        return MAILSTORE_NOTFOUND;
    if (strcmp(state, "23505") == 0)
        return MAILSTORE_EXISTS;
    if (strcmp(state, "42501") == 0)
        return MAILSTORE_DENIED;
    return MAILSTORE_TEMP;
}

static int64_t val_i64(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static uint64_t val_u64(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? 0 : strtoull(PQgetvalue(res, row, col), NULL, 10);
}

static const char *val_str(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

static req_t *req_new(void *arg)
{
    req_t *r = calloc(1, sizeof *r);
    if (r)
        r->arg = arg;
    return r;
}

static int query(mailstore_t *ms, const char *sql, int n, const char *const *values,
                 const int *lengths, const int *binary, db_cb done, req_t *r)
{
    if (db_query(ms->db, sql, n, values, lengths, binary, done, r) < 0) {
        free(r);
        return -1;
    }
    return 0;
}

static int cmp_range(const void *a, const void *b)
{
    const mailstore_range_t *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

/* A UID set as two PostgreSQL bigint[] literals of range starts and ends, sorted and
 * merged. Returns 0, or -1 when memory runs out or a range is reversed. */
static int uidset_literals(const mailstore_uidset_t *set, buf_t *lo, buf_t *hi)
{
    buf_puts(lo, "{");
    buf_puts(hi, "{");
    mailstore_range_t *r = NULL;
    size_t n = set ? set->n : 0;
    if (n) {
        r = malloc(n * sizeof *r);
        if (!r)
            return -1;
        memcpy(r, set->ranges, n * sizeof *r);
        qsort(r, n, sizeof *r, cmp_range);
    }
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (r[i].lo > r[i].hi) {
            free(r);
            return -1;
        }
        if (out && (uint64_t)r[i].lo <= (uint64_t)r[out - 1].hi + 1) {
            if (r[i].hi > r[out - 1].hi)
                r[out - 1].hi = r[i].hi;
        } else {
            r[out++] = r[i];
        }
    }
    for (size_t i = 0; i < out; i++) {
        buf_printf(lo, "%s%u", i ? "," : "", r[i].lo);
        buf_printf(hi, "%s%u", i ? "," : "", r[i].hi);
    }
    free(r);
    buf_puts(lo, "}");
    return buf_puts(hi, "}") < 0 || !lo->data ? -1 : 0;
}

/* A text[] literal: every element quoted, '"' and '\' escaped. */
static int text_array(const char *const *items, size_t n, buf_t *out)
{
    buf_puts(out, "{");
    for (size_t i = 0; i < n; i++) {
        buf_puts(out, i ? ",\"" : "\"");
        for (const char *c = items[i]; *c; c++) {
            if (*c == '"' || *c == '\\')
                buf_append(out, "\\", 1);
            buf_append(out, c, 1);
        }
        buf_puts(out, "\"");
    }
    return buf_puts(out, "}");
}

/* Rows sorted by uid, one per (message, flag), the flag in column flag_col (NULL for a
 * message without flags): grouped into msgs[] with flag pointers into res, from row
 * first on, taking rows while keep(row). Returns the number of messages, or -1. */
typedef struct flag_rows {
    mailstore_flags_t *msgs;
    const char **pool;
    size_t n;
} flag_rows_t;

static int group_flags(PGresult *res, int first, int last, int uid_col, int modseq_col,
                       int flag_col, flag_rows_t *fr, int *msg_row_r)
{
    size_t rows = last > first ? (size_t)(last - first) : 0;
    fr->msgs = calloc(rows ? rows : 1, sizeof *fr->msgs);
    fr->pool = calloc(rows ? rows : 1, sizeof *fr->pool);
    fr->n = 0;
    if (!fr->msgs || !fr->pool)
        return -1;
    size_t np = 0;
    for (int i = first; i < last; i++) {
        uint32_t uid = (uint32_t)val_u64(res, i, uid_col);
        if (fr->n == 0 || fr->msgs[fr->n - 1].uid != uid) {
            mailstore_flags_t *m = &fr->msgs[fr->n];
            if (msg_row_r)
                msg_row_r[fr->n] = i;
            fr->n++;
            m->uid = uid;
            m->modseq = val_u64(res, i, modseq_col);
            m->flags = &fr->pool[np];
        }
        const char *f = val_str(res, i, flag_col);
        if (f) {
            fr->pool[np++] = f;
            fr->msgs[fr->n - 1].nflags++;
        }
    }
    return (int)fr->n;
}

static void flag_rows_free(flag_rows_t *fr)
{
    free(fr->msgs);
    free(fr->pool);
}

/* ---- users and mailboxes ----------------------------------------------------------- */

static void user_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    int64_t id = 0;
    if (st == MAILSTORE_OK && PQntuples(res) == 0)
        st = MAILSTORE_NOTFOUND;
    if (st == MAILSTORE_OK)
        id = val_i64(res, 0, 0);
    r->cb.user(r->arg, st, id);
    free(r);
}

int mailstore_user_id(mailstore_t *ms, const char *address, mailstore_user_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !address || !cb || !(r = req_new(arg)))
        return -1;
    r->cb.user = cb;
    const char *v[1] = { address };
    return query(ms, "SELECT id FROM users WHERE address = lower($1)", 1, v, NULL, NULL,
                 user_done, r);
}

static void recent_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    uint32_t old = 0;
    if (st == MAILSTORE_OK && (PQntuples(res) == 0 || PQgetisnull(res, 0, 0)))
        st = MAILSTORE_NOTFOUND;
    if (st == MAILSTORE_OK)
        old = (uint32_t)val_u64(res, 0, 0);
    r->cb.recent(r->arg, st, old);
    free(r);
}

int mailstore_claim_recent(mailstore_t *ms, int64_t mailbox_id, uint32_t upto, bool claim,
                           mailstore_recent_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !cb || !(r = req_new(arg)))
        return -1;
    r->cb.recent = cb;
    char id[24], up[16];
    snprintf(id, sizeof id, "%lld", (long long)mailbox_id);
    snprintf(up, sizeof up, "%u", upto);
    const char *v[3] = { id, up, claim ? "t" : "f" };
    return query(ms, "SELECT postern_claim_recent($1, $2, $3)", 3, v, NULL, NULL, recent_done, r);
}

static const char list_sql[] =
    "SELECT b.id, b.name, b.special_use, b.subscribed, b.uidvalidity, b.uidnext, "
    "       b.highestmodseq, c.n, c.unseen "
    "FROM mailboxes b LEFT JOIN LATERAL ("
    "    SELECT count(*) AS n, count(*) FILTER (WHERE NOT '\\Seen' = ANY (m.flags)) AS unseen "
    "    FROM messages m WHERE m.mailbox_id = b.id AND $3) c ON true "
    "WHERE b.user_id = $1 AND ($2::text IS NULL OR b.name = postern_mbname($2)) "
    "ORDER BY b.name";

static void list_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    mailstore_mailbox_t *boxes = NULL;
    size_t n = 0;
    if (st == MAILSTORE_OK) {
        n = (size_t)PQntuples(res);
        boxes = calloc(n ? n : 1, sizeof *boxes);
        if (!boxes)
            st = MAILSTORE_TEMP;
    }
    if (st == MAILSTORE_OK) {
        for (size_t i = 0; i < n; i++) {
            mailstore_mailbox_t *b = &boxes[i];
            int row = (int)i;
            b->id = val_i64(res, row, 0);
            b->name = PQgetvalue(res, row, 1);
            b->special_use = val_str(res, row, 2);
            b->subscribed = PQgetvalue(res, row, 3)[0] == 't';
            b->uidvalidity = (uint32_t)val_u64(res, row, 4);
            b->uidnext = (uint32_t)val_u64(res, row, 5);
            b->highestmodseq = val_u64(res, row, 6);
            b->messages = r->counts ? val_i64(res, row, 7) : -1;
            b->unseen = r->counts ? val_i64(res, row, 8) : -1;
        }
    }
    r->cb.list(r->arg, st, st == MAILSTORE_OK ? boxes : NULL, st == MAILSTORE_OK ? n : 0);
    free(boxes);
    free(r);
}

int mailstore_list(mailstore_t *ms, int64_t user_id, const char *name, bool counts,
                   mailstore_list_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !cb || !(r = req_new(arg)))
        return -1;
    r->cb.list = cb;
    r->counts = counts;
    char user[24];
    snprintf(user, sizeof user, "%lld", (long long)user_id);
    const char *v[3] = { user, name, counts ? "true" : "false" };
    return query(ms, list_sql, 3, v, NULL, NULL, list_done, r);
}

static void mailbox_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    int64_t id = 0;
    uint32_t validity = 0;
    if (st == MAILSTORE_OK && PQntuples(res) > 0) {
        id = val_i64(res, 0, 0);
        if (PQnfields(res) > 1)
            validity = (uint32_t)val_u64(res, 0, 1);
    }
    r->cb.mailbox(r->arg, st, id, validity);
    free(r);
}

static int mailbox_op(mailstore_t *ms, const char *sql, int64_t user_id, const char *a,
                      const char *b, mailstore_mailbox_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !a || !cb || !(r = req_new(arg)))
        return -1;
    r->cb.mailbox = cb;
    char user[24];
    snprintf(user, sizeof user, "%lld", (long long)user_id);
    const char *v[3] = { user, a, b };
    return query(ms, sql, 3, v, NULL, NULL, mailbox_done, r);
}

int mailstore_create_mailbox(mailstore_t *ms, int64_t user_id, const char *name,
                             const char *special_use, mailstore_mailbox_cb cb, void *arg)
{
    return mailbox_op(ms, "SELECT id, uidvalidity FROM postern_mailbox_create($1, $2, $3)",
                      user_id, name, special_use, cb, arg);
}

int mailstore_delete_mailbox(mailstore_t *ms, int64_t user_id, const char *name,
                             mailstore_mailbox_cb cb, void *arg)
{
    return mailbox_op(ms, "SELECT postern_mailbox_delete($1, $2), $3::text", user_id, name,
                      NULL, cb, arg);
}

int mailstore_rename_mailbox(mailstore_t *ms, int64_t user_id, const char *old_name,
                             const char *new_name, mailstore_mailbox_cb cb, void *arg)
{
    if (!new_name)
        return -1;
    return mailbox_op(ms, "SELECT id, uidvalidity FROM postern_mailbox_rename($1, $2, $3)",
                      user_id, old_name, new_name, cb, arg);
}

int mailstore_subscribe(mailstore_t *ms, int64_t user_id, const char *name, bool on,
                        mailstore_mailbox_cb cb, void *arg)
{
    return mailbox_op(ms, "SELECT postern_mailbox_subscribe($1, $2, $3::boolean)", user_id,
                      name, on ? "true" : "false", cb, arg);
}

/* ---- SELECT ------------------------------------------------------------------------ */

/* One statement, one snapshot: the mailbox's row beside each of its messages in UID order
 * (one row with NULL message columns for an empty mailbox), the flags as one space-separated
 * text (flags are atoms: no spaces). The index on (mailbox_id, uid) gives the order. */
/* The mailbox (row 'a', with the \Recent mark in its last column), then its messages ('m',
 * by UID). With the snapshot the process kept ($3 its mailbox id, $4 its mod-sequence, $5
 * its UIDVALIDITY) still the same mailbox and every expunge since $4 still recorded, only
 * what changed since: the messages with a later mod-sequence (new ones too) and the UIDs
 * expunged since ('x'); otherwise every message. Column 7 of 'a' says which. */
/* The mod-sequence to compare with comes from b (b.since) rather than from $4 itself: then
 * the planner cannot see the value in any plan, a plan for given values is no cheaper than
 * one for any values, and PostgreSQL keeps the prepared statement's generic plan instead of
 * planning again on every call (which cost three times what the query does). */
static const char select_sql[] =
    "WITH b AS (SELECT id, uidvalidity, uidnext, highestmodseq, expunged_floor, recent_uid, "
    "                  id = $3 AND uidvalidity = $5 AND expunged_floor <= $4 AS delta, "
    "                  $4::bigint AS since "
    "           FROM mailboxes WHERE user_id = $1 AND name = postern_mbname($2)) "
    "SELECT 'a', b.id, b.uidvalidity, b.uidnext, b.highestmodseq, b.expunged_floor, "
    "       b.delta::int, b.recent_uid::text FROM b "
    "UNION ALL SELECT 'm', m.uid, m.modseq, NULL, NULL, NULL, NULL, "
    "       array_to_string(m.flags, ' ') "
    "FROM b JOIN messages m ON m.mailbox_id = b.id WHERE NOT b.delta "
    "UNION ALL SELECT 'm', m.uid, m.modseq, NULL, NULL, NULL, NULL, "
    "       array_to_string(m.flags, ' ') "
    "FROM b JOIN messages m ON m.mailbox_id = b.id AND m.modseq > b.since WHERE b.delta "
    "UNION ALL SELECT 'x', e.uid, e.modseq, NULL, NULL, NULL, NULL, NULL "
    "FROM b JOIN expunged e ON e.mailbox_id = b.id AND e.modseq > b.since WHERE b.delta "
    "ORDER BY 1, 2";

void mailstore_selected_free(mailstore_selected_t **sel)
{
    if (!sel || !*sel)
        return;
    mailstore_selected_t *s = *sel;
    free(s->uids);
    free(s->modseqs);
    free(s->flags);
    for (size_t i = 0; i < s->nkeywords; i++)
        free(s->keywords[i]);
    free(s->keywords);
    free(s);
    *sel = NULL;
}

static const char *const system_flags[] = { "\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
                                            "\\Draft" };

/* The mask bit of one flag, adding a keyword met for the first time (keywords past
 * MAILSTORE_KEYWORDS_MAX get no bit). Returns 0, or -1 when memory runs out. */
static int flag_bit(mailstore_selected_t *s, const char *f, size_t len, uint64_t *mask)
{
    for (unsigned i = 0; i < 5; i++)
        if (strlen(system_flags[i]) == len && strncasecmp(system_flags[i], f, len) == 0) {
            *mask |= UINT64_C(1) << i;
            return 0;
        }
    if (f[0] == '\\')
        return 0; /* no other system flag is kept */
    for (size_t k = 0; k < s->nkeywords; k++)
        if (strlen(s->keywords[k]) == len && memcmp(s->keywords[k], f, len) == 0) {
            *mask |= UINT64_C(1) << (MAILSTORE_F_KEYWORD0 + k);
            return 0;
        }
    if (s->nkeywords == MAILSTORE_KEYWORDS_MAX) {
        s->keywords_truncated = true;
        return 0;
    }
    if (!(s->keywords[s->nkeywords] = strndup(f, len)))
        return -1;
    *mask |= UINT64_C(1) << (MAILSTORE_F_KEYWORD0 + s->nkeywords);
    s->nkeywords++;
    return 0;
}

/* The flags mask of a row's space-separated flags. Returns 0, or -1 (memory). */
static int row_flags(mailstore_selected_t *s, const char *f, uint64_t *mask)
{
    *mask = 0;
    while (*f) {
        size_t len = strcspn(f, " ");
        if (len && flag_bit(s, f, len, mask) < 0)
            return -1;
        f += len + (f[len] == ' ');
    }
    return 0;
}

static int selected_alloc(mailstore_selected_t *s, size_t cap)
{
    cap = cap ? cap : 1;
    s->uids = malloc(cap * sizeof *s->uids);
    s->modseqs = malloc(cap * sizeof *s->modseqs);
    s->flags = malloc(cap * sizeof *s->flags);
    if (!s->keywords)
        s->keywords = calloc(MAILSTORE_KEYWORDS_MAX, sizeof *s->keywords);
    return s->uids && s->modseqs && s->flags && s->keywords ? 0 : -1;
}

static void selected_push(mailstore_selected_t *s, uint32_t uid, uint64_t modseq,
                          uint64_t mask)
{
    size_t k = s->count++;
    s->uids[k] = uid;
    s->modseqs[k] = modseq;
    s->flags[k] = mask;
    s->unseen += !(mask & MAILSTORE_F_SEEN);
}

/* Every message from the rows 'm' (1 .. end). */
static int selected_load(mailstore_selected_t *s, PGresult *res, int end)
{
    if (selected_alloc(s, (size_t)end) < 0)
        return -1;
    for (int i = 1; i < end; i++) {
        uint64_t mask;
        if (row_flags(s, PQgetvalue(res, i, 7), &mask) < 0)
            return -1;
        selected_push(s, (uint32_t)val_u64(res, i, 1), val_u64(res, i, 2), mask);
    }
    return 0;
}

/* Keywords on no message any more leave the list (as a full load would not find them), the
 * bits of the others moved down in step. */
static void selected_drop_unused_keywords(mailstore_selected_t *s)
{
    uint64_t used = 0;
    for (size_t i = 0; i < s->count; i++)
        used |= s->flags[i];
    int to[MAILSTORE_KEYWORDS_MAX];
    size_t kept = 0;
    for (size_t k = 0; k < s->nkeywords; k++) {
        if (used & (UINT64_C(1) << (MAILSTORE_F_KEYWORD0 + k))) {
            to[k] = (int)kept;
            s->keywords[kept++] = s->keywords[k];
        } else {
            to[k] = -1;
            free(s->keywords[k]);
        }
    }
    if (kept == s->nkeywords)
        return;
    for (size_t k = kept; k < s->nkeywords; k++)
        s->keywords[k] = NULL;
    uint64_t system = (UINT64_C(1) << MAILSTORE_F_KEYWORD0) - 1;
    for (size_t i = 0; i < s->count; i++) {
        uint64_t mask = s->flags[i] & system;
        for (size_t k = 0; k < s->nkeywords; k++)
            if (to[k] >= 0 && (s->flags[i] & (UINT64_C(1) << (MAILSTORE_F_KEYWORD0 + k))))
                mask |= UINT64_C(1) << (MAILSTORE_F_KEYWORD0 + to[k]);
        s->flags[i] = mask;
    }
    s->nkeywords = kept;
}

/* base with the changed messages (rows 'm', 1 .. end) put in and the expunged UIDs (rows
 * 'x', end .. rows) taken out: three lists in UID order merged. Keywords keep their bits;
 * new ones are added after them. */
static int selected_merge(mailstore_selected_t *s, const mailstore_selected_t *base,
                          PGresult *res, int end)
{
    int rows = PQntuples(res);
    if (!(s->keywords = calloc(MAILSTORE_KEYWORDS_MAX, sizeof *s->keywords)))
        return -1;
    for (size_t k = 0; k < base->nkeywords; k++, s->nkeywords++)
        if (!(s->keywords[k] = strdup(base->keywords[k])))
            return -1;
    s->keywords_truncated = base->keywords_truncated;
    if (selected_alloc(s, base->count + (size_t)(end - 1)) < 0)
        return -1;
    size_t b = 0;
    int m = 1, x = end;
    while (b < base->count || m < end) {
        uint32_t bu = b < base->count ? base->uids[b] : UINT32_MAX;
        uint32_t mu = m < end ? (uint32_t)val_u64(res, m, 1) : UINT32_MAX;
        if (m < end && mu <= bu) {
            uint64_t mask;
            if (row_flags(s, PQgetvalue(res, m, 7), &mask) < 0)
                return -1;
            selected_push(s, mu, val_u64(res, m, 2), mask);
            m++;
            b += mu == bu; /* changed: the new row replaces the old */
            continue;
        }
        while (x < rows && (uint32_t)val_u64(res, x, 1) < bu)
            x++;
        if (!(x < rows && (uint32_t)val_u64(res, x, 1) == bu))
            selected_push(s, bu, base->modseqs[b], base->flags[b]);
        b++;
    }
    selected_drop_unused_keywords(s);
    return 0;
}

typedef struct select_req {
    mailstore_select_cb cb;
    void *arg;
    mbcache_t *cache; /* held: the store may be gone when the answer comes */
    mbsnap_t *base;   /* the snapshot the question started from, or NULL */
    db_t *db;         /* for select_sql after select_row_sql (the store may be gone) */
    int64_t user_id;
    char name[];
} select_req_t;

/* The mailbox's state in row 0 of res, from column col on: id, uidvalidity, uidnext,
 * highestmodseq, expunged_floor (select_sql's 'a' row and select_row_sql alike). */
static mailstore_selected_t mailbox_state(PGresult *res, int col)
{
    return (mailstore_selected_t){
        .id = val_i64(res, 0, col),
        .uidvalidity = (uint32_t)val_u64(res, 0, col + 1),
        .uidnext = (uint32_t)val_u64(res, 0, col + 2),
        .highestmodseq = val_u64(res, 0, col + 3),
        .expunged_floor = val_u64(res, 0, col + 4),
    };
}

/* True when the mailbox is still as the snapshot b saw it. */
static bool mailbox_unchanged(const mailstore_selected_t *b, const mailstore_selected_t *now)
{
    return b->id == now->id && b->uidvalidity == now->uidvalidity &&
           b->uidnext == now->uidnext && b->highestmodseq == now->highestmodseq &&
           b->expunged_floor == now->expunged_floor;
}

static void select_done(void *arg, PGresult *res)
{
    select_req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    mailstore_selected_t *s = NULL;
    const mailstore_selected_t *answer = NULL;
    int64_t recent_uid = -1;
    if (st == MAILSTORE_OK && PQntuples(res) == 0)
        st = MAILSTORE_NOTFOUND;
    if (st == MAILSTORE_OK) {
        int rows = PQntuples(res), end = 1;
        while (end < rows && PQgetvalue(res, end, 0)[0] == 'm')
            end++;
        bool delta = val_i64(res, 0, 6) == 1 && r->base;
        recent_uid = PQgetisnull(res, 0, 7) ? -1 : val_i64(res, 0, 7);
        mailstore_selected_t row = mailbox_state(res, 1);
        const mailstore_selected_t *b = r->base ? mbsnap_selected(r->base) : NULL;
        if (delta && rows == 1 && mailbox_unchanged(b, &row)) {
            answer = b; /* nothing changed: what was kept, as it is */
        } else {
            if ((s = malloc(sizeof *s)))
                *s = row;
            if (!s || (delta ? selected_merge(s, b, res, end) : selected_load(s, res, end)) < 0) {
                mailstore_selected_free(&s);
                st = MAILSTORE_TEMP;
            } else {
                mbcache_put(r->cache, r->user_id, r->name, s);
                answer = s;
            }
        }
    }
    r->cb(r->arg, st, answer, recent_uid);
    mailstore_selected_free(&s);
    mbsnap_unref(&r->base);
    mbcache_unref(&r->cache);
    free(r);
}

/* With a snapshot kept, the mailbox's row is asked alone first: a mailbox unchanged since
 * (the common case of a client that selects again and again to look for new mail) is then
 * answered with the snapshot after a query PostgreSQL runs at half the cost of select_sql,
 * whose plan it sets up on every call; a changed one costs select_sql after it. */
static const char select_row_sql[] =
    "SELECT id, uidvalidity, uidnext, highestmodseq, expunged_floor, recent_uid "
    "FROM mailboxes WHERE user_id = $1 AND name = postern_mbname($2)";

static int select_send(db_t *db, select_req_t *r);

static void select_row_done(void *arg, PGresult *res)
{
    select_req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    const mailstore_selected_t *b = mbsnap_selected(r->base);
    mailstore_selected_t now;
    if (st == MAILSTORE_OK && PQntuples(res) == 1 &&
        (now = mailbox_state(res, 0), mailbox_unchanged(b, &now))) {
        int64_t recent_uid = PQgetisnull(res, 0, 5) ? -1 : val_i64(res, 0, 5);
        r->cb(r->arg, MAILSTORE_OK, b, recent_uid); /* nothing changed: what was kept */
    } else if (st != MAILSTORE_OK || select_send(r->db, r) < 0) {
        r->cb(r->arg, st != MAILSTORE_OK ? st : MAILSTORE_TEMP, NULL, -1);
    } else {
        return; /* changed, or gone: select_done answers */
    }
    mbsnap_unref(&r->base);
    mbcache_unref(&r->cache);
    free(r);
}

/* select_sql from the snapshot r started from (or none). */
static int select_send(db_t *db, select_req_t *r)
{
    const mailstore_selected_t *b = r->base ? mbsnap_selected(r->base) : NULL;
    char user[24], id[24], seq[24], validity[16];
    snprintf(user, sizeof user, "%lld", (long long)r->user_id);
    snprintf(id, sizeof id, "%lld", (long long)(b ? b->id : 0));
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)(b ? b->highestmodseq : 0));
    snprintf(validity, sizeof validity, "%u", b ? b->uidvalidity : 0);
    const char *v[5] = { user, r->name, id, seq, validity };
    return db_query(db, select_sql, 5, v, NULL, NULL, select_done, r);
}

int mailstore_select(mailstore_t *ms, int64_t user_id, const char *name,
                     mailstore_select_cb cb, void *arg)
{
    if (!ms || !name || !cb)
        return -1;
    size_t nlen = strlen(name);
    select_req_t *r = calloc(1, sizeof *r + nlen + 1);
    if (!r)
        return -1;
    r->cb = cb;
    r->arg = arg;
    r->user_id = user_id;
    memcpy(r->name, name, nlen + 1);
    if (!ms->cache)
        ms->cache = mbcache_new(MAILSTORE_CACHE_MSGS); /* without it, SELECT reads it all */
    r->cache = mbcache_ref(ms->cache);
    r->base = mbcache_get(ms->cache, user_id, name);
    int rc;
    r->db = ms->db;
    if (r->base) {
        char user[24];
        snprintf(user, sizeof user, "%lld", (long long)user_id);
        const char *v[2] = { user, name };
        rc = db_query(ms->db, select_row_sql, 2, v, NULL, NULL, select_row_done, r);
    } else {
        rc = select_send(ms->db, r);
    }
    if (rc < 0) {
        mbsnap_unref(&r->base);
        mbcache_unref(&r->cache);
        free(r);
        return -1;
    }
    return 0;
}

/* ---- changes since a modseq -------------------------------------------------------- */

static const char changes_sql[] =
    "SELECT 'a', b.highestmodseq, b.uidnext, b.uidvalidity, "
    "       CASE WHEN b.expunged_floor <= $2 THEN 1 ELSE 0 END, NULL "
    "FROM mailboxes b WHERE b.id = $1 "
    "UNION ALL SELECT 'm', m.uid, m.modseq, NULL, NULL, f "
    "FROM messages m LEFT JOIN LATERAL unnest(m.flags) f ON true "
    "WHERE m.mailbox_id = $1 AND m.uid IN "
    "  (SELECT uid FROM messages WHERE mailbox_id = $1 AND uid > $3 "
    "   UNION SELECT uid FROM messages WHERE mailbox_id = $1 AND modseq > $2) "
    "UNION ALL SELECT 'x', e.uid, e.modseq, NULL, NULL, NULL "
    "FROM expunged e WHERE e.mailbox_id = $1 AND e.modseq > $2 "
    "ORDER BY 1, 2";

static void changes_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    if (st == MAILSTORE_OK && PQntuples(res) == 0)
        st = MAILSTORE_NOTFOUND;
    mailstore_changes_t ch = { 0 };
    flag_rows_t fr = { 0 };
    uint32_t *expunged = NULL;
    if (st == MAILSTORE_OK) {
        int rows = PQntuples(res), first_x = 1;
        while (first_x < rows && PQgetvalue(res, first_x, 0)[0] == 'm')
            first_x++;
        ch.highestmodseq = val_u64(res, 0, 1);
        ch.uidnext = (uint32_t)val_u64(res, 0, 2);
        ch.uidvalidity = (uint32_t)val_u64(res, 0, 3);
        ch.expunged_complete = val_i64(res, 0, 4) == 1;
        expunged = malloc((size_t)(rows - first_x + 1) * sizeof *expunged);
        if (!expunged || group_flags(res, 1, first_x, 1, 2, 5, &fr, NULL) < 0) {
            st = MAILSTORE_TEMP;
        } else {
            ch.msgs = fr.msgs;
            ch.nmsgs = fr.n;
            for (int i = first_x; i < rows; i++)
                expunged[ch.nexpunged++] = (uint32_t)val_u64(res, i, 1);
            ch.expunged = expunged;
        }
    }
    r->cb.changes(r->arg, st, st == MAILSTORE_OK ? &ch : NULL);
    flag_rows_free(&fr);
    free(expunged);
    free(r);
}

int mailstore_changes(mailstore_t *ms, int64_t mailbox_id, uint64_t since_modseq,
                      uint32_t since_uid, mailstore_changes_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !cb || !(r = req_new(arg)))
        return -1;
    r->cb.changes = cb;
    char mb[24], seq[24], uid[16];
    snprintf(mb, sizeof mb, "%lld", (long long)mailbox_id);
    snprintf(seq, sizeof seq, "%llu", (unsigned long long)since_modseq);
    snprintf(uid, sizeof uid, "%u", since_uid);
    const char *v[3] = { mb, seq, uid };
    return query(ms, changes_sql, 3, v, NULL, NULL, changes_done, r);
}

/* ---- FETCH ------------------------------------------------------------------------- */

/* Per message one row 'a' (the metadata) followed by one row 'f' per flag. */
/* The messages of a sorted, merged UID set ($2 starts, $3 ends): one index range scan per
 * range; flags as one space-separated text. */
static const char meta_sql[] =
    "SELECT m.uid, m.size, extract(epoch FROM m.internal_date)::bigint, m.modseq, "
    "       m.envelope, m.bodystructure, m.body, extract(epoch FROM m.hdr_date)::bigint, "
    "       array_to_string(m.flags, ' ') "
    "FROM unnest($2::bigint[], $3::bigint[]) r(lo, hi) "
    "JOIN messages m ON m.mailbox_id = $1 AND m.uid BETWEEN r.lo AND r.hi "
    "ORDER BY m.uid";

/* Splits a space-separated flag text in place (the PGresult's own memory) into pool.
 * Returns how many flags. */
static size_t split_flags(char *text, const char **pool)
{
    size_t n = 0;
    for (char *save = NULL, *f = strtok_r(text, " ", &save); f; f = strtok_r(NULL, " ", &save))
        pool[n++] = f;
    return n;
}

static void meta_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    mailstore_meta_t *msgs = NULL;
    const char **pool = NULL;
    size_t n = 0;
    if (st == MAILSTORE_OK) {
        int rows = PQntuples(res);
        size_t nflags = 0;
        for (int i = 0; i < rows; i++) /* at most one flag per two characters */
            nflags += (size_t)PQgetlength(res, i, 8) / 2 + 1;
        msgs = calloc((size_t)rows + 1, sizeof *msgs);
        pool = calloc(nflags + 1, sizeof *pool);
        if (!msgs || !pool)
            st = MAILSTORE_TEMP;
        size_t np = 0;
        for (int i = 0; st == MAILSTORE_OK && i < rows; i++) {
            mailstore_meta_t *m = &msgs[n++];
            m->uid = (uint32_t)val_u64(res, i, 0);
            m->size = val_u64(res, i, 1);
            m->internal_date = val_i64(res, i, 2);
            m->modseq = val_u64(res, i, 3);
            m->envelope = val_str(res, i, 4);
            m->bodystructure = val_str(res, i, 5);
            m->body = val_str(res, i, 6);
            m->has_hdr_date = !PQgetisnull(res, i, 7);
            m->hdr_date = val_i64(res, i, 7);
            m->flags = &pool[np];
            m->nflags = split_flags(PQgetvalue(res, i, 8), &pool[np]);
            np += m->nflags;
        }
    }
    r->cb.meta(r->arg, st, st == MAILSTORE_OK ? msgs : NULL, st == MAILSTORE_OK ? n : 0);
    free(msgs);
    free(pool);
    free(r);
}

/* meta_sql without the cached structures (NULL): what FETCH FLAGS needs, without reading
 * (and detoasting) three text columns per message it does not answer with. */
static const char flags_sql[] =
    "SELECT m.uid, m.size, extract(epoch FROM m.internal_date)::bigint, m.modseq, "
    "       NULL::text, NULL::text, NULL::text, extract(epoch FROM m.hdr_date)::bigint, "
    "       array_to_string(m.flags, ' ') "
    "FROM unnest($2::bigint[], $3::bigint[]) r(lo, hi) "
    "JOIN messages m ON m.mailbox_id = $1 AND m.uid BETWEEN r.lo AND r.hi "
    "ORDER BY m.uid";

static int fetch_meta_with(mailstore_t *ms, const char *sql, int64_t mailbox_id,
                           const mailstore_uidset_t *set, mailstore_meta_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !set || !cb)
        return -1;
    buf_t lo, hi;
    buf_init(&lo);
    buf_init(&hi);
    int rc = -1;
    if (uidset_literals(set, &lo, &hi) == 0 && (r = req_new(arg))) {
        r->cb.meta = cb;
        char mb[24];
        snprintf(mb, sizeof mb, "%lld", (long long)mailbox_id);
        const char *v[3] = { mb, lo.data, hi.data };
        rc = query(ms, sql, 3, v, NULL, NULL, meta_done, r);
    }
    buf_free(&lo);
    buf_free(&hi);
    return rc;
}

int mailstore_fetch_meta(mailstore_t *ms, int64_t mailbox_id, const mailstore_uidset_t *set,
                         mailstore_meta_cb cb, void *arg)
{
    return fetch_meta_with(ms, meta_sql, mailbox_id, set, cb, arg);
}

int mailstore_fetch_flags(mailstore_t *ms, int64_t mailbox_id, const mailstore_uidset_t *set,
                          mailstore_meta_cb cb, void *arg)
{
    return fetch_meta_with(ms, flags_sql, mailbox_id, set, cb, arg);
}

static uint64_t be64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

/* A read of a message's bytes: from the cache, or from PostgreSQL and then into the cache
 * when it was the whole message. */
typedef struct raw_req {
    mailstore_raw_cb cb;
    void *arg;
    rawcache_t *cache; /* held */
    int64_t mailbox_id;
    uint32_t uid;
    uint64_t offset;
    size_t len;
    rawmsg_t *hit;     /* held, when answered from the cache */
} raw_req_t;

static void raw_req_free(raw_req_t *r)
{
    rawmsg_unref(&r->hit);
    rawcache_unref(&r->cache);
    free(r);
}

static void raw_done(void *arg, PGresult *res)
{
    raw_req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    if (st == MAILSTORE_OK && PQntuples(res) == 0)
        st = MAILSTORE_NOTFOUND;
    if (st == MAILSTORE_OK && PQgetlength(res, 0, 1) != 8)
        st = MAILSTORE_TEMP;
    if (st == MAILSTORE_OK) {
        const unsigned char *data = (const unsigned char *)PQgetvalue(res, 0, 0);
        size_t len = (size_t)PQgetlength(res, 0, 0);
        uint64_t total = be64(PQgetvalue(res, 0, 1));
        if (r->offset == 0 && len == total)
            rawcache_put(r->cache, r->mailbox_id, r->uid, data, len);
        r->cb(r->arg, st, data, len, total);
    } else {
        r->cb(r->arg, st, NULL, 0, 0);
    }
    raw_req_free(r);
}

static void raw_hit(void *arg)
{
    raw_req_t *r = arg;
    size_t total = rawmsg_len(r->hit);
    size_t from = r->offset < total ? (size_t)r->offset : total;
    size_t len = total - from < r->len ? total - from : r->len;
    r->cb(r->arg, MAILSTORE_OK, rawmsg_data(r->hit) + from, len, total);
    raw_req_free(r);
}

bool mailstore_raw_cached(mailstore_t *ms, int64_t mailbox_id, uint32_t uid, size_t *len_r)
{
    rawmsg_t *m = ms && ms->raw ? rawcache_get(ms->raw, mailbox_id, uid) : NULL;
    if (!m)
        return false;
    *len_r = rawmsg_len(m);
    rawmsg_unref(&m);
    return true;
}

int mailstore_fetch_raw(mailstore_t *ms, int64_t mailbox_id, uint32_t uid, uint64_t offset,
                        size_t len, mailstore_raw_cb cb, void *arg)
{
    if (!ms || !cb || len == 0 || len > INT32_MAX || offset >= INT64_MAX)
        return -1;
    if (!ms->raw && ms->raw_bytes)
        ms->raw = rawcache_new(ms->raw_bytes);
    raw_req_t *r = calloc(1, sizeof *r);
    if (!r)
        return -1;
    r->cb = cb;
    r->arg = arg;
    r->cache = rawcache_ref(ms->raw);
    r->mailbox_id = mailbox_id;
    r->uid = uid;
    r->offset = offset;
    r->len = len;
    if ((r->hit = rawcache_get(ms->raw, mailbox_id, uid))) {
        if (db_later(ms->db, raw_hit, r) < 0) {
            raw_req_free(r);
            return -1;
        }
        return 0;
    }
    char mb[24], u[16], from[24], count[24];
    snprintf(mb, sizeof mb, "%lld", (long long)mailbox_id);
    snprintf(u, sizeof u, "%u", uid);
    snprintf(from, sizeof from, "%llu", (unsigned long long)offset + 1);
    snprintf(count, sizeof count, "%zu", len);
    const char *v[4] = { mb, u, from, count };
    /* A binary result: the bytes as stored, and the size as 8 bytes in network order. */
    if (db_query_binary(ms->db,
                        "SELECT substring(raw FROM $3::integer FOR $4::integer), size::bigint "
                        "FROM messages WHERE mailbox_id = $1 AND uid = $2",
                        4, v, NULL, NULL, raw_done, r) < 0) {
        raw_req_free(r);
        return -1;
    }
    return 0;
}

static void done_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_COMMAND_OK);
    if (st == MAILSTORE_OK && strcmp(PQcmdTuples(res), "0") == 0)
        st = MAILSTORE_NOTFOUND;
    r->cb.done(r->arg, st);
    free(r);
}

int mailstore_save_cache(mailstore_t *ms, int64_t mailbox_id, uint32_t uid, const char *envelope,
                         const char *bodystructure, const char *body, bool has_hdr_date,
                         int64_t hdr_date, mailstore_done_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !cb || !(r = req_new(arg)))
        return -1;
    r->cb.done = cb;
    char mb[24], u[16], date[24];
    snprintf(mb, sizeof mb, "%lld", (long long)mailbox_id);
    snprintf(u, sizeof u, "%u", uid);
    snprintf(date, sizeof date, "%lld", (long long)hdr_date);
    const char *v[6] = { mb, u, envelope, bodystructure, body, has_hdr_date ? date : NULL };
    return query(ms,
                 "UPDATE messages SET envelope = coalesce($3, envelope), "
                 "bodystructure = coalesce($4, bodystructure), body = coalesce($5, body), "
                 "hdr_date = coalesce(to_timestamp($6::bigint), hdr_date) "
                 "WHERE mailbox_id = $1 AND uid = $2",
                 6, v, NULL, NULL, done_done, r);
}

/* ---- APPEND, COPY, MOVE ------------------------------------------------------------ */

static void append_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    if (st == MAILSTORE_OK && PQntuples(res) != 1)
        st = MAILSTORE_TEMP;
    mailstore_appended_t a = { 0 };
    if (st == MAILSTORE_OK) {
        a.mailbox_id = val_i64(res, 0, 0);
        a.uid = (uint32_t)val_u64(res, 0, 1);
        a.uidvalidity = (uint32_t)val_u64(res, 0, 2);
        a.modseq = val_u64(res, 0, 3);
    }
    r->cb.append(r->arg, st, st == MAILSTORE_OK ? &a : NULL);
    free(r);
}

int mailstore_append(mailstore_t *ms, int64_t user_id, const char *name,
                     const char *const *flags, size_t nflags, int64_t internal_date,
                     const void *raw, size_t len, mailstore_append_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !name || !cb || (!raw && len) || len > INT32_MAX)
        return -1;
    buf_t fl;
    buf_init(&fl);
    int rc = -1;
    if (text_array(flags, nflags, &fl) == 0 && (r = req_new(arg))) {
        r->cb.append = cb;
        char user[24], date[24];
        snprintf(user, sizeof user, "%lld", (long long)user_id);
        snprintf(date, sizeof date, "%lld", (long long)internal_date);
        const char *v[5] = { user, name, fl.data, internal_date ? date : NULL,
                             raw ? (const char *)raw : "" };
        int lengths[5] = { 0, 0, 0, 0, (int)len };
        int binary[5] = { 0, 0, 0, 0, 1 };
        rc = query(ms,
                   "SELECT mailbox_id, uid, uidvalidity, modseq FROM postern_append($1, $2, "
                   "$3::text[], to_timestamp($4::bigint), $5)",
                   5, v, lengths, binary, append_done, r);
    }
    buf_free(&fl);
    return rc;
}

static void copy_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    mailstore_copied_t c = { 0 };
    uint32_t *uids = NULL;
    if (st == MAILSTORE_OK) {
        int rows = PQntuples(res);
        uids = malloc(2 * (size_t)(rows + 1) * sizeof *uids);
        if (!uids)
            st = MAILSTORE_TEMP;
        for (int i = 0; st == MAILSTORE_OK && i < rows; i++) {
            uids[i] = (uint32_t)val_u64(res, i, 0);
            uids[rows + 1 + i] = (uint32_t)val_u64(res, i, 1);
            c.uidvalidity = (uint32_t)val_u64(res, i, 2);
            c.mailbox_id = val_i64(res, i, 3);
        }
        c.n = (size_t)rows;
        c.src_uids = uids;
        c.dst_uids = uids ? uids + rows + 1 : NULL;
    }
    r->cb.copy(r->arg, st, st == MAILSTORE_OK ? &c : NULL);
    free(uids);
    free(r);
}

static int copy_or_move(mailstore_t *ms, const char *sql, int64_t src, const mailstore_uidset_t *set,
                        int64_t user_id, const char *dest, mailstore_copy_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !set || !dest || !cb)
        return -1;
    buf_t lo, hi;
    buf_init(&lo);
    buf_init(&hi);
    int rc = -1;
    if (uidset_literals(set, &lo, &hi) == 0 && (r = req_new(arg))) {
        r->cb.copy = cb;
        char mb[24], user[24];
        snprintf(mb, sizeof mb, "%lld", (long long)src);
        snprintf(user, sizeof user, "%lld", (long long)user_id);
        const char *v[5] = { mb, lo.data, hi.data, user, dest };
        rc = query(ms, sql, 5, v, NULL, NULL, copy_done, r);
    }
    buf_free(&lo);
    buf_free(&hi);
    return rc;
}

int mailstore_copy(mailstore_t *ms, int64_t src_mailbox_id, const mailstore_uidset_t *set,
                   int64_t user_id, const char *dest_name, mailstore_copy_cb cb, void *arg)
{
    return copy_or_move(ms, "SELECT * FROM postern_copy($1, $2, $3, $4, $5)", src_mailbox_id,
                        set, user_id, dest_name, cb, arg);
}

int mailstore_move(mailstore_t *ms, int64_t src_mailbox_id, const mailstore_uidset_t *set,
                   int64_t user_id, const char *dest_name, mailstore_copy_cb cb, void *arg)
{
    return copy_or_move(ms, "SELECT * FROM postern_move($1, $2, $3, $4, $5)", src_mailbox_id,
                        set, user_id, dest_name, cb, arg);
}

/* ---- EXPUNGE and STORE ------------------------------------------------------------- */

/* postern_expunge's first row carries the modseq (uid NULL), then the UIDs in order. */
static void expunge_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    mailstore_expunged_t e = { 0 };
    uint32_t *uids = NULL;
    if (st == MAILSTORE_OK && PQntuples(res) < 1)
        st = MAILSTORE_NOTFOUND;
    if (st == MAILSTORE_OK) {
        int rows = PQntuples(res);
        uids = malloc((size_t)rows * sizeof *uids);
        if (!uids)
            st = MAILSTORE_TEMP;
        e.modseq = val_u64(res, 0, 1);
        for (int i = 1; st == MAILSTORE_OK && i < rows; i++)
            uids[e.n++] = (uint32_t)val_u64(res, i, 0);
        e.uids = uids;
    }
    r->cb.expunge(r->arg, st, st == MAILSTORE_OK ? &e : NULL);
    free(uids);
    free(r);
}

int mailstore_expunge(mailstore_t *ms, int64_t mailbox_id, const mailstore_uidset_t *set,
                      bool deleted_only, mailstore_expunge_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !cb)
        return -1;
    buf_t lo, hi;
    buf_init(&lo);
    buf_init(&hi);
    int rc = -1;
    if ((!set || uidset_literals(set, &lo, &hi) == 0) && (r = req_new(arg))) {
        r->cb.expunge = cb;
        char mb[24];
        snprintf(mb, sizeof mb, "%lld", (long long)mailbox_id);
        const char *v[4] = { mb, set ? lo.data : NULL, set ? hi.data : NULL,
                             deleted_only ? "true" : "false" };
        rc = query(ms,
                   "SELECT uid, modseq FROM postern_expunge($1, $2, $3, $4)",
                   4, v, NULL, NULL, expunge_done, r);
    }
    buf_free(&lo);
    buf_free(&hi);
    return rc;
}

static void store_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    flag_rows_t fr = { 0 };
    mailstore_stored_t *rows = NULL;
    int *first_row = NULL;
    if (st == MAILSTORE_OK) {
        int nres = PQntuples(res);
        first_row = malloc(((size_t)nres + 1) * sizeof *first_row);
        if (!first_row || group_flags(res, 0, nres, 0, 1, 3, &fr, first_row) < 0 ||
            !(rows = calloc(fr.n + 1, sizeof *rows))) {
            st = MAILSTORE_TEMP;
        } else {
            for (size_t i = 0; i < fr.n; i++) {
                rows[i].msg = fr.msgs[i];
                rows[i].result = (mailstore_store_result_t)val_i64(res, first_row[i], 2);
            }
        }
    }
    r->cb.store(r->arg, st, st == MAILSTORE_OK ? rows : NULL, st == MAILSTORE_OK ? fr.n : 0);
    flag_rows_free(&fr);
    free(rows);
    free(first_row);
    free(r);
}

int mailstore_store(mailstore_t *ms, int64_t mailbox_id, const mailstore_uidset_t *set,
                    mailstore_store_mode_t mode, const char *const *flags, size_t nflags,
                    int64_t unchangedsince, mailstore_store_cb cb, void *arg)
{
    static const char *const modes[] = { "set", "add", "remove" };
    req_t *r;
    if (!ms || !set || !cb || (unsigned)mode > MAILSTORE_STORE_REMOVE || (!flags && nflags))
        return -1;
    buf_t lo, hi, fl;
    buf_init(&lo);
    buf_init(&hi);
    buf_init(&fl);
    int rc = -1;
    if (uidset_literals(set, &lo, &hi) == 0 && text_array(flags, nflags, &fl) == 0 &&
        (r = req_new(arg))) {
        r->cb.store = cb;
        char mb[24], since[24];
        snprintf(mb, sizeof mb, "%lld", (long long)mailbox_id);
        snprintf(since, sizeof since, "%lld", (long long)unchangedsince);
        const char *v[6] = { mb, lo.data, hi.data, modes[mode], fl.data,
                             unchangedsince >= 0 ? since : NULL };
        rc = query(ms,
                   "SELECT s.uid, s.modseq, s.status, f "
                   "FROM postern_store($1, $2, $3, $4, $5::text[], $6) s "
                   "LEFT JOIN LATERAL unnest(s.flags) f ON true ORDER BY s.uid",
                   6, v, NULL, NULL, store_done, r);
    }
    buf_free(&lo);
    buf_free(&hi);
    buf_free(&fl);
    return rc;
}

/* ---- pop3d ------------------------------------------------------------------------- */

static void listing_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    if (st == MAILSTORE_OK && PQntuples(res) < 1)
        st = MAILSTORE_NOTFOUND;
    mailstore_uidsize_t *msgs = NULL;
    size_t n = 0;
    int64_t mb = 0;
    uint32_t validity = 0;
    if (st == MAILSTORE_OK) {
        int rows = PQntuples(res);
        mb = val_i64(res, 0, 1);
        validity = (uint32_t)val_u64(res, 0, 2);
        if (!(msgs = calloc((size_t)rows, sizeof *msgs)))
            st = MAILSTORE_TEMP;
        for (int i = 1; st == MAILSTORE_OK && i < rows; i++) {
            msgs[n].uid = (uint32_t)val_u64(res, i, 1);
            msgs[n++].size = val_u64(res, i, 2);
        }
    }
    r->cb.listing(r->arg, st, mb, validity, st == MAILSTORE_OK ? msgs : NULL,
                  st == MAILSTORE_OK ? n : 0);
    free(msgs);
    free(r);
}

int mailstore_listing(mailstore_t *ms, int64_t user_id, mailstore_listing_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !cb || !(r = req_new(arg)))
        return -1;
    r->cb.listing = cb;
    char user[24];
    snprintf(user, sizeof user, "%lld", (long long)user_id);
    const char *v[1] = { user };
    return query(ms,
                 "WITH b AS (SELECT id, uidvalidity FROM mailboxes "
                 "           WHERE id = postern_inbox($1)) "
                 "SELECT 0, b.id, b.uidvalidity FROM b "
                 "UNION ALL SELECT 1, m.uid, m.size FROM b JOIN messages m ON m.mailbox_id = b.id "
                 "ORDER BY 1, 2",
                 1, v, NULL, NULL, listing_done, r);
}

/* ---- SEARCH's decoded text --------------------------------------------------------- */

static void unindexed_done(void *arg, PGresult *res)
{
    req_t *r = arg;
    int st = result_status(res, PGRES_TUPLES_OK);
    mailstore_uidsize_t *msgs = NULL;
    size_t n = 0;
    if (st == MAILSTORE_OK) {
        int rows = PQntuples(res);
        if (rows > 0 && !(msgs = calloc((size_t)rows, sizeof *msgs)))
            st = MAILSTORE_TEMP;
        for (int i = 0; st == MAILSTORE_OK && i < rows; i++) {
            msgs[n].uid = (uint32_t)val_u64(res, i, 0);
            msgs[n++].size = val_u64(res, i, 1);
        }
    }
    r->cb.uidsizes(r->arg, st, st == MAILSTORE_OK ? msgs : NULL, st == MAILSTORE_OK ? n : 0);
    free(msgs);
    free(r);
}

int mailstore_unindexed(mailstore_t *ms, int64_t mailbox_id, size_t limit,
                        mailstore_uidsizes_cb cb, void *arg)
{
    req_t *r;
    if (!ms || !cb || limit == 0 || limit > INT32_MAX || !(r = req_new(arg)))
        return -1;
    r->cb.uidsizes = cb;
    char mb[24], lim[24];
    snprintf(mb, sizeof mb, "%lld", (long long)mailbox_id);
    snprintf(lim, sizeof lim, "%zu", limit);
    const char *v[2] = { mb, lim };
    /* search_body IS NULL: the partial index messages_search_missing of migration 0009. */
    return query(ms,
                 "SELECT uid, size FROM messages WHERE mailbox_id = $1 AND search_body IS NULL "
                 "ORDER BY uid LIMIT $2::bigint",
                 2, v, NULL, NULL, unindexed_done, r);
}

int mailstore_save_search(mailstore_t *ms, int64_t mailbox_id, uint32_t uid,
                          const char *headers, const char *body, mailstore_done_cb cb,
                          void *arg)
{
    req_t *r;
    if (!ms || !cb || !headers || !body || !(r = req_new(arg)))
        return -1;
    r->cb.done = cb;
    char mb[24], u[16];
    snprintf(mb, sizeof mb, "%lld", (long long)mailbox_id);
    snprintf(u, sizeof u, "%u", uid);
    const char *v[4] = { mb, u, headers, body };
    return query(ms,
                 "UPDATE messages SET search_headers = $3, search_body = $4 "
                 "WHERE mailbox_id = $1 AND uid = $2",
                 4, v, NULL, NULL, done_done, r);
}
