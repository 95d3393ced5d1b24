/* Rounding-error bounds for the kernel tests (test_backend_ops.c,
 * test_sgemm.c): results are held to what their summation can lose on any
 * CPU, never to one machine's observed error. Include after cmocka.h. */
#ifndef CX_BOUNDS_H
#define CX_BOUNDS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels/backend.h"
#include "kernels/ref/ref_f64.h"

/* u = 2^-24, gamma_n = n u / (1 - n u): the bound on n roundings */
static inline double gamma_n(int n)
{
    double u = ldexp(1.0, -24);
    return n * u / (1.0 - n * u);
}

/* Results against the reference, whose float loops sum in double and
 * round once. An element of a GEMM-based kernel that sums its products in
 * `depth` levels is within gamma_depth * mag of the exact value, mag = the
 * sum of the magnitudes of its products; so
 *     |got - ref| <= gamma_depth * mag + u |ref|.
 * Where the input is a BatchNorm + ReLU computed in the kernel (with or
 * without a fused multiply-add), each input value may differ by 2u (|x sc|
 * + |a|) as well: mag is then computed from |x sc| + a instead of a, with
 * 2u more in the factor. mag comes from the double reference on absolute
 * values. The bound holds on every CPU; a wrong element breaks it by orders
 * of magnitude. `who` names the backend (and its GEMM) in the message. */
static inline void check_bound(const char *who, const char *what, const float *got,
                               const float *ref, const double *mag, size_t n, int depth, int bn)
{
    double u = ldexp(1.0, -24), g = gamma_n(depth) + (bn ? 2.01 * u : 0.0), worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double q = fabs((double)got[i] - ref[i]) / (g * mag[i] + u * fabs(ref[i]) + 1e-37);
        if (!(q <= worst)) { /* NaN too */
            worst = q;
            at = i;
        }
    }
    if (!(worst <= 1.0))
        fail_msg("%s (%s): element %zu %.9g vs %.9g is %.3g x the bound (gamma_%d%s)", what, who,
                 at, got[at], ref[at], worst, depth, bn ? " + BN" : "");
}

static inline double *to_abs64(const float *v, size_t n)
{
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        d[i] = fabs((double)v[i]);
    return d;
}

/* |x sc| + max(0, x sc + sh) per element, CNHW [C][P], in double */
static inline double *bn_mag64(const float *x, int C, int64_t P, const float *sc, const float *sh)
{
    double *d = malloc(sizeof(double) * (size_t)(C * P));
    for (int c = 0; c < C; c++)
        for (int64_t p = 0; p < P; p++) {
            double xs = (double)x[c * P + p] * sc[c], a = xs + sh[c];
            d[c * P + p] = fabs(xs) + (a > 0 ? a : 0);
        }
    return d;
}

/* sum of |w| |x| of each output of conv2d (double reference) */
static inline double *conv_mag(const double *xa, int Cin, int N, int H, int W, const float *w,
                               int Cout, int k, int s, int pad)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    double *wa = to_abs64(w, (size_t)Cout * Cin * k * k);
    double *m = malloc(sizeof(double) * (size_t)Cout * N * Ho * Wo);
    cx_ops_ref64()->conv2d(xa, Cin, N, H, W, wa, Cout, k, s, pad, m, NULL, 0);
    free(wa);
    return m;
}

/* sums of magnitudes of conv2d_backward's products: dw from |dy| and xa,
 * dx from |w| and |dy| */
static inline void conv_bwd_mag(const double *xa, int Cin, int N, int H, int W, const float *w,
                                int Cout, int k, int s, int pad, const float *dy, double **mdw,
                                double **mdx)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    size_t nw = (size_t)Cout * Cin * k * k;
    double *wa = to_abs64(w, nw), *dya = to_abs64(dy, (size_t)Cout * N * Ho * Wo);
    *mdw = calloc(nw, sizeof(double));
    *mdx = malloc(sizeof(double) * (size_t)Cin * N * H * W);
    cx_ops_ref64()->conv2d_backward(xa, Cin, N, H, W, wa, Cout, k, s, pad, dya, *mdw, *mdx, 0, NULL,
                                    0);
    free(wa), free(dya);
}

/* max |a-b| / (1 + max|b|) over n values */
static inline double rel_err(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || isnan(d))
            md = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > mb)
            mb = fabs(b[i]);
    }
    return md / (1.0 + mb);
}

/* |a - b|_2 / |b|_2 */
static inline double rel_l2(const float *a, const float *b, size_t n)
{
    double d = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        nb += (double)b[i] * b[i];
    }
    return sqrt(d) / (sqrt(nb) + 1e-30);
}

/* max |a-b| / max|b| */
static inline double rel_max(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || isnan(d))
            md = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > mb)
            mb = fabs(b[i]);
    }
    return md / (mb > 0 ? mb : 1);
}

#endif
