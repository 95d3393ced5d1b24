/* bf16 kernels of the CPU backend. Three GEMM kernels over the same packed
 * layouts (kernels/backend.h), chosen at run time:
 *  - AMX (TDPBF16PS): 32x32 output blocks held in four 16x16 fp32 tiles;
 *  - AVX512-BF16 (VDPBF16PS): 8x32 register blocks, A pairs broadcast;
 *  - portable C, for CPUs with neither (correct, not fast).
 * Each is compiled with target attributes so the library still runs on any
 * x86-64 CPU; cx_cpu() says which may run. */
#include "kernels/cpu/bf16.h"
#include "kernels/backend.h"
#include "kernels/ref/ref_bf16.h"
#include "util/cpu.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
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
typedef struct {
    const float *x0, *x1; /* the two channels (x1 NULL: K odd, zeros) */
    float sc0, sh0, sc1, sh1;
    int bn;
} pair_src;

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
    v = v * sc + sh;
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

#ifdef CX_X86
__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
run_avx512(const pair_src *ps, int64_t off, int64_t len, uint32_t *o)
{
    if (!ps->x0) {
        memset(o, 0, sizeof(uint32_t) * (size_t)len);
        return;
    }
    /* interleave: result word 2i = low half word i (channel 2j), 2i+1 = high half */
    static const uint16_t perm[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i idx = _mm512_loadu_si512(perm);
    const __m512 zero = _mm512_setzero_ps();
    const __m512 sc0 = _mm512_set1_ps(ps->sc0), sh0 = _mm512_set1_ps(ps->sh0);
    const __m512 sc1 = _mm512_set1_ps(ps->sc1), sh1 = _mm512_set1_ps(ps->sh1);
    const float *x0 = ps->x0 + off, *x1 = ps->x1 ? ps->x1 + off : NULL;
    for (int64_t p = 0; p < len; p += 16) {
        int64_t rem = len - p;
        __mmask16 m = rem >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << rem) - 1);
        __m512 v0 = _mm512_maskz_loadu_ps(m, x0 + p);
        __m512 v1 = x1 ? _mm512_maskz_loadu_ps(m, x1 + p) : zero;
        if (ps->bn) {
            v0 = _mm512_max_ps(_mm512_fmadd_ps(v0, sc0, sh0), zero);
            v1 = x1 ? _mm512_max_ps(_mm512_fmadd_ps(v1, sc1, sh1), zero) : zero;
        }
        __m512i b = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(v1, v0));
        _mm512_mask_storeu_epi32(o + p, m, b);
    }
}
#endif

typedef void (*run_fn)(const pair_src *, int64_t, int64_t, uint32_t *);

static run_fn run_kernel(void)
{
#ifdef CX_X86
    if (cx_cpu()->avx512_bf16)
        return run_avx512;
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

/* Copies rows [0, rows) and columns [0, cols) of a 32x32 block. */
static void store_block(const float *blk, int rows, int cols, float *C, int64_t ldc)
{
    for (int r = 0; r < rows; r++)
        memcpy(C + r * ldc, blk + r * 32, sizeof(float) * (size_t)cols);
}

static int imin(int64_t a, int64_t b) { return (int)(a < b ? a : b); }

/* All three kernels compute, for m < M and n < ncols,
 *     C[m][n] = sum_t sum_k A[t*astep + m*Kp + k] * B(k, n + shift[t])
 * over ntaps taps t: one tap with shift 0 is a plain GEMM; the k*k taps of
 * a "same" convolution over a spatially padded input are that convolution
 * (the shift of tap (dy, dx) is dy * padded row + dx). */
typedef struct {
    int n;
    int64_t astep;
    const int64_t *shift;
} bf16_taps;

#ifdef CX_X86
typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

__attribute__((target("amx-tile,amx-bf16,avx512f"))) static void
gemm_amx(int M, int64_t ncols, int64_t Kp, const uint16_t *A, const bf16_taps *tp,
         const uint16_t *B, int64_t ldb, float *C, int64_t ldc)
{
    int64_t nM = (M + 31) / 32, nN = (ncols + 31) / 32, nblk = nM * nN;
#pragma omp parallel if ((int64_t)M * ncols * Kp * tp->n > BF16_PAR_MIN)
    {
        amx_tilecfg cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.palette = 1;
        for (int t = 0; t < 8; t++) {
            cfg.colsb[t] = 64;
            cfg.rows[t] = 16;
        }
        _tile_loadconfig(&cfg);
        float blk[32 * 32] __attribute__((aligned(64)));
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nblk; b++) {
            int64_t nb = (b / nM) * 32, mb = (b % nM) * 32;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int t = 0; t < tp->n; t++) {
                const uint16_t *a0 = A + t * tp->astep + mb * Kp, *a1 = a0 + 16 * Kp;
                const uint16_t *b0 = B + 2 * (nb + tp->shift[t]), *b1 = b0 + 32;
                for (int64_t kk = 0; kk < Kp; kk += 32) {
                    int64_t boff = (kk / 2) * 2 * ldb;
                    _tile_loadd(4, a0 + kk, Kp * 2);
                    _tile_loadd(5, a1 + kk, Kp * 2);
                    _tile_loadd(6, b0 + boff, ldb * 4);
                    _tile_loadd(7, b1 + boff, ldb * 4);
                    _tile_dpbf16ps(0, 4, 6);
                    _tile_dpbf16ps(1, 4, 7);
                    _tile_dpbf16ps(2, 5, 6);
                    _tile_dpbf16ps(3, 5, 7);
                }
            }
            int rows = imin(32, M - mb), cols = imin(32, ncols - nb);
            float *c = C + mb * ldc + nb;
            if (rows == 32 && cols == 32) {
                _tile_stored(0, c, ldc * 4);
                _tile_stored(1, c + 16, ldc * 4);
                _tile_stored(2, c + 16 * ldc, ldc * 4);
                _tile_stored(3, c + 16 * ldc + 16, ldc * 4);
            } else {
                _tile_stored(0, blk, 128);
                _tile_stored(1, blk + 16, 128);
                _tile_stored(2, blk + 16 * 32, 128);
                _tile_stored(3, blk + 16 * 32 + 16, 128);
                store_block(blk, rows, cols, c, ldc);
            }
        }
        _tile_release();
    }
}

__attribute__((target("avx512f,avx512bw,avx512bf16"))) static void
gemm_avx512(int M, int64_t ncols, int64_t Kp, const uint16_t *A, const bf16_taps *tp,
            const uint16_t *B, int64_t ldb, float *C, int64_t ldc)
{
    int64_t nM = (M + 7) / 8, nN = (ncols + 31) / 32, nblk = nM * nN;
    int64_t pairs = Kp / 2;
#pragma omp parallel for schedule(static) if ((int64_t)M * ncols * Kp * tp->n > BF16_PAR_MIN)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t nb = (b / nM) * 32, mb = (b % nM) * 8;
        __m512 acc[8][2];
#pragma GCC unroll 8
        for (int r = 0; r < 8; r++)
            acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int t = 0; t < tp->n; t++) {
            const uint16_t *a = A + t * tp->astep + mb * Kp;
            const uint16_t *bp = B + 2 * (nb + tp->shift[t]);
            for (int64_t j = 0; j < pairs; j++) {
                /* pair rows are Pp columns apart (often > 4 KiB): the
                 * hardware prefetchers do not follow, so we do */
                _mm_prefetch((const char *)(bp + (j + 12) * 2 * ldb), _MM_HINT_T0);
                _mm_prefetch((const char *)(bp + (j + 12) * 2 * ldb + 32), _MM_HINT_T0);
                __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + j * 2 * ldb);
                __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + j * 2 * ldb + 32);
#pragma GCC unroll 8 /* keeps the 16 accumulators in registers */
                for (int r = 0; r < 8; r++) {
                    uint32_t pair;
                    memcpy(&pair, a + r * Kp + 2 * j, sizeof pair);
                    __m512bh av = (__m512bh)_mm512_set1_epi32((int)pair);
                    acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
                    acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
                }
            }
        }
        int rows = imin(8, M - mb), cols = imin(32, ncols - nb);
        __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1);
        __mmask16 m1 = cols >= 32 ? (__mmask16)0xffff
                                  : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1) : 0;
        for (int r = 0; r < rows; r++) {
            float *c = C + (mb + r) * ldc + nb;
            _mm512_mask_storeu_ps(c, m0, acc[r][0]);
            _mm512_mask_storeu_ps(c + 16, m1, acc[r][1]);
        }
    }
}
#endif

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
        int rows = imin(8, M - mb), cols = imin(32, ncols - nb);
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
        gemm_amx(M, ncols, Kp, A, tp, B, ldb, C, ldc);
        return;
    }
    if (ci->avx512_bf16) {
        gemm_avx512(M, ncols, Kp, A, tp, B, ldb, C, ldc);
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
