/* FETCH and UID FETCH (RFC 3501 section 6.4.5; MODSEQ and CHANGEDSINCE, RFC 7162).
 *
 * Messages are taken in batches of the session's known messages. What the metadata row
 * answers (UID, FLAGS, INTERNALDATE, RFC822.SIZE, MODSEQ, and ENVELOPE, BODY and
 * BODYSTRUCTURE once cached) is written from the batch's callback. A message that needs its
 * bytes (a body section, or structures not cached yet) is read from the store, parsed with
 * lib/mail once (the structures are then cached in the store) and answered from memory; a
 * large message asked for whole (BODY[], RFC822, with or without <partial>) is streamed from
 * the store in chunks and never held whole. Output waits for the client to read (back-
 * pressure) between pieces. If the FETCH marks messages \Seen, that is stored first, and
 * their new FLAGS come with the answer (section 6.4.5). */
#include "imapd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "mail/mime.h"

#define FETCH_BATCH 1000                 /* messages per metadata query */
#define FETCH_STREAM_MIN (1024 * 1024)   /* larger messages asked for whole are streamed */
#define FETCH_OUTPUT_HIGH (256 * 1024)   /* wait for the client above this much unsent output */

typedef enum piece_kind { PIECE_TEXT, PIECE_RAW, PIECE_COPY, PIECE_STORE } piece_kind_t;

typedef struct piece {
    piece_kind_t kind;
    size_t off, len;     /* TEXT: in op->text; RAW: in op->raw; STORE: in the stored message */
    char *copy;          /* COPY: owned bytes */
} piece_t;

/* A message whose answer needs its bytes, with what the metadata said. */
typedef struct pending {
    uint32_t seq, uid;
    uint64_t size, modseq;
    int64_t idate;
    char *flags;         /* "\Seen $x" */
    bool recent;         /* \Recent for this session */
    char *envelope, *bodystructure, *body;
} pending_t;

typedef struct fetch_op {
    imap_session_t *s;
    imap_fetch_t f;
    bool uid_cmd;
    bool failed;                 /* the store failed: NO at the end */
    uint32_t *uids;              /* known messages in the set, ascending */
    size_t nuids, next_uid;      /* next batch starts at uids[next_uid] */
    uint32_t *seen;              /* UIDs this FETCH marked \Seen: FLAGS goes with them */
    size_t nseen;
    pending_t *pend;
    size_t npend, next_pend;
    buf_t text, raw;
    piece_t *pieces;
    size_t npieces, cap_pieces, pi, pdone;
    size_t text_mark;            /* op->text before this is in pieces already */
    uint32_t stream_uid;
    /* Answered from the store's snapshot of the mailbox (only UID, FLAGS, MODSEQ asked):
     * for uids[k], its mod-sequence (0: gone) and flags mask, and the keywords' names. */
    bool view;
    uint64_t *view_modseqs, *view_flags;
    char **view_keywords;
    size_t view_nkeywords;
} fetch_op_t;

static void next_step(fetch_op_t *op);
static void emit(fetch_op_t *op);

/* ---- the op ------------------------------------------------------------------------ */

static void pending_clear(fetch_op_t *op)
{
    for (size_t i = 0; i < op->npend; i++) {
        free(op->pend[i].flags);
        free(op->pend[i].envelope);
        free(op->pend[i].bodystructure);
        free(op->pend[i].body);
    }
    free(op->pend);
    op->pend = NULL;
    op->npend = op->next_pend = 0;
}

static void pieces_clear(fetch_op_t *op)
{
    for (size_t i = 0; i < op->npieces; i++)
        free(op->pieces[i].copy);
    op->npieces = op->pi = op->pdone = 0;
    op->text_mark = 0;
    buf_reset(&op->text);
}

static void op_free(void *arg)
{
    fetch_op_t *op = arg;
    if (!op)
        return;
    pieces_clear(op);
    free(op->pieces);
    pending_clear(op);
    imap_fetch_free(&op->f);
    free(op->uids);
    free(op->seen);
    free(op->view_modseqs);
    free(op->view_flags);
    for (size_t k = 0; k < op->view_nkeywords; k++)
        free(op->view_keywords[k]);
    free(op->view_keywords);
    buf_free(&op->text);
    buf_recycle(&op->raw);
    free(op);
}

/* The session closed while the op waited: let go of everything. */
static bool op_alive(fetch_op_t *op)
{
    imap_session_t *s = op->s;
    if (!s->fe.closing)
        return true;
    s->op = NULL;
    op_free(op);
    imap_store_alive(s); /* drops the op's reference */
    return false;
}

static void op_finish(fetch_op_t *op)
{
    imap_session_t *s = op->s;
    bool failed = op->failed;
    s->op = NULL;
    op_free(op);
    if (failed)
        imap_no(s, "UNAVAILABLE", "FETCH: the mail store is not available, try again later");
    else
        imap_ok(s, NULL, "FETCH completed");
    imap_store_end(s);
}

static int piece_add(fetch_op_t *op, piece_kind_t kind, size_t off, size_t len, char *copy)
{
    if (len == 0 && kind != PIECE_TEXT) {
        free(copy);
        return 0;
    }
    if (op->npieces == op->cap_pieces) {
        size_t cap = op->cap_pieces ? op->cap_pieces * 2 : 16;
        piece_t *p = realloc(op->pieces, cap * sizeof *p);
        if (!p) {
            free(copy);
            return -1;
        }
        op->pieces = p;
        op->cap_pieces = cap;
    }
    op->pieces[op->npieces++] = (piece_t){ kind, off, len, copy };
    return 0;
}

/* Text appended to op->text since the last piece becomes a piece. */
static void text_piece(fetch_op_t *op)
{
    if (op->text.len > op->text_mark)
        piece_add(op, PIECE_TEXT, op->text_mark, op->text.len - op->text_mark, NULL);
    op->text_mark = op->text.len;
}

static bool uid_in(const uint32_t *u, size_t n, uint32_t uid)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (u[mid] < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && u[lo] == uid;
}

/* ---- what a message needs ---------------------------------------------------------- */

static bool needs_structure(const imap_fetch_t *f, const char *env, const char *bs, const char *body)
{
    for (size_t i = 0; i < f->n; i++) {
        imap_fetch_kind_t k = f->items[i].kind;
        if ((k == IMAP_FETCH_ENVELOPE && !env) || (k == IMAP_FETCH_BODYSTRUCTURE && !bs) ||
            (k == IMAP_FETCH_BODY && !body))
            return true;
    }
    return false;
}

/* Whether any item answers with a cached structure (ENVELOPE, BODYSTRUCTURE, BODY). */
static bool wants_structure(const imap_fetch_t *f)
{
    return needs_structure(f, NULL, NULL, NULL);
}

static bool needs_bytes(const imap_fetch_t *f)
{
    for (size_t i = 0; i < f->n; i++) {
        imap_fetch_kind_t k = f->items[i].kind;
        if (k == IMAP_FETCH_RFC822 || k == IMAP_FETCH_RFC822_HEADER ||
            k == IMAP_FETCH_RFC822_TEXT || k == IMAP_FETCH_BODY_SECTION)
            return true;
    }
    return false;
}

/* Only whole-message sections (BODY[], RFC822): those can be streamed from the store. */
static bool only_whole_bytes(const imap_fetch_t *f)
{
    for (size_t i = 0; i < f->n; i++) {
        const imap_fetch_item_t *it = &f->items[i];
        if (it->kind == IMAP_FETCH_RFC822_HEADER || it->kind == IMAP_FETCH_RFC822_TEXT)
            return false;
        if (it->kind == IMAP_FETCH_BODY_SECTION && (it->n_parts || it->spec != IMAP_SECTION_ALL))
            return false;
    }
    return true;
}

/* ---- writing one message's answer -------------------------------------------------- */

/* The items that need no bytes, in the order asked, into op->text. */
static void meta_item(fetch_op_t *op, const imap_fetch_item_t *it, const pending_t *m)
{
    buf_t *b = &op->text;
    switch (it->kind) {
    /* UID, FLAGS and MODSEQ without printf: a FETCH of them all is written for every
     * message of the mailbox. */
    case IMAP_FETCH_UID:
        buf_puts(b, "UID ");
        buf_put_uint(b, m->uid);
        break;
    case IMAP_FETCH_FLAGS:
        buf_puts(b, "FLAGS (");
        if (m->flags)
            buf_puts(b, m->flags);
        if (m->recent)
            buf_puts(b, m->flags && *m->flags ? " \\Recent)" : "\\Recent)");
        else
            buf_puts(b, ")");
        break;
    case IMAP_FETCH_INTERNALDATE: {
        char d[IMAP_DATETIME_LEN];
        imap_datetime_format((time_t)m->idate, 0, d);
        buf_printf(b, "INTERNALDATE \"%s\"", d);
        break;
    }
    case IMAP_FETCH_RFC822_SIZE:
        buf_printf(b, "RFC822.SIZE %llu", (unsigned long long)m->size);
        break;
    case IMAP_FETCH_MODSEQ:
        buf_puts(b, "MODSEQ (");
        buf_put_uint(b, m->modseq);
        buf_puts(b, ")");
        break;
    case IMAP_FETCH_ENVELOPE:
        buf_printf(b, "ENVELOPE %s", m->envelope ? m->envelope : "NIL");
        break;
    case IMAP_FETCH_BODY:
        buf_printf(b, "BODY %s", m->body ? m->body : "NIL");
        break;
    case IMAP_FETCH_BODYSTRUCTURE:
        buf_printf(b, "BODYSTRUCTURE %s", m->bodystructure ? m->bodystructure : "NIL");
        break;
    default:
        break;
    }
}

/* A byte range (off, len) of the message as the item's value, cut by <partial>. */
static void range_item(fetch_op_t *op, const char *name, const imap_fetch_item_t *it,
                       piece_kind_t kind, size_t off, size_t len, char *copy)
{
    if (it && it->partial) {
        size_t o = it->origin < len ? it->origin : len;
        size_t l = len - o < it->length ? len - o : it->length;
        if (copy) {
            memmove(copy, copy + o, l);
        } else {
            off += o;
        }
        len = l;
        buf_printf(&op->text, "%s<%u> {%zu}\r\n", name, it->origin, len);
    } else {
        buf_printf(&op->text, "%s {%zu}\r\n", name, len);
    }
    text_piece(op);
    piece_add(op, kind, copy ? 0 : off, len, copy);
}

/* The header's end in raw: after the first empty line (or everything). */
static size_t header_len(const char *raw, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (raw[i] == '\n' && raw[i + 1] == '\n')
            return i + 2;
        if (raw[i] == '\n' && raw[i + 1] == '\r' && i + 2 < len && raw[i + 2] == '\n')
            return i + 3;
    }
    return len;
}

static void section_item(fetch_op_t *op, const imap_fetch_item_t *it)
{
    const char *raw = op->raw.data;
    size_t rlen = op->raw.len;
    char name[1200];
    size_t off = 0, len = 0;
    char *copy = NULL;
    switch (it->kind) {
    case IMAP_FETCH_RFC822:
        range_item(op, "RFC822", NULL, PIECE_RAW, 0, rlen, NULL);
        return;
    case IMAP_FETCH_RFC822_HEADER:
        range_item(op, "RFC822.HEADER", NULL, PIECE_RAW, 0, header_len(raw, rlen), NULL);
        return;
    case IMAP_FETCH_RFC822_TEXT: {
        size_t h = header_len(raw, rlen);
        range_item(op, "RFC822.TEXT", NULL, PIECE_RAW, h, rlen - h, NULL);
        return;
    }
    default:
        break;
    }
    snprintf(name, sizeof name, "BODY[%s]", it->section ? it->section : "");
    int rc = mail_section(raw, rlen, it->section ? it->section : "", &off, &len, &copy);
    if (rc != 0) {
        /* No such part: RFC 3501 section 6.4.5 answers an empty string. */
        free(copy);
        range_item(op, name, it, PIECE_RAW, 0, 0, NULL);
        return;
    }
    range_item(op, name, it, copy ? PIECE_COPY : PIECE_RAW, off, len, copy);
}

static bool bytes_item(const imap_fetch_item_t *it)
{
    return it->kind == IMAP_FETCH_RFC822 || it->kind == IMAP_FETCH_RFC822_HEADER ||
           it->kind == IMAP_FETCH_RFC822_TEXT || it->kind == IMAP_FETCH_BODY_SECTION;
}

/* Builds the whole answer for m into pieces, items in the order asked; the bytes are in
 * op->raw, or streamed from the store. */
static void build(fetch_op_t *op, const pending_t *m, bool streamed)
{
    pieces_clear(op);
    buf_puts(&op->text, "* ");
    buf_put_uint(&op->text, m->seq);
    buf_puts(&op->text, " FETCH (");
    for (size_t i = 0; i < op->f.n; i++) {
        const imap_fetch_item_t *it = &op->f.items[i];
        if (i > 0)
            buf_puts(&op->text, " ");
        if (!bytes_item(it))
            meta_item(op, it, m);
        else if (!streamed)
            section_item(op, it);
        else if (it->kind == IMAP_FETCH_RFC822)
            range_item(op, "RFC822", NULL, PIECE_STORE, 0, m->size, NULL);
        else
            range_item(op, "BODY[]", it, PIECE_STORE, 0, m->size, NULL);
    }
    if (!imap_fetch_has(&op->f, IMAP_FETCH_FLAGS) && uid_in(op->seen, op->nseen, m->uid))
        buf_printf(&op->text, " FLAGS (%s%s%s)", m->flags ? m->flags : "",
                   m->recent && m->flags && *m->flags ? " " : "", m->recent ? "\\Recent" : "");
    buf_puts(&op->text, ")\r\n");
    text_piece(op);
}

static void stream_cb(void *arg, int status, const unsigned char *data, size_t len, uint64_t total)
{
    fetch_op_t *op = arg;
    (void)total;
    if (!op_alive(op))
        return;
    piece_t *p = &op->pieces[op->pi];
    if (status != MAILSTORE_OK || len == 0) {
        /* The answer is half written: the only honest way out is to close. */
        log_warn("message read failed during FETCH, closing", "session=%lu uid=%u error=\"%s\"",
                 op->s->fe.id, op->stream_uid, mailstore_strerror(status));
        fe_session_close(&op->s->fe);
        op_alive(op);
        return;
    }
    if (len > p->len - op->pdone)
        len = p->len - op->pdone;
    fe_session_write(&op->s->fe, data, len);
    op->pdone += len;
    if (op->pdone == p->len) {
        op->pi++;
        op->pdone = 0;
    }
    emit(op);
}

static void writable_cb(fe_session_t *fs)
{
    imap_session_t *s = (imap_session_t *)fs;
    fetch_op_t *op = s->op;
    if (op && op_alive(op))
        emit(op);
}

/* Writes the pieces, waiting whenever the client is behind. */
static void emit(fetch_op_t *op)
{
    imap_session_t *s = op->s;
    while (op->pi < op->npieces) {
        if (s->fe.closing || !s->fe.conn) {
            op_alive(op);
            return;
        }
        if (conn_pending_output(s->fe.conn) > FETCH_OUTPUT_HIGH) {
            fe_session_when_writable(&s->fe, writable_cb);
            return;
        }
        piece_t *p = &op->pieces[op->pi];
        size_t left = p->len - op->pdone;
        size_t n = left < FE_WRITE_CHUNK ? left : FE_WRITE_CHUNK;
        if (p->kind == PIECE_STORE) {
            if (mailstore_fetch_raw(imap_store(s), s->mbox.id, op->stream_uid, p->off + op->pdone,
                                    n, stream_cb, op) < 0) {
                fe_session_close(&s->fe);
                op_alive(op);
            }
            return;
        }
        const char *base = p->kind == PIECE_TEXT  ? op->text.data
                           : p->kind == PIECE_RAW ? op->raw.data
                                                  : p->copy;
        size_t start = p->kind == PIECE_COPY ? 0 : p->off;
        fe_session_write(&s->fe, base + start + op->pdone, n);
        op->pdone += n;
        if (op->pdone == p->len) {
            op->pi++;
            op->pdone = 0;
        }
    }
    pieces_clear(op);
    next_step(op);
}

/* ---- reading the messages that need their bytes ------------------------------------ */

static void cache_saved_cb(void *arg, int status)
{
    (void)arg;
    if (status != MAILSTORE_OK && status != MAILSTORE_NOTFOUND)
        log_warn("could not cache the message structure", "error=\"%s\"", mailstore_strerror(status));
}

static void raw_cb(void *arg, int status, const unsigned char *data, size_t len, uint64_t total)
{
    fetch_op_t *op = arg;
    (void)total;
    if (!op_alive(op))
        return;
    imap_session_t *s = op->s;
    pending_t *m = &op->pend[op->next_pend - 1];
    if (status == MAILSTORE_NOTFOUND) {
        next_step(op); /* expunged meanwhile: nothing to say about it */
        return;
    }
    if (status != MAILSTORE_OK) {
        op->failed = true;
        pending_clear(op);
        op->next_uid = op->nuids;
        next_step(op);
        return;
    }
    buf_reset(&op->raw);
    buf_from_spare(&op->raw, len);
    if (buf_append(&op->raw, (const char *)data, len) < 0) {
        op->failed = true;
        next_step(op);
        return;
    }
    if (needs_structure(&op->f, m->envelope, m->bodystructure, m->body)) {
        mail_info_t info;
        memset(&info, 0, sizeof info);
        if (mail_info_compute(op->raw.data, op->raw.len, &info) == 0) {
            free(m->envelope);
            free(m->bodystructure);
            free(m->body);
            m->envelope = info.envelope;
            m->bodystructure = info.bodystructure;
            m->body = info.body;
            mailstore_save_cache(imap_store(s), s->mbox.id, m->uid, m->envelope, m->bodystructure,
                                 m->body, false, 0, cache_saved_cb, NULL);
        }
    }
    build(op, m, false);
    emit(op);
}

/* The next message that needs its bytes, else the next batch, else the end. */
static void next_meta_batch(fetch_op_t *op);
static void next_view_batch(fetch_op_t *op);

static void next_step(fetch_op_t *op)
{
    imap_session_t *s = op->s;
    if (op->next_pend < op->npend) {
        pending_t *m = &op->pend[op->next_pend++];
        bool structure = needs_structure(&op->f, m->envelope, m->bodystructure, m->body);
        if (!structure && m->size > FETCH_STREAM_MIN && only_whole_bytes(&op->f)) {
            op->stream_uid = m->uid;
            build(op, m, true);
            emit(op);
            return;
        }
        if (mailstore_fetch_raw(imap_store(s), s->mbox.id, m->uid, 0, (size_t)m->size, raw_cb,
                                op) < 0) {
            op->failed = true;
            op->next_pend = op->npend;
            next_step(op);
        }
        return;
    }
    pending_clear(op);
    if (op->next_uid < op->nuids && !op->failed) {
        if (op->view)
            next_view_batch(op);
        else
            next_meta_batch(op);
        return;
    }
    op_finish(op);
}

static char *join_flags(const char *const *flags, size_t n)
{
    buf_t b;
    buf_init(&b);
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s%s", i ? " " : "", flags[i]);
    if (buf_append(&b, "", 1) < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void meta_cb(void *arg, int status, const mailstore_meta_t *msgs, size_t n)
{
    fetch_op_t *op = arg;
    if (!op_alive(op))
        return;
    imap_session_t *s = op->s;
    if (status != MAILSTORE_OK) {
        op->failed = true;
        op_finish(op);
        return;
    }
    bool bytes = needs_bytes(&op->f);
    op->pend = calloc(n ? n : 1, sizeof *op->pend);
    if (!op->pend) {
        op->failed = true;
        op_finish(op);
        return;
    }
    buf_t line;
    buf_init(&line);
    for (size_t k = 0; k < n; k++) {
        const mailstore_meta_t *mm = &msgs[k];
        long i = imap_msg_index(&s->mbox, mm->uid);
        if (i < 0)
            continue;
        if (op->f.changedsince_set && mm->modseq <= op->f.changedsince)
            continue;
        imap_list_changed(&s->mbox);
        s->mbox.msgs[i].flags = imap_flags_mask(mm->flags, mm->nflags);
        pending_t p = {
            .seq = (uint32_t)i + 1, .uid = mm->uid, .size = mm->size, .modseq = mm->modseq,
            .idate = mm->internal_date, .flags = join_flags(mm->flags, mm->nflags),
            .recent = s->mbox.msgs[i].recent,
        };
        if (bytes || needs_structure(&op->f, mm->envelope, mm->bodystructure, mm->body)) {
            p.envelope = dup_or_null(mm->envelope);
            p.bodystructure = dup_or_null(mm->bodystructure);
            p.body = dup_or_null(mm->body);
            op->pend[op->npend++] = p;
            continue;
        }
        /* Answered from the row: written now (the answers of one batch are small). */
        p.envelope = (char *)mm->envelope;
        p.bodystructure = (char *)mm->bodystructure;
        p.body = (char *)mm->body;
        build(op, &p, false);
        for (size_t j = 0; j < op->npieces; j++)
            buf_append(&line, op->text.data + op->pieces[j].off, op->pieces[j].len);
        pieces_clear(op);
        free(p.flags);
        if (line.len >= FE_WRITE_CHUNK) { /* one write per piece of the batch's answers */
            fe_session_write(&s->fe, line.data, line.len);
            buf_reset(&line);
        }
    }
    fe_session_write(&s->fe, line.data, line.len);
    buf_free(&line);
    op->next_pend = 0;
    /* Let the client read this batch before the next one is asked for. */
    if (s->fe.conn && conn_pending_output(s->fe.conn) > FETCH_OUTPUT_HIGH) {
        fe_session_when_writable(&s->fe, writable_cb);
        return;
    }
    next_step(op);
}

static void next_meta_batch(fetch_op_t *op)
{
    imap_session_t *s = op->s;
    size_t end = op->next_uid + FETCH_BATCH < op->nuids ? op->next_uid + FETCH_BATCH : op->nuids;
    /* The batch's UIDs as ranges of consecutive values. */
    mailstore_range_t *r = calloc(end - op->next_uid, sizeof *r);
    size_t nr = 0;
    if (!r) {
        op->failed = true;
        op_finish(op);
        return;
    }
    for (size_t i = op->next_uid; i < end; i++) {
        if (nr && r[nr - 1].hi + 1 == op->uids[i])
            r[nr - 1].hi = op->uids[i];
        else
            r[nr++] = (mailstore_range_t){ op->uids[i], op->uids[i] };
    }
    op->next_uid = end;
    mailstore_uidset_t set = { r, nr };
    int rc = wants_structure(&op->f)
                 ? mailstore_fetch_meta(imap_store(s), s->mbox.id, &set, meta_cb, op)
                 : mailstore_fetch_flags(imap_store(s), s->mbox.id, &set, meta_cb, op);
    free(r);
    if (rc < 0) {
        op->failed = true;
        op_finish(op);
    }
}

/* ---- UID, FLAGS and MODSEQ from the mailbox's snapshot ------------------------------ */

/* Whether every item is one the snapshot of the mailbox answers (RFC 3501 section 6.4.5
 * FLAGS and UID, RFC 7162 section 3.1.4.1 MODSEQ): then one question to PostgreSQL, for what
 * changed since the store's snapshot (mailstore_select), rather than a row per message. */
static bool view_items_only(const imap_fetch_t *f)
{
    for (size_t i = 0; i < f->n; i++) {
        imap_fetch_kind_t k = f->items[i].kind;
        if (k != IMAP_FETCH_UID && k != IMAP_FETCH_FLAGS && k != IMAP_FETCH_MODSEQ)
            return false;
    }
    return true;
}

/* "\Seen $x" of a snapshot's flags mask. */
static char *view_flag_names(const fetch_op_t *op, uint64_t mask)
{
    buf_t b;
    buf_init(&b);
    for (unsigned i = 0; i < 5; i++)
        if (mask & (UINT64_C(1) << i)) {
            if (b.len)
                buf_puts(&b, " ");
            buf_puts(&b, imap_sysflag_at(i));
        }
    for (size_t k = 0; k < op->view_nkeywords; k++)
        if (mask & (UINT64_C(1) << (MAILSTORE_F_KEYWORD0 + k))) {
            if (b.len)
                buf_puts(&b, " ");
            buf_puts(&b, op->view_keywords[k]);
        }
    if (buf_append(&b, "", 1) < 0) {
        buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* The next FETCH_BATCH messages, written from what the snapshot said. */
static void next_view_batch(fetch_op_t *op)
{
    imap_session_t *s = op->s;
    size_t end = op->next_uid + FETCH_BATCH < op->nuids ? op->next_uid + FETCH_BATCH : op->nuids;
    buf_t line;
    buf_init(&line);
    for (size_t k = op->next_uid; k < end; k++) {
        long i = imap_msg_index(&s->mbox, op->uids[k]);
        /* Expunged since the session looked: no answer, as from the rows (RFC 2180 4.1.2). */
        if (i < 0 || op->view_modseqs[k] == 0)
            continue;
        if (op->f.changedsince_set && op->view_modseqs[k] <= op->f.changedsince)
            continue;
        imap_list_changed(&s->mbox);
        s->mbox.msgs[i].flags = (unsigned)(op->view_flags[k] & 0x1f);
        pending_t p = { .seq = (uint32_t)i + 1, .uid = op->uids[k],
                        .modseq = op->view_modseqs[k],
                        .flags = view_flag_names(op, op->view_flags[k]),
                        .recent = s->mbox.msgs[i].recent };
        build(op, &p, false);
        for (size_t j = 0; j < op->npieces; j++)
            buf_append(&line, op->text.data + op->pieces[j].off, op->pieces[j].len);
        pieces_clear(op);
        free(p.flags);
        if (line.len >= FE_WRITE_CHUNK) {
            fe_session_write(&s->fe, line.data, line.len);
            buf_reset(&line);
        }
    }
    fe_session_write(&s->fe, line.data, line.len);
    buf_free(&line);
    op->next_uid = end;
    if (s->fe.conn && conn_pending_output(s->fe.conn) > FETCH_OUTPUT_HIGH) {
        fe_session_when_writable(&s->fe, writable_cb);
        return;
    }
    next_step(op);
}

/* The snapshot, brought up to date: what the FETCH needs of it is kept (it lives during
 * the call only). A snapshot of another mailbox under the name (renamed meanwhile), or with
 * keywords beyond what its masks hold: the rows, as for any FETCH. */
static void view_cb(void *arg, int status, const mailstore_selected_t *sel, int64_t recent_uid)
{
    fetch_op_t *op = arg;
    (void)recent_uid;
    if (!op_alive(op))
        return;
    if (!imap_view_usable(op->s, status, sel)) {
        next_meta_batch(op);
        return;
    }
    op->view_modseqs = calloc(op->nuids, sizeof *op->view_modseqs);
    op->view_flags = calloc(op->nuids, sizeof *op->view_flags);
    op->view_keywords = calloc(sel->nkeywords ? sel->nkeywords : 1, sizeof *op->view_keywords);
    bool ok = op->view_modseqs && op->view_flags && op->view_keywords;
    for (size_t k = 0; ok && k < sel->nkeywords; k++, op->view_nkeywords++)
        ok = (op->view_keywords[k] = strdup(sel->keywords[k])) != NULL;
    if (!ok) {
        op->failed = true;
        op_finish(op);
        return;
    }
    size_t j = 0; /* both in UID order */
    for (size_t k = 0; k < op->nuids; k++) {
        while (j < sel->count && sel->uids[j] < op->uids[k])
            j++;
        if (j < sel->count && sel->uids[j] == op->uids[k]) {
            op->view_modseqs[k] = sel->modseqs[j];
            op->view_flags[k] = sel->flags[j];
        }
    }
    op->view = true;
    next_view_batch(op);
}

/* ---- bytes from the message cache -------------------------------------------------- */

/* A FETCH of only the bytes of messages (body sections with PEEK, and UID) that are all in the
 * store's message cache is answered from there, without asking PostgreSQL for their rows: a
 * message's bytes never change, and one expunged meanwhile may still be answered (RFC 2180
 * section 4.1.1). Sets up the messages as pending, as meta_cb would. */
static bool bytes_from_cache(fetch_op_t *op)
{
    imap_session_t *s = op->s;
    for (size_t i = 0; i < op->f.n; i++) {
        imap_fetch_kind_t k = op->f.items[i].kind;
        if (k != IMAP_FETCH_BODY_SECTION && k != IMAP_FETCH_RFC822_HEADER && k != IMAP_FETCH_UID)
            return false;
    }
    if (imap_fetch_sets_seen(&op->f) || op->nuids > FETCH_BATCH)
        return false;
    if (!(op->pend = calloc(op->nuids, sizeof *op->pend)))
        return false;
    for (size_t k = 0; k < op->nuids; k++) {
        size_t len;
        long i = imap_msg_index(&s->mbox, op->uids[k]);
        if (i < 0)
            continue;
        if (!mailstore_raw_cached(imap_store(s), s->mbox.id, op->uids[k], &len)) {
            pending_clear(op); /* one not cached: the rows, as for any FETCH */
            return false;
        }
        op->pend[op->npend++] = (pending_t){ .seq = (uint32_t)i + 1, .uid = op->uids[k],
                                             .size = len, .recent = s->mbox.msgs[i].recent };
    }
    op->next_uid = op->nuids; /* no rows to ask for */
    op->next_pend = 0;
    return true;
}

/* ---- \Seen first ------------------------------------------------------------------- */

static void seen_cb(void *arg, int status, const mailstore_stored_t *rows, size_t n)
{
    fetch_op_t *op = arg;
    if (!op_alive(op))
        return;
    if (status == MAILSTORE_OK) {
        op->seen = calloc(n ? n : 1, sizeof *op->seen);
        uint64_t top = 0;
        for (size_t k = 0; op->seen && k < n; k++)
            if (rows[k].result == MAILSTORE_STORED_CHANGED) {
                op->seen[op->nseen++] = rows[k].msg.uid;
                if (rows[k].msg.modseq > top)
                    top = rows[k].msg.modseq;
            }
        if (top)
            imap_publish_change(op->s, op->s->mbox.id, top, MAILWATCH_FLAGS);
    }
    /* A failed \Seen does not stop the FETCH: the messages are read all the same. */
    next_meta_batch(op);
}

/* ---- the command ------------------------------------------------------------------- */

/* The number of the mailbox's messages whose UIDs are in r; their UIDs into out (when not
 * NULL), ascending. */
static size_t msgs_in(const imap_mailbox_t *m, const mailstore_range_t *r, uint32_t *out)
{
    size_t from = imap_msg_first(m, r->lo);
    size_t to = r->hi == UINT32_MAX ? m->count : imap_msg_first(m, r->hi + 1);
    for (size_t i = from; out && i < to; i++)
        *out++ = m->msgs[i].uid;
    return to - from;
}

void imap_cmd_fetch(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    if (r->cmd.n_args < 2) {
        imap_bad(s, "Syntax: FETCH set items");
        return;
    }
    fetch_op_t *op = calloc(1, sizeof *op);
    if (!op) {
        imap_no(s, "SERVERBUG", "Out of memory");
        return;
    }
    op->s = s;
    op->uid_cmd = r->cmd.uid;
    buf_init(&op->text);
    buf_init(&op->raw);
    const char *err = NULL;
    if (imap_fetch_parse(&r->cmd.args[1], r->cmd.n_args - 1, &op->f, &err) < 0) {
        op_free(op);
        imap_bad(s, "%s", err ? err : "Invalid FETCH items");
        return;
    }
    if (r->cmd.uid && !imap_fetch_has(&op->f, IMAP_FETCH_UID))
        imap_fetch_add(&op->f, IMAP_FETCH_UID);
    if (op->f.changedsince_set || imap_fetch_has(&op->f, IMAP_FETCH_MODSEQ))
        s->condstore = true; /* RFC 7162 section 3.1: CONDSTORE-enabling */
    imap_uidset_t set;
    if (!imap_set_arg(s, &r->cmd.args[0], r->cmd.uid, &set)) {
        op_free(op);
        return;
    }
    /* The known messages of the set, ascending: the set's ranges are ascending and apart
     * (imap_set_arg), each found in the mailbox's list by a binary search. */
    size_t want = 0;
    for (size_t k = 0; k < set.n; k++)
        want += msgs_in(&s->mbox, &set.ranges[k], NULL);
    op->uids = malloc((want ? want : 1) * sizeof *op->uids);
    for (size_t k = 0; op->uids && k < set.n; k++)
        op->nuids += msgs_in(&s->mbox, &set.ranges[k], op->uids + op->nuids);
    if (!op->uids) {
        imap_uidset_free(&set);
        op_free(op);
        imap_no(s, "SERVERBUG", "Out of memory");
        return;
    }
    s->op = op;
    s->op_free = op_free;
    imap_store_begin(s);
    if (op->nuids > 0 && imap_fetch_sets_seen(&op->f) && !s->mbox.readonly) {
        static const char *const seen[] = { "\\Seen" };
        mailstore_uidset_t view = imap_uidset_view(&set);
        if (mailstore_store(imap_store(s), s->mbox.id, &view, MAILSTORE_STORE_ADD, seen, 1, -1,
                            seen_cb, op) == 0) {
            imap_uidset_free(&set);
            return;
        }
    }
    imap_uidset_free(&set);
    if (op->nuids == 0) {
        op_finish(op);
        return;
    }
    if (view_items_only(&op->f) && imap_view_ask(s, view_cb, op) == 0)
        return;
    if (bytes_from_cache(op)) {
        next_step(op);
        return;
    }
    next_meta_batch(op);
}
