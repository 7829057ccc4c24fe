/* IMAP4rev1 ENVELOPE, BODYSTRUCTURE, BODY and BODY[section] ranges (RFC 3501 sections
 * 6.4.5, 7.4.2 and 9) over GMime 3's parse of a raw message.
 *
 * GMime gives the tree of entities, their Content-* fields and the raw header values.
 * Where each entity lies in raw (header block, body, end) is found from the boundaries
 * GMime parsed: a part ends before the line break that precedes the next boundary line of
 * its multipart or of any enclosing one (RFC 2046 section 5.1.1: that line break belongs to
 * the boundary), or at the end of its parent when no boundary follows. ENVELOPE shows the
 * header text as it is (encoded words stay encoded, RFC 3501 section 7.4.2), so addresses
 * are split here from the raw value (RFC 5322 section 3.4). */
#include "mail/mime.h"

#include "base/buf.h"

#include <gmime/gmime.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- the tree ------------------------------------------------------------------------- */

typedef enum { NODE_LEAF, NODE_MULTI, NODE_MESSAGE } node_kind_t;

/* One MIME entity. [hdr, body) is its header block with the blank line, [body, end) its
 * body. A NODE_MESSAGE (message/rfc822, and the top-level message) has one child: the
 * embedded message's top entity, whose header block is [body, child->body). obj is NULL
 * for the empty part that stands in for a multipart without parts. */
typedef struct node {
    node_kind_t kind;
    GMimeObject *obj;
    GMimeMessage *msg; /* NODE_MESSAGE: the embedded message (its header fields) */
    size_t hdr, body, end;
    struct node *kids;
    size_t nkids;
} node_t;

typedef struct tree {
    const char *raw;
    size_t len;
    GMimeMessage *msg;
    GByteArray *array; /* wraps raw (not owned) under GMime's stream */
    node_t top;        /* NODE_MESSAGE over the whole raw message */
    bool oom;
} tree_t;

static pthread_once_t gmime_once = PTHREAD_ONCE_INIT;

static void gmime_init_once(void)
{
    g_mime_init();
}

/* The position after the blank line that ends the header block starting at from, or limit
 * when there is none (a message of header fields only). */
static size_t header_end(const char *raw, size_t from, size_t limit)
{
    size_t p = from;
    while (p < limit) {
        if (raw[p] == '\n')
            return p + 1;
        if (raw[p] == '\r' && p + 1 < limit && raw[p + 1] == '\n')
            return p + 2;
        const char *nl = memchr(raw + p, '\n', limit - p);
        if (!nl)
            return limit;
        p = (size_t)(nl - raw) + 1;
    }
    return limit;
}

/* Boundaries of the enclosing multiparts, innermost last. */
typedef struct bstack {
    const char *b[32];
    size_t n;
} bstack_t;

/* Whether the line at p is a boundary line "--boundary" of one of st's boundaries;
 * *which_r is its index. */
static bool is_boundary_line(const char *raw, size_t p, size_t limit, const bstack_t *st,
                             size_t *which_r)
{
    if (limit - p < 2 || raw[p] != '-' || raw[p + 1] != '-')
        return false;
    for (size_t i = st->n; i-- > 0;) {
        size_t bl = strlen(st->b[i]);
        if (limit - p - 2 >= bl && memcmp(raw + p + 2, st->b[i], bl) == 0) {
            *which_r = i;
            return true;
        }
    }
    return false;
}

/* The first boundary line at a line start in [from, limit); returns its position or limit. */
static size_t next_boundary(const char *raw, size_t from, size_t limit, const bstack_t *st,
                            size_t *which_r)
{
    size_t p = from;
    while (p < limit) {
        if (is_boundary_line(raw, p, limit, st, which_r))
            return p;
        const char *nl = memchr(raw + p, '\n', limit - p);
        if (!nl)
            break;
        p = (size_t)(nl - raw) + 1;
    }
    return limit;
}

/* The end of a part's content before a boundary line at p: the line break before it. */
static size_t before_break(const char *raw, size_t start, size_t p)
{
    if (p > start && raw[p - 1] == '\n') {
        p--;
        if (p > start && raw[p - 1] == '\r')
            p--;
    }
    return p;
}

static size_t line_after(const char *raw, size_t p, size_t limit)
{
    const char *nl = memchr(raw + p, '\n', limit - p);
    return nl ? (size_t)(nl - raw) + 1 : limit;
}

static void build_entity(tree_t *t, node_t *n, GMimeObject *obj, bstack_t *st);

static void build_message(tree_t *t, node_t *n, GMimeMessage *msg, bstack_t *st)
{
    n->kind = NODE_MESSAGE;
    n->msg = msg;
    GMimeObject *inner = msg ? g_mime_message_get_mime_part(msg) : NULL;
    n->kids = calloc(1, sizeof *n->kids);
    if (!n->kids) {
        t->oom = true;
        return;
    }
    n->nkids = 1;
    node_t *k = &n->kids[0];
    k->hdr = n->body;
    k->body = header_end(t->raw, n->body, n->end);
    k->end = n->end;
    build_entity(t, k, inner, st);
}

/* n->hdr, n->body and n->end are set; fills in the kind and the children. */
static void build_entity(tree_t *t, node_t *n, GMimeObject *obj, bstack_t *st)
{
    n->obj = obj;
    if (obj && GMIME_IS_MESSAGE_PART(obj)) {
        GMimeMessage *m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
        build_message(t, n, m, st);
        return;
    }
    if (!obj || !GMIME_IS_MULTIPART(obj)) {
        n->kind = NODE_LEAF;
        return;
    }
    n->kind = NODE_MULTI;
    GMimeMultipart *mp = GMIME_MULTIPART(obj);
    int count = g_mime_multipart_get_count(mp);
    /* The parameter itself: g_mime_multipart_get_boundary() would make one up. */
    const char *boundary = g_mime_object_get_content_type_parameter(obj, "boundary");
    size_t nk = count > 0 ? (size_t)count : 1;
    n->kids = calloc(nk, sizeof *n->kids);
    if (!n->kids) {
        t->oom = true;
        return;
    }
    n->nkids = nk;
    if (count <= 0 || !boundary || st->n == sizeof st->b / sizeof st->b[0]) {
        /* No parts: one empty text/plain part at the end of the body. */
        for (size_t i = 0; i < nk; i++) {
            n->kids[i].hdr = n->kids[i].body = n->kids[i].end = n->end;
            n->kids[i].kind = NODE_LEAF;
        }
        return;
    }
    st->b[st->n++] = boundary;
    size_t which = 0;
    size_t p = next_boundary(t->raw, n->body, n->end, st, &which);
    bool open = p < n->end && which == st->n - 1;
    for (size_t i = 0; i < nk; i++) {
        node_t *k = &n->kids[i];
        if (open) {
            k->hdr = line_after(t->raw, p, n->end);
            size_t q = next_boundary(t->raw, k->hdr, n->end, st, &which);
            k->end = q < n->end ? before_break(t->raw, k->hdr, q) : n->end;
            /* The closing delimiter "--boundary--", or an outer boundary, ends the list. */
            open = q < n->end && which == st->n - 1 && !(n->end - q >= strlen(boundary) + 4 &&
                                                         memcmp(t->raw + q + 2 + strlen(boundary), "--", 2) == 0);
            p = q;
        } else {
            k->hdr = k->end = p < n->end ? before_break(t->raw, n->body, p) : n->end;
        }
        k->body = header_end(t->raw, k->hdr, k->end);
        build_entity(t, k, g_mime_multipart_get_part(mp, (int)i), st);
    }
    st->n--;
}

static void node_free(node_t *n)
{
    for (size_t i = 0; i < n->nkids; i++)
        node_free(&n->kids[i]);
    free(n->kids);
    n->kids = NULL;
    n->nkids = 0;
}

static void tree_free(tree_t *t)
{
    node_free(&t->top);
    if (t->msg)
        g_object_unref(t->msg);
    t->msg = NULL;
    if (t->array) {
        /* raw belongs to the caller: release the wrapper alone. */
        (void)g_byte_array_steal(t->array, NULL);
        g_byte_array_unref(t->array);
        t->array = NULL;
    }
}

/* Parses raw; returns 0, or -1 when memory runs out. */
static int tree_parse(tree_t *t, const char *raw, size_t len)
{
    pthread_once(&gmime_once, gmime_init_once);
    memset(t, 0, sizeof *t);
    if (len > G_MAXUINT)
        return -1; /* a GByteArray holds at most 4 GiB */
    t->raw = raw;
    t->len = len;
    /* A memory stream that owns no copy: GMime's persistent parse points into raw. */
    t->array = g_byte_array_new_take((guint8 *)raw, len);
    GMimeStream *stream = g_mime_stream_mem_new_with_byte_array(t->array);
    g_mime_stream_mem_set_owner(GMIME_STREAM_MEM(stream), FALSE);
    GMimeParser *parser = g_mime_parser_new_with_stream(stream);
    g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
    t->msg = g_mime_parser_construct_message(parser, NULL);
    g_object_unref(parser);
    g_object_unref(stream);
    t->top.hdr = 0;
    t->top.body = 0; /* the embedded message of the top node is raw itself */
    t->top.end = len;
    bstack_t st = { .n = 0 };
    build_message(t, &t->top, t->msg, &st);
    if (t->oom) {
        tree_free(t);
        return -1;
    }
    return 0;
}

/* ---- IMAP strings --------------------------------------------------------------------- */

/* RFC 3501 section 9: a quoted string holds 7-bit text without CR, LF and NUL, with '"' and
 * '\' escaped; anything else is a literal. NUL, which a literal may not hold either, is
 * shown as 0x80. */
static int put_string(buf_t *b, const char *s, size_t n)
{
    bool quoted = true;
    for (size_t i = 0; i < n && quoted; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == 0 || c == '\r' || c == '\n' || c >= 0x80)
            quoted = false;
    }
    if (quoted) {
        if (buf_append(b, "\"", 1) < 0)
            return -1;
        for (size_t i = 0; i < n; i++) {
            if ((s[i] == '"' || s[i] == '\\') && buf_append(b, "\\", 1) < 0)
                return -1;
            if (buf_append(b, s + i, 1) < 0)
                return -1;
        }
        return buf_append(b, "\"", 1);
    }
    if (buf_printf(b, "{%zu}\r\n", n) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i] ? s[i] : (char)0x80;
        if (buf_append(b, &c, 1) < 0)
            return -1;
    }
    return 0;
}

static int put_cstring(buf_t *b, const char *s)
{
    return s ? put_string(b, s, strlen(s)) : buf_puts(b, "NIL");
}

/* Header text without its line breaks (unfolded, RFC 5322 section 2.2.3), without the
 * leading white space; NULL for an absent field. Freed with free(). */
static char *unfold(const char *v)
{
    if (!v)
        return NULL;
    while (*v == ' ' || *v == '\t')
        v++;
    size_t n = strlen(v);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] != '\r' && v[i] != '\n')
            out[o++] = v[i];
    out[o] = '\0';
    return out;
}

/* Text meant for people (subject, display names): runs of white space and line breaks
 * become one space, none at either end. */
static void squeeze(char *s)
{
    size_t o = 0;
    bool space = true;
    for (size_t i = 0; s[i]; i++) {
        if (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n') {
            if (!space)
                s[o++] = ' ';
            space = true;
        } else {
            s[o++] = s[i];
            space = false;
        }
    }
    if (o > 0 && s[o - 1] == ' ')
        o--;
    s[o] = '\0';
}

/* The raw value of the first field called name in obj's header, or NULL. */
static const char *raw_header(GMimeObject *obj, const char *name)
{
    if (!obj)
        return NULL;
    GMimeHeaderList *hl = g_mime_object_get_header_list(obj);
    int n = g_mime_header_list_get_count(hl);
    for (int i = 0; i < n; i++) {
        GMimeHeader *h = g_mime_header_list_get_header_at(hl, i);
        if (g_ascii_strcasecmp(g_mime_header_get_name(h), name) == 0)
            return g_mime_header_get_raw_value(h);
    }
    return NULL;
}

/* nstring of a header field: NIL when absent, otherwise its unfolded text. */
static int put_field(buf_t *b, GMimeObject *obj, const char *name, bool human)
{
    const char *v = raw_header(obj, name);
    if (!v)
        return buf_puts(b, "NIL");
    char *u = unfold(v);
    if (!u)
        return -1;
    if (human)
        squeeze(u);
    int rc = put_string(b, u, strlen(u));
    free(u);
    return rc;
}

/* ---- addresses (RFC 5322 section 3.4, shown as RFC 3501 section 7.4.2 has it) ------------ */

typedef enum { TOK_END, TOK_WORD, TOK_SPECIAL } tok_kind_t;

typedef struct lexer {
    const char *s;
    size_t pos, len;
    buf_t comment; /* the last comment seen: a name for an address that has none */
    bool oom;
} lexer_t;

typedef struct token {
    tok_kind_t kind;
    char special;
    buf_t text; /* TOK_WORD: the atom, or the quoted string without quotes and escapes */
    bool quoted;
} token_t;

static bool is_special(char c)
{
    return strchr("()<>@,;:\\\".[]", c) != NULL && c != '.';
}

static void skip_cfws(lexer_t *lx)
{
    while (lx->pos < lx->len) {
        char c = lx->s[lx->pos];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            lx->pos++;
        } else if (c == '(') {
            int depth = 0;
            buf_reset(&lx->comment);
            while (lx->pos < lx->len) {
                c = lx->s[lx->pos++];
                if (c == '\\' && lx->pos < lx->len) {
                    if (buf_append(&lx->comment, lx->s + lx->pos++, 1) < 0)
                        lx->oom = true;
                    continue;
                }
                if (c == '(' && depth++ == 0)
                    continue;
                if (c == ')' && --depth == 0)
                    break;
                if (buf_append(&lx->comment, &c, 1) < 0)
                    lx->oom = true;
            }
        } else {
            break;
        }
    }
}

static void next_token(lexer_t *lx, token_t *tk)
{
    buf_reset(&tk->text);
    tk->quoted = false;
    skip_cfws(lx);
    if (lx->pos >= lx->len) {
        tk->kind = TOK_END;
        return;
    }
    char c = lx->s[lx->pos];
    if (c == '"') {
        tk->kind = TOK_WORD;
        tk->quoted = true;
        lx->pos++;
        while (lx->pos < lx->len && lx->s[lx->pos] != '"') {
            if (lx->s[lx->pos] == '\\' && lx->pos + 1 < lx->len)
                lx->pos++;
            if (lx->s[lx->pos] != '\r' && lx->s[lx->pos] != '\n' &&
                buf_append(&tk->text, lx->s + lx->pos, 1) < 0)
                lx->oom = true;
            lx->pos++;
        }
        if (lx->pos < lx->len)
            lx->pos++;
        return;
    }
    if (c == '[') { /* a domain literal is one word */
        tk->kind = TOK_WORD;
        size_t start = lx->pos;
        while (lx->pos < lx->len && lx->s[lx->pos] != ']')
            lx->pos++;
        if (lx->pos < lx->len)
            lx->pos++;
        if (buf_append(&tk->text, lx->s + start, lx->pos - start) < 0)
            lx->oom = true;
        return;
    }
    if (is_special(c)) {
        tk->kind = TOK_SPECIAL;
        tk->special = c;
        lx->pos++;
        return;
    }
    tk->kind = TOK_WORD;
    size_t start = lx->pos;
    while (lx->pos < lx->len) {
        c = lx->s[lx->pos];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || is_special(c))
            break;
        lx->pos++;
    }
    if (buf_append(&tk->text, lx->s + start, lx->pos - start) < 0)
        lx->oom = true;
}

/* One address as (name adl mailbox host); NULL members are NIL. */
static int put_addr(buf_t *b, const char *name, const char *adl, const char *mailbox,
                    const char *host)
{
    if (buf_puts(b, "(") < 0)
        return -1;
    if (name && *name) {
        char *n = strdup(name);
        if (!n)
            return -1;
        squeeze(n);
        int rc = put_string(b, n, strlen(n));
        free(n);
        if (rc < 0)
            return -1;
    } else if (buf_puts(b, "NIL") < 0) {
        return -1;
    }
    if (buf_puts(b, " ") < 0 || put_cstring(b, adl) < 0 || buf_puts(b, " ") < 0 ||
        put_cstring(b, mailbox) < 0 || buf_puts(b, " ") < 0 || put_cstring(b, host) < 0)
        return -1;
    return buf_puts(b, ")");
}

/* Appends the words of a phrase or local part to out, joined by sep. */
static int join_word(buf_t *out, const token_t *tk, const char *sep)
{
    if (out->len && buf_puts(out, sep) < 0)
        return -1;
    return buf_append(out, tk->text.data, tk->text.len);
}

/* Parses one mailbox or group starting with the token in tk; appends its addresses to b and
 * reads the token that follows it into tk. Returns the number of addresses written, -1 when
 * memory runs out. in_group: a ';' ends the group. */
static int parse_mailbox(lexer_t *lx, token_t *tk, buf_t *b, bool in_group);

static int parse_address(lexer_t *lx, token_t *tk, buf_t *b)
{
    return parse_mailbox(lx, tk, b, false);
}

static int parse_mailbox(lexer_t *lx, token_t *tk, buf_t *b, bool in_group)
{
    buf_t phrase, local, domain, route;
    buf_init(&phrase);
    buf_init(&local);
    buf_init(&domain);
    buf_init(&route);
    int written = 0;
    int rc = 0;
    bool dot_pending = false;
    buf_reset(&lx->comment);
    /* Words up to '<', ':', '@', ',' or the end. The words also make the local part of an
     * addr-spec, joined by the dots between them. */
    while (tk->kind == TOK_WORD || (tk->kind == TOK_SPECIAL && tk->special == '.')) {
        if (tk->kind == TOK_SPECIAL) {
            dot_pending = true;
            next_token(lx, tk);
            continue;
        }
        if (join_word(&phrase, tk, " ") < 0 ||
            (local.len && buf_puts(&local, dot_pending ? "." : "") < 0) ||
            buf_append(&local, tk->text.data, tk->text.len) < 0)
            goto oom;
        dot_pending = false;
        next_token(lx, tk);
    }
    if (tk->kind == TOK_SPECIAL && tk->special == ':' && !in_group) {
        /* group: display-name ":" [group-list] ";" */
        if (put_addr(b, NULL, NULL, phrase.len ? phrase.data : "", NULL) < 0)
            goto oom;
        written++;
        next_token(lx, tk);
        while (tk->kind != TOK_END && !(tk->kind == TOK_SPECIAL && tk->special == ';')) {
            if (tk->kind == TOK_SPECIAL && tk->special == ',') {
                next_token(lx, tk);
                continue;
            }
            int n = parse_mailbox(lx, tk, b, true);
            if (n < 0)
                goto oom;
            written += n;
            if (n == 0 && tk->kind != TOK_END && !(tk->kind == TOK_SPECIAL && (tk->special == ';' || tk->special == ',')))
                next_token(lx, tk); /* skip what does not parse */
        }
        if (tk->kind != TOK_END)
            next_token(lx, tk);
        if (put_addr(b, NULL, NULL, NULL, NULL) < 0)
            goto oom;
        written++;
        goto done;
    }
    if (tk->kind == TOK_SPECIAL && tk->special == '<') {
        /* name-addr: [display-name] "<" [route ":"] addr-spec ">" */
        buf_reset(&local);
        dot_pending = false;
        next_token(lx, tk);
        if (tk->kind == TOK_SPECIAL && tk->special == '@') {
            while (tk->kind != TOK_END && !(tk->kind == TOK_SPECIAL && (tk->special == ':' || tk->special == '>'))) {
                if (tk->kind == TOK_SPECIAL ? buf_append(&route, &tk->special, 1) < 0
                                            : buf_append(&route, tk->text.data, tk->text.len) < 0)
                    goto oom;
                next_token(lx, tk);
            }
            if (tk->kind == TOK_SPECIAL && tk->special == ':')
                next_token(lx, tk);
        }
        while (tk->kind == TOK_WORD || (tk->kind == TOK_SPECIAL && tk->special == '.')) {
            if (tk->kind == TOK_WORD &&
                ((local.len && dot_pending && buf_puts(&local, ".") < 0) ||
                 buf_append(&local, tk->text.data, tk->text.len) < 0))
                goto oom;
            dot_pending = tk->kind == TOK_SPECIAL;
            next_token(lx, tk);
        }
        if (tk->kind == TOK_SPECIAL && tk->special == '@') {
            next_token(lx, tk);
            while (tk->kind == TOK_WORD || (tk->kind == TOK_SPECIAL && tk->special == '.')) {
                if (tk->kind == TOK_SPECIAL ? buf_puts(&domain, ".") < 0
                                            : buf_append(&domain, tk->text.data, tk->text.len) < 0)
                    goto oom;
                next_token(lx, tk);
            }
        }
        while (tk->kind != TOK_END && !(tk->kind == TOK_SPECIAL && tk->special == '>'))
            next_token(lx, tk);
        if (tk->kind != TOK_END)
            next_token(lx, tk);
        if (!phrase.len && lx->comment.len)
            rc = buf_append(&phrase, lx->comment.data, lx->comment.len);
        skip_cfws(lx);
        if (rc < 0)
            goto oom;
    } else if (tk->kind == TOK_SPECIAL && tk->special == '@') {
        /* addr-spec: the words were the local part; no display name */
        buf_reset(&phrase);
        next_token(lx, tk);
        while (tk->kind == TOK_WORD || (tk->kind == TOK_SPECIAL && tk->special == '.')) {
            if (tk->kind == TOK_SPECIAL ? buf_puts(&domain, ".") < 0
                                        : buf_append(&domain, tk->text.data, tk->text.len) < 0)
                goto oom;
            next_token(lx, tk);
        }
        if (lx->comment.len && buf_append(&phrase, lx->comment.data, lx->comment.len) < 0)
            goto oom;
    } else if (local.len) {
        /* a local part without a domain */
        buf_reset(&phrase);
    } else {
        goto done; /* nothing here */
    }
    if (put_addr(b, phrase.len ? phrase.data : NULL, route.len ? route.data : NULL,
                 local.len ? local.data : "MISSING_MAILBOX",
                 domain.len ? domain.data : "MISSING_DOMAIN") < 0)
        goto oom;
    written++;
    goto done;
oom:
    written = -1;
done:
    buf_free(&phrase);
    buf_free(&local);
    buf_free(&domain);
    buf_free(&route);
    return lx->oom ? -1 : written;
}

/* An env-from/env-to/... member: NIL, or "(" 1*address ")". */
static int put_addresses(buf_t *b, const char *raw_value)
{
    if (!raw_value)
        return buf_puts(b, "NIL");
    lexer_t lx = { .s = raw_value, .pos = 0, .len = strlen(raw_value) };
    buf_init(&lx.comment);
    token_t tk;
    buf_init(&tk.text);
    buf_t list;
    buf_init(&list);
    int total = 0, rc = 0;
    next_token(&lx, &tk);
    while (tk.kind != TOK_END) {
        if (tk.kind == TOK_SPECIAL && tk.special == ',') {
            next_token(&lx, &tk);
            continue;
        }
        int n = parse_address(&lx, &tk, &list);
        if (n < 0) {
            rc = -1;
            break;
        }
        total += n;
        if (n == 0 && tk.kind != TOK_END && !(tk.kind == TOK_SPECIAL && tk.special == ','))
            next_token(&lx, &tk);
    }
    if (rc == 0)
        rc = total ? (buf_puts(b, "(") < 0 || buf_append(b, list.data, list.len) < 0 ||
                      buf_puts(b, ")") < 0 ? -1 : 0)
                   : buf_puts(b, "NIL");
    buf_free(&list);
    buf_free(&tk.text);
    buf_free(&lx.comment);
    return rc;
}

static bool has_addresses(const char *raw_value)
{
    if (!raw_value)
        return false;
    for (const char *p = raw_value; *p; p++)
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n')
            return true;
    return false;
}

/* RFC 3501 section 7.4.2 ENVELOPE of a message whose header fields are in obj. Sender and
 * Reply-To that are absent or empty are the From member. */
static int put_envelope(buf_t *b, GMimeObject *obj)
{
    const char *from = raw_header(obj, "From");
    const char *sender = raw_header(obj, "Sender");
    const char *reply = raw_header(obj, "Reply-To");
    if (!has_addresses(sender))
        sender = from;
    if (!has_addresses(reply))
        reply = from;
    if (buf_puts(b, "(") < 0 || put_field(b, obj, "Date", false) < 0 || buf_puts(b, " ") < 0 ||
        put_field(b, obj, "Subject", true) < 0 || buf_puts(b, " ") < 0 ||
        put_addresses(b, from) < 0 || buf_puts(b, " ") < 0 || put_addresses(b, sender) < 0 ||
        buf_puts(b, " ") < 0 || put_addresses(b, reply) < 0 || buf_puts(b, " ") < 0 ||
        put_addresses(b, raw_header(obj, "To")) < 0 || buf_puts(b, " ") < 0 ||
        put_addresses(b, raw_header(obj, "Cc")) < 0 || buf_puts(b, " ") < 0 ||
        put_addresses(b, raw_header(obj, "Bcc")) < 0 || buf_puts(b, " ") < 0 ||
        put_field(b, obj, "In-Reply-To", false) < 0 || buf_puts(b, " ") < 0 ||
        put_field(b, obj, "Message-ID", false) < 0 || buf_puts(b, ")") < 0)
        return -1;
    return 0;
}

/* ---- body structure (RFC 3501 section 7.4.2 BODYSTRUCTURE, section 9 body) ----------- */

static bool attr_char(unsigned char c)
{
    return g_ascii_isalnum(c) || strchr("!#$&+-.^_`|~", c) != NULL;
}

/* An RFC 2231 extended value "charset'language'%XX..." of a value GMime decoded to UTF-8. */
static int put_ext_value(buf_t *b, GMimeParam *p)
{
    const char *v = g_mime_param_get_value(p);
    const char *cs = g_mime_param_get_charset(p);
    const char *lang = g_mime_param_get_lang(p);
    gsize n = strlen(v);
    char *conv = NULL;
    if (cs && g_ascii_strcasecmp(cs, "utf-8") != 0 && g_ascii_strcasecmp(cs, "us-ascii") != 0)
        conv = g_convert(v, (gssize)n, cs, "UTF-8", NULL, &n, NULL);
    const char *bytes = conv ? conv : v;
    if (!conv)
        n = strlen(v);
    buf_t e;
    buf_init(&e);
    int rc = buf_printf(&e, "%s'%s'", cs ? cs : "", lang ? lang : "");
    for (gsize i = 0; rc == 0 && i < n; i++) {
        unsigned char c = (unsigned char)bytes[i];
        rc = attr_char(c) ? buf_append(&e, &bytes[i], 1) : buf_printf(&e, "%%%02X", c);
    }
    if (rc == 0)
        rc = put_string(b, e.data, e.len);
    buf_free(&e);
    g_free(conv);
    return rc;
}

/* body-fld-param: NIL or ("name" "value" ...). Plain parameters first, then the RFC 2231
 * ones as "name*" with the extended value (continuations joined). charset_default adds
 * ("charset" "us-ascii") to a text part that names none (RFC 2045 section 5.2). */
static int put_params(buf_t *b, GMimeParamList *pl, bool charset_default)
{
    int n = pl ? g_mime_param_list_length(pl) : 0;
    bool has_charset = false, any = false;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n; i++) {
            GMimeParam *p = g_mime_param_list_get_parameter_at(pl, i);
            bool ext = g_mime_param_get_encoding_method(p) == GMIME_PARAM_ENCODING_METHOD_RFC2231;
            if (ext != (pass == 1))
                continue;
            const char *name = g_mime_param_get_name(p);
            if (g_ascii_strcasecmp(name, "charset") == 0)
                has_charset = true;
            if (buf_puts(b, any ? " " : "(") < 0)
                return -1;
            any = true;
            if (ext) {
                char *key = g_strconcat(name, "*", NULL);
                int rc = put_cstring(b, key);
                g_free(key);
                if (rc < 0 || buf_puts(b, " ") < 0 || put_ext_value(b, p) < 0)
                    return -1;
            } else if (put_cstring(b, name) < 0 || buf_puts(b, " ") < 0 ||
                       put_cstring(b, g_mime_param_get_value(p)) < 0) {
                return -1;
            }
        }
    }
    if (charset_default && !has_charset) {
        if (buf_puts(b, any ? " " : "(") < 0 || buf_puts(b, "\"charset\" \"us-ascii\"") < 0)
            return -1;
        any = true;
    }
    return buf_puts(b, any ? ")" : "NIL");
}

static int put_disposition(buf_t *b, GMimeObject *obj)
{
    GMimeContentDisposition *d = obj ? g_mime_object_get_content_disposition(obj) : NULL;
    if (!d || !g_mime_content_disposition_get_disposition(d))
        return buf_puts(b, "NIL");
    if (buf_puts(b, "(") < 0 || put_cstring(b, g_mime_content_disposition_get_disposition(d)) < 0 ||
        buf_puts(b, " ") < 0 || put_params(b, g_mime_content_disposition_get_parameters(d), false) < 0)
        return -1;
    return buf_puts(b, ")");
}

/* body-fld-lang: NIL or ("tag" ...), from Content-Language (RFC 3282). */
static int put_language(buf_t *b, GMimeObject *obj)
{
    char *v = unfold(raw_header(obj, "Content-Language"));
    if (!v)
        return raw_header(obj, "Content-Language") ? -1 : buf_puts(b, "NIL");
    int rc = 0;
    bool any = false;
    for (char *save = NULL, *tok = strtok_r(v, ", \t", &save); tok && rc == 0;
         tok = strtok_r(NULL, ", \t", &save)) {
        rc = buf_puts(b, any ? " " : "(");
        if (rc == 0)
            rc = put_cstring(b, tok);
        any = true;
    }
    if (rc == 0)
        rc = buf_puts(b, any ? ")" : "NIL");
    free(v);
    return rc;
}

static size_t count_lines(const char *raw, size_t from, size_t to)
{
    size_t n = 0;
    for (size_t i = from; i < to; i++)
        n += raw[i] == '\n';
    return n;
}

static int put_body(buf_t *b, const tree_t *t, const node_t *n, bool ext);

/* The type and subtype of an entity; obj NULL is the stand-in empty text/plain part. */
static void media_type(const node_t *n, const char **type_r, const char **sub_r)
{
    GMimeContentType *ct = n->obj ? g_mime_object_get_content_type(n->obj) : NULL;
    *type_r = ct ? g_mime_content_type_get_media_type(ct) : NULL;
    *sub_r = ct ? g_mime_content_type_get_media_subtype(ct) : NULL;
    if (!*type_r || !*sub_r) {
        *type_r = "text";
        *sub_r = "plain";
    }
}

static int put_body(buf_t *b, const tree_t *t, const node_t *n, bool ext)
{
    const char *type, *sub;
    media_type(n, &type, &sub);
    GMimeContentType *ct = n->obj ? g_mime_object_get_content_type(n->obj) : NULL;
    GMimeParamList *params = ct ? g_mime_content_type_get_parameters(ct) : NULL;
    if (buf_puts(b, "(") < 0)
        return -1;
    if (n->kind == NODE_MULTI) {
        for (size_t i = 0; i < n->nkids; i++)
            if (put_body(b, t, &n->kids[i], ext) < 0)
                return -1;
        if (buf_puts(b, " ") < 0 || put_cstring(b, sub) < 0)
            return -1;
        if (ext && (buf_puts(b, " ") < 0 || put_params(b, params, false) < 0 ||
                    buf_puts(b, " ") < 0 || put_disposition(b, n->obj) < 0 ||
                    buf_puts(b, " ") < 0 || put_language(b, n->obj) < 0 || buf_puts(b, " ") < 0 ||
                    put_field(b, n->obj, "Content-Location", false) < 0))
            return -1;
        return buf_puts(b, ")");
    }
    bool text = g_ascii_strcasecmp(type, "text") == 0;
    const char *cte = raw_header(n->obj, "Content-Transfer-Encoding");
    if (put_cstring(b, type) < 0 || buf_puts(b, " ") < 0 || put_cstring(b, sub) < 0 ||
        buf_puts(b, " ") < 0 || put_params(b, params, text) < 0 || buf_puts(b, " ") < 0 ||
        put_field(b, n->obj, "Content-ID", false) < 0 || buf_puts(b, " ") < 0 ||
        put_field(b, n->obj, "Content-Description", false) < 0 || buf_puts(b, " ") < 0)
        return -1;
    if (cte) {
        char *e = unfold(cte);
        if (!e)
            return -1;
        g_strchomp(e);
        int rc = put_cstring(b, e);
        free(e);
        if (rc < 0)
            return -1;
    } else if (buf_puts(b, "\"7bit\"") < 0) {
        return -1;
    }
    if (buf_printf(b, " %zu", n->end - n->body) < 0)
        return -1;
    if (n->kind == NODE_MESSAGE) {
        if (buf_puts(b, " ") < 0 ||
            put_envelope(b, n->msg ? GMIME_OBJECT(n->msg) : NULL) < 0 || buf_puts(b, " ") < 0 ||
            put_body(b, t, &n->kids[0], ext) < 0)
            return -1;
    }
    if ((text || n->kind == NODE_MESSAGE) &&
        buf_printf(b, " %zu", count_lines(t->raw, n->body, n->end)) < 0)
        return -1;
    if (ext && (buf_puts(b, " ") < 0 || put_field(b, n->obj, "Content-MD5", false) < 0 ||
                buf_puts(b, " ") < 0 || put_disposition(b, n->obj) < 0 || buf_puts(b, " ") < 0 ||
                put_language(b, n->obj) < 0 || buf_puts(b, " ") < 0 ||
                put_field(b, n->obj, "Content-Location", false) < 0))
        return -1;
    return buf_puts(b, ")");
}

/* ---- mail_info ------------------------------------------------------------------------ */

static char *take(buf_t *b)
{
    char *s = b->cap ? b->data : strdup("");
    buf_init(b);
    return s;
}

int mail_info_compute(const char *raw, size_t len, mail_info_t *out)
{
    memset(out, 0, sizeof *out);
    tree_t t;
    if (tree_parse(&t, raw, len) < 0)
        return -1;
    buf_t env, bs, body;
    buf_init(&env);
    buf_init(&bs);
    buf_init(&body);
    const node_t *top = &t.top.kids[0];
    int rc = 0;
    if (put_envelope(&env, t.msg ? GMIME_OBJECT(t.msg) : NULL) < 0 ||
        put_body(&bs, &t, top, true) < 0 || put_body(&body, &t, top, false) < 0)
        rc = -1;
    tree_free(&t);
    if (rc == 0) {
        out->envelope = take(&env);
        out->bodystructure = take(&bs);
        out->body = take(&body);
        if (!out->envelope || !out->bodystructure || !out->body) {
            mail_info_free(out);
            rc = -1;
        }
    }
    buf_free(&env);
    buf_free(&bs);
    buf_free(&body);
    return rc;
}

void mail_info_free(mail_info_t *info)
{
    if (!info)
        return;
    free(info->envelope);
    free(info->bodystructure);
    free(info->body);
    memset(info, 0, sizeof *info);
}

/* ---- BODY[section] ---------------------------------------------------------------------- */

/* Appends raw[from, to) with every bare LF as CRLF (a result for IMAP, RFC 3501 section 2.2). */
static int append_crlf(buf_t *out, const char *raw, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        if (raw[i] == '\n' && (i == from || raw[i - 1] != '\r') && buf_append(out, "\r", 1) < 0)
            return -1;
        if (buf_append(out, raw + i, 1) < 0)
            return -1;
    }
    return 0;
}

/* The header fields of [from, to) whose names are (or with not, are not) in names, followed
 * by the blank line, also for a header that lacks one (RFC 3501 section 6.4.5: the subset
 * includes the blank line); line ends as CRLF. */
static int filter_fields(const char *raw, size_t from, size_t to, char **names, size_t nnames,
                         bool not, buf_t *out)
{
    size_t p = from;
    while (p < to) {
        size_t line_end = line_after(raw, p, to);
        if (raw[p] == '\n' || (raw[p] == '\r' && p + 1 < to && raw[p + 1] == '\n'))
            break; /* the blank line */
        size_t field_end = line_end;
        while (field_end < to && (raw[field_end] == ' ' || raw[field_end] == '\t'))
            field_end = line_after(raw, field_end, to);
        const char *colon = memchr(raw + p, ':', line_end - p);
        bool match = false;
        if (colon) {
            size_t nlen = (size_t)(colon - (raw + p));
            while (nlen && (raw[p + nlen - 1] == ' ' || raw[p + nlen - 1] == '\t'))
                nlen--;
            for (size_t i = 0; i < nnames && !match; i++)
                match = strlen(names[i]) == nlen && strncasecmp(names[i], raw + p, nlen) == 0;
            if (match != not && append_crlf(out, raw, p, field_end) < 0)
                return -1;
        }
        p = field_end;
    }
    return buf_puts(out, "\r\n");
}

/* Reads "(" astring *(SP astring) ")" (RFC 3501 section 9 header-list) at *sp. */
static int parse_header_list(const char **sp, char ***names_r, size_t *n_r)
{
    const char *s = *sp;
    char **names = NULL;
    size_t n = 0;
    if (*s++ != '(')
        return -1;
    for (;;) {
        const char *start = s;
        char *word;
        if (*s == '"') {
            buf_t w;
            buf_init(&w);
            for (s++; *s && *s != '"'; s++) {
                if (*s == '\\' && (s[1] == '"' || s[1] == '\\'))
                    s++;
                if (buf_append(&w, s, 1) < 0) {
                    buf_free(&w);
                    goto bad;
                }
            }
            if (*s != '"' || w.len == 0) {
                buf_free(&w);
                goto bad;
            }
            s++;
            word = strdup(w.data);
            buf_free(&w);
        } else {
            while (*s > ' ' && *s < 0x7f && !strchr("(){%*\"\\]", *s))
                s++;
            if (s == start)
                goto bad;
            word = strndup(start, (size_t)(s - start));
        }
        char **grown = realloc(names, (n + 1) * sizeof *names);
        if (!word || !grown) {
            free(word);
            if (grown)
                names = grown;
            goto bad;
        }
        names = grown;
        names[n++] = word;
        if (*s == ')')
            break;
        if (*s++ != ' ')
            goto bad;
    }
    *sp = s + 1;
    *names_r = names;
    *n_r = n;
    return 0;
bad:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return -1;
}

static bool keyword(const char **sp, const char *kw)
{
    size_t n = strlen(kw);
    if (strncasecmp(*sp, kw, n) != 0)
        return false;
    *sp += n;
    return true;
}

int mail_section(const char *raw, size_t len, const char *section, size_t *off_r,
                 size_t *len_r, char **copy_r)
{
    *copy_r = NULL;
    *off_r = 0;
    *len_r = 0;
    /* section-part: nz-number *("." nz-number), then section-msgtext or "MIME". */
    unsigned long parts[64];
    size_t nparts = 0;
    const char *s = section;
    while (*s >= '1' && *s <= '9') {
        char *e;
        unsigned long v = strtoul(s, &e, 10);
        if (nparts == sizeof parts / sizeof parts[0] || v == 0 || v > 1000000)
            return -1;
        parts[nparts++] = v;
        s = e;
        if (*s == '\0')
            break;
        if (*s++ != '.' || *s == '\0')
            return -1;
    }
    enum { WHOLE, HEADER, FIELDS, FIELDS_NOT, TEXT, MIME } what = WHOLE;
    char **names = NULL;
    size_t nnames = 0;
    if (*s) {
        if (keyword(&s, "HEADER.FIELDS.NOT ")) {
            what = FIELDS_NOT;
        } else if (keyword(&s, "HEADER.FIELDS ")) {
            what = FIELDS;
        } else if (keyword(&s, "HEADER")) {
            what = HEADER;
        } else if (keyword(&s, "TEXT")) {
            what = TEXT;
        } else if (keyword(&s, "MIME")) {
            if (nparts == 0)
                return -1;
            what = MIME;
        } else {
            return -1;
        }
        if ((what == FIELDS || what == FIELDS_NOT) && parse_header_list(&s, &names, &nnames) < 0)
            return -1;
        if (*s != '\0')
            goto bad;
    }
    if (what == WHOLE && nparts == 0) {
        *len_r = len; /* BODY[]: the message as it is, nothing to parse */
        return 0;
    }

    tree_t t;
    if (tree_parse(&t, raw, len) < 0)
        goto bad;
    int rc = 0;
    /* Walk down: a message's number n picks part n of its body (the body itself when it is
     * not multipart and n is 1); a multipart's picks its part n. */
    const node_t *cur = &t.top;
    for (size_t i = 0; i < nparts && rc == 0; i++) {
        if (cur->kind == NODE_MESSAGE)
            cur = &cur->kids[0];
        if (cur->kind == NODE_MULTI) {
            if (parts[i] > cur->nkids)
                rc = 1;
            else
                cur = &cur->kids[parts[i] - 1];
        } else if (parts[i] != 1) {
            rc = 1;
        }
    }
    size_t from = 0, to = 0;
    if (rc == 0) {
        if (what == WHOLE) {
            from = nparts ? cur->body : 0;
            to = nparts ? cur->end : len;
        } else if (what == MIME) {
            from = cur->hdr;
            to = cur->body;
        } else if (cur->kind != NODE_MESSAGE) {
            rc = 1; /* HEADER and TEXT need a message/rfc822 part */
        } else {
            const node_t *inner = &cur->kids[0];
            from = what == TEXT ? inner->body : cur->body;
            to = what == TEXT ? cur->end : inner->body;
        }
    }
    if (rc == 0 && (what == FIELDS || what == FIELDS_NOT)) {
        buf_t out;
        buf_init(&out);
        size_t n = 0;
        if (filter_fields(raw, from, to, names, nnames, what == FIELDS_NOT, &out) < 0 ||
            (n = out.len, !(*copy_r = take(&out)))) {
            rc = -1;
        } else {
            *len_r = n;
        }
        buf_free(&out);
    } else if (rc == 0) {
        *off_r = from;
        *len_r = to - from;
    }
    tree_free(&t);
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    return rc;
bad:
    for (size_t i = 0; i < nnames; i++)
        free(names[i]);
    free(names);
    return -1;
}

/* ---- search text ---------------------------------------------------------------------- */

#define SEARCH_MAX_DEPTH 64 /* nested multiparts and messages followed */

/* Appends s (NUL-terminated) as valid UTF-8: an invalid sequence becomes U+FFFD. */
static int put_text(buf_t *b, const char *s)
{
    if (g_utf8_validate(s, -1, NULL))
        return buf_puts(b, s);
    char *valid = g_utf8_make_valid(s, -1);
    if (!valid)
        return -1;
    int rc = buf_puts(b, valid);
    g_free(valid);
    return rc;
}

/* One header field "name: value" of raw[from, to) (its line breaks included): appended as
 * "Name: value\n", the value unfolded (RFC 5322 section 2.2.3) and its RFC 2047 words
 * decoded. A line without a colon is not a field and is left out. */
static int put_search_field(buf_t *b, const char *raw, size_t from, size_t to)
{
    const char *colon = memchr(raw + from, ':', to - from);
    if (!colon)
        return 0;
    size_t nlen = (size_t)(colon - (raw + from));
    while (nlen > 0 && (raw[from + nlen - 1] == ' ' || raw[from + nlen - 1] == '\t'))
        nlen--;
    if (nlen == 0)
        return 0;
    size_t v = (size_t)(colon - raw) + 1;
    char *name = strndup(raw + from, nlen), *value = malloc(to - v + 1);
    int rc = -1;
    if (name && value) {
        size_t o = 0;
        for (size_t i = v; i < to && raw[i] != '\0'; i++)
            if (raw[i] != '\r' && raw[i] != '\n')
                value[o++] = raw[i];
        while (o > 0 && (value[o - 1] == ' ' || value[o - 1] == '\t'))
            o--;
        value[o] = '\0';
        const char *lead = value + strspn(value, " \t");
        char *dec = g_mime_utils_header_decode_text(NULL, lead);
        rc = put_text(b, name) < 0 || buf_puts(b, ": ") < 0 || put_text(b, dec ? dec : lead) < 0 ||
             buf_puts(b, "\n") < 0 ? -1 : 0;
        g_free(dec);
    }
    free(name);
    free(value);
    return rc;
}

/* Every header field of the header block raw[from, to), in order. */
static int put_search_headers(buf_t *b, const char *raw, size_t from, size_t to)
{
    size_t field = from, p = from;
    while (p < to) {
        const char *nl = memchr(raw + p, '\n', to - p);
        size_t next = nl ? (size_t)(nl - raw) + 1 : to;
        bool blank = next - p <= 2 && (raw[p] == '\n' || (raw[p] == '\r' && next - p == 2));
        /* A line that starts with white space continues the field before it. */
        if (p > field && raw[p] != ' ' && raw[p] != '\t') {
            if (put_search_field(b, raw, field, p) < 0)
                return -1;
            field = p;
        }
        if (blank)
            return 0;
        p = next;
    }
    return p > field ? put_search_field(b, raw, field, p) : 0;
}

/* Starts a new piece of the body text: pieces are joined with "\n". */
static int put_separator(buf_t *b)
{
    return b->len > 0 && b->data[b->len - 1] != '\n' ? buf_puts(b, "\n") : 0;
}

static int put_search_body(buf_t *b, const tree_t *t, const node_t *n, unsigned depth)
{
    if (depth > SEARCH_MAX_DEPTH)
        return 0;
    if (n->kind == NODE_MESSAGE) {
        const node_t *k = &n->kids[0];
        if (put_separator(b) < 0 || put_search_headers(b, t->raw, k->hdr, k->body) < 0)
            return -1;
        return put_search_body(b, t, k, depth + 1);
    }
    if (n->kind == NODE_MULTI) {
        for (size_t i = 0; i < n->nkids; i++)
            if (put_search_body(b, t, &n->kids[i], depth + 1) < 0)
                return -1;
        return 0;
    }
    if (!n->obj || !GMIME_IS_TEXT_PART(n->obj))
        return 0;
    /* Transfer decoding, then the part's charset (or a guess) to UTF-8. */
    char *text = g_mime_text_part_get_text(GMIME_TEXT_PART(n->obj));
    if (!text)
        return 0; /* no content */
    int rc = put_separator(b) < 0 || put_text(b, text) < 0 ? -1 : 0;
    g_free(text);
    return rc;
}

int mail_search_text(const char *raw, size_t len, char **headers_r, char **body_r)
{
    *headers_r = *body_r = NULL;
    tree_t t;
    if (tree_parse(&t, raw, len) < 0)
        return -1;
    buf_t hb, bb;
    buf_init(&hb);
    buf_init(&bb);
    int rc = 0;
    const node_t *top = &t.top.kids[0];
    if (put_search_headers(&hb, raw, top->hdr, top->body) < 0 ||
        put_search_body(&bb, &t, top, 0) < 0)
        rc = -1;
    tree_free(&t);
    if (rc == 0) {
        *headers_r = take(&hb);
        *body_r = take(&bb);
        if (!*headers_r || !*body_r) {
            free(*headers_r);
            free(*body_r);
            *headers_r = *body_r = NULL;
            rc = -1;
        }
    }
    buf_free(&hb);
    buf_free(&bb);
    return rc;
}
