/* Reader study, the protocol of CheXNet's Table 1 (Rajpurkar et al. 2017,
 * section 3.2): for one finding, every labeller's F1 against each of the other
 * readers taken as ground truth, averaged (a reader over the K-1 other
 * readers, a model over all K readers); the readers' average; the difference
 * model - reader average; percentile-bootstrap 95% CIs from the same image
 * resamples for every figure; the difference is significant when its CI
 * excludes 0.
 *
 * With a ground truth (truth_path), also the figure of CheXpert's reader
 * comparison: each labeller's operating point against the truth
 * (sensitivity, 1 - specificity), the readers' mean point, and each model's
 * ROC curve and AUROC from its scores.
 *
 * Files are CSVs with an image/study id column (e.g. "Study") matched by the
 * exact id, and the class column matched by name (never by position). */
#define _GNU_SOURCE
#include "data/csv.h"
#include "data/labels.h"
#include "eval/eval_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RATERS 24

void cx_readers_free(cx_readers_result *r)
{
    if (!r)
        return;
    if (r->raters)
        for (int i = 0; i < r->n_readers + r->n_models; i++) {
            free(r->raters[i].pair_f1);
            free(r->raters[i].roc_fpr);
            free(r->raters[i].roc_tpr);
            free(r->raters[i].roc_thr);
        }
    free(r->raters);
    free(r->diff);
    free(r->significant);
    for (int i = 0; i < r->n_warnings; i++)
        free(r->warnings[i]);
    free(r->warnings);
    free(r);
}

/* Loads one labeller's column for the images of ref (or defines ref when
 * ref->n == 0). is_score: numbers (model), else 0/1 labels. */
typedef struct {
    int n;
    char **ids;
    cx_strmap map;
} idset;

static void idset_free(idset *s)
{
    for (int i = 0; i < s->n; i++)
        free(s->ids[i]);
    free(s->ids);
    cx_strmap_free(&s->map);
}

static cx_status load_column(const char *path, const char *cls, int is_score, idset *ref,
                             double *out, int *n_extra, cx_err *err)
{
    cx_csv *t;
    cx_csv_opts o = {CX_CSV_COMMA, 1, 0};
    cx_status st = cx_csv_read(path, &o, &t, err);
    if (st)
        return st;
    int ic = cx_image_column(t), cc = -1;
    for (int c = 0; c < t->n_cols; c++)
        if (c != ic && cx_class_name_eq(t->header[c], cls)) {
            if (cc >= 0) {
                cx_csv_free(t);
                return cx_seterr(err, CX_EFORMAT, "%s: two columns named '%s'", path, cls);
            }
            cc = c;
        }
    if (cc < 0) {
        char have[600] = "";
        size_t u = 0;
        for (int c = 0; c < t->n_cols && u + 80 < sizeof have; c++)
            u += (size_t)snprintf(have + u, sizeof have - u, "%s%s", c ? ", " : "", t->header[c]);
        cx_csv_free(t);
        return cx_seterr(err, CX_EMISSING, "%s: no column for class '%s' (columns: %s)", path,
                         cls, have);
    }
    int defining = ref->n == 0;
    if (defining) {
        ref->ids = calloc(t->n_rows ? (size_t)t->n_rows : 1, sizeof *ref->ids);
        if (!ref->ids || cx_strmap_init(&ref->map, (size_t)t->n_rows)) {
            cx_csv_free(t);
            return cx_seterr(err, CX_ENOMEM, "out of memory");
        }
    }
    char *seen = calloc(ref->n ? (size_t)ref->n : (size_t)t->n_rows + 1, 1);
    long *seen_line = calloc(ref->n ? (size_t)ref->n : (size_t)t->n_rows + 1, sizeof *seen_line);
    if (!seen || !seen_line) {
        free(seen);
        free(seen_line);
        cx_csv_free(t);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    *n_extra = 0;
    for (long r = 0; r < t->n_rows; r++) {
        const cx_csv_row *row = &t->rows[r];
        const char *id = row->fields[ic];
        while (*id == ' ')
            id++;
        if (!*id) {
            st = cx_seterr(err, CX_EFORMAT, "%s:%ld: empty id", path, row->line);
            goto out;
        }
        int i = cx_strmap_get(&ref->map, id);
        if (i < 0) {
            if (!defining) {
                (*n_extra)++;
                continue;
            }
            i = ref->n;
            ref->ids[i] = strdup(id);
            if (!ref->ids[i]) {
                st = cx_seterr(err, CX_ENOMEM, "out of memory");
                goto out;
            }
            cx_strmap_put(&ref->map, ref->ids[i], i);
            ref->n++;
        } else if (seen[i]) {
            st = cx_seterr(err, CX_EFORMAT, "%s:%ld: '%s' appears twice (first on line %ld)",
                           path, row->line, id, seen_line[i]);
            goto out;
        }
        seen[i] = 1;
        seen_line[i] = row->line;
        const char *f = row->fields[cc];
        double v;
        if (is_score) {
            if (cx_csv_parse_double(f, &v)) {
                st = cx_seterr(err, CX_EFORMAT, "%s:%ld: '%s' for '%s' is not a finite number",
                               path, row->line, f, t->header[cc]);
                goto out;
            }
        } else {
            int lv = cx_parse_label(f);
            if (lv != 0 && lv != 1) {
                st = cx_seterr(err, CX_EFORMAT,
                               "%s:%ld: '%s' for '%s' is not a 0/1 label (a reader must label "
                               "every image)",
                               path, row->line, f, t->header[cc]);
                goto out;
            }
            v = lv;
        }
        out[i] = v;
    }
    for (int i = 0; i < ref->n; i++)
        if (!seen[i]) {
            st = cx_seterr(err, CX_EMISSING, "%s: no row for '%s' (present in the first reader's file)",
                           path, ref->ids[i]);
            goto out;
        }
    if (ref->n == 0)
        st = cx_seterr(err, CX_EFORMAT, "%s: no rows", path);
out:
    free(seen);
    free(seen_line);
    cx_csv_free(t);
    return st;
}

static int bits_count(const uint8_t *b, int n)
{
    int c = 0;
    for (int i = 0; i < n; i++)
        c += b[i];
    return c;
}

static double f1_of(uint64_t tp, uint64_t fp, uint64_t fn)
{
    uint64_t d = 2 * tp + fp + fn;
    return d ? (double)(2 * tp) / (double)d : 0.0; /* sklearn zero_division=0 */
}

cx_status cx_readers_run(const cx_readers_opts *o, cx_readers_result **out, cx_err *err)
{
    *out = NULL;
    if (!o || !o->class_name || !*o->class_name)
        return cx_seterr(err, CX_EARG, "a class name is required");
    int K = o->n_readers, M = o->n_models;
    if (K < 2)
        return cx_seterr(err, CX_EARG, "a reader study needs at least 2 readers (got %d)", K);
    if (M < 1)
        return cx_seterr(err, CX_EARG, "a reader study needs a model");
    int L = K + M + (o->truth_path ? 1 : 0);
    if (L > MAX_RATERS)
        return cx_seterr(err, CX_ELIMIT, "at most %d files in a reader study", MAX_RATERS);
    if (o->n_bootstrap < 0 || o->n_bootstrap > 10000000)
        return cx_seterr(err, CX_EARG, "bootstrap resamples must be in [0, 10^7]");
    for (int i = 0; i < K + M; i++) {
        const cx_rater *a = i < K ? &o->readers[i] : &o->models[i - K];
        if (!a->name || !*a->name || !a->path)
            return cx_seterr(err, CX_EARG, "every reader and model needs NAME=FILE");
        for (int j = 0; j < i; j++) {
            const cx_rater *b = j < K ? &o->readers[j] : &o->models[j - K];
            if (!strcmp(a->name, b->name))
                return cx_seterr(err, CX_EARG, "two labellers named '%s'", a->name);
        }
    }
    cx_status st = CX_OK;
    idset ref = {0};
    double *vals[MAX_RATERS] = {0};
    uint8_t *bits[MAX_RATERS] = {0};
    uint32_t *pat = NULL, *uid = NULL, *upat = NULL, *hist = NULL;
    double *res = NULL, *tmp = NULL;
    double *mscore[MAX_RATERS] = {0}; /* the models' scores before thresholding */
    int8_t *ytruth = NULL;
    cx_readers_result *r = calloc(1, sizeof *r);
    if (!r)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    snprintf(r->class_name, sizeof r->class_name, "%s", o->class_name);
    r->n_readers = K;
    r->n_models = M;
    r->n_bootstrap = o->n_bootstrap;
    r->seed = o->seed;
    r->threshold = o->threshold_given ? o->threshold : 0.5;
    r->has_truth = o->truth_path != NULL;
    r->reader_mean_fpr = r->reader_mean_tpr = NAN;
    r->raters = calloc((size_t)(K + M), sizeof *r->raters);
    r->diff = calloc((size_t)M, sizeof *r->diff);
    r->significant = calloc((size_t)M, sizeof *r->significant);
    if (!r->raters || !r->diff || !r->significant) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto done;
    }
    /* load: readers, models, truth */
    for (int a = 0; a < L; a++) {
        const char *path = a < K ? o->readers[a].path
                           : a < K + M ? o->models[a - K].path
                                       : o->truth_path;
        const char *name = a < K ? o->readers[a].name : a < K + M ? o->models[a - K].name : "truth";
        int cap = ref.n ? ref.n : 1 << 22;
        if (a == 0) {
            /* the first reader defines the ids; size from a first pass */
            cx_csv *t;
            cx_csv_opts co = {CX_CSV_COMMA, 1, 0};
            st = cx_csv_read(path, &co, &t, err);
            if (st)
                goto done;
            cap = (int)(t->n_rows ? t->n_rows : 1);
            cx_csv_free(t);
        }
        vals[a] = malloc((size_t)cap * sizeof *vals[a]);
        if (!vals[a]) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto done;
        }
        int extra = 0;
        int is_model = a >= K && a < K + M;
        st = load_column(path, o->class_name, is_model, &ref, vals[a], &extra, err);
        if (st)
            goto done;
        if (extra)
            cx_note_add(&r->n_warnings, &r->warnings,
                        "%s (%s): %d row%s for ids not in the first reader's file, ignored", name,
                        path, extra, extra == 1 ? "" : "s");
        if (a < K + M) {
            cx_rater_result *rr = &r->raters[a];
            snprintf(rr->name, sizeof rr->name, "%s", name);
            rr->is_model = is_model;
        }
    }
    int n = ref.n;
    r->n_images = n;
    /* binarise the models (their scores kept for the ROC against the truth) */
    for (int a = K; a < K + M; a++) {
        if (r->has_truth) {
            mscore[a] = malloc((size_t)(n ? n : 1) * sizeof *mscore[a]);
            if (!mscore[a]) {
                st = cx_seterr(err, CX_ENOMEM, "out of memory");
                goto done;
            }
            memcpy(mscore[a], vals[a], (size_t)n * sizeof *mscore[a]);
        }
        int binary = 1, outside = 0;
        for (int i = 0; i < n; i++) {
            if (vals[a][i] != 0 && vals[a][i] != 1)
                binary = 0;
            if (vals[a][i] < 0 || vals[a][i] > 1)
                outside++;
        }
        if (!binary || o->threshold_given) {
            if (!o->threshold_given)
                cx_note_add(&r->n_warnings, &r->warnings,
                            "model %s gives scores, not 0/1 decisions: positive when >= 0.5 "
                            "(set --threshold)",
                            r->raters[a].name);
            for (int i = 0; i < n; i++)
                vals[a][i] = vals[a][i] >= r->threshold;
        }
        if (outside)
            cx_note_add(&r->n_warnings, &r->warnings,
                        "model %s: %d scores outside [0,1] (allowed; thresholded as given)",
                        r->raters[a].name, outside);
    }
    for (int a = 0; a < L; a++) {
        bits[a] = malloc((size_t)n);
        if (!bits[a]) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto done;
        }
        int np = 0;
        for (int i = 0; i < n; i++) {
            bits[a][i] = vals[a][i] != 0;
            np += bits[a][i];
        }
        if (a < K + M)
            r->raters[a].n_pos = np;
        if (np == 0)
            cx_note_add(&r->n_warnings, &r->warnings,
                        "%s calls no image positive for %s: F1 against it is 0 by sklearn's "
                        "zero_division convention",
                        a < K + M ? r->raters[a].name : "truth", o->class_name);
    }
    /* operating points and the models' ROC against the truth */
    for (int a = 0; a < K + M; a++) {
        cx_rater_result *x = &r->raters[a];
        x->sens_truth = x->spec_truth = x->auroc_truth = NAN;
        x->conf_truth = (cx_confusion){NAN, NAN, NAN, NAN};
    }
    if (r->has_truth) {
        int T = L - 1;
        ytruth = malloc((size_t)(n ? n : 1));
        if (!ytruth) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto done;
        }
        for (int i = 0; i < n; i++)
            ytruth[i] = (int8_t)bits[T][i];
        double sf = 0, st_ = 0;
        int ok = 1;
        for (int a = 0; a < K + M; a++) {
            cx_rater_result *x = &r->raters[a];
            cx_confusion c = {0, 0, 0, 0};
            for (int i = 0; i < n; i++) {
                int p = bits[a][i], y = bits[T][i];
                if (p && y)
                    c.tp++;
                else if (p)
                    c.fp++;
                else if (y)
                    c.fn++;
                else
                    c.tn++;
            }
            x->conf_truth = c;
            x->sens_truth = c.tp + c.fn > 0 ? c.tp / (c.tp + c.fn) : NAN;
            x->spec_truth = c.tn + c.fp > 0 ? c.tn / (c.tn + c.fp) : NAN;
            if (a < K) {
                sf += 1 - x->spec_truth;
                st_ += x->sens_truth;
                ok &= isfinite(x->sens_truth) && isfinite(x->spec_truth);
            } else {
                cx_auroc(mscore[a], ytruth, (size_t)n, &x->auroc_truth);
                st = cx_roc_curve(mscore[a], ytruth, (size_t)n, 1, &x->roc_fpr, &x->roc_tpr,
                                  &x->roc_thr, &x->roc_n, err);
                if (st)
                    goto done;
            }
        }
        if (ok) {
            r->reader_mean_fpr = sf / K;
            r->reader_mean_tpr = st_ / K;
        } else
            cx_note_add(&r->n_warnings, &r->warnings,
                        "the truth has no %s for %s: sensitivity or specificity undefined",
                        bits_count(bits[T], n) ? "negatives" : "positives", o->class_name);
    }
    /* distinct bit patterns */
    pat = malloc((size_t)n * sizeof *pat);
    uid = malloc((size_t)n * sizeof *uid);
    upat = malloc((size_t)n * sizeof *upat);
    if (!pat || !uid || !upat) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto done;
    }
    int nu = 0;
    for (int i = 0; i < n; i++) {
        uint32_t p = 0;
        for (int a = 0; a < L; a++)
            p |= (uint32_t)bits[a][i] << a;
        pat[i] = p;
        int u;
        for (u = 0; u < nu; u++)
            if (upat[u] == p)
                break;
        if (u == nu)
            upat[nu++] = p;
        uid[i] = (uint32_t)u;
    }
    /* figures per resample: L-1 (or L) F1s vs readers' consensus protocol, etc. */
    int nq = (K + M) /* mean F1 */ + 1 /* reader avg */ + M /* diffs */ +
             (r->has_truth ? (K + M) + 1 : 0);
    int B = o->n_bootstrap;
    int nrep = B + 1; /* index 0: the full set */
    res = malloc((size_t)nrep * nq * sizeof *res);
    tmp = malloc((size_t)nrep * sizeof *tmp);
    for (int a = 0; a < K + M; a++) {
        r->raters[a].pair_f1 = malloc((size_t)K * sizeof(double));
        if (!r->raters[a].pair_f1) {
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto done;
        }
    }
    if (!res || !tmp) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto done;
    }
    int oom = 0;
#pragma omp parallel num_threads(cx_get_threads())
    {
        uint64_t *h = calloc((size_t)nu, sizeof *h);
        if (!h) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(dynamic, 16)
        for (int b = 0; b < nrep; b++) {
            if (!h)
                continue;
            memset(h, 0, (size_t)nu * sizeof *h);
            if (b == 0) {
                for (int i = 0; i < n; i++)
                    h[uid[i]]++;
            } else {
                uint64_t s4[4];
                cx_eval_rng_seed(s4, o->seed, (uint64_t)(b - 1));
                for (int i = 0; i < n; i++)
                    h[uid[cx_eval_rng_below(s4, (uint32_t)n)]]++;
            }
            /* pairwise F1 of labeller a against labeller g as truth */
            double F[MAX_RATERS][MAX_RATERS];
            for (int a = 0; a < L; a++)
                for (int g = a + 1; g < L; g++) {
                    uint64_t tp = 0, fp = 0, fn = 0;
                    for (int u = 0; u < nu; u++) {
                        int x = (upat[u] >> a) & 1, y = (upat[u] >> g) & 1;
                        tp += (x && y) ? h[u] : 0;
                        fp += (x && !y) ? h[u] : 0;
                        fn += (!x && y) ? h[u] : 0;
                    }
                    F[a][g] = F[g][a] = f1_of(tp, fp, fn); /* F1 is symmetric */
                }
            double *q = res + (size_t)b * nq;
            double ravg = 0;
            for (int a = 0; a < K + M; a++) {
                double s = 0;
                int c = 0;
                for (int g = 0; g < K; g++)
                    if (g != a) {
                        s += F[a][g];
                        c++;
                    }
                q[a] = s / c;
                if (a < K)
                    ravg += q[a];
                if (b == 0)
                    for (int g = 0; g < K; g++)
                        r->raters[a].pair_f1[g] = g == a ? NAN : F[a][g];
            }
            ravg /= K;
            q[K + M] = ravg;
            for (int m = 0; m < M; m++)
                q[K + M + 1 + m] = q[K + m] - ravg;
            if (r->has_truth) {
                int T = L - 1;
                double tavg = 0;
                for (int a = 0; a < K + M; a++) {
                    q[K + 2 * M + 1 + a] = F[a][T];
                    if (a < K)
                        tavg += F[a][T];
                }
                q[2 * K + 3 * M + 1] = tavg / K;
            }
        }
        free(h);
    }
    if (oom) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory (bootstrap)");
        goto done;
    }
    /* point values and CIs */
    for (int qi = 0; qi < nq; qi++) {
        cx_stat s;
        s.value = res[qi];
        s.lo = s.hi = NAN;
        if (B > 0) {
            for (int b = 0; b < B; b++)
                tmp[b] = res[(size_t)(b + 1) * nq + qi];
            cx_eval_ci95(tmp, (size_t)B, &s.lo, &s.hi);
        }
        if (qi < K + M)
            r->raters[qi].f1 = s;
        else if (qi == K + M)
            r->reader_avg = s;
        else if (qi < K + 2 * M + 1)
            r->diff[qi - (K + M + 1)] = s;
        else if (qi < 2 * K + 3 * M + 1)
            r->raters[qi - (K + 2 * M + 1)].f1_truth = s;
        else
            r->reader_avg_truth = s;
    }
    if (!r->has_truth) {
        for (int a = 0; a < K + M; a++)
            r->raters[a].f1_truth = (cx_stat){NAN, NAN, NAN};
        r->reader_avg_truth = (cx_stat){NAN, NAN, NAN};
    }
    for (int m = 0; m < M; m++)
        r->significant[m] = B > 0 && (r->diff[m].lo > 0 || r->diff[m].hi < 0);
done:
    idset_free(&ref);
    for (int a = 0; a < MAX_RATERS; a++) {
        free(vals[a]);
        free(bits[a]);
        free(mscore[a]);
    }
    free(ytruth);
    free(pat);
    free(uid);
    free(upat);
    free(hist);
    free(res);
    free(tmp);
    if (st) {
        cx_readers_free(r);
        return st;
    }
    *out = r;
    return CX_OK;
}
