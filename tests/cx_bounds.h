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

/* The magnitudes of a 3x3 "same" convolution by Winograd F(2x2, 3x3)
 * (kernels/cpu/wino.inc): per output,
 *     |A^T| sum_ci (|G||g||G^T| o |B^T||d||B|) |A|
 * over the output's 2x2 tile, from input magnitudes xa (CNHW [Cin][N*H*W])
 * and the weights w [Cout][Cin][3][3]; with the depth the backend names
 * (conv_winograd) the bound of check_bound holds for it. */
static inline double *wino_mag(const double *xa, int Cin, int N, int H, int W, const float *w,
                               int Cout)
{
    static const double G[4][3] = {{1, 0, 0}, {.5, .5, .5}, {.5, .5, .5}, {0, 0, 1}};
    static const double B[4][4] = {{1, 0, 1, 0}, {0, 1, 1, 0}, {0, 1, 1, 0}, {0, 1, 0, 1}};
    static const double A[2][4] = {{1, 1, 1, 0}, {0, 1, 1, 1}};
    int th = (H + 1) / 2, tw = (W + 1) / 2;
    int64_t P = (int64_t)N * H * W, T = (int64_t)N * th * tw;
    double *U = malloc(sizeof(double) * 16 * (size_t)Cout * Cin);
    double *V = malloc(sizeof(double) * 16 * (size_t)Cin * T);
    double *m = calloc((size_t)Cout * P, sizeof(double));
    for (int64_t i = 0; i < (int64_t)Cout * Cin; i++) {
        double g[3][3], t[4][3];
        for (int q = 0; q < 9; q++)
            g[q / 3][q % 3] = fabs((double)w[i * 9 + q]);
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 3; b++)
                t[a][b] = G[a][0] * g[0][b] + G[a][1] * g[1][b] + G[a][2] * g[2][b];
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++)
                U[i * 16 + a * 4 + b] = t[a][0] * G[b][0] + t[a][1] * G[b][1] + t[a][2] * G[b][2];
    }
    for (int ci = 0; ci < Cin; ci++)
        for (int64_t tt = 0; tt < T; tt++) {
            int n = (int)(tt / ((int64_t)th * tw)), r = (int)(tt % ((int64_t)th * tw));
            int ty = r / tw, tx = r % tw;
            double d[4][4], t[4][4];
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) {
                    int iy = 2 * ty - 1 + a, ix = 2 * tx - 1 + b;
                    d[a][b] = iy >= 0 && iy < H && ix >= 0 && ix < W
                                  ? xa[ci * P + ((int64_t)n * H + iy) * W + ix]
                                  : 0.0;
                }
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++)
                    t[a][b] = B[a][0] * d[0][b] + B[a][1] * d[1][b] + B[a][2] * d[2][b] +
                              B[a][3] * d[3][b];
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++)
                    V[((size_t)ci * T + tt) * 16 + a * 4 + b] =
                        t[a][0] * B[b][0] + t[a][1] * B[b][1] + t[a][2] * B[b][2] +
                        t[a][3] * B[b][3];
        }
    for (int co = 0; co < Cout; co++)
        for (int64_t tt = 0; tt < T; tt++) {
            double s[16] = {0};
            for (int ci = 0; ci < Cin; ci++) {
                const double *u = U + ((size_t)co * Cin + ci) * 16, *v = V + ((size_t)ci * T + tt) * 16;
                for (int e = 0; e < 16; e++)
                    s[e] += u[e] * v[e];
            }
            int n = (int)(tt / ((int64_t)th * tw)), r = (int)(tt % ((int64_t)th * tw));
            int ty = r / tw, tx = r % tw;
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) {
                    int oy = 2 * ty + i, ox = 2 * tx + j;
                    if (oy >= H || ox >= W)
                        continue;
                    double v = 0;
                    for (int a = 0; a < 4; a++)
                        for (int b = 0; b < 4; b++)
                            v += A[i][a] * s[a * 4 + b] * A[j][b];
                    m[(size_t)co * P + ((int64_t)n * H + oy) * W + ox] = v;
                }
        }
    free(U), free(V);
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
