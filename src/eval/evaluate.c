/* cx_evaluate: per-class AUROC, operating points and percentile-bootstrap
 * CIs over image resamples.
 *
 * The bootstrap never re-sorts: each class's images are sorted by score once
 * and packed as (image << 2 | last-of-tie-group << 1 | positive). A resample
 * is a vector of multiplicities (how often each image was drawn); its AUROC
 * is the Mann-Whitney statistic summed over tie groups while walking the
 * pre-sorted order, and its confusion matrix at the operating point is the
 * running count at the end of the prefix of scores >= threshold. Resample b
 * draws from its own PRNG stream (cx_bootstrap_indices), so the results do
 * not depend on the number of threads.
 *
 * The same walk sums, per calibration bin, the resample's scores and
 * positives (the ECE's CI). The ROC bands need every resample's TPR at every
 * grid FPR: they take a second pass over the same resamples (the same PRNG
 * streams), a block of classes at a time so that their memory stays bounded. */
#define _GNU_SOURCE
#include "data/labels.h"
#include "eval/eval_internal.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_MET 6 /* auroc, sens, spec, ppv, npv, f1 */

void cx_eval_opts_default(cx_eval_opts *o)
{
    o->n_bootstrap = 10000;
    o->seed = 0;
    o->rule = CX_OP_THRESHOLD;
    o->threshold = 0.5;
    o->calib_bins = 10;
    o->band_points = 101;
    o->roc_bands = 1;
}

void cx_eval_free(cx_eval_result *r)
{
    if (!r)
        return;
    if (r->cls)
        for (int k = 0; k < r->n_classes; k++) {
            free(r->cls[k].roc_fpr);
            free(r->cls[k].roc_tpr);
            free(r->cls[k].roc_thr);
            free(r->cls[k].band_fpr);
            free(r->cls[k].band_tpr);
            free(r->cls[k].band_lo);
            free(r->cls[k].band_hi);
            free(r->cls[k].bins);
        }
    free(r->cls);
    for (int i = 0; i < r->n_warnings; i++)
        free(r->warnings[i]);
    free(r->warnings);
    free(r);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

void cx_eval_ci95(double *v, size_t m, double *lo, double *hi)
{
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (isfinite(v[i]))
            v[k++] = v[i];
    if (!k) {
        *lo = *hi = NAN;
        return;
    }
    qsort(v, k, sizeof *v, cmp_d);
    *lo = cx_eval_percentile_sorted(v, k, 2.5);
    *hi = cx_eval_percentile_sorted(v, k, 97.5);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Maps each image of p to a labels row; error naming missing images. */
static cx_status match_images(const cx_pred_table *p, const cx_labels *l, const char *what,
                              int *row, cx_err *err)
{
    int missing = 0, first = -1;
    for (int i = 0; i < p->n_images; i++) {
        row[i] = cx_labels_find(l, p->images[i]);
        if (row[i] == -2)
            return cx_seterr(err, CX_EFORMAT,
                             "%s image '%s': its file name matches several label rows "
                             "(use the full id as in the labels file)",
                             what, p->images[i]);
        if (row[i] < 0 && !missing++)
            first = i;
    }
    if (missing)
        return cx_seterr(err, CX_EMISSING,
                         "%s image '%s' has no label in the labels file%s (%d of %d image%s "
                         "unlabelled)",
                         what, p->images[first], missing > 1 ? ", nor do others" : "", missing,
                         p->n_images, p->n_images == 1 ? "" : "s");
    /* two predictions resolving to one label row (same file name) */
    int nl = cx_labels_num_images(l);
    int *seen = malloc((size_t)nl * sizeof *seen);
    if (!seen)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    for (int j = 0; j < nl; j++)
        seen[j] = -1;
    for (int i = 0; i < p->n_images; i++) {
        if (seen[row[i]] >= 0) {
            cx_status st = cx_seterr(err, CX_EFORMAT,
                                     "%s images '%s' and '%s' both match label row '%s'", what,
                                     p->images[seen[row[i]]], p->images[i],
                                     cx_labels_image(l, row[i]));
            free(seen);
            return st;
        }
        seen[row[i]] = i;
    }
    free(seen);
    return CX_OK;
}

/* Labels of class column lk for the rows. */
static void gather_labels(const cx_labels *l, const int *row, int n, int lk, int8_t *y)
{
    for (int i = 0; i < n; i++)
        y[i] = (int8_t)cx_labels_get(l, row[i], lk);
}

static int find_class(const cx_labels *l, const char *name)
{
    for (int k = 0; k < cx_labels_num_classes(l); k++)
        if (cx_class_name_eq(cx_labels_class(l, k), name))
            return k;
    return -1;
}

typedef struct {
    uint32_t *packed; /* image << 2 | group end << 1 | positive */
    size_t m;
    size_t thr_len;   /* entries with score >= threshold */
    int defined;
    int calib;        /* calibration defined: bins and scores below */
    uint16_t *bin;    /* calibration bin of entry j */
    double *score;    /* score of entry j */
    size_t *run;      /* [n_runs + 1]: bin runs, entries [run[r], run[r+1]) */
    int n_runs;
} sorted_class;

/* The ECE of one resample (multiplicities w) from the class's bin runs:
 * sum over bins of |sum w*score - sum w*label| / sum w (NaN if no weight).
 * Four partial sums keep the floating-point additions independent. */
static double ece_resample(const sorted_class *s, const uint32_t *w)
{
    const uint32_t *pk = s->packed;
    const double *sc = s->score;
    uint64_t W = 0;
    double e = 0;
    for (int r = 0; r < s->n_runs; r++) {
        size_t j = s->run[r], end = s->run[r + 1];
        double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        uint64_t y = 0, n = 0;
        for (; j + 4 <= end; j += 4) {
            uint32_t e0 = pk[j], e1 = pk[j + 1], e2 = pk[j + 2], e3 = pk[j + 3];
            uint32_t w0 = w[e0 >> 2], w1 = w[e1 >> 2], w2 = w[e2 >> 2], w3 = w[e3 >> 2];
            a0 += (double)w0 * sc[j];
            a1 += (double)w1 * sc[j + 1];
            a2 += (double)w2 * sc[j + 2];
            a3 += (double)w3 * sc[j + 3];
            n += (uint64_t)w0 + w1 + w2 + w3;
            y += (uint64_t)(w0 & (0u - (e0 & 1u))) + (w1 & (0u - (e1 & 1u))) +
                 (w2 & (0u - (e2 & 1u))) + (w3 & (0u - (e3 & 1u)));
        }
        for (; j < end; j++) {
            uint32_t w0 = w[pk[j] >> 2];
            a0 += (double)w0 * sc[j];
            n += w0;
            y += w0 & (0u - (pk[j] & 1u));
        }
        W += n;
        e += fabs((a0 + a1) + (a2 + a3) - (double)y);
    }
    return W ? e / (double)W : NAN;
}

/* One resample's walk of a class's sorted entries with multiplicities w:
 * the Mann-Whitney sum, the totals, the counts at the operating point and,
 * when store (a constant, so that each case compiles to its own loop), the
 * cumulative counts at the origin and at each tie group's end. */
typedef struct {
    uint64_t P, N, twice, tp, fp;
} walk_sums;

static inline __attribute__((always_inline)) size_t
walk(const sorted_class *s, const uint32_t *cnt, const int store, uint64_t *bfp, uint64_t *btp,
     walk_sums *out)
{
    const uint32_t *pk = s->packed;
    uint64_t P = 0, N = 0, gp = 0, gn = 0, twice = 0, tp = 0, fp = 0;
    size_t thr = s->thr_len, nq = 0;
    if (store) {
        bfp[0] = btp[0] = 0;
        nq = 1;
    }
    for (size_t j = 0; j < s->m; j++) {
        uint32_t e = pk[j];
        uint64_t w = cnt[e >> 2];
        uint64_t pos = e & 1u;
        gp += w & (0 - pos);
        gn += w & (pos - 1);
        if (e & 2u) {
            twice += gn * (2 * P + gp);
            P += gp;
            N += gn;
            gp = gn = 0;
            if (j + 1 == thr) {
                tp = P;
                fp = N;
            }
            if (store) {
                bfp[nq] = N;
                btp[nq] = P;
                nq++;
            }
        }
    }
    out->P = P;
    out->N = N;
    out->twice = twice;
    out->tp = tp;
    out->fp = fp;
    return nq;
}

/* Calibration bin of p in [0,1] among nb equal-width bins with edges
 * e_i = i * (1/nb) (numpy.linspace): bin i holds (e_i, e_i+1], bin 0 also 0;
 * that is, the number of inner edges below p (numpy.searchsorted, as
 * sklearn's calibration_curve). */
static int calib_bin(double p, int nb)
{
    double step = 1.0 / nb;
    int b = (int)(p * nb);
    if (b > nb - 1)
        b = nb - 1;
    if (b < 0)
        b = 0;
    while (b > 0 && p <= b * step)
        b--;
    while (b < nb - 1 && p > (b + 1) * step)
        b++;
    return b;
}

/* TPR of the ROC at the FPRs g/(G-1), g = 0..G-1, from the cumulative
 * negative and positive counts fp[j], tp[j] (j = 0..q-1, nondecreasing,
 * fp[0] = tp[0] = 0, the last = N and P). At an FPR that points have, the
 * highest TPR among them; elsewhere linear between the last point below and
 * the first point above. Grid positions are compared exactly in integers. */
static void band_eval(const uint64_t *fp, const uint64_t *tp, size_t q, uint64_t N, uint64_t P,
                      int G, double *out)
{
    size_t j = 0;
    uint64_t G1 = (uint64_t)(G - 1);
    for (int g = 0; g < G; g++) {
        uint64_t gn = (uint64_t)g * N; /* f = g/G1 <=> x*G1 vs g*N */
        /* j: the first point at FPR >= f (binary search from the last j) */
        size_t lo = j, hi = q;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (fp[mid] * G1 < gn)
                lo = mid + 1;
            else
                hi = mid;
        }
        j = lo;
        if (j < q && fp[j] * G1 == gn) {
            /* the last point at FPR f: the highest TPR there */
            size_t a = j, b = q;
            while (a + 1 < b) {
                size_t mid = a + (b - a) / 2;
                if (fp[mid] * G1 == gn)
                    a = mid;
                else
                    b = mid;
            }
            out[g] = (double)tp[a] / (double)P;
            continue;
        }
        /* j >= 1 (fp[0] = 0 < f) and j < q (the last point is at FPR 1) */
        double f = (double)g / (double)G1;
        double xa = (double)fp[j - 1] / (double)N, ya = (double)tp[j - 1] / (double)P;
        double xb = (double)fp[j] / (double)N, yb = (double)tp[j] / (double)P;
        out[g] = ya + (yb - ya) * ((f - xa) / (xb - xa));
    }
}

/* The walk of one class's packed order with multiplicities w (NULL: 1):
 * cumulative counts at the origin and at each tie group's end into fp, tp
 * (m + 1 entries); returns their number, and *N, *P. */
static size_t roc_counts(const sorted_class *s, const uint32_t *w, uint64_t *fp, uint64_t *tp,
                         uint64_t *N, uint64_t *P)
{
    uint64_t cp = 0, cn = 0;
    size_t q = 0;
    fp[q] = tp[q] = 0;
    q++;
    for (size_t j = 0; j < s->m; j++) {
        uint32_t e = s->packed[j];
        uint64_t c = w ? w[e >> 2] : 1;
        if (e & 1u)
            cp += c;
        else
            cn += c;
        if (e & 2u) {
            fp[q] = cn;
            tp[q] = cp;
            q++;
        }
    }
    *N = cn;
    *P = cp;
    return q;
}

/* Full-data calibration of class c from its sorted entries. */
static void calib_full(cx_class_eval *c, const sorted_class *s, int nb)
{
    for (int b = 0; b < nb; b++) {
        c->bins[b].lo = b * (1.0 / nb);
        c->bins[b].hi = b + 1 == nb ? 1.0 : (b + 1) * (1.0 / nb);
        c->bins[b].n = c->bins[b].n_pos = 0;
        c->bins[b].mean_pred = 0;
    }
    for (size_t j = 0; j < s->m; j++) {
        cx_calib_bin *x = &c->bins[s->bin[j]];
        x->n++;
        x->n_pos += s->packed[j] & 1u;
        x->mean_pred += s->score[j];
    }
    double ece = 0;
    long N = 0;
    for (int b = 0; b < nb; b++) {
        cx_calib_bin *x = &c->bins[b];
        N += x->n;
        if (x->n) {
            ece += fabs(x->mean_pred - (double)x->n_pos);
            x->mean_pred /= (double)x->n;
            x->frac_pos = (double)x->n_pos / (double)x->n;
        } else {
            x->mean_pred = x->frac_pos = NAN;
        }
    }
    c->ece.value = N ? ece / (double)N : NAN;
}

/* The ROC bands: for every resample b (the stream of cx_bootstrap_indices)
 * and class, the TPR at the grid's FPRs; then per grid point the 2.5th and
 * 97.5th percentiles over the resamples where the class has positives and
 * negatives. Classes go in blocks of at most ~64 MiB of results: the first
 * block in the main bootstrap loop, the others here, each block drawing the
 * same resamples again. */
static int band_block(int nc, int B, int G)
{
    size_t per_class = (size_t)B * (size_t)G * sizeof(double);
    int block = (int)((64u << 20) / (per_class ? per_class : 1));
    if (block < 1)
        block = 1;
    return block > nc ? nc : block;
}

/* Band percentiles of classes [k0, k1) from their resamples' TPRs in bt
 * ([k - k0][b][g]). */
static void band_ci(cx_eval_result *r, const sorted_class *sc_k, const double *bt, int k0, int k1,
                    int B, int G, double *tmp)
{
    for (int k = k0; k < k1; k++) {
        cx_class_eval *c = &r->cls[k];
        if (!sc_k[k].defined)
            continue;
        long skipped = 0;
        for (int g = 0; g < G; g++) {
            size_t m = 0;
            for (int b = 0; b < B; b++) {
                double v = bt[((size_t)(k - k0) * B + b) * G + g];
                if (isfinite(v))
                    tmp[m++] = v;
            }
            if (g == 0)
                skipped = B - (long)m;
            cx_eval_ci95(tmp, m, &c->band_lo[g], &c->band_hi[g]);
        }
        c->band_skipped = skipped;
    }
}

static cx_status band_pass(cx_eval_result *r, const sorted_class *sc_k, int n, int B,
                           uint64_t seed, int G, int k_first, cx_err *err)
{
    int nc = r->n_classes;
    if (k_first >= nc)
        return CX_OK;
    size_t per_class = (size_t)B * (size_t)G * sizeof(double);
    int block = band_block(nc, B, G);
    double *bt = malloc((size_t)block * per_class);
    double *tmp = malloc((size_t)B * sizeof *tmp);
    if (!bt || !tmp) {
        free(bt);
        free(tmp);
        return cx_seterr(err, CX_ENOMEM, "out of memory (ROC bands)");
    }
    int oom = 0;
    for (int k0 = k_first; k0 < nc; k0 += block) {
        int k1 = k0 + block < nc ? k0 + block : nc;
        int any = 0;
        for (int k = k0; k < k1; k++)
            any |= sc_k[k].defined;
        if (!any)
            continue;
#pragma omp parallel num_threads(r->threads)
        {
            uint32_t *cnt = malloc((size_t)n * sizeof *cnt);
            uint64_t *fp = malloc(((size_t)n + 1) * sizeof *fp);
            uint64_t *tp = malloc(((size_t)n + 1) * sizeof *tp);
            if (!cnt || !fp || !tp) {
#pragma omp atomic write
                oom = 1;
            }
#pragma omp for schedule(dynamic, 8)
            for (int b = 0; b < B; b++) {
                if (!cnt || !fp || !tp)
                    continue;
                memset(cnt, 0, (size_t)n * sizeof *cnt);
                uint64_t s4[4];
                cx_eval_rng_seed(s4, seed, (uint64_t)b);
                for (int i = 0; i < n; i++)
                    cnt[cx_eval_rng_below(s4, (uint32_t)n)]++;
                for (int k = k0; k < k1; k++) {
                    double *o = bt + ((size_t)(k - k0) * B + b) * G;
                    uint64_t N, P;
                    size_t q = sc_k[k].defined ? roc_counts(&sc_k[k], cnt, fp, tp, &N, &P) : 0;
                    if (!q || !N || !P) {
                        for (int g = 0; g < G; g++)
                            o[g] = NAN;
                        continue;
                    }
                    band_eval(fp, tp, q, N, P, G, o);
                }
            }
            free(cnt);
            free(fp);
            free(tp);
        }
        if (oom)
            break;
        band_ci(r, sc_k, bt, k0, k1, B, G, tmp);
    }
    free(bt);
    free(tmp);
    if (oom)
        return cx_seterr(err, CX_ENOMEM, "out of memory (ROC bands)");
    return CX_OK;
}

cx_status cx_evaluate(const cx_pred_table *pred, const cx_labels *labels,
                      const cx_pred_table *val, const cx_eval_opts *opts,
                      cx_eval_result **out, cx_err *err)
{
    *out = NULL;
    cx_eval_opts dflt;
    cx_eval_opts_default(&dflt);
    if (!opts)
        opts = &dflt;
    if (!pred || !labels)
        return cx_seterr(err, CX_EARG, "cx_evaluate: no predictions or labels");
    if (pred->n_images < 1)
        return cx_seterr(err, CX_EARG, "no images to evaluate");
    if (pred->n_images >= (1 << 29))
        return cx_seterr(err, CX_ELIMIT, "more than 2^29 images");
    if (opts->n_bootstrap < 0 || opts->n_bootstrap > 10000000)
        return cx_seterr(err, CX_EARG, "bootstrap resamples must be in [0, 10^7]");
    if (opts->rule != CX_OP_THRESHOLD && !val)
        return cx_seterr(err, CX_EARG,
                         "operating point '%s' needs validation predictions "
                         "(choosing it on the test set would be optimistic)",
                         cx_op_rule_name(opts->rule));
    if (opts->rule == CX_OP_THRESHOLD && !isfinite(opts->threshold))
        return cx_seterr(err, CX_EARG, "the threshold must be a finite number");
    int NB = opts->calib_bins ? opts->calib_bins : 10;
    int G = opts->band_points ? opts->band_points : 101;
    if (NB < 1 || NB > 1000)
        return cx_seterr(err, CX_EARG, "calibration bins must be in [1, 1000] (got %d)", NB);
    if (G < 2 || G > 10001)
        return cx_seterr(err, CX_EARG, "ROC band grid points must be in [2, 10001] (got %d)", G);
    int n = pred->n_images, nc = pred->n_classes;
    cx_status st = CX_OK;
    cx_eval_result *r = calloc(1, sizeof *r);
    int *row = malloc((size_t)n * sizeof *row);
    int *vrow = NULL;
    int8_t *y = malloc((size_t)n * nc);
    double *sc = malloc((size_t)n * sizeof *sc);
    int8_t *vy = NULL;
    double *vsc = NULL;
    sorted_class *sc_k = calloc((size_t)nc, sizeof *sc_k);
    double *res = NULL, *res_mean = NULL, *tmp = NULL, *res_ece = NULL, *bt0 = NULL;
    int band0 = 0; /* classes [0, band0) get their ROC band in the main loop */
    uint64_t *cfp = NULL, *ctp = NULL;
    if (!r || !row || !y || !sc || !sc_k) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto done;
    }
    r->n_images = n;
    r->n_classes = nc;
    r->n_bootstrap = opts->n_bootstrap;
    r->seed = opts->seed;
    r->rule = opts->rule;
    r->calib_bins = NB;
    r->band_points = G;
    r->cls = calloc((size_t)nc, sizeof *r->cls);
    cfp = malloc(((size_t)n + 1) * sizeof *cfp);
    ctp = malloc(((size_t)n + 1) * sizeof *ctp);
    if (!cfp || !ctp) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto done;
    }
    if (!r->cls) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto done;
    }
    st = match_images(pred, labels, "predicted", row, err);
    if (st)
        goto done;
    int *vk = calloc((size_t)nc, sizeof *vk);
    if (!vk) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto done;
    }
    if (val) {
        vrow = malloc((size_t)(val->n_images ? val->n_images : 1) * sizeof *vrow);
        vy = malloc((size_t)(val->n_images ? val->n_images : 1));
        vsc = malloc((size_t)(val->n_images ? val->n_images : 1) * sizeof *vsc);
        if (!vrow || !vy || !vsc) {
            free(vk);
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto done;
        }
        st = match_images(val, labels, "validation", vrow, err);
        if (st) {
            free(vk);
            goto done;
        }
        for (int k = 0; k < nc; k++) {
            vk[k] = -1;
            for (int j = 0; j < val->n_classes; j++)
                if (cx_class_name_eq(val->classes[j], pred->classes[k]))
                    vk[k] = j;
            if (vk[k] < 0) {
                free(vk);
                st = cx_seterr(err, CX_EMISSING,
                               "validation predictions have no column for class '%s'",
                               pred->classes[k]);
                goto done;
            }
        }
    }
    int n_mean = 0;
    for (int k = 0; k < nc; k++) {
        cx_class_eval *c = &r->cls[k];
        snprintf(c->name, sizeof c->name, "%s", pred->classes[k]);
        int lk = find_class(labels, pred->classes[k]);
        if (lk < 0) {
            free(vk);
            st = cx_seterr(err, CX_EMISSING, "the labels have no class '%s'", pred->classes[k]);
            goto done;
        }
        int8_t *yk = y + (size_t)k * n;
        gather_labels(labels, row, n, lk, yk);
        for (int i = 0; i < n; i++)
            sc[i] = pred->scores[(size_t)i * nc + k];
        for (int i = 0; i < n; i++) {
            if (yk[i] == 1)
                c->n_pos++;
            else if (yk[i] == 0)
                c->n_neg++;
            else
                c->n_missing++;
        }
        c->n = c->n_pos + c->n_neg;
        if (c->n_missing)
            cx_note_add(&r->n_warnings, &r->warnings,
                        "class %s: %d image%s with a missing/uncertain label left out",
                        c->name, c->n_missing, c->n_missing == 1 ? "" : "s");
        c->defined = cx_auroc(sc, yk, (size_t)n, &c->auroc.value);
        c->auroc.lo = c->auroc.hi = NAN;
        if (!c->defined)
            cx_note_add(&r->n_warnings, &r->warnings,
                        "class %s: %s among the %d labelled images: AUROC undefined (null), "
                        "left out of the mean",
                        c->name, c->n_pos ? "no negatives" : "no positives", c->n);
        else
            n_mean++;
        st = cx_roc_curve(sc, yk, (size_t)n, 1, &c->roc_fpr, &c->roc_tpr, &c->roc_thr,
                          &c->roc_n, err);
        if (st) {
            free(vk);
            goto done;
        }
        /* operating point */
        c->threshold = opts->threshold;
        if (val && opts->rule != CX_OP_THRESHOLD) {
            int lvk = lk;
            for (int i = 0; i < val->n_images; i++)
                vsc[i] = val->scores[(size_t)i * val->n_classes + vk[k]];
            gather_labels(labels, vrow, val->n_images, lvk, vy);
            double t;
            if (cx_choose_threshold(vsc, vy, (size_t)val->n_images, opts->rule, &t)) {
                c->threshold = t;
                c->threshold_from_val = 1;
            } else {
                c->threshold = 0.5;
                cx_note_add(&r->n_warnings, &r->warnings,
                            "class %s: validation labels lack positives or negatives; "
                            "operating point falls back to threshold 0.5",
                            c->name);
            }
        }
        c->conf = cx_confusion_at(sc, yk, (size_t)n, c->threshold);
        cx_metrics_from_confusion(&c->conf, &c->point);
        /* the sorted, packed order for the bootstrap */
        size_t m;
        uint32_t *o = cx_eval_sort_desc(sc, yk, (size_t)n, &m);
        if (!o) {
            free(vk);
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto done;
        }
        sorted_class *s = &sc_k[k];
        s->m = m;
        s->defined = c->defined;
        s->thr_len = 0;
        for (size_t j = 0; j < m; j++) {
            uint32_t i = o[j];
            int end = j + 1 == m || sc[o[j + 1]] != sc[i];
            o[j] = (i << 2) | ((uint32_t)end << 1) | (uint32_t)(yk[i] == 1);
            if (sc[i] >= c->threshold)
                s->thr_len = j + 1;
        }
        s->packed = o;
        /* calibration: bins of the labelled images' scores, all in [0,1] */
        c->n_bins = NB;
        c->ece = (cx_stat){NAN, NAN, NAN};
        c->bins = calloc((size_t)NB, sizeof *c->bins);
        s->bin = malloc((m ? m : 1) * sizeof *s->bin);
        s->score = malloc((m ? m : 1) * sizeof *s->score);
        if (!c->bins || !s->bin || !s->score) {
            free(vk);
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto done;
        }
        int outside = 0;
        for (size_t j = 0; j < m; j++) {
            double p = sc[o[j] >> 2];
            s->score[j] = p;
            if (!(p >= 0 && p <= 1))
                outside++;
            else
                s->bin[j] = (uint16_t)calib_bin(p, NB);
        }
        s->calib = m > 0 && !outside;
        c->calib_defined = s->calib;
        s->run = malloc(((size_t)NB + 1) * sizeof *s->run);
        if (!s->run) {
            free(vk);
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto done;
        }
        s->n_runs = 0;
        if (s->calib) {
            /* scores descend, so each bin is one run of entries */
            for (size_t j = 0; j < m; j++)
                if (j == 0 || s->bin[j] != s->bin[j - 1])
                    s->run[s->n_runs++] = j;
            s->run[s->n_runs] = m;
        }
        if (s->calib)
            calib_full(c, s, NB);
        else {
            for (int b = 0; b < NB; b++)
                c->bins[b] = (cx_calib_bin){b * (1.0 / NB), b + 1 == NB ? 1.0 : (b + 1) * (1.0 / NB),
                                            0, 0, NAN, NAN};
            if (outside)
                cx_note_add(&r->n_warnings, &r->warnings,
                            "class %s: %d score%s outside [0,1]: not probabilities, no "
                            "calibration (reliability diagram, ECE)",
                            c->name, outside, outside == 1 ? "" : "s");
        }
        /* the ROC band's grid and the full data's TPR on it */
        c->band_n = G;
        c->band_fpr = malloc((size_t)G * sizeof(double));
        c->band_tpr = malloc((size_t)G * sizeof(double));
        c->band_lo = malloc((size_t)G * sizeof(double));
        c->band_hi = malloc((size_t)G * sizeof(double));
        if (!c->band_fpr || !c->band_tpr || !c->band_lo || !c->band_hi) {
            free(vk);
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto done;
        }
        uint64_t NN, PP;
        size_t q = roc_counts(s, NULL, cfp, ctp, &NN, &PP);
        for (int g = 0; g < G; g++) {
            c->band_fpr[g] = (double)g / (double)(G - 1);
            c->band_lo[g] = c->band_hi[g] = NAN;
        }
        if (NN && PP)
            band_eval(cfp, ctp, q, NN, PP, G, c->band_tpr);
        else
            for (int g = 0; g < G; g++)
                c->band_tpr[g] = NAN;
    }
    free(vk);
    r->n_mean_classes = n_mean;
    r->mean_auroc.value = NAN;
    r->mean_auroc.lo = r->mean_auroc.hi = NAN;
    if (n_mean) {
        double sum = 0;
        for (int k = 0; k < nc; k++)
            if (r->cls[k].defined)
                sum += r->cls[k].auroc.value;
        r->mean_auroc.value = sum / n_mean;
    }
    for (int k = 0; k < nc; k++) {
        cx_class_eval *c = &r->cls[k];
        c->sens = (cx_stat){c->point.sensitivity, NAN, NAN};
        c->spec = (cx_stat){c->point.specificity, NAN, NAN};
        c->ppv = (cx_stat){c->point.ppv, NAN, NAN};
        c->npv = (cx_stat){c->point.npv, NAN, NAN};
        c->f1 = (cx_stat){c->point.f1, NAN, NAN};
        if (!c->defined) {
            /* sensitivity or specificity has no denominator: report null */
            if (c->point.zero_division & CX_ZD_SENS)
                c->sens.value = NAN;
            if (c->point.zero_division & CX_ZD_SPEC)
                c->spec.value = NAN;
        }
    }

    /* ---- the bootstrap ---- */
    int B = opts->n_bootstrap;
    r->threads = cx_get_threads();
    if (B > 0) {
        res = malloc((size_t)B * nc * N_MET * sizeof *res);
        res_mean = malloc((size_t)B * sizeof *res_mean);
        res_ece = malloc((size_t)B * nc * sizeof *res_ece);
        band0 = opts->roc_bands ? band_block(nc, B, G) : 0;
        bt0 = band0 ? malloc((size_t)band0 * B * G * sizeof *bt0) : NULL;
        tmp = malloc((size_t)B * sizeof *tmp);
        long *zd = calloc((size_t)nc * 5, sizeof *zd);
        long *skipped = calloc((size_t)nc, sizeof *skipped);
        if (!res || !res_mean || !res_ece || (band0 && !bt0) || !tmp || !zd || !skipped) {
            free(zd);
            free(skipped);
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
            goto done;
        }
        double t0 = now_s();
        int oom = 0;
        long mean_skipped = 0;
#pragma omp parallel num_threads(r->threads) reduction(+ : mean_skipped)
        {
            uint32_t *cnt = malloc((size_t)n * sizeof *cnt);
            uint64_t *bfp = malloc(((size_t)n + 1) * sizeof *bfp);
            uint64_t *btp = malloc(((size_t)n + 1) * sizeof *btp);
            if (!cnt || !bfp || !btp) {
#pragma omp atomic write
                oom = 1;
            }
#pragma omp for schedule(dynamic, 8)
            for (int b = 0; b < B; b++) {
                if (!cnt || !bfp || !btp)
                    continue;
                memset(cnt, 0, (size_t)n * sizeof *cnt);
                uint64_t s4[4];
                cx_eval_rng_seed(s4, opts->seed, (uint64_t)b);
                for (int i = 0; i < n; i++)
                    cnt[cx_eval_rng_below(s4, (uint32_t)n)]++;
                double msum = 0;
                int mdeg = 0;
                for (int k = 0; k < nc; k++) {
                    const sorted_class *s = &sc_k[k];
                    int band = k < band0;
                    /* ECE: per calibration bin (a run of the sorted
                     * entries), the sums of the drawn scores and positives */
                    res_ece[(size_t)b * nc + k] = NAN;
                    if (s->calib)
                        res_ece[(size_t)b * nc + k] = ece_resample(s, cnt);
                    walk_sums ws;
                    size_t nq = 0;
                    if (band)
                        nq = walk(s, cnt, 1, bfp, btp, &ws);
                    else
                        walk(s, cnt, 0, NULL, NULL, &ws);
                    uint64_t P = ws.P, N = ws.N, twice = ws.twice, tp = ws.tp, fp = ws.fp;
                    if (band) {
                        double *ob = bt0 + ((size_t)k * B + b) * G;
                        if (s->defined && P && N)
                            band_eval(bfp, btp, nq, N, P, G, ob);
                        else
                            for (int g = 0; g < G; g++)
                                ob[g] = NAN;
                    }
                    double *o = res + ((size_t)b * nc + k) * N_MET;
                    if (P == 0 || N == 0) {
                        for (int q = 0; q < N_MET; q++)
                            o[q] = NAN;
                        if (s->defined)
                            mdeg = 1;
                        continue;
                    }
                    o[0] = (double)twice / (2.0 * (double)P * (double)N);
                    if (s->defined)
                        msum += o[0];
                    cx_confusion cf = {(double)tp, (double)fp, (double)(N - fp), (double)(P - tp)};
                    cx_binary_metrics bm;
                    cx_metrics_from_confusion(&cf, &bm);
                    o[1] = bm.sensitivity;
                    o[2] = bm.specificity;
                    o[3] = bm.ppv;
                    o[4] = bm.npv;
                    o[5] = bm.f1;
                    if (bm.zero_division) {
                        for (int q = 0; q < 5; q++)
                            if (bm.zero_division & (1u << q)) {
#pragma omp atomic
                                zd[k * 5 + q]++;
                            }
                    }
                }
                if (n_mean && !mdeg)
                    res_mean[b] = msum / n_mean;
                else {
                    res_mean[b] = NAN;
                    mean_skipped++;
                }
            }
            free(cnt);
            free(bfp);
            free(btp);
        }
        if (oom) {
            free(zd);
            free(skipped);
            st = cx_seterr(err, CX_ENOMEM, "out of memory (bootstrap)");
            goto done;
        }
        r->mean_skipped = mean_skipped;
        for (int k = 0; k < nc; k++) {
            cx_class_eval *c = &r->cls[k];
            if (c->calib_defined) {
                size_t m = 0;
                for (int b = 0; b < B; b++) {
                    double v = res_ece[(size_t)b * nc + k];
                    if (isfinite(v))
                        tmp[m++] = v;
                }
                cx_eval_ci95(tmp, m, &c->ece.lo, &c->ece.hi);
            }
        }
        band_ci(r, sc_k, bt0, 0, band0, B, G, tmp);
        free(bt0);
        bt0 = NULL;
        st = band_pass(r, sc_k, n, B, opts->seed, G, opts->roc_bands ? band0 : nc, err);
        r->boot_seconds = now_s() - t0;
        if (st) {
            free(zd);
            free(skipped);
            goto done;
        }
        for (int k = 0; k < nc; k++) {
            cx_class_eval *c = &r->cls[k];
            cx_stat *dst[N_MET] = {&c->auroc, &c->sens, &c->spec, &c->ppv, &c->npv, &c->f1};
            for (int q = 0; q < N_MET; q++) {
                size_t m = 0;
                for (int b = 0; b < B; b++) {
                    double v = res[((size_t)b * nc + k) * N_MET + q];
                    if (isfinite(v))
                        tmp[m++] = v;
                }
                if (q == 0)
                    c->boot_skipped = B - (long)m;
                cx_eval_ci95(tmp, m, &dst[q]->lo, &dst[q]->hi);
            }
            for (int q = 0; q < 5; q++)
                c->boot_zero_div[q] = zd[k * 5 + q];
            if (c->boot_skipped && c->defined)
                cx_note_add(&r->n_warnings, &r->warnings,
                            "class %s: %ld of %d bootstrap resamples had no positives or no "
                            "negatives and were skipped",
                            c->name, c->boot_skipped, B);
        }
        if (n_mean) {
            memcpy(tmp, res_mean, (size_t)B * sizeof *tmp);
            cx_eval_ci95(tmp, (size_t)B, &r->mean_auroc.lo, &r->mean_auroc.hi);
            if (mean_skipped)
                cx_note_add(&r->n_warnings, &r->warnings,
                            "mean AUROC: %ld of %d resamples skipped (a class degenerate)",
                            mean_skipped, B);
        }
        free(zd);
        free(skipped);
    }
done:
    free(row);
    free(vrow);
    free(y);
    free(sc);
    free(vy);
    free(vsc);
    if (sc_k)
        for (int k = 0; k < nc; k++) {
            free(sc_k[k].packed);
            free(sc_k[k].bin);
            free(sc_k[k].score);
            free(sc_k[k].run);
        }
    free(res_ece);
    free(bt0);
    free(cfp);
    free(ctp);
    free(sc_k);
    free(res);
    free(res_mean);
    free(tmp);
    if (st) {
        cx_eval_free(r);
        return st;
    }
    *out = r;
    return CX_OK;
}
