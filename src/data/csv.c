/* Delimited text tables: RFC 4180 CSV and whitespace-separated lists, plain or
 * gzip (see csv.h). */
#define _GNU_SOURCE
#include "data/csv.h"
#include "io/fileutil.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    char *pool;
    char **ptrs;
} csv_impl;

cx_status cx_text_limit_error(const char *path, int rows, cx_err *err)
{
    cx_limits lim;
    cx_limits_get(&lim);
    if (rows)
        return cx_seterr(err, CX_ELIMIT,
                         "%s: more than %llu lines, the row limit (raise it with --max-rows N)",
                         path, (unsigned long long)lim.max_rows);
    return cx_seterr(err, CX_ELIMIT,
                     "%s: more than %llu bytes (after decompression), the size limit (raise it "
                     "with --max-bytes N)",
                     path, (unsigned long long)lim.max_bytes);
}

cx_status cx_read_text_file(const char *path, char **buf, size_t *len,
                            cx_err *err)
{
    cx_limits lim;
    cx_limits_get(&lim);
    cx_read_opts o = {0};
    o.max_bytes = (size_t)lim.max_bytes;
    o.max_lines = lim.max_rows + 1; /* a header line is not counted */
    o.gunzip = 1;
    o.missing = CX_EIO;
    cx_read_limit hit;
    cx_status st = cx_read_file_ex(path, &o, buf, len, &hit, err);
    if (st == CX_ELIMIT && hit != CX_READ_WITHIN)
        return cx_text_limit_error(path, hit == CX_READ_OVER_LINES, err);
    return st;
}

void cx_csv_free(cx_csv *t)
{
    if (!t)
        return;
    csv_impl *im = t->impl_;
    if (im) {
        free(im->pool);
        free(im->ptrs);
        free(im);
    }
    free(t->rows);
    free(t->path);
    free(t);
}

/* Growable list of field pointers and record starts during parsing. */
typedef struct {
    size_t *fstart; /* index into ptr list where each record begins */
    long *line;
    size_t nrec, caprec;
    char **ptrs;
    size_t nptr, capptr;
} builder;

static int push_ptr(builder *b, char *p)
{
    if (b->nptr == b->capptr) {
        size_t nc = b->capptr ? b->capptr * 2 : 1024;
        char **np = realloc(b->ptrs, nc * sizeof *np);
        if (!np)
            return -1;
        b->ptrs = np;
        b->capptr = nc;
    }
    b->ptrs[b->nptr++] = p;
    return 0;
}

static int push_rec(builder *b, long line)
{
    if (b->nrec == b->caprec) {
        size_t nc = b->caprec ? b->caprec * 2 : 256;
        size_t *ns = realloc(b->fstart, nc * sizeof *ns);
        if (!ns)
            return -1;
        b->fstart = ns;
        long *nl = realloc(b->line, nc * sizeof *nl);
        if (!nl)
            return -1;
        b->line = nl;
        b->caprec = nc;
    }
    b->fstart[b->nrec] = b->nptr;
    b->line[b->nrec] = line;
    b->nrec++;
    return 0;
}

cx_status cx_csv_parse(const char *text, size_t len, const char *name,
                       const cx_csv_opts *opts, cx_csv **out, cx_err *err)
{
    cx_csv_opts dflt = {CX_CSV_COMMA, 1, 0};
    if (!opts)
        opts = &dflt;
    *out = NULL;
    if (!name)
        name = "(text)";
    size_t i = 0;
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
        (unsigned char)text[2] == 0xBF)
        i = 3;
    if (memchr(text + i, 0, len - i)) {
        long ln = 1;
        for (size_t j = i; j < len && text[j]; j++)
            ln += text[j] == '\n';
        return cx_seterr(err, CX_EFORMAT, "%s:%ld: NUL byte (binary file?)", name, ln);
    }
    cx_limits lim;
    cx_limits_get(&lim);
    if (len - i > lim.max_bytes)
        return cx_text_limit_error(name, 0, err);
    const size_t max_recs = (size_t)lim.max_rows + 1; /* a header is not counted */
    /* Output fields never exceed the input; each needs one terminator. */
    char *pool = malloc(2 * (len - i) + 16);
    builder b = {0};
    cx_csv *t = calloc(1, sizeof *t);
    csv_impl *im = calloc(1, sizeof *im);
    cx_status st = CX_OK;
    if (!pool || !t || !im) {
        st = cx_seterr(err, CX_ENOMEM, "%s: out of memory", name);
        goto fail;
    }
    t->impl_ = im;
    im->pool = pool;
    t->path = strdup(name);
    char *w = pool;
    long line = 1;
    while (i < len) {
        /* start of a record; skip completely empty lines */
        if (text[i] == '\n') {
            line++;
            i++;
            continue;
        }
        if (text[i] == '\r' && i + 1 < len && text[i + 1] == '\n') {
            line++;
            i += 2;
            continue;
        }
        if (opts->sep == CX_CSV_WHITESPACE) {
            /* a line of only blanks is empty too */
            size_t j = i;
            while (j < len && (text[j] == ' ' || text[j] == '\t'))
                j++;
            if (j >= len || text[j] == '\n' || text[j] == '\r') {
                i = j;
                if (i < len && text[i] == '\r' && !(i + 1 < len && text[i + 1] == '\n')) {
                    i++;
                    line++;
                }
                continue;
            }
            i = j;
        }
        if (b.nrec >= max_recs) { /* one more would be beyond */
            st = cx_text_limit_error(name, 1, err);
            goto fail;
        }
        if (push_rec(&b, line)) {
            st = cx_seterr(err, CX_ENOMEM, "%s: out of memory", name);
            goto fail;
        }
        long rec_line = line;
        for (;;) { /* one field per iteration */
            char *f = w;
            if (push_ptr(&b, f)) {
                st = cx_seterr(err, CX_ENOMEM, "%s: out of memory", name);
                goto fail;
            }
            int end_rec = 0;
            if (opts->sep == CX_CSV_COMMA && i < len && text[i] == '"') {
                long qline = line;
                i++;
                for (;;) {
                    if (i >= len) {
                        st = cx_seterr(err, CX_EFORMAT,
                                       "%s:%ld: unterminated quoted field (opened on line %ld)",
                                       name, line, qline);
                        goto fail;
                    }
                    char c = text[i];
                    if (c == '"') {
                        if (i + 1 < len && text[i + 1] == '"') {
                            *w++ = '"';
                            i += 2;
                            continue;
                        }
                        i++;
                        break;
                    }
                    if (c == '\n')
                        line++;
                    if (c == '\r' && i + 1 < len && text[i + 1] == '\n') {
                        /* CRLF inside a quoted field is kept as LF */
                        i++;
                        continue;
                    }
                    *w++ = c;
                    i++;
                }
                /* after the closing quote: separator, line end or EOF */
                if (i < len && text[i] != ',' && text[i] != '\n' &&
                    !(text[i] == '\r')) {
                    st = cx_seterr(err, CX_EFORMAT,
                                   "%s:%ld: unexpected character '%c' after a closing quote",
                                   name, line, text[i]);
                    goto fail;
                }
            } else if (opts->sep == CX_CSV_COMMA) {
                while (i < len && text[i] != ',' && text[i] != '\n' && text[i] != '\r') {
                    if (text[i] == '"') {
                        st = cx_seterr(err, CX_EFORMAT,
                                       "%s:%ld: quote inside an unquoted field "
                                       "(quote the whole field and double inner quotes)",
                                       name, line);
                        goto fail;
                    }
                    *w++ = text[i++];
                }
            } else {
                while (i < len && text[i] != ' ' && text[i] != '\t' && text[i] != '\n' &&
                       text[i] != '\r')
                    *w++ = text[i++];
            }
            *w++ = 0;
            /* what ends this field? */
            if (opts->sep == CX_CSV_WHITESPACE) {
                while (i < len && (text[i] == ' ' || text[i] == '\t'))
                    i++;
            }
            if (i >= len) {
                end_rec = 1;
            } else if (text[i] == '\n') {
                i++;
                line++;
                end_rec = 1;
            } else if (text[i] == '\r') {
                i++;
                if (i < len && text[i] == '\n')
                    i++;
                line++;
                end_rec = 1;
            } else if (opts->sep == CX_CSV_COMMA) {
                i++; /* the comma */
            }
            if (end_rec)
                break;
        }
        (void)rec_line;
    }
    /* Turn the builder into rows. */
    im->ptrs = b.ptrs;
    b.ptrs = NULL;
    size_t first = 0;
    if (opts->has_header) {
        if (b.nrec == 0) {
            st = cx_seterr(err, CX_EFORMAT, "%s: empty file (no header)", name);
            goto fail;
        }
        size_t e = b.nrec > 1 ? b.fstart[1] : b.nptr;
        t->n_cols = (int)(e - b.fstart[0]);
        t->header = im->ptrs + b.fstart[0];
        first = 1;
    }
    t->n_rows = (long)(b.nrec - first);
    t->rows = calloc(t->n_rows ? (size_t)t->n_rows : 1, sizeof *t->rows);
    if (!t->rows) {
        st = cx_seterr(err, CX_ENOMEM, "%s: out of memory", name);
        goto fail;
    }
    for (size_t r = first; r < b.nrec; r++) {
        size_t s = b.fstart[r], e = r + 1 < b.nrec ? b.fstart[r + 1] : b.nptr;
        cx_csv_row *row = &t->rows[r - first];
        row->n_fields = (int)(e - s);
        row->fields = im->ptrs + s;
        row->line = b.line[r];
        if (opts->has_header && !opts->allow_ragged && row->n_fields != t->n_cols) {
            st = cx_seterr(err, CX_EFORMAT, "%s:%ld: %d fields, but the header has %d",
                           name, row->line, row->n_fields, t->n_cols);
            goto fail;
        }
    }
    free(b.fstart);
    free(b.line);
    *out = t;
    return CX_OK;
fail:
    free(b.fstart);
    free(b.line);
    free(b.ptrs);
    if (t) {
        cx_csv_free(t);
    } else {
        free(pool);
        free(im);
    }
    return st;
}

cx_status cx_csv_read(const char *path, const cx_csv_opts *opts, cx_csv **out,
                      cx_err *err)
{
    char *buf;
    size_t n;
    *out = NULL;
    cx_status st = cx_read_text_file(path, &buf, &n, err);
    if (st)
        return st;
    st = cx_csv_parse(buf, n, path, opts, out, err);
    free(buf);
    return st;
}

static void trim_span(const char *s, const char **b, size_t *n)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t l = strlen(s);
    while (l && (s[l - 1] == ' ' || s[l - 1] == '\t'))
        l--;
    *b = s;
    *n = l;
}

int cx_csv_col(const cx_csv *t, const char *name)
{
    const char *nb;
    size_t nn;
    trim_span(name, &nb, &nn);
    for (int c = 0; c < t->n_cols; c++) {
        const char *hb;
        size_t hn;
        trim_span(t->header[c], &hb, &hn);
        if (hn == nn && !strncasecmp(hb, nb, nn))
            return c;
    }
    return -1;
}

int cx_csv_parse_double(const char *s, double *out)
{
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s)
        return -1;
    while (*end == ' ' || *end == '\t')
        end++;
    if (*end || !isfinite(v))
        return -1;
    if (errno == ERANGE && fabs(v) > 1.0)
        return -1;
    *out = v;
    return 0;
}

/* ----------------------------------------------------------------- writer */

void cx_csv_field_put(cx_text_put put, void *ctx, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        put(ctx, s, strlen(s));
        return;
    }
    put(ctx, "\"", 1);
    for (;;) {
        const char *q = strchr(s, '"');
        if (!q) {
            put(ctx, s, strlen(s));
            break;
        }
        put(ctx, s, (size_t)(q - s) + 1);
        put(ctx, "\"", 1); /* the quote doubled */
        s = q + 1;
    }
    put(ctx, "\"", 1);
}

static void put_file(void *ctx, const char *s, size_t n)
{
    fwrite(s, 1, n, (FILE *)ctx);
}

void cx_csv_field(FILE *f, const char *s)
{
    cx_csv_field_put(put_file, f, s);
}
