/* What other sessions changed: the watch on the bus's "mailbox changed" events, the look
 * at the store that turns them into untagged EXISTS, EXPUNGE and FETCH responses (RFC 3501
 * sections 5.2, 7.3.1, 7.4.1), NOOP and CHECK, and IDLE (RFC 2177), where they are pushed. */
#include "imapd.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"

/* ---- the server's part ------------------------------------------------------------- */

int imap_server_start(fe_server_t *srv)
{
    imap_server_t *is = calloc(1, sizeof *is);
    if (!is)
        return -1;
    is->store = mailstore_create(srv->db);
    is->watch = mailwatch_create(srv->bus);
    if (!is->store || !is->watch) {
        mailstore_destroy(&is->store);
        mailwatch_destroy(&is->watch);
        free(is);
        return -1;
    }
    mailstore_set_message_cache(is->store, srv->svc->message_cache);
    srv->proto_data = is;
    return 0;
}

/* Runs before the bus and the database go: the bus stops delivering at bus_destroy, and no
 * session is left to watch. */
void imap_server_stop(fe_server_t *srv)
{
    imap_server_t *is = srv->proto_data;
    srv->proto_data = NULL;
    mailstore_destroy(&is->store);
    mailwatch_destroy(&is->watch);
    free(is);
}

static imap_server_t *server_of(imap_session_t *s)
{
    return s->fe.srv->proto_data;
}

/* ---- the watch --------------------------------------------------------------------- */

static void sync_idle(imap_session_t *s);

static void watch_cb(void *arg, const mailwatch_event_t *ev)
{
    imap_session_t *s = arg;
    if (s->fe.closing || s->state != IMAP_STATE_SELECTED)
        return;
    if (ev->kind == MAILWATCH_MAILBOXES)
        return;
    if (ev->mailbox_id != 0 && ev->mailbox_id != s->mbox.id)
        return;
    if (s->idling && s->syncing)
        s->resync = true; /* the look under way may have missed it */
    else if (s->idling)
        sync_idle(s);
}

void imap_watch_start(imap_session_t *s)
{
    imap_server_t *is = server_of(s);
    if (!s->watch && is && is->watch)
        s->watch = mailwatch_watch(is->watch, s->fe.user, watch_cb, s);
}

void imap_watch_stop(imap_session_t *s)
{
    mailwatch_unwatch(&s->watch);
}

void imap_publish_change(imap_session_t *s, int64_t mailbox_id, uint64_t modseq,
                         mailwatch_kind_t kind)
{
    if (s->fe.user)
        mailwatch_publish_changed(s->fe.srv->bus, s->fe.user, mailbox_id, (int64_t)modseq, kind);
}

/* ---- telling the client what changed ----------------------------------------------- */

size_t imap_msg_first(const imap_mailbox_t *m, uint32_t uid)
{
    size_t lo = 0, hi = m->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (m->msgs[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Index of uid in the selected mailbox, or -1. */
long imap_msg_index(const imap_mailbox_t *m, uint32_t uid)
{
    size_t i = imap_msg_first(m, uid);
    return i < m->count && m->msgs[i].uid == uid ? (long)i : -1;
}

/* Removes message i and tells the client (its sequence number is i + 1). */
void imap_msg_expunged(imap_session_t *s, size_t i)
{
    imap_mailbox_t *m = &s->mbox;
    imap_list_changed(m);
    memmove(&m->msgs[i], &m->msgs[i + 1], (m->count - i - 1) * sizeof *m->msgs);
    m->count--;
    imap_untagged(s, "%zu EXPUNGE", i + 1);
}

static int msg_append(imap_mailbox_t *m, uint32_t uid, unsigned flags, uint64_t modseq)
{
    imap_list_changed(m);
    if (m->count == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        imap_msg_t *n = realloc(m->msgs, cap * sizeof *n);
        if (!n)
            return -1;
        m->msgs = n;
        m->cap = cap;
    }
    m->msgs[m->count++] = (imap_msg_t){ .uid = uid, .flags = flags, .modseq = modseq };
    return 0;
}

unsigned imap_flags_mask(const char *const *flags, size_t n)
{
    unsigned mask = 0;
    for (size_t i = 0; i < n; i++)
        mask |= imap_sysflag_parse(flags[i], strlen(flags[i]));
    return mask;
}

/* "FLAGS (\Seen $Label1)" into b. */
void imap_append_flags(buf_t *b, const char *const *flags, size_t n, bool recent)
{
    buf_puts(b, "FLAGS (");
    for (size_t i = 0; i < n; i++)
        buf_printf(b, "%s%s", i ? " " : "", flags[i]);
    if (recent)
        buf_printf(b, "%s\\Recent", n ? " " : "");
    buf_puts(b, ")");
}

int imap_recent_uids(const imap_mailbox_t *m, imap_seqset_t *out)
{
    for (size_t i = 0; i < m->count; i++)
        if (m->msgs[i].recent && imap_seqset_add(out, m->msgs[i].uid, m->msgs[i].uid) < 0)
            return -1;
    imap_seqset_t r;
    imap_seqset_init(&r);
    if (imap_seqset_resolve(out, UINT32_MAX - 1, &r) < 0)
        return -1;
    imap_seqset_free(out);
    *out = r;
    return 0;
}

size_t imap_recent_count(const imap_mailbox_t *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->count; i++)
        n += m->msgs[i].recent;
    return n;
}

typedef struct sync_op {
    imap_session_t *s;
    bool expunges_allowed;
    void (*done)(imap_session_t *s);
    size_t first_new;   /* index of the first message new to the session */
} sync_op_t;

/* The end of a look: EXISTS and RECENT for what is new (section 7.3.1, 7.3.2). */
static void sync_finish(sync_op_t *op, bool announce)
{
    imap_session_t *s = op->s;
    void (*done)(imap_session_t *) = op->done;
    free(op);
    if (announce && s->state == IMAP_STATE_SELECTED) {
        imap_untagged(s, "%zu EXISTS", s->mbox.count);
        imap_untagged(s, "%zu RECENT", imap_recent_count(&s->mbox));
    }
    done(s);
    imap_store_end(s);
}

static void claim_cb(void *arg, int status, uint32_t old)
{
    sync_op_t *op = arg;
    imap_session_t *s = op->s;
    if (!imap_store_alive(s)) {
        free(op);
        return;
    }
    imap_mailbox_t *m = &s->mbox;
    /* Not claimed (the store is down): the new messages are simply not \Recent here. */
    imap_list_changed(m);
    for (size_t i = op->first_new; status == MAILSTORE_OK && i < m->count; i++)
        m->msgs[i].recent = m->msgs[i].uid > old;
    sync_finish(op, true);
}

static void changes_cb(void *arg, int status, const mailstore_changes_t *ch)
{
    sync_op_t *op = arg;
    imap_session_t *s = op->s;
    s->syncing = false;
    if (!imap_store_alive(s)) {
        free(op);
        return;
    }
    imap_mailbox_t *m = &s->mbox;
    if (status != MAILSTORE_OK || s->state != IMAP_STATE_SELECTED) {
        if (status != MAILSTORE_OK)
            log_warn("could not look for mailbox changes", "session=%lu error=\"%s\"", s->fe.id,
                     mailstore_strerror(status));
        sync_finish(op, false);
        return;
    }
    bool complete = true, expunged = false;
    if (op->expunges_allowed) {
        for (size_t k = 0; k < ch->nexpunged; k++) {
            long i = imap_msg_index(m, ch->expunged[k]);
            if (i >= 0) {
                imap_msg_expunged(s, (size_t)i);
                expunged = true;
            }
        }
    } else if (ch->nexpunged > 0) {
        complete = false; /* told later, when an EXPUNGE response is allowed */
    }
    size_t before = m->count;
    uint32_t last_uid = m->count ? m->msgs[m->count - 1].uid : 0;
    buf_t b;
    buf_init(&b);
    for (size_t k = 0; k < ch->nmsgs; k++) {
        const mailstore_flags_t *f = &ch->msgs[k];
        unsigned mask = imap_flags_mask(f->flags, f->nflags);
        if (f->uid > last_uid) {
            if (msg_append(m, f->uid, mask, f->modseq) < 0)
                break;
            continue;
        }
        long i = imap_msg_index(m, f->uid);
        if (i < 0)
            continue;
        imap_list_changed(m);
        m->msgs[i].flags = mask;
        m->msgs[i].modseq = f->modseq;
        buf_reset(&b);
        buf_printf(&b, "%ld FETCH (", i + 1);
        imap_append_flags(&b, f->flags, f->nflags, m->msgs[i].recent);
        if (s->condstore)
            buf_printf(&b, " MODSEQ (%llu)", (unsigned long long)f->modseq);
        buf_puts(&b, ")");
        imap_untagged(s, "%.*s", (int)b.len, b.data);
    }
    buf_free(&b);
    if (complete) {
        m->highestmodseq = ch->highestmodseq;
    }
    if (ch->uidnext > m->uidnext)
        m->uidnext = ch->uidnext;
    if (m->count == before) {
        /* Section 7.4.1: after EXPUNGEs the client knows the count; say it again anyway. */
        sync_finish(op, expunged);
        return;
    }
    /* New messages: \Recent for this session if no other session was told first. */
    op->first_new = before;
    if (mailstore_claim_recent(imap_store(s), m->id, m->msgs[m->count - 1].uid, !m->readonly,
                               claim_cb, op) < 0)
        sync_finish(op, true);
}

void imap_sync(imap_session_t *s, bool expunges_allowed, void (*done)(imap_session_t *s))
{
    if (s->state != IMAP_STATE_SELECTED) {
        done(s);
        return;
    }
    sync_op_t *op = calloc(1, sizeof *op);
    imap_mailbox_t *m = &s->mbox;
    uint32_t last_uid = m->count ? m->msgs[m->count - 1].uid : 0;
    if (!op) {
        done(s);
        return;
    }
    *op = (sync_op_t){ .s = s, .expunges_allowed = expunges_allowed, .done = done };
    imap_store_begin(s);
    s->syncing = true;
    if (mailstore_changes(imap_store(s), m->id, m->highestmodseq, last_uid, changes_cb, op) < 0) {
        s->syncing = false;
        free(op);
        done(s);
        imap_store_end(s);
    }
}

/* ---- NOOP and CHECK (sections 6.1.2, 6.4.1) ---------------------------------------- */

static void check_done(imap_session_t *s)
{
    imap_ok(s, NULL, "%s completed", s->op_name);
}

void imap_cmd_check(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    if (r->cmd.n_args != 0) {
        imap_bad(s, "%s takes no arguments", r->cmd.name);
        return;
    }
    s->op_name = strcmp(r->cmd.name, "NOOP") == 0 ? "NOOP" : "CHECK";
    imap_sync(s, true, check_done);
}

/* ---- IDLE (RFC 2177) --------------------------------------------------------------- */

static void resync_cb(fe_session_t *fs)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (s->idling && !s->syncing)
        sync_idle(s);
}

/* A change announced while the store was being asked is looked for once more, from the
 * loop (this runs inside the look that just ended). */
static void idle_synced(imap_session_t *s)
{
    if (s->idling && s->resync) {
        s->resync = false;
        fe_session_delay(&s->fe, 0, resync_cb);
    }
}

static void sync_idle(imap_session_t *s)
{
    imap_sync(s, true, idle_synced);
}

void imap_cmd_idle(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (((imap_req_t *)req)->cmd.n_args != 0) {
        imap_bad(s, "IDLE takes no arguments");
        return;
    }
    s->idling = true;
    fe_session_reply(fs, "+ idling");
    /* What changed before the watch could tell. */
    if (s->state == IMAP_STATE_SELECTED)
        sync_idle(s);
}

void imap_idle_line(imap_session_t *s, const char *line, size_t len)
{
    s->idling = false;
    if (len == 4 && strncasecmp(line, "DONE", 4) == 0)
        imap_ok(s, NULL, "IDLE terminated");
    else
        imap_bad(s, "Expected DONE to end IDLE");
}
