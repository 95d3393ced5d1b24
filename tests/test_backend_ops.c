/* The conformance harness: every op of every registered backend, in every
 * variant this machine can run (the CPU backend's instruction sets, lowered
 * with CHEXNET_ISA), against the reference backend, on shapes that include
 * DenseNet-121's real ones and odd tails (odd sizes, padding at borders,
 * batch > 1, the CNHW channel stride), forward and backward; then the whole
 * forward pass and a training step of a small DenseNet on each of them.
 * Buffers go through each backend's own memory operations, so a backend
 * with its own memory is tested as it runs. A new backend is tested by
 * adding it to the registry (kernels/registry.c); a new op is not done until
 * every registered backend passes it here.
 *
 * Tolerances: convolutions and GEMMs within the rounding-error bound of the
 * backend's summation depth (cx_ops.gemm_depth, cx_bounds.h); element-wise
 * ops within the few roundings they perform; layout, pooling selection and
 * packing bit for bit.
 *
 *   test_backend_ops [PREFIX]   runs the tests whose name starts with PREFIX */
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
#include "kernels/backend.h"
#include "model/pass.h"
#include "util/rng.h"

/* ------------------------------------------------------------ backends */

typedef struct {
    cx_backend *be;
    char name[96]; /* "cpu (avx2), avx2 6x16" */
} tested;

static tested T[32];
static int NT;
static cx_backend *REF; /* the oracle */

#define OPS(b) ((b)->ops)

static void open_backends(void)
{
    cx_err err = {0};
    if (cx_backend_new(CX_BACKEND_REF, &REF, &err) || REF->ops->bind(REF))
        fail_msg("reference backend: %s", err.msg);
    for (int i = 0; i < cx_backend_count(); i++) {
        const cx_backend_entry *e = cx_backend_at(i);
        for (int v = 0; v < e->variants() && NT < 32; v++) {
            cx_backend *be = NULL;
            if (cx_backend_new_variant(e, v, &be, &err))
                fail_msg("backend %s variant %d: %s", e->name, v, err.msg);
            char d[64];
            snprintf(T[NT].name, sizeof T[NT].name, "%s, %s", cx_backend_describe(be, d, sizeof d),
                     be->ops->gemm_kernel(be));
            T[NT++].be = be;
        }
    }
}

/* ------------------------------------------------------ backend memory */

static void *dalloc(cx_backend *be, size_t bytes)
{
    void *p = NULL;
    if (be->ops->alloc(be, bytes ? bytes : 4, &p) != CX_OK || !p)
        fail_msg("%s: alloc of %zu bytes failed: %s", be->entry->name, bytes, be->err.msg);
    return p;
}

/* a copy of host data in the backend's memory */
static void *dup_(cx_backend *be, const void *host, size_t bytes)
{
    void *d = dalloc(be, bytes);
    if (be->ops->upload(be, d, host, bytes) != CX_OK)
        fail_msg("%s: upload failed: %s", be->entry->name, be->err.msg);
    return d;
}
#define UPF(be, host, n) ((float *)dup_((be), (host), sizeof(float) * (size_t)(n)))

/* backend memory brought into host memory (malloc'd), then freed there */
static void *down(cx_backend *be, void *dev, size_t bytes)
{
    void *h = malloc(bytes ? bytes : 4);
    if (be->ops->download(be, h, dev, bytes) != CX_OK)
        fail_msg("%s: download failed: %s", be->entry->name, be->err.msg);
    be->ops->free(be, dev);
    return h;
}
#define DOWNF(be, dev, n) ((float *)down((be), (dev), sizeof(float) * (size_t)(n)))

static void dfree(cx_backend *be, void *dev) { be->ops->free(be, dev); }

/* an op that must succeed */
#define RUN(be, op, ...)                                                                           \
    do {                                                                                           \
        cx_backend *b_ = (be);                                                                     \
        if (b_->ops->op(b_, __VA_ARGS__) != CX_OK)                                                 \
            fail_msg("%s: op %s failed: %s", b_->entry->name, #op, b_->err.msg);                   \
    } while (0)

/* --------------------------------------------------------- completeness */

/* Every op and query of every backend is there. */
static void test_complete(void **state)
{
    for (int t = 0; t < NT; t++) {
        const cx_ops *o = T[t].be->ops;
        const void *fns[] = {
#define F(x) (const void *)o->x
            F(bind), F(alloc), F(free), F(zero), F(upload), F(download), F(nchw_to_cnhw),
            F(cnhw_to_nchw), F(bn_fold), F(bn_relu), F(bn_stats), F(bn_running_update),
            F(conv2d), F(conv_scratch), F(maxpool), F(avgpool), F(gap), F(linear),
            F(conv1x1_bn_relu), F(conv2d_bn_relu), F(bce_loss), F(bn_relu_backward),
            F(conv2d_backward), F(conv_bwd_scratch), F(conv1x1_bn_relu_backward),
            F(conv2d_bn_relu_backward), F(conv1x1_bn_relu_backward_deferred),
            F(bn_deferred_terms), F(bn_backward_finish), F(maxpool_backward),
            F(avgpool_backward), F(gap_backward), F(linear_backward), F(find_nonfinite),
            F(adam), F(bf16_act_size), F(bf16_grid_size), F(bf16_weights_size),
            F(pack_bf16_weights), F(pack_bf16), F(conv2d_bf16), F(conv_bf16_scratch),
            F(pack_bf16_grid), F(conv2d_grid_bf16), F(conv_grid_bf16_scratch), F(gemm_kernel),
            F(gemm_depth), F(bf16_kernel),
#undef F
        };
        for (size_t i = 0; i < sizeof fns / sizeof *fns; i++)
            if (!fns[i])
                fail_msg("%s: op %zu of the table is missing", T[t].name, i);
        assert_non_null(o->name);
        assert_int_equal(T[t].be->ops->bind(T[t].be), CX_OK);
    }
    /* the registry: ids and names both ways; unknown ones refused */
    for (int i = 0; i < cx_backend_count(); i++) {
        const cx_backend_entry *e = cx_backend_at(i);
        assert_ptr_equal(cx_backend_find(e->id), e);
        assert_int_equal(cx_backend_parse(e->name), (int)e->id);
        assert_string_equal(cx_backend_name(e->id), e->name);
        assert_true(e->variants() >= 1);
    }
    cx_err err = {0};
    cx_backend *be = NULL;
    assert_int_equal(cx_backend_new((cx_backend_id)99, &be, &err), CX_EARG);
    assert_null(be);
    assert_non_null(strstr(err.msg, "unknown backend"));
    assert_int_equal(cx_backend_parse("cuda-someday"), -1);
    assert_null(cx_backend_name((cx_backend_id)99));
    assert_null(cx_gemm_kernel((cx_backend_id)99));
}

/* alloc, zero, upload and download round trips */
static void test_memory(void **state)
{
    cx_rng r;
    cx_rng_seed(&r, 3);
    size_t n = 100003;
    float *h = rand_buf(&r, n, -1, 1);
    for (int t = 0; t < NT; t++) {
        cx_backend *be = T[t].be;
        float *d = UPF(be, h, n), *back = DOWNF(be, d, n);
        assert_memory_equal(back, h, n * sizeof(float));
        free(back);
        d = UPF(be, h, n);
        RUN(be, zero, d + 7, sizeof(float) * 1000);
        back = DOWNF(be, d, n);
        for (size_t i = 0; i < n; i++)
            assert_true(i >= 7 && i < 1007 ? back[i] == 0.0f : back[i] == h[i]);
        free(back);
    }
    free(h);
}

/* ---------------------------------------------------------------- layout */

static void test_layout(void **state)
{
    static const int shapes[][3] = {{1, 3, 224 * 224}, {3, 3, 37}, {16, 1, 5}, {2, 1024, 49}};
    cx_rng r;
    cx_rng_seed(&r, 4);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int N = shapes[s][0], C = shapes[s][1];
        int64_t HW = shapes[s][2];
        size_t n = (size_t)N * C * HW;
        float *x = rand_buf(&r, n, -2, 2);
        float *dr = UPF(REF, x, n), *yr = dalloc(REF, n * 4);
        RUN(REF, nchw_to_cnhw, dr, N, C, HW, yr);
        float *want = DOWNF(REF, yr, n);
        dfree(REF, dr);
        /* the definition, spot-checked */
        assert_true(want[((size_t)(C - 1) * N + N - 1) * HW + HW - 1] == x[n - 1]);
        int n0 = N > 1 ? 1 : 0, nn = N - n0;
        for (int t = 0; t < NT; t++) {
            cx_backend *be = T[t].be;
            float *dx = UPF(be, x, n), *dy = dalloc(be, n * 4), *dz = dalloc(be, n * 4);
            RUN(be, nchw_to_cnhw, dx, N, C, HW, dy);
            RUN(be, cnhw_to_nchw, dy, C, N, HW, n0, nn, dz);
            float *y = DOWNF(be, dy, n), *z = DOWNF(be, dz, (size_t)nn * C * HW);
            if (memcmp(y, want, n * 4))
                fail_msg("%s: nchw_to_cnhw N %d C %d HW %lld", T[t].name, N, C, (long long)HW);
            if (memcmp(z, x + (size_t)n0 * C * HW, (size_t)nn * C * HW * 4))
                fail_msg("%s: cnhw_to_nchw N %d C %d HW %lld", T[t].name, N, C, (long long)HW);
            dfree(be, dx), free(y), free(z);
        }
        free(x), free(want);
    }
}

/* ------------------------------------------------------------- BatchNorm */

static void test_bn_fold(void **state)
{
    static const int Cs[] = {1, 37, 64, 1024};
    double u = ldexp(1.0, -24);
    cx_rng r;
    cx_rng_seed(&r, 5);
    for (size_t s = 0; s < sizeof Cs / sizeof *Cs; s++) {
        int C = Cs[s];
        float *wt = rand_buf(&r, C, 0.5f, 1.5f), *bi = rand_buf(&r, C, -0.5f, 0.5f);
        float *mu = rand_buf(&r, C, -1, 1), *var = rand_buf(&r, C, 0, 3);
        var[0] = 0.0f; /* a dead channel: eps alone */
        float *out[2][3] = {{NULL}};
        for (int t = -1; t < NT; t++) {
            cx_backend *be = t < 0 ? REF : T[t].be;
            float *d[4] = {UPF(be, wt, C), UPF(be, bi, C), UPF(be, mu, C), UPF(be, var, C)};
            float *sc = dalloc(be, C * 4), *sh = dalloc(be, C * 4), *is = dalloc(be, C * 4),
                  *is2 = dalloc(be, C * 4);
            RUN(be, bn_fold, C, d[0], d[1], d[2], d[3], 1e-5f, sc, sh, is);
            RUN(be, bn_fold, C, NULL, NULL, NULL, d[3], 1e-5f, NULL, NULL, is2); /* invstd alone */
            int k = t < 0 ? 0 : 1;
            out[k][0] = DOWNF(be, sc, C);
            out[k][1] = DOWNF(be, sh, C);
            out[k][2] = DOWNF(be, is, C);
            float *i2 = DOWNF(be, is2, C);
            assert_memory_equal(i2, out[k][2], C * 4);
            free(i2);
            for (int i = 0; i < 4; i++)
                dfree(be, d[i]);
            if (t < 0)
                continue;
            /* the square root and the division, then the product, then the
             * difference: a few roundings each */
            for (int c = 0; c < C; c++) {
                double is0 = out[0][2][c], sc0 = out[0][0][c], sh0 = out[0][1][c];
                if (!(fabs(out[1][2][c] - is0) <= 4 * u * fabs(is0)) ||
                    !(fabs(out[1][0][c] - sc0) <= 6 * u * fabs(sc0)) ||
                    !(fabs(out[1][1][c] - sh0) <= 8 * u * (fabs(bi[c]) + fabs(mu[c] * sc0))))
                    fail_msg("%s: bn_fold C %d channel %d", T[t].name, C, c);
            }
            for (int i = 0; i < 3; i++)
                free(out[1][i]);
        }
        for (int c = 0; c < C; c++) /* the definition, in double */
            assert_true(fabs(out[0][2][c] - 1.0 / sqrt((double)var[c] + 1e-5f)) <=
                        2 * u * out[0][2][c]);
        for (int i = 0; i < 3; i++)
            free(out[0][i]);
        free(wt), free(bi), free(mu), free(var);
    }
}

static void test_bn_relu(void **state)
{
    static const int shapes[][2] = {{37, 2 * 13 * 11}, {64, 112 * 112}, {3, 1}};
    cx_rng r;
    cx_rng_seed(&r, 1);
    double u = ldexp(1.0, -24);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int C = shapes[s][0];
        int64_t P = shapes[s][1];
        size_t n = (size_t)(C * P);
        float *x = rand_buf(&r, n, -3, 3), *sc = rand_buf(&r, C, -2, 2),
              *sh = rand_buf(&r, C, -1, 1);
        float *dx = UPF(REF, x, n), *dsc = UPF(REF, sc, C), *dsh = UPF(REF, sh, C),
              *dy = dalloc(REF, n * 4);
        RUN(REF, bn_relu, dx, dy, C, P, dsc, dsh);
        float *y1 = DOWNF(REF, dy, n);
        dfree(REF, dx), dfree(REF, dsc), dfree(REF, dsh);
        for (int t = 0; t < NT; t++) {
            cx_backend *be = T[t].be;
            dx = UPF(be, x, n), dsc = UPF(be, sc, C), dsh = UPF(be, sh, C), dy = dalloc(be, n * 4);
            RUN(be, bn_relu, dx, dy, C, P, dsc, dsh);
            RUN(be, bn_relu, dx, dx, C, P, dsc, dsh); /* in place */
            float *y2 = DOWNF(be, dy, n), *y3 = DOWNF(be, dx, n);
            /* x * sc + sh with or without a fused multiply-add: each result is
             * within u |x sc| + u |x sc + sh| of the exact value, and ReLU keeps
             * distances */
            for (size_t i = 0; i < n; i++) {
                int c = (int)(i / P);
                double xs = fabs((double)x[i] * sc[c]), v = fabs((double)x[i] * sc[c] + sh[c]);
                if (!(fabs((double)y2[i] - y1[i]) <= 2 * u * (xs + v) * (1 + 4 * u)))
                    fail_msg("bn_relu (%s) element %zu: %.9g vs %.9g", T[t].name, i, y2[i], y1[i]);
            }
            assert_memory_equal(y3, y2, n * 4);
            dfree(be, dsc), dfree(be, dsh), free(y2), free(y3);
        }
        free(x), free(sc), free(sh), free(y1);
    }
}

static void test_bn_stats(void **state)
{
    static const int shapes[][2] = {{9, 3 * 6 * 5}, {64, 2 * 56 * 56}, {5, 2}, {7, 3000}};
    cx_rng r;
    cx_rng_seed(&r, 17);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int C = shapes[s][0];
        int64_t P = shapes[s][1];
        size_t n = (size_t)(C * P);
        float *x = rand_buf(&r, n, -2, 2);
        for (size_t i = 0; i < n; i++)
            x[i] += 3.0f; /* an offset the variance must not suffer from */
        float *out[2][2];
        for (int t = -1; t < NT; t++) {
            cx_backend *be = t < 0 ? REF : T[t].be;
            float *dx = UPF(be, x, n), *dm = dalloc(be, C * 4), *dv = dalloc(be, C * 4);
            RUN(be, bn_stats, dx, C, P, dm, dv);
            int k = t >= 0;
            out[k][0] = DOWNF(be, dm, C), out[k][1] = DOWNF(be, dv, C);
            dfree(be, dx);
            if (t < 0)
                continue;
            if (!(rel_l2(out[1][0], out[0][0], C) < 1e-6 && rel_l2(out[1][1], out[0][1], C) < 1e-6))
                fail_msg("%s: bn_stats C %d P %lld: mean %g var %g", T[t].name, C, (long long)P,
                         rel_l2(out[1][0], out[0][0], C), rel_l2(out[1][1], out[0][1], C));
            free(out[1][0]), free(out[1][1]);
        }
        free(out[0][0]), free(out[0][1]), free(x);
    }
}

static void test_bn_running(void **state)
{
    double u = ldexp(1.0, -24);
    cx_rng r;
    cx_rng_seed(&r, 19);
    int C = 133;
    float *mu = rand_buf(&r, C, -1, 1), *var = rand_buf(&r, C, 0, 2);
    float *rm = rand_buf(&r, C, -1, 1), *rv = rand_buf(&r, C, 0.5f, 2);
    const double finite = 0.7, nan_loss = NAN;
    static const int64_t Ps[] = {2, 49, 12544};
    for (size_t s = 0; s < sizeof Ps / sizeof *Ps; s++) {
        float *out[2][2];
        for (int t = -1; t < NT; t++) {
            cx_backend *be = t < 0 ? REF : T[t].be;
            float *dm = UPF(be, mu, C), *dv = UPF(be, var, C), *drm = UPF(be, rm, C),
                  *drv = UPF(be, rv, C);
            double *gate = dup_(be, &nan_loss, sizeof nan_loss);
            RUN(be, bn_running_update, C, Ps[s], 0.1f, dm, dv, drm, drv, gate); /* skipped */
            dfree(be, gate);
            gate = dup_(be, &finite, sizeof finite);
            RUN(be, bn_running_update, C, Ps[s], 0.1f, dm, dv, drm, drv, gate);
            RUN(be, bn_running_update, C, Ps[s], 0.1f, dm, dv, drm, drv, NULL);
            int k = t >= 0;
            out[k][0] = DOWNF(be, drm, C), out[k][1] = DOWNF(be, drv, C);
            dfree(be, dm), dfree(be, dv), dfree(be, gate);
            if (t < 0)
                continue;
            for (int c = 0; c < C; c++)
                for (int i = 0; i < 2; i++) {
                    double want = out[0][i][c];
                    if (!(fabs(out[1][i][c] - want) <= 16 * u * (fabs(want) + 1e-30) + 8 * u))
                        fail_msg("%s: bn_running_update P %lld channel %d: %.9g vs %.9g", T[t].name,
                                 (long long)Ps[s], c, out[1][i][c], want);
                }
            free(out[1][0]), free(out[1][1]);
        }
        /* twice the update of the definition (unbiased variance) */
        for (int c = 0; c < C; c++) {
            double m1 = rm[c], v1 = rv[c], ub = (double)Ps[s] / (Ps[s] - 1);
            for (int i = 0; i < 2; i++) {
                m1 = 0.9 * m1 + 0.1 * mu[c];
                v1 = 0.9 * v1 + 0.1 * var[c] * ub;
            }
            assert_true(fabs(out[0][0][c] - m1) < 1e-6 && fabs(out[0][1][c] - v1) < 1e-5 * v1);
        }
        free(out[0][0]), free(out[0][1]);
    }
    free(mu), free(var), free(rm), free(rv);
}

/* -------------------------------------------------------- convolutions */

/* the n of Winograd's bound where the backend runs this shape so, else 0 */
static int conv_winograd(cx_backend *be, int Cin, int N, int H, int W, int Cout, int k)
{
    return be->ops->conv_winograd ? be->ops->conv_winograd(be, Cin, N, H, W, Cout, k) : 0;
}

static void check_conv(int Cin, int N, int H, int W, int Cout, int k, int s, int pad)
{
    cx_rng r;
    cx_rng_seed(&r, (uint64_t)(Cin * 1000 + H * 10 + k));
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    size_t nx = (size_t)Cin * N * H * W, nw = (size_t)Cout * Cin * k * k,
           ny = (size_t)Cout * N * Ho * Wo;
    float *x = rand_buf(&r, nx, -1, 1), *w = rand_buf(&r, nw, -0.5f, 0.5f);
    float *dx = UPF(REF, x, nx), *dw = UPF(REF, w, nw), *dy = dalloc(REF, ny * 4);
    RUN(REF, conv2d, dx, Cin, N, H, W, dw, Cout, k, s, pad, dy, NULL, 0);
    float *y1 = DOWNF(REF, dy, ny);
    dfree(REF, dx), dfree(REF, dw);
    double *xa = to_abs64(x, nx), *mag = conv_mag(xa, Cin, N, H, W, w, Cout, k, s, pad);
    char what[96];
    snprintf(what, sizeof what, "conv %dx%d s%d p%d Cin %d N %d %dx%d", k, k, s, pad, Cin, N, H, W);
    for (int t = 0; t < NT; t++) {
        cx_backend *be = T[t].be;
        size_t sn = be->ops->conv_scratch(be, Cin, N, H, W, Cout, k, s, pad);
        float *scr = dalloc(be, (sn + 1) * 4);
        dx = UPF(be, x, nx), dw = UPF(be, w, nw), dy = dalloc(be, ny * 4);
        RUN(be, conv2d, dx, Cin, N, H, W, dw, Cout, k, s, pad, dy, scr, sn);
        float *y2 = DOWNF(be, dy, ny);
        int wd = s == 1 && pad == 1 ? conv_winograd(be, Cin, N, H, W, Cout, k) : 0;
        if (wd) { /* held to Winograd's own bound */
            double *mw = wino_mag(xa, Cin, N, H, W, w, Cout);
            check_bound(T[t].name, what, y2, y1, mw, ny, wd, 0);
            free(mw);
        } else {
            check_bound(T[t].name, what, y2, y1, mag, ny,
                        be->ops->gemm_depth(be, Cin * k * k) + k * k, 0);
        }
        dfree(be, dx), dfree(be, dw), dfree(be, scr), free(y2);
    }
    free(x), free(w), free(y1), free(xa), free(mag);
}

static void test_conv(void **state)
{
    check_conv(16, 1, 9, 9, 8, 1, 1, 0);       /* pointwise GEMM */
    check_conv(24, 3, 7, 5, 32, 1, 1, 0);      /* batch > 1 */
    check_conv(12, 2, 8, 9, 32, 3, 1, 1);      /* dense layer conv2 */
    check_conv(3, 2, 23, 20, 16, 7, 2, 3);     /* conv0 */
    check_conv(5, 1, 6, 6, 4, 3, 2, 0);        /* strided, no padding */
    check_conv(128, 2, 14, 14, 32, 3, 1, 1);   /* real block-3 shape */
    check_conv(3, 1, 224, 224, 64, 7, 2, 3);   /* DenseNet-121's conv0 */
    check_conv(128, 1, 56, 56, 32, 3, 1, 1);   /* block 1's conv2 */
    check_conv(224, 1, 56, 56, 128, 1, 1, 0);  /* block 1's last conv1 */
    check_conv(1024, 1, 14, 14, 512, 1, 1, 0); /* transition 3 */
    /* im2col chunking across images: large enough to exceed one chunk */
    check_conv(128, 3, 112, 112, 8, 3, 1, 1);
    /* kn2row ("same" convolutions) split into chunks of images */
    check_conv(8, 10, 56, 56, 32, 3, 1, 1);
    /* Winograd's tiles at odd sizes and rows wider than a block of tiles */
    check_conv(5, 2, 25, 23, 7, 3, 1, 1);
    check_conv(3, 1, 30, 150, 9, 3, 1, 1);
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

/* conv2d_backward against the reference: dw (added to) and dx (overwritten
 * or added to) within the bound of their sums (dw: over the positions, in
 * chunks of images, and the value added to; dx: over k*k*Cout products and
 * the k*k scattered adds of col2im), and within 1e-5 relative L2. */
static void check_conv_backward(int Cin, int N, int H, int W, int Cout, int k, int s, int pad,
                                int accumulate)
{
    cx_rng r;
    cx_rng_seed(&r, (uint64_t)(Cin + N + H + k));
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    size_t nx = (size_t)Cin * N * H * W, nw = (size_t)Cout * Cin * k * k,
           ny = (size_t)Cout * N * Ho * Wo;
    float *x = rand_buf(&r, nx, -1, 1), *w = rand_buf(&r, nw, -1, 1), *gy = rand_buf(&r, ny, -1, 1);
    float *dw0 = rand_buf(&r, nw, -1, 1), *dx0 = rand_buf(&r, nx, -1, 1);
    float *out[2][2];
    double *xa = to_abs64(x, nx), *mdw, *mdx;
    conv_bwd_mag(xa, Cin, N, H, W, w, Cout, k, s, pad, gy, &mdw, &mdx);
    for (size_t i = 0; i < nw; i++)
        mdw[i] += fabs(dw0[i]);
    for (size_t i = 0; accumulate && i < nx; i++)
        mdx[i] += fabs(dx0[i]);
    char what[96];
    snprintf(what, sizeof what, "conv %dx%d/%d p%d Cin %d N %d %dx%d backward acc %d", k, k, s, pad,
             Cin, N, H, W, accumulate);
    for (int t = -1; t < NT; t++) {
        cx_backend *be = t < 0 ? REF : T[t].be;
        size_t sn = be->ops->conv_bwd_scratch(be, Cin, N, H, W, Cout, k, s, pad);
        float *scr = dalloc(be, (sn + 1) * 4);
        float *dx = UPF(be, x, nx), *dw = UPF(be, w, nw), *dgy = UPF(be, gy, ny);
        float *ddw = UPF(be, dw0, nw), *ddx = UPF(be, dx0, nx);
        RUN(be, conv2d_backward, dx, Cin, N, H, W, dw, Cout, k, s, pad, dgy, ddw, ddx, accumulate,
            scr, sn);
        int b = t >= 0;
        out[b][0] = DOWNF(be, ddw, nw), out[b][1] = DOWNF(be, ddx, nx);
        dfree(be, scr), dfree(be, dx), dfree(be, dw), dfree(be, dgy);
        if (t < 0)
            continue;
        int dd = be->ops->gemm_depth(be, N * Ho * Wo) + N + 1;
        int dxd = be->ops->gemm_depth(be, k * k * Cout) + k * k + 1;
        char wdw[128], wdx[128];
        snprintf(wdw, sizeof wdw, "%s dw", what);
        snprintf(wdx, sizeof wdx, "%s dx", what);
        check_bound(T[t].name, wdw, out[1][0], out[0][0], mdw, nw, dd, 0);
        check_bound(T[t].name, wdx, out[1][1], out[0][1], mdx, nx, dxd, 0);
        double ew = rel_l2(out[1][0], out[0][0], nw), ex = rel_l2(out[1][1], out[0][1], nx);
        if (ew > 1e-5 || ex > 1e-5)
            fail_msg("%s: %s: dw rel %g, dx rel %g", T[t].name, what, ew, ex);
        free(out[1][0]), free(out[1][1]);
    }
    free(out[0][0]), free(out[0][1]), free(xa), free(mdw), free(mdx);
    free(x), free(w), free(gy), free(dw0), free(dx0);
}

static void test_conv_backward(void **state)
{
    check_conv_backward(24, 3, 7, 6, 16, 1, 1, 0, 0);
    check_conv_backward(24, 3, 7, 6, 16, 1, 1, 0, 1);
    check_conv_backward(16, 2, 8, 9, 8, 3, 1, 1, 1);
    check_conv_backward(3, 2, 21, 19, 8, 7, 2, 3, 0);
    check_conv_backward(64, 3, 56, 56, 4, 3, 1, 1, 0);  /* chunked im2col */
    check_conv_backward(8, 10, 56, 56, 32, 3, 1, 1, 1); /* kn2row in 2 chunks of images */
    check_conv_backward(6, 2, 9, 7, 5, 5, 1, 2, 0);     /* 5x5 "same" convolution */
    check_conv_backward(3, 2, 64, 48, 16, 7, 2, 3, 0);  /* a stem */
    check_conv_backward(5, 1, 6, 6, 4, 3, 2, 0, 1);     /* strided, no padding */
}

/* The fused pointwise convolution of a BN-ReLU and its backward. */
static void test_conv1x1_bn_relu(void **state)
{
    static const int shapes[][3] = {
        {37, 20, 2 * 9 * 7}, {128, 64, 3136}, {256, 32, 49}, {224, 128, 3136}, {992, 128, 49}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int Cin = shapes[s][0], Cout = shapes[s][1];
        int64_t P = shapes[s][2];
        size_t nx = (size_t)(Cin * P), nw = (size_t)Cout * Cin, ny = (size_t)(Cout * P);
        cx_rng r;
        cx_rng_seed(&r, 50 + s);
        float *x = rand_buf(&r, nx, -2, 2), *w = rand_buf(&r, nw, -1, 1);
        float *sc = rand_buf(&r, Cin, -1.5f, 1.5f), *sh = rand_buf(&r, Cin, -1, 1);
        float *gy = rand_buf(&r, ny, -1, 1);
        float *dw0 = rand_buf(&r, nw, -1, 1), *da0 = rand_buf(&r, nx, -1, 1);
        double *xm = bn_mag64(x, Cin, P, sc, sh);
        double *mag = conv_mag(xm, Cin, 1, 1, (int)P, w, Cout, 1, 1, 0), *mdw, *mda;
        conv_bwd_mag(xm, Cin, 1, 1, (int)P, w, Cout, 1, 1, 0, gy, &mdw, &mda);
        /* the values added to, and the products: (acc + 1) x the sums (dw
         * accumulates in both passes) */
        double *mw[2], *ma[2];
        for (int acc = 0; acc < 2; acc++) {
            mw[acc] = malloc(sizeof(double) * nw);
            ma[acc] = malloc(sizeof(double) * nx);
            for (size_t i = 0; i < nw; i++)
                mw[acc][i] = fabs(dw0[i]) + (acc + 1) * mdw[i];
            for (size_t i = 0; i < nx; i++)
                ma[acc][i] = (acc ? fabs(da0[i]) : 0) + mda[i];
        }
        float *y[2], *dw[2][2], *da[2][2];
        for (int t = -1; t < NT; t++) {
            cx_backend *be = t < 0 ? REF : T[t].be;
            int b = t >= 0;
            float *dx = UPF(be, x, nx), *dwt = UPF(be, w, nw), *dsc = UPF(be, sc, Cin),
                  *dsh = UPF(be, sh, Cin), *dgy = UPF(be, gy, ny), *scr = dalloc(be, nx * 4);
            float *dy = dalloc(be, ny * 4), *ddw = UPF(be, dw0, nw), *dda = UPF(be, da0, nx);
            RUN(be, conv1x1_bn_relu, dx, Cin, P, dsc, dsh, dwt, Cout, dy, scr);
            y[b] = DOWNF(be, dy, ny);
            for (int acc = 0; acc < 2; acc++) {
                RUN(be, conv1x1_bn_relu_backward, dx, Cin, P, dsc, dsh, dwt, Cout, dgy, ddw, dda,
                    acc, scr);
                float *hw = malloc(nw * 4), *ha = malloc(nx * 4);
                be->ops->download(be, hw, ddw, nw * 4);
                be->ops->download(be, ha, dda, nx * 4);
                dw[b][acc] = hw, da[b][acc] = ha;
            }
            dfree(be, dx), dfree(be, dwt), dfree(be, dsc), dfree(be, dsh), dfree(be, dgy);
            dfree(be, scr), dfree(be, ddw), dfree(be, dda);
            if (t < 0)
                continue;
            char what[96];
            snprintf(what, sizeof what, "conv1x1_bn_relu Cin %d Cout %d P %lld", Cin, Cout,
                     (long long)P);
            check_bound(T[t].name, what, y[1], y[0], mag, ny, be->ops->gemm_depth(be, Cin), 1);
            for (int acc = 0; acc < 2; acc++) {
                snprintf(what, sizeof what,
                         "conv1x1_bn_relu_backward Cin %d Cout %d P %lld acc %d dw", Cin, Cout,
                         (long long)P, acc);
                check_bound(T[t].name, what, dw[1][acc], dw[0][acc], mw[acc], nw,
                            be->ops->gemm_depth(be, (int)P) + 1, 1);
                what[strlen(what) - 1] = 'a';
                check_bound(T[t].name, what, da[1][acc], da[0][acc], ma[acc], nx,
                            be->ops->gemm_depth(be, Cout) + 1, 0);
                free(dw[1][acc]), free(da[1][acc]);
            }
            free(y[1]);
        }
        for (int acc = 0; acc < 2; acc++)
            free(dw[0][acc]), free(da[0][acc]), free(mw[acc]), free(ma[acc]);
        free(y[0]), free(xm), free(mag), free(mdw), free(mda);
        free(x), free(w), free(sc), free(sh), free(gy), free(dw0), free(da0);
    }
}

/* A same convolution of a BN-ReLU (DenseNet's norm2 + conv2) and its
 * backward. */
static void test_conv2d_bn_relu(void **state)
{
    static const int shapes[][6] = {/* Cin N H W Cout k */
                                    {37, 2, 9, 7, 20, 3},
                                    {128, 2, 14, 14, 32, 3},
                                    {16, 3, 5, 6, 8, 5},
                                    {128, 1, 56, 56, 32, 3},
                                    {128, 2, 7, 7, 32, 3},
                                    {37, 2, 27, 25, 20, 3}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int Cin = shapes[s][0], N = shapes[s][1], H = shapes[s][2], W = shapes[s][3];
        int Cout = shapes[s][4], k = shapes[s][5], pad = (k - 1) / 2;
        size_t nx = (size_t)Cin * N * H * W, ny = (size_t)Cout * N * H * W,
               nw = (size_t)Cout * Cin * k * k;
        cx_rng r;
        cx_rng_seed(&r, 110 + s);
        float *x = rand_buf(&r, nx, -2, 2), *w = rand_buf(&r, nw, -0.5f, 0.5f);
        float *sc = rand_buf(&r, Cin, -1.5f, 1.5f), *sh = rand_buf(&r, Cin, -1, 1);
        float *gy = rand_buf(&r, ny, -1, 1);
        float *y[2], *dw[2], *da[2];
        /* kn2row: the k*k taps of a K = Cin product added one by one; backward:
         * dw over the P positions, da over the k*k*Cout shifted rows */
        double *xm = bn_mag64(x, Cin, (int64_t)N * H * W, sc, sh);
        double *mag = conv_mag(xm, Cin, N, H, W, w, Cout, k, 1, pad), *mdw, *mda;
        conv_bwd_mag(xm, Cin, N, H, W, w, Cout, k, 1, pad, gy, &mdw, &mda);
        for (int t = -1; t < NT; t++) {
            cx_backend *be = t < 0 ? REF : T[t].be;
            int b = t >= 0;
            size_t sn = be->ops->conv_scratch(be, Cin, N, H, W, Cout, k, 1, pad);
            size_t sb = be->ops->conv_bwd_scratch(be, Cin, N, H, W, Cout, k, 1, pad);
            sn = sn > sb ? sn : sb;
            float *scr = dalloc(be, (sn + 1) * 4), *act = dalloc(be, nx * 4);
            float *dx = UPF(be, x, nx), *dwt = UPF(be, w, nw), *dsc = UPF(be, sc, Cin),
                  *dsh = UPF(be, sh, Cin), *dgy = UPF(be, gy, ny);
            float *dy = dalloc(be, ny * 4), *ddw = dalloc(be, nw * 4), *dda = dalloc(be, nx * 4);
            RUN(be, zero, ddw, nw * 4);
            RUN(be, conv2d_bn_relu, dx, Cin, N, H, W, dsc, dsh, dwt, Cout, k, dy, act, scr, sn);
            RUN(be, conv2d_bn_relu_backward, dx, Cin, N, H, W, dsc, dsh, dwt, Cout, k, dgy, ddw,
                dda, act, scr, sn);
            y[b] = DOWNF(be, dy, ny), dw[b] = DOWNF(be, ddw, nw), da[b] = DOWNF(be, dda, nx);
            dfree(be, scr), dfree(be, act), dfree(be, dx), dfree(be, dwt), dfree(be, dsc);
            dfree(be, dsh), dfree(be, dgy);
            if (t < 0)
                continue;
            char what[96];
            snprintf(what, sizeof what, "conv2d_bn_relu %dx%d Cin %d N %d %dx%d y", k, k, Cin, N, H,
                     W);
            int wd = conv_winograd(be, Cin, N, H, W, Cout, k);
            if (wd) {
                double *mw = wino_mag(xm, Cin, N, H, W, w, Cout);
                strcat(what, " (winograd)");
                check_bound(T[t].name, what, y[1], y[0], mw, ny, wd, 1);
                what[strlen(what) - strlen(" (winograd)")] = 0;
                free(mw);
            } else {
                check_bound(T[t].name, what, y[1], y[0], mag, ny,
                            be->ops->gemm_depth(be, Cin) + k * k, 1);
            }
            what[strlen(what) - 1] = 0;
            strcat(what, "dw");
            check_bound(T[t].name, what, dw[1], dw[0], mdw, nw,
                        be->ops->gemm_depth(be, N * H * W) + 1, 1);
            what[strlen(what) - 2] = 0;
            strcat(what, "da");
            check_bound(T[t].name, what, da[1], da[0], mda, nx,
                        be->ops->gemm_depth(be, k * k * Cout), 0);
            free(y[1]), free(dw[1]), free(da[1]);
        }
        free(y[0]), free(dw[0]), free(da[0]), free(xm), free(mag), free(mdw), free(mda);
        free(x), free(w), free(sc), free(sh), free(gy);
    }
}

/* ------------------------------------------------- BatchNorm backward */

static void test_bn_relu_backward(void **state)
{
    static const int shapes[][2] = {{9, 3 * 6 * 5}, {64, 2 * 112 * 112}, {1024, 2 * 49}, {3, 7}};
    cx_rng r;
    cx_rng_seed(&r, 17);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int C = shapes[s][0];
        int64_t P = shapes[s][1];
        size_t n = (size_t)(C * P);
        float *x = rand_buf(&r, n, -2, 2), *gy = rand_buf(&r, n, -1, 1);
        float *g = rand_buf(&r, C, 0.5f, 1.5f), *b = rand_buf(&r, C, -0.3f, 0.3f);
        float *mu = malloc(C * 4), *var = malloc(C * 4), *is = malloc(C * 4);
        for (int c = 0; c < C; c++) { /* the batch statistics, in double */
            double m = 0, v = 0;
            for (int64_t p = 0; p < P; p++)
                m += x[c * P + p];
            m /= P;
            for (int64_t p = 0; p < P; p++)
                v += (x[c * P + p] - m) * (x[c * P + p] - m);
            mu[c] = (float)m;
            var[c] = (float)(v / P);
            is[c] = 1.0f / sqrtf(var[c] + 1e-5f);
        }
        float *dg0 = rand_buf(&r, C, -1, 1), *db0 = rand_buf(&r, C, -1, 1),
              *dxa = rand_buf(&r, n, -1, 1);
        float *out[2][4];
        for (int t = -1; t < NT; t++) {
            cx_backend *be = t < 0 ? REF : T[t].be;
            int k = t >= 0;
            float *dx = UPF(be, x, n), *dgy = UPF(be, gy, n), *dgm = UPF(be, g, C),
                  *dbt = UPF(be, b, C), *dmu = UPF(be, mu, C), *dis = UPF(be, is, C);
            float *ddg = UPF(be, dg0, C), *ddb = UPF(be, db0, C), *ddx = dalloc(be, n * 4),
                  *ddx2 = UPF(be, dxa, n);
            RUN(be, bn_relu_backward, dx, dgy, C, P, dgm, dbt, dmu, dis, ddg, ddb, ddx, 0);
            RUN(be, bn_relu_backward, dx, dgy, C, P, dgm, dbt, dmu, dis, ddg, ddb, ddx2, 1);
            RUN(be, bn_relu_backward, dx, dgy, C, P, dgm, dbt, dmu, dis, ddg, ddb, dgy,
                0); /* dx = dy */
            out[k][0] = DOWNF(be, ddx, n), out[k][1] = DOWNF(be, ddg, C);
            out[k][2] = DOWNF(be, ddb, C), out[k][3] = DOWNF(be, ddx2, n);
            float *alias = DOWNF(be, dgy, n);
            assert_memory_equal(alias, out[k][0], n * 4);
            free(alias);
            dfree(be, dx), dfree(be, dgm), dfree(be, dbt), dfree(be, dmu), dfree(be, dis);
            if (t < 0)
                continue;
            double e[4] = {rel_l2(out[1][0], out[0][0], n), rel_l2(out[1][1], out[0][1], C),
                           rel_l2(out[1][2], out[0][2], C), rel_l2(out[1][3], out[0][3], n)};
            if (!(e[0] < 1e-5 && e[1] < 1e-5 && e[2] < 1e-5 && e[3] < 1e-5))
                fail_msg("%s: bn_relu_backward C %d P %lld: dx %g dgamma %g dbeta %g dx+ %g",
                         T[t].name, C, (long long)P, e[0], e[1], e[2], e[3]);
            for (int i = 0; i < 4; i++)
                free(out[1][i]);
        }
        for (int i = 0; i < 4; i++)
            free(out[0][i]);
        free(x), free(gy), free(g), free(b), free(mu), free(var), free(is);
        free(dg0), free(db0), free(dxa);
    }
}

/* BN-ReLU's backward in the deferred form (dense blocks): the op, the
 * per-channel terms (bn_deferred_terms) and bn_backward_finish must equal
 * the fused backward followed by bn_relu_backward (both on the reference).
 * Shapes cover tails, A read in place (few panels), A packed (many panels),
 * a K beyond one GEMM chunk (Cout = 600) and DenseNet's block 1 and 4. */
static void test_bn_backward_deferred(void **state)
{
    static const int shapes[][3] = {{37, 20, 2 * 9 * 7}, {128, 64, 3136}, {256, 32, 49},
                                    {20, 24, 1100},      {40, 600, 130},  {224, 128, 2 * 3136},
                                    {992, 128, 2 * 49}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int Cin = shapes[s][0], Cout = shapes[s][1];
        int64_t P = shapes[s][2];
        size_t nx = (size_t)Cin * P, nw = (size_t)Cout * Cin, ny = (size_t)Cout * P;
        cx_rng r;
        cx_rng_seed(&r, 70 + s);
        float *x = rand_buf(&r, nx, -2, 2.5f), *w = rand_buf(&r, nw, -1, 1);
        float *gy = rand_buf(&r, ny, -1, 1);
        float *gamma = rand_buf(&r, Cin, 0.5f, 1.5f), *beta = rand_buf(&r, Cin, -0.5f, 0.5f);
        float *mean = rand_buf(&r, Cin, -0.3f, 0.6f), *invstd = rand_buf(&r, Cin, 0.5f, 2);
        float *sc = malloc(Cin * 4), *sh = malloc(Cin * 4);
        for (int c = 0; c < Cin; c++) {
            sc[c] = gamma[c] * invstd[c];
            sh[c] = beta[c] - mean[c] * sc[c];
        }
        float *dx0 = rand_buf(&r, nx, -1, 1);
        float *pa0 = rand_buf(&r, Cin, -0.1f, 0.1f), *pb0 = rand_buf(&r, Cin, -0.1f, 0.1f);
        /* expected: fused backward to da, then bn_relu_backward adding to dx */
        float *want[4]; /* dw, dgamma, dbeta, dx */
        {
            cx_backend *be = REF;
            float *dx = UPF(be, x, nx), *dwt = UPF(be, w, nw), *dgy = UPF(be, gy, ny);
            float *dsc = UPF(be, sc, Cin), *dsh = UPF(be, sh, Cin), *dg = UPF(be, gamma, Cin),
                  *db = UPF(be, beta, Cin), *dmu = UPF(be, mean, Cin), *dis = UPF(be, invstd, Cin);
            float *da = dalloc(be, nx * 4), *ddx = UPF(be, dx0, nx), *scr = dalloc(be, nx * 4);
            float *ddw = dalloc(be, nw * 4), *ddg = dalloc(be, Cin * 4), *ddb = dalloc(be, Cin * 4);
            RUN(be, zero, ddw, nw * 4);
            RUN(be, zero, ddg, Cin * 4);
            RUN(be, zero, ddb, Cin * 4);
            RUN(be, conv1x1_bn_relu_backward, dx, Cin, P, dsc, dsh, dwt, Cout, dgy, ddw, da, 0,
                scr);
            RUN(be, bn_relu_backward, dx, da, Cin, P, dg, db, dmu, dis, ddg, ddb, ddx, 1);
            want[0] = DOWNF(be, ddw, nw), want[1] = DOWNF(be, ddg, Cin);
            want[2] = DOWNF(be, ddb, Cin), want[3] = DOWNF(be, ddx, nx);
            /* the deferred terms as the reference leaves them, finished in dx */
            float *dx1 = want[3];
            for (int c = 0; c < Cin; c++) /* pa0, pb0 are another reader's terms */
                for (int64_t p = 0; p < P; p++)
                    dx1[c * P + p] += pa0[c] + pb0[c] * ((x[c * P + p] - mean[c]) * invstd[c]);
            dfree(be, dx), dfree(be, dwt), dfree(be, dgy), dfree(be, dsc), dfree(be, dsh);
            dfree(be, dg), dfree(be, db), dfree(be, dmu), dfree(be, dis), dfree(be, da);
            dfree(be, scr);
        }
        for (int t = -1; t < NT; t++) {
            cx_backend *be = t < 0 ? REF : T[t].be;
            float *dx = UPF(be, x, nx), *dwt = UPF(be, w, nw), *dgy = UPF(be, gy, ny);
            float *dsc = UPF(be, sc, Cin), *dsh = UPF(be, sh, Cin), *dmu = UPF(be, mean, Cin),
                  *dis = UPF(be, invstd, Cin), *ddx = UPF(be, dx0, nx), *scr = dalloc(be, nx * 4);
            float *ddw = dalloc(be, nw * 4), *ddg = dalloc(be, Cin * 4), *ddb = dalloc(be, Cin * 4);
            float *pa = UPF(be, pa0, Cin), *pb = UPF(be, pb0, Cin);
            RUN(be, zero, ddw, nw * 4);
            RUN(be, zero, ddg, Cin * 4);
            RUN(be, zero, ddb, Cin * 4);
            RUN(be, conv1x1_bn_relu_backward_deferred, dx, Cin, P, dsc, dsh, dmu, dis, dwt, Cout,
                dgy, ddw, ddg, ddb, ddx, scr);
            RUN(be, bn_deferred_terms, Cin, P, dsc, ddg, ddb, pa, pb);
            RUN(be, bn_backward_finish, dx, Cin, P, dmu, dis, pa, pb, ddx);
            float *got[4] = {DOWNF(be, ddw, nw), DOWNF(be, ddg, Cin), DOWNF(be, ddb, Cin),
                             DOWNF(be, ddx, nx)};
            size_t cnt[4] = {nw, Cin, Cin, nx};
            for (int i = 0; i < 4; i++) {
                double e = rel_err(got[i], want[i], cnt[i]);
                if (!(e < 1e-5))
                    fail_msg("deferred BN backward (%s) Cin %d Cout %d P %d: %s rel err %g",
                             t < 0 ? "reference" : T[t].name, Cin, Cout, (int)P,
                             (const char *[]){"dw", "dgamma", "dbeta", "dx"}[i], e);
                free(got[i]);
            }
            dfree(be, dx), dfree(be, dwt), dfree(be, dgy), dfree(be, dsc), dfree(be, dsh);
            dfree(be, dmu), dfree(be, dis), dfree(be, scr), dfree(be, pa), dfree(be, pb);
        }
        for (int i = 0; i < 4; i++)
            free(want[i]);
        free(x), free(w), free(gy), free(gamma), free(beta), free(mean), free(invstd);
        free(sc), free(sh), free(dx0), free(pa0), free(pb0);
    }
}

/* ----------------------------------------------------- pooling, linear */

static void run_maxpool(cx_backend *be, const float *x, int C, int N, int H, int W, int k, int s,
                        int pad, const float *g, float **y, float **dx)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    size_t nx = (size_t)C * N * H * W, ny = (size_t)C * N * Ho * Wo;
    float *d = UPF(be, x, nx), *dy = dalloc(be, ny * 4);
    RUN(be, maxpool, d, C, N, H, W, k, s, pad, dy);
    *y = DOWNF(be, dy, ny);
    if (g) {
        float *dg = UPF(be, g, ny), *ddx = dalloc(be, nx * 4);
        RUN(be, maxpool_backward, d, C, N, H, W, k, s, pad, dg, ddx);
        *dx = DOWNF(be, ddx, nx);
        dfree(be, dg);
    }
    dfree(be, d);
}

static void test_maxpool(void **state)
{
    cx_rng r;
    cx_rng_seed(&r, 7);
    /* the stem's pooling at DenseNet-121's size; all-negative values: the
     * padding must never win */
    {
        int C = 64, N = 1, H = 112, W = 112;
        size_t nx = (size_t)C * N * H * W;
        float *x = rand_buf(&r, nx, -2, 2), *neg = malloc(nx * 4), *y0, *y1;
        for (size_t i = 0; i < nx; i++)
            neg[i] = -1.0f - (float)(i % 1000);
        run_maxpool(REF, x, C, N, H, W, 3, 2, 1, NULL, &y0, NULL);
        size_t ny = (size_t)C * N * 56 * 56;
        for (int t = 0; t < NT; t++) {
            run_maxpool(T[t].be, x, C, N, H, W, 3, 2, 1, NULL, &y1, NULL);
            if (memcmp(y0, y1, ny * 4))
                fail_msg("%s: maxpool 3x3/2 of 64x112x112", T[t].name);
            free(y1);
            run_maxpool(T[t].be, neg, C, N, H, W, 3, 2, 1, NULL, &y1, NULL);
            for (size_t i = 0; i < ny; i++)
                assert_true(y1[i] < 0);
            free(y1);
        }
        free(x), free(neg), free(y0);
    }
    /* assorted widths (1 to 113), windows and strides, NaN propagation;
     * backward bit for bit: with ties (values on a coarse grid: the first
     * maximum wins) and a second NaN (the last NaN wins) */
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
            float *z0, *z1, *d0, *d1;
            run_maxpool(REF, xx, 2, 2, Hd, Wd, k, st, pd, NULL, &z0, NULL);
            for (int t = 0; t < NT; t++) {
                run_maxpool(T[t].be, xx, 2, 2, Hd, Wd, k, st, pd, NULL, &z1, NULL);
                for (size_t i = 0; i < nyy; i++)
                    if (!(z0[i] == z1[i] || (isnan(z0[i]) && isnan(z1[i]))))
                        fail_msg("%s: maxpool k%d s%d p%d W %d: element %zu %g vs %g", T[t].name, k,
                                 st, pd, Wd, i, z1[i], z0[i]);
                free(z1);
            }
            free(z0);
            for (size_t i = 0; i < nxx; i++)
                if (i != nxx / 3)
                    xx[i] = roundf(xx[i] * 2.0f) / 2.0f;
            xx[nxx / 3 + 1] = NAN;
            float *g = rand_buf(&r, nyy, -1, 1);
            run_maxpool(REF, xx, 2, 2, Hd, Wd, k, st, pd, g, &z0, &d0);
            for (int t = 0; t < NT; t++) {
                run_maxpool(T[t].be, xx, 2, 2, Hd, Wd, k, st, pd, g, &z1, &d1);
                if (memcmp(d0, d1, nxx * 4))
                    fail_msg("%s: maxpool backward k%d s%d p%d W %d differs from the reference",
                             T[t].name, k, st, pd, Wd);
                free(z1), free(d1);
            }
            free(xx), free(z0), free(d0), free(g);
        }
}

/* average pool, global average pool and their backward */
static void test_pools(void **state)
{
    static const int shapes[][4] = {
        {5, 3, 13, 10}, {128, 1, 56, 56}, {1024, 2, 7, 7}, {3, 2, 1, 3}};
    cx_rng r;
    cx_rng_seed(&r, 8);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int C = shapes[s][0], N = shapes[s][1], H = shapes[s][2], W = shapes[s][3];
        size_t nx = (size_t)C * N * H * W, na = (size_t)C * N * (H / 2) * (W / 2),
               ng = (size_t)C * N;
        float *x = rand_buf(&r, nx, -2, 2), *ga = rand_buf(&r, na ? na : 1, -1, 1),
              *gg = rand_buf(&r, ng, -1, 1);
        float *o[2][4];
        for (int t = -1; t < NT; t++) {
            cx_backend *be = t < 0 ? REF : T[t].be;
            int k = t >= 0;
            float *dx = UPF(be, x, nx), *da = dalloc(be, na * 4 + 4), *dg = dalloc(be, ng * 4);
            float *dga = UPF(be, ga, na ? na : 1), *dgg = UPF(be, gg, ng);
            float *bx = dalloc(be, nx * 4), *bg = dalloc(be, nx * 4);
            RUN(be, avgpool, dx, C, N, H, W, 2, da);
            RUN(be, gap, dx, C, N, H * W, dg);
            RUN(be, avgpool_backward, dga, C, N, H, W, 2, bx);
            RUN(be, gap_backward, dgg, C, N, H * W, bg);
            o[k][0] = DOWNF(be, da, na), o[k][1] = DOWNF(be, dg, ng);
            o[k][2] = DOWNF(be, bx, nx), o[k][3] = DOWNF(be, bg, nx);
            dfree(be, dx), dfree(be, dga), dfree(be, dgg);
            if (t < 0)
                continue;
            if (!(rel_err(o[1][0], o[0][0], na) < 1e-6 && rel_err(o[1][1], o[0][1], ng) < 1e-6 &&
                  rel_l2(o[1][2], o[0][2], nx) < 1e-6 && rel_l2(o[1][3], o[0][3], nx) < 1e-6))
                fail_msg("%s: pools C %d N %d %dx%d: avg %g gap %g avg bwd %g gap bwd %g",
                         T[t].name, C, N, H, W, rel_err(o[1][0], o[0][0], na),
                         rel_err(o[1][1], o[0][1], ng), rel_l2(o[1][2], o[0][2], nx),
                         rel_l2(o[1][3], o[0][3], nx));
            for (int i = 0; i < 4; i++)
                free(o[1][i]);
        }
        for (int i = 0; i < 4; i++)
            free(o[0][i]);
        free(x), free(ga), free(gg);
    }
}

static void test_linear(void **state)
{
    static const int shapes[][3] = {{3, 1024, 14}, {16, 1024, 1}, {3, 20, 14}, {1, 7, 3}};
    cx_rng r;
    cx_rng_seed(&r, 9);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int N = shapes[s][0], F = shapes[s][1], M = shapes[s][2];
        float *x = rand_buf(&r, (size_t)N * F, 0, 2), *w = rand_buf(&r, (size_t)M * F, -0.1f, 0.1f),
              *b = rand_buf(&r, M, -1, 1), *gy = rand_buf(&r, (size_t)N * M, -1, 1);
        float *o[2][4];
        for (int t = -1; t < NT; t++) {
            cx_backend *be = t < 0 ? REF : T[t].be;
            int k = t >= 0;
            float *dx = UPF(be, x, N * F), *dw = UPF(be, w, M * F), *db = UPF(be, b, M),
                  *dgy = UPF(be, gy, N * M), *dy = dalloc(be, N * M * 4);
            float *ddw = dalloc(be, M * F * 4), *ddb = dalloc(be, M * 4),
                  *ddx = dalloc(be, N * F * 4);
            RUN(be, zero, ddw, M * F * 4);
            RUN(be, zero, ddb, M * 4);
            RUN(be, linear, dx, N, F, dw, db, M, dy);
            RUN(be, linear_backward, dx, N, F, dw, M, dgy, ddw, ddb, ddx);
            o[k][0] = DOWNF(be, dy, N * M), o[k][1] = DOWNF(be, ddw, M * F);
            o[k][2] = DOWNF(be, ddb, M), o[k][3] = DOWNF(be, ddx, N * F);
            dfree(be, dx), dfree(be, dw), dfree(be, db), dfree(be, dgy);
            if (t < 0)
                continue;
            if (!(rel_err(o[1][0], o[0][0], (size_t)N * M) < 1e-5 &&
                  rel_l2(o[1][1], o[0][1], (size_t)M * F) < 1e-6 &&
                  rel_l2(o[1][2], o[0][2], M) < 1e-6 &&
                  rel_l2(o[1][3], o[0][3], (size_t)N * F) < 1e-6))
                fail_msg("%s: linear N %d F %d M %d", T[t].name, N, F, M);
            for (int i = 0; i < 4; i++)
                free(o[1][i]);
        }
        for (int i = 0; i < 4; i++)
            free(o[0][i]);
        free(x), free(w), free(b), free(gy);
    }
}

/* ----------------------------------------------------------------- loss */

static void test_bce_loss(void **state)
{
    static const int shapes[][2] = {{16, 14}, {3, 1}, {2, 5}};
    double u = ldexp(1.0, -24);
    cx_rng r;
    cx_rng_seed(&r, 21);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int n = shapes[s][0], K = shapes[s][1];
        float *z = rand_buf(&r, (size_t)n * K, -8, 8), *y = malloc(sizeof(float) * n * K);
        float *wp = rand_buf(&r, K, 0.2f, 2), *wn = rand_buf(&r, K, 0.2f, 2);
        for (int i = 0; i < n * K; i++)
            y[i] = i % 3 == 2 ? 0.25f : (float)(cx_rng_uniform(&r) < 0.4);
        z[0] = 90.0f; /* far out: softplus must not overflow */
        double want[2];
        float *dwant[2];
        for (int t = -1; t < NT; t++) {
            cx_backend *be = t < 0 ? REF : T[t].be;
            for (int wtd = 0; wtd < 2; wtd++) {
                float *dz = UPF(be, z, n * K), *dy = UPF(be, y, n * K), *dwp = UPF(be, wp, K),
                      *dwn = UPF(be, wn, K), *dd = dalloc(be, sizeof(float) * n * K);
                double *dl = dalloc(be, sizeof(double)), loss;
                RUN(be, bce_loss, dz, dy, n, K, wtd ? dwp : NULL, wtd ? dwn : NULL, dl, dd);
                be->ops->download(be, &loss, dl, sizeof loss);
                dfree(be, dl);
                float *d = DOWNF(be, dd, n * K);
                dfree(be, dz), dfree(be, dy), dfree(be, dwp), dfree(be, dwn);
                if (t < 0) {
                    want[wtd] = loss;
                    dwant[wtd] = d;
                    continue;
                }
                /* every term is >= 0: the sum of n K of them in float at worst */
                if (!(fabs(loss - want[wtd]) <= gamma_n(n * K + 8) * want[wtd]))
                    fail_msg("%s: bce_loss n %d K %d: %.9g vs %.9g", T[t].name, n, K, loss,
                             want[wtd]);
                for (int i = 0; i < n * K; i++) {
                    double sw = wtd ? wp[i % K] + wn[i % K] : 2.0;
                    if (!(fabs(d[i] - dwant[wtd][i]) <= 16 * u * sw / n))
                        fail_msg("%s: bce_loss gradient n %d K %d element %d: %.9g vs %.9g",
                                 T[t].name, n, K, i, d[i], dwant[wtd][i]);
                }
                free(d);
            }
        }
        /* against cx_bce_loss, the public function */
        float *d2 = malloc(sizeof(float) * n * K);
        assert_true(cx_bce_loss(z, y, n, K, wp, wn, d2) == want[1]);
        assert_memory_equal(d2, dwant[1], sizeof(float) * n * K);
        free(d2), free(dwant[0]), free(dwant[1]);
        free(z), free(y), free(wp), free(wn);
    }
}

/* ------------------------------------------------------------ optimiser */

static void test_optimizer(void **state)
{
    cx_rng r;
    cx_rng_seed(&r, 23);
    double u = ldexp(1.0, -24);
    size_t n = 300007;
    float *w = rand_buf(&r, n, -1, 1), *g = rand_buf(&r, n, -1e-2f, 1e-2f);
    float *m = rand_buf(&r, n, -1e-3f, 1e-3f), *v = rand_buf(&r, n, 0, 1e-5f);
    cx_adam_hyper h = {1e-3f / 0.1f, 0.0316f, 0.9f, 0.999f, 1e-8f, 1e-4f};
    float *o[2][3];
    for (int t = -1; t < NT; t++) {
        cx_backend *be = t < 0 ? REF : T[t].be;
        int k = t >= 0;
        float *dw = UPF(be, w, n), *dg = UPF(be, g, n), *dm = UPF(be, m, n), *dv = UPF(be, v, n);
        int64_t *flag = dalloc(be, sizeof(int64_t)), first;
        /* all finite: -1, and the step applies */
        RUN(be, find_nonfinite, dg, (int64_t)n, flag);
        be->ops->download(be, &first, flag, sizeof first);
        assert_int_equal(first, -1);
        RUN(be, adam, dw, dg, dm, dv, (int64_t)n, &h, flag);
        o[k][0] = DOWNF(be, dw, n), o[k][1] = DOWNF(be, dm, n), o[k][2] = DOWNF(be, dv, n);
        /* a NaN and an inf: the first found, the step gated off */
        float bad[2] = {INFINITY, NAN};
        be->ops->upload(be, dg + 77777, &bad[1], 4);
        be->ops->upload(be, dg + 200000, &bad[0], 4);
        dw = UPF(be, w, n), dm = UPF(be, m, n), dv = UPF(be, v, n);
        RUN(be, find_nonfinite, dg, (int64_t)n, flag);
        be->ops->download(be, &first, flag, sizeof first);
        assert_int_equal(first, 77777);
        RUN(be, adam, dw, dg, dm, dv, (int64_t)n, &h, flag);
        float *w2 = DOWNF(be, dw, n), *m2 = DOWNF(be, dm, n), *v2 = DOWNF(be, dv, n);
        assert_memory_equal(w2, w, n * 4);
        assert_memory_equal(m2, m, n * 4);
        assert_memory_equal(v2, v, n * 4);
        free(w2), free(m2), free(v2);
        dfree(be, dg), dfree(be, flag);
        if (t < 0)
            continue;
        /* a handful of roundings per value */
        for (size_t i = 0; i < n; i++) {
            double dm0 = fabs(o[0][1][i]), dv0 = fabs(o[0][2][i]),
                   up = fabs((double)o[0][0][i] - w[i]);
            if (!(fabs(o[1][1][i] - o[0][1][i]) <= 4 * u * (dm0 + fabs(g[i]))) ||
                !(fabs(o[1][2][i] - o[0][2][i]) <= 6 * u * (dv0 + (double)g[i] * g[i])) ||
                !(fabs(o[1][0][i] - o[0][0][i]) <= u * fabs(o[0][0][i]) + 16 * u * up))
                fail_msg("%s: adam element %zu: w %.9g vs %.9g", T[t].name, i, o[1][0][i],
                         o[0][0][i]);
        }
        for (int i = 0; i < 3; i++)
            free(o[1][i]);
    }
    for (int i = 0; i < 3; i++)
        free(o[0][i]);
    free(w), free(g), free(m), free(v);
}

/* ----------------------------------------------------------------- bf16 */

/* Packing into the reference's layout (kernels/bf16_layout.h) is compared
 * bit for bit with the reference where a backend uses that layout (its
 * sizes agree); convolutions always by their fp32 results. */
static int same_layout(cx_backend *be, int K, int64_t P, int Cout, int k)
{
    return be->ops->bf16_act_size(be, K, P) == REF->ops->bf16_act_size(REF, K, P) &&
           be->ops->bf16_weights_size(be, Cout, K, k) ==
               REF->ops->bf16_weights_size(REF, Cout, K, k);
}

static void test_bf16_pack(void **state)
{
    static const int Ks[] = {1, 2, 33, 64, 70};
    static const int64_t Ps[] = {1, 15, 49, 100, 3141};
    cx_rng r;
    cx_rng_seed(&r, 7);
    for (size_t a = 0; a < sizeof Ks / sizeof *Ks; a++)
        for (size_t b = 0; b < sizeof Ps / sizeof *Ps; b++) {
            int K = Ks[a];
            int64_t P = Ps[b];
            size_t n = REF->ops->bf16_act_size(REF, K, P);
            float *x = rand_buf(&r, (size_t)(K * P), -3, 3);
            float *sc = rand_buf(&r, K, -2, 2), *sh = rand_buf(&r, K, -1, 1);
            for (int bn = 0; bn < 2; bn++) {
                uint16_t *o1 = malloc(n * 2);
                memset(o1, 0xAB, n * 2);
                uint16_t *d = dup_(REF, o1, n * 2);
                float *dx = UPF(REF, x, K * P), *dsc = UPF(REF, sc, K), *dsh = UPF(REF, sh, K);
                RUN(REF, pack_bf16, dx, K, P, bn ? dsc : NULL, dsh, d);
                free(o1);
                o1 = down(REF, d, n * 2);
                dfree(REF, dx), dfree(REF, dsc), dfree(REF, dsh);
                for (int t = 0; t < NT; t++) {
                    cx_backend *be = T[t].be;
                    if (!same_layout(be, K, P, 1, 1))
                        continue;
                    uint16_t *o2 = malloc(n * 2);
                    memset(o2, 0xCD, n * 2);
                    d = dup_(be, o2, n * 2);
                    free(o2);
                    dx = UPF(be, x, K * P), dsc = UPF(be, sc, K), dsh = UPF(be, sh, K);
                    RUN(be, pack_bf16, dx, K, P, bn ? dsc : NULL, dsh, d);
                    o2 = down(be, d, n * 2);
                    if (memcmp(o1, o2, n * 2)) /* padding included */
                        fail_msg("%s: pack_bf16 K %d P %lld bn %d", T[t].name, K, (long long)P, bn);
                    free(o2), dfree(be, dx), dfree(be, dsc), dfree(be, dsh);
                }
                free(o1);
            }
            free(x), free(sc), free(sh);
        }
}

/* fp32 results of a bf16 convolution: plain packed input, grid packed
 * input, and packed weights, all made by the backend itself */
static void bf16_conv_on(cx_backend *be, const float *x, const float *sc, const float *sh,
                         const float *w, int Cin, int Cout, int N, int H, int W, int k, float **yp,
                         float **yg, uint16_t **wpack, uint16_t **gpack)
{
    int64_t P = (int64_t)N * H * W;
    size_t nx = be->ops->bf16_act_size(be, Cin, P),
           ng = be->ops->bf16_grid_size(be, Cin, N, H, W, k);
    size_t nw = be->ops->bf16_weights_size(be, Cout, Cin, k), ny = (size_t)Cout * P;
    float *dx = UPF(be, x, Cin * P), *dw = UPF(be, w, (size_t)Cout * Cin * k * k);
    float *dsc = sc ? UPF(be, sc, Cin) : NULL, *dsh = sc ? UPF(be, sh, Cin) : NULL;
    uint16_t *px = dalloc(be, nx * 2), *pg = dalloc(be, ng * 2), *pw = dalloc(be, nw * 2);
    size_t s1 = be->ops->conv_bf16_scratch(be, Cin, N, H, W, Cout, k);
    size_t s2 = be->ops->conv_grid_bf16_scratch(be, Cin, N, H, W, Cout, k);
    float *scr = dalloc(be, 4 * (s1 > s2 ? s1 : s2) + 64);
    float *d1 = dalloc(be, ny * 4), *d2 = dalloc(be, ny * 4);
    RUN(be, pack_bf16_weights, dw, Cout, Cin, k, pw);
    RUN(be, pack_bf16, dx, Cin, P, dsc, dsh, px);
    RUN(be, pack_bf16_grid, dx, Cin, N, H, W, dsc, dsh, k, pg);
    RUN(be, conv2d_bf16, px, Cin, N, H, W, pw, Cout, k, d1, scr, s1);
    RUN(be, conv2d_grid_bf16, pg, Cin, N, H, W, pw, Cout, k, d2, scr, s2);
    *yp = DOWNF(be, d1, ny);
    *yg = DOWNF(be, d2, ny);
    *wpack = down(be, pw, nw * 2);
    *gpack = down(be, pg, ng * 2);
    dfree(be, dx), dfree(be, dw), dfree(be, px), dfree(be, scr);
    if (sc)
        dfree(be, dsc), dfree(be, dsh);
}

/* The bf16 convolutions against the reference (the same products, summed
 * in another order in fp32: 2e-6 of the largest output), the grid form
 * equal bit for bit to the plain one, and both within bf16 rounding of the
 * fp32 convolution. */
static void bf16_case(int Cin, int Cout, int N, int H, int W, int k, int bn, uint64_t seed)
{
    cx_rng r;
    cx_rng_seed(&r, seed);
    int64_t P = (int64_t)N * H * W;
    float *x = rand_buf(&r, (size_t)(Cin * P), -1, 2);
    float *sc = rand_buf(&r, Cin, -2, 2), *sh = rand_buf(&r, Cin, -1, 1);
    float *w = rand_buf(&r, (size_t)Cout * Cin * k * k, -0.5f, 0.5f);
    size_t ny = (size_t)Cout * P;
    float *y0, *g0;
    uint16_t *w0, *p0;
    bf16_conv_on(REF, x, bn ? sc : NULL, sh, w, Cin, Cout, N, H, W, k, &y0, &g0, &w0, &p0);
    assert_memory_equal(g0, y0, ny * 4);
    { /* within bf16 rounding of the fp32 convolution (of the BN-ReLU) */
        float *dx = UPF(REF, x, Cin * P), *dw = UPF(REF, w, (size_t)Cout * Cin * k * k),
              *dy = dalloc(REF, ny * 4), *dsc = UPF(REF, sc, Cin), *dsh = UPF(REF, sh, Cin);
        if (bn)
            RUN(REF, bn_relu, dx, dx, Cin, P, dsc, dsh);
        RUN(REF, conv2d, dx, Cin, N, H, W, dw, Cout, k, 1, (k - 1) / 2, dy, NULL, 0);
        dfree(REF, dsc), dfree(REF, dsh);
        float *y32 = DOWNF(REF, dy, ny);
        double e = rel_max(y0, y32, ny);
        if (!(e < 2e-2))
            fail_msg("conv bf16 vs fp32 %.3g", e);
        free(y32), dfree(REF, dx), dfree(REF, dw);
    }
    for (int t = 0; t < NT; t++) {
        cx_backend *be = T[t].be;
        float *y1, *g1;
        uint16_t *w1, *p1;
        bf16_conv_on(be, x, bn ? sc : NULL, sh, w, Cin, Cout, N, H, W, k, &y1, &g1, &w1, &p1);
        double e = rel_max(y1, y0, ny), eg = rel_max(g1, y0, ny);
        if (!(e < 2e-6) || !(eg < 2e-6))
            fail_msg("%s (bf16 %s): conv bf16 Cin %d Cout %d N %d %dx%d k %d: %.3g, grid %.3g",
                     T[t].name, be->ops->bf16_kernel(be), Cin, Cout, N, H, W, k, e, eg);
        if (memcmp(g1, y1, ny * 4))
            fail_msg("%s: grid convolution differs from the plain one", T[t].name);
        if (same_layout(be, Cin, P, Cout, k)) {
            size_t nw = REF->ops->bf16_weights_size(REF, Cout, Cin, k);
            size_t ng = REF->ops->bf16_grid_size(REF, Cin, N, H, W, k);
            if (memcmp(w1, w0, nw * 2) || memcmp(p1, p0, ng * 2))
                fail_msg("%s: packed weights or grid Cin %d N %d %dx%d k %d differ from the "
                         "reference",
                         T[t].name, Cin, N, H, W, k);
        }
        free(y1), free(g1), free(w1), free(p1);
    }
    free(y0), free(g0), free(w0), free(p0), free(x), free(sc), free(sh), free(w);
}

static void test_bf16_conv(void **state)
{
    bf16_case(64, 128, 1, 56, 56, 1, 1, 1);   /* DenseNet bottleneck, block 1 */
    bf16_case(128, 32, 1, 56, 56, 3, 1, 2);   /* DenseNet 3x3 */
    bf16_case(1024, 512, 1, 14, 14, 1, 0, 3); /* transition 3 */
    bf16_case(128, 32, 2, 7, 7, 3, 1, 4);     /* batch 2 at 7x7: columns not a multiple of 32 */
    bf16_case(33, 20, 3, 5, 7, 1, 0, 5);      /* odd Cin, Cout, sizes */
    bf16_case(70, 48, 3, 9, 6, 3, 0, 6);
    bf16_case(17, 5, 2, 11, 13, 5, 0, 7); /* 5x5 same */
    bf16_case(1, 1, 1, 1, 1, 1, 0, 8);
    bf16_case(128, 32, 3, 7, 7, 3, 1, 12); /* block 4, batch 3 */
    bf16_case(2, 1, 1, 1, 1, 3, 1, 15);    /* 1x1 image */
    bf16_case(64, 48, 2, 3, 1, 3, 1, 16);  /* one column */
}

/* ------------------------------------------------------------ whole pass */

/* A small DenseNet-BC (growth 8, blocks 2-3-2, 16 initial features) on
 * 64x48 inputs, batch 3: every backend's forward pass (logits, features)
 * equals the reference's; fewer images than planned; a training step (loss
 * and the whole gradient) too. */
static void test_forward(void **state)
{
    cx_model *m = small_densenet();
    assert_non_null(m);
    cx_err err = {0};
    int N = 3, H = 64, W = 48, K = 5;
    cx_rng r;
    cx_rng_seed(&r, 44);
    float *in = rand_buf(&r, (size_t)N * 3 * H * W, -2, 2);
    float l0[15], l1[15], l3[5];
    cx_ctx *cr = NULL;
    assert_int_equal(cx_ctx_new(m, N, H, W, CX_BACKEND_REF, &cr, &err), CX_OK);
    assert_int_equal(cx_forward(cr, in, N, l0, &err), CX_OK);
    int C, h, w;
    assert_int_equal(cx_ctx_features(cr, 2, NULL, &C, &h, &w, &err), CX_OK);
    assert_int_equal(C, cx_config_num_features(cx_model_config(m)));
    size_t nf = (size_t)C * h * w;
    float *f0 = malloc(nf * 4), *f1 = malloc(nf * 4);
    assert_int_equal(cx_ctx_features(cr, 2, f0, NULL, NULL, NULL, &err), CX_OK);
    for (int t = 0; t < NT; t++) {
        cx_backend *be = NULL;
        assert_int_equal(cx_backend_new_variant(T[t].be->entry, T[t].be->variant, &be, &err),
                         CX_OK);
        cx_ctx *c = NULL;
        assert_int_equal(cx_ctx_new_on(m, N, H, W, be, &c, &err), CX_OK);
        assert_int_equal(cx_forward(c, in, N, l1, &err), CX_OK);
        if (!(rel_err(l1, l0, 15) < 1e-5))
            fail_msg("%s: small DenseNet logits %g from the reference", T[t].name,
                     rel_err(l1, l0, 15));
        assert_int_equal(cx_ctx_features(c, 2, f1, NULL, NULL, NULL, &err), CX_OK);
        if (!(rel_err(f1, f0, nf) < 1e-5))
            fail_msg("%s: small DenseNet features %g from the reference", T[t].name,
                     rel_err(f1, f0, nf));
        /* fewer images than planned: same logits for the first image, and
         * its features give them back */
        assert_int_equal(cx_forward(c, in, 1, l3, &err), CX_OK);
        assert_true(rel_err(l3, l0, 5) < 1e-5);
        assert_int_equal(cx_ctx_features(c, 0, f1, NULL, NULL, NULL, &err), CX_OK);
        for (int k = 0; k < K; k++) {
            double acc = cx_model_classifier_bias(m)[k];
            for (int ch = 0; ch < C; ch++) {
                double mean = 0;
                for (int i = 0; i < h * w; i++)
                    mean += f1[ch * h * w + i];
                acc += cx_model_classifier_weight(m)[k * C + ch] * mean / (h * w);
            }
            assert_true(fabs(acc - l3[k]) < 1e-4 * (1 + fabs(acc)));
        }
        assert_int_equal(cx_ctx_features(c, 1, f1, NULL, NULL, NULL, &err), CX_EARG);
        assert_int_equal(cx_forward(c, in, N + 1, l1, &err), CX_EARG);
        cx_ctx_free(c);
    }
    cx_ctx_free(cr);
    free(f0), free(f1);

    /* a training step: the loss and the whole gradient */
    float y[15];
    for (int i = 0; i < N * K; i++)
        y[i] = (float)(cx_rng_uniform(&r) < 0.4);
    cx_model *mr = small_densenet();
    cx_train *tr = NULL;
    double lr;
    assert_int_equal(cx_train_new(mr, N, H, W, CX_BACKEND_REF, NULL, &tr, &err), CX_OK);
    assert_int_equal(cx_train_step(tr, in, y, N, &lr, &err), CX_OK);
    for (int t = 0; t < NT; t++) {
        cx_model *mt = small_densenet();
        cx_backend *be = NULL;
        assert_int_equal(cx_backend_new_variant(T[t].be->entry, T[t].be->variant, &be, &err),
                         CX_OK);
        cx_train *tt = NULL;
        double lt;
        assert_int_equal(cx_train_new_on(mt, N, H, W, be, NULL, &tt, &err), CX_OK);
        assert_int_equal(cx_train_step(tt, in, y, N, &lt, &err), CX_OK);
        assert_int_equal(cx_train_sync_model(tt, &err), CX_OK);
        double se = 0, sr = 0;
        for (int i = 0; i < cx_model_num_tensors(mt); i++) {
            const float *g0 = cx_train_grad(tr, i), *g1 = cx_train_grad(tt, i);
            for (int64_t j = 0; g0 && j < cx_model_tensor(mt, i)->numel; j++) {
                se += ((double)g1[j] - g0[j]) * ((double)g1[j] - g0[j]);
                sr += (double)g0[j] * g0[j];
            }
        }
        if (!(fabs(lt - lr) < 1e-5 * fabs(lr)) || !(sqrt(se / sr) < 1e-5))
            fail_msg("%s: training step loss %.8f vs %.8f, gradient rel L2 %g", T[t].name, lt, lr,
                     sqrt(se / sr));
        cx_train_free(tt);
        cx_model_free(mt);
    }
    cx_train_free(tr);
    cx_model_free(mr);
    free(in);
    cx_model_free(m);
}

/* A backend with memory of its own, for the model code's side of the
 * contract: the reference ops over separately allocated "device" memory
 * (host_memory = 0), counting uploads and downloads. A forward pass and a
 * training step must give the reference's results bit for bit with one
 * upload of the batch (and of the labels) and one download of the outputs;
 * the weights go up once per context, again only when asked to. */
static cx_ops DEV_OPS;
static long n_up, n_down;

static cx_status dev_alloc(cx_backend *be, size_t bytes, void **out)
{
    *out = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    return *out ? CX_OK : cx_seterr(&be->err, CX_ENOMEM, "out of memory");
}
static void dev_free(cx_backend *be, void *p) { free(p); }
static cx_status dev_zero(cx_backend *be, void *p, size_t bytes)
{
    memset(p, 0, bytes);
    return CX_OK;
}
static cx_status dev_upload(cx_backend *be, void *dst, const void *src, size_t bytes)
{
    if (dst == src)
        return cx_seterr(&be->err, CX_EARG, "upload onto itself: a host pointer as memory");
    n_up++;
    memcpy(dst, src, bytes);
    return CX_OK;
}
static cx_status dev_download(cx_backend *be, void *dst, const void *src, size_t bytes)
{
    if (dst == src)
        return cx_seterr(&be->err, CX_EARG, "download onto itself: a host pointer as memory");
    n_down++;
    memcpy(dst, src, bytes);
    return CX_OK;
}
static int dev_variants(void) { return 1; }
static const char *dev_variant_name(int v) { return "reference ops, own memory"; }
static cx_status dev_create(cx_backend *be, int variant, cx_err *err)
{
    DEV_OPS = *REF->ops;
    DEV_OPS.name = "device";
    DEV_OPS.host_memory = 0;
    DEV_OPS.alloc = dev_alloc;
    DEV_OPS.free = dev_free;
    DEV_OPS.zero = dev_zero;
    DEV_OPS.upload = dev_upload;
    DEV_OPS.download = dev_download;
    be->ops = &DEV_OPS;
    return CX_OK;
}
static const cx_backend_entry DEV_ENTRY = {"device", CX_BACKEND_REF, "test double",
                                           dev_variants, dev_variant_name, dev_create, NULL};

static void test_device_memory(void **state)
{
    cx_model *m = small_densenet();
    assert_non_null(m);
    cx_err err = {0};
    int N = 3, H = 64, W = 48, K = 5;
    cx_rng r;
    cx_rng_seed(&r, 46);
    float *in = rand_buf(&r, (size_t)N * 3 * H * W, -2, 2), l0[15], l1[15], y[15];
    for (int i = 0; i < N * K; i++)
        y[i] = (float)(cx_rng_uniform(&r) < 0.4);
    cx_ctx *cr = NULL, *cd = NULL;
    cx_backend *be = NULL;
    assert_int_equal(cx_ctx_new(m, N, H, W, CX_BACKEND_REF, &cr, &err), CX_OK);
    assert_int_equal(cx_backend_new_variant(&DEV_ENTRY, 0, &be, &err), CX_OK);
    n_up = n_down = 0;
    assert_int_equal(cx_ctx_new_on(m, N, H, W, be, &cd, &err), CX_OK);
    assert_int_equal(n_up, 1); /* the weights */
    assert_int_equal(cx_forward(cr, in, N, l0, &err), CX_OK);
    n_up = n_down = 0;
    assert_int_equal(cx_forward(cd, in, N, l1, &err), CX_OK);
    assert_int_equal(n_up, 1);
    assert_int_equal(n_down, 1);
    assert_memory_equal(l1, l0, sizeof l0);
    int C, h, w;
    assert_int_equal(cx_ctx_features(cd, 1, NULL, &C, &h, &w, &err), CX_OK);
    float *f0 = malloc(sizeof(float) * C * h * w), *f1 = malloc(sizeof(float) * C * h * w);
    assert_int_equal(cx_ctx_features(cr, 1, f0, NULL, NULL, NULL, &err), CX_OK);
    n_down = 0;
    assert_int_equal(cx_ctx_features(cd, 1, f1, NULL, NULL, NULL, &err), CX_OK);
    assert_int_equal(n_down, 1);
    assert_memory_equal(f1, f0, sizeof(float) * C * h * w);
    /* bf16: the weights packed where the backend keeps them */
    float b0[15], b1[15];
    assert_int_equal(cx_ctx_set_precision(cr, CX_PRECISION_BF16, &err), CX_OK);
    assert_int_equal(cx_ctx_set_precision(cd, CX_PRECISION_BF16, &err), CX_OK);
    assert_int_equal(cx_forward(cr, in, N, b0, &err), CX_OK);
    assert_int_equal(cx_forward(cd, in, N, b1, &err), CX_OK);
    assert_memory_equal(b1, b0, sizeof b0);
    assert_int_equal(cx_ctx_set_precision(cd, CX_PRECISION_F32, &err), CX_OK);
    /* weights changed on the host: the context keeps its copy until synced */
    cx_param *fc = cx_model_find(m, "classifier.bias");
    fc->data[0] += 1.0f;
    assert_int_equal(cx_forward(cd, in, N, l1, &err), CX_OK);
    assert_memory_equal(l1, l0, sizeof l0);
    n_up = 0;
    assert_int_equal(cx_ctx_sync_weights(cd, &err), CX_OK);
    assert_int_equal(n_up, 1);
    assert_int_equal(cx_forward(cd, in, N, l1, &err), CX_OK);
    assert_true(fabsf(l1[0] - (l0[0] + 1.0f)) < 1e-5f && l1[1] == l0[1]);
    fc->data[0] -= 1.0f;
    cx_ctx_free(cr);
    cx_ctx_free(cd);

    /* a training step and Adam: the same numbers as the reference's, one
     * upload of the batch and one of the labels, one download of the loss
     * and logits, and one of the finite check */
    cx_model *mr = small_densenet(), *md = small_densenet();
    cx_train *tr = NULL, *td = NULL;
    double loss0, loss1;
    assert_int_equal(cx_train_new(mr, N, H, W, CX_BACKEND_REF, NULL, &tr, &err), CX_OK);
    assert_int_equal(cx_backend_new_variant(&DEV_ENTRY, 0, &be, &err), CX_OK);
    assert_int_equal(cx_train_new_on(md, N, H, W, be, NULL, &td, &err), CX_OK);
    for (int step = 0; step < 2; step++) {
        assert_int_equal(cx_train_step(tr, in, y, N, &loss0, &err), CX_OK);
        n_up = n_down = 0;
        assert_int_equal(cx_train_step(td, in, y, N, &loss1, &err), CX_OK);
        assert_int_equal(n_up, 2);
        assert_int_equal(n_down, 1);
        if (loss1 != loss0)
            fail_msg("loss %.17g vs %.17g", loss1, loss0);
        assert_memory_equal(cx_train_logits(td), cx_train_logits(tr), sizeof(float) * N * K);
        assert_int_equal(cx_adam_step(tr, 1e-3f, &err), CX_OK);
        n_up = n_down = 0;
        assert_int_equal(cx_adam_step(td, 1e-3f, &err), CX_OK);
        assert_int_equal(n_up, 0);
        assert_int_equal(n_down, 1);
    }
    /* the model on the host is the one from before until it is synced */
    cx_model *m0 = small_densenet();
    for (int i = 0; i < cx_model_num_tensors(md); i++)
        assert_memory_equal(cx_model_tensor(md, i)->data, cx_model_tensor(m0, i)->data,
                            sizeof(float) * cx_model_tensor(md, i)->numel);
    assert_int_equal(cx_train_sync_model(td, &err), CX_OK);
    for (int i = 0; i < cx_model_num_tensors(md); i++)
        assert_memory_equal(cx_model_tensor(md, i)->data, cx_model_tensor(mr, i)->data,
                            sizeof(float) * cx_model_tensor(md, i)->numel);
    cx_train_free(tr);
    cx_model_free(mr);
    cx_train_free(td);
    cx_model_free(m0);
    cx_model_free(md);
    free(f0), free(f1), free(in);
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
    /* unknown backends are refused by contexts and trainers */
    cx_ctx *c = NULL;
    cx_train *t = NULL;
    assert_int_equal(cx_ctx_new(m, 1, 224, 224, (cx_backend_id)7, &c, &err), CX_EARG);
    assert_null(c);
    assert_int_equal(cx_train_new(m, 2, 224, 224, (cx_backend_id)7, NULL, &t, &err), CX_EARG);
    assert_null(t);
    cx_model_free(m);
    assert_int_equal(cx_config_preset("densenet169", 1, 1, &cfg, &err), CX_OK);
    assert_int_equal(cx_config_num_features(&cfg), 1664);
    assert_int_equal(cx_config_preset("densenet201", 1, 3, &cfg, &err), CX_OK);
    assert_int_equal(cx_config_num_features(&cfg), 1920);
    assert_int_equal(cx_config_preset("resnet50", 1, 3, &cfg, &err), CX_EARG);
    assert_non_null(strstr(err.msg, "resnet50"));
}

int main(int argc, char **argv)
{
    cx_set_threads(2);
    const char *only = argc > 1 ? argv[1] : NULL;
    const struct CMUnitTest all[] = {
        cmocka_unit_test(test_complete),
        cmocka_unit_test(test_memory),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_bn_fold),
        cmocka_unit_test(test_bn_relu),
        cmocka_unit_test(test_bn_stats),
        cmocka_unit_test(test_bn_running),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_conv_backward),
        cmocka_unit_test(test_conv1x1_bn_relu),
        cmocka_unit_test(test_conv2d_bn_relu),
        cmocka_unit_test(test_bn_relu_backward),
        cmocka_unit_test(test_bn_backward_deferred),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_pools),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_bce_loss),
        cmocka_unit_test(test_optimizer),
        cmocka_unit_test(test_bf16_pack),
        cmocka_unit_test(test_bf16_conv),
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_device_memory),
        cmocka_unit_test(test_config),
    };
    struct CMUnitTest run[sizeof all / sizeof *all];
    size_t n = 0;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        if (!only || !strncmp(all[i].name + 5, only, strlen(only))) /* after "test_" */
            run[n++] = all[i];
    open_backends();
    printf("backends under test:");
    for (int t = 0; t < NT; t++)
        printf(" [%s, bf16 %s]", T[t].name, T[t].be->ops->bf16_kernel(T[t].be));
    printf("\n");
    int fails = _cmocka_run_group_tests("backend ops", run, n, NULL, NULL);
    for (int t = 0; t < NT; t++)
        cx_backend_free(T[t].be);
    cx_backend_free(REF);
    return fails ? 1 : 0;
}
