/* bf16 kernels of the CPU backend. Three GEMM kernels over the same packed
 * layouts (kernels/bf16_layout.h), chosen at run time:
 *  - AMX (TDPBF16PS): 32x32 output blocks held in four 16x16 fp32 tiles;
 *  - AVX512-BF16 (VDPBF16PS): 8x32 register blocks, A pairs broadcast;
 *  - portable C, for CPUs with neither (correct, not fast).
 * AMX and AVX512-BF16 live in bf16_x86.c, compiled with those instruction
 * sets; cx_cpu() says which may run, so the library runs on any CPU. */
#include "kernels/cpu/bf16.h"
#include "kernels/backend.h"
#include "kernels/bf16_layout.h"
#include "kernels/cpu/bf16_kern.h"
#include "kernels/ref/ref_bf16.h"
#include "util/cpu.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#define CX_X86 1
#endif

/* Blocks with fewer multiply-adds than this run on one thread. */
#define BF16_PAR_MIN ((int64_t)1 << 20)

/* ------------------------------------------------------------------ pack */

/* Both packers walk each pair row (channels 2j, 2j+1) as runs: a run of
 * `len` positions of the two channels (BN + ReLU applied when scale is set)
 * written as interleaved bf16 pairs, and zero runs for padding. The plain
 * layout is one run of P then zeros to Pp; the grid layout alternates zero
 * borders and image rows. Every element of a pair row is written once. */

static pair_src pair_of(const float *x, int K, int64_t P, const float *scale,
                        const float *shift, int64_t j)
{
    pair_src ps;
    int k0 = (int)(2 * j), k1 = k0 + 1;
    ps.x0 = k0 < K ? x + (int64_t)k0 * P : NULL;
    ps.x1 = k1 < K ? x + (int64_t)k1 * P : NULL;
    ps.bn = scale != NULL;
    ps.sc0 = ps.bn && ps.x0 ? scale[k0] : 1.0f;
    ps.sh0 = ps.bn && ps.x0 ? shift[k0] : 0.0f;
    ps.sc1 = ps.bn && ps.x1 ? scale[k1] : 1.0f;
    ps.sh1 = ps.bn && ps.x1 ? shift[k1] : 0.0f;
    return ps;
}

static inline float bn_relu1(float v, float sc, float sh, int bn)
{
    if (!bn)
        return v;
    v = fmaf(v, sc, sh);
    return v > 0.0f ? v : 0.0f;
}

/* pairs o[0..len) from positions off..off+len of the pair's channels */
static void run_portable(const pair_src *ps, int64_t off, int64_t len, uint32_t *o)
{
    if (!ps->x0) {
        memset(o, 0, sizeof(uint32_t) * (size_t)len);
        return;
    }
    for (int64_t p = 0; p < len; p++) {
        uint32_t lo = cx_f32_to_bf16(bn_relu1(ps->x0[off + p], ps->sc0, ps->sh0, ps->bn));
        uint32_t hi = ps->x1 ? cx_f32_to_bf16(bn_relu1(ps->x1[off + p], ps->sc1, ps->sh1,
                                                       ps->bn))
                             : 0u;
        o[p] = lo | hi << 16;
    }
}


typedef void (*run_fn)(const pair_src *, int64_t, int64_t, uint32_t *);

static run_fn run_kernel(void)
{
#ifdef CX_X86
    if (cx_cpu()->avx512_bf16)
        return cx_bf16_run_avx512;
#endif
    return run_portable;
}

void cpu_bf16_pack(const float *x, int K, int64_t P, const float *scale, const float *shift,
                   uint16_t *out)
{
    int64_t Kp = cx_bf16_kpad(K), Pp = cx_bf16_ppad(P), pairs = Kp / 2;
    run_fn run = run_kernel();
#pragma omp parallel for schedule(static) if (Kp * P > 16384)
    for (int64_t j = 0; j < pairs; j++) {
        uint32_t *o = (uint32_t *)out + j * Pp;
        pair_src ps = pair_of(x, K, P, scale, shift, j);
        run(&ps, 0, P, o);
        memset(o + P, 0, sizeof(uint32_t) * (size_t)(Pp - P));
    }
}

void cpu_bf16_pack_grid(const float *x, int K, int N, int H, int W, const float *scale,
                        const float *shift, int k, uint16_t *out)
{
    cx_bf16_grid g = cx_bf16_grid_of(N, H, W, k);
    int pad = (k - 1) / 2;
    int64_t Kp = cx_bf16_kpad(K), P = (int64_t)N * H * W, pairs = Kp / 2;
    run_fn run = run_kernel();
#pragma omp parallel for schedule(static) if (Kp * P > 16384)
    for (int64_t j = 0; j < pairs; j++) {
        uint32_t *o = (uint32_t *)out + j * g.Qp;
        pair_src ps = pair_of(x, K, P, scale, shift, j);
        /* guard, then per image: pad rows, and rows of pad | W values | pad */
        uint32_t *d = o;
        memset(d, 0, sizeof(uint32_t) * (size_t)(g.G + (int64_t)pad * g.Wq + pad));
        d += g.G + (int64_t)pad * g.Wq + pad;
        for (int n = 0; n < N; n++) {
            for (int y = 0; y < H; y++) {
                run(&ps, ((int64_t)n * H + y) * W, W, d);
                d += W;
                /* right border of this row + left border of the next */
                int64_t gap = 2 * pad;
                if (y == H - 1) /* + the pad rows below this image and above the next */
                    gap += (int64_t)2 * pad * g.Wq;
                if (n == N - 1 && y == H - 1)
                    gap = (o + g.Qp) - d; /* everything after the last row */
                memset(d, 0, sizeof(uint32_t) * (size_t)gap);
                d += gap;
            }
        }
    }
}

/* ------------------------------------------------------------------ GEMM */

static void gemm_portable(int M, int64_t ncols, int64_t Kp, const uint16_t *A,
                          const bf16_taps *tp, const uint16_t *B, int64_t ldb, float *C,
                          int64_t ldc)
{
    int64_t nM = (M + 7) / 8, nN = (ncols + 31) / 32, nblk = nM * nN;
    int64_t pairs = Kp / 2;
#pragma omp parallel for schedule(static) if ((int64_t)M * ncols * Kp * tp->n > BF16_PAR_MIN)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t nb = (b / nM) * 32, mb = (b % nM) * 8;
        float acc[8][32];
        memset(acc, 0, sizeof acc);
        for (int t = 0; t < tp->n; t++) {
            const uint16_t *a = A + t * tp->astep + mb * Kp;
            for (int64_t j = 0; j < pairs; j++) {
                const uint16_t *bj = B + j * 2 * ldb + 2 * (nb + tp->shift[t]);
                float b0[32], b1[32];
                for (int n = 0; n < 32; n++) {
                    b0[n] = cx_bf16_to_f32(bj[2 * n]);
                    b1[n] = cx_bf16_to_f32(bj[2 * n + 1]);
                }
                for (int r = 0; r < 8; r++) {
                    float a0 = cx_bf16_to_f32(a[r * Kp + 2 * j]);
                    float a1 = cx_bf16_to_f32(a[r * Kp + 2 * j + 1]);
                    for (int n = 0; n < 32; n++)
                        acc[r][n] += a0 * b0[n] + a1 * b1[n];
                }
            }
        }
        int rows = bf16_imin(8, M - mb), cols = bf16_imin(32, ncols - nb);
        for (int r = 0; r < rows; r++)
            memcpy(C + (mb + r) * ldc + nb, acc[r], sizeof(float) * (size_t)cols);
    }
}

static void gemm_taps(int M, int64_t ncols, int64_t Kp, const uint16_t *A, const bf16_taps *tp,
                      const uint16_t *B, int64_t ldb, float *C, int64_t ldc)
{
#ifdef CX_X86
    const cx_cpu_info *ci = cx_cpu();
    if (ci->amx_bf16) {
        cx_bf16_gemm_amx(M, ncols, Kp, A, tp, B, ldb, C, ldc);
        return;
    }
    if (ci->avx512_bf16) {
        cx_bf16_gemm_avx512(M, ncols, Kp, A, tp, B, ldb, C, ldc);
        return;
    }
#endif
    gemm_portable(M, ncols, Kp, A, tp, B, ldb, C, ldc);
}

void cpu_bf16_gemm(int M, int64_t ncols, int64_t Kp, const uint16_t *A, const uint16_t *B,
                   int64_t ldb, float *C, int64_t ldc)
{
    static const int64_t zero = 0;
    bf16_taps tp = {1, 0, &zero};
    gemm_taps(M, ncols, Kp, A, &tp, B, ldb, C, ldc);
}

void cpu_bf16_conv_taps(int Cout, int64_t ncols, int64_t Kp, const uint16_t *A, int ntaps,
                        const int64_t *shift, const uint16_t *B, int64_t ldb, float *C,
                        int64_t ldc)
{
    bf16_taps tp = {ntaps, (int64_t)Cout * Kp, shift};
    gemm_taps(Cout, ncols, Kp, A, &tp, B, ldb, C, ldc);
}

const char *cpu_bf16_kernel(void)
{
    const cx_cpu_info *ci = cx_cpu();
    return ci->amx_bf16 ? "amx" : ci->avx512_bf16 ? "avx512-bf16" : "portable";
}
