/* Label tables: ChestX-ray14 metadata, split lists and class-column CSVs,
 * plain or gzip, matched by image id or file name (see chexnet.h). */
#define _GNU_SOURCE
#include "data/labels.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ----------------------------------------------------------------- helpers */

void cx_note_add(int *n, char ***list, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nl = realloc(*list, (size_t)(*n + 1) * sizeof *nl);
    if (!nl)
        return;
    *list = nl;
    nl[*n] = strdup(buf);
    if (nl[*n])
        (*n)++;
}

const char *cx_basename(const char *path)
{
    const char *s = strrchr(path, '/');
    const char *b = strrchr(path, '\\');
    if (b && (!s || b > s))
        s = b;
    return s ? s + 1 : path;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

int cx_strmap_init(cx_strmap *m, size_t expected)
{
    size_t cap = 16;
    while (cap < expected * 2 + 16)
        cap *= 2;
    m->keys = calloc(cap, sizeof *m->keys);
    m->vals = calloc(cap, sizeof *m->vals);
    m->cap = cap;
    m->n = 0;
    if (!m->keys || !m->vals) {
        free(m->keys);
        free(m->vals);
        m->keys = NULL;
        m->vals = NULL;
        return -1;
    }
    return 0;
}

void cx_strmap_free(cx_strmap *m)
{
    free(m->keys);
    free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
}

int cx_strmap_get(const cx_strmap *m, const char *key)
{
    if (!m->cap)
        return -1;
    size_t i = fnv1a(key) & (m->cap - 1);
    while (m->keys[i]) {
        if (!strcmp(m->keys[i], key))
            return m->vals[i];
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

static int strmap_grow(cx_strmap *m)
{
    cx_strmap n2;
    if (cx_strmap_init(&n2, m->cap))
        return -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i])
            cx_strmap_put(&n2, m->keys[i], m->vals[i]);
    cx_strmap_free(m);
    *m = n2;
    return 0;
}

int cx_strmap_put(cx_strmap *m, const char *key, int val)
{
    if ((m->n + 1) * 2 > m->cap && strmap_grow(m))
        return -1;
    size_t i = fnv1a(key) & (m->cap - 1);
    while (m->keys[i]) {
        if (!strcmp(m->keys[i], key)) {
            m->vals[i] = val;
            return 0;
        }
        i = (i + 1) & (m->cap - 1);
    }
    m->keys[i] = key;
    m->vals[i] = val;
    m->n++;
    return 0;
}

int cx_class_name_eq(const char *a, const char *b)
{
    if (!a || !b)
        return 0;
    while (*a == ' ' || *a == '\t')
        a++;
    while (*b == ' ' || *b == '\t')
        b++;
    size_t la = strlen(a), lb = strlen(b);
    while (la && (a[la - 1] == ' ' || a[la - 1] == '\t'))
        la--;
    while (lb && (b[lb - 1] == ' ' || b[lb - 1] == '\t'))
        lb--;
    if (la != lb)
        return 0;
    for (size_t i = 0; i < la; i++) {
        int ca = a[i] == '_' ? ' ' : tolower((unsigned char)a[i]);
        int cb = b[i] == '_' ? ' ' : tolower((unsigned char)b[i]);
        if (ca != cb)
            return 0;
    }
    return 1;
}

int cx_image_column(const cx_csv *t)
{
    static const char *names[] = {"Image Index", "Image_Index", "Image", "Image Name",
                                  "Image_Name", "Image Path", "Image_Path", "Path",
                                  "Filename", "File", "Study", "Id"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int c = cx_csv_col(t, names[i]);
        if (c >= 0)
            return c;
    }
    return 0;
}

/* -------------------------------------------------------------- the table */

struct cx_labels {
    char format[32];
    int n_images, n_classes;
    char **classes;
    char **images;
    int8_t *y; /* [n_images][n_classes] */
    cx_strmap by_id, by_base;
    int n_warn;
    char **warn;
};

void cx_labels_free(cx_labels *l)
{
    if (!l)
        return;
    for (int k = 0; k < l->n_classes; k++)
        free(l->classes[k]);
    free(l->classes);
    for (int i = 0; i < l->n_images; i++)
        free(l->images[i]);
    free(l->images);
    free(l->y);
    cx_strmap_free(&l->by_id);
    cx_strmap_free(&l->by_base);
    for (int i = 0; i < l->n_warn; i++)
        free(l->warn[i]);
    free(l->warn);
    free(l);
}

const char *cx_labels_format(const cx_labels *l) { return l->format; }
int cx_labels_num_images(const cx_labels *l) { return l->n_images; }
int cx_labels_num_classes(const cx_labels *l) { return l->n_classes; }
const char *cx_labels_class(const cx_labels *l, int k)
{
    return k >= 0 && k < l->n_classes ? l->classes[k] : NULL;
}
const char *cx_labels_image(const cx_labels *l, int i)
{
    return i >= 0 && i < l->n_images ? l->images[i] : NULL;
}
int cx_labels_get(const cx_labels *l, int i, int k)
{
    if (i < 0 || i >= l->n_images || k < 0 || k >= l->n_classes)
        return CX_LABEL_MISSING;
    return l->y[(size_t)i * l->n_classes + k];
}
int cx_labels_num_warnings(const cx_labels *l) { return l->n_warn; }
const char *cx_labels_warning(const cx_labels *l, int i)
{
    return i >= 0 && i < l->n_warn ? l->warn[i] : NULL;
}

int cx_labels_find(const cx_labels *l, const char *image)
{
    int r = cx_strmap_get(&l->by_id, image);
    if (r >= 0)
        return r;
    r = cx_strmap_get(&l->by_base, cx_basename(image));
    if (r == -3)
        return -2;
    return r < 0 ? -1 : r;
}

/* One label value: 0/1 (also 0.0/1.0, true/false); blank, -1, nan:
 * missing. Returns -2 if not a label. */
int cx_parse_label(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0)
        return CX_LABEL_MISSING;
    char b[16];
    if (n >= sizeof b)
        return -2;
    memcpy(b, s, n);
    b[n] = 0;
    if (!strcmp(b, "1") || !strcmp(b, "1.0") || !strcmp(b, "1.00") || !strcasecmp(b, "true"))
        return 1;
    if (!strcmp(b, "0") || !strcmp(b, "0.0") || !strcmp(b, "0.00") || !strcmp(b, "-0.0") ||
        !strcasecmp(b, "false"))
        return 0;
    if (!strcmp(b, "-1") || !strcmp(b, "-1.0") || !strcasecmp(b, "nan") || !strcasecmp(b, "na"))
        return CX_LABEL_MISSING;
    return -2;
}

int cx_parse_label01(const char *s)
{
    int v = cx_parse_label(s);
    return v == 0 || v == 1 ? v : -1;
}

/* ------------------------------------------------- the label-format parser */

int cx_nih_class_index(const char *name)
{
    for (int k = 0; k < 14; k++)
        if (cx_class_name_eq(name, CX_CHESTXRAY14_CLASSES[k]))
            return k;
    if (cx_class_name_eq(name, "Infiltrate"))
        return 3;
    if (cx_class_name_eq(name, CX_NO_FINDING))
        return CX_NIH_NO_FINDING;
    return -1;
}

cx_status cx_nih_findings(const char *field, uint8_t has[15], const char *path, long line,
                          cx_err *err)
{
    memset(has, 0, 15);
    if (!field[strspn(field, " \t")])
        return cx_seterr(err, CX_EFORMAT, "%s:%ld: empty Finding Labels", path, line);
    int any = 0, nofind = 0;
    const char *s = field;
    for (;;) {
        const char *e = strchr(s, '|');
        size_t tl = e ? (size_t)(e - s) : strlen(s);
        char tok[128];
        if (tl >= sizeof tok)
            tl = sizeof tok - 1;
        memcpy(tok, s, tl);
        tok[tl] = 0;
        const char *t = tok;
        while (*t == ' ' || *t == '\t')
            t++;
        size_t n = strlen(t);
        while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
            tok[(size_t)(t - tok) + --n] = 0;
        int ci = cx_nih_class_index(t);
        if (ci < 0)
            return cx_seterr(err, CX_EFORMAT,
                             "%s:%ld: finding '%s' (in '%s') is not a ChestX-ray14 label nor "
                             "'No Finding'",
                             path, line, t, field);
        if (ci == CX_NIH_NO_FINDING)
            nofind = 1;
        else
            any = 1;
        has[ci] = 1;
        if (!e)
            break;
        s = e + 1;
    }
    if (nofind && any)
        return cx_seterr(err, CX_EFORMAT, "%s:%ld: 'No Finding' together with findings ('%s')",
                         path, line, field);
    return CX_OK;
}

cx_label_layout cx_label_layout_sniff(const char *text, size_t len)
{
    size_t i = 0;
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
        (unsigned char)text[2] == 0xBF)
        i = 3;
    while (i < len && (text[i] == '\n' || text[i] == '\r' || text[i] == ' '))
        i++;
    size_t e = i;
    while (e < len && text[e] != '\n' && text[e] != '\r')
        e++;
    if (memchr(text + i, ',', e - i))
        return CX_LAYOUT_CSV;
    /* tokens after the first must all be 0/1 */
    int ntok = 0, ok = 1;
    size_t j = i;
    while (j < e) {
        while (j < e && (text[j] == ' ' || text[j] == '\t'))
            j++;
        if (j >= e)
            break;
        size_t s = j;
        while (j < e && text[j] != ' ' && text[j] != '\t')
            j++;
        if (ntok > 0 && !((j - s == 1) && (text[s] == '0' || text[s] == '1')))
            ok = 0;
        ntok++;
    }
    return ok && ntok >= 2 ? CX_LAYOUT_SPLIT : CX_LAYOUT_LIST;
}

cx_status cx_split_row(const cx_csv_row *row, int k, uint8_t *out, const char *path,
                       cx_err *err)
{
    if (row->n_fields != k + 1)
        return cx_seterr(err, CX_EFORMAT, "%s:%ld: %d fields; expected an image and %d labels",
                         path, row->line, row->n_fields, k);
    for (int j = 0; j < k; j++) {
        int v = cx_parse_label01(row->fields[1 + j]);
        if (v < 0)
            return cx_seterr(err, CX_EFORMAT, "%s:%ld: label %d is '%s', not 0/1", path,
                             row->line, j + 1, row->fields[1 + j]);
        out[j] = (uint8_t)v;
    }
    return CX_OK;
}

/* Class names of a list as one string for messages. */
static void join_names(char *dst, size_t n, int k, const char *const *names)
{
    dst[0] = 0;
    size_t used = 0;
    for (int i = 0; i < k && used + 4 < n; i++) {
        int w = snprintf(dst + used, n - used, "%s%s", i ? ", " : "", names[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    if (used >= n - 4)
        strcpy(dst + n - 4, "...");
}

/* Adds one image row: handles duplicates. vals has l->n_classes entries. */
static cx_status add_row(cx_labels *l, const char *path, long line, long *lines,
                         const char *id, const int8_t *vals, int *n_dup_identical,
                         cx_err *err)
{
    int prev = cx_strmap_get(&l->by_id, id);
    if (prev >= 0) {
        if (memcmp(l->y + (size_t)prev * l->n_classes, vals, (size_t)l->n_classes)) {
            return cx_seterr(err, CX_EFORMAT,
                             "%s:%ld: image '%s' appears twice with different labels "
                             "(first on line %ld)",
                             path, line, id, lines[prev]);
        }
        if (++*n_dup_identical <= 3)
            cx_note_add(&l->n_warn, &l->warn,
                        "%s:%ld: duplicate row for image '%s' (identical to line %ld), ignored",
                        path, line, id, lines[prev]);
        return CX_OK;
    }
    int i = l->n_images;
    l->images[i] = strdup(id);
    if (!l->images[i])
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    memcpy(l->y + (size_t)i * l->n_classes, vals, (size_t)l->n_classes);
    lines[i] = line;
    l->n_images++;
    if (cx_strmap_put(&l->by_id, l->images[i], i))
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    const char *base = cx_basename(l->images[i]);
    int pb = cx_strmap_get(&l->by_base, base);
    if (pb == -1) {
        if (cx_strmap_put(&l->by_base, base, i))
            return cx_seterr(err, CX_ENOMEM, "out of memory");
    } else if (pb >= 0 || pb == -3) {
        cx_strmap_put(&l->by_base, base, -3); /* ambiguous file name */
    }
    return CX_OK;
}

cx_status cx_labels_load(const char *path, int n_classes, const char *const *classes,
                         cx_labels **out, cx_err *err)
{
    *out = NULL;
    if (n_classes < 0 || (n_classes > 0 && !classes))
        return cx_seterr(err, CX_EARG, "cx_labels_load: bad class list");
    char *text = NULL;
    size_t len = 0;
    cx_status st = cx_read_text_file(path, &text, &len, err);
    if (st)
        return st;
    cx_csv *t = NULL;
    cx_labels *l = calloc(1, sizeof *l);
    long *lines = NULL;
    int *src = NULL;    /* source column (or NIH class index) per class */
    int8_t *vals = NULL;
    int n_dup = 0;
    if (!l) {
        free(text);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    int split = cx_label_layout_sniff(text, len) == CX_LAYOUT_SPLIT;
    cx_csv_opts o = {split ? CX_CSV_WHITESPACE : CX_CSV_COMMA, split ? 0 : 1, 0};
    st = cx_csv_parse(text, len, path, &o, &t, err);
    free(text);
    text = NULL;
    if (st)
        goto fail;
    int img_col = 0, finding_col = -1;
    enum { F_SPLIT, F_META, F_CSV } fmt;
    if (split) {
        fmt = F_SPLIT;
    } else {
        img_col = cx_image_column(t);
        finding_col = cx_csv_col(t, "Finding Labels");
        fmt = F_CSV;
        if (finding_col >= 0) {
            /* prefer explicit class columns when every wanted class has one */
            int all = n_classes > 0;
            for (int k = 0; k < n_classes && all; k++) {
                int found = 0;
                for (int c = 0; c < t->n_cols; c++)
                    if (c != img_col && cx_class_name_eq(t->header[c], classes[k]))
                        found = 1;
                all = found;
            }
            if (!all)
                fmt = F_META;
        }
    }
    strcpy(l->format, fmt == F_SPLIT ? "split-list" : fmt == F_META ? "chestxray14-metadata" : "csv");

    /* The source of each class. */
    const char *const *names = classes;
    int nc = n_classes;
    const char *csv_names[512];
    if (n_classes == 0) {
        if (fmt != F_CSV) {
            names = CX_CHESTXRAY14_CLASSES;
            nc = 14;
        } else {
            /* every column whose values all look like labels */
            nc = 0;
            for (int c = 0; c < t->n_cols && nc < 512; c++) {
                if (c == img_col)
                    continue;
                int ok = 1;
                for (long r = 0; r < t->n_rows && ok; r++)
                    if (cx_parse_label(t->rows[r].fields[c]) == -2)
                        ok = 0;
                if (ok)
                    csv_names[nc++] = t->header[c];
            }
            names = csv_names;
            if (nc == 0) {
                st = cx_seterr(err, CX_EFORMAT, "%s: no 0/1 label columns found", path);
                goto fail;
            }
        }
    }
    l->n_classes = nc;
    l->classes = calloc((size_t)nc, sizeof *l->classes);
    src = calloc((size_t)nc, sizeof *src);
    vals = calloc((size_t)nc + 1, 1);
    if (!l->classes || !src || !vals) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto fail;
    }
    for (int k = 0; k < nc; k++) {
        l->classes[k] = strdup(names[k]);
        if (!l->classes[k]) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto fail;
        }
        src[k] = -1;
        if (fmt == F_CSV) {
            for (int c = 0; c < t->n_cols; c++)
                if (c != img_col && cx_class_name_eq(t->header[c], names[k])) {
                    if (src[k] >= 0) {
                        st = cx_seterr(err, CX_EFORMAT, "%s: two columns named '%s'", path,
                                       names[k]);
                        goto fail;
                    }
                    src[k] = c;
                }
        } else {
            src[k] = cx_nih_class_index(names[k]);
        }
        if (src[k] < 0) {
            char have[600];
            if (fmt == F_CSV) {
                join_names(have, sizeof have, t->n_cols, (const char *const *)t->header);
            } else {
                join_names(have, sizeof have, 14, CX_CHESTXRAY14_CLASSES);
                strcat(have, ", No Finding");
            }
            st = cx_seterr(err, CX_EMISSING, "%s: no labels for class '%s' (%s file has: %s)",
                           path, names[k], l->format, have);
            goto fail;
        }
    }
    long n = t->n_rows;
    l->images = calloc(n ? (size_t)n : 1, sizeof *l->images);
    l->y = malloc((n ? (size_t)n : 1) * (size_t)nc);
    lines = calloc(n ? (size_t)n : 1, sizeof *lines);
    if (!l->images || !l->y || !lines || cx_strmap_init(&l->by_id, (size_t)n) ||
        cx_strmap_init(&l->by_base, (size_t)n)) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto fail;
    }
    if (fmt == F_SPLIT && t->n_rows > 0 && t->rows[0].n_fields != 15) {
        st = cx_seterr(err, CX_EFORMAT,
                       "%s:%ld: split list line with %d labels; expected 14 "
                       "(IMAGE L1 ... L14 in CheXNet order)",
                       path, t->rows[0].line, t->rows[0].n_fields - 1);
        goto fail;
    }
    for (long r = 0; r < n; r++) {
        const cx_csv_row *row = &t->rows[r];
        const char *id = row->fields[fmt == F_SPLIT ? 0 : img_col];
        while (*id == ' ')
            id++;
        if (!*id) {
            st = cx_seterr(err, CX_EFORMAT, "%s:%ld: empty image id", path, row->line);
            goto fail;
        }
        if (fmt == F_SPLIT) {
            uint8_t v14[14];
            if ((st = cx_split_row(row, 14, v14, path, err)))
                goto fail;
            int anyf = 0;
            for (int j = 0; j < 14; j++)
                anyf |= v14[j];
            for (int k = 0; k < nc; k++)
                vals[k] = (int8_t)(src[k] == CX_NIH_NO_FINDING ? !anyf : v14[src[k]]);
        } else if (fmt == F_META) {
            uint8_t has[15];
            if ((st = cx_nih_findings(row->fields[finding_col], has, path, row->line, err)))
                goto fail;
            for (int k = 0; k < nc; k++)
                vals[k] = (int8_t)has[src[k]];
        } else {
            for (int k = 0; k < nc; k++) {
                int v = cx_parse_label(row->fields[src[k]]);
                if (v == -2) {
                    st = cx_seterr(err, CX_EFORMAT,
                                   "%s:%ld: column '%s' has '%s', not a label (0, 1, blank/-1 = missing)",
                                   path, row->line, t->header[src[k]], row->fields[src[k]]);
                    goto fail;
                }
                vals[k] = (int8_t)v;
            }
        }
        st = add_row(l, path, row->line, lines, id, vals, &n_dup, err);
        if (st)
            goto fail;
    }
    if (n_dup > 3)
        cx_note_add(&l->n_warn, &l->warn, "%s: %d duplicate identical rows ignored in all",
                    path, n_dup);
    if (l->n_images == 0) {
        st = cx_seterr(err, CX_EFORMAT, "%s: no image rows", path);
        goto fail;
    }
    cx_csv_free(t);
    free(lines);
    free(src);
    free(vals);
    *out = l;
    return CX_OK;
fail:
    cx_csv_free(t);
    free(lines);
    free(src);
    free(vals);
    cx_labels_free(l);
    return st;
}
