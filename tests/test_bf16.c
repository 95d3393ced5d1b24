/* bf16 inference: rounding, the packed layout, and a small DenseNet in bf16
 * on the CPU backend against the plain-C reference. CTest runs this program
 * once per kernel the CPU can run (CHEXNET_BF16_KERNEL = default/AMX,
 * avx512-bf16, portable; and with CHEXNET_ISA=avx2, a CPU without bf16
 * instructions); the program prints which one it tested. The bf16 ops
 * themselves are in the conformance harness (test_backend_ops bf16, run
 * the same way). */
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
#include "kernels/bf16_layout.h"
#include "model/model_internal.h"
#include "util/rng.h"
#include "cx_bounds.h"
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

/* The pair layout (kernels/bf16_layout.h), as the reference backend packs
 * it: element (k, p) of K channels by P positions at (k/2) 2 Pp + 2p + (k&1),
 * padding zero. (Every backend's packing and bf16 convolutions are checked
 * against the reference by test_backend_ops, run once per bf16 kernel.) */
static void test_layout(void **state)
{
    cx_backend *ref = NULL;
    cx_err err = {0};
    assert_int_equal(cx_backend_new(CX_BACKEND_REF, &ref, &err), CX_OK);
    static const int Ks[] = {1, 2, 33, 70};
    static const int64_t Ps[] = {1, 49, 3141};
    cx_rng r;
    cx_rng_seed(&r, 7);
    for (size_t a = 0; a < sizeof Ks / sizeof *Ks; a++)
        for (size_t b = 0; b < sizeof Ps / sizeof *Ps; b++) {
            int K = Ks[a];
            int64_t P = Ps[b], Pp = cx_bf16_ppad(P), n = cx_bf16_kpad(K) * Pp;
            assert_int_equal(ref->ops->bf16_act_size(ref, K, P), (size_t)n);
            float *x = rand_buf(&r, (size_t)(K * P), -3, 3);
            float *sc = rand_buf(&r, K, -2, 2), *sh = rand_buf(&r, K, -1, 1);
            uint16_t *o = malloc(n * 2);
            memset(o, 0xAB, n * 2);
            assert_int_equal(ref->ops->pack_bf16(ref, x, K, P, sc, sh, o), CX_OK);
            for (int k = 0; k < cx_bf16_kpad(K); k++)
                for (int64_t p = 0; p < Pp; p++) {
                    uint16_t want = 0;
                    if (k < K && p < P) {
                        float v = fmaf(x[k * P + p], sc[k], sh[k]); /* as every kernel */
                        want = cx_f32_to_bf16(v > 0 ? v : 0);
                    }
                    uint16_t got = o[(k / 2) * 2 * Pp + 2 * p + (k & 1)];
                    if (got != want)
                        fail_msg("pack K %d P %lld: (%d, %lld) is %#x, not %#x", K, (long long)P, k,
                                 (long long)p, got, want);
                }
            free(x), free(sc), free(sh), free(o);
        }
    cx_backend_free(ref);
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
    float lr[15], lc[15], l32[15], lr32[15], l1[5];
    cx_ctx *cr = NULL, *cc = NULL;
    assert_int_equal(cx_ctx_new(m, N, H, W, CX_BACKEND_REF, &cr, &err), CX_OK);
    assert_int_equal(cx_ctx_new(m, N, H, W, CX_BACKEND_CPU, &cc, &err), CX_OK);
    assert_int_equal(cx_forward(cr, in, N, lr32, &err), CX_OK);
    assert_int_equal(cx_ctx_precision(cc), CX_PRECISION_F32);
    assert_int_equal(cx_forward(cc, in, N, l32, &err), CX_OK);
    size_t a32 = cx_ctx_arena_bytes(cc);
    assert_int_equal(cx_ctx_set_precision(cr, CX_PRECISION_BF16, &err), CX_OK);
    assert_int_equal(cx_ctx_set_precision(cc, CX_PRECISION_BF16, &err), CX_OK);
    assert_true(cx_ctx_arena_bytes(cc) > a32);
    assert_int_equal(cx_forward(cr, in, N, lr, &err), CX_OK);
    assert_int_equal(cx_forward(cc, in, N, lc, &err), CX_OK);
    /* How far two bf16 passes may differ. Both round the same activations
     * to bf16 (every bf16 op is held to the reference within its fp32
     * summation bound by test_backend_ops), from fp32 values that differ
     * only by summation order and contraction. Where such a difference
     * straddles a bf16 rounding boundary, the two passes round that
     * activation to neighbouring bf16 values, one bf16 ulp (2^-8 relative)
     * apart: the same kind of perturbation bf16 rounding applies to every
     * activation (up to half an ulp), but on a small fraction of them, of
     * the order of the fp32 difference over the bf16 ulp (~2^-16 times the
     * summation depth). So the two bf16 passes must agree at least as well
     * as the reference's bf16 pass agrees with its fp32 pass (measured over
     * 25 random inputs with the baseline kernels: at most 0.29 of it).
     * Which activations flip depends on the compiler and the CPU's fp32
     * kernels, so no fixed tolerance near fp32 rounding holds everywhere; a
     * wrong element breaks this bound, and an fp32 pass instead of bf16 is
     * caught by e32 > 0. */
    double e = rel_max(lc, lr, 15), e32 = rel_max(lc, l32, 15), eref = rel_max(lr, lr32, 15);
    printf("bf16 kernel %s: small DenseNet logits vs reference bf16 %.2e, vs fp32 %.2e "
           "(reference bf16 vs fp32 %.2e)\n",
           cx_bf16_kernel(CX_BACKEND_CPU), e, e32, eref);
    assert_true(eref > 0 && eref < 5e-2);
    assert_true(e <= eref);
    assert_true(e32 < 5e-2 && e32 > 0);
    /* fewer images than planned */
    assert_int_equal(cx_forward(cc, in, 1, l1, &err), CX_OK);
    assert_true(rel_max(l1, lr, 5) <= eref);
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
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_forward_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
