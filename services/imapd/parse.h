/* imapd's parsing layer, free of I/O: command assembly from lines and literals, the
 * command parser (RFC 3501 section 9, LITERAL+ of RFC 7888), sequence sets, FETCH
 * attributes, SEARCH programs and their translation to SQL, STORE, date-times, mailbox
 * names and LIST patterns, and the astring writer for responses. CONDSTORE (RFC 7162)
 * modifiers use the extended syntax of RFC 4466.
 *
 * Parsers return 1 = got one, 0 = need more input, -1 = error with a text in *error_r that
 * fits after "<tag> BAD " (static storage, never freed). */
#ifndef POSTERN_IMAPD_PARSE_H
#define POSTERN_IMAPD_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "base/buf.h"

/* ---- command assembly: lines and literals ------------------------------------------ */

#define IMAP_MAX_LITERALS_CAP 64 /* hard ceiling of imap_cmdbuf_limits_t.max_literals */
#define IMAP_CMDBUF_KEEP 1024    /* a command buffer grown past this is given back after it */

/* Whether a line (without its CRLF) ends with a literal announcement "{N}" or the
 * non-synchronising "{N+}" (RFC 7888). 1 = yes (*n_r, *nonsync_r set), 0 = no,
 * -1 = a malformed announcement such as "{12x}", "{}", "{+}" or a number past 2^64-1. */
int imap_literal_at_end(const char *line, size_t len, uint64_t *n_r, bool *nonsync_r);

typedef struct imap_cmdbuf_limits {
    size_t max_line;       /* bytes of the command outside literals (lines joined) */
    uint64_t max_literal;  /* bytes of one literal */
    unsigned max_literals; /* literals in one command, at most IMAP_MAX_LITERALS_CAP */
} imap_cmdbuf_limits_t;

typedef struct imap_span {
    size_t off; /* offset in the command buffer */
    size_t len;
} imap_span_t;

/* Gathers one command: line CRLF literal-bytes line CRLF literal-bytes ... line. The
 * buffer holds the command as it came on the wire minus the final CRLF, so literal
 * announcements stay in place and are followed by CRLF and the literal's bytes. */
typedef struct imap_cmdbuf {
    imap_cmdbuf_limits_t lim;
    buf_t buf;
    size_t line_bytes;                    /* bytes outside literals so far */
    imap_span_t lits[IMAP_MAX_LITERALS_CAP];
    unsigned n_lits;
    uint64_t want;    /* literal bytes still expected; 0 = a line is expected */
    bool nonsync;     /* the literal being read was announced as {N+} */
    bool lost_sync;   /* after -1: the client goes on sending a refused {N+} literal */
    uint64_t skip;    /* ... of this many bytes, then the rest of its line: drop them
                       * all, or close the connection (RFC 7888 section 4) */
} imap_cmdbuf_t;

void imap_cmdbuf_init(imap_cmdbuf_t *cb, const imap_cmdbuf_limits_t *lim);
void imap_cmdbuf_free(imap_cmdbuf_t *cb);
/* Forgets the command gathered so far (after it was parsed, or after an error). */
void imap_cmdbuf_reset(imap_cmdbuf_t *cb);
/* Takes one line without its CRLF. 1 = the command is complete in cb->buf; 0 = a literal
 * of cb->want bytes follows: when !cb->nonsync send "+ " first, then hand over the bytes
 * with imap_cmdbuf_literal(); -1 = refused (*error_r): answer BAD (the tag can be read
 * with imap_parse_tag() from cb->buf), check cb->lost_sync, then reset. */
int imap_cmdbuf_line(imap_cmdbuf_t *cb, const char *line, size_t len, const char **error_r);
/* Takes literal bytes, at most cb->want of them (pieces of any size). Returns 0 (more
 * literal bytes, or the next line once cb->want is 0), or -1 when given more than
 * cb->want bytes or no literal is expected. */
int imap_cmdbuf_literal(imap_cmdbuf_t *cb, const char *data, size_t len, const char **error_r);

/* ---- the command parser ------------------------------------------------------------ */

#define IMAP_PARSE_MAX_DEPTH 32   /* nesting of parenthesised lists */
#define IMAP_PARSE_MAX_ARGS 10000 /* arguments in one command, list members included */
#define IMAP_NAME_MAX 31          /* longest command name accepted */

typedef enum imap_arg_type {
    IMAP_ARG_ATOM,
    IMAP_ARG_NUMBER,  /* an atom of digits only, value in num (up to 2^64-1) */
    IMAP_ARG_QUOTED,
    IMAP_ARG_LITERAL,
    IMAP_ARG_LIST,
    IMAP_ARG_NIL,     /* the atom NIL, any case */
} imap_arg_type_t;

typedef struct imap_arg {
    imap_arg_type_t type;
    const char *raw;     /* the argument as it stands in the command */
    size_t raw_len;
    const char *str;     /* ATOM, NUMBER, NIL: = raw; QUOTED: unescaped, NUL-terminated;
                          * LITERAL: its bytes in the command buffer (may hold NUL) */
    size_t len;
    uint64_t num;        /* NUMBER */
    struct imap_arg *list; /* LIST: its members */
    size_t n;
} imap_arg_t;

typedef struct imap_mem imap_mem_t; /* storage of a parsed command's tree */

typedef struct imap_command {
    const char *tag;   /* points into the command buffer */
    size_t tag_len;
    char name[IMAP_NAME_MAX + 1]; /* upper case; for "UID FETCH" it is "FETCH" */
    bool uid;
    imap_arg_t *args;  /* the arguments after the name */
    size_t n_args;
    imap_mem_t *mem;
} imap_command_t;

/* Parses an assembled command (imap_cmdbuf_t.buf). Atoms that start with BODY[,
 * BODY.PEEK[, BINARY[, BINARY.PEEK[ or BINARY.SIZE[ run to the matching "]" and take the
 * "<...>" after it, so a FETCH attribute such as BODY[HEADER.FIELDS (A B)]<0.100> is one
 * atom. Returns 1, 0 when the command ends inside an announced literal, or -1 (*error_r).
 * The command points into data: keep data until imap_command_free(). */
int imap_parse_command(const char *data, size_t len, imap_command_t *cmd, const char **error_r);
void imap_command_free(imap_command_t *cmd);
/* The tag at the start of a command, for a BAD reply to a command that did not parse.
 * Returns its length, 0 when there is no valid tag. */
size_t imap_parse_tag(const char *data, size_t len);

/* An astring argument (atom, number, NIL as the atom "NIL", quoted or literal). */
bool imap_arg_astring(const imap_arg_t *arg, const char **s_r, size_t *len_r);
/* An atom argument (ATOM, NUMBER or NIL) equal to word, case-insensitive. */
bool imap_arg_is_word(const imap_arg_t *arg, const char *word);

/* ---- sequence sets (RFC 3501 seq-set) ---------------------------------------------- */

#define IMAP_SEQ_STAR UINT32_MAX /* "*": the largest number in use */

typedef struct imap_range {
    uint32_t lo, hi; /* as given: lo may be above hi, either may be IMAP_SEQ_STAR */
} imap_range_t;

typedef struct imap_seqset {
    imap_range_t *r;
    size_t n, cap;
} imap_seqset_t;

void imap_seqset_init(imap_seqset_t *s);
void imap_seqset_free(imap_seqset_t *s);
/* Appends a range; 0, or -1 when memory runs out. */
int imap_seqset_add(imap_seqset_t *s, uint32_t lo, uint32_t hi);
/* Parses text into out (emptied first). "$" (RFC 5182) is refused. 1 or -1. */
int imap_seqset_parse(const char *text, size_t len, imap_seqset_t *out, const char **error_r);
/* Whether n is in the set, "*" being max (the message count or the highest UID). */
bool imap_seqset_contains(const imap_seqset_t *s, uint32_t n, uint32_t max);
/* The set with "*" resolved to max, each range ordered and cut to 1..max, sorted and
 * merged. 0, or -1 when memory runs out. An empty mailbox (max 0) gives an empty set. */
int imap_seqset_resolve(const imap_seqset_t *s, uint32_t max, imap_seqset_t *out);

/* Walks the numbers of a resolved set once each, in increasing order. */
typedef struct imap_seqset_iter {
    const imap_seqset_t *set;
    size_t i;
    uint64_t next;
} imap_seqset_iter_t;

void imap_seqset_iter_init(imap_seqset_iter_t *it, const imap_seqset_t *resolved);
bool imap_seqset_iter_next(imap_seqset_iter_t *it, uint32_t *n_r);

/* ---- FETCH (RFC 3501 section 6.4.5, RFC 7162 section 3.1.4) ------------------------- */

typedef enum imap_fetch_kind {
    IMAP_FETCH_FLAGS,
    IMAP_FETCH_INTERNALDATE,
    IMAP_FETCH_RFC822_SIZE,
    IMAP_FETCH_ENVELOPE,
    IMAP_FETCH_BODY,          /* BODY without a section: the non-extensible structure */
    IMAP_FETCH_BODYSTRUCTURE,
    IMAP_FETCH_UID,
    IMAP_FETCH_MODSEQ,
    IMAP_FETCH_RFC822,        /* = BODY[], sets \Seen */
    IMAP_FETCH_RFC822_HEADER, /* = BODY.PEEK[HEADER] */
    IMAP_FETCH_RFC822_TEXT,   /* = BODY[TEXT], sets \Seen */
    IMAP_FETCH_BODY_SECTION,  /* BODY[section]<partial> or BODY.PEEK[...] */
} imap_fetch_kind_t;

typedef enum imap_section_spec {
    IMAP_SECTION_ALL,         /* BODY[] or BODY[1.2] */
    IMAP_SECTION_HEADER,
    IMAP_SECTION_HEADER_FIELDS,
    IMAP_SECTION_HEADER_FIELDS_NOT,
    IMAP_SECTION_TEXT,
    IMAP_SECTION_MIME,
} imap_section_spec_t;

#define IMAP_SECTION_MAX_PARTS 32

typedef struct imap_fetch_item {
    imap_fetch_kind_t kind;
    bool peek;               /* BODY.PEEK[...]: \Seen is not set */
    char *section;           /* BODY_SECTION: "1.2.HEADER.FIELDS (FROM Subject)", "" for
                              * BODY[]; keywords upper case, field names as given */
    uint32_t parts[IMAP_SECTION_MAX_PARTS];
    size_t n_parts;
    imap_section_spec_t spec;
    char **fields;           /* HEADER.FIELDS[.NOT]: the field names */
    size_t n_fields;
    bool partial;            /* <origin.length> was given */
    uint32_t origin, length;
} imap_fetch_item_t;

typedef struct imap_fetch {
    imap_fetch_item_t *items;
    size_t n, cap;
    bool changedsince_set;  /* (CHANGEDSINCE n): MODSEQ is then added to the items */
    uint64_t changedsince;
} imap_fetch_t;

/* Parses the arguments after the sequence set: a fetch att, a macro (ALL, FAST, FULL) or
 * a parenthesised list of atts, then optionally the modifier list (CHANGEDSINCE n).
 * UID FETCH implies UID: the caller adds it (imap_fetch_has()). 1 or -1. */
int imap_fetch_parse(const imap_arg_t *args, size_t n, imap_fetch_t *out, const char **error_r);
void imap_fetch_free(imap_fetch_t *f);
bool imap_fetch_has(const imap_fetch_t *f, imap_fetch_kind_t kind);
/* Appends a plain item (one without a section). 0, or -1 when memory runs out. */
int imap_fetch_add(imap_fetch_t *f, imap_fetch_kind_t kind);
/* Whether fetching f marks the messages \Seen (BODY[...], RFC822, RFC822.TEXT). */
bool imap_fetch_sets_seen(const imap_fetch_t *f);

/* ---- flags ------------------------------------------------------------------------- */

enum imap_sysflag {
    IMAP_FLAG_SEEN = 1 << 0,
    IMAP_FLAG_ANSWERED = 1 << 1,
    IMAP_FLAG_FLAGGED = 1 << 2,
    IMAP_FLAG_DELETED = 1 << 3,
    IMAP_FLAG_DRAFT = 1 << 4,
};

/* The stored spelling of a system flag ("\Seen"), or NULL for an unknown one. */
const char *imap_sysflag_name(unsigned flag);
/* A system flag's bit from its name ("\seen", any case); 0 when it is none. */
unsigned imap_sysflag_parse(const char *s, size_t len);

typedef struct imap_flags {
    unsigned system;  /* enum imap_sysflag bits */
    char **keywords;  /* owned copies, as given */
    size_t n_keywords;
} imap_flags_t;

void imap_flags_free(imap_flags_t *f);
/* Parses a flag list: a LIST arg, or n single flag args. \Recent and other unknown
 * system flags are refused, keywords must be atoms. 1 or -1. */
int imap_flags_parse(const imap_arg_t *args, size_t n, imap_flags_t *out, const char **error_r);

/* ---- STORE (RFC 3501 section 6.4.6, UNCHANGEDSINCE of RFC 7162 section 3.1.3) -------- */

typedef enum imap_store_op { IMAP_STORE_REPLACE, IMAP_STORE_ADD, IMAP_STORE_REMOVE } imap_store_op_t;

typedef struct imap_store {
    imap_seqset_t set;
    bool unchangedsince_set;
    uint64_t unchangedsince;
    imap_store_op_t op;
    bool silent;
    imap_flags_t flags;
} imap_store_t;

/* Parses the arguments of STORE (after the name): seqset [(UNCHANGEDSINCE n)]
 * [+|-]FLAGS[.SILENT] flags. 1 or -1. */
int imap_store_parse(const imap_arg_t *args, size_t n, imap_store_t *out, const char **error_r);
void imap_store_free(imap_store_t *s);

/* ---- SEARCH (RFC 3501 section 6.4.4, MODSEQ of RFC 7162 section 3.1.5) -------------- */

typedef enum imap_search_kind {
    IMAP_SK_ALL,
    IMAP_SK_AND,       /* kids: a parenthesised group, or the program's top level */
    IMAP_SK_OR,        /* kids[0], kids[1] */
    IMAP_SK_NOT,       /* kids[0] */
    IMAP_SK_SEQSET,    /* set: message sequence numbers */
    IMAP_SK_UIDSET,    /* set: UIDs */
    IMAP_SK_FLAG,      /* str: "\Seen" (canonical spelling) or a keyword */
    IMAP_SK_RECENT,    /* the session's \Recent messages (imap_sql_ctx_t.recent); NEW, OLD */
    IMAP_SK_BEFORE, IMAP_SK_ON, IMAP_SK_SINCE,             /* day: internal date */
    IMAP_SK_SENTBEFORE, IMAP_SK_SENTON, IMAP_SK_SENTSINCE, /* day: Date: header */
    IMAP_SK_LARGER, IMAP_SK_SMALLER,                       /* num: RFC822.SIZE */
    IMAP_SK_HEADER,    /* field (FROM, TO, CC, BCC, SUBJECT or HEADER's), str: value */
    IMAP_SK_BODY,      /* str */
    IMAP_SK_TEXT,      /* str */
    IMAP_SK_MODSEQ,    /* num: matches a modseq >= num */
} imap_search_kind_t;

typedef struct imap_search_key {
    imap_search_kind_t kind;
    struct imap_search_key **kids;
    size_t n_kids;
    char *field;       /* HEADER */
    char *str;         /* NUL-free copies */
    uint64_t num;
    int64_t day;       /* days since 1970-01-01 */
    imap_seqset_t set;
} imap_search_key_t;

typedef struct imap_search {
    imap_search_key_t *root; /* an AND of the program's keys */
    bool badcharset;         /* after -1: answer NO [BADCHARSET (UTF-8 US-ASCII)] */
    bool has_modseq;         /* a MODSEQ key was used: the reply carries (MODSEQ n) */
    bool needs_decoded;      /* a text key (HEADER, SUBJECT, FROM, TO, CC, BCC, BODY, TEXT)
                                has a string that is not US-ASCII: see imap_search_sql */
} imap_search_t;

/* Parses the arguments of SEARCH (after the name): [CHARSET astring] key *(SP key).
 * Strings must be valid UTF-8 (US-ASCII for CHARSET US-ASCII) without NUL. 1 or -1. */
int imap_search_parse(const imap_arg_t *args, size_t n, imap_search_t *out, const char **error_r);
void imap_search_free(imap_search_t *s);

typedef struct imap_sql_params {
    char **v;     /* NUL-terminated text parameters */
    size_t n, cap;
} imap_sql_params_t;

void imap_sql_params_init(imap_sql_params_t *p);
void imap_sql_params_free(imap_sql_params_t *p);

/* Maps a set of message sequence numbers to the UIDs of those messages (the session holds
 * the sequence -> UID map), into uids_r as single UIDs or ranges (no "*"). 0, or -1 with
 * *error_r (e.g. a number past the message count). */
typedef int (*imap_seq_to_uids_cb)(void *ctx, const imap_seqset_t *seqs, imap_seqset_t *uids_r,
                                   const char **error_r);

typedef struct imap_sql_ctx {
    int first_param;            /* number of the first $k placeholder */
    uint32_t uid_max;           /* resolves "*" in UID sets: the highest UID in the mailbox */
    imap_seq_to_uids_cb seq_to_uids;
    void *cb_ctx;
    const imap_seqset_t *recent; /* the UIDs \Recent for this session (resolved), or NULL */
} imap_sql_ctx_t;

/* Appends to where a boolean SQL expression over "messages m" (columns uid, internal_date,
 * size, flags text[], raw bytea, modseq, hdr_date, search_headers, search_body) that
 * holds for the messages the program matches, and its parameters to params ($k from
 * ctx->first_param; every parameter carries its own cast, so PQprepare needs no types).
 * A text key whose string is US-ASCII is matched against the raw bytes read as Latin-1,
 * so any content works (NUL bytes included); ASCII letters match in any case;
 * MIME-encoded text (base64, quoted-printable, RFC 2047 words) is not decoded (RFC 3501
 * section 6.4.4 asks for decoding only in a charset other than US-ASCII). A text key
 * whose string is not US-ASCII (needs_decoded) is matched against the decoded text of
 * migration 0009 (search_headers for HEADER/FROM/..., search_body for BODY, both for
 * TEXT; letters in any case as the columns' collation folds them), and against the raw
 * bytes, as above, for a message whose decoded text is not computed (search_body NULL):
 * the caller fills those in first. HEADER/FROM/... look at the top-level header fields
 * only, BODY after the first empty line (raw) or at the text parts (decoded), TEXT
 * everywhere.
 * Dates are UTC calendar days; a message without a Date: header matches no SENT* key.
 * RECENT is always false (Postern keeps no \Recent), so NEW matches nothing and OLD
 * everything. Returns 0, or -1 (*error_r). */
int imap_search_sql(const imap_search_t *s, const imap_sql_ctx_t *ctx, buf_t *where,
                    imap_sql_params_t *params, const char **error_r);

/* ---- dates (RFC 3501 date and date-time) ------------------------------------------- */

#define IMAP_DATETIME_LEN 27 /* "05-Jan-2024 10:00:00 +0100" and NUL */

/* "d-Mon-yyyy" or "dd-Mon-yyyy" (the caller strips quotes: an astring arg) to days since
 * 1970-01-01. 1 or -1. */
int imap_date_parse(const char *s, size_t len, int64_t *day_r);
/* "dd-Mon-yyyy hh:mm:ss +zzzz" (date-day-fixed: " d" or "dd") to a Unix time and the
 * zone's offset in minutes. 1 or -1. */
int imap_datetime_parse(const char *s, size_t len, time_t *t_r, int *tz_min_r);
/* Formats t as seen in the zone tz_min minutes east of UTC, for INTERNALDATE (without
 * the quotes). */
void imap_datetime_format(time_t t, int tz_min, char out[IMAP_DATETIME_LEN]);

/* ---- mailbox names (RFC 3501 section 5.1) ------------------------------------------ */

/* Whether name is valid modified UTF-7 (section 5.1.3); with utf8 non-NULL the decoded
 * name is appended to it. 1 or -1 (*error_r). */
int imap_mutf7_decode(const char *name, size_t len, buf_t *utf8, const char **error_r);
/* Appends name to out with a leading "INBOX" component (any case) spelt "INBOX". 0/-1. */
int imap_mailbox_normalize(const char *name, size_t len, buf_t *out);
/* LIST pattern matching with hierarchy delimiter "/": "*" matches anything, "%" anything
 * but "/". A first component INBOX in name matches in any case. */
bool imap_list_match(const char *pattern, const char *name);

/* ---- response strings -------------------------------------------------------------- */

/* Appends s as an atom when it is one (and not NIL), else as a quoted string when it is
 * short 7-bit text without CR, LF or NUL, else as a literal {n} CRLF bytes. 0 or -1. */
int imap_append_astring(buf_t *out, const char *s, size_t len);
/* As imap_append_astring() but always a string (quoted or literal), NIL for s == NULL. */
int imap_append_nstring(buf_t *out, const char *s, size_t len);

#endif
