/* Patient-level splits: random (seeded), from list files, their counts and
 * their files (see chexnet.h, data section). */
#define _GNU_SOURCE
#include "data/data_internal.h"
#include "data/csv.h"
#include "util/rng.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const CX_SPLIT_NAMES[3] = {"train", "val", "test"};

void cx_split_free(cx_split *s)
{
    if (!s)
        return;
    free(s->part);
    for (int p = 0; p < 3; p++)
        free(s->index[p]);
    free(s->positives);
    for (int i = 0; i < s->n_warnings; i++)
        free(s->warnings[i]);
    free(s->warnings);
    memset(s, 0, sizeof *s);
}

static void free_warnings(cx_split *s)
{
    for (int i = 0; i < s->n_warnings; i++)
        free(s->warnings[i]);
    free(s->warnings);
    s->warnings = NULL;
    s->n_warnings = 0;
}

cx_status cx_split_update(const cx_dataset *ds, cx_split *s, cx_err *err)
{
    int n = ds->n, K = ds->K;
    if (s->n_images != n || !s->part)
        return cx_seterr(err, CX_EARG, "split does not belong to this dataset");
    for (int p = 0; p < 3; p++) {
        free(s->index[p]);
        s->index[p] = NULL;
        s->count[p] = 0;
        s->patients[p] = 0;
    }
    free(s->positives);
    s->n_classes = K;
    s->positives = calloc((size_t)3 * (K ? K : 1), sizeof *s->positives);
    uint8_t *pmask = calloc((size_t)ds->n_patients + 1, 1);
    if (!s->positives || !pmask) {
        free(pmask);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        int p = s->part[i];
        if (p < -1 || p > 2) {
            free(pmask);
            return cx_seterr(err, CX_EARG, "split: image %d in part %d", i, p);
        }
        if (p < 0)
            continue;
        s->count[p]++;
        pmask[ds->patient[i]] |= (uint8_t)(1u << p);
        for (int k = 0; k < K; k++)
            s->positives[p * K + k] += ds->y[(size_t)i * K + k];
    }
    for (int p = 0; p < 3; p++) {
        s->index[p] = malloc((size_t)(s->count[p] ? s->count[p] : 1) * sizeof(int));
        if (!s->index[p]) {
            free(pmask);
            return cx_seterr(err, CX_ENOMEM, "out of memory");
        }
        s->count[p] = 0;
    }
    for (int i = 0; i < n; i++)
        if (s->part[i] >= 0)
            s->index[s->part[i]][s->count[s->part[i]]++] = i;
    s->crossing_patients = 0;
    for (int q = 0; q < ds->n_patients; q++) {
        int bits = pmask[q];
        for (int p = 0; p < 3; p++)
            if (bits & (1 << p))
                s->patients[p]++;
        if (bits && (bits & (bits - 1)))
            s->crossing_patients++;
    }
    free(pmask);
    free_warnings(s);
    for (int p = 0; p < 3; p++) {
        if (!s->count[p])
            continue;
        for (int k = 0; k < K; k++)
            if (s->positives[p * K + k] == 0)
                cx_note_add(&s->n_warnings, &s->warnings,
                            "%s split (%d image%s): no positive image for class '%s'",
                            CX_SPLIT_NAMES[p], s->count[p], s->count[p] == 1 ? "" : "s",
                            ds->classes[k]);
    }
    if (s->crossing_patients)
        cx_note_add(&s->n_warnings, &s->warnings,
                    "%d patient%s images in more than one split", s->crossing_patients,
                    s->crossing_patients == 1 ? " has" : "s have");
    return CX_OK;
}

static cx_status split_init(const cx_dataset *ds, cx_split *s, cx_err *err)
{
    memset(s, 0, sizeof *s);
    s->n_images = ds->n;
    s->n_classes = ds->K;
    s->part = malloc((size_t)(ds->n ? ds->n : 1));
    if (!s->part)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    memset(s->part, 0xff, (size_t)ds->n); /* -1 */
    return CX_OK;
}

static int cmp_patient(const void *a, const void *b, void *ctx)
{
    char **ids = ctx;
    return strcmp(ids[*(const int *)a], ids[*(const int *)b]);
}

/* Deals the patients with flag[q] set (in an order that depends only on
 * their ids and the seed) to parts by the cumulative fractions of their
 * images. pp[q] receives the part. */
static cx_status deal_patients(const cx_dataset *ds, const uint8_t *flag, const int *cnt,
                               const double f[3], uint64_t seed, const int8_t *parts,
                               int8_t *pp, cx_err *err)
{
    int np = ds->n_patients, m = 0;
    int *order = malloc((size_t)(np ? np : 1) * sizeof *order);
    if (!order)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    long total = 0;
    for (int q = 0; q < np; q++)
        if (flag[q]) {
            order[m++] = q;
            total += cnt[q];
        }
    /* sort by id: the split does not depend on the row order of the file */
    qsort_r(order, (size_t)m, sizeof *order, cmp_patient, ds->patients);
    cx_rng r;
    cx_rng_seed(&r, seed ^ 0x53504C4954ULL);
    for (int i = m - 1; i > 0; i--) {
        int j = (int)cx_rng_below(&r, (uint64_t)i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    double c0 = f[0] * total, c1 = (f[0] + f[1]) * total;
    long cum = 0;
    for (int i = 0; i < m; i++) {
        int q = order[i];
        double mid = cum + cnt[q] * 0.5;
        pp[q] = mid < c0 ? parts[0] : mid < c1 ? parts[1] : parts[2];
        cum += cnt[q];
    }
    free(order);
    return CX_OK;
}

static cx_status check_fractions(const double f[3], cx_err *err)
{
    double sum = 0;
    for (int p = 0; p < 3; p++) {
        if (!isfinite(f[p]) || f[p] < 0 || f[p] > 1)
            return cx_seterr(err, CX_EARG, "split fraction %g is not in [0, 1]", f[p]);
        sum += f[p];
    }
    if (fabs(sum - 1) > 1e-6)
        return cx_seterr(err, CX_EARG, "split fractions %g, %g, %g do not sum to 1", f[0], f[1],
                         f[2]);
    return CX_OK;
}

cx_status cx_split_random(const cx_dataset *ds, const double fractions[3], uint64_t seed,
                          cx_split *out, cx_err *err)
{
    memset(out, 0, sizeof *out);
    cx_status st = check_fractions(fractions, err);
    if (st)
        return st;
    if ((st = split_init(ds, out, err)))
        return st;
    int np = ds->n_patients;
    int *cnt = calloc((size_t)np + 1, sizeof *cnt);
    uint8_t *flag = malloc((size_t)np + 1);
    int8_t *pp = malloc((size_t)np + 1);
    if (!cnt || !flag || !pp) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto done;
    }
    memset(flag, 1, (size_t)np + 1);
    for (int i = 0; i < ds->n; i++)
        cnt[ds->patient[i]]++;
    static const int8_t parts[3] = {0, 1, 2};
    if ((st = deal_patients(ds, flag, cnt, fractions, seed, parts, pp, err)))
        goto done;
    for (int i = 0; i < ds->n; i++)
        out->part[i] = pp[ds->patient[i]];
    st = cx_split_update(ds, out, err);
done:
    free(cnt);
    free(flag);
    free(pp);
    if (st)
        cx_split_free(out);
    return st;
}

static cx_status assign_list(const cx_dataset *ds, cx_split *s, const char *path, int part,
                             int *n_label_diff, cx_err *err)
{
    cx_csv_opts op = {CX_CSV_WHITESPACE, 0, 1};
    cx_csv *t = NULL;
    cx_status st = cx_csv_read(path, &op, &t, err);
    if (st)
        return st;
    for (long r = 0; r < t->n_rows; r++) {
        const cx_csv_row *row = &t->rows[r];
        const char *name = row->fields[0];
        int i = cx_dataset_find(ds, name);
        if (i == -2) {
            st = cx_seterr(err, CX_EFORMAT,
                           "%s:%ld: image '%s' matches several dataset images by file name", path,
                           row->line, name);
            break;
        }
        if (i < 0) {
            st = cx_seterr(err, CX_EMISSING, "%s:%ld: image '%s' is not in the labels (%s)",
                           path, row->line, name, ds->label_path ? ds->label_path : "dataset");
            break;
        }
        if (s->part[i] >= 0) {
            if (s->part[i] == part)
                st = cx_seterr(err, CX_EFORMAT, "%s:%ld: image '%s' is listed twice", path,
                               row->line, name);
            else
                st = cx_seterr(err, CX_EFORMAT, "%s:%ld: image '%s' is also in the %s list",
                               path, row->line, name, CX_SPLIT_NAMES[s->part[i]]);
            break;
        }
        s->part[i] = (int8_t)part;
        /* labels given in the list: compare with the dataset's (ChestX-ray14) */
        if (row->n_fields == 15 && ds->y_src) {
            const uint8_t *y = ds->y_src + (size_t)i * 14;
            for (int k = 0; k < 14; k++)
                if (row->fields[1 + k][0] - '0' != y[k]) {
                    (*n_label_diff)++;
                    break;
                }
        }
    }
    cx_csv_free(t);
    return st;
}

cx_status cx_split_from_lists(const cx_dataset *ds, const char *train, const char *val,
                              const char *test, double val_fraction, uint64_t seed,
                              cx_split *out, cx_err *err)
{
    memset(out, 0, sizeof *out);
    if (!train)
        return cx_seterr(err, CX_EARG, "split: no train list");
    if (!val && (!isfinite(val_fraction) || val_fraction < 0 || val_fraction >= 1))
        return cx_seterr(err, CX_EARG, "split: validation fraction %g not in [0, 1)",
                         val_fraction);
    cx_status st = split_init(ds, out, err);
    if (st)
        return st;
    const char *lists[3] = {train, val, test};
    int diff[3] = {0, 0, 0};
    for (int p = 0; p < 3 && !st; p++)
        if (lists[p])
            st = assign_list(ds, out, lists[p], p, &diff[p], err);
    if (!st && !val && val_fraction > 0) {
        int np = ds->n_patients;
        int *cnt = calloc((size_t)np + 1, sizeof *cnt);
        uint8_t *flag = calloc((size_t)np + 1, 1);
        int8_t *pp = calloc((size_t)np + 1, 1);
        if (!cnt || !flag || !pp) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
        } else {
            for (int i = 0; i < ds->n; i++)
                if (out->part[i] == 0) {
                    cnt[ds->patient[i]]++;
                    flag[ds->patient[i]] = 1;
                }
            double f[3] = {1 - val_fraction, val_fraction, 0};
            static const int8_t parts[3] = {0, 1, 1};
            st = deal_patients(ds, flag, cnt, f, seed, parts, pp, err);
            if (!st)
                for (int i = 0; i < ds->n; i++)
                    if (out->part[i] == 0)
                        out->part[i] = pp[ds->patient[i]];
        }
        free(cnt);
        free(flag);
        free(pp);
    }
    if (!st)
        st = cx_split_update(ds, out, err);
    if (st) {
        cx_split_free(out);
        return st;
    }
    for (int p = 0; p < 3; p++)
        if (diff[p])
            cx_note_add(&out->n_warnings, &out->warnings,
                        "%s: %d image%s labels that differ from %s (using the latter)",
                        lists[p], diff[p], diff[p] == 1 ? " has" : "s have",
                        ds->label_path ? ds->label_path : "the labels");
    return CX_OK;
}

cx_status cx_split_write(const cx_dataset *ds, const cx_split *s, const char *dir, cx_err *err)
{
    if (s->n_images != ds->n || !s->part)
        return cx_seterr(err, CX_EARG, "split does not belong to this dataset");
    cx_status mst = cx_mkdir_p(dir, err);
    if (mst)
        return mst;
    int K = ds->y_src ? ds->K_src : ds->K;
    const uint8_t *Y = ds->y_src ? ds->y_src : ds->y;
    for (int p = 0; p < 3; p++) {
        size_t cap = 1024, used = 0;
        char *buf = malloc(cap);
        if (!buf)
            return cx_seterr(err, CX_ENOMEM, "out of memory");
        for (int j = 0; j < s->count[p]; j++) {
            int i = s->index[p][j];
            const char *nm = ds->names[i];
            if (strpbrk(nm, " \t\r\n")) {
                free(buf);
                return cx_seterr(err, CX_EUNSUPPORTED,
                                 "image name '%s' contains white space: cannot be written to "
                                 "a split list",
                                 nm);
            }
            size_t need = strlen(nm) + 2 * (size_t)K + 2;
            if (used + need >= cap) {
                while (used + need >= cap)
                    cap *= 2;
                char *nb = realloc(buf, cap);
                if (!nb) {
                    free(buf);
                    return cx_seterr(err, CX_ENOMEM, "out of memory");
                }
                buf = nb;
            }
            used += (size_t)sprintf(buf + used, "%s", nm);
            for (int k = 0; k < K; k++) {
                buf[used++] = ' ';
                buf[used++] = (char)('0' + Y[(size_t)i * K + k]);
            }
            buf[used++] = '\n';
        }
        char path[4096];
        snprintf(path, sizeof path, "%s%s%s.txt", dir, dir[strlen(dir) - 1] == '/' ? "" : "/",
                 CX_SPLIT_NAMES[p]);
        cx_status st = cx_write_file_atomic(path, buf, used, err);
        free(buf);
        if (st)
            return st;
    }
    return CX_OK;
}
