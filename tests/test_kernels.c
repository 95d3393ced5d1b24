/* Every op of the fast CPU backend against the plain-C reference, on random
 * inputs of assorted shapes (including odd sizes, padding at borders, batch
 * > 1 and the CNHW channel stride), and the whole forward pass of a small
 * DenseNet on both backends. The ops run once per instruction-set variant
 * of the CPU backend that this CPU can run (kernels/cpu/variant.h; lowered
 * with CHEXNET_ISA). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chexnet.h"
#include "kernels/backend.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/variant.h"
#include "kernels/ref/ref_f64.h"
#include "model/model_internal.h"
#include "util/rng.h"
#include "cx_testutil.h"

/* The variant under test: its op table and GEMMs. */
static const cx_cpu_variant *V;
#define CPU (V->ops)

/* u = 2^-24, gamma_n = n u / (1 - n u): the bound on n roundings */
static double gamma_n(int n)
{
    double u = ldexp(1.0, -24);
    return n * u / (1.0 - n * u);
}

/* The convolutions' results against the reference, whose float loops sum in
 * double and round once. An element of a GEMM-based kernel that sums its
 * products in `depth` levels (V->gemm_depth) is within gamma_depth * mag of
 * the exact value, mag = the sum of the magnitudes of its products; so
 *     |got - ref| <= gamma_depth * mag + u |ref|.
 * Where the input is a BatchNorm + ReLU computed in the kernel (with or
 * without a fused multiply-add), each input value may differ by 2u (|x sc|
 * + |a|) as well: mag is then computed from |x sc| + a instead of a, with
 * 2u more in the factor. mag comes from the double reference on absolute
 * values. The bound holds on every CPU; a wrong element breaks it by orders
 * of magnitude. */
static void check_bound(const char *what, const float *got, const float *ref, const double *mag,
                        size_t n, int depth, int bn)
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
        fail_msg("%s (%s): element %zu %.9g vs %.9g is %.3g x the bound (gamma_%d%s)", what,
                 V->gemm_kernel(), at, got[at], ref[at], worst, depth, bn ? " + BN" : "");
}

static double *to_abs64(const float *v, size_t n)
{
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        d[i] = fabs((double)v[i]);
    return d;
}

/* |x sc| + max(0, x sc + sh) per element, CNHW [C][P], in double */
static double *bn_mag64(const float *x, int C, int64_t P, const float *sc, const float *sh)
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
static double *conv_mag(const double *xa, int Cin, int N, int H, int W, const float *w, int Cout,
                        int k, int s, int pad)
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
static void conv_bwd_mag(const double *xa, int Cin, int N, int H, int W, const float *w,
                         int Cout, int k, int s, int pad, const float *dy, double **mdw,
                         double **mdx)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    size_t nw = (size_t)Cout * Cin * k * k;
    double *wa = to_abs64(w, nw), *dya = to_abs64(dy, (size_t)Cout * N * Ho * Wo);
    *mdw = calloc(nw, sizeof(double));
    *mdx = malloc(sizeof(double) * (size_t)Cin * N * H * W);
    cx_ops_ref64()->conv2d_backward(xa, Cin, N, H, W, wa, Cout, k, s, pad, dya, *mdw, *mdx, 0,
                                    NULL, 0);
    free(wa), free(dya);
}

/* max |a-b| / (1 + max|b|) over n values */
static double rel_err(const float *a, const float *b, size_t n)
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

static void test_bn_relu(void **state)
{
    cx_rng r;
    cx_rng_seed(&r, 1);
    int C = 37;
    int64_t P = 2 * 13 * 11;
    float *x = rand_buf(&r, C * P, -3, 3), *sc = rand_buf(&r, C, -2, 2),
          *sh = rand_buf(&r, C, -1, 1);
    float *y1 = malloc(C * P * 4), *y2 = malloc(C * P * 4);
    cx_ops_ref()->bn_relu(x, y1, C, P, sc, sh);
    CPU->bn_relu(x, y2, C, P, sc, sh);
    /* x * sc + sh with or without a fused multiply-add: each result is within
     * u |x sc| + u |x sc + sh| of the exact value, and ReLU keeps distances */
    double u = ldexp(1.0, -24);
    for (int64_t i = 0; i < C * P; i++) {
        int c = (int)(i / P);
        double xs = fabs((double)x[i] * sc[c]), v = fabs((double)x[i] * sc[c] + sh[c]);
        if (!(fabs((double)y2[i] - y1[i]) <= 2 * u * (xs + v) * (1 + 4 * u)))
            fail_msg("bn_relu (%s) element %lld: %.9g vs %.9g", V->name, (long long)i, y2[i],
                     y1[i]);
    }
    /* in place */
    CPU->bn_relu(x, x, C, P, sc, sh);
    assert_memory_equal(x, y2, C * P * 4);
    free(x), free(sc), free(sh), free(y1), free(y2);
}

static void check_conv(int Cin, int N, int H, int W, int Cout, int k, int s, int pad)
{
    cx_rng r;
    cx_rng_seed(&r, (uint64_t)(Cin * 1000 + H * 10 + k));
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    size_t nx = (size_t)Cin * N * H * W, nw = (size_t)Cout * Cin * k * k,
           ny = (size_t)Cout * N * Ho * Wo;
    float *x = rand_buf(&r, nx, -1, 1), *w = rand_buf(&r, nw, -0.5f, 0.5f);
    float *y1 = calloc(ny, 4), *y2 = calloc(ny, 4);
    cx_ops_ref()->conv2d(x, Cin, N, H, W, w, Cout, k, s, pad, y1, NULL, 0);
    size_t sn = CPU->conv_scratch(Cin, N, H, W, Cout, k, s, pad);
    float *scratch = malloc((sn + 1) * 4);
    CPU->conv2d(x, Cin, N, H, W, w, Cout, k, s, pad, y2, scratch, sn);
    double *xa = to_abs64(x, nx), *mag = conv_mag(xa, Cin, N, H, W, w, Cout, k, s, pad);
    char what[96];
    snprintf(what, sizeof what, "conv %dx%d s%d p%d Cin %d N %d %dx%d", k, k, s, pad, Cin, N, H, W);
    check_bound(what, y2, y1, mag, ny, V->gemm_depth(Cin * k * k) + k * k, 0);
    free(x), free(w), free(y1), free(y2), free(scratch), free(xa), free(mag);
}

static void test_conv(void **state)
{
    check_conv(16, 1, 9, 9, 8, 1, 1, 0);    /* pointwise GEMM */
    check_conv(24, 3, 7, 5, 32, 1, 1, 0);   /* batch > 1 */
    check_conv(12, 2, 8, 9, 32, 3, 1, 1);   /* dense layer conv2 */
    check_conv(3, 2, 23, 20, 16, 7, 2, 3);  /* conv0 */
    check_conv(5, 1, 6, 6, 4, 3, 2, 0);     /* strided, no padding */
    check_conv(128, 2, 14, 14, 32, 3, 1, 1);/* real block-3 shape */
    /* im2col chunking across images: large enough to exceed one chunk */
    check_conv(128, 3, 112, 112, 8, 3, 1, 1);
    /* kn2row ("same" convolutions) split into chunks of images */
    check_conv(8, 10, 56, 56, 32, 3, 1, 1);
    check_conv(6, 2, 9, 7, 5, 5, 1, 2);
    /* im2col's column ranges at the borders: assorted strides, pads, widths */
    check_conv(3, 1, 7, 5, 4, 7, 2, 3);
    check_conv(3, 2, 6, 6, 4, 7, 2, 3);
    check_conv(2, 1, 4, 1, 3, 3, 2, 1);
    check_conv(4, 1, 10, 11, 3, 3, 3, 1);
    check_conv(4, 2, 9, 12, 3, 5, 2, 2);
    check_conv(4, 1, 9, 9, 3, 1, 2, 0);
    check_conv(3, 1, 11, 13, 2, 4, 3, 2);
}

/* The variant's GEMM against a double-precision product: every transpose,
 * overwrite and accumulate, tails in M, N and K, few and many column panels
 * (A read in place or packed), K past one chunk. Each element must be
 * within the rounding-error bound of the kernel's summation,
 *     |C - fl(C)| <= gamma_n (|op(A)| |op(B)| + |C0|), n = gemm_depth(K),
 * which holds for any CPU (with or without FMA) and any summation order of
 * that depth; a wrong element breaks it by orders of magnitude. */
static void sgemm_case(int ta, int tb, int M, int N, int K, int acc, uint64_t seed)
{
    cx_rng r;
    cx_rng_seed(&r, seed);
    int lda = ta ? M + 3 : K + 1, ldb = tb ? K + 2 : N + 5, ldc = N + 7;
    float *A = rand_buf(&r, (size_t)(ta ? K : M) * lda, -1, 1);
    float *B = rand_buf(&r, (size_t)(tb ? N : K) * ldb, -1, 1);
    float *C = rand_buf(&r, (size_t)M * ldc, -1, 1);
    double *ref = malloc(sizeof(double) * (size_t)M * N);
    double *mag = malloc(sizeof(double) * (size_t)M * N);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double c0 = acc ? C[(size_t)m * ldc + n] : 0.0, v = c0, a = fabs(c0);
            for (int k = 0; k < K; k++) {
                double p = (double)(ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k]) *
                           (tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n]);
                v += p;
                a += fabs(p);
            }
            ref[(size_t)m * N + n] = v;
            mag[(size_t)m * N + n] = a;
        }
    float guard = C[(size_t)(M - 1) * ldc + N]; /* padding column: must stay */
    V->sgemm(ta, tb, M, N, K, A, lda, B, ldb, acc, C, ldc);
    double g = gamma_n(V->gemm_depth(K)), worst = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            size_t i = (size_t)m * N + n;
            double q = fabs(C[(size_t)m * ldc + n] - ref[i]) / (g * mag[i] + 1e-300);
            if (!(q <= worst))
                worst = q; /* NaN too */
        }
    if (!(worst <= 1.0) || C[(size_t)(M - 1) * ldc + N] != guard)
        fail_msg("sgemm %s%s %dx%dx%d acc %d (%s): error %.3g x the bound gamma_%d", ta ? "T" : "N",
                 tb ? "T" : "N", M, N, K, acc, V->gemm_kernel(), worst, V->gemm_depth(K));
    free(A), free(B), free(C), free(ref), free(mag);
}

static void test_sgemm(void **state)
{
    uint64_t seed = 100;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int acc = 0; acc < 2; acc++) {
                sgemm_case(ta, tb, 37, 45, 29, acc, seed++);     /* all tails, small */
                sgemm_case(ta, tb, 128, 49, 300, acc, seed++);   /* few panels, K > one chunk */
                sgemm_case(ta, tb, 20, 1100, 70, acc, seed++);   /* many panels: A packed */
                sgemm_case(ta, tb, 8, 32, 1, acc, seed++);       /* K = 1 */
            }
    sgemm_case(0, 1, 64, 96, 5000, 1, seed++); /* long K (weight gradients) */
}

/* The fused pointwise convolution of a BN-ReLU and its backward: CPU
 * (BN-ReLU inside the GEMM's packing) against the reference loops. */
static void test_conv1x1_bn_relu(void **state)
{
    static const int shapes[][3] = {{37, 20, 2 * 9 * 7}, {128, 64, 3136}, {256, 32, 49}};
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        int Cin = shapes[t][0], Cout = shapes[t][1];
        int64_t P = shapes[t][2];
        cx_rng r;
        cx_rng_seed(&r, 50 + t);
        float *x = rand_buf(&r, (size_t)(Cin * P), -2, 2), *w = rand_buf(&r, (size_t)Cout * Cin, -1, 1);
        float *sc = rand_buf(&r, Cin, -1.5f, 1.5f), *sh = rand_buf(&r, Cin, -1, 1);
        float *dy = rand_buf(&r, (size_t)(Cout * P), -1, 1);
        float *scr = malloc(sizeof(float) * (size_t)(Cin * P));
        float *y1 = malloc(sizeof(float) * (size_t)(Cout * P)), *y2 = malloc(sizeof(float) * (size_t)(Cout * P));
        cx_ops_ref()->conv1x1_bn_relu(x, Cin, P, sc, sh, w, Cout, y1, scr);
        CPU->conv1x1_bn_relu(x, Cin, P, sc, sh, w, Cout, y2, scr);
        double *xm = bn_mag64(x, Cin, P, sc, sh);
        double *mag = conv_mag(xm, Cin, 1, 1, (int)P, w, Cout, 1, 1, 0), *mdw, *mda;
        conv_bwd_mag(xm, Cin, 1, 1, (int)P, w, Cout, 1, 1, 0, dy, &mdw, &mda);
        check_bound("conv1x1_bn_relu y", y2, y1, mag, (size_t)(Cout * P), V->gemm_depth(Cin), 1);
        float *dw1 = rand_buf(&r, (size_t)Cout * Cin, -1, 1), *dw2 = malloc(sizeof(float) * (size_t)Cout * Cin);
        memcpy(dw2, dw1, sizeof(float) * (size_t)Cout * Cin);
        float *da1 = rand_buf(&r, (size_t)(Cin * P), -1, 1), *da2 = malloc(sizeof(float) * (size_t)(Cin * P));
        memcpy(da2, da1, sizeof(float) * (size_t)(Cin * P));
        double *dw0 = to_abs64(dw1, (size_t)Cout * Cin), *da0 = to_abs64(da1, (size_t)(Cin * P));
        for (int acc = 0; acc < 2; acc++) {
            cx_ops_ref()->conv1x1_bn_relu_backward(x, Cin, P, sc, sh, w, Cout, dy, dw1, da1, acc, scr);
            CPU->conv1x1_bn_relu_backward(x, Cin, P, sc, sh, w, Cout, dy, dw2, da2, acc, scr);
            /* the values added to, and the products: (acc + 1) x the sums
             * (dw accumulates in both passes) */
            for (size_t i = 0; i < (size_t)Cout * Cin; i++)
                dw0[i] += mdw[i];
            for (size_t i = 0; i < (size_t)(Cin * P); i++)
                da0[i] = (acc ? da0[i] : 0) + mda[i];
            check_bound("conv1x1_bn_relu_backward dw", dw2, dw1, dw0, (size_t)Cout * Cin,
                        V->gemm_depth((int)P) + 1, 1);
            check_bound("conv1x1_bn_relu_backward da", da2, da1, da0, (size_t)(Cin * P),
                        V->gemm_depth(Cout) + 1, 0);
        }
        free(xm), free(mag), free(mdw), free(mda), free(dw0), free(da0);
        free(x), free(w), free(sc), free(sh), free(dy), free(scr), free(y1), free(y2);
        free(dw1), free(dw2), free(da1), free(da2);
    }
}

/* A same convolution of a BN-ReLU (DenseNet's norm2 + conv2) and its
 * backward: CPU (BN-ReLU in the GEMMs' packing) against the reference. */
static void test_conv2d_bn_relu(void **state)
{
    static const int shapes[][6] = {/* Cin N H W Cout k */
                                    {37, 2, 9, 7, 20, 3},
                                    {128, 2, 14, 14, 32, 3},
                                    {16, 3, 5, 6, 8, 5}};
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        int Cin = shapes[t][0], N = shapes[t][1], H = shapes[t][2], W = shapes[t][3];
        int Cout = shapes[t][4], k = shapes[t][5], pad = (k - 1) / 2;
        size_t nx = (size_t)Cin * N * H * W, ny = (size_t)Cout * N * H * W,
               nw = (size_t)Cout * Cin * k * k;
        cx_rng r;
        cx_rng_seed(&r, 110 + t);
        float *x = rand_buf(&r, nx, -2, 2), *w = rand_buf(&r, nw, -0.5f, 0.5f);
        float *sc = rand_buf(&r, Cin, -1.5f, 1.5f), *sh = rand_buf(&r, Cin, -1, 1);
        float *dy = rand_buf(&r, ny, -1, 1), *act = malloc(sizeof(float) * nx);
        const cx_ops *be[2] = {cx_ops_ref(), cx_ops_cpu()};
        float *y[2], *dw[2], *da[2];
        for (int b = 0; b < 2; b++) {
            size_t sn = be[b]->conv_scratch(Cin, N, H, W, Cout, k, 1, pad);
            size_t sb = be[b]->conv_bwd_scratch(Cin, N, H, W, Cout, k, 1, pad);
            sn = sn > sb ? sn : sb;
            float *scr = malloc(sizeof(float) * (sn + 1));
            y[b] = malloc(sizeof(float) * ny);
            dw[b] = calloc(nw, sizeof(float));
            da[b] = malloc(sizeof(float) * nx);
            be[b]->conv2d_bn_relu(x, Cin, N, H, W, sc, sh, w, Cout, k, y[b], act, scr, sn);
            be[b]->conv2d_bn_relu_backward(x, Cin, N, H, W, sc, sh, w, Cout, k, dy, dw[b], da[b],
                                           act, scr, sn);
            free(scr);
        }
        /* kn2row: the k*k taps of a K = Cin product added one by one; backward:
         * dw over the P positions, da over the k*k*Cout shifted rows */
        double *xm = bn_mag64(x, Cin, (int64_t)N * H * W, sc, sh);
        double *mag = conv_mag(xm, Cin, N, H, W, w, Cout, k, 1, pad), *mdw, *mda;
        conv_bwd_mag(xm, Cin, N, H, W, w, Cout, k, 1, pad, dy, &mdw, &mda);
        char what[96];
        snprintf(what, sizeof what, "conv2d_bn_relu %dx%d Cin %d N %d %dx%d y", k, k, Cin, N, H, W);
        check_bound(what, y[1], y[0], mag, ny, V->gemm_depth(Cin) + k * k, 1);
        what[strlen(what) - 1] = 0;
        strcat(what, "dw");
        check_bound(what, dw[1], dw[0], mdw, nw, V->gemm_depth(N * H * W) + 1, 1);
        what[strlen(what) - 2] = 0;
        strcat(what, "da");
        check_bound(what, da[1], da[0], mda, nx, V->gemm_depth(k * k * Cout), 0);
        free(xm), free(mag), free(mdw), free(mda);
        for (int b = 0; b < 2; b++)
            free(y[b]), free(dw[b]), free(da[b]);
        free(x), free(w), free(sc), free(sh), free(dy), free(act);
    }
}

/* cx_sgemm_conv_same (the kn2row GEMM with the shifted planes summed in
 * its epilogue) against the
 * reference convolution of the stored BN-ReLU, with and without the
 * BN-ReLU, on shapes whose 32-column panels straddle rows and images, and
 * with fewer output channels than threads. */
static void test_conv_same(void **state)
{
    static const int shapes[][7] = {/* Cin N H W Cout k bn */
                                    {37, 2, 9, 7, 20, 3, 1},   {16, 3, 5, 6, 8, 5, 0},
                                    {128, 2, 14, 14, 32, 3, 1}, {8, 3, 11, 40, 16, 3, 1},
                                    {5, 1, 3, 3, 9, 3, 0},     {12, 2, 6, 5, 7, 1, 1},
                                    {3, 1, 4, 4, 1, 3, 1}}; /* one output channel */
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        int Cin = shapes[t][0], N = shapes[t][1], H = shapes[t][2], W = shapes[t][3];
        int Cout = shapes[t][4], k = shapes[t][5], bn = shapes[t][6], pad = (k - 1) / 2;
        int64_t P = (int64_t)N * H * W;
        size_t nx = (size_t)Cin * P, ny = (size_t)Cout * P;
        cx_rng r;
        cx_rng_seed(&r, 130 + t);
        float *x = rand_buf(&r, nx, -2, 2), *w = rand_buf(&r, (size_t)Cout * Cin * k * k, -1, 1);
        float *sc = rand_buf(&r, Cin, -1.5f, 1.5f), *sh = rand_buf(&r, Cin, -1, 1);
        float *a = malloc(sizeof(float) * nx), *y1 = malloc(sizeof(float) * ny);
        float *y2 = rand_buf(&r, ny + 1, -9, 9), guard = y2[ny];
        if (bn)
            cx_ops_ref()->bn_relu(x, a, Cin, P, sc, sh);
        else
            memcpy(a, x, sizeof(float) * nx);
        cx_ops_ref()->conv2d(a, Cin, N, H, W, w, Cout, k, 1, pad, y1, NULL, 0);
        V->sgemm_conv_same(Cout, Cin, k, w, N, H, W, x, P, bn ? sc : NULL, bn ? sh : NULL, y2, P);
        double *xm = bn ? bn_mag64(x, Cin, P, sc, sh) : to_abs64(x, nx);
        double *mag = conv_mag(xm, Cin, N, H, W, w, Cout, k, 1, pad);
        char what[96];
        snprintf(what, sizeof what, "conv_same %dx%d Cin %d N %d %dx%d Cout %d bn %d", k, k, Cin,
                 N, H, W, Cout, bn);
        check_bound(what, y2, y1, mag, ny, V->gemm_depth(Cin) + k * k, bn);
        assert_true(y2[ny] == guard);
        free(xm), free(mag);
        free(x), free(w), free(sc), free(sh), free(a), free(y1), free(y2);
    }
}

/* BN-ReLU's backward in the deferred form (dense blocks): the op, then
 * bn_backward_finish with the per-channel terms, must equal the fused
 * backward followed by bn_relu_backward; on the reference backend and on
 * the CPU backend (the GEMM's epilogue). Shapes
 * cover tails, A read in place (few panels), A packed (many panels) and a
 * K beyond one GEMM chunk (Cout = 600). */
static void test_bn_backward_deferred(void **state)
{
    static const int shapes[][3] = {
        {37, 20, 2 * 9 * 7}, {128, 64, 3136}, {256, 32, 49}, {20, 24, 1100}, {40, 600, 130}};
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        int Cin = shapes[t][0], Cout = shapes[t][1];
        int64_t P = shapes[t][2];
        size_t nx = (size_t)Cin * P, nw = (size_t)Cout * Cin;
        cx_rng r;
        cx_rng_seed(&r, 70 + t);
        float *x = rand_buf(&r, nx, -2, 2.5f), *w = rand_buf(&r, nw, -1, 1);
        float *dy = rand_buf(&r, (size_t)Cout * P, -1, 1);
        float *gamma = rand_buf(&r, Cin, 0.5f, 1.5f), *beta = rand_buf(&r, Cin, -0.5f, 0.5f);
        float *mean = rand_buf(&r, Cin, -0.3f, 0.6f), *invstd = rand_buf(&r, Cin, 0.5f, 2);
        float sc[256], sh[256]; /* Cin <= 256 */
        for (int c = 0; c < Cin; c++) {
            sc[c] = gamma[c] * invstd[c];
            sh[c] = beta[c] - mean[c] * sc[c];
        }
        float *dx0 = rand_buf(&r, nx, -1, 1), *scr = malloc(sizeof(float) * nx);
        /* expected: fused backward to da, then bn_relu_backward adding to dx */
        float *da = malloc(sizeof(float) * nx), *dx1 = malloc(sizeof(float) * nx);
        float *dw1 = calloc(nw, sizeof(float)), *dg1 = calloc(Cin, 4), *db1 = calloc(Cin, 4);
        memcpy(dx1, dx0, sizeof(float) * nx);
        cx_ops_ref()->conv1x1_bn_relu_backward(x, Cin, P, sc, sh, w, Cout, dy, dw1, da, 0, scr);
        cx_ops_ref()->bn_relu_backward(x, da, Cin, P, gamma, beta, mean, invstd, dg1, db1, dx1, 1);
        const cx_ops *be[2] = {cx_ops_ref(), cx_ops_cpu()};
        for (int b = 0; b < 2; b++) {
            float *dx2 = malloc(sizeof(float) * nx), *dw2 = calloc(nw, sizeof(float));
            float *dg2 = calloc(Cin, 4), *db2 = calloc(Cin, 4), pa[256], pb[256];
            memcpy(dx2, dx0, sizeof(float) * nx);
            be[b]->conv1x1_bn_relu_backward_deferred(x, Cin, P, sc, sh, mean, invstd, w, Cout, dy,
                                                     dw2, dg2, db2, dx2, scr);
            for (int c = 0; c < Cin; c++) {
                pa[c] = -sc[c] / (float)P * db2[c];
                pb[c] = -sc[c] / (float)P * dg2[c];
            }
            be[b]->bn_backward_finish(x, Cin, P, mean, invstd, pa, pb, dx2);
            double e[4] = {rel_err(dw2, dw1, nw), rel_err(dg2, dg1, Cin), rel_err(db2, db1, Cin),
                           rel_err(dx2, dx1, nx)};
            for (int i = 0; i < 4; i++)
                if (!(e[i] < 1e-5))
                    fail_msg("deferred BN backward (%s, %s) Cin %d Cout %d P %d: %s rel err %g",
                             be[b]->name, V->gemm_kernel(), Cin, Cout, (int)P,
                             (const char *[]){"dw", "dgamma", "dbeta", "dx"}[i], e[i]);
            free(dx2), free(dw2), free(dg2), free(db2);
        }
        free(x), free(w), free(dy), free(gamma), free(beta), free(mean), free(invstd);
        free(dx0), free(scr), free(da), free(dx1), free(dw1), free(dg1), free(db1);
    }
}

/* cx_sgemm_bnrelu_grad against double-precision loops, transposed A or not. */
static void test_sgemm_bnrelu_grad(void **state)
{
    static const int shapes[][3] = {{37, 45, 29}, {24, 1100, 70}, {9, 40, 700}};
    for (int ta = 0; ta < 2; ta++)
        for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
            int M = shapes[t][0], N = shapes[t][1], K = shapes[t][2], ld = N + 3;
            cx_rng r;
            cx_rng_seed(&r, 90 + t + 10 * ta);
            float *A = rand_buf(&r, (size_t)M * K, -1, 1), *B = rand_buf(&r, (size_t)K * N, -1, 1);
            float *x = rand_buf(&r, (size_t)M * ld, -2, 2), *dx = rand_buf(&r, (size_t)M * ld, -1, 1);
            float *sc = rand_buf(&r, M, -1.5f, 1.5f), *sh = rand_buf(&r, M, -1, 1);
            float *mu = rand_buf(&r, M, -0.5f, 0.5f), *is = rand_buf(&r, M, 0.5f, 2);
            float *dg = calloc(M, 4), *db = calloc(M, 4);
            double *ex = malloc(sizeof(double) * M * ld), edg[64], edb[64]; /* M <= 64 */
            for (int m = 0; m < M; m++) {
                edg[m] = edb[m] = 0.0;
                for (int n = 0; n < ld; n++) {
                    size_t i = (size_t)m * ld + n;
                    ex[i] = dx[i];
                    if (n >= N)
                        continue;
                    double g = 0.0;
                    for (int k = 0; k < K; k++)
                        g += (double)(ta ? A[(size_t)k * M + m] : A[(size_t)m * K + k]) *
                             B[(size_t)k * N + n];
                    double d = x[i] * sc[m] + sh[m] > 0.0f ? g : 0.0;
                    ex[i] += sc[m] * d;
                    edb[m] += d;
                    edg[m] += d * ((x[i] - mu[m]) * is[m]);
                }
            }
            cx_bnrelu_grad e = {x, sc, sh, mu, is, dg, db};
            V->sgemm_bnrelu_grad(ta, M, N, K, A, ta ? M : K, B, N, &e, dx, ld);
            double md = 0, mx = 0, mg = 0, mgx = 0;
            for (size_t i = 0; i < (size_t)M * ld; i++) {
                md = fmax(md, fabs(dx[i] - ex[i]));
                mx = fmax(mx, fabs(ex[i]));
            }
            for (int m = 0; m < M; m++) {
                mg = fmax(mg, fmax(fabs(dg[m] - edg[m]), fabs(db[m] - edb[m])));
                mgx = fmax(mgx, fmax(fabs(edg[m]), fabs(edb[m])));
            }
            if (!(md / (1 + mx) < 1e-5) || !(mg / (1 + mgx) < 1e-5))
                fail_msg("sgemm_bnrelu_grad ta %d %dx%dx%d (%s): dx %g, sums %g", ta, M, N, K,
                         V->gemm_kernel(), md / (1 + mx), mg / (1 + mgx));
            free(A), free(B), free(x), free(dx), free(sc), free(sh), free(mu), free(is);
            free(dg), free(db), free(ex);
        }
}

static void test_pools(void **state)
{
    cx_rng r;
    cx_rng_seed(&r, 7);
    int C = 5, N = 3, H = 13, W = 10;
    size_t nx = (size_t)C * N * H * W;
    float *x = rand_buf(&r, nx, -2, 2);
    int Ho = cx_out_size(H, 3, 2, 1), Wo = cx_out_size(W, 3, 2, 1);
    size_t ny = (size_t)C * N * Ho * Wo;
    float *y1 = malloc(ny * 4), *y2 = malloc(ny * 4);
    cx_ops_ref()->maxpool(x, C, N, H, W, 3, 2, 1, y1);
    CPU->maxpool(x, C, N, H, W, 3, 2, 1, y2);
    assert_memory_equal(y1, y2, ny * 4);
    /* all-negative inputs: padding must never win */
    for (size_t i = 0; i < nx; i++)
        x[i] = -1.0f - (float)i;
    CPU->maxpool(x, C, N, H, W, 3, 2, 1, y2);
    for (size_t i = 0; i < ny; i++)
        assert_true(y2[i] < 0);
    free(y1), free(y2);

    /* assorted widths (1 to 113), windows and strides, NaN propagation */
    static const int kinds[][3] = {{3, 2, 1}, {3, 1, 1}, {2, 2, 0}, {3, 2, 0}, {5, 3, 2}};
    static const int widths[] = {1, 2, 3, 4, 5, 7, 8, 11, 56, 113};
    for (size_t a = 0; a < sizeof kinds / sizeof *kinds; a++)
        for (size_t b = 0; b < sizeof widths / sizeof *widths; b++) {
            int k = kinds[a][0], st = kinds[a][1], pd = kinds[a][2], Wd = widths[b], Hd = 9;
            if (Wd + 2 * pd < k)
                continue;
            size_t nxx = (size_t)2 * 2 * Hd * Wd;
            float *xx = rand_buf(&r, nxx, -2, 2);
            xx[nxx / 3] = NAN;
            int ho = cx_out_size(Hd, k, st, pd), wo = cx_out_size(Wd, k, st, pd);
            size_t nyy = (size_t)2 * 2 * ho * wo;
            float *z1 = malloc(nyy * 4), *z2 = malloc(nyy * 4);
            cx_ops_ref()->maxpool(xx, 2, 2, Hd, Wd, k, st, pd, z1);
            CPU->maxpool(xx, 2, 2, Hd, Wd, k, st, pd, z2);
            for (size_t i = 0; i < nyy; i++)
                if (!(z1[i] == z2[i] || (isnan(z1[i]) && isnan(z2[i]))))
                    fail_msg("maxpool k%d s%d p%d W %d: element %zu %g vs %g", k, st, pd, Wd, i,
                             z2[i], z1[i]);
            /* backward, bit for bit: with ties (values on a coarse grid: the
             * first maximum wins) and a second NaN (the last NaN wins) */
            for (size_t i = 0; i < nxx; i++)
                if (i != nxx / 3)
                    xx[i] = roundf(xx[i] * 2.0f) / 2.0f;
            xx[nxx / 3 + 1] = NAN;
            float *g = rand_buf(&r, nyy, -1, 1), *d1 = malloc(nxx * 4), *d2 = malloc(nxx * 4);
            cx_ops_ref()->maxpool_backward(xx, 2, 2, Hd, Wd, k, st, pd, g, d1);
            CPU->maxpool_backward(xx, 2, 2, Hd, Wd, k, st, pd, g, d2);
            if (memcmp(d1, d2, nxx * 4))
                fail_msg("maxpool backward k%d s%d p%d W %d differs from the reference", k, st,
                         pd, Wd);
            free(xx), free(z1), free(z2), free(g), free(d1), free(d2);
        }

    float *x2 = rand_buf(&r, nx, -2, 2);
    size_t na = (size_t)C * N * (H / 2) * (W / 2);
    y1 = malloc(na * 4), y2 = malloc(na * 4);
    cx_ops_ref()->avgpool(x2, C, N, H, W, 2, y1);
    CPU->avgpool(x2, C, N, H, W, 2, y2);
    assert_true(rel_err(y2, y1, na) < 1e-6);
    free(y1), free(y2);

    y1 = malloc((size_t)N * C * 4), y2 = malloc((size_t)N * C * 4);
    cx_ops_ref()->gap(x2, C, N, H * W, y1);
    CPU->gap(x2, C, N, H * W, y2);
    assert_true(rel_err(y2, y1, (size_t)N * C) < 1e-6);
    free(y1), free(y2), free(x), free(x2);
}

static void test_linear(void **state)
{
    cx_rng r;
    cx_rng_seed(&r, 9);
    int N = 3, F = 1024, M = 14;
    float *x = rand_buf(&r, (size_t)N * F, 0, 2), *w = rand_buf(&r, (size_t)M * F, -0.1f, 0.1f),
          *b = rand_buf(&r, M, -1, 1);
    float y1[3 * 14], y2[3 * 14];
    cx_ops_ref()->linear(x, N, F, w, b, M, y1);
    CPU->linear(x, N, F, w, b, M, y2);
    assert_true(rel_err(y2, y1, N * M) < 1e-5);
    free(x), free(w), free(b);
}

static void test_forward_small(void **state)
{
    /* A small DenseNet-BC (growth 8, blocks 2-3-2, 16 init features) on
     * 64x48 inputs, batch 3: CPU backend equals the reference. */
    cx_model *m = small_densenet();
    assert_non_null(m);
    cx_err err = {0};
    int N = 3, H = 64, W = 48;
    cx_rng r;
    cx_rng_seed(&r, 44);
    float *in = rand_buf(&r, (size_t)N * 3 * H * W, -2, 2);
    float l1[15], l2[15], l3[5];
    cx_ctx *cr = NULL, *cc = NULL;
    assert_int_equal(cx_ctx_new(m, N, H, W, CX_BACKEND_REF, &cr, &err), CX_OK);
    assert_int_equal(cx_ctx_new(m, N, H, W, CX_BACKEND_CPU, &cc, &err), CX_OK);
    assert_int_equal(cx_forward(cr, in, N, l1, &err), CX_OK);
    assert_int_equal(cx_forward(cc, in, N, l2, &err), CX_OK);
    assert_true(rel_err(l2, l1, 15) < 1e-5);
    /* fewer images than planned: same logits for the first image */
    assert_int_equal(cx_forward(cc, in, 1, l3, &err), CX_OK);
    assert_true(rel_err(l3, l1, 5) < 1e-5);
    /* features of image 0 after the batch-of-one forward */
    int C, h, w;
    assert_int_equal(cx_ctx_features(cc, 0, NULL, &C, &h, &w, &err), CX_OK);
    assert_int_equal(C, cx_config_num_features(cx_model_config(m)));
    float *f = malloc((size_t)C * h * w * 4);
    assert_int_equal(cx_ctx_features(cc, 0, f, &C, &h, &w, &err), CX_OK);
    /* logits recomputed from the features equal the forward's */
    for (int k = 0; k < 5; k++) {
        double acc = cx_model_classifier_bias(m)[k];
        for (int ch = 0; ch < C; ch++) {
            double mean = 0;
            for (int i = 0; i < h * w; i++)
                mean += f[ch * h * w + i];
            acc += cx_model_classifier_weight(m)[k * C + ch] * mean / (h * w);
        }
        assert_true(fabs(acc - l3[k]) < 1e-4 * (1 + fabs(acc)));
    }
    assert_int_equal(cx_ctx_features(cc, 1, f, &C, &h, &w, &err), CX_EARG);
    assert_int_equal(cx_forward(cc, in, N + 1, l2, &err), CX_EARG);
    free(f);
    free(in);
    cx_ctx_free(cr);
    cx_ctx_free(cc);
    cx_model_free(m);
}

static void test_config(void **state)
{
    cx_config cfg;
    cx_err err = {0};
    assert_int_equal(cx_config_preset("densenet121", 14, 3, &cfg, &err), CX_OK);
    assert_int_equal(cx_config_num_features(&cfg), 1024);
    cx_model *m = NULL;
    assert_int_equal(cx_model_new(&cfg, &m, &err), CX_OK);
    /* torchvision densenet121(num_classes=14): 6,968,206 trainable params */
    assert_int_equal(cx_model_num_params(m), 6968206);
    /* 121 = 1 conv0 + 2*(6+12+24+16) dense convs + 3 transitions + 1 fc */
    int convs = 0;
    for (int i = 0; i < cx_model_num_tensors(m); i++)
        convs += cx_model_tensor(m, i)->ndim == 4;
    assert_int_equal(convs + 1, 121);
    assert_string_equal(cx_model_class_name(m, 13), "Hernia");
    cx_model_free(m);
    assert_int_equal(cx_config_preset("densenet169", 1, 1, &cfg, &err), CX_OK);
    assert_int_equal(cx_config_num_features(&cfg), 1664);
    assert_int_equal(cx_config_preset("densenet201", 1, 3, &cfg, &err), CX_OK);
    assert_int_equal(cx_config_num_features(&cfg), 1920);
    assert_int_equal(cx_config_preset("resnet50", 1, 3, &cfg, &err), CX_EARG);
    assert_non_null(strstr(err.msg, "resnet50"));
}

int main(void)
{
    cx_set_threads(2);
    const struct CMUnitTest per_variant[] = {
        cmocka_unit_test(test_bn_relu),  cmocka_unit_test(test_conv),
        cmocka_unit_test(test_sgemm),
        cmocka_unit_test(test_conv1x1_bn_relu),
        cmocka_unit_test(test_conv_same),
        cmocka_unit_test(test_conv2d_bn_relu),
        cmocka_unit_test(test_bn_backward_deferred),
        cmocka_unit_test(test_sgemm_bnrelu_grad),
        cmocka_unit_test(test_pools),    cmocka_unit_test(test_linear),
    };
    const struct CMUnitTest once[] = {
        cmocka_unit_test(test_config),   cmocka_unit_test(test_forward_small),
    };
    int fails = 0;
    for (int i = 0; i < cx_cpu_variant_count(); i++) {
        V = cx_cpu_variant_at(i);
        char name[64];
        snprintf(name, sizeof name, "cpu variant %s (%s)", V->name, V->gemm_kernel());
        fails += _cmocka_run_group_tests(name, per_variant, sizeof per_variant / sizeof *per_variant,
                                         NULL, NULL);
    }
    V = cx_cpu_variant_at(0);
    fails += cmocka_run_group_tests(once, NULL, NULL);
    return fails ? 1 : 0;
}
