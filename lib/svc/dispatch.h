/* The command dispatcher every front end shares (smtpd, pop3d, imapd): a protocol describes
 * its commands in a fe_cmd_table_t and hands each command line to fe_dispatch(), which
 * handles once what every command has in common:
 *
 *   the session takes no commands now ............ the line is ignored (state() is 0)
 *   the line is malformed (bare LF, NUL ...) ..... refused as a syntax error
 *   too many commands in this session ............ refused, then the session closes
 *   the line is longer than line_max ............. refused, unless FE_CMD_LONG_LINE
 *   the tokenizer cannot parse it ................ refused as a syntax error
 *   no such command .............................. refused
 *   the protocol's own precondition (admit) ...... it answers instead of the command
 *   not valid in the session's state ............. refused
 *   authentication without TLS ................... refused (FE_CMD_NEEDS_TLS_OR_PLAINTEXT)
 *
 * and only then calls the command's handler, which parses its arguments and acts. Every
 * refusal is a client mistake counted against the error cap (Postfix's hard error limit);
 * the protocol only words the replies. */
#ifndef POSTERN_FE_DISPATCH_H
#define POSTERN_FE_DISPATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "bus/lim.h"
#include "svc/fe.h"

enum fe_cmd_flags {
    /* Gives a password or starts SASL: refused unless TLS is active or auth.allow_plaintext
     * is on (RFC 2595 section 2.1, RFC 4954 section 4). */
    FE_CMD_NEEDS_TLS_OR_PLAINTEXT = 1u << 0,
    /* May exceed the table's line_max (SASL initial responses, RFC 4954 section 4). */
    FE_CMD_LONG_LINE = 1u << 1,
    /* Not counted against the command cap. */
    FE_CMD_NO_COUNT = 1u << 2,
};

typedef struct fe_cmd {
    const char *name;  /* upper case; looked up without regard to case */
    unsigned states;   /* bit mask of the protocol's states (see state()) it is valid in */
    unsigned flags;    /* enum fe_cmd_flags */
    void (*fn)(fe_session_t *s, void *req);
} fe_cmd_t;

/* Why fe_dispatch() refused a line; the protocol words the reply. */
typedef enum fe_refusal {
    FE_REFUSE_UNKNOWN,           /* no such command; text: the name as the client sent it */
    FE_REFUSE_STATE,             /* not valid in the current state; text: the command's name */
    FE_REFUSE_NEEDS_TLS,         /* authentication before TLS; text: the command's name */
    FE_REFUSE_SYNTAX,            /* the tokenizer's error_r */
    FE_REFUSE_TOO_LONG,          /* over line_max, or over the line reader's cap; text NULL */
    FE_REFUSE_TOO_MANY_ERRORS,   /* the error cap was reached; the session closes; text NULL */
    FE_REFUSE_TOO_MANY_COMMANDS, /* the command cap was reached; the session closes; text NULL */
} fe_refusal_t;

/* What a tokenizer returns. */
enum fe_tokenize_result {
    FE_TOKENIZE_OK = 0,      /* *name_r is set */
    FE_TOKENIZE_SYNTAX = -1, /* cannot parse: *error_r; a line over line_max is refused as
                                too long instead */
    FE_TOKENIZE_FRAMING = -2 /* the line itself is malformed (bare LF, NUL): *error_r, before
                                any other check, whatever the line's length */
};

typedef struct fe_cmd_table {
    const fe_cmd_t *cmds;
    size_t ncmds;
    /* Longest command line, terminator included, for commands without FE_CMD_LONG_LINE
     * (RFC 5321 section 4.5.3.1.4: 512; RFC 2449 section 4: 255). 0: no cap beyond the line
     * reader's (fe_protocol_t.line_max). */
    size_t line_max;
    /* Splits a line (without its terminator, NUL-terminated at len; the tokenizer may write
     * into it) into the protocol's request and the command name: SMTP verb and arguments,
     * POP3 keyword and arguments, IMAP tag, name and arguments. line_flags are the line
     * reader's (LINE_BARE_LF, LINE_NUL). Returns enum fe_tokenize_result; *name_r and
     * *error_r must stay valid until the command is done (point into line or req). */
    int (*tokenize)(fe_session_t *s, char *line, size_t len, unsigned line_flags, void *req,
                    const char **name_r, const char **error_r);
    /* The session's current state as one bit of fe_cmd_t.states; 0 when it takes no
     * commands now (a reply is pending, the session is saying goodbye): the line is dropped. */
    unsigned (*state)(fe_session_t *s);
    /* Optional. Called for a known command before its state is checked; returns false when
     * it has answered (and maybe closed the session) in the command's place. Such an answer
     * is not counted as a client mistake. */
    bool (*admit)(fe_session_t *s, const fe_cmd_t *cmd, void *req);
    /* Writes the reply for a refusal; req is as far as the tokenizer filled it, NULL outside
     * fe_dispatch(). For FE_REFUSE_TOO_MANY_* the session closes once it has written; it may
     * move the protocol's state. It must not count the mistake itself. */
    void (*refuse)(fe_session_t *s, void *req, fe_refusal_t why, const char *text);
    /* The limiter blocked the client in mid-session (a login, a recipient, a message): write
     * the reply, and maybe move the protocol's state; the session then closes. NULL: the
     * connect-time wording, fe_protocol_t.blocked. */
    void (*blocked)(fe_session_t *s, const char *reason, const char *until);
    const char *blocked_reason; /* when neither the limiter nor the local copy says why */
    /* The error cap: the setting holding it (NULL: none) and the value used while it is
     * not a positive number, or when the session has no server (tests). */
    const char *max_errors_key;
    long max_errors_default;
    /* The command cap, the same way; a default of 0 with no key means no cap. */
    const char *max_commands_key;
    long max_commands_default;
} fe_cmd_table_t;

/* Dispatches one command line (see the top of this file). Lines arriving after the session
 * began to close are dropped. req is the protocol's request, filled by the tokenizer. */
void fe_dispatch(fe_session_t *s, const fe_cmd_table_t *t, char *line, size_t len,
                 unsigned line_flags, void *req);
/* Refuses as fe_dispatch() does: the protocol's reply, then the mistake is counted. For a
 * line over the line reader's cap (fe_protocol_t.line_too_long) use FE_REFUSE_TOO_LONG and
 * req NULL. */
void fe_dispatch_refuse(fe_session_t *s, const fe_cmd_table_t *t, void *req, fe_refusal_t why,
                        const char *text);
/* A client mistake counted against the cap (s->errors). Returns true when the cap was
 * reached: the protocol's FE_REFUSE_TOO_MANY_ERRORS reply was written and the session is
 * closing. */
bool fe_session_error(fe_session_t *s, const fe_cmd_table_t *t);
/* Whether the session may authenticate now: TLS is active or auth.allow_plaintext is on. */
bool fe_session_auth_allowed(const fe_session_t *s);
/* The limiter blocked the client in mid-session: logs and counts it, writes the protocol's
 * reply (t->blocked) with the reason and the time the block ends, and closes the session.
 * v is the limiter's verdict; without one or its time the local copy of the blocks is
 * asked, and failing that the reason is t->blocked_reason and the time "later". */
void fe_session_blocked_now(fe_session_t *s, const fe_cmd_table_t *t, const lim_verdict_t *v);

#endif
