/* bf16 inference: rounding, the packed layouts, and the CPU backend's bf16
 * kernels against the plain-C reference (kernels/ref/ref_bf16.c), from single
 * ops to a small DenseNet. CTest runs this program once per kernel the CPU can
 * run (CHEXNET_BF16_KERNEL = default/AMX, avx512-bf16, portable; and with
 * CHEXNET_ISA=avx2, a CPU without bf16 instructions); the program prints
 * which one it tested. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chexnet.h"
#include "kernels/backend.h"
#include "model/model_internal.h"
#include "util/rng.h"
#include "cx_testutil.h"

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_rounding(void **state)
{
    assert_int_equal(cx_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(cx_f32_to_bf16(-2.0f), 0xc000);
    /* ties go to the even neighbour */
    assert_int_equal(cx_f32_to_bf16(from_bits(0x3f808000u)), 0x3f80);
    assert_int_equal(cx_f32_to_bf16(from_bits(0x3f818000u)), 0x3f82);
    /* just above / below the tie */
    assert_int_equal(cx_f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
    assert_int_equal(cx_f32_to_bf16(from_bits(0x3f807fffu)), 0x3f80);
    /* overflow to infinity, infinities kept, NaN stays NaN */
    assert_int_equal(cx_f32_to_bf16(FLT_MAX), 0x7f80);
    assert_int_equal(cx_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(cx_f32_to_bf16(-INFINITY), 0xff80);
    assert_true(isnan(cx_bf16_to_f32(cx_f32_to_bf16(NAN))));
    assert_true(isnan(cx_bf16_to_f32(cx_f32_to_bf16(from_bits(0x7f800001u)))));
    assert_true(cx_bf16_to_f32(0x3f80) == 1.0f);
    /* relative rounding error at most 2^-8 (8 significant bits) */
    cx_rng r;
    cx_rng_seed(&r, 5);
    for (int i = 0; i < 10000; i++) {
        float v = (float)((cx_rng_uniform(&r) - 0.5) * 1e3);
        float b = cx_bf16_to_f32(cx_f32_to_bf16(v));
        assert_true(fabsf(b - v) <= fabsf(v) * (1.0f / 256.0f));
    }
}

static void test_pack(void **state)
{
    const cx_ops *ref = cx_ops_ref(), *cpu = cx_ops_cpu();
    static const int Ks[] = {1, 2, 33, 64, 70};
    static const int64_t Ps[] = {1, 15, 49, 100, 3141};
    cx_rng r;
    cx_rng_seed(&r, 7);
    for (size_t a = 0; a < sizeof Ks / sizeof *Ks; a++)
        for (size_t b = 0; b < sizeof Ps / sizeof *Ps; b++) {
            int K = Ks[a];
            int64_t P = Ps[b], n = cx_bf16_kpad(K) * cx_bf16_ppad(P);
            float *x = rand_buf(&r, (size_t)(K * P), -3, 3);
            float *sc = rand_buf(&r, K, -2, 2), *sh = rand_buf(&r, K, -1, 1);
            uint16_t *o1 = malloc(n * 2), *o2 = malloc(n * 2);
            for (int bn = 0; bn < 2; bn++) {
                memset(o1, 0xAB, n * 2);
                memset(o2, 0xCD, n * 2);
                ref->pack_bf16(x, K, P, bn ? sc : NULL, sh, o1);
                cpu->pack_bf16(x, K, P, bn ? sc : NULL, sh, o2);
                assert_memory_equal(o1, o2, n * 2); /* padding included */
                /* spot-check the layout itself */
                int k = K - 1;
                int64_t p = P / 2;
                float v = x[k * P + p];
                if (bn) {
                    v = v * sc[k] + sh[k];
                    v = v > 0 ? v : 0;
                }
                assert_int_equal(o1[(k / 2) * 2 * cx_bf16_ppad(P) + 2 * p + (k & 1)],
                                 cx_f32_to_bf16(v));
            }
            free(x), free(sc), free(sh), free(o1), free(o2);
        }
}

/* max |a-b| / max|b| */
static double rel_max(const float *a, const float *b, size_t n)
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

static void conv_case(int Cin, int Cout, int N, int H, int W, int k, uint64_t seed)
{
    const cx_ops *ref = cx_ops_ref(), *cpu = cx_ops_cpu();
    cx_rng r;
    cx_rng_seed(&r, seed);
    int64_t P = (int64_t)N * H * W;
    float *x = rand_buf(&r, (size_t)(Cin * P), -1, 2);
    float *w = rand_buf(&r, (size_t)Cout * Cin * k * k, -0.5f, 0.5f);
    size_t nx = (size_t)(cx_bf16_kpad(Cin) * cx_bf16_ppad(P));
    size_t nw = (size_t)(cx_bf16_mpad((int64_t)k * k * Cout) * cx_bf16_kpad(Cin));
    uint16_t *xp = malloc(nx * 2), *wp = malloc(nw * 2);
    ref->pack_bf16(x, Cin, P, NULL, NULL, xp);
    cx_bf16_pack_conv_weights(w, Cout, Cin, k, wp);
    float *y1 = malloc(sizeof(float) * Cout * P), *y2 = malloc(sizeof(float) * Cout * P);
    float *y32 = malloc(sizeof(float) * Cout * P);
    size_t ns = cpu->conv_bf16_scratch(Cin, N, H, W, Cout, k);
    float *scr = malloc(sizeof(float) * (ns ? ns : 1));
    ref->conv2d_bf16(xp, Cin, N, H, W, wp, Cout, k, y1, NULL, 0);
    for (int64_t i = 0; i < Cout * P; i++)
        y2[i] = NAN;
    cpu->conv2d_bf16(xp, Cin, N, H, W, wp, Cout, k, y2, scr, ns);
    double e = rel_max(y2, y1, (size_t)(Cout * P));
    /* the same products, summed in another order in fp32 */
    if (!(e < 2e-6))
        fail_msg("conv bf16 Cin %d Cout %d N %d %dx%d k %d: cpu vs ref %.3g", Cin, Cout, N, H,
                 W, k, e);
    /* and within bf16 rounding of the fp32 convolution */
    size_t n32 = ref->conv_scratch(Cin, N, H, W, Cout, k, 1, (k - 1) / 2);
    float *s32 = malloc(sizeof(float) * (n32 ? n32 : 1));
    ref->conv2d(x, Cin, N, H, W, w, Cout, k, 1, (k - 1) / 2, y32, s32, n32);
    e = rel_max(y1, y32, (size_t)(Cout * P));
    if (!(e < 2e-2))
        fail_msg("conv bf16 vs fp32 %.3g", e);
    free(x), free(w), free(xp), free(wp), free(y1), free(y2), free(y32), free(scr), free(s32);
}

static void test_conv(void **state)
{
    conv_case(64, 128, 1, 56, 56, 1, 1);  /* DenseNet bottleneck, block 1 */
    conv_case(128, 32, 1, 56, 56, 3, 2);  /* DenseNet 3x3 */
    conv_case(1024, 512, 1, 14, 14, 1, 3); /* transition 3 */
    conv_case(128, 32, 2, 7, 7, 3, 4);    /* batch 2 at 7x7: columns not a multiple of 32 */
    conv_case(33, 20, 3, 5, 7, 1, 5);     /* odd Cin, Cout, sizes */
    conv_case(70, 48, 3, 9, 6, 3, 6);
    conv_case(17, 5, 2, 11, 13, 5, 7);    /* 5x5 same */
    conv_case(1, 1, 1, 1, 1, 1, 8);
}

/* The grid layout: packing equal to the reference bit for bit (borders and
 * tail included), convolutions of grid input equal to the reference and,
 * bit for bit, to the same convolution of plain packed input. */
static void grid_case(int Cin, int Cout, int N, int H, int W, int k, int bn, uint64_t seed)
{
    const cx_ops *ref = cx_ops_ref(), *cpu = cx_ops_cpu();
    cx_rng r;
    cx_rng_seed(&r, seed);
    int64_t P = (int64_t)N * H * W;
    cx_bf16_grid g = cx_bf16_grid_of(N, H, W, k);
    float *x = rand_buf(&r, (size_t)(Cin * P), -1, 2);
    float *sc = rand_buf(&r, Cin, -2, 2), *sh = rand_buf(&r, Cin, -1, 1);
    float *w = rand_buf(&r, (size_t)Cout * Cin * k * k, -0.5f, 0.5f);
    size_t ng = (size_t)(cx_bf16_kpad(Cin) * g.Qp);
    size_t nx = (size_t)(cx_bf16_kpad(Cin) * cx_bf16_ppad(P));
    size_t nw = (size_t)(cx_bf16_mpad((int64_t)k * k * Cout) * cx_bf16_kpad(Cin));
    uint16_t *g1 = malloc(ng * 2), *g2 = malloc(ng * 2), *xp = malloc(nx * 2),
             *wp = malloc(nw * 2);
    memset(g1, 0x11, ng * 2);
    memset(g2, 0x22, ng * 2);
    ref->pack_bf16_grid(x, Cin, N, H, W, bn ? sc : NULL, sh, k, g1);
    cpu->pack_bf16_grid(x, Cin, N, H, W, bn ? sc : NULL, sh, k, g2);
    if (memcmp(g1, g2, ng * 2))
        fail_msg("grid pack Cin %d N %d %dx%d k %d differs from the reference", Cin, N, H, W, k);
    cpu->pack_bf16(x, Cin, P, bn ? sc : NULL, sh, xp);
    cx_bf16_pack_conv_weights(w, Cout, Cin, k, wp);
    size_t n_out = (size_t)Cout * P;
    float *y1 = malloc(n_out * 4), *y2 = malloc(n_out * 4), *y3 = malloc(n_out * 4);
    size_t s2 = cpu->conv_grid_bf16_scratch(Cin, N, H, W, Cout, k);
    size_t s3 = cpu->conv_bf16_scratch(Cin, N, H, W, Cout, k);
    float *scr = malloc(4 * (s2 > s3 ? s2 : s3) + 64);
    ref->conv2d_grid_bf16(g1, Cin, N, H, W, wp, Cout, k, y1, NULL, 0);
    cpu->conv2d_grid_bf16(g2, Cin, N, H, W, wp, Cout, k, y2, scr, s2);
    cpu->conv2d_bf16(xp, Cin, N, H, W, wp, Cout, k, y3, scr, s3);
    double e = rel_max(y2, y1, n_out);
    if (!(e < 2e-6))
        fail_msg("grid conv Cin %d Cout %d N %d %dx%d k %d: cpu vs ref %.3g", Cin, Cout, N, H, W,
                 k, e);
    assert_memory_equal(y2, y3, n_out * 4);
    free(x), free(sc), free(sh), free(w), free(g1), free(g2), free(xp), free(wp);
    free(y1), free(y2), free(y3), free(scr);
}

static void test_grid(void **state)
{
    grid_case(128, 32, 1, 56, 56, 3, 1, 11); /* DenseNet block 1 */
    grid_case(128, 32, 3, 7, 7, 3, 1, 12);   /* block 4, batch 3 */
    grid_case(33, 20, 2, 5, 9, 3, 1, 13);    /* odd channels, Cout not a multiple of 8 */
    grid_case(17, 5, 2, 6, 4, 5, 0, 14);     /* 5x5, no BN */
    grid_case(2, 1, 1, 1, 1, 3, 1, 15);      /* 1x1 image */
    grid_case(64, 48, 2, 3, 1, 3, 1, 16);    /* one column */
}

static void test_forward_small(void **state)
{
    cx_model *m = small_densenet();
    assert_non_null(m);
    cx_err err = {0};
    int N = 3, H = 64, W = 48;
    cx_rng r;
    cx_rng_seed(&r, 44);
    float *in = rand_buf(&r, (size_t)N * 3 * H * W, -2, 2);
    float lr[15], lc[15], l32[15], l1[5];
    cx_ctx *cr = NULL, *cc = NULL;
    assert_int_equal(cx_ctx_new(m, N, H, W, CX_BACKEND_REF, &cr, &err), CX_OK);
    assert_int_equal(cx_ctx_new(m, N, H, W, CX_BACKEND_CPU, &cc, &err), CX_OK);
    assert_int_equal(cx_ctx_precision(cc), CX_PRECISION_F32);
    assert_int_equal(cx_forward(cc, in, N, l32, &err), CX_OK);
    size_t a32 = cx_ctx_arena_bytes(cc);
    assert_int_equal(cx_ctx_set_precision(cr, CX_PRECISION_BF16, &err), CX_OK);
    assert_int_equal(cx_ctx_set_precision(cc, CX_PRECISION_BF16, &err), CX_OK);
    assert_true(cx_ctx_arena_bytes(cc) > a32);
    assert_int_equal(cx_forward(cr, in, N, lr, &err), CX_OK);
    assert_int_equal(cx_forward(cc, in, N, lc, &err), CX_OK);
    double e = rel_max(lc, lr, 15), e32 = rel_max(lc, l32, 15);
    printf("bf16 kernel %s: small DenseNet logits vs reference bf16 %.2e, vs fp32 %.2e\n",
           cx_bf16_kernel(CX_BACKEND_CPU), e, e32);
    assert_true(e < 1e-5);
    assert_true(e32 < 5e-2 && e32 > 0);
    /* fewer images than planned */
    assert_int_equal(cx_forward(cc, in, 1, l1, &err), CX_OK);
    assert_true(rel_max(l1, lr, 5) < 1e-5);
    /* back to fp32: the fp32 logits again, bit for bit */
    assert_int_equal(cx_ctx_set_precision(cc, CX_PRECISION_F32, &err), CX_OK);
    assert_int_equal(cx_ctx_arena_bytes(cc), a32);
    assert_int_equal(cx_forward(cc, in, N, lc, &err), CX_OK);
    assert_memory_equal(lc, l32, sizeof l32);
    assert_int_equal(cx_ctx_set_precision(cc, (cx_precision)7, &err), CX_EARG);
    assert_int_equal(cx_precision_parse("bf16"), CX_PRECISION_BF16);
    assert_int_equal(cx_precision_parse("fp32"), CX_PRECISION_F32);
    assert_int_equal(cx_precision_parse("fp16"), -1);
    free(in);
    cx_ctx_free(cr);
    cx_ctx_free(cc);
    cx_model_free(m);
}

/* Where the CPU has no bf16 instructions, bf16 would run the portable kernel,
 * slower than fp32, so a context asked for bf16 stays fp32 and computes the
 * fp32 logits, bit for bit. (The kernel itself is then tested by name,
 * CHEXNET_BF16_KERNEL=portable.) */
static void test_fallback(void **state)
{
    cx_model *m = small_densenet();
    assert_non_null(m);
    cx_err err = {0};
    cx_rng r;
    cx_rng_seed(&r, 45);
    float *in = rand_buf(&r, (size_t)2 * 3 * 32 * 32, -2, 2), l32[10], l16[10];
    cx_ctx *c = NULL;
    assert_int_equal(cx_ctx_new(m, 2, 32, 32, CX_BACKEND_CPU, &c, &err), CX_OK);
    assert_int_equal(cx_forward(c, in, 2, l32, &err), CX_OK);
    assert_int_equal(cx_ctx_set_precision(c, CX_PRECISION_BF16, &err), CX_OK);
    assert_int_equal(cx_ctx_precision(c), CX_PRECISION_F32);
    assert_int_equal(cx_forward(c, in, 2, l16, &err), CX_OK);
    assert_memory_equal(l16, l32, sizeof l32);
    free(in);
    cx_ctx_free(c);
    cx_model_free(m);
}

int main(void)
{
    if (cx_precision_effective(CX_BACKEND_CPU, CX_PRECISION_BF16) != CX_PRECISION_BF16) {
        printf("this CPU has no bf16 instructions: bf16 contexts stay fp32\n");
        const struct CMUnitTest fb[] = {cmocka_unit_test(test_fallback)};
        if (cmocka_run_group_tests(fb, NULL, NULL))
            return 1;
        setenv("CHEXNET_BF16_KERNEL", "portable", 1);
    }
    printf("bf16 kernel under test: %s\n", cx_bf16_kernel(CX_BACKEND_CPU));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounding),
        cmocka_unit_test(test_pack),
        cmocka_unit_test(test_conv),
        cmocka_unit_test(test_grid),
        cmocka_unit_test(test_forward_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
