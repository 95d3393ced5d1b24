/* The CPU backend's own GEMMs (kernels/cpu/sgemm.h), below its ops, once per
 * instruction-set variant this CPU can run (kernels/cpu/variant.h; lowered
 * with CHEXNET_ISA): the plain GEMM against double-precision products, the
 * kn2row "same" convolution and the BatchNorm-gradient epilogue. Every
 * result is held to the rounding-error bound of the kernel's summation
 * depth (cx_sgemm_depth), which holds on any CPU. The ops built on them are
 * tested against the reference by the conformance harness
 * (test_backend_ops.c). */
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
#include "cx_bounds.h"
#include "cx_testutil.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/variant.h"
#include "util/rng.h"

/* The variant under test, and the reference backend */
static const cx_cpu_variant *V;
static cx_backend *REF;

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
                sgemm_case(ta, tb, 37, 45, 29, acc, seed++);   /* all tails, small */
                sgemm_case(ta, tb, 128, 49, 300, acc, seed++); /* few panels, K > one chunk */
                sgemm_case(ta, tb, 20, 1100, 70, acc, seed++); /* many panels: A packed */
                sgemm_case(ta, tb, 8, 32, 1, acc, seed++);     /* K = 1 */
            }
    sgemm_case(0, 1, 64, 96, 5000, 1, seed++); /* long K (weight gradients) */
}

/* A "same" convolution case: random x, w and BatchNorm (scale, shift) in
 * host memory, the reference backend's y1 of the stored BN-ReLU (or of x
 * without bn), and y2 for the kernel under test with a guard value after
 * it. */
typedef struct {
    int Cin, N, H, W, Cout, k, bn;
    int64_t P;
    float *x, *w, *sc, *sh, *y1, *y2, guard;
} conv_case;

static void conv_case_make(conv_case *c, uint64_t seed)
{
    int64_t P = c->P = (int64_t)c->N * c->H * c->W;
    size_t nx = (size_t)c->Cin * P, ny = (size_t)c->Cout * P;
    cx_rng r;
    cx_rng_seed(&r, seed);
    c->x = rand_buf(&r, nx, -2, 2);
    c->w = rand_buf(&r, (size_t)c->Cout * c->Cin * c->k * c->k, -1, 1);
    c->sc = rand_buf(&r, c->Cin, -1.5f, 1.5f), c->sh = rand_buf(&r, c->Cin, -1, 1);
    float *a = malloc(sizeof(float) * nx);
    c->y1 = malloc(sizeof(float) * ny);
    c->y2 = rand_buf(&r, ny + 1, -9, 9), c->guard = c->y2[ny];
    /* the reference backend computes in host memory */
    if (c->bn)
        assert_int_equal(REF->ops->bn_relu(REF, c->x, a, c->Cin, P, c->sc, c->sh), CX_OK);
    else
        memcpy(a, c->x, sizeof(float) * nx);
    assert_int_equal(REF->ops->conv2d(REF, a, c->Cin, c->N, c->H, c->W, c->w, c->Cout, c->k, 1,
                                      (c->k - 1) / 2, c->y1, NULL, 0),
                     CX_OK);
    free(a);
}

/* y2 against y1 within the bound of the method that computed it (Winograd's
 * over the transformed magnitudes, or kn2row's), nothing written past y2;
 * frees the case */
static void conv_case_check(conv_case *c, int wino, const char *what)
{
    size_t nx = (size_t)c->Cin * c->P, ny = (size_t)c->Cout * c->P;
    double *xm = c->bn ? bn_mag64(c->x, c->Cin, c->P, c->sc, c->sh) : to_abs64(c->x, nx);
    double *mag = wino ? wino_mag(xm, c->Cin, c->N, c->H, c->W, c->w, c->Cout)
                       : conv_mag(xm, c->Cin, c->N, c->H, c->W, c->w, c->Cout, c->k, 1,
                                  (c->k - 1) / 2);
    check_bound(V->gemm_kernel(), what, c->y2, c->y1, mag, ny,
                wino ? V->sgemm_conv3x3_winograd_depth(c->Cin) : V->gemm_depth(c->Cin) + c->k * c->k,
                c->bn);
    assert_true(c->y2[ny] == c->guard);
    free(xm), free(mag);
    free(c->x), free(c->w), free(c->sc), free(c->sh), free(c->y1), free(c->y2);
}

/* cx_sgemm_conv_same (the kn2row GEMM with the shifted planes summed in
 * its epilogue, or Winograd where it chooses that) against the reference
 * convolution of the stored BN-ReLU, with and without the BN-ReLU, on
 * shapes whose 32-column panels straddle rows and images, and with fewer
 * output channels than threads. */
static void test_conv_same(void **state)
{
    static const int shapes[][7] = {/* Cin N H W Cout k bn */
                                    {37, 2, 9, 7, 20, 3, 1},    {16, 3, 5, 6, 8, 5, 0},
                                    {128, 2, 14, 14, 32, 3, 1}, {8, 3, 11, 40, 16, 3, 1},
                                    {5, 1, 3, 3, 9, 3, 0},      {12, 2, 6, 5, 7, 1, 1},
                                    {3, 1, 4, 4, 1, 3, 1}}; /* one output channel */
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        const int *q = shapes[t];
        conv_case c = {.Cin = q[0], .N = q[1], .H = q[2], .W = q[3], .Cout = q[4], .k = q[5],
                       .bn = q[6]};
        conv_case_make(&c, 130 + t);
        V->sgemm_conv_same(c.Cout, c.Cin, c.k, c.w, c.N, c.H, c.W, c.x, c.P, c.bn ? c.sc : NULL,
                           c.bn ? c.sh : NULL, c.y2, c.P);
        int wino = V->sgemm_conv_same_winograd(c.Cout, c.Cin, c.k, c.N, c.H, c.W);
        char what[96];
        snprintf(what, sizeof what, "conv_same %dx%d Cin %d N %d %dx%d Cout %d bn %d%s", c.k, c.k,
                 c.Cin, c.N, c.H, c.W, c.Cout, c.bn, wino ? " (winograd)" : "");
        conv_case_check(&c, wino, what);
    }
}

/* cx_sgemm_conv3x3_winograd on any shape, whether or not cx_sgemm_conv_same
 * would choose it: odd and tiny images (partial 2x2 tiles, one row or
 * column), runs of tiles that straddle rows, images and blocks, rows wider
 * than a block, fewer output channels than a register block, Cin past one
 * K chunk; held to the bound over the transformed magnitudes (wino_mag,
 * depth cx_sgemm_conv3x3_winograd_depth), and nothing written past y. */
static void test_conv3x3_winograd(void **state)
{
    static const int shapes[][6] = {/* Cin N H W Cout bn */
                                    {128, 1, 56, 56, 32, 1}, {37, 2, 9, 7, 20, 1},
                                    {5, 1, 1, 1, 3, 0},      {4, 3, 1, 9, 5, 1},
                                    {6, 2, 7, 1, 9, 0},      {8, 3, 11, 40, 16, 1},
                                    {3, 2, 25, 23, 7, 1},    {16, 1, 9, 150, 33, 0},
                                    {600, 1, 8, 6, 8, 1},    {1, 5, 4, 4, 1, 1}};
    for (size_t t = 0; t < sizeof shapes / sizeof *shapes; t++) {
        const int *q = shapes[t];
        conv_case c = {.Cin = q[0], .N = q[1], .H = q[2], .W = q[3], .Cout = q[4], .k = 3,
                       .bn = q[5]};
        conv_case_make(&c, 170 + t);
        assert_int_equal(V->sgemm_conv3x3_winograd(c.Cout, c.Cin, c.w, c.N, c.H, c.W, c.x, c.P,
                                                   c.bn ? c.sc : NULL, c.bn ? c.sh : NULL, c.y2,
                                                   c.P),
                         1);
        char what[96];
        snprintf(what, sizeof what, "winograd 3x3 Cin %d N %d %dx%d Cout %d bn %d", c.Cin, c.N,
                 c.H, c.W, c.Cout, c.bn);
        conv_case_check(&c, 1, what);
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
            float *x = rand_buf(&r, (size_t)M * ld, -2, 2),
                  *dx = rand_buf(&r, (size_t)M * ld, -1, 1);
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

int main(void)
{
    cx_set_threads(2);
    cx_err err = {0};
    if (cx_backend_new(CX_BACKEND_REF, &REF, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const struct CMUnitTest per_variant[] = {
        cmocka_unit_test(test_sgemm),
        cmocka_unit_test(test_conv_same),
        cmocka_unit_test(test_conv3x3_winograd),
        cmocka_unit_test(test_sgemm_bnrelu_grad),
    };
    int fails = 0;
    for (int i = 0; i < cx_cpu_variant_count(); i++) {
        V = cx_cpu_variant_at(i);
        char name[64];
        snprintf(name, sizeof name, "cpu variant %s (%s)", V->name, V->gemm_kernel());
        fails += _cmocka_run_group_tests(name, per_variant,
                                         sizeof per_variant / sizeof *per_variant, NULL, NULL);
    }
    cx_backend_free(REF);
    return fails ? 1 : 0;
}
