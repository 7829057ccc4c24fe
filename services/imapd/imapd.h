/* imapd: IMAP4rev1 (RFC 3501) with IDLE (RFC 2177), UIDPLUS (RFC 4315), LITERAL+ (RFC 7888),
 * NAMESPACE (RFC 2342), SPECIAL-USE (RFC 6154), MOVE (RFC 6851), UNSELECT (RFC 3691),
 * ID (RFC 2971), ENABLE (RFC 5161) and CONDSTORE (RFC 7162) over the shared mail store, on
 * the plain (STARTTLS-capable) and implicit-TLS ports. */
#ifndef POSTERN_IMAPD_H
#define POSTERN_IMAPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "parse.h"
#include "bus/mailwatch.h"
#include "store/mailstore.h"
#include "svc/dispatch.h"
#include "svc/fe.h"

#define IMAP_LINE_MAX (64 * 1024)        /* one line of a command, CRLF included */
#define IMAP_COMMAND_MAX (256 * 1024)    /* a command outside its literals */
#define IMAP_LITERAL_MAX (64 * 1024)     /* a literal of any command but APPEND */
#define IMAP_LITERALS_MAX 32             /* literals in one command */
#define IMAP_MAILBOX_NAME_MAX 512

/* Settings (lib/base/settings.c) and the values used while a key is unknown there. */
#define IMAP_IDLE_TIMEOUT_KEY "imap.idle_timeout" /* RFC 3501 section 5.4: at least 30 min */
#define IMAP_MAX_ERRORS_KEY "imap.max_errors"
#define IMAP_MAX_ERRORS_DEFAULT 20

/* The states of RFC 3501 section 3, as bits for the command table. */
typedef enum imap_state {
    IMAP_STATE_NONE = 0,          /* takes no commands: waiting, or saying goodbye */
    IMAP_STATE_NOT_AUTH = 1 << 0,
    IMAP_STATE_AUTH = 1 << 1,
    IMAP_STATE_SELECTED = 1 << 2,
    IMAP_STATE_LOGOUT = 1 << 3,
} imap_state_t;

#define IMAP_ANY (IMAP_STATE_NOT_AUTH | IMAP_STATE_AUTH | IMAP_STATE_SELECTED)
#define IMAP_AUTHED (IMAP_STATE_AUTH | IMAP_STATE_SELECTED)

/* One message of the selected mailbox: sequence number = index + 1. */
typedef struct imap_msg {  /* 16 bytes: a SELECT of a large mailbox fills many */
    uint32_t uid;
    uint8_t flags;      /* enum imap_sysflag */
    bool recent;        /* \Recent for this session (RFC 3501 section 2.3.2) */
    uint64_t modseq;
} imap_msg_t;

/* The selected mailbox as this session knows it (RFC 3501 section 5.2: what it has told
 * the client). Keywords are not kept per message here; FETCH FLAGS reads them. */
typedef struct imap_mailbox {
    int64_t id;
    char name[IMAP_MAILBOX_NAME_MAX];
    bool readonly;           /* EXAMINE */
    uint32_t uidvalidity;
    uint32_t uidnext;
    uint64_t highestmodseq;  /* what the session has seen */
    imap_msg_t *msgs;
    size_t count, cap;
    /* The mailbox state the list was copied from at SELECT, while nothing has changed the
     * list since (imap_list_changed): a SELECT of the same mailbox in the same state keeps
     * it instead of copying it again. Kept, like the list, by imap_mailbox_forget(). */
    struct imap_list_origin {
        bool valid;
        int64_t id;
        uint32_t uidvalidity, uidnext;
        uint64_t highestmodseq, expunged_floor;
        size_t count;
    } origin;
} imap_mailbox_t;

/* Every change to a selected list's messages (flags, \Recent, one added or removed) goes
 * with this call. */
static inline void imap_list_changed(imap_mailbox_t *m)
{
    m->origin.valid = false;
}

/* The server-wide state (fe_server_t.proto_data): the mail store and the watch on the
 * bus's "mailbox changed" events. */
typedef struct imap_server {
    mailstore_t *store;
    mailwatch_t *watch;
} imap_server_t;

/* UIDs as ranges, for the store (mailstore_uidset_t views it). */
typedef struct imap_uidset {
    mailstore_range_t *ranges;
    size_t n, cap;
} imap_uidset_t;

typedef struct imap_req {
    imap_command_t cmd;
    bool parsed;
} imap_req_t;

typedef struct imap_session {
    fe_session_t fe; /* first: the skeleton's part */
    imap_state_t state;
    imap_cmdbuf_t in;        /* the command being gathered */
    bool refused_literal;    /* reading and dropping a refused {N+} literal */
    bool discard_rest;       /* ... and then the rest of its command */
    char tag[128];           /* of the command being answered */
    imap_req_t req;
    bool dispatched;         /* req and in hold a command handed to the dispatcher */
    bool idling;             /* IDLE: waiting for DONE */
    bool condstore;          /* ENABLE CONDSTORE, or a command that implies it */
    int64_t user_id;
    imap_mailbox_t mbox;     /* valid in the SELECTED state */
    mailwatch_watch_t *watch; /* changes to this user's mailboxes */
    bool syncing;            /* a look at what changed is under way */
    bool resync;             /* ... and a change was announced meanwhile */
    void *op;                /* the command in progress (cmd_*.c), freed by its owner */
    void (*op_free)(void *op);
    /* small facts of the command that waits for the store */
    const char *op_name;
    char op_text[IMAP_MAILBOX_NAME_MAX * 2];
    buf_t select_flags;      /* SELECT's FLAGS line while \Recent is claimed */
    size_t select_unseen;    /* ... and the first unseen message's number (0: none) */
    unsigned op_mask;
} imap_session_t;

/* main.c: the protocol's callbacks (session.c) */
void imap_open(fe_session_t *fs);
void imap_line(fe_session_t *fs, char *line, size_t len, unsigned flags);
void imap_bytes(fe_session_t *fs, const char *data, size_t len, bool last);
void imap_line_too_long(fe_session_t *fs);
void imap_tls_ready(fe_session_t *fs);
void imap_timeout(fe_session_t *fs);
void imap_release(fe_session_t *fs);
void imap_blocked(fe_session_t *fs, const char *reason, const char *until);
void imap_drain(fe_session_t *fs, bool deadline);

/* session.c: replies, one line each (fe_session_reply: no control character reaches the
 * client; quote client text with text_echo()). Untagged replies are written as given ("* "
 * is added); a response that may hold a literal (a mailbox name, message data) is written
 * with fe_session_write() instead. The tagged ones end the current command; code is a
 * response code without brackets or NULL. */
void imap_untagged(imap_session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_ok(imap_session_t *s, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* NO for a dependency that is down, or an operation refused: not a client mistake. */
void imap_no(imap_session_t *s, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* BAD, or NO for a client mistake: counted against imap.max_errors. */
void imap_bad(imap_session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void imap_no_counted(imap_session_t *s, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void imap_enter_state(imap_session_t *s, imap_state_t state);
const char *imap_capabilities(imap_session_t *s);
void imap_bye(imap_session_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The command table (cmd.c). */
extern const fe_cmd_table_t imap_cmd_table;

/* cmd_mailbox.c: LIST LSUB CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE STATUS SELECT EXAMINE
 * NAMESPACE; cmd_message.c: FETCH STORE SEARCH COPY MOVE EXPUNGE CLOSE UNSELECT CHECK APPEND;
 * cmd_idle.c: IDLE and the updates a session is told about. */
void imap_cmd_list(fe_session_t *fs, void *req);
void imap_cmd_lsub(fe_session_t *fs, void *req);
void imap_cmd_create(fe_session_t *fs, void *req);
void imap_cmd_delete(fe_session_t *fs, void *req);
void imap_cmd_rename(fe_session_t *fs, void *req);
void imap_cmd_subscribe(fe_session_t *fs, void *req);
void imap_cmd_unsubscribe(fe_session_t *fs, void *req);
void imap_cmd_status(fe_session_t *fs, void *req);
void imap_cmd_select(fe_session_t *fs, void *req);
void imap_cmd_examine(fe_session_t *fs, void *req);
void imap_cmd_namespace(fe_session_t *fs, void *req);
void imap_cmd_fetch(fe_session_t *fs, void *req);
void imap_cmd_store(fe_session_t *fs, void *req);
void imap_cmd_search(fe_session_t *fs, void *req);
void imap_cmd_copy(fe_session_t *fs, void *req);
void imap_cmd_move(fe_session_t *fs, void *req);
void imap_cmd_expunge(fe_session_t *fs, void *req);
void imap_cmd_close(fe_session_t *fs, void *req);
void imap_cmd_unselect(fe_session_t *fs, void *req);
void imap_cmd_check(fe_session_t *fs, void *req);
void imap_cmd_append(fe_session_t *fs, void *req);
void imap_cmd_idle(fe_session_t *fs, void *req);
/* Waiting for the store: begin holds a reference and stops reading commands; in the
 * callback, alive is false when the session closed meanwhile (the reference is then
 * dropped: return at once); end resumes the input and drops the reference. */
void imap_store_begin(imap_session_t *s);
bool imap_store_alive(imap_session_t *s);
void imap_store_end(imap_session_t *s);
mailstore_t *imap_store(imap_session_t *s);
/* A store failure as the tagged NO with its RFC 5530 code. */
void imap_store_no(imap_session_t *s, int status, const char *what);
/* A mailbox name argument, checked and normalised; false after a BAD reply. */
bool imap_mailbox_arg(imap_session_t *s, const imap_arg_t *arg, char *out, size_t out_len);
/* "\Seen" ... for bit i of the system flags. */
const char *imap_sysflag_at(unsigned i);
/* cmd_idle.c: the watch on this user's mailboxes, and telling other sessions. */
void imap_watch_start(imap_session_t *s);
void imap_watch_stop(imap_session_t *s);
void imap_publish_change(imap_session_t *s, int64_t mailbox_id, uint64_t modseq, mailwatch_kind_t kind);
/* Tells the client what changed in the selected mailbox (RFC 3501 section 7.4.1, 7.3.1);
 * expunges only when allowed (never during FETCH, STORE or SEARCH, section 7.4.1). Then
 * calls done (or at once when nothing is selected). */
void imap_sync(imap_session_t *s, bool expunges_allowed, void (*done)(imap_session_t *s));
/* cmd_message.c: the set argument of a command as the UIDs of messages this session
 * knows; false after a BAD reply. */
bool imap_set_arg(imap_session_t *s, const imap_arg_t *arg, bool uid, imap_uidset_t *out);
void imap_uidset_free(imap_uidset_t *u);
mailstore_uidset_t imap_uidset_view(const imap_uidset_t *u);
int imap_server_start(fe_server_t *srv);
void imap_server_stop(fe_server_t *srv);
long imap_msg_index(const imap_mailbox_t *m, uint32_t uid);
/* Index of the first message of the selected mailbox whose UID is uid or above (count when
 * none is). */
size_t imap_msg_first(const imap_mailbox_t *m, uint32_t uid);
void imap_msg_expunged(imap_session_t *s, size_t i);
unsigned imap_flags_mask(const char *const *flags, size_t n);
/* "FLAGS (...)" with \Recent added when recent. */
void imap_append_flags(buf_t *b, const char *const *flags, size_t n, bool recent);
/* The UIDs \Recent for this session, as a resolved set. 0, or -1 when memory runs out. */
int imap_recent_uids(const imap_mailbox_t *m, imap_seqset_t *out);
size_t imap_recent_count(const imap_mailbox_t *m);
/* After login: the user's id, INBOX and the watch on the user's mailboxes. */
void imap_after_login(imap_session_t *s);
/* IDLE's DONE (or anything else) arrived. */
void imap_idle_line(imap_session_t *s, const char *line, size_t len);
/* Leaves the SELECTED state (CLOSE, UNSELECT, SELECT of another, LOGOUT). */
void imap_mailbox_forget(imap_session_t *s);
/* Asks the store for its snapshot of the selected mailbox, brought up to date (one query
 * for what changed): cb gets it as mailstore_select() gives it. -1 when it cannot be asked. */
int imap_view_ask(imap_session_t *s, mailstore_select_cb cb, void *arg);
/* Whether that answer can stand for the session's mailbox: the store answered, about the
 * same mailbox (not another under its name since), with every keyword in its masks. */
bool imap_view_usable(const imap_session_t *s, int status, const mailstore_selected_t *sel);

#endif
