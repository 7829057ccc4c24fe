/* The commands on mailboxes (RFC 3501 section 6.3): SELECT, EXAMINE, CREATE, DELETE,
 * RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (with SPECIAL-USE, RFC 6154, and CHILDREN, RFC 3348),
 * LSUB, STATUS, NAMESPACE (RFC 2342); and the login's last step. */
#include "imapd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/text.h"

/* ---- waiting for the store --------------------------------------------------------- */

void imap_store_begin(imap_session_t *s)
{
    fe_session_ref(&s->fe);
    fe_session_wait(&s->fe);
}

bool imap_store_alive(imap_session_t *s)
{
    if (!s->fe.closing)
        return true;
    fe_session_unref(&s->fe);
    return false;
}

void imap_store_end(imap_session_t *s)
{
    fe_session_resume(&s->fe);
    fe_session_unref(&s->fe);
}

/* A mailbox name argument: modified UTF-7 (section 5.1.3), INBOX in any case is INBOX, a
 * trailing "/" is dropped. Returns false after a BAD reply. */
bool imap_mailbox_arg(imap_session_t *s, const imap_arg_t *arg, char *out, size_t out_len)
{
    const char *name, *err = NULL;
    size_t len;
    if (!imap_arg_astring(arg, &name, &len) || len == 0 || memchr(name, 0, len)) {
        imap_bad(s, "Invalid mailbox name");
        return false;
    }
    if (imap_mutf7_decode(name, len, NULL, &err) < 0) {
        imap_bad(s, "Invalid mailbox name: %s", err ? err : "not modified UTF-7");
        return false;
    }
    buf_t b;
    buf_init(&b);
    while (len > 1 && name[len - 1] == '/')
        len--;
    if (imap_mailbox_normalize(name, len, &b) < 0 || b.len + 1 > out_len) {
        buf_free(&b);
        imap_bad(s, "Mailbox name too long");
        return false;
    }
    memcpy(out, b.data, b.len);
    out[b.len] = '\0';
    buf_free(&b);
    if (strstr(out, "//") || out[0] == '/' || strchr(out, '*') || strchr(out, '%')) {
        imap_bad(s, "Invalid mailbox name");
        return false;
    }
    return true;
}

/* The store's failure as a tagged NO (RFC 5530 response codes). */
void imap_store_no(imap_session_t *s, int status, const char *what)
{
    switch (status) {
    case MAILSTORE_NOTFOUND:
        imap_no(s, "NONEXISTENT", "%s: no such mailbox", what);
        break;
    case MAILSTORE_EXISTS:
        imap_no(s, "ALREADYEXISTS", "%s: the mailbox exists already", what);
        break;
    case MAILSTORE_DENIED:
        imap_no(s, "CANNOT", "%s: not permitted", what);
        break;
    default:
        imap_no(s, "UNAVAILABLE", "%s: the mail store is not available, try again later", what);
        break;
    }
}

mailstore_t *imap_store(imap_session_t *s)
{
    return ((imap_server_t *)s->fe.srv->proto_data)->store;
}

/* ---- login ------------------------------------------------------------------------- */

static void login_user_cb(void *arg, int status, int64_t user_id)
{
    imap_session_t *s = arg;
    if (!imap_store_alive(s))
        return;
    if (status != MAILSTORE_OK) {
        /* Authenticated, yet the account is gone or the store is down: not logged in. */
        free(s->fe.user);
        s->fe.user = NULL;
        imap_no(s, "UNAVAILABLE", "The mail store is not available, try again later");
    } else {
        s->user_id = user_id;
        imap_enter_state(s, IMAP_STATE_AUTH);
        imap_watch_start(s);
        /* RFC 3501 section 7.1: the capabilities change with the login. */
        imap_ok(s, NULL, "[CAPABILITY %s] Logged in", imap_capabilities(s));
    }
    imap_store_end(s);
}

void imap_after_login(imap_session_t *s)
{
    imap_store_begin(s);
    if (mailstore_user_id(imap_store(s), s->fe.user, login_user_cb, s) < 0) {
        free(s->fe.user);
        s->fe.user = NULL;
        imap_no(s, "UNAVAILABLE", "The mail store is not available, try again later");
        imap_store_end(s);
    }
}

/* ---- NAMESPACE (RFC 2342): one personal namespace, "/" between levels ---------------- */

void imap_cmd_namespace(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    if (((imap_req_t *)req)->cmd.n_args != 0) {
        imap_bad(s, "NAMESPACE takes no arguments");
        return;
    }
    imap_untagged(s, "NAMESPACE ((\"\" \"/\")) NIL NIL");
    imap_ok(s, NULL, "Namespace completed");
}

/* ---- CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE ------------------------------------ */

static void mailbox_done_cb(void *arg, int status, int64_t mailbox_id, uint32_t uidvalidity)
{
    imap_session_t *s = arg;
    (void)mailbox_id;
    (void)uidvalidity;
    if (!imap_store_alive(s))
        return;
    const char *what = s->op_name;
    if (status == MAILSTORE_OK) {
        imap_publish_change(s, 0, 0, MAILWATCH_MAILBOXES);
        imap_ok(s, NULL, "%s completed", what);
    } else {
        imap_store_no(s, status, what);
    }
    imap_store_end(s);
}

static void start_or_fail(imap_session_t *s, int rc, const char *what)
{
    if (rc == 0)
        return;
    imap_store_no(s, MAILSTORE_TEMP, what);
    imap_store_end(s);
}

void imap_cmd_create(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    char name[IMAP_MAILBOX_NAME_MAX];
    if (r->cmd.n_args != 1) {
        imap_bad(s, "Syntax: CREATE mailbox");
        return;
    }
    if (!imap_mailbox_arg(s, &r->cmd.args[0], name, sizeof name))
        return;
    if (strcmp(name, "INBOX") == 0) {
        imap_no(s, "ALREADYEXISTS", "INBOX exists already");
        return;
    }
    s->op_name = "CREATE";
    imap_store_begin(s);
    start_or_fail(s, mailstore_create_mailbox(imap_store(s), s->user_id, name, NULL,
                                              mailbox_done_cb, s), "CREATE");
}

void imap_cmd_delete(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    char name[IMAP_MAILBOX_NAME_MAX];
    if (r->cmd.n_args != 1) {
        imap_bad(s, "Syntax: DELETE mailbox");
        return;
    }
    if (!imap_mailbox_arg(s, &r->cmd.args[0], name, sizeof name))
        return;
    if (strcmp(name, "INBOX") == 0) {
        imap_no(s, "CANNOT", "INBOX cannot be deleted");
        return;
    }
    if (s->state == IMAP_STATE_SELECTED && strcmp(name, s->mbox.name) == 0) {
        imap_mailbox_forget(s);
        imap_enter_state(s, IMAP_STATE_AUTH);
    }
    s->op_name = "DELETE";
    imap_store_begin(s);
    start_or_fail(s, mailstore_delete_mailbox(imap_store(s), s->user_id, name, mailbox_done_cb, s),
                  "DELETE");
}

void imap_cmd_rename(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    char from[IMAP_MAILBOX_NAME_MAX], to[IMAP_MAILBOX_NAME_MAX];
    if (r->cmd.n_args != 2) {
        imap_bad(s, "Syntax: RENAME mailbox new-name");
        return;
    }
    if (!imap_mailbox_arg(s, &r->cmd.args[0], from, sizeof from) ||
        !imap_mailbox_arg(s, &r->cmd.args[1], to, sizeof to))
        return;
    if (strcmp(to, "INBOX") == 0) {
        imap_no(s, "ALREADYEXISTS", "INBOX exists already");
        return;
    }
    s->op_name = "RENAME";
    imap_store_begin(s);
    start_or_fail(s, mailstore_rename_mailbox(imap_store(s), s->user_id, from, to,
                                              mailbox_done_cb, s), "RENAME");
}

static void subscribe_common(imap_session_t *s, imap_req_t *r, bool on)
{
    char name[IMAP_MAILBOX_NAME_MAX];
    const char *what = on ? "SUBSCRIBE" : "UNSUBSCRIBE";
    if (r->cmd.n_args != 1) {
        imap_bad(s, "Syntax: %s mailbox", what);
        return;
    }
    if (!imap_mailbox_arg(s, &r->cmd.args[0], name, sizeof name))
        return;
    s->op_name = what;
    imap_store_begin(s);
    start_or_fail(s, mailstore_subscribe(imap_store(s), s->user_id, name, on, mailbox_done_cb, s),
                  what);
}

void imap_cmd_subscribe(fe_session_t *fs, void *req)
{
    subscribe_common((imap_session_t *)fs, req, true);
}

void imap_cmd_unsubscribe(fe_session_t *fs, void *req)
{
    subscribe_common((imap_session_t *)fs, req, false);
}

/* ---- LIST and LSUB ----------------------------------------------------------------- */

/* Whether another mailbox lies below name. */
static bool has_children(const mailstore_mailbox_t *boxes, size_t n, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (strncmp(boxes[i].name, name, len) == 0 && boxes[i].name[len] == '/')
            return true;
    return false;
}

static void list_cb(void *arg, int status, const mailstore_mailbox_t *boxes, size_t n)
{
    imap_session_t *s = arg;
    if (!imap_store_alive(s))
        return;
    const char *what = s->op_name;
    if (status != MAILSTORE_OK) {
        imap_store_no(s, status, what);
        imap_store_end(s);
        return;
    }
    bool lsub = strcmp(what, "LSUB") == 0;
    buf_t line;
    buf_init(&line);
    for (size_t i = 0; i < n; i++) {
        if (lsub && !boxes[i].subscribed)
            continue;
        if (!imap_list_match(s->op_text, boxes[i].name))
            continue;
        buf_reset(&line);
        buf_printf(&line, "* %s (%s", what,
                   has_children(boxes, n, boxes[i].name) ? "\\HasChildren" : "\\HasNoChildren");
        if (boxes[i].special_use && !lsub)
            buf_printf(&line, " %s", boxes[i].special_use);
        buf_puts(&line, ") \"/\" ");
        imap_append_astring(&line, boxes[i].name, strlen(boxes[i].name));
        /* Data, not a status line: the name may be a literal (RFC 3501 section 4.3). */
        buf_puts(&line, "\r\n");
        fe_session_write(&s->fe, line.data, line.len);
    }
    buf_free(&line);
    imap_ok(s, NULL, "%s completed", what);
    imap_store_end(s);
}

static void list_common(imap_session_t *s, imap_req_t *r, const char *what)
{
    const char *ref, *pat;
    size_t rl, pl;
    if (r->cmd.n_args != 2 || !imap_arg_astring(&r->cmd.args[0], &ref, &rl) ||
        !imap_arg_astring(&r->cmd.args[1], &pat, &pl) || rl + pl >= sizeof s->op_text ||
        memchr(ref, 0, rl) || memchr(pat, 0, pl)) {
        imap_bad(s, "Syntax: %s reference mailbox-pattern", what);
        return;
    }
    /* RFC 3501 section 6.3.8: an empty pattern asks for the delimiter and the root. */
    if (pl == 0 && strcmp(what, "LIST") == 0) {
        imap_untagged(s, "LIST (\\Noselect) \"/\" \"\"");
        imap_ok(s, NULL, "LIST completed");
        return;
    }
    /* The reference is put in front of the pattern as it is (section 6.3.8: "~smith/Mail/"
     * with "foo.*"); a client wanting a level below gives the delimiter itself. */
    snprintf(s->op_text, sizeof s->op_text, "%.*s%.*s", (int)rl, ref, (int)pl, pat);
    if (strncasecmp(s->op_text, "INBOX", 5) == 0 && (s->op_text[5] == '\0' || s->op_text[5] == '/'))
        memcpy(s->op_text, "INBOX", 5);
    s->op_name = what;
    imap_store_begin(s);
    start_or_fail(s, mailstore_list(imap_store(s), s->user_id, NULL, false, list_cb, s), what);
}

void imap_cmd_list(fe_session_t *fs, void *req)
{
    list_common((imap_session_t *)fs, req, "LIST");
}

void imap_cmd_lsub(fe_session_t *fs, void *req)
{
    list_common((imap_session_t *)fs, req, "LSUB");
}

/* ---- STATUS (section 6.3.10, HIGHESTMODSEQ of RFC 7162 section 3.1.6) ---------------- */

enum {
    ST_MESSAGES = 1 << 0,
    ST_RECENT = 1 << 1,
    ST_UIDNEXT = 1 << 2,
    ST_UIDVALIDITY = 1 << 3,
    ST_UNSEEN = 1 << 4,
    ST_HIGHESTMODSEQ = 1 << 5,
};

static void status_cb(void *arg, int status, const mailstore_mailbox_t *boxes, size_t n)
{
    imap_session_t *s = arg;
    if (!imap_store_alive(s))
        return;
    if (status != MAILSTORE_OK || n != 1) {
        imap_store_no(s, status == MAILSTORE_OK ? MAILSTORE_NOTFOUND : status, "STATUS");
        imap_store_end(s);
        return;
    }
    const mailstore_mailbox_t *b = &boxes[0];
    unsigned want = s->op_mask;
    buf_t line;
    buf_init(&line);
    buf_puts(&line, "* STATUS ");
    imap_append_astring(&line, b->name, strlen(b->name));
    buf_puts(&line, " (");
    const char *sep = "";
    if (want & ST_MESSAGES)
        buf_printf(&line, "%sMESSAGES %lld", sep, (long long)b->messages), sep = " ";
    if (want & ST_RECENT)
        buf_printf(&line, "%sRECENT 0", sep), sep = " ";
    if (want & ST_UIDNEXT)
        buf_printf(&line, "%sUIDNEXT %u", sep, b->uidnext), sep = " ";
    if (want & ST_UIDVALIDITY)
        buf_printf(&line, "%sUIDVALIDITY %u", sep, b->uidvalidity), sep = " ";
    if (want & ST_UNSEEN)
        buf_printf(&line, "%sUNSEEN %lld", sep, (long long)b->unseen), sep = " ";
    if (want & ST_HIGHESTMODSEQ)
        buf_printf(&line, "%sHIGHESTMODSEQ %llu", sep, (unsigned long long)b->highestmodseq);
    buf_puts(&line, ")\r\n"); /* the name may be a literal, as in LIST */
    fe_session_write(&s->fe, line.data, line.len);
    buf_free(&line);
    imap_ok(s, NULL, "STATUS completed");
    imap_store_end(s);
}

void imap_cmd_status(fe_session_t *fs, void *req)
{
    imap_session_t *s = (imap_session_t *)fs;
    imap_req_t *r = req;
    char name[IMAP_MAILBOX_NAME_MAX];
    if (r->cmd.n_args != 2 || r->cmd.args[1].type != IMAP_ARG_LIST || r->cmd.args[1].n == 0) {
        imap_bad(s, "Syntax: STATUS mailbox (item ...)");
        return;
    }
    if (!imap_mailbox_arg(s, &r->cmd.args[0], name, sizeof name))
        return;
    static const struct { const char *name; unsigned bit; } items[] = {
        { "MESSAGES", ST_MESSAGES }, { "RECENT", ST_RECENT }, { "UIDNEXT", ST_UIDNEXT },
        { "UIDVALIDITY", ST_UIDVALIDITY }, { "UNSEEN", ST_UNSEEN },
        { "HIGHESTMODSEQ", ST_HIGHESTMODSEQ },
    };
    unsigned mask = 0;
    const imap_arg_t *l = &r->cmd.args[1];
    for (size_t i = 0; i < l->n; i++) {
        unsigned bit = 0;
        for (size_t k = 0; k < sizeof items / sizeof items[0] && !bit; k++)
            if (imap_arg_is_word(&l->list[i], items[k].name))
                bit = items[k].bit;
        if (!bit) {
            char echo[31];
            imap_bad(s, "Unknown STATUS item %s",
                     text_echo(echo, sizeof echo, l->list[i].raw, l->list[i].raw_len));
            return;
        }
        mask |= bit;
    }
    if (mask & ST_HIGHESTMODSEQ)
        s->condstore = true; /* RFC 7162 section 3.1: a CONDSTORE-enabling command */
    s->op_mask = mask;
    imap_store_begin(s);
    start_or_fail(s, mailstore_list(imap_store(s), s->user_id, name,
                                    (mask & (ST_MESSAGES | ST_UNSEEN)) != 0, status_cb, s),
                  "STATUS");
}

/* ---- SELECT and EXAMINE (sections 6.3.1, 6.3.2; RFC 7162 section 3.1.8) -------------- */

static const char *const sysflag_names[] = { "\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
                                             "\\Draft" };

/* The answer to SELECT/EXAMINE, once \Recent is known: recent messages are, for this
 * session. */
static void select_answer(imap_session_t *s, size_t recent)
{
    imap_mailbox_t *m = &s->mbox;
    imap_untagged(s, "%.*s", (int)s->select_flags.len, s->select_flags.data);
    buf_free(&s->select_flags);
    imap_untagged(s, "OK [PERMANENTFLAGS (%s)] Flags permitted",
                  m->readonly ? "" : "\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*");
    imap_untagged(s, "%zu EXISTS", m->count);
    imap_untagged(s, "%zu RECENT", recent);
    if (s->select_unseen)
        imap_untagged(s, "OK [UNSEEN %zu] First unseen", s->select_unseen);
    imap_untagged(s, "OK [UIDVALIDITY %u] UIDs valid", m->uidvalidity);
    imap_untagged(s, "OK [UIDNEXT %u] Predicted next UID", m->uidnext);
    imap_untagged(s, "OK [HIGHESTMODSEQ %llu] Highest", (unsigned long long)m->highestmodseq);
    imap_enter_state(s, IMAP_STATE_SELECTED);
    imap_ok(s, m->readonly ? "READ-ONLY" : "READ-WRITE", "%s completed", s->op_name);
    imap_store_end(s);
}

static void select_recent_cb(void *arg, int status, uint32_t old)
{
    imap_session_t *s = arg;
    if (!imap_store_alive(s))
        return;
    imap_mailbox_t *m = &s->mbox;
    /* The list came with nothing \Recent; what is above old is (UIDs ascend). Not known
     * (the store failed meanwhile): nothing is \Recent for this session. */
    size_t first = status != MAILSTORE_OK || old == UINT32_MAX ? m->count
                                                                : imap_msg_first(m, old + 1);
    if (first < m->count)
        imap_list_changed(m);
    for (size_t i = first; i < m->count; i++)
        m->msgs[i].recent = true;
    select_answer(s, m->count - first);
}

static void select_cb(void *arg, int status, const mailstore_selected_t *sel,
                      int64_t recent_uid)
{
    imap_session_t *s = arg;
    if (!imap_store_alive(s))
        return;
    const char *what = s->op_name;
    if (status != MAILSTORE_OK) {
        imap_store_no(s, status, what);
        imap_store_end(s);
        return;
    }
    imap_mailbox_t *m = &s->mbox;
    m->id = sel->id;
    m->uidvalidity = sel->uidvalidity;
    m->uidnext = sel->uidnext;
    m->highestmodseq = sel->highestmodseq;
    m->readonly = strcmp(what, "EXAMINE") == 0;
    snprintf(m->name, sizeof m->name, "%.*s", (int)sizeof m->name - 1, s->op_text);
    /* The session's list is kept from one SELECT to the next: a client that selects again
     * and again (many do, to look for new mail) costs no allocation, and, when neither the
     * mailbox nor the list changed since, no copy (the same state has the same messages). */
    struct imap_list_origin now = {
        .valid = true, .id = sel->id, .uidvalidity = sel->uidvalidity, .uidnext = sel->uidnext,
        .highestmodseq = sel->highestmodseq, .expunged_floor = sel->expunged_floor,
        .count = sel->count,
    };
    const struct imap_list_origin *o = &m->origin;
    if (m->msgs && o->valid && o->id == now.id && o->uidvalidity == now.uidvalidity &&
        o->uidnext == now.uidnext && o->highestmodseq == now.highestmodseq &&
        o->expunged_floor == now.expunged_floor && o->count == now.count) {
        m->count = sel->count;
    } else {
        imap_list_changed(m);
        if (m->cap < sel->count || !m->msgs) {
            free(m->msgs);
            m->cap = sel->count ? sel->count : 1;
            if (!(m->msgs = malloc(m->cap * sizeof *m->msgs)))
                m->cap = 0;
        }
        m->count = m->msgs ? sel->count : 0;
        for (size_t i = 0; i < m->count; i++)
            m->msgs[i] = (imap_msg_t){ .uid = sel->uids[i], .modseq = sel->modseqs[i],
                                       .flags = (unsigned)(sel->flags[i] & 0x1f) };
        /* The first unseen message, for the answer; none to look for when all are seen. */
        s->select_unseen = 0;
        for (size_t i = 0; sel->unseen && i < m->count && !s->select_unseen; i++)
            if (!(m->msgs[i].flags & IMAP_FLAG_SEEN))
                s->select_unseen = i + 1;
        if (m->msgs)
            m->origin = now;
    }
    buf_t *b = &s->select_flags;
    buf_reset(b);
    buf_puts(b, "FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
    for (size_t k = 0; k < sel->nkeywords; k++)
        buf_printf(b, " %s", sel->keywords[k]);
    buf_puts(b, ")");
    /* Section 2.3.2: SELECT takes \Recent for what it is the first to see; EXAMINE looks.
     * Nothing above the mark that came with the mailbox: nothing to take, nothing \Recent. */
    uint32_t upto = m->count ? m->msgs[m->count - 1].uid : 0;
    if (upto == 0 || (recent_uid >= 0 && (m->readonly || upto <= recent_uid))) {
        select_recent_cb(s, recent_uid >= 0 ? MAILSTORE_OK : MAILSTORE_NOTFOUND,
                         recent_uid >= 0 ? (uint32_t)recent_uid : 0);
        return;
    }
    if (mailstore_claim_recent(imap_store(s), m->id, upto, !m->readonly, select_recent_cb, s) < 0)
        select_answer(s, 0);
}

static void select_common(imap_session_t *s, imap_req_t *r, const char *what)
{
    char name[IMAP_MAILBOX_NAME_MAX];
    /* RFC 7162 section 3.1.8: SELECT mailbox (CONDSTORE). */
    if (r->cmd.n_args < 1 || r->cmd.n_args > 2 ||
        (r->cmd.n_args == 2 && (r->cmd.args[1].type != IMAP_ARG_LIST || r->cmd.args[1].n != 1 ||
                                !imap_arg_is_word(&r->cmd.args[1].list[0], "CONDSTORE")))) {
        imap_bad(s, "Syntax: %s mailbox [(CONDSTORE)]", what);
        return;
    }
    if (!imap_mailbox_arg(s, &r->cmd.args[0], name, sizeof name))
        return;
    if (r->cmd.n_args == 2)
        s->condstore = true;
    /* Section 6.3.1: a SELECT, even a failing one, leaves the selected state first. */
    if (s->state == IMAP_STATE_SELECTED) {
        imap_mailbox_forget(s);
        imap_enter_state(s, IMAP_STATE_AUTH);
    }
    snprintf(s->op_text, sizeof s->op_text, "%s", name);
    s->op_name = what;
    imap_store_begin(s);
    start_or_fail(s, mailstore_select(imap_store(s), s->user_id, name, select_cb, s), what);
}

void imap_cmd_select(fe_session_t *fs, void *req)
{
    select_common((imap_session_t *)fs, req, "SELECT");
}

void imap_cmd_examine(fe_session_t *fs, void *req)
{
    select_common((imap_session_t *)fs, req, "EXAMINE");
}

void imap_mailbox_forget(imap_session_t *s)
{
    /* The message list's memory is kept for the next SELECT (imap_release frees it). */
    imap_msg_t *msgs = s->mbox.msgs;
    size_t cap = s->mbox.cap;
    struct imap_list_origin origin = s->mbox.origin;
    memset(&s->mbox, 0, sizeof s->mbox);
    s->mbox.msgs = msgs;
    s->mbox.cap = cap;
    s->mbox.origin = origin;
}

int imap_view_ask(imap_session_t *s, mailstore_select_cb cb, void *arg)
{
    return mailstore_select(imap_store(s), s->user_id, s->mbox.name, cb, arg);
}

bool imap_view_usable(const imap_session_t *s, int status, const mailstore_selected_t *sel)
{
    return status == MAILSTORE_OK && sel->id == s->mbox.id &&
           sel->uidvalidity == s->mbox.uidvalidity && !sel->keywords_truncated;
}

const char *imap_sysflag_at(unsigned i)
{
    return i < 5 ? sysflag_names[i] : NULL;
}
