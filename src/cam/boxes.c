/* boxes.c - radiologists' box lists (ChestX-ray14's BBox_List_2017.csv). */
#include "chexnet.h"
#include "data/csv.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void cx_box_list_free(cx_box_list *l)
{
    if (!l)
        return;
    for (int i = 0; i < l->n; i++) {
        free(l->v[i].image);
        free(l->v[i].label);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int blank(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return !*s;
}

cx_status cx_box_list_read(const char *path, cx_box_list *out, cx_err *err)
{
    memset(out, 0, sizeof *out);
    cx_csv_opts o = {CX_CSV_COMMA, 1, 1};
    cx_csv *t = NULL;
    cx_status st = cx_csv_read(path, &o, &t, err);
    if (st)
        return st;
    if (t->n_cols < 2 || !cx_class_name_eq(t->header[0], "Image Index") ||
        !cx_class_name_eq(t->header[1], "Finding Label")) {
        cx_csv_free(t);
        return cx_seterr(err, CX_EFORMAT,
                         "%s: not a box list: the header must begin with \"Image Index,"
                         "Finding Label\" (then x, y, w, h, as BBox_List_2017.csv)",
                         path);
    }
    if (t->n_rows > 0x7fffffff) {
        cx_csv_free(t);
        return cx_seterr(err, CX_ELIMIT, "%s: too many rows", path);
    }
    out->v = calloc((size_t)(t->n_rows ? t->n_rows : 1), sizeof *out->v);
    if (!out->v) {
        cx_csv_free(t);
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
    }
    for (long r = 0; r < t->n_rows; r++) {
        const cx_csv_row *row = &t->rows[r];
        double v[4];
        int ok = row->n_fields >= 6 && !blank(row->fields[0]) && !blank(row->fields[1]);
        for (int k = 0; ok && k < 4; k++)
            ok = !cx_csv_parse_double(row->fields[2 + k], &v[k]) && isfinite(v[k]);
        for (int k = 6; ok && k < row->n_fields; k++)
            ok = blank(row->fields[k]);
        const long line = row->line;
        if (!ok) {
            cx_box_list_free(out);
            cx_csv_free(t);
            return cx_seterr(err, CX_EFORMAT,
                             "%s line %ld: expected IMAGE,FINDING,x,y,w,h (numbers) and "
                             "nothing after",
                             path, line);
        }
        if (!(v[2] > 0 && v[3] > 0)) {
            cx_box_list_free(out);
            cx_csv_free(t);
            return cx_seterr(err, CX_EFORMAT, "%s line %ld: the box's width and height must be "
                             "positive (%g x %g)", path, line, v[2], v[3]);
        }
        cx_box_entry *e = &out->v[out->n];
        const char *lab = row->fields[1];
        while (*lab == ' ')
            lab++;
        e->image = strdup(row->fields[0]);
        e->label = strdup(!strcasecmp(lab, "Infiltrate") ? "Infiltration" : lab);
        e->box.x = v[0];
        e->box.y = v[1];
        e->box.w = v[2];
        e->box.h = v[3];
        e->line = row->line;
        out->n++;
        if (!e->image || !e->label) {
            cx_box_list_free(out);
            cx_csv_free(t);
            return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
        }
    }
    cx_csv_free(t);
    return CX_OK;
}
