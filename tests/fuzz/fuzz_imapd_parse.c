/* imapd's parsing layer (services/imapd/parse.c) fed a client's byte stream the way the
 * session feeds it (session.c imap_line/imap_bytes): lines go to the command assembler,
 * announced literals take the bytes that follow (in pieces), refused non-synchronising
 * literals are skipped, and every complete command is parsed; then, by command name, its
 * arguments go through the parsers the handlers use: sequence sets (resolved, iterated),
 * FETCH attributes, STORE, SEARCH and its SQL translation, flags, dates, mailbox names in
 * modified UTF-7, LIST patterns, and the astring writer on every string argument.
 *
 * Input: byte 0 = a seed (piece sizes of literals, the message count sequence sets resolve
 * against), then the stream: lines end with LF (CR before it dropped, as the line reader
 * does), a literal's bytes follow its line. Invariants checked beyond the sanitizers: see
 * the check_* functions. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imapd.h"
#include "parse.h"

static unsigned seed;

/* ---- checks ---------------------------------------------------------------------------- */

static bool utf8_ok(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3
                                : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (n == 0 || i + n > len)
            return false;
        for (size_t k = 1; k < n; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        i += n;
    }
    return true;
}

static void check_args(const char *data, size_t len, const imap_arg_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i].raw < data || a[i].raw + a[i].raw_len > data + len)
            abort();
        switch (a[i].type) {
        case IMAP_ARG_ATOM:
        case IMAP_ARG_NUMBER:
        case IMAP_ARG_NIL:
            if (a[i].str != a[i].raw || a[i].len != a[i].raw_len || a[i].len == 0)
                abort();
            break;
        case IMAP_ARG_QUOTED:
            if (a[i].str[a[i].len] != '\0' || strlen(a[i].str) != a[i].len)
                abort();
            break;
        case IMAP_ARG_LITERAL:
            if (a[i].str < data || a[i].str + a[i].len > data + len)
                abort();
            break;
        case IMAP_ARG_LIST:
            if (a[i].n && !a[i].list)
                abort();
            check_args(data, len, a[i].list, a[i].n);
            break;
        default:
            abort();
        }
    }
}

/* The writer's output read back: an atom, a quoted string or a literal of the same bytes. */
static void check_astring(const char *s, size_t len, bool nstring)
{
    buf_t b;
    buf_init(&b);
    if ((nstring ? imap_append_nstring(&b, s, len) : imap_append_astring(&b, s, len)) < 0)
        abort();
    if (b.len == 0)
        abort();
    if (b.data[0] == '{') {
        char *end;
        size_t n = strtoul(b.data + 1, &end, 10);
        size_t used = (size_t)(end - b.data) + 3;
        if (n != len || end[0] != '}' || end[1] != '\r' || end[2] != '\n' || used + n != b.len ||
            memcmp(b.data + used, s, len) != 0)
            abort();
    } else if (b.data[0] == '"') {
        size_t k = 0;
        for (size_t i = 1; i + 1 < b.len; i++, k++) {
            char c = b.data[i];
            if (c == '\\')
                c = b.data[++i];
            else if (c == '"' || c == '\r' || c == '\n' || c == '\0')
                abort();
            if (k >= len || c != s[k])
                abort();
        }
        if (k != len || b.data[b.len - 1] != '"')
            abort();
    } else if (nstring || b.len != len || memcmp(b.data, s, len) != 0) {
        abort();
    }
    buf_free(&b);
}

/* ---- the parsers the handlers use ------------------------------------------------------ */

static void try_seqset(const imap_arg_t *a)
{
    if (a->type != IMAP_ARG_ATOM && a->type != IMAP_ARG_NUMBER)
        return;
    imap_seqset_t set, res;
    const char *err = NULL;
    imap_seqset_init(&set);
    imap_seqset_init(&res);
    uint32_t max = seed % 4 == 0 ? 0 : seed % 4 == 1 ? UINT32_MAX - 1 : seed * 7919u % 100000;
    if (imap_seqset_parse(a->str, a->len, &set, &err) == 1) {
        if (set.n == 0)
            abort();
        if (imap_seqset_resolve(&set, max, &res) < 0)
            abort();
        /* Resolved: sorted, merged, within 1..max. */
        for (size_t i = 0; i < res.n; i++) {
            if (res.r[i].lo < 1 || res.r[i].lo > res.r[i].hi || res.r[i].hi > max)
                abort();
            if (i && res.r[i].lo <= (uint64_t)res.r[i - 1].hi + 1)
                abort();
        }
        imap_seqset_iter_t it;
        imap_seqset_iter_init(&it, &res);
        uint32_t v, last = 0;
        for (int k = 0; k < 2000 && imap_seqset_iter_next(&it, &v); k++) {
            if (v <= last || v > max || !imap_seqset_contains(&set, v, max))
                abort();
            last = v;
        }
        if (max > 0 && (imap_seqset_contains(&set, max, max) !=
                        (res.n > 0 && res.r[res.n - 1].hi == max)))
            abort();
    } else if (!err) {
        abort();
    }
    imap_seqset_free(&set);
    imap_seqset_free(&res);
}

static void try_fetch(const imap_arg_t *a, size_t n)
{
    imap_fetch_t f;
    const char *err = NULL;
    memset(&f, 0, sizeof f);
    if (imap_fetch_parse(a, n, &f, &err) == 1) {
        if (f.n == 0)
            abort();
        for (size_t i = 0; i < f.n; i++) {
            const imap_fetch_item_t *it = &f.items[i];
            if (it->kind == IMAP_FETCH_BODY_SECTION) {
                if (!it->section || it->n_parts > IMAP_SECTION_MAX_PARTS)
                    abort();
                for (size_t k = 0; k < it->n_parts; k++)
                    if (it->parts[k] == 0)
                        abort();
                for (size_t k = 0; k < it->n_fields; k++)
                    if (!it->fields[k] || !*it->fields[k])
                        abort();
            }
        }
        imap_fetch_has(&f, IMAP_FETCH_UID);
        imap_fetch_sets_seen(&f);
        if (imap_fetch_add(&f, IMAP_FETCH_UID) < 0 || !imap_fetch_has(&f, IMAP_FETCH_UID))
            abort();
    } else if (!err) {
        abort();
    }
    imap_fetch_free(&f);
}

static void try_store(const imap_arg_t *a, size_t n)
{
    imap_store_t st;
    const char *err = NULL;
    memset(&st, 0, sizeof st);
    if (imap_store_parse(a, n, &st, &err) == 1) {
        if (st.set.n == 0 || st.flags.system & ~0x1fu)
            abort();
        for (size_t i = 0; i < st.flags.n_keywords; i++)
            if (!st.flags.keywords[i] || !*st.flags.keywords[i])
                abort();
    } else if (!err) {
        abort();
    }
    imap_store_free(&st);
}

/* The sequence numbers of a mailbox of 1000 messages map to UIDs 2n. */
static int seq_to_uids(void *ctx, const imap_seqset_t *seqs, imap_seqset_t *uids_r,
                       const char **error_r)
{
    (void)ctx;
    imap_seqset_t res;
    imap_seqset_init(&res);
    if (imap_seqset_resolve(seqs, 1000, &res) < 0)
        abort();
    for (size_t i = 0; i < res.n; i++)
        if (imap_seqset_add(uids_r, res.r[i].lo * 2, res.r[i].hi * 2) < 0)
            abort();
    imap_seqset_free(&res);
    for (size_t i = 0; i < seqs->n; i++)
        if (seqs->r[i].lo != IMAP_SEQ_STAR && seqs->r[i].lo > 1000) {
            *error_r = "No such message";
            return -1;
        }
    return 0;
}

/* Every placeholder names a parameter of this translation, every parameter is used, and
 * every parameter is valid UTF-8 (PostgreSQL text). The SQL text holds no client bytes. */
static void check_sql(const buf_t *where, const imap_sql_params_t *p, int first)
{
    bool *used = calloc(p->n + 1, 1);
    if (!used)
        abort();
    for (size_t i = 0; i < where->len; i++) {
        unsigned char c = (unsigned char)where->data[i];
        if (c >= 0x80 || c < 0x20)
            abort();
        if (c != '$')
            continue;
        char *end;
        long k = strtol(where->data + i + 1, &end, 10);
        if (end == where->data + i + 1 || k < first || (size_t)(k - first) >= p->n)
            abort();
        used[k - first] = true;
    }
    for (size_t i = 0; i < p->n; i++)
        if (!used[i] || !p->v[i] || !utf8_ok((const unsigned char *)p->v[i], strlen(p->v[i])))
            abort();
    free(used);
}

static void try_search(const imap_arg_t *a, size_t n)
{
    imap_search_t prog;
    const char *err = NULL;
    memset(&prog, 0, sizeof prog);
    if (imap_search_parse(a, n, &prog, &err) == 1) {
        if (!prog.root)
            abort();
        imap_seqset_t recent;
        imap_seqset_init(&recent);
        if (seed & 1)
            imap_seqset_add(&recent, 4, 6);
        imap_sql_ctx_t ctx = {
            .first_param = 2,
            .uid_max = 2000,
            .seq_to_uids = seq_to_uids,
            .recent = seed & 1 ? &recent : NULL,
        };
        imap_sql_params_t params;
        buf_t where;
        imap_sql_params_init(&params);
        buf_init(&where);
        if (imap_search_sql(&prog, &ctx, &where, &params, &err) == 0)
            check_sql(&where, &params, ctx.first_param);
        else if (!err)
            abort();
        buf_free(&where);
        imap_sql_params_free(&params);
        imap_seqset_free(&recent);
    } else if (!err) {
        abort();
    }
    imap_search_free(&prog);
}

static void try_flags(const imap_arg_t *a, size_t n)
{
    imap_flags_t f;
    const char *err = NULL;
    memset(&f, 0, sizeof f);
    if (imap_flags_parse(a, n, &f, &err) == 1) {
        for (unsigned bit = 1; bit <= IMAP_FLAG_DRAFT; bit <<= 1)
            if (f.system & bit) {
                const char *name = imap_sysflag_name(bit);
                if (!name || imap_sysflag_parse(name, strlen(name)) != bit)
                    abort();
            }
    } else if (!err) {
        abort();
    }
    imap_flags_free(&f);
}

static void try_dates(const char *s, size_t len)
{
    int64_t day;
    if (imap_date_parse(s, len, &day) == 1 && (day < -800000 || day > 3000000))
        abort();
    time_t t, t2;
    int tz, tz2;
    if (imap_datetime_parse(s, len, &t, &tz) == 1) {
        char out[IMAP_DATETIME_LEN];
        imap_datetime_format(t, tz, out);
        if (strlen(out) != IMAP_DATETIME_LEN - 1 ||
            imap_datetime_parse(out, strlen(out), &t2, &tz2) != 1 || t2 != t || tz2 != tz)
            abort();
    }
}

static void try_mailbox(const imap_arg_t *a)
{
    const char *s;
    size_t len;
    if (!imap_arg_astring(a, &s, &len))
        return;
    buf_t utf8, norm;
    const char *err = NULL;
    buf_init(&utf8);
    buf_init(&norm);
    if (imap_mutf7_decode(s, len, &utf8, &err) == 1) {
        if (!utf8_ok((const unsigned char *)utf8.data, utf8.len) ||
            imap_mutf7_decode(s, len, NULL, &err) != 1)
            abort();
        if (imap_mailbox_normalize(s, len, &norm) < 0 || norm.len != len)
            abort();
        if (!memchr(norm.data, '\0', norm.len) && !imap_list_match("*", norm.data))
            abort();
        if (!memchr(norm.data, '\0', norm.len) && !imap_list_match(norm.data, norm.data) &&
            !strpbrk(norm.data, "*%"))
            abort(); /* a name matches itself as a pattern */
    } else if (!err) {
        abort();
    }
    buf_free(&utf8);
    buf_free(&norm);
}

static void try_strings(const imap_arg_t *a, size_t n, unsigned depth)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i].type == IMAP_ARG_LIST) {
            if (depth < 4)
                try_strings(a[i].list, a[i].n, depth + 1);
            continue;
        }
        if (a[i].len <= 4096) {
            check_astring(a[i].str, a[i].len, false);
            check_astring(a[i].str, a[i].len, true);
        }
        if (a[i].len <= 64)
            try_dates(a[i].str, a[i].len);
        imap_arg_is_word(&a[i], "NIL");
    }
}

static void run_command(const imap_command_t *cmd)
{
    const imap_arg_t *a = cmd->args;
    size_t n = cmd->n_args;
    const char *name = cmd->name;
    try_strings(a, n, 0);
    if (!strcmp(name, "FETCH") && n >= 2) {
        try_seqset(&a[0]);
        try_fetch(&a[1], n - 1);
    } else if (!strcmp(name, "STORE")) {
        try_store(a, n);
    } else if (!strcmp(name, "SEARCH")) {
        try_search(a, n);
    } else if ((!strcmp(name, "COPY") || !strcmp(name, "MOVE") || !strcmp(name, "EXPUNGE")) &&
               n >= 1) {
        try_seqset(&a[0]);
        if (n >= 2)
            try_mailbox(&a[1]);
    } else if (!strcmp(name, "APPEND") && n >= 2) {
        try_mailbox(&a[0]);
        for (size_t i = 1; i + 1 < n; i++)
            if (a[i].type == IMAP_ARG_LIST)
                try_flags(&a[i], 1);
    } else if (!strcmp(name, "LIST") || !strcmp(name, "LSUB")) {
        const char *ref, *pat;
        size_t rl, pl;
        if (n == 2 && imap_arg_astring(&a[0], &ref, &rl) && imap_arg_astring(&a[1], &pat, &pl) &&
            rl < 256 && pl < 256 && !memchr(ref, 0, rl) && !memchr(pat, 0, pl)) {
            char p[512];
            snprintf(p, sizeof p, "%.*s%.*s", (int)rl, ref, (int)pl, pat);
            imap_list_match(p, "INBOX/Sent/2024");
            imap_list_match(p, "Archive");
            imap_list_match(p, p);
        }
    } else {
        for (size_t i = 0; i < n && i < 3; i++)
            try_mailbox(&a[i]);
        if (n >= 1)
            try_flags(a, n);
    }
}

/* ---- the stream ------------------------------------------------------------------------ */

static void command_complete(const imap_cmdbuf_t *cb)
{
    /* A copy of exactly the command and the NUL session.c puts after it. */
    char *data = malloc(cb->buf.len + 1);
    if (!data)
        abort();
    memcpy(data, cb->buf.data, cb->buf.len);
    data[cb->buf.len] = '\0';
    imap_command_t cmd;
    const char *err = NULL;
    int rc = imap_parse_command(data, cb->buf.len, &cmd, &err);
    if (rc == 1) {
        if (!cmd.tag || cmd.tag_len == 0 || !cmd.name[0] || cmd.tag != data)
            abort();
        check_args(data, cb->buf.len, cmd.args, cmd.n_args);
        run_command(&cmd);
        imap_command_free(&cmd);
    } else if (rc < 0) {
        if (!err)
            abort();
        imap_parse_tag(data, cb->buf.len);
    } else {
        abort(); /* the assembler handed over a command with a literal missing */
    }
    free(data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    seed = data[0];
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    imap_cmdbuf_limits_t lim = {
        .max_line = IMAP_COMMAND_MAX,
        .max_literal = IMAP_LITERAL_MAX,
        .max_literals = IMAP_LITERALS_MAX,
    };
    imap_cmdbuf_t cb;
    imap_cmdbuf_init(&cb, &lim);
    const char *err;
    while (p < end) {
        if (cb.want > 0) {
            size_t take = (size_t)(end - p) < cb.want ? (size_t)(end - p) : (size_t)cb.want;
            size_t first = take > 1 ? 1 + seed % take : take;
            if (imap_cmdbuf_literal(&cb, p, first, &err) < 0 ||
                (take > first && imap_cmdbuf_literal(&cb, p + first, take - first, &err) < 0))
                abort();
            p += take;
            if (cb.want == 0 && imap_cmdbuf_literal(&cb, "x", 1, &err) == 0)
                abort(); /* more than announced */
            continue;
        }
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (!lf)
            break; /* an unfinished line: the session waits for more */
        size_t len = (size_t)(lf - p);
        if (len > 0 && p[len - 1] == '\r')
            len--;
        if (len + 2 > IMAP_LINE_MAX) {
            imap_cmdbuf_reset(&cb); /* the line reader refuses it */
            p = lf + 1;
            continue;
        }
        int rc = imap_cmdbuf_line(&cb, p, len, &err);
        p = lf + 1;
        if (rc == 1) {
            command_complete(&cb);
            imap_cmdbuf_reset(&cb);
        } else if (rc < 0) {
            imap_parse_tag(cb.buf.data ? cb.buf.data : "", cb.buf.len);
            if (cb.lost_sync && cb.skip > 0)
                p += (size_t)(end - p) < cb.skip ? (size_t)(end - p) : (size_t)cb.skip;
            imap_cmdbuf_reset(&cb);
        } else if (cb.want == 0) {
            /* "{0}": the next line continues the command at once. */
        }
    }
    imap_cmdbuf_free(&cb);
    return 0;
}
