/* Prediction tables: "image,<class>..." CSV files of scores. */
#define _GNU_SOURCE
#include "data/csv.h"
#include "data/labels.h"
#include "eval/textbuf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void cx_pred_free(cx_pred_table *p)
{
    if (!p)
        return;
    if (p->images)
        for (int i = 0; i < p->n_images; i++)
            free(p->images[i]);
    free(p->images);
    if (p->classes)
        for (int k = 0; k < p->n_classes; k++)
            free(p->classes[k]);
    free(p->classes);
    free(p->scores);
    for (int i = 0; i < p->n_warnings; i++)
        free(p->warnings[i]);
    free(p->warnings);
    free(p);
}

cx_status cx_pred_new(int n_images, int n_classes, const char *const *classes,
                      cx_pred_table **out, cx_err *err)
{
    *out = NULL;
    if (n_images < 0 || n_classes <= 0 || !classes)
        return cx_seterr(err, CX_EARG, "cx_pred_new: bad sizes");
    cx_pred_table *p = calloc(1, sizeof *p);
    if (!p)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    p->n_images = n_images;
    p->n_classes = n_classes;
    p->images = calloc(n_images ? (size_t)n_images : 1, sizeof *p->images);
    p->classes = calloc((size_t)n_classes, sizeof *p->classes);
    p->scores = calloc((size_t)(n_images ? n_images : 1) * (size_t)n_classes, sizeof *p->scores);
    if (!p->images || !p->classes || !p->scores) {
        cx_pred_free(p);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    for (int k = 0; k < n_classes; k++) {
        p->classes[k] = strdup(classes[k] ? classes[k] : "");
        if (!p->classes[k]) {
            cx_pred_free(p);
            return cx_seterr(err, CX_ENOMEM, "out of memory");
        }
    }
    *out = p;
    return CX_OK;
}

cx_status cx_pred_set_image(cx_pred_table *p, int i, const char *image, cx_err *err)
{
    if (i < 0 || i >= p->n_images || !image)
        return cx_seterr(err, CX_EARG, "cx_pred_set_image: bad index %d", i);
    char *s = strdup(image);
    if (!s)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    free(p->images[i]);
    p->images[i] = s;
    return CX_OK;
}

static int is_flag_column(const char *name)
{
    static const char suffix[] = ":positive";
    size_t n = strlen(name), m = sizeof suffix - 1;
    return n > m && strcasecmp(name + n - m, suffix) == 0;
}

cx_status cx_pred_load(const char *path, cx_pred_table **out, cx_err *err)
{
    *out = NULL;
    cx_csv *t;
    cx_csv_opts o = {CX_CSV_COMMA, 1, 0};
    cx_status st = cx_csv_read(path, &o, &t, err);
    if (st)
        return st;
    int img = cx_image_column(t);
    if (t->n_cols < 2) {
        cx_csv_free(t);
        return cx_seterr(err, CX_EFORMAT,
                         "%s: needs an image column and at least one class column", path);
    }
    if (t->n_rows == 0) {
        cx_csv_free(t);
        return cx_seterr(err, CX_EFORMAT, "%s: no prediction rows", path);
    }
    /* predict's "<class>:positive" columns (a model with thresholds) are
     * decisions, not scores: left out */
    int nc = 0;
    for (int c = 0; c < t->n_cols; c++)
        if (c != img && !is_flag_column(t->header[c]))
            nc++;
    if (nc == 0) {
        cx_csv_free(t);
        return cx_seterr(err, CX_EFORMAT, "%s: needs at least one class score column", path);
    }
    const char *names[1024];
    if (nc > 1024) {
        cx_csv_free(t);
        return cx_seterr(err, CX_ELIMIT, "%s: more than 1024 class columns", path);
    }
    int *col = malloc((size_t)nc * sizeof *col);
    if (!col) {
        cx_csv_free(t);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    for (int c = 0, k = 0; c < t->n_cols; c++) {
        if (c == img || is_flag_column(t->header[c]))
            continue;
        col[k] = c;
        names[k] = t->header[c];
        if (!names[k][0]) {
            free(col);
            cx_csv_free(t);
            return cx_seterr(err, CX_EFORMAT, "%s:1: column %d has no name", path, c + 1);
        }
        for (int j = 0; j < k; j++)
            if (cx_class_name_eq(names[j], names[k])) {
                /* the message is made before the table (which holds the
                 * names) is freed */
                st = cx_seterr(err, CX_EFORMAT, "%s:1: columns '%s' and '%s' name the same class",
                               path, names[j], names[k]);
                free(col);
                cx_csv_free(t);
                return st;
            }
        k++;
    }
    cx_pred_table *p;
    st = cx_pred_new((int)t->n_rows, nc, names, &p, err);
    if (st) {
        free(col);
        cx_csv_free(t);
        return st;
    }
    cx_strmap seen;
    long *lines = calloc((size_t)t->n_rows, sizeof *lines);
    if (!lines || cx_strmap_init(&seen, (size_t)t->n_rows)) {
        free(lines);
        free(col);
        cx_csv_free(t);
        cx_pred_free(p);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    long outside = 0, first_outside = 0;
    int n = 0, ndup = 0;
    for (long r = 0; r < t->n_rows; r++) {
        const cx_csv_row *row = &t->rows[r];
        const char *id = row->fields[img];
        while (*id == ' ')
            id++;
        if (!*id) {
            st = cx_seterr(err, CX_EFORMAT, "%s:%ld: empty image id", path, row->line);
            goto fail;
        }
        double *s = p->scores + (size_t)n * nc;
        for (int k = 0; k < nc; k++) {
            const char *f = row->fields[col[k]];
            if (cx_csv_parse_double(f, &s[k])) {
                st = cx_seterr(err, CX_EFORMAT,
                               "%s:%ld: score for class '%s' is '%s', not a finite number",
                               path, row->line, names[k], f);
                goto fail;
            }
            if (s[k] < 0 || s[k] > 1) {
                if (!outside++)
                    first_outside = row->line;
            }
        }
        int prev = cx_strmap_get(&seen, id);
        if (prev >= 0) {
            if (memcmp(p->scores + (size_t)prev * nc, s, (size_t)nc * sizeof *s)) {
                st = cx_seterr(err, CX_EFORMAT,
                               "%s:%ld: image '%s' appears twice with different scores "
                               "(first on line %ld)",
                               path, row->line, id, lines[prev]);
                goto fail;
            }
            if (++ndup <= 3)
                cx_note_add(&p->n_warnings, &p->warnings,
                            "%s:%ld: duplicate row for image '%s' (identical to line %ld), ignored",
                            path, row->line, id, lines[prev]);
            continue;
        }
        p->images[n] = strdup(id);
        if (!p->images[n]) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto fail;
        }
        lines[n] = row->line;
        cx_strmap_put(&seen, p->images[n], n);
        n++;
    }
    p->n_images = n;
    if (ndup > 3)
        cx_note_add(&p->n_warnings, &p->warnings, "%s: %d duplicate identical rows ignored",
                    path, ndup);
    if (outside)
        cx_note_add(&p->n_warnings, &p->warnings,
                    "%s: %ld scores outside [0,1] (first on line %ld): allowed, AUROC is "
                    "rank-based, but they are not probabilities",
                    path, outside, first_outside);
    cx_strmap_free(&seen);
    free(lines);
    free(col);
    cx_csv_free(t);
    *out = p;
    return CX_OK;
fail:
    p->n_images = (int)t->n_rows;
    cx_strmap_free(&seen);
    free(lines);
    free(col);
    cx_csv_free(t);
    cx_pred_free(p);
    return st;
}

cx_status cx_pred_save(const cx_pred_table *p, const char *path, cx_err *err)
{
    cx_tb b;
    cx_tb_init(&b);
    cx_tb_csv_field(&b, "image");
    for (int k = 0; k < p->n_classes; k++) {
        cx_tb_puts(&b, ",");
        cx_tb_csv_field(&b, p->classes[k]);
    }
    cx_tb_puts(&b, "\n");
    for (int i = 0; i < p->n_images; i++) {
        cx_tb_csv_field(&b, p->images[i] ? p->images[i] : "");
        for (int k = 0; k < p->n_classes; k++)
            cx_tb_printf(&b, ",%.9g", p->scores[(size_t)i * p->n_classes + k]);
        cx_tb_puts(&b, "\n");
    }
    if (b.oom) {
        cx_tb_free(&b);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    cx_status st = cx_write_file_atomic(path, b.s, b.n, err);
    cx_tb_free(&b);
    return st;
}
