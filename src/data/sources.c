/* Dataset sources (see chexnet.h, data section): ChestX-ray14 metadata,
 * split lists, manifest CSVs with patients, and packs as label sources. The
 * label formats are read by the one parser of labels.c. */
#define _GNU_SOURCE
#include "data/data_internal.h"
#include "data/csv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* -------------------------------------------------------------- classes */

/* The wanted classes (names) from task/classes; *n = -1 means "automatic". */
static cx_status wanted_classes(const cx_dataset_opts *o, int *n, const char *const **names,
                                cx_err *err)
{
    static const char *const pneu[1] = {"Pneumonia"};
    if (o->n_classes > 0) {
        if (!o->classes)
            return cx_seterr(err, CX_EARG, "dataset: n_classes given without class names");
        for (int k = 0; k < o->n_classes; k++) {
            if (!o->classes[k] || !o->classes[k][0])
                return cx_seterr(err, CX_EARG, "dataset: empty class name");
            for (int j = 0; j < k; j++)
                if (cx_class_name_eq(o->classes[j], o->classes[k]))
                    return cx_seterr(err, CX_EARG, "dataset: class '%s' given twice",
                                     o->classes[k]);
        }
        *n = o->n_classes;
        *names = o->classes;
        return CX_OK;
    }
    if (!o->task) {
        *n = -1;
        *names = NULL;
        return CX_OK;
    }
    if (!strcasecmp(o->task, "pneumonia")) {
        *n = 1;
        *names = pneu;
        return CX_OK;
    }
    if (!strcasecmp(o->task, "all14")) {
        *n = 14;
        *names = CX_CHESTXRAY14_CLASSES;
        return CX_OK;
    }
    return cx_seterr(err, CX_EARG, "unknown task '%s' (pneumonia or all14)", o->task);
}

/* Maps wanted names onto ChestX-ray14 indices. */
static cx_status nih_selection(const char *path, int n, const char *const *names, int *sel,
                               cx_err *err)
{
    for (int k = 0; k < n; k++) {
        sel[k] = cx_nih_class_index(names[k]);
        if (sel[k] < 0 || sel[k] == CX_NIH_NO_FINDING)
            return cx_seterr(err, CX_EMISSING,
                             "%s: class '%s' is not a ChestX-ray14 finding (Atelectasis, "
                             "Cardiomegaly, Effusion, Infiltration, Mass, Nodule, Pneumonia, "
                             "Pneumothorax, Consolidation, Edema, Emphysema, Fibrosis, "
                             "Pleural_Thickening, Hernia)",
                             path, names[k]);
    }
    return CX_OK;
}

static cx_status set_classes(cx_dataset *ds, int n, const char *const *names, cx_err *err)
{
    for (int k = 0; k < n; k++) {
        ds->classes[k] = strdup(names[k]);
        if (!ds->classes[k])
            return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    return CX_OK;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = 0;
    return s;
}

/* ------------------------------------------------------------- sources */

static cx_status load_metadata(cx_dataset **out, const cx_csv *t, const char *path,
                               const cx_dataset_opts *o, cx_err *err)
{
    int img = cx_csv_col(t, "Image Index"), fl = cx_csv_col(t, "Finding Labels");
    int pc = cx_csv_col(t, "Patient ID");
    if (img < 0)
        return cx_seterr(err, CX_EMISSING, "%s: no 'Image Index' column", path);
    if (pc < 0)
        return cx_seterr(err, CX_EMISSING, "%s: no 'Patient ID' column", path);
    int n;
    const char *const *names;
    cx_status st = wanted_classes(o, &n, &names, err);
    if (st)
        return st;
    if (n < 0) {
        n = 14;
        names = CX_CHESTXRAY14_CLASSES;
    }
    int sel[512];
    if (n > 512)
        return cx_seterr(err, CX_ELIMIT, "too many classes (%d)", n);
    if ((st = nih_selection(path, n, names, sel, err)))
        return st;
    cx_dataset *ds;
    if ((st = cx_ds_alloc(&ds, (int)t->n_rows, n, 14, err)))
        return st;
    strcpy(ds->source, "chestxray14-metadata");
    if ((st = set_classes(ds, n, names, err)))
        goto fail;
    uint8_t lab[512], src[15];
    for (long r = 0; r < t->n_rows; r++) {
        const cx_csv_row *row = &t->rows[r];
        char *id = trim(row->fields[img]);
        char *pid = trim(row->fields[pc]);
        if (!*id) {
            st = cx_seterr(err, CX_EFORMAT, "%s:%ld: empty 'Image Index'", path, row->line);
            goto fail;
        }
        if (!*pid) {
            st = cx_seterr(err, CX_EFORMAT, "%s:%ld: empty 'Patient ID'", path, row->line);
            goto fail;
        }
        if ((st = cx_nih_findings(row->fields[fl], src, path, row->line, err)))
            goto fail;
        for (int k = 0; k < n; k++)
            lab[k] = src[sel[k]];
        if (cx_ds_add(ds, id, pid, lab, src, path, row->line, err) < 0) {
            st = err ? err->code : CX_EFORMAT;
            goto fail;
        }
    }
    *out = ds;
    return CX_OK;
fail:
    cx_dataset_free(ds);
    return st ? st : CX_EFORMAT;
}

/* Split list rows "IMAGE L1 ... LK" appended to ds (created on first use). */
static cx_status load_split_rows(cx_dataset **pds, const cx_csv *t, const char *path,
                                 const cx_dataset_opts *o, long cap, cx_err *err)
{
    int n;
    const char *const *names;
    cx_status st = wanted_classes(o, &n, &names, err);
    if (st)
        return st;
    if (t->n_rows == 0)
        return cx_seterr(err, CX_EFORMAT, "%s: empty list", path);
    int kf = t->rows[0].n_fields - 1;
    if (kf < 1)
        return cx_seterr(err, CX_EFORMAT,
                         "%s:%ld: a plain image list has no labels; give the labels "
                         "(e.g. Data_Entry_2017.csv) as well",
                         path, t->rows[0].line);
    int sel[512];
    int nih = kf == 14;
    if (n < 0) {
        if (!nih)
            return cx_seterr(err, CX_EARG,
                             "%s: %d label columns (not the 14 of ChestX-ray14): give the "
                             "class names",
                             path, kf);
        n = 14;
        names = CX_CHESTXRAY14_CLASSES;
    }
    if (n > 512)
        return cx_seterr(err, CX_ELIMIT, "too many classes (%d)", n);
    if (nih) {
        if ((st = nih_selection(path, n, names, sel, err)))
            return st;
    } else if (kf == n) {
        for (int k = 0; k < n; k++)
            sel[k] = k;
    } else {
        return cx_seterr(err, CX_EFORMAT,
                         "%s:%ld: %d labels per line; expected 14 (ChestX-ray14, CheXNet order) "
                         "or one per class (%d)",
                         path, t->rows[0].line, kf, n);
    }
    cx_dataset *ds = *pds;
    if (!ds) {
        if ((st = cx_ds_alloc(&ds, (int)cap, n, nih ? 14 : 0, err)))
            return st;
        strcpy(ds->source, "split-list");
        if ((st = set_classes(ds, n, names, err))) {
            cx_dataset_free(ds);
            return st;
        }
        *pds = ds;
    } else if (ds->K_src != (nih ? 14 : 0)) {
        return cx_seterr(err, CX_EFORMAT, "%s: %d labels per line, unlike the other lists",
                         path, kf);
    }
    uint8_t lab[512], src[512];
    for (long r = 0; r < t->n_rows; r++) {
        const cx_csv_row *row = &t->rows[r];
        if ((st = cx_split_row(row, kf, src, path, err)))
            return st;
        for (int k = 0; k < n; k++)
            lab[k] = src[sel[k]];
        char pid[256];
        cx_nih_patient(row->fields[0], pid, sizeof pid);
        if (cx_ds_add(ds, row->fields[0], pid, lab, nih ? src : NULL, path, row->line, err) < 0)
            return err ? err->code : CX_EFORMAT;
    }
    return CX_OK;
}

static int is_named(const char *h, const char *const *list, int n)
{
    for (int i = 0; i < n; i++)
        if (cx_class_name_eq(h, list[i]))
            return 1;
    return 0;
}

static cx_status load_manifest(cx_dataset **out, const cx_csv *t, const char *path,
                               const cx_dataset_opts *o, cx_err *err)
{
    int pcol = cx_csv_col(t, "path");
    if (pcol < 0)
        pcol = cx_image_column(t);
    static const char *const pnames[] = {"patient", "patient_key", "patient_id", "Patient ID",
                                         "patientId", "subject_id"};
    int patcol = -1;
    if (o->patient_column) {
        patcol = cx_csv_col(t, o->patient_column);
        if (patcol < 0)
            return cx_seterr(err, CX_EMISSING, "%s: no patient column '%s'", path,
                             o->patient_column);
    } else {
        for (size_t i = 0; i < sizeof pnames / sizeof pnames[0] && patcol < 0; i++)
            patcol = cx_csv_col(t, pnames[i]);
    }
    int n;
    const char *const *names;
    cx_status st = wanted_classes(o, &n, &names, err);
    if (st)
        return st;
    int col[512];
    const char *auto_names[512];
    if (n < 0) {
        static const char *const skip[] = {"split", "fold", "set"};
        n = 0;
        for (int c = 0; c < t->n_cols && n < 512; c++) {
            if (c == pcol || c == patcol || is_named(t->header[c], skip, 3))
                continue;
            int ok = t->n_rows > 0;
            for (long r = 0; r < t->n_rows && ok; r++)
                if (cx_parse_label01(t->rows[r].fields[c]) < 0)
                    ok = 0;
            if (ok) {
                col[n] = c;
                auto_names[n++] = t->header[c];
            }
        }
        if (n == 0)
            return cx_seterr(err, CX_EMISSING,
                             "%s: no column holds only 0/1 labels; name the classes", path);
        names = auto_names;
    } else {
        if (n > 512)
            return cx_seterr(err, CX_ELIMIT, "too many classes (%d)", n);
        for (int k = 0; k < n; k++) {
            col[k] = -1;
            for (int c = 0; c < t->n_cols; c++)
                if (c != pcol && c != patcol && cx_class_name_eq(t->header[c], names[k])) {
                    if (col[k] >= 0)
                        return cx_seterr(err, CX_EFORMAT, "%s: two columns named '%s'", path,
                                         names[k]);
                    col[k] = c;
                }
            if (col[k] < 0) {
                char have[700];
                size_t u = 0;
                have[0] = 0;
                for (int c = 0; c < t->n_cols && u + 80 < sizeof have; c++)
                    u += (size_t)snprintf(have + u, sizeof have - u, "%s%s", c ? ", " : "",
                                          t->header[c]);
                return cx_seterr(err, CX_EMISSING,
                                 "%s: no column for class '%s' (columns: %s)", path, names[k],
                                 have);
            }
        }
    }
    cx_dataset *ds;
    if ((st = cx_ds_alloc(&ds, (int)t->n_rows, n, 0, err)))
        return st;
    strcpy(ds->source, "manifest");
    if ((st = set_classes(ds, n, names, err)))
        goto fail;
    if (patcol < 0)
        cx_ds_warn(ds, "%s: no patient column: every image is its own patient", path);
    uint8_t lab[512];
    for (long r = 0; r < t->n_rows; r++) {
        const cx_csv_row *row = &t->rows[r];
        char *id = trim(row->fields[pcol]);
        if (!*id) {
            st = cx_seterr(err, CX_EFORMAT, "%s:%ld: empty image path", path, row->line);
            goto fail;
        }
        const char *pid = id;
        if (patcol >= 0) {
            pid = trim(row->fields[patcol]);
            if (!*pid) {
                st = cx_seterr(err, CX_EFORMAT, "%s:%ld: empty patient ('%s')", path, row->line,
                               t->header[patcol]);
                goto fail;
            }
        }
        for (int k = 0; k < n; k++) {
            int v = cx_parse_label01(row->fields[col[k]]);
            if (v < 0) {
                st = cx_seterr(err, CX_EFORMAT, "%s:%ld: column '%s' has '%s', not 0/1", path,
                               row->line, t->header[col[k]], row->fields[col[k]]);
                goto fail;
            }
            lab[k] = (uint8_t)v;
        }
        if (cx_ds_add(ds, id, pid, lab, NULL, path, row->line, err) < 0) {
            st = err ? err->code : CX_EFORMAT;
            goto fail;
        }
    }
    *out = ds;
    return CX_OK;
fail:
    cx_dataset_free(ds);
    return st ? st : CX_EFORMAT;
}

/* Reads a whitespace list file (image names, optionally labels). */
static cx_status read_list(const char *path, cx_csv **t, cx_err *err)
{
    cx_csv_opts op = {CX_CSV_WHITESPACE, 0, 1};
    return cx_csv_read(path, &op, t, err);
}

/* A pack as the label source: its classes, or a selection of them. */
static cx_status load_pack(const cx_dataset_opts *o, cx_dataset **out, cx_err *err)
{
    cx_dataset *ds;
    cx_status st = cx_pack_open(o->labels, &ds, err);
    if (st)
        return st;
    int n;
    const char *const *names;
    if ((st = wanted_classes(o, &n, &names, err))) {
        cx_dataset_free(ds);
        return st;
    }
    if (n > 0) {
        int *sel = malloc((size_t)n * sizeof *sel);
        uint8_t *y = malloc((size_t)ds->n * n + 1);
        char **cls = calloc((size_t)n, sizeof *cls);
        if (!sel || !y || !cls) {
            free(sel);
            free(y);
            free(cls);
            cx_dataset_free(ds);
            return cx_seterr(err, CX_ENOMEM, "out of memory");
        }
        for (int k = 0; k < n && !st; k++) {
            sel[k] = -1;
            for (int j = 0; j < ds->K; j++)
                if (cx_class_name_eq(names[k], ds->classes[j]))
                    sel[k] = j;
            if (sel[k] < 0)
                st = cx_seterr(err, CX_EMISSING,
                               "%s: the pack has no class '%s' (it has %d: %s%s); prepare it "
                               "again with that class",
                               o->labels, names[k], ds->K, ds->K ? ds->classes[0] : "",
                               ds->K > 1 ? ", ..." : "");
            else if (!(cls[k] = strdup(ds->classes[sel[k]])))
                st = cx_seterr(err, CX_ENOMEM, "out of memory");
        }
        if (st) {
            for (int k = 0; k < n; k++)
                free(cls[k]);
            free(cls);
            free(sel);
            free(y);
            cx_dataset_free(ds);
            return st;
        }
        for (int i = 0; i < ds->n; i++)
            for (int k = 0; k < n; k++)
                y[(size_t)i * n + k] = ds->y[(size_t)i * ds->K + sel[k]];
        for (int k = 0; k < ds->K; k++)
            free(ds->classes[k]);
        free(ds->classes);
        free(ds->y);
        ds->classes = cls;
        ds->y = y;
        ds->K = n;
        free(sel);
    }
    *out = ds;
    return CX_OK;
}

cx_status cx_dataset_load(const cx_dataset_opts *o, cx_dataset **out, cx_err *err)
{
    *out = NULL;
    if (!o || (!o->labels && o->n_lists <= 0))
        return cx_seterr(err, CX_EARG, "dataset: no labels file and no lists");
    cx_dataset *ds = NULL;
    cx_status st;
    if (o->labels && cx_pack_sniff(o->labels))
        return load_pack(o, out, err);
    if (o->labels) {
        char *text = NULL;
        size_t len = 0;
        if ((st = cx_read_text_file(o->labels, &text, &len, err)))
            return st;
        int csv = cx_label_layout_sniff(text, len) == CX_LAYOUT_CSV;
        cx_csv_opts op = {csv ? CX_CSV_COMMA : CX_CSV_WHITESPACE, csv, !csv};
        cx_csv *t = NULL;
        st = cx_csv_parse(text, len, o->labels, &op, &t, err);
        free(text);
        if (st)
            return st;
        if (!csv)
            st = load_split_rows(&ds, t, o->labels, o, t->n_rows, err);
        else if (cx_csv_col(t, "Finding Labels") >= 0 && cx_csv_col(t, "Image Index") >= 0)
            st = load_metadata(&ds, t, o->labels, o, err);
        else
            st = load_manifest(&ds, t, o->labels, o, err);
        cx_csv_free(t);
        if (st) {
            cx_dataset_free(ds);
            return st;
        }
    } else {
        cx_csv *ts[16] = {0};
        if (o->n_lists > 16)
            return cx_seterr(err, CX_ELIMIT, "dataset: at most 16 lists");
        long cap = 0;
        st = CX_OK;
        for (int i = 0; i < o->n_lists && !st; i++) {
            if (!o->lists[i])
                continue;
            st = read_list(o->lists[i], &ts[i], err);
            if (!st)
                cap += ts[i]->n_rows;
        }
        for (int i = 0; i < o->n_lists && !st; i++)
            if (ts[i])
                st = load_split_rows(&ds, ts[i], o->lists[i], o, cap, err);
        for (int i = 0; i < o->n_lists; i++)
            cx_csv_free(ts[i]);
        if (!st && !ds)
            st = cx_seterr(err, CX_EARG, "dataset: no lists");
        if (st) {
            cx_dataset_free(ds);
            return st;
        }
    }
    ds->label_path = strdup(o->labels ? o->labels : o->lists[0]);
    if (ds->n == 0) {
        st = cx_seterr(err, CX_EFORMAT, "%s: no images", ds->label_path);
        cx_dataset_free(ds);
        return st;
    }
    if (o->image_dir || !strcmp(ds->source, "manifest")) {
        const char *dir = o->image_dir;
        char *mdir = NULL;
        if (!dir) { /* the manifest's folder */
            mdir = strdup(o->labels);
            if (!mdir) {
                cx_dataset_free(ds);
                return cx_seterr(err, CX_ENOMEM, "out of memory");
            }
            char *slash = strrchr(mdir, '/');
            if (slash)
                slash[1] = 0;
            else
                strcpy(mdir, ".");
            dir = mdir;
        }
        st = cx_dataset_set_image_dir(ds, dir, err);
        free(mdir);
        if (st) {
            cx_dataset_free(ds);
            return st;
        }
    }
    *out = ds;
    return CX_OK;
}

