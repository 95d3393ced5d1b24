/* Exact AUROC, ROC curves, confusion matrices and their ratios, operating
 * points, the bootstrap PRNG and percentiles (see chexnet.h, eval section). */
#define _GNU_SOURCE
#include "util/rng.h"
#include "eval/eval_internal.h"
#include "eval/textbuf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- sorting */

typedef struct {
    double s;
    uint32_t i;
} sidx;

static int cmp_desc(const void *a, const void *b)
{
    const sidx *x = a, *y = b;
    if (x->s > y->s)
        return -1;
    if (x->s < y->s)
        return 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

uint32_t *cx_eval_sort_desc(const double *score, const int8_t *label, size_t n, size_t *m)
{
    sidx *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!label || label[i] == 0 || label[i] == 1) {
            v[k].s = score[i];
            v[k].i = (uint32_t)i;
            k++;
        }
    qsort(v, k, sizeof *v, cmp_desc);
    uint32_t *o = malloc((k ? k : 1) * sizeof *o);
    if (o)
        for (size_t j = 0; j < k; j++)
            o[j] = v[j].i;
    free(v);
    *m = k;
    return o;
}

/* --------------------------------------------------------------- AUROC */

int cx_auroc(const double *score, const int8_t *label, size_t n, double *auc)
{
    *auc = NAN;
    size_t m;
    uint32_t *o = cx_eval_sort_desc(score, label, n, &m);
    if (!o)
        return 0;
    uint64_t P = 0, N = 0, gp = 0, gn = 0, twice = 0;
    for (size_t j = 0; j < m; j++) {
        uint32_t i = o[j];
        if (label[i])
            gp++;
        else
            gn++;
        if (j + 1 == m || score[o[j + 1]] != score[i]) {
            twice += gn * (2 * P + gp);
            P += gp;
            N += gn;
            gp = gn = 0;
        }
    }
    free(o);
    if (P == 0 || N == 0)
        return 0;
    *auc = (double)twice / (2.0 * (double)P * (double)N);
    return 1;
}

cx_status cx_roc_curve(const double *score, const int8_t *label, size_t n,
                       int drop_intermediate, double **fpr, double **tpr,
                       double **thresholds, size_t *n_points, cx_err *err)
{
    *fpr = *tpr = *thresholds = NULL;
    *n_points = 0;
    size_t m;
    uint32_t *o = cx_eval_sort_desc(score, label, n, &m);
    if (!o)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    /* one point per distinct score */
    double *tps = malloc((m + 1) * sizeof *tps), *fps = malloc((m + 1) * sizeof *fps),
           *thr = malloc((m + 1) * sizeof *thr);
    if (!tps || !fps || !thr) {
        free(o);
        free(tps);
        free(fps);
        free(thr);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    size_t k = 0;
    double tp = 0, fp = 0;
    for (size_t j = 0; j < m; j++) {
        uint32_t i = o[j];
        if (label[i])
            tp++;
        else
            fp++;
        if (j + 1 == m || score[o[j + 1]] != score[i]) {
            tps[k] = tp;
            fps[k] = fp;
            thr[k] = score[i];
            k++;
        }
    }
    free(o);
    /* sklearn: keep the ends and the points where either count's second
     * difference is non-zero */
    size_t kk = k;
    if (drop_intermediate && k > 2) {
        size_t w = 0;
        for (size_t j = 0; j < k; j++) {
            int keep = j == 0 || j + 1 == k;
            if (!keep) {
                double d2f = (fps[j + 1] - fps[j]) - (fps[j] - fps[j - 1]);
                double d2t = (tps[j + 1] - tps[j]) - (tps[j] - tps[j - 1]);
                keep = d2f != 0 || d2t != 0;
            }
            if (keep) {
                tps[w] = tps[j];
                fps[w] = fps[j];
                thr[w] = thr[j];
                w++;
            }
        }
        kk = w;
    }
    double *F = malloc((kk + 1) * sizeof *F), *T = malloc((kk + 1) * sizeof *T),
           *H = malloc((kk + 1) * sizeof *H);
    if (!F || !T || !H) {
        free(F);
        free(T);
        free(H);
        free(tps);
        free(fps);
        free(thr);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    double FP = kk ? fps[kk - 1] : 0, TP = kk ? tps[kk - 1] : 0;
    F[0] = FP > 0 ? 0 : NAN;
    T[0] = TP > 0 ? 0 : NAN;
    H[0] = INFINITY;
    for (size_t j = 0; j < kk; j++) {
        F[j + 1] = FP > 0 ? fps[j] / FP : NAN;
        T[j + 1] = TP > 0 ? tps[j] / TP : NAN;
        H[j + 1] = thr[j];
    }
    free(tps);
    free(fps);
    free(thr);
    *fpr = F;
    *tpr = T;
    *thresholds = H;
    *n_points = kk + 1;
    return CX_OK;
}

/* ---------------------------------------------------- confusion matrices */

cx_confusion cx_confusion_at(const double *score, const int8_t *label, size_t n,
                             double threshold)
{
    cx_confusion c = {0, 0, 0, 0};
    for (size_t i = 0; i < n; i++) {
        if (label[i] != 0 && label[i] != 1)
            continue;
        int p = score[i] >= threshold;
        if (label[i]) {
            if (p)
                c.tp++;
            else
                c.fn++;
        } else {
            if (p)
                c.fp++;
            else
                c.tn++;
        }
    }
    return c;
}

void cx_metrics_from_confusion(const cx_confusion *c, cx_binary_metrics *m)
{
    m->zero_division = 0;
#define RATIO(dst, num, den, bit)                                                      \
    do {                                                                               \
        double d_ = (den);                                                             \
        if (d_ > 0)                                                                    \
            dst = (num) / d_;                                                          \
        else {                                                                         \
            dst = 0;                                                                   \
            m->zero_division |= (bit);                                                 \
        }                                                                              \
    } while (0)
    RATIO(m->sensitivity, c->tp, c->tp + c->fn, CX_ZD_SENS);
    RATIO(m->specificity, c->tn, c->tn + c->fp, CX_ZD_SPEC);
    RATIO(m->ppv, c->tp, c->tp + c->fp, CX_ZD_PPV);
    RATIO(m->npv, c->tn, c->tn + c->fn, CX_ZD_NPV);
    RATIO(m->f1, 2 * c->tp, 2 * c->tp + c->fp + c->fn, CX_ZD_F1);
#undef RATIO
}

const char *cx_op_rule_name(cx_op_rule r)
{
    switch (r) {
    case CX_OP_THRESHOLD: return "threshold";
    case CX_OP_MAXF1: return "maxf1";
    case CX_OP_YOUDEN: return "youden";
    }
    return "?";
}

int cx_choose_threshold(const double *score, const int8_t *label, size_t n,
                        cx_op_rule rule, double *threshold)
{
    *threshold = NAN;
    size_t m;
    uint32_t *o = cx_eval_sort_desc(score, label, n, &m);
    if (!o)
        return 0;
    int64_t P = 0, N = 0;
    for (size_t j = 0; j < m; j++) {
        if (label[o[j]])
            P++;
        else
            N++;
    }
    if (P == 0 || N == 0) {
        free(o);
        return 0;
    }
    int64_t tp = 0, fp = 0;
    /* best as an exact fraction num/den (den > 0) */
    int64_t bnum = 0, bden = 1;
    int have = 0;
    double best_t = NAN;
    for (size_t j = 0; j < m; j++) {
        uint32_t i = o[j];
        if (label[i])
            tp++;
        else
            fp++;
        if (j + 1 < m && score[o[j + 1]] == score[i])
            continue;
        int64_t num, den;
        if (rule == CX_OP_YOUDEN) {
            num = tp * N - fp * P; /* J * P * N */
            den = 1;
        } else {
            num = 2 * tp; /* F1 = 2tp / (tp + fp + P) */
            den = tp + fp + P;
        }
        /* num/den > bnum/bden, exactly (products stay < 2^62 for n < 2^30) */
        if (!have || (__int128)num * bden > (__int128)bnum * den) {
            bnum = num;
            bden = den;
            best_t = score[i];
            have = 1;
        }
    }
    free(o);
    *threshold = best_t;
    return have;
}

/* ------------------------------------------------------------- bootstrap */

void cx_eval_rng_seed(uint64_t s[4], uint64_t seed, uint64_t b)
{
    uint64_t x = seed ^ (0x9E3779B97F4A7C15ULL * (b + 1));
    for (int i = 0; i < 4; i++)
        s[i] = cx_splitmix64(&x);
}

uint32_t cx_eval_rng_below(uint64_t s[4], uint32_t n)
{
    uint64_t m = (cx_xoshiro_next(s) >> 32) * (uint64_t)n;
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (l < t) {
            m = (cx_xoshiro_next(s) >> 32) * (uint64_t)n;
            l = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void cx_bootstrap_indices(uint64_t seed, uint64_t b, uint32_t n, uint32_t *idx)
{
    uint64_t s[4];
    cx_eval_rng_seed(s, seed, b);
    for (uint32_t i = 0; i < n; i++)
        idx[i] = cx_eval_rng_below(s, n);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double cx_percentile(double *v, size_t m, double q)
{
    if (m == 0)
        return NAN;
    qsort(v, m, sizeof *v, cmp_double);
    return cx_eval_percentile_sorted(v, m, q);
}

double cx_eval_percentile_sorted(const double *v, size_t m, double q)
{
    if (m == 0)
        return NAN;
    double qf = q / 100.0;
    /* numpy's method="linear": virtual index n*q + (1 - q) - 1 */
    double vi = (double)m * qf + (1.0 - qf) - 1.0;
    if (vi <= 0)
        return v[0];
    if (vi >= (double)(m - 1))
        return v[m - 1];
    double fl = floor(vi);
    size_t lo = (size_t)fl;
    double t = vi - fl, a = v[lo], b = v[lo + 1 < m ? lo + 1 : lo];
    double d = b - a;
    return t >= 0.5 ? b - d * (1.0 - t) : a + d * t;
}

cx_status cx_bootstrap_dump(uint64_t seed, uint32_t n, int n_resamples,
                            const char *path, cx_err *err)
{
    if (n == 0 || n_resamples < 0)
        return cx_seterr(err, CX_EARG, "cx_bootstrap_dump: bad sizes");
    uint32_t *idx = malloc((size_t)n * sizeof *idx);
    if (!idx)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    cx_tb b;
    cx_tb_init(&b);
    for (int r = 0; r < n_resamples; r++) {
        cx_bootstrap_indices(seed, (uint64_t)r, n, idx);
        for (uint32_t i = 0; i < n; i++)
            cx_tb_printf(&b, i ? " %u" : "%u", idx[i]);
        cx_tb_puts(&b, "\n");
    }
    free(idx);
    if (b.oom) {
        cx_tb_free(&b);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    cx_status st = cx_write_file_atomic(path, b.s ? b.s : "", b.n, err);
    cx_tb_free(&b);
    return st;
}
