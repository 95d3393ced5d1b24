/* Calibration of a model's outputs on labelled images (chexnet calibrate):
 * temperature scaling fitted by maximum likelihood, operating thresholds by
 * a stated rule, calibration error and percentiles. Pure arithmetic on
 * arrays; the CLI runs the network and writes the model. */
#include "chexnet.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* log(1 + exp(x)) without overflow */
static double softplus(double x) { return (x > 0 ? x : 0) + log1p(exp(-fabs(x))); }

double cx_calib_nll(const float *logit, const uint8_t *y, size_t n, double T)
{
    if (!n)
        return NAN;
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double z = (double)logit[i] / T;
        s += softplus(z) - (y[i] ? z : 0.0);
    }
    return s / (double)n;
}

/* d/du of the mean NLL at s = 1/T = exp(u), divided by s (the same sign):
 * mean(z (sigmoid(s z) - y)). The NLL is convex in s (a one-coefficient
 * logistic regression), so this is nondecreasing in s. */
static double slope(const float *logit, const uint8_t *y, size_t n, double s)
{
    double g = 0;
    for (size_t i = 0; i < n; i++) {
        double z = logit[i], x = s * z;
        double p = x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
        g += z * (p - (y[i] ? 1.0 : 0.0));
    }
    return g / (double)n;
}

cx_status cx_calib_fit_temperature(const float *logit, const uint8_t *y, size_t n, double *T,
                                   int *at_bound, cx_err *err)
{
    *T = 1;
    if (at_bound)
        *at_bound = 0;
    if (!n)
        return cx_seterr(err, CX_EARG, "no images to fit a temperature on");
    for (size_t i = 0; i < n; i++)
        if (!isfinite(logit[i]))
            return cx_seterr(err, CX_ENUMERIC, "logit %zu is not finite", i);
    /* bisection on u = log(1/T) over [log(1/T_MAX), log(1/T_MIN)] for the
     * zero of the slope: the minimum of a convex function, to double
     * precision, independent of any starting point */
    double lo = log(1 / CX_CALIB_T_MAX), hi = log(1 / CX_CALIB_T_MIN);
    if (slope(logit, y, n, exp(lo)) >= 0) {
        *T = CX_CALIB_T_MAX;
        if (at_bound)
            *at_bound = 1;
        return CX_OK;
    }
    if (slope(logit, y, n, exp(hi)) <= 0) {
        *T = CX_CALIB_T_MIN;
        if (at_bound)
            *at_bound = 1;
        return CX_OK;
    }
    for (int it = 0; it < 200 && hi - lo > 1e-15; it++) {
        double mid = 0.5 * (lo + hi);
        if (slope(logit, y, n, exp(mid)) < 0)
            lo = mid;
        else
            hi = mid;
    }
    *T = 1 / exp(0.5 * (lo + hi));
    return CX_OK;
}

double cx_calib_ece(const float *p, const uint8_t *y, size_t n, int bins)
{
    if (!n || bins < 1)
        return NAN;
    double *sp = calloc((size_t)bins, sizeof *sp), *sy = calloc((size_t)bins, sizeof *sy);
    size_t *cnt = calloc((size_t)bins, sizeof *cnt);
    double e = NAN;
    if (sp && sy && cnt) {
        for (size_t i = 0; i < n; i++) {
            int b = (int)floor((double)p[i] * bins);
            b = b < 0 ? 0 : b >= bins ? bins - 1 : b;
            sp[b] += p[i];
            sy[b] += y[i] ? 1 : 0;
            cnt[b]++;
        }
        e = 0;
        for (int b = 0; b < bins; b++)
            if (cnt[b])
                e += fabs(sp[b] - sy[b]) / (double)n; /* (n_b/n) |mean p - frac pos| */
    }
    free(sp);
    free(sy);
    free(cnt);
    return e;
}

typedef struct {
    float p;
    uint8_t y;
} scored;

static int by_p_desc(const void *a, const void *b)
{
    float x = ((const scored *)a)->p, z = ((const scored *)b)->p;
    return x > z ? -1 : x < z ? 1 : 0;
}

void cx_calib_rates(const float *p, const uint8_t *y, size_t n, float t, double *sens,
                    double *spec)
{
    size_t P = 0, N = 0, tp = 0, tn = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i]) {
            P++;
            tp += p[i] >= t;
        } else {
            N++;
            tn += !(p[i] >= t);
        }
    }
    *sens = P ? (double)tp / (double)P : NAN;
    *spec = N ? (double)tn / (double)N : NAN;
}

cx_status cx_calib_threshold(const float *p, const uint8_t *y, size_t n, cx_threshold_rule rule,
                             double target, float *t, cx_err *err)
{
    if (rule == CX_THRESHOLD_FIXED) {
        if (!(target > 0 && target < 1))
            return cx_seterr(err, CX_EARG, "a fixed threshold must be in (0, 1), not %g",
                             target);
        *t = (float)target;
        return CX_OK;
    }
    if ((rule == CX_THRESHOLD_SENSITIVITY || rule == CX_THRESHOLD_SPECIFICITY) &&
        !(target >= 0 && target <= 1))
        return cx_seterr(err, CX_EARG, "a target sensitivity or specificity must be in [0, 1], "
                                       "not %g",
                         target);
    int64_t P = 0, N = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(p[i]))
            return cx_seterr(err, CX_ENUMERIC, "probability %zu is not finite", i);
        if (y[i])
            P++;
        else
            N++;
    }
    if (!P || !N)
        return cx_seterr(err, CX_EARG,
                         "the images have %s positive%s and %lld negative%s: a threshold needs "
                         "both",
                         P ? "some" : "no", P ? "s" : "", (long long)N, N == 1 ? "" : "s");
    scored *v = malloc(sizeof *v * n);
    if (!v)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        v[i].p = p[i];
        v[i].y = y[i] ? 1 : 0;
    }
    qsort(v, n, sizeof *v, by_p_desc);
    /* candidate thresholds: the distinct scores, from the highest down; at
     * candidate v[i].p every score >= it is positive */
    int64_t tp = 0, fp = 0, btp = -1, bfp = 0;
    int found = 0;
    float best = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && v[j].p == v[i].p) {
            tp += v[j].y;
            fp += !v[j].y;
            j++;
        }
        float cand = v[i].p;
        int take = 0;
        switch (rule) {
        case CX_THRESHOLD_YOUDEN: /* J = tp/P - fp/N, compared exactly */
            take = !found || tp * N - fp * P > btp * N - bfp * P;
            break;
        case CX_THRESHOLD_F1: /* F1 = 2tp / (tp + fp + P), compared exactly */
            take = !found || 2 * tp * (btp + bfp + P) > 2 * btp * (tp + fp + P);
            break;
        case CX_THRESHOLD_SENSITIVITY: /* the highest reaching the target */
            take = !found && (double)tp / (double)P >= target;
            break;
        case CX_THRESHOLD_SPECIFICITY: /* the lowest still reaching it */
            take = (double)(N - fp) / (double)N >= target;
            break;
        default:
            break;
        }
        if (take) {
            best = cand;
            btp = tp;
            bfp = fp;
            found = 1;
        }
        i = j;
    }
    free(v);
    if (!found)
        return cx_seterr(err, CX_EARG,
                         "no threshold reaches %s %g on these images (the highest score "
                         "already counts too many negatives)",
                         rule == CX_THRESHOLD_SPECIFICITY ? "specificity" : "sensitivity",
                         target);
    /* a threshold is stored in (0, 1) */
    if (!(best > 0))
        best = FLT_TRUE_MIN;
    if (!(best < 1))
        best = nextafterf(1.0f, 0.0f);
    *t = best;
    return CX_OK;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

double cx_calib_percentile(float *v, size_t n, double q)
{
    if (!n)
        return NAN;
    qsort(v, n, sizeof *v, cmp_float);
    double h = (double)(n - 1) * (q / 100.0);
    if (h <= 0)
        return v[0];
    if (h >= (double)(n - 1))
        return v[n - 1];
    size_t lo = (size_t)floor(h);
    double f = h - (double)lo;
    return (double)v[lo] + f * ((double)v[lo + 1] - (double)v[lo]);
}
