/* imapd's parsing layer: see parse.h. RFC 3501 section 9 is the grammar throughout. */
#include "parse.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ERR(msg) (*error_r = (msg), -1)

/* ---- small helpers ----------------------------------------------------------------- */

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Decimal digits only, at most 2^64-1. */
static bool parse_u64(const char *s, size_t len, uint64_t *v_r)
{
    uint64_t v = 0;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_digit((unsigned char)s[i]))
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *v_r = v;
    return true;
}

/* RFC 3501 ATOM-CHAR: any CHAR except atom-specials "(" ")" "{" SP CTL "%" "*" DQUOTE
 * "\" "]". */
static bool atom_char_strict(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("(){%*\"\\]", c);
}

/* What the tokenizer takes inside an atom: ATOM-CHAR plus "]" (ASTRING-CHAR), and the
 * list-wildcards "%" and "*" (sequence sets, LIST patterns). */
static bool atom_char(unsigned char c)
{
    return atom_char_strict(c) || c == ']' || c == '%' || c == '*';
}

/* ---- command assembly -------------------------------------------------------------- */

int imap_literal_at_end(const char *line, size_t len, uint64_t *n_r, bool *nonsync_r)
{
    if (len < 2 || line[len - 1] != '}')
        return 0;
    size_t end = len - 1, i = end;
    while (i > 0 && line[i - 1] != '{') {
        char c = line[i - 1];
        if (c == ' ' || c == '"' || c == '(' || c == ')')
            return 0; /* no "{" in the last token: a "}" ending an atom */
        i--;
    }
    if (i == 0)
        return 0;
    bool nonsync = end > i && line[end - 1] == '+';
    size_t digits_end = nonsync ? end - 1 : end;
    if (!parse_u64(line + i, digits_end - i, n_r))
        return -1;
    *nonsync_r = nonsync;
    return 1;
}

void imap_cmdbuf_init(imap_cmdbuf_t *cb, const imap_cmdbuf_limits_t *lim)
{
    memset(cb, 0, sizeof *cb);
    cb->lim = *lim;
    if (cb->lim.max_literals > IMAP_MAX_LITERALS_CAP)
        cb->lim.max_literals = IMAP_MAX_LITERALS_CAP;
    buf_init(&cb->buf);
}

void imap_cmdbuf_free(imap_cmdbuf_t *cb)
{
    buf_free(&cb->buf);
}

void imap_cmdbuf_reset(imap_cmdbuf_t *cb)
{
    /* A long command (an APPEND, a large SEARCH) does not leave its buffer with the idle
     * session. */
    if (cb->buf.cap > IMAP_CMDBUF_KEEP)
        buf_free(&cb->buf);
    else
        buf_reset(&cb->buf);
    cb->line_bytes = 0;
    cb->n_lits = 0;
    cb->want = 0;
    cb->nonsync = false;
    cb->lost_sync = false;
    cb->skip = 0;
}

/* Refuses a literal: a {N+} one will be sent anyway (RFC 7888 section 4). */
static int cmdbuf_refuse(imap_cmdbuf_t *cb, uint64_t n, bool nonsync, const char *msg,
                         const char **error_r)
{
    cb->lost_sync = nonsync;
    cb->skip = nonsync ? n : 0;
    return ERR(msg);
}

int imap_cmdbuf_line(imap_cmdbuf_t *cb, const char *line, size_t len, const char **error_r)
{
    if (cb->want > 0)
        return ERR("Literal data expected");
    if (len > cb->lim.max_line || cb->line_bytes + len > cb->lim.max_line)
        return ERR("Command line too long");
    uint64_t n = 0;
    bool nonsync = false;
    int rc = imap_literal_at_end(line, len, &n, &nonsync);
    if (rc < 0)
        return ERR("Invalid literal announcement");
    if (buf_append(&cb->buf, line, len) < 0)
        return ERR("Out of memory");
    cb->line_bytes += len;
    if (rc == 0)
        return 1;
    if (cb->n_lits >= cb->lim.max_literals)
        return cmdbuf_refuse(cb, n, nonsync, "Too many literals in command", error_r);
    if (n > cb->lim.max_literal || n > SIZE_MAX / 2)
        return cmdbuf_refuse(cb, n, nonsync, "Literal too large", error_r);
    if (buf_append(&cb->buf, "\r\n", 2) < 0)
        return ERR("Out of memory");
    cb->lits[cb->n_lits].off = cb->buf.len;
    cb->lits[cb->n_lits].len = (size_t)n;
    cb->n_lits++;
    cb->want = n;
    cb->nonsync = nonsync;
    return 0;
}

int imap_cmdbuf_literal(imap_cmdbuf_t *cb, const char *data, size_t len, const char **error_r)
{
    if (len > cb->want)
        return ERR("More literal data than announced");
    if (buf_append(&cb->buf, data, len) < 0)
        return ERR("Out of memory");
    cb->want -= len;
    return 0;
}

/* ---- the command parser: storage --------------------------------------------------- */

struct imap_mem {
    struct imap_mem *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

static void *mem_alloc(imap_mem_t **head, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    imap_mem_t *m = *head;
    if (!m || m->cap - m->used < size) {
        size_t cap = size > 4000 ? size : 4000;
        m = malloc(sizeof *m + cap);
        if (!m)
            return NULL;
        m->next = *head;
        m->used = 0;
        m->cap = cap;
        *head = m;
    }
    void *p = m->data + m->used;
    m->used += size;
    return p;
}

static void mem_free(imap_mem_t **head)
{
    while (*head) {
        imap_mem_t *next = (*head)->next;
        free(*head);
        *head = next;
    }
}

/* ---- the command parser: tokens ---------------------------------------------------- */

typedef struct pstate {
    const char *p, *end;
    imap_mem_t **mem;
    size_t n_args;
    const char *err;
} pstate_t;

static int perr(pstate_t *ps, const char *msg)
{
    ps->err = msg;
    return -1;
}

static bool bracket_prefix(const char *s, size_t len)
{
    static const char *const names[] = { "BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK",
                                         "BINARY.SIZE" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == len && strncasecmp(s, names[i], len) == 0)
            return true;
    return false;
}

/* Skips a section "[...]" (p at "["): quoted strings inside are skipped whole. */
static int skip_section(pstate_t *ps)
{
    const char *p = ps->p + 1;
    bool quoted = false;
    for (; p < ps->end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == 0)
            return perr(ps, "NUL byte in command");
        if (c < 0x20 || c >= 0x7f)
            return perr(ps, "Invalid character in section");
        if (quoted && c == '\\' && p + 1 < ps->end) {
            p++;
        } else if (c == '"') {
            quoted = !quoted;
        } else if (!quoted && c == '{') {
            return perr(ps, "Literal in section not supported");
        } else if (!quoted && c == ']') {
            ps->p = p + 1;
            return 1;
        }
    }
    return perr(ps, "Missing ']' in section");
}

static int read_atom(pstate_t *ps, imap_arg_t *arg)
{
    const char *start = ps->p;
    if (*ps->p == '\\')
        ps->p++; /* a flag: "\" atom */
    while (ps->p < ps->end) {
        unsigned char c = (unsigned char)*ps->p;
        if (c == '[' && bracket_prefix(start, (size_t)(ps->p - start))) {
            if (skip_section(ps) < 0)
                return -1;
            continue;
        }
        if (!atom_char(c))
            break;
        ps->p++;
    }
    size_t len = (size_t)(ps->p - start);
    if (len == 0 || (len == 1 && *start == '\\')) {
        unsigned char c = (unsigned char)*ps->p;
        if (c == 0)
            return perr(ps, "NUL byte in command");
        return perr(ps, c >= 0x80 ? "8-bit character in atom" : "Invalid character in atom");
    }
    arg->type = IMAP_ARG_ATOM;
    arg->str = start;
    arg->len = len;
    if (parse_u64(start, len, &arg->num))
        arg->type = IMAP_ARG_NUMBER;
    else if (len == 3 && strncasecmp(start, "NIL", 3) == 0)
        arg->type = IMAP_ARG_NIL;
    return 1;
}

static int read_quoted(pstate_t *ps, imap_arg_t *arg)
{
    const char *p = ps->p + 1;
    size_t n = 0;
    for (; p < ps->end && *p != '"'; p++, n++) {
        unsigned char c = (unsigned char)*p;
        if (c == 0)
            return perr(ps, "NUL byte in quoted string");
        if (c == '\r' || c == '\n')
            return perr(ps, "CR or LF in quoted string");
        if (c >= 0x80)
            return perr(ps, "8-bit character in quoted string");
        if (c == '\\') {
            if (p + 1 >= ps->end) {
                p = ps->end;
                break;
            }
            if (p[1] != '\\' && p[1] != '"')
                return perr(ps, "Invalid escape in quoted string");
            p++;
        }
    }
    if (p >= ps->end)
        return perr(ps, "Unterminated quoted string");
    char *s = mem_alloc(ps->mem, n + 1);
    if (!s)
        return perr(ps, "Out of memory");
    size_t k = 0;
    for (const char *q = ps->p + 1; q < p; q++)
        s[k++] = *q == '\\' ? *++q : *q;
    s[k] = '\0';
    arg->type = IMAP_ARG_QUOTED;
    arg->str = s;
    arg->len = k;
    ps->p = p + 1;
    return 1;
}

static int read_literal(pstate_t *ps, imap_arg_t *arg)
{
    const char *p = ps->p + 1, *digits = p;
    while (p < ps->end && is_digit((unsigned char)*p))
        p++;
    uint64_t n;
    if (!parse_u64(digits, (size_t)(p - digits), &n))
        return perr(ps, "Invalid literal");
    if (p < ps->end && *p == '+')
        p++;
    if (p >= ps->end || *p != '}')
        return perr(ps, "Invalid literal");
    p++;
    if (p == ps->end)
        return 0; /* CRLF and the bytes are still to come */
    if (ps->end - p < 2 || p[0] != '\r' || p[1] != '\n')
        return perr(ps, "Invalid literal");
    p += 2;
    if ((uint64_t)(ps->end - p) < n)
        return 0;
    arg->type = IMAP_ARG_LITERAL;
    arg->str = p;
    arg->len = (size_t)n;
    ps->p = p + n;
    return 1;
}

static int read_list(pstate_t *ps, imap_arg_t **list_r, size_t *n_r, unsigned depth);

static int read_arg(pstate_t *ps, imap_arg_t *arg, unsigned depth)
{
    memset(arg, 0, sizeof *arg);
    const char *start = ps->p;
    int rc;
    if (++ps->n_args > IMAP_PARSE_MAX_ARGS)
        return perr(ps, "Too many arguments");
    switch (*ps->p) {
    case '(':
        if (depth + 1 > IMAP_PARSE_MAX_DEPTH)
            return perr(ps, "Too deep nesting of parentheses");
        ps->p++;
        arg->type = IMAP_ARG_LIST;
        rc = read_list(ps, &arg->list, &arg->n, depth + 1);
        break;
    case '"':
        rc = read_quoted(ps, arg);
        break;
    case '{':
        rc = read_literal(ps, arg);
        break;
    default:
        rc = read_atom(ps, arg);
        break;
    }
    arg->raw = start;
    arg->raw_len = (size_t)(ps->p - start);
    if (rc > 0 && ps->p < ps->end && *ps->p != ' ' && *ps->p != ')')
        return perr(ps, "Missing space between arguments");
    return rc;
}

/* Reads arguments up to the ")" closing the list (depth > 0, p after "(") or up to the
 * end of the command (depth 0). */
static int read_list(pstate_t *ps, imap_arg_t **list_r, size_t *n_r, unsigned depth)
{
    imap_arg_t *tmp = NULL;
    size_t n = 0, cap = 0;
    int rc = 1;
    for (;;) {
        while (ps->p < ps->end && *ps->p == ' ')
            ps->p++;
        if (ps->p == ps->end) {
            if (depth > 0)
                rc = perr(ps, "Missing ')'");
            break;
        }
        if (*ps->p == ')') {
            if (depth == 0) {
                rc = perr(ps, "Unexpected ')'");
            } else {
                ps->p++;
            }
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            imap_arg_t *t = realloc(tmp, cap * sizeof *t);
            if (!t) {
                rc = perr(ps, "Out of memory");
                break;
            }
            tmp = t;
        }
        rc = read_arg(ps, &tmp[n], depth);
        if (rc <= 0)
            break;
        n++;
    }
    if (rc > 0) {
        *list_r = n ? mem_alloc(ps->mem, n * sizeof *tmp) : NULL;
        if (n && !*list_r)
            rc = perr(ps, "Out of memory");
        else if (n)
            memcpy(*list_r, tmp, n * sizeof *tmp);
        *n_r = n;
    }
    free(tmp);
    return rc;
}

/* ---- the command parser: tag, name, arguments -------------------------------------- */

static bool tag_char(unsigned char c)
{
    return (atom_char_strict(c) || c == ']') && c != '+';
}

size_t imap_parse_tag(const char *data, size_t len)
{
    size_t i = 0;
    while (i < len && tag_char((unsigned char)data[i]))
        i++;
    if (i == 0 || (i < len && data[i] != ' '))
        return 0;
    return i;
}

/* Reads a command name (letters and digits) into out, upper case. */
static int read_name(pstate_t *ps, char out[IMAP_NAME_MAX + 1])
{
    size_t n = 0;
    while (ps->p < ps->end && *ps->p != ' ') {
        unsigned char c = (unsigned char)*ps->p++;
        if (!isalnum(c) || n >= IMAP_NAME_MAX)
            return perr(ps, "Invalid command name");
        out[n++] = (char)toupper(c);
    }
    if (n == 0)
        return perr(ps, "Missing command name");
    out[n] = '\0';
    return 1;
}

static int skip_one_space(pstate_t *ps)
{
    if (ps->p < ps->end && *ps->p != ' ')
        return perr(ps, "Missing space");
    if (ps->p < ps->end)
        ps->p++;
    return 1;
}

static int parse_head(pstate_t *ps, imap_command_t *cmd)
{
    if (ps->p == ps->end || *ps->p == ' ')
        return perr(ps, "Missing tag");
    cmd->tag_len = imap_parse_tag(ps->p, (size_t)(ps->end - ps->p));
    if (cmd->tag_len == 0)
        return perr(ps, "Invalid tag");
    cmd->tag = ps->p;
    ps->p += cmd->tag_len;
    if (ps->p == ps->end)
        return perr(ps, "Missing command name");
    ps->p++;
    if (read_name(ps, cmd->name) < 0 || skip_one_space(ps) < 0)
        return -1;
    if (strcmp(cmd->name, "UID") != 0)
        return 1;
    cmd->uid = true;
    if (ps->p == ps->end)
        return perr(ps, "Missing command after UID");
    return read_name(ps, cmd->name) < 0 ? -1 : skip_one_space(ps);
}

int imap_parse_command(const char *data, size_t len, imap_command_t *cmd, const char **error_r)
{
    memset(cmd, 0, sizeof *cmd);
    pstate_t ps = { .p = data, .end = data + len, .mem = &cmd->mem };
    int rc = parse_head(&ps, cmd);
    if (rc > 0)
        rc = read_list(&ps, &cmd->args, &cmd->n_args, 0);
    if (rc <= 0) {
        imap_command_free(cmd);
        if (rc < 0)
            *error_r = ps.err;
    }
    return rc;
}

void imap_command_free(imap_command_t *cmd)
{
    mem_free(&cmd->mem);
    cmd->args = NULL;
    cmd->n_args = 0;
}

bool imap_arg_astring(const imap_arg_t *arg, const char **s_r, size_t *len_r)
{
    if (arg->type == IMAP_ARG_LIST)
        return false;
    *s_r = arg->str;
    *len_r = arg->len;
    return true;
}

bool imap_arg_is_word(const imap_arg_t *arg, const char *word)
{
    if (arg->type != IMAP_ARG_ATOM && arg->type != IMAP_ARG_NUMBER && arg->type != IMAP_ARG_NIL)
        return false;
    return strlen(word) == arg->len && strncasecmp(arg->str, word, arg->len) == 0;
}

/* ---- sequence sets ----------------------------------------------------------------- */

void imap_seqset_init(imap_seqset_t *s)
{
    memset(s, 0, sizeof *s);
}

void imap_seqset_free(imap_seqset_t *s)
{
    free(s->r);
    imap_seqset_init(s);
}

int imap_seqset_add(imap_seqset_t *s, uint32_t lo, uint32_t hi)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        imap_range_t *r = realloc(s->r, cap * sizeof *r);
        if (!r)
            return -1;
        s->r = r;
        s->cap = cap;
    }
    s->r[s->n].lo = lo;
    s->r[s->n].hi = hi;
    s->n++;
    return 0;
}

/* seq-number = nz-number / "*"; nz-number = digit-nz *DIGIT, at most 4294967295. */
static bool seq_number(const char **p, const char *end, uint32_t *v_r)
{
    if (*p < end && **p == '*') {
        (*p)++;
        *v_r = IMAP_SEQ_STAR;
        return true;
    }
    const char *s = *p;
    while (*p < end && is_digit((unsigned char)**p))
        (*p)++;
    uint64_t v;
    if (*p == s || *s == '0' || !parse_u64(s, (size_t)(*p - s), &v) || v > UINT32_MAX)
        return false;
    *v_r = (uint32_t)v;
    return true;
}

int imap_seqset_parse(const char *text, size_t len, imap_seqset_t *out, const char **error_r)
{
    const char *p = text, *end = text + len;
    out->n = 0;
    if (len == 1 && *text == '$')
        return ERR("Saved search results ($) are not supported");
    for (;;) {
        uint32_t lo, hi;
        if (!seq_number(&p, end, &lo))
            return ERR("Invalid sequence set");
        hi = lo;
        if (p < end && *p == ':') {
            p++;
            if (!seq_number(&p, end, &hi))
                return ERR("Invalid sequence set");
        }
        if (imap_seqset_add(out, lo, hi) < 0)
            return ERR("Out of memory");
        if (p == end)
            return 1;
        if (*p++ != ',')
            return ERR("Invalid sequence set");
    }
}

static void range_resolve(const imap_range_t *r, uint32_t max, uint32_t *lo_r, uint32_t *hi_r)
{
    uint32_t a = r->lo == IMAP_SEQ_STAR ? max : r->lo;
    uint32_t b = r->hi == IMAP_SEQ_STAR ? max : r->hi;
    *lo_r = a < b ? a : b;
    *hi_r = a < b ? b : a;
}

bool imap_seqset_contains(const imap_seqset_t *s, uint32_t n, uint32_t max)
{
    for (size_t i = 0; i < s->n; i++) {
        uint32_t lo, hi;
        range_resolve(&s->r[i], max, &lo, &hi);
        if (n >= lo && n <= hi)
            return true;
    }
    return false;
}

static int range_cmp(const void *a, const void *b)
{
    const imap_range_t *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

int imap_seqset_resolve(const imap_seqset_t *s, uint32_t max, imap_seqset_t *out)
{
    out->n = 0;
    for (size_t i = 0; i < s->n; i++) {
        uint32_t lo, hi;
        range_resolve(&s->r[i], max, &lo, &hi);
        if (lo == 0)
            lo = 1;
        if (hi > max)
            hi = max;
        if (lo <= hi && imap_seqset_add(out, lo, hi) < 0)
            return -1;
    }
    if (out->n > 1)
        qsort(out->r, out->n, sizeof *out->r, range_cmp);
    size_t k = 0;
    for (size_t i = 0; i < out->n; i++) {
        if (k > 0 && (uint64_t)out->r[i].lo <= (uint64_t)out->r[k - 1].hi + 1) {
            if (out->r[i].hi > out->r[k - 1].hi)
                out->r[k - 1].hi = out->r[i].hi;
        } else {
            out->r[k++] = out->r[i];
        }
    }
    out->n = k;
    return 0;
}

void imap_seqset_iter_init(imap_seqset_iter_t *it, const imap_seqset_t *resolved)
{
    it->set = resolved;
    it->i = 0;
    it->next = resolved->n ? resolved->r[0].lo : 0;
}

bool imap_seqset_iter_next(imap_seqset_iter_t *it, uint32_t *n_r)
{
    while (it->i < it->set->n) {
        const imap_range_t *r = &it->set->r[it->i];
        if (it->next < r->lo)
            it->next = r->lo;
        if (it->next <= r->hi) {
            *n_r = (uint32_t)it->next++;
            return true;
        }
        it->i++;
    }
    return false;
}

/* ---- flags ------------------------------------------------------------------------- */

static const struct {
    unsigned bit;
    const char *name;
} sysflags[] = {
    { IMAP_FLAG_SEEN, "\\Seen" },       { IMAP_FLAG_ANSWERED, "\\Answered" },
    { IMAP_FLAG_FLAGGED, "\\Flagged" }, { IMAP_FLAG_DELETED, "\\Deleted" },
    { IMAP_FLAG_DRAFT, "\\Draft" },
};

const char *imap_sysflag_name(unsigned flag)
{
    for (size_t i = 0; i < sizeof sysflags / sizeof sysflags[0]; i++)
        if (sysflags[i].bit == flag)
            return sysflags[i].name;
    return NULL;
}

unsigned imap_sysflag_parse(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof sysflags / sizeof sysflags[0]; i++)
        if (strlen(sysflags[i].name) == len && strncasecmp(sysflags[i].name, s, len) == 0)
            return sysflags[i].bit;
    return 0;
}

void imap_flags_free(imap_flags_t *f)
{
    for (size_t i = 0; i < f->n_keywords; i++)
        free(f->keywords[i]);
    free(f->keywords);
    memset(f, 0, sizeof *f);
}

/* flag-keyword = atom (RFC 3501 section 9). */
static bool is_keyword(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!atom_char_strict((unsigned char)s[i]))
            return false;
    return true;
}

static int flags_add_keyword(imap_flags_t *f, const char *s, size_t len)
{
    for (size_t i = 0; i < f->n_keywords; i++)
        if (strlen(f->keywords[i]) == len && memcmp(f->keywords[i], s, len) == 0)
            return 0;
    char **k = realloc(f->keywords, (f->n_keywords + 1) * sizeof *k);
    if (!k)
        return -1;
    f->keywords = k;
    if (!(k[f->n_keywords] = strndup(s, len)))
        return -1;
    f->n_keywords++;
    return 0;
}

static int flag_one(const imap_arg_t *a, imap_flags_t *out, const char **error_r)
{
    if (a->type != IMAP_ARG_ATOM && a->type != IMAP_ARG_NUMBER && a->type != IMAP_ARG_NIL)
        return ERR("Invalid flag");
    if (a->str[0] == '\\') {
        unsigned bit = imap_sysflag_parse(a->str, a->len);
        if (a->len == 7 && strncasecmp(a->str, "\\Recent", 7) == 0)
            return ERR("\\Recent can not be changed");
        if (!bit)
            return ERR("Invalid system flag");
        out->system |= bit;
        return 1;
    }
    if (!is_keyword(a->str, a->len))
        return ERR("Invalid flag keyword");
    if (flags_add_keyword(out, a->str, a->len) < 0)
        return ERR("Out of memory");
    return 1;
}

int imap_flags_parse(const imap_arg_t *args, size_t n, imap_flags_t *out, const char **error_r)
{
    memset(out, 0, sizeof *out);
    if (n == 1 && args[0].type == IMAP_ARG_LIST) {
        n = args[0].n;
        args = args[0].list;
    } else if (n == 0) {
        return ERR("Missing flags");
    }
    for (size_t i = 0; i < n; i++) {
        if (flag_one(&args[i], out, error_r) < 0) {
            imap_flags_free(out);
            return -1;
        }
    }
    return 1;
}

/* ---- STORE ------------------------------------------------------------------------- */

static bool arg_atomish(const imap_arg_t *a)
{
    return a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_NUMBER || a->type == IMAP_ARG_NIL;
}

/* mod-sequence-valzer: 0 to 2^63-1 (RFC 7162 section 7). */
static bool arg_modseq(const imap_arg_t *a, uint64_t *v_r)
{
    if (a->type != IMAP_ARG_NUMBER || a->num > (uint64_t)INT64_MAX)
        return false;
    *v_r = a->num;
    return true;
}

static int store_modifiers(const imap_arg_t *list, imap_store_t *out, const char **error_r)
{
    for (size_t i = 0; i < list->n; i += 2) {
        if (!imap_arg_is_word(&list->list[i], "UNCHANGEDSINCE") || out->unchangedsince_set)
            return ERR("Unknown STORE modifier");
        if (i + 1 >= list->n || !arg_modseq(&list->list[i + 1], &out->unchangedsince))
            return ERR("Invalid UNCHANGEDSINCE value");
        out->unchangedsince_set = true;
    }
    return 1;
}

static int store_item(const imap_arg_t *a, imap_store_t *out, const char **error_r)
{
    if (!arg_atomish(a))
        return ERR("Invalid STORE data item");
    const char *s = a->str;
    size_t len = a->len;
    out->op = IMAP_STORE_REPLACE;
    if (len > 0 && (*s == '+' || *s == '-')) {
        out->op = *s == '+' ? IMAP_STORE_ADD : IMAP_STORE_REMOVE;
        s++;
        len--;
    }
    if (len == 12 && strncasecmp(s, "FLAGS.SILENT", 12) == 0)
        out->silent = true;
    else if (len != 5 || strncasecmp(s, "FLAGS", 5) != 0)
        return ERR("Invalid STORE data item");
    return 1;
}

static int store_parse(const imap_arg_t *args, size_t n, imap_store_t *out, const char **error_r)
{
    size_t i = 0;
    if (n < 3 || !arg_atomish(&args[0]))
        return ERR("Missing STORE arguments");
    if (imap_seqset_parse(args[0].str, args[0].len, &out->set, error_r) < 0)
        return -1;
    i = 1;
    if (args[i].type == IMAP_ARG_LIST) {
        if (store_modifiers(&args[i], out, error_r) < 0)
            return -1;
        i++;
    }
    if (i + 1 >= n)
        return ERR("Missing STORE arguments");
    if (store_item(&args[i], out, error_r) < 0)
        return -1;
    i++;
    if (n - i > 1 && args[i].type == IMAP_ARG_LIST)
        return ERR("Invalid flag list");
    return imap_flags_parse(args + i, n - i, &out->flags, error_r);
}

int imap_store_parse(const imap_arg_t *args, size_t n, imap_store_t *out, const char **error_r)
{
    memset(out, 0, sizeof *out);
    imap_seqset_init(&out->set);
    if (store_parse(args, n, out, error_r) < 0) {
        imap_store_free(out);
        return -1;
    }
    return 1;
}

void imap_store_free(imap_store_t *s)
{
    imap_seqset_free(&s->set);
    imap_flags_free(&s->flags);
}

/* ---- FETCH ------------------------------------------------------------------------- */

void imap_fetch_free(imap_fetch_t *f)
{
    for (size_t i = 0; i < f->n; i++) {
        imap_fetch_item_t *it = &f->items[i];
        free(it->section);
        for (size_t k = 0; k < it->n_fields; k++)
            free(it->fields[k]);
        free(it->fields);
    }
    free(f->items);
    memset(f, 0, sizeof *f);
}

static imap_fetch_item_t *fetch_new(imap_fetch_t *f)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        imap_fetch_item_t *items = realloc(f->items, cap * sizeof *items);
        if (!items)
            return NULL;
        f->items = items;
        f->cap = cap;
    }
    imap_fetch_item_t *it = &f->items[f->n++];
    memset(it, 0, sizeof *it);
    return it;
}

int imap_fetch_add(imap_fetch_t *f, imap_fetch_kind_t kind)
{
    imap_fetch_item_t *it = fetch_new(f);
    if (!it)
        return -1;
    it->kind = kind;
    return 0;
}

bool imap_fetch_has(const imap_fetch_t *f, imap_fetch_kind_t kind)
{
    for (size_t i = 0; i < f->n; i++)
        if (f->items[i].kind == kind)
            return true;
    return false;
}

bool imap_fetch_sets_seen(const imap_fetch_t *f)
{
    for (size_t i = 0; i < f->n; i++) {
        const imap_fetch_item_t *it = &f->items[i];
        if (it->kind == IMAP_FETCH_RFC822 || it->kind == IMAP_FETCH_RFC822_TEXT ||
            (it->kind == IMAP_FETCH_BODY_SECTION && !it->peek))
            return true;
    }
    return false;
}

static const struct {
    const char *name;
    imap_fetch_kind_t kind;
} fetch_plain[] = {
    { "FLAGS", IMAP_FETCH_FLAGS },
    { "INTERNALDATE", IMAP_FETCH_INTERNALDATE },
    { "RFC822.SIZE", IMAP_FETCH_RFC822_SIZE },
    { "ENVELOPE", IMAP_FETCH_ENVELOPE },
    { "BODY", IMAP_FETCH_BODY },
    { "BODYSTRUCTURE", IMAP_FETCH_BODYSTRUCTURE },
    { "UID", IMAP_FETCH_UID },
    { "MODSEQ", IMAP_FETCH_MODSEQ },
    { "RFC822", IMAP_FETCH_RFC822 },
    { "RFC822.HEADER", IMAP_FETCH_RFC822_HEADER },
    { "RFC822.TEXT", IMAP_FETCH_RFC822_TEXT },
};

static bool word_eq(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

static bool starts_with_ci(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && strncasecmp(s, prefix, n) == 0;
}

/* A header field name from a header-list: an atom or a quoted string. */
static int section_field(const char **p, const char *end, buf_t *name)
{
    buf_reset(name);
    if (*p < end && **p == '"') {
        for ((*p)++; *p < end && **p != '"'; (*p)++) {
            if (**p == '\\' && *p + 1 < end)
                (*p)++;
            if (buf_append(name, *p, 1) < 0)
                return -1;
        }
        if (*p >= end)
            return -1;
        (*p)++;
    } else {
        const char *s = *p;
        while (*p < end && atom_char(**p) && **p != ']')
            (*p)++;
        if (buf_append(name, s, (size_t)(*p - s)) < 0)
            return -1;
    }
    /* RFC 5322 field-name: printable ASCII except ":" */
    for (size_t i = 0; i < name->len; i++)
        if (name->data[i] <= 0x20 || name->data[i] >= 0x7f || name->data[i] == ':')
            return -1;
    return name->len > 0 ? 0 : -1;
}

static int item_add_field(imap_fetch_item_t *it, const buf_t *name)
{
    char **f = realloc(it->fields, (it->n_fields + 1) * sizeof *f);
    if (!f)
        return -1;
    it->fields = f;
    if (!(f[it->n_fields] = strndup(name->data, name->len)))
        return -1;
    it->n_fields++;
    return 0;
}

/* header-list = "(" header-fld-name *(SP header-fld-name) ")", then the end. */
static int section_fields(const char *p, const char *end, imap_fetch_item_t *it,
                          const char **error_r)
{
    if (end - p < 2 || p[0] != ' ' || p[1] != '(')
        return ERR("HEADER.FIELDS needs a list of field names");
    p += 2;
    buf_t name;
    buf_init(&name);
    int rc = -1;
    for (;;) {
        if (section_field(&p, end, &name) < 0 || item_add_field(it, &name) < 0)
            break;
        if (p < end && *p == ' ') {
            p++;
            continue;
        }
        if (p + 1 == end && *p == ')')
            rc = 1;
        break;
    }
    buf_free(&name);
    return rc > 0 ? 1 : ERR("Invalid header field list");
}

/* section-part ["." section-text] / section-msgtext, between the brackets. */
static int section_parse(const char *p, const char *end, imap_fetch_item_t *it,
                         const char **error_r)
{
    while (p < end && is_digit((unsigned char)*p)) {
        uint32_t v;
        if (!seq_number(&p, end, &v) || it->n_parts == IMAP_SECTION_MAX_PARTS)
            return ERR("Invalid section part number");
        it->parts[it->n_parts++] = v;
        if (p == end)
            return 1;
        if (*p++ != '.')
            return ERR("Invalid section");
    }
    size_t len = (size_t)(end - p);
    if (len == 0)
        return it->n_parts ? ERR("Invalid section") : 1;
    if (word_eq(p, len, "HEADER")) {
        it->spec = IMAP_SECTION_HEADER;
    } else if (word_eq(p, len, "TEXT")) {
        it->spec = IMAP_SECTION_TEXT;
    } else if (word_eq(p, len, "MIME")) {
        if (it->n_parts == 0)
            return ERR("MIME needs a part number");
        it->spec = IMAP_SECTION_MIME;
    } else if (starts_with_ci(p, len, "HEADER.FIELDS.NOT")) {
        it->spec = IMAP_SECTION_HEADER_FIELDS_NOT;
        return section_fields(p + 17, end, it, error_r);
    } else if (starts_with_ci(p, len, "HEADER.FIELDS")) {
        it->spec = IMAP_SECTION_HEADER_FIELDS;
        return section_fields(p + 13, end, it, error_r);
    } else {
        return ERR("Invalid section");
    }
    return 1;
}

static bool field_is_atom(const char *s)
{
    for (; *s; s++)
        if (!atom_char_strict((unsigned char)*s))
            return false;
    return true;
}

static const char *const spec_names[] = {
    [IMAP_SECTION_ALL] = "",
    [IMAP_SECTION_HEADER] = "HEADER",
    [IMAP_SECTION_HEADER_FIELDS] = "HEADER.FIELDS",
    [IMAP_SECTION_HEADER_FIELDS_NOT] = "HEADER.FIELDS.NOT",
    [IMAP_SECTION_TEXT] = "TEXT",
    [IMAP_SECTION_MIME] = "MIME",
};

/* The section text as echoed in the FETCH response. */
static int section_normalize(imap_fetch_item_t *it)
{
    buf_t b;
    buf_init(&b);
    int rc = 0;
    for (size_t i = 0; i < it->n_parts; i++)
        rc |= buf_printf(&b, "%s%u", i ? "." : "", (unsigned)it->parts[i]);
    if (it->spec != IMAP_SECTION_ALL)
        rc |= buf_printf(&b, "%s%s", it->n_parts ? "." : "", spec_names[it->spec]);
    for (size_t i = 0; i < it->n_fields; i++) {
        rc |= buf_puts(&b, i ? " " : " (");
        if (field_is_atom(it->fields[i]))
            rc |= buf_puts(&b, it->fields[i]);
        else
            rc |= imap_append_nstring(&b, it->fields[i], strlen(it->fields[i]));
    }
    if (it->n_fields)
        rc |= buf_puts(&b, ")");
    it->section = rc ? NULL : strndup(b.data, b.len);
    buf_free(&b);
    return it->section ? 0 : -1;
}

/* "<" number "." nz-number ">" */
static int partial_parse(const char *p, const char *end, imap_fetch_item_t *it,
                         const char **error_r)
{
    const char *dot = memchr(p, '.', (size_t)(end - p));
    uint64_t o, l;
    if (end - p < 5 || *p != '<' || end[-1] != '>' || !dot ||
        !parse_u64(p + 1, (size_t)(dot - p - 1), &o) ||
        !parse_u64(dot + 1, (size_t)(end - dot - 2), &l) || o > UINT32_MAX || l == 0 ||
        l > UINT32_MAX)
        return ERR("Invalid partial range");
    it->partial = true;
    it->origin = (uint32_t)o;
    it->length = (uint32_t)l;
    return 1;
}

/* BODY[section]<partial> or BODY.PEEK[section]<partial>. */
static int fetch_section(const char *s, size_t len, imap_fetch_t *f, const char **error_r)
{
    const char *open = memchr(s, '[', len), *end = s + len;
    const char *close = open ? memchr(open, ']', (size_t)(end - open)) : NULL;
    if (!close)
        return ERR("Unknown FETCH attribute");
    /* the tokenizer ended the section at the first "]" outside quotes: find that one */
    bool quoted = false;
    for (close = open + 1; close < end && (quoted || *close != ']'); close++) {
        if (*close == '\\' && quoted)
            close++;
        else if (*close == '"')
            quoted = !quoted;
    }
    if (close >= end)
        return ERR("Invalid section");
    bool peek = word_eq(s, (size_t)(open - s), "BODY.PEEK");
    if (!peek && !word_eq(s, (size_t)(open - s), "BODY"))
        return ERR("Unknown FETCH attribute");
    imap_fetch_item_t *it = fetch_new(f);
    if (!it)
        return ERR("Out of memory");
    it->kind = IMAP_FETCH_BODY_SECTION;
    it->peek = peek;
    if (section_parse(open + 1, close, it, error_r) < 0)
        return -1;
    if (close + 1 < end && partial_parse(close + 1, end, it, error_r) < 0)
        return -1;
    return section_normalize(it) < 0 ? ERR("Out of memory") : 1;
}

static int fetch_att(const imap_arg_t *a, imap_fetch_t *f, const char **error_r)
{
    if (a->type != IMAP_ARG_ATOM)
        return ERR("Invalid FETCH attribute");
    for (size_t i = 0; i < sizeof fetch_plain / sizeof fetch_plain[0]; i++)
        if (word_eq(a->str, a->len, fetch_plain[i].name))
            return imap_fetch_add(f, fetch_plain[i].kind) < 0 ? ERR("Out of memory") : 1;
    return fetch_section(a->str, a->len, f, error_r);
}

static int fetch_macro(const imap_arg_t *a, imap_fetch_t *f)
{
    static const imap_fetch_kind_t fast[] = { IMAP_FETCH_FLAGS, IMAP_FETCH_INTERNALDATE,
                                              IMAP_FETCH_RFC822_SIZE, IMAP_FETCH_ENVELOPE,
                                              IMAP_FETCH_BODY };
    size_t n;
    if (imap_arg_is_word(a, "FAST"))
        n = 3;
    else if (imap_arg_is_word(a, "ALL"))
        n = 4;
    else if (imap_arg_is_word(a, "FULL"))
        n = 5;
    else
        return 0;
    for (size_t i = 0; i < n; i++)
        if (imap_fetch_add(f, fast[i]) < 0)
            return -1;
    return 1;
}

/* fetch-modifiers (RFC 4466 section 2.4): CHANGEDSINCE (RFC 7162 section 3.1.4). */
static int fetch_modifiers(const imap_arg_t *list, imap_fetch_t *f, const char **error_r)
{
    if (list->type != IMAP_ARG_LIST || list->n == 0)
        return ERR("Invalid FETCH modifiers");
    for (size_t i = 0; i < list->n; i += 2) {
        if (!imap_arg_is_word(&list->list[i], "CHANGEDSINCE") || f->changedsince_set)
            return ERR("Unknown FETCH modifier");
        if (i + 1 >= list->n || !arg_modseq(&list->list[i + 1], &f->changedsince))
            return ERR("Invalid CHANGEDSINCE value");
        f->changedsince_set = true;
    }
    if (!imap_fetch_has(f, IMAP_FETCH_MODSEQ) && imap_fetch_add(f, IMAP_FETCH_MODSEQ) < 0)
        return ERR("Out of memory");
    return 1;
}

static int fetch_parse(const imap_arg_t *args, size_t n, imap_fetch_t *f, const char **error_r)
{
    if (n == 0)
        return ERR("Missing FETCH attributes");
    if (n > 2)
        return ERR("Too many FETCH arguments");
    int rc = fetch_macro(&args[0], f);
    if (rc < 0)
        return ERR("Out of memory");
    if (rc == 0 && args[0].type == IMAP_ARG_LIST) {
        if (args[0].n == 0)
            return ERR("Empty FETCH attribute list");
        for (size_t i = 0; i < args[0].n; i++)
            if (fetch_att(&args[0].list[i], f, error_r) < 0)
                return -1;
    } else if (rc == 0 && fetch_att(&args[0], f, error_r) < 0) {
        return -1;
    }
    return n == 2 ? fetch_modifiers(&args[1], f, error_r) : 1;
}

int imap_fetch_parse(const imap_arg_t *args, size_t n, imap_fetch_t *out, const char **error_r)
{
    memset(out, 0, sizeof *out);
    if (fetch_parse(args, n, out, error_r) < 0) {
        imap_fetch_free(out);
        return -1;
    }
    return 1;
}

/* ---- SEARCH: the program ----------------------------------------------------------- */

#define SEARCH_MAX_DEPTH 64 /* NOT and OR chains, parenthesised groups */

typedef struct sstate {
    const imap_arg_t *args;
    size_t n, i;
    bool ascii; /* CHARSET US-ASCII */
    imap_search_t *out;
    const char *err;
} sstate_t;

static void key_free(imap_search_key_t *k)
{
    if (!k)
        return;
    for (size_t i = 0; i < k->n_kids; i++)
        key_free(k->kids[i]);
    free(k->kids);
    free(k->field);
    free(k->str);
    imap_seqset_free(&k->set);
    free(k);
}

void imap_search_free(imap_search_t *s)
{
    key_free(s->root);
    s->root = NULL;
}

static imap_search_key_t *key_new(imap_search_kind_t kind)
{
    imap_search_key_t *k = calloc(1, sizeof *k);
    if (k)
        k->kind = kind;
    return k;
}

static int key_add_kid(imap_search_key_t *k, imap_search_key_t *kid)
{
    imap_search_key_t **kids = realloc(k->kids, (k->n_kids + 1) * sizeof *kids);
    if (!kids)
        return -1;
    k->kids = kids;
    kids[k->n_kids++] = kid;
    return 0;
}

static int serr(sstate_t *ss, const char *msg)
{
    ss->err = msg;
    return -1;
}

/* Strict UTF-8 (RFC 3629): no overlongs, no surrogates, nothing past U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n = c < 0x80 ? 0 : c >= 0xc2 && c < 0xe0 ? 1 : (c & 0xf0) == 0xe0 ? 2
                 : c >= 0xf0 && c < 0xf5 ? 3 : 9;
        if (n == 9 || n >= len - i)
            return false;
        if (n && ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f) ||
                  (c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f)))
            return false;
        for (size_t k = 1; k <= n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        i += n + 1;
    }
    return true;
}

static const imap_arg_t *next_arg(sstate_t *ss)
{
    return ss->i < ss->n ? &ss->args[ss->i++] : NULL;
}

/* An astring argument as a NUL-terminated copy, checked against the charset. */
static int next_string(sstate_t *ss, char **s_r)
{
    const imap_arg_t *a = next_arg(ss);
    const char *s;
    size_t len;
    if (!a || !imap_arg_astring(a, &s, &len))
        return serr(ss, "Missing search string");
    if (memchr(s, '\0', len))
        return serr(ss, "NUL byte in search string");
    for (size_t i = 0; ss->ascii && i < len; i++)
        if ((unsigned char)s[i] >= 0x80)
            return serr(ss, "8-bit character in US-ASCII search string");
    if (!utf8_valid((const unsigned char *)s, len))
        return serr(ss, "Invalid UTF-8 in search string");
    if (!(*s_r = strndup(s, len)))
        return serr(ss, "Out of memory");
    return 1;
}

static int next_number(sstate_t *ss, uint64_t max, uint64_t *v_r)
{
    const imap_arg_t *a = next_arg(ss);
    if (!a || a->type != IMAP_ARG_NUMBER || a->num > max)
        return serr(ss, "Invalid number");
    *v_r = a->num;
    return 1;
}

static int next_date(sstate_t *ss, int64_t *day_r)
{
    const imap_arg_t *a = next_arg(ss);
    const char *s;
    size_t len;
    if (!a || !imap_arg_astring(a, &s, &len) || imap_date_parse(s, len, day_r) < 0)
        return serr(ss, "Invalid date");
    return 1;
}

static int next_flag(sstate_t *ss, imap_search_key_t *k)
{
    const imap_arg_t *a = next_arg(ss);
    if (!a || !arg_atomish(a) || !is_keyword(a->str, a->len))
        return serr(ss, "Invalid keyword");
    return (k->str = strndup(a->str, a->len)) ? 1 : serr(ss, "Out of memory");
}

/* MODSEQ [entry-name entry-type-req] mod-sequence-valzer (RFC 7162 section 3.1.5). The
 * entry is accepted and the message's own mod-sequence is compared (section 3.1.5 lets a
 * server without per-flag mod-sequences do so). */
static int next_modseq(sstate_t *ss, imap_search_key_t *k)
{
    if (ss->i < ss->n && ss->args[ss->i].type == IMAP_ARG_QUOTED) {
        ss->i++;
        const imap_arg_t *t = next_arg(ss);
        if (!t || !(imap_arg_is_word(t, "priv") || imap_arg_is_word(t, "shared") ||
                    imap_arg_is_word(t, "all")))
            return serr(ss, "Invalid MODSEQ entry type");
    }
    ss->out->has_modseq = true;
    return next_number(ss, (uint64_t)INT64_MAX, &k->num);
}

static int search_key(sstate_t *ss, unsigned depth, imap_search_key_t **key_r);

static int key_kids(sstate_t *ss, unsigned depth, imap_search_key_t *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        imap_search_key_t *kid = NULL;
        if (search_key(ss, depth + 1, &kid) < 0) {
            key_free(kid);
            return -1;
        }
        if (key_add_kid(k, kid) < 0) {
            key_free(kid);
            return serr(ss, "Out of memory");
        }
    }
    return 1;
}

/* A parenthesised group: the list's members are a program of their own. */
static int key_group(sstate_t *ss, unsigned depth, const imap_arg_t *list, imap_search_key_t *k)
{
    if (list->n == 0)
        return serr(ss, "Empty search group");
    sstate_t sub = *ss;
    sub.args = list->list;
    sub.n = list->n;
    sub.i = 0;
    int rc = 1;
    while (rc > 0 && sub.i < sub.n)
        rc = key_kids(&sub, depth, k, 1);
    ss->err = sub.err;
    return rc;
}

typedef enum { A_NONE, A_STR, A_FIELD, A_DATE, A_SIZE, A_FLAG, A_SET, A_MODSEQ, A_KIDS1, A_KIDS2 } key_argk_t;

static const struct {
    const char *name;
    imap_search_kind_t kind;
    key_argk_t arg;
    const char *fixed; /* FLAG: the system flag; HEADER: the field */
    bool negate;
} search_keys[] = {
    { "ALL", IMAP_SK_ALL, A_NONE, NULL, false },
    { "ANSWERED", IMAP_SK_FLAG, A_NONE, "\\Answered", false },
    { "DELETED", IMAP_SK_FLAG, A_NONE, "\\Deleted", false },
    { "DRAFT", IMAP_SK_FLAG, A_NONE, "\\Draft", false },
    { "FLAGGED", IMAP_SK_FLAG, A_NONE, "\\Flagged", false },
    { "SEEN", IMAP_SK_FLAG, A_NONE, "\\Seen", false },
    { "UNANSWERED", IMAP_SK_FLAG, A_NONE, "\\Answered", true },
    { "UNDELETED", IMAP_SK_FLAG, A_NONE, "\\Deleted", true },
    { "UNDRAFT", IMAP_SK_FLAG, A_NONE, "\\Draft", true },
    { "UNFLAGGED", IMAP_SK_FLAG, A_NONE, "\\Flagged", true },
    { "UNSEEN", IMAP_SK_FLAG, A_NONE, "\\Seen", true },
    { "KEYWORD", IMAP_SK_FLAG, A_FLAG, NULL, false },
    { "UNKEYWORD", IMAP_SK_FLAG, A_FLAG, NULL, true },
    { "RECENT", IMAP_SK_RECENT, A_NONE, NULL, false },
    { "OLD", IMAP_SK_RECENT, A_NONE, NULL, true },
    { "BCC", IMAP_SK_HEADER, A_STR, "BCC", false },
    { "CC", IMAP_SK_HEADER, A_STR, "CC", false },
    { "FROM", IMAP_SK_HEADER, A_STR, "FROM", false },
    { "TO", IMAP_SK_HEADER, A_STR, "TO", false },
    { "SUBJECT", IMAP_SK_HEADER, A_STR, "SUBJECT", false },
    { "HEADER", IMAP_SK_HEADER, A_FIELD, NULL, false },
    { "BODY", IMAP_SK_BODY, A_STR, NULL, false },
    { "TEXT", IMAP_SK_TEXT, A_STR, NULL, false },
    { "BEFORE", IMAP_SK_BEFORE, A_DATE, NULL, false },
    { "ON", IMAP_SK_ON, A_DATE, NULL, false },
    { "SINCE", IMAP_SK_SINCE, A_DATE, NULL, false },
    { "SENTBEFORE", IMAP_SK_SENTBEFORE, A_DATE, NULL, false },
    { "SENTON", IMAP_SK_SENTON, A_DATE, NULL, false },
    { "SENTSINCE", IMAP_SK_SENTSINCE, A_DATE, NULL, false },
    { "LARGER", IMAP_SK_LARGER, A_SIZE, NULL, false },
    { "SMALLER", IMAP_SK_SMALLER, A_SIZE, NULL, false },
    { "UID", IMAP_SK_UIDSET, A_SET, NULL, false },
    { "MODSEQ", IMAP_SK_MODSEQ, A_MODSEQ, NULL, false },
    { "NOT", IMAP_SK_NOT, A_KIDS1, NULL, false },
    { "OR", IMAP_SK_OR, A_KIDS2, NULL, false },
};

/* RFC 5322 field-name: printable ASCII except ":", at least one. */
static bool field_name_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s <= 0x20 || *s >= 0x7f || *s == ':')
            return false;
    return true;
}

static int key_set(sstate_t *ss, imap_search_key_t *k)
{
    const imap_arg_t *a = next_arg(ss);
    if (!a || !arg_atomish(a))
        return serr(ss, "Invalid sequence set");
    return imap_seqset_parse(a->str, a->len, &k->set, &ss->err);
}

static int key_arg(sstate_t *ss, unsigned depth, key_argk_t arg, const char *fixed,
                   imap_search_key_t *k)
{
    switch (arg) {
    case A_NONE:
        return fixed && !(k->str = strdup(fixed)) ? serr(ss, "Out of memory") : 1;
    case A_STR:
        if (fixed && !(k->field = strdup(fixed)))
            return serr(ss, "Out of memory");
        return next_string(ss, &k->str);
    case A_FIELD:
        if (next_string(ss, &k->field) < 0)
            return -1;
        if (!field_name_ok(k->field))
            return serr(ss, "Invalid header field name");
        return next_string(ss, &k->str);
    case A_DATE:
        return next_date(ss, &k->day);
    case A_SIZE:
        return next_number(ss, UINT32_MAX, &k->num);
    case A_FLAG:
        return next_flag(ss, k);
    case A_SET:
        return key_set(ss, k);
    case A_MODSEQ:
        return next_modseq(ss, k);
    case A_KIDS1:
        return key_kids(ss, depth, k, 1);
    case A_KIDS2:
        return key_kids(ss, depth, k, 2);
    }
    return serr(ss, "Invalid search key");
}

/* Wraps *k in NOT. */
static int key_negate(imap_search_key_t **k)
{
    imap_search_key_t *not = key_new(IMAP_SK_NOT);
    if (!not || key_add_kid(not, *k) < 0) {
        free(not);
        return -1;
    }
    *k = not;
    return 0;
}

/* NEW = RECENT UNSEEN */
static int key_new_messages(sstate_t *ss, imap_search_key_t **key_r)
{
    imap_search_key_t *k = key_new(IMAP_SK_AND), *r = key_new(IMAP_SK_RECENT),
                      *s = key_new(IMAP_SK_FLAG);
    *key_r = k;
    if (!k || !r || !s || !(s->str = strdup("\\Seen")) || key_add_kid(k, r) < 0) {
        key_free(r);
        key_free(s);
        return serr(ss, "Out of memory");
    }
    if (key_negate(&s) < 0 || key_add_kid(k, s) < 0) {
        key_free(s);
        return serr(ss, "Out of memory");
    }
    return 1;
}

/* A text key whose string is not US-ASCII: compared with the decoded text (RFC 3501
 * section 6.4.4). */
static bool key_needs_decoded(const imap_search_key_t *k)
{
    if ((k->kind != IMAP_SK_HEADER && k->kind != IMAP_SK_BODY && k->kind != IMAP_SK_TEXT) ||
        !k->str)
        return false;
    for (const char *p = k->str; *p; p++)
        if ((unsigned char)*p >= 0x80)
            return true;
    return false;
}

static int key_named(sstate_t *ss, unsigned depth, const imap_arg_t *a, imap_search_key_t **key_r)
{
    if (imap_arg_is_word(a, "NEW"))
        return key_new_messages(ss, key_r);
    for (size_t i = 0; i < sizeof search_keys / sizeof search_keys[0]; i++) {
        if (!imap_arg_is_word(a, search_keys[i].name))
            continue;
        imap_search_key_t *k = *key_r = key_new(search_keys[i].kind);
        if (!k)
            return serr(ss, "Out of memory");
        if (key_arg(ss, depth, search_keys[i].arg, search_keys[i].fixed, k) < 0)
            return -1;
        if (key_needs_decoded(k))
            ss->out->needs_decoded = true;
        if (search_keys[i].negate && key_negate(key_r) < 0)
            return serr(ss, "Out of memory");
        return 1;
    }
    return serr(ss, "Unknown search key");
}

static int search_key(sstate_t *ss, unsigned depth, imap_search_key_t **key_r)
{
    const imap_arg_t *a = next_arg(ss);
    *key_r = NULL;
    if (depth > SEARCH_MAX_DEPTH)
        return serr(ss, "Search program nested too deeply");
    if (!a)
        return serr(ss, "Missing search key");
    if (a->type == IMAP_ARG_LIST) {
        if (!(*key_r = key_new(IMAP_SK_AND)))
            return serr(ss, "Out of memory");
        return key_group(ss, depth, a, *key_r);
    }
    if (!arg_atomish(a))
        return serr(ss, "Invalid search key");
    if (is_digit((unsigned char)a->str[0]) || a->str[0] == '*' || a->str[0] == '$') {
        if (!(*key_r = key_new(IMAP_SK_SEQSET)))
            return serr(ss, "Out of memory");
        return imap_seqset_parse(a->str, a->len, &(*key_r)->set, &ss->err);
    }
    return key_named(ss, depth, a, key_r);
}

static int search_charset(sstate_t *ss)
{
    if (ss->n == 0 || !imap_arg_is_word(&ss->args[0], "CHARSET"))
        return 1;
    const char *s;
    size_t len;
    if (ss->n < 2 || !imap_arg_astring(&ss->args[1], &s, &len))
        return serr(ss, "Missing charset");
    ss->i = 2;
    if (word_eq(s, len, "US-ASCII")) {
        ss->ascii = true;
    } else if (!word_eq(s, len, "UTF-8")) {
        ss->out->badcharset = true;
        return serr(ss, "Unsupported charset");
    }
    return 1;
}

int imap_search_parse(const imap_arg_t *args, size_t n, imap_search_t *out, const char **error_r)
{
    memset(out, 0, sizeof *out);
    sstate_t ss = { .args = args, .n = n, .out = out };
    int rc = search_charset(&ss);
    if (rc > 0 && ss.i >= n)
        rc = serr(&ss, "Missing search key");
    if (rc > 0 && !(out->root = key_new(IMAP_SK_AND)))
        rc = serr(&ss, "Out of memory");
    while (rc > 0 && ss.i < n)
        rc = key_kids(&ss, 0, out->root, 1);
    if (rc < 0) {
        imap_search_free(out);
        *error_r = ss.err;
    }
    return rc;
}

/* ---- SEARCH: SQL ------------------------------------------------------------------- */

void imap_sql_params_init(imap_sql_params_t *p)
{
    memset(p, 0, sizeof *p);
}

void imap_sql_params_free(imap_sql_params_t *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->v[i]);
    free(p->v);
    imap_sql_params_init(p);
}

typedef struct sqlgen {
    const imap_sql_ctx_t *ctx;
    buf_t *where;
    imap_sql_params_t *params;
    size_t first_n; /* params->n when the translation began */
    const char *err;
    bool oom;
} sqlgen_t;

/* Adds a parameter (taking s, which may be NULL after a failed allocation) and returns
 * its placeholder number, or 0. */
static int sql_param(sqlgen_t *g, char *s)
{
    imap_sql_params_t *p = g->params;
    if (s && p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        char **v = realloc(p->v, cap * sizeof *v);
        if (v) {
            p->v = v;
            p->cap = cap;
        }
    }
    if (!s || p->n == p->cap) {
        free(s);
        g->oom = true;
        return 0;
    }
    p->v[p->n++] = s;
    return g->ctx->first_param + (int)(p->n - g->first_n) - 1;
}

static int sql_param_buf(sqlgen_t *g, buf_t *b)
{
    char *s = strndup(b->data, b->len);
    buf_free(b);
    return sql_param(g, s);
}

static void sql_out(sqlgen_t *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sql_out(sqlgen_t *g, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp || buf_append(g->where, tmp, (size_t)n) < 0)
        g->oom = true;
}

/* The message as text: the raw bytes read as Latin-1, so that any byte is a character
 * and ASCII case-folding works. Latin-1 text may not hold NUL: a message holding NUL bytes
 * takes the slower path that drops them (hex pairs "00" at even offsets). */
#define SQL_RAW_TEXT                                                                     \
    "(CASE WHEN position('\\x00'::bytea IN m.raw) = 0 THEN convert_from(m.raw, 'LATIN1') " \
    "ELSE convert_from(decode(regexp_replace(encode(m.raw, 'hex'), "                      \
    "'([1-9a-f][0-9a-f]|0[1-9a-f])|00', '\\1', 'g'), 'hex'), 'LATIN1') END)"
/* A search string (UTF-8 text) read the same way: its bytes as Latin-1. */
#define SQL_PATTERN(k) "convert_from(convert_to($%d::text, 'UTF8'), 'LATIN1')", (k)

static void like_escape(buf_t *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '%' || *s == '_' || *s == '\\')
            buf_append(b, "\\", 1);
        buf_append(b, s, 1);
    }
}

/* A regular expression (PostgreSQL ARE) matching s literally: "\" before every ASCII
 * character that is not a letter or a digit. */
static void regex_escape(buf_t *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x80 && !isalnum(c))
            buf_append(b, "\\", 1);
        buf_append(b, s, 1);
    }
}

/* TEXT: anywhere in the message; BODY: after the first empty line. Raw bytes. */
static void sql_text_raw(sqlgen_t *g, const imap_search_key_t *k)
{
    buf_t b;
    buf_init(&b);
    buf_puts(&b, k->kind == IMAP_SK_BODY ? "%\r\n\r\n%" : "%");
    like_escape(&b, k->str);
    buf_puts(&b, "%");
    int p = sql_param_buf(g, &b);
    sql_out(g, "(" SQL_RAW_TEXT " ILIKE " SQL_PATTERN(p));
    sql_out(g, ")");
}

/* HEADER field value: a line of the message's header block (folded lines included)
 * naming the field, and holding the value after the colon. An empty value matches every
 * message with that field (RFC 3501 section 6.4.4). Raw bytes. */
static void sql_header_raw(sqlgen_t *g, const imap_search_key_t *k)
{
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "(^|\n)");
    regex_escape(&b, k->field);
    buf_puts(&b, "[ \t]*:([^\n]|\n[ \t])*");
    regex_escape(&b, k->str);
    int p = sql_param_buf(g, &b);
    sql_out(g, "(split_part(" SQL_RAW_TEXT ", E'\\r\\n\\r\\n', 1) ~* " SQL_PATTERN(p));
    sql_out(g, ")");
}

/* The same keys over the decoded text of migration 0009 (search_headers: one unfolded
 * "Name: value" line per field; search_body: the text parts), for a message whose
 * decoded text is computed (search_body not NULL); the raw form for one whose is not. */
static void sql_decoded(sqlgen_t *g, const imap_search_key_t *k)
{
    buf_t b;
    buf_init(&b);
    if (k->kind == IMAP_SK_HEADER) {
        buf_puts(&b, "(^|\n)");
        regex_escape(&b, k->field);
        buf_puts(&b, "[ \t]*:[^\n]*");
        regex_escape(&b, k->str);
    } else {
        buf_puts(&b, "%");
        like_escape(&b, k->str);
        buf_puts(&b, "%");
    }
    int p = sql_param_buf(g, &b);
    sql_out(g, "(CASE WHEN m.search_body IS NULL THEN ");
    if (k->kind == IMAP_SK_HEADER)
        sql_header_raw(g, k);
    else
        sql_text_raw(g, k);
    if (k->kind == IMAP_SK_HEADER)
        sql_out(g, " ELSE coalesce(m.search_headers, '') ~* $%d::text END)", p);
    else if (k->kind == IMAP_SK_BODY)
        sql_out(g, " ELSE m.search_body ILIKE $%d::text END)", p);
    else
        sql_out(g, " ELSE (coalesce(m.search_headers, '') ILIKE $%d::text OR "
                   "m.search_body ILIKE $%d::text) END)", p, p);
}

/* The start of a UTC calendar day as a timestamptz literal. */
static int sql_day_param(sqlgen_t *g, int64_t day)
{
    time_t t = (time_t)(day * 86400);
    struct tm tm;
    char s[40];
    if (!gmtime_r(&t, &tm))
        return sql_param(g, NULL);
    snprintf(s, sizeof s, "%04d-%02d-%02d 00:00:00+00", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday);
    return sql_param(g, strdup(s));
}

/* BEFORE/ON/SINCE on the internal date, SENT* on the Date: header; a message without a
 * Date: header matches no SENT* key (and so matches its NOT). */
static void sql_date(sqlgen_t *g, const imap_search_key_t *k)
{
    bool sent = k->kind >= IMAP_SK_SENTBEFORE;
    const char *col = sent ? "m.hdr_date" : "m.internal_date";
    imap_search_kind_t base = sent ? k->kind - (IMAP_SK_SENTBEFORE - IMAP_SK_BEFORE) : k->kind;
    int a = sql_day_param(g, k->day);
    sql_out(g, "%s", sent ? "COALESCE(" : "(");
    if (base == IMAP_SK_BEFORE)
        sql_out(g, "%s < $%d::timestamptz", col, a);
    else if (base == IMAP_SK_SINCE)
        sql_out(g, "%s >= $%d::timestamptz", col, a);
    else
        sql_out(g, "%s >= $%d::timestamptz AND %s < $%d::timestamptz", col, a, col,
                sql_day_param(g, k->day + 1));
    sql_out(g, "%s", sent ? ", FALSE)" : ")");
}

static void pg_array(buf_t *b, const imap_seqset_t *r, bool hi)
{
    buf_puts(b, "{");
    for (size_t i = 0; i < r->n; i++)
        buf_printf(b, "%s%u", i ? "," : "", (unsigned)(hi ? r->r[i].hi : r->r[i].lo));
    buf_puts(b, "}");
}

/* A resolved (sorted, merged) set of UIDs. */
static void sql_uids(sqlgen_t *g, const imap_seqset_t *r)
{
    bool singles = true;
    for (size_t i = 0; i < r->n; i++)
        singles = singles && r->r[i].lo == r->r[i].hi;
    buf_t lo, hi;
    buf_init(&lo);
    buf_init(&hi);
    if (r->n == 0) {
        sql_out(g, "FALSE");
    } else if (r->n == 1) {
        buf_printf(&lo, "%u", (unsigned)r->r[0].lo);
        buf_printf(&hi, "%u", (unsigned)r->r[0].hi);
        int a = sql_param_buf(g, &lo), b = sql_param_buf(g, &hi);
        sql_out(g, "(m.uid BETWEEN $%d::bigint AND $%d::bigint)", a, b);
    } else if (singles) {
        pg_array(&lo, r, false);
        sql_out(g, "(m.uid = ANY($%d::bigint[]))", sql_param_buf(g, &lo));
    } else {
        pg_array(&lo, r, false);
        pg_array(&hi, r, true);
        int a = sql_param_buf(g, &lo), b = sql_param_buf(g, &hi);
        sql_out(g, "(EXISTS (SELECT 1 FROM unnest($%d::bigint[], $%d::bigint[]) AS r(lo, hi) "
                   "WHERE m.uid BETWEEN r.lo AND r.hi))", a, b);
    }
    buf_free(&lo);
    buf_free(&hi);
}

static int sql_set(sqlgen_t *g, const imap_search_key_t *k)
{
    imap_seqset_t uids, r;
    imap_seqset_init(&uids);
    imap_seqset_init(&r);
    int rc = 0;
    if (k->kind == IMAP_SK_UIDSET) {
        rc = imap_seqset_resolve(&k->set, g->ctx->uid_max, &r);
    } else if (!g->ctx->seq_to_uids) {
        g->err = "Sequence numbers can not be searched here";
        rc = -1;
    } else if (g->ctx->seq_to_uids(g->ctx->cb_ctx, &k->set, &uids, &g->err) < 0) {
        rc = -1;
    } else {
        rc = imap_seqset_resolve(&uids, UINT32_MAX - 1, &r);
    }
    if (rc == 0)
        sql_uids(g, &r);
    else if (!g->err)
        g->oom = true;
    imap_seqset_free(&uids);
    imap_seqset_free(&r);
    return rc;
}

static int sql_key(sqlgen_t *g, const imap_search_key_t *k);

static int sql_kids(sqlgen_t *g, const imap_search_key_t *k, const char *op)
{
    sql_out(g, "(");
    for (size_t i = 0; i < k->n_kids; i++) {
        if (i)
            sql_out(g, " %s ", op);
        if (sql_key(g, k->kids[i]) < 0)
            return -1;
    }
    sql_out(g, ")");
    return 0;
}

static int sql_key(sqlgen_t *g, const imap_search_key_t *k)
{
    switch (k->kind) {
    case IMAP_SK_ALL:
        sql_out(g, "TRUE");
        return 0;
    case IMAP_SK_RECENT:
        if (g->ctx->recent)
            sql_uids(g, g->ctx->recent);
        else
            sql_out(g, "FALSE");
        return 0;
    case IMAP_SK_AND:
        return sql_kids(g, k, "AND");
    case IMAP_SK_OR:
        return sql_kids(g, k, "OR");
    case IMAP_SK_NOT:
        sql_out(g, "(NOT ");
        if (sql_key(g, k->kids[0]) < 0)
            return -1;
        sql_out(g, ")");
        return 0;
    case IMAP_SK_SEQSET:
    case IMAP_SK_UIDSET:
        return sql_set(g, k);
    case IMAP_SK_FLAG:
        sql_out(g, "(m.flags @> ARRAY[$%d::text])", sql_param(g, strdup(k->str)));
        return 0;
    case IMAP_SK_BEFORE: case IMAP_SK_ON: case IMAP_SK_SINCE:
    case IMAP_SK_SENTBEFORE: case IMAP_SK_SENTON: case IMAP_SK_SENTSINCE:
        sql_date(g, k);
        return 0;
    case IMAP_SK_LARGER:
    case IMAP_SK_SMALLER: {
        char n[24];
        snprintf(n, sizeof n, "%llu", (unsigned long long)k->num);
        sql_out(g, "(m.size %s $%d::bigint)", k->kind == IMAP_SK_LARGER ? ">" : "<",
                sql_param(g, strdup(n)));
        return 0;
    }
    case IMAP_SK_MODSEQ: {
        char n[24];
        snprintf(n, sizeof n, "%llu", (unsigned long long)k->num);
        sql_out(g, "(m.modseq >= $%d::bigint)", sql_param(g, strdup(n)));
        return 0;
    }
    case IMAP_SK_HEADER:
    case IMAP_SK_BODY:
    case IMAP_SK_TEXT:
        if (key_needs_decoded(k))
            sql_decoded(g, k);
        else if (k->kind == IMAP_SK_HEADER)
            sql_header_raw(g, k);
        else
            sql_text_raw(g, k);
        return 0;
    }
    g->err = "Invalid search key";
    return -1;
}

int imap_search_sql(const imap_search_t *s, const imap_sql_ctx_t *ctx, buf_t *where,
                    imap_sql_params_t *params, const char **error_r)
{
    sqlgen_t g = { .ctx = ctx, .where = where, .params = params, .first_n = params->n };
    if (!s->root)
        return ERR("Empty search program");
    if (sql_key(&g, s->root) < 0)
        return ERR(g.err ? g.err : "Out of memory");
    if (g.oom)
        return ERR("Out of memory");
    return 0;
}

/* ---- dates ------------------------------------------------------------------------- */

static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* Days since 1970-01-01 of a proleptic Gregorian date. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static unsigned month_days(unsigned y, unsigned m)
{
    static const unsigned char n[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return n[m - 1] + (m == 2 && leap);
}

static bool digits(const char *s, size_t n, unsigned *v_r)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit((unsigned char)s[i]))
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *v_r = v;
    return true;
}

/* date-day "-" date-month "-" date-year; *used_r: bytes read. */
static int date_text(const char *s, size_t len, int64_t *day_r, size_t *used_r)
{
    size_t dl = len > 1 && s[1] == '-' ? 1 : 2;
    unsigned d, y, m;
    const char *ds = s;
    if (dl == 2 && len > 0 && s[0] == ' ') {
        ds++; /* date-day-fixed " 5" */
        dl = 1;
    }
    size_t at = (size_t)(ds - s) + dl;
    if (len < at + 9 || !digits(ds, dl, &d) || s[at] != '-' || s[at + 4] != '-' ||
        !digits(s + at + 5, 4, &y))
        return -1;
    for (m = 1; m <= 12 && strncasecmp(s + at + 1, months[m - 1], 3) != 0; m++)
        ;
    if (m > 12 || d == 0 || d > month_days(y, m))
        return -1;
    *day_r = days_from_civil(y, m, d);
    *used_r = at + 9;
    return 1;
}

int imap_date_parse(const char *s, size_t len, int64_t *day_r)
{
    size_t used;
    if (len == 0 || s[0] == ' ' || date_text(s, len, day_r, &used) < 0 || used != len)
        return -1;
    return 1;
}

int imap_datetime_parse(const char *s, size_t len, time_t *t_r, int *tz_min_r)
{
    int64_t day;
    size_t at;
    unsigned hh, mm, ss, zh, zm;
    if (date_text(s, len, &day, &at) < 0 || len != at + 15)
        return -1;
    const char *p = s + at;
    if (p[0] != ' ' || p[3] != ':' || p[6] != ':' || p[9] != ' ' ||
        (p[10] != '+' && p[10] != '-') || !digits(p + 1, 2, &hh) || !digits(p + 4, 2, &mm) ||
        !digits(p + 7, 2, &ss) || !digits(p + 11, 2, &zh) || !digits(p + 13, 2, &zm) ||
        hh > 23 || mm > 59 || ss > 60 || zh > 23 || zm > 59)
        return -1;
    int tz = (int)(zh * 60 + zm) * (p[10] == '-' ? -1 : 1);
    *t_r = (time_t)(day * 86400 + hh * 3600 + mm * 60 + ss - tz * 60);
    *tz_min_r = tz;
    return 1;
}

void imap_datetime_format(time_t t, int tz_min, char out[IMAP_DATETIME_LEN])
{
    time_t local = t + (time_t)tz_min * 60;
    struct tm tm;
    char tmp[128];
    unsigned az = (unsigned)(tz_min < 0 ? -tz_min : tz_min);
    if (!gmtime_r(&local, &tm))
        memset(&tm, 0, sizeof tm);
    snprintf(tmp, sizeof tmp, "%02d-%s-%04d %02d:%02d:%02d %c%02u%02u", tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec,
             tz_min < 0 ? '-' : '+', (az / 60) % 100, az % 60);
    memcpy(out, tmp, IMAP_DATETIME_LEN - 1);
    out[IMAP_DATETIME_LEN - 1] = '\0';
}

/* ---- mailbox names ----------------------------------------------------------------- */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (is_digit(c))
        return c - '0' + 52;
    return c == '+' ? 62 : c == ',' ? 63 : -1;
}

static int utf8_put(buf_t *out, uint32_t cp)
{
    unsigned char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        b[0] = (unsigned char)(0xc0 | cp >> 6);
        b[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        b[0] = (unsigned char)(0xe0 | cp >> 12);
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        b[0] = (unsigned char)(0xf0 | cp >> 18);
        b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        b[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    return out ? buf_append(out, b, n) : 0;
}

/* One UTF-16 unit of a shifted run; *hi holds a pending high surrogate. */
static int mutf7_unit(uint32_t u, uint32_t *hi, buf_t *out, const char **error_r)
{
    if (*hi) {
        if (u < 0xdc00 || u > 0xdfff)
            return ERR("Unpaired surrogate in mailbox name");
        uint32_t cp = 0x10000 + ((*hi - 0xd800) << 10) + (u - 0xdc00);
        *hi = 0;
        return utf8_put(out, cp) < 0 ? ERR("Out of memory") : 1;
    }
    if (u >= 0xd800 && u <= 0xdbff) {
        *hi = u;
        return 1;
    }
    if (u >= 0xdc00 && u <= 0xdfff)
        return ERR("Unpaired surrogate in mailbox name");
    if (u >= 0x20 && u <= 0x7e)
        return ERR("Printable ASCII encoded in mailbox name");
    return utf8_put(out, u) < 0 ? ERR("Out of memory") : 1;
}

/* A shifted run "&...-" from p (after "&"); returns bytes read, or -1. */
static long mutf7_run(const char *p, const char *end, buf_t *out, const char **error_r)
{
    uint32_t bits = 0, hi = 0;
    unsigned nbits = 0, units = 0;
    const char *s = p;
    for (; p < end && *p != '-'; p++) {
        int v = b64_value((unsigned char)*p);
        if (v < 0)
            return ERR("Invalid modified base64 in mailbox name");
        bits = (bits << 6 | (uint32_t)v) & 0xffffff;
        nbits += 6;
        if (nbits >= 16) {
            nbits -= 16;
            units++;
            if (mutf7_unit((bits >> nbits) & 0xffff, &hi, out, error_r) < 0)
                return -1;
        }
    }
    if (p == end)
        return ERR("Unterminated modified base64 in mailbox name");
    if (units == 0 || hi || nbits >= 6 || (bits & ((1u << nbits) - 1)))
        return ERR("Invalid modified base64 in mailbox name");
    return (long)(p - s) + 1;
}

int imap_mutf7_decode(const char *name, size_t len, buf_t *utf8, const char **error_r)
{
    const char *p = name, *end = name + len;
    bool after_run = false;
    while (p < end) {
        unsigned char c = (unsigned char)*p++;
        if (c < 0x20 || c > 0x7e)
            return ERR("Invalid character in mailbox name");
        if (c != '&') {
            if (utf8 && buf_append(utf8, &c, 1) < 0)
                return ERR("Out of memory");
            after_run = false;
            continue;
        }
        if (p < end && *p == '-') {
            p++;
            if (utf8 && buf_append(utf8, "&", 1) < 0)
                return ERR("Out of memory");
            after_run = false;
            continue;
        }
        if (after_run)
            return ERR("Adjacent modified base64 runs in mailbox name");
        long n = mutf7_run(p, end, utf8, error_r);
        if (n < 0)
            return -1;
        p += n;
        after_run = true;
    }
    return 1;
}

static bool is_inbox_prefix(const char *name, size_t len)
{
    return len >= 5 && strncasecmp(name, "INBOX", 5) == 0 && (len == 5 || name[5] == '/');
}

int imap_mailbox_normalize(const char *name, size_t len, buf_t *out)
{
    if (is_inbox_prefix(name, len)) {
        if (buf_puts(out, "INBOX") < 0)
            return -1;
        name += 5;
        len -= 5;
    }
    return buf_append(out, name, len);
}

bool imap_list_match(const char *pattern, const char *name)
{
    size_t n = strlen(name);
    bool inbox = is_inbox_prefix(name, n);
    bool *prev = calloc(n + 1, sizeof *prev), *cur = calloc(n + 1, sizeof *cur);
    bool ok = false;
    if (!prev || !cur)
        goto done;
    prev[0] = true;
    for (const char *p = pattern; *p; p++) {
        char pc = *p;
        cur[0] = (pc == '*' || pc == '%') && prev[0];
        for (size_t j = 1; j <= n; j++) {
            char nc = name[j - 1];
            if (pc == '*')
                cur[j] = prev[j] || cur[j - 1];
            else if (pc == '%')
                cur[j] = prev[j] || (cur[j - 1] && nc != '/');
            else if (inbox && j <= 5)
                cur[j] = prev[j - 1] && toupper((unsigned char)pc) == toupper((unsigned char)nc);
            else
                cur[j] = prev[j - 1] && pc == nc;
        }
        bool *t = prev;
        prev = cur;
        cur = t;
    }
    ok = prev[n];
done:
    free(prev);
    free(cur);
    return ok;
}

/* ---- response strings -------------------------------------------------------------- */

#define QUOTED_MAX 1024 /* longer strings go as literals */

static bool quotable(const char *s, size_t len)
{
    if (len > QUOTED_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0 || c == '\r' || c == '\n' || c >= 0x80)
            return false;
    }
    return true;
}

static int append_string(buf_t *out, const char *s, size_t len)
{
    if (!quotable(s, len)) {
        if (buf_printf(out, "{%zu}\r\n", len) < 0)
            return -1;
        return buf_append(out, s, len);
    }
    if (buf_append(out, "\"", 1) < 0)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if ((s[i] == '"' || s[i] == '\\') && buf_append(out, "\\", 1) < 0)
            return -1;
        if (buf_append(out, s + i, 1) < 0)
            return -1;
    }
    return buf_append(out, "\"", 1);
}

int imap_append_astring(buf_t *out, const char *s, size_t len)
{
    bool atom = len > 0 && !(len == 3 && strncasecmp(s, "NIL", 3) == 0);
    for (size_t i = 0; atom && i < len; i++)
        atom = atom_char_strict((unsigned char)s[i]);
    return atom ? buf_append(out, s, len) : append_string(out, s, len);
}

int imap_append_nstring(buf_t *out, const char *s, size_t len)
{
    return s ? append_string(out, s, len) : buf_puts(out, "NIL");
}
