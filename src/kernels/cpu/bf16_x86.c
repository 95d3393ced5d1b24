/* The x86 bf16 kernels of the CPU backend: AMX (TDPBF16PS) and AVX512-BF16
 * (VDPBF16PS) GEMMs and the AVX512-BF16 packer. This file is compiled with
 * those instruction sets enabled (CMakeLists.txt); bf16.c calls into it only
 * where util/cpu.h reports them. Layouts and contracts: bf16.h, bf16_kern.h. */
#include "kernels/cpu/bf16_kern.h"
#include "kernels/backend.h"
#include "kernels/bf16_layout.h"

#include <immintrin.h>
#include <string.h>

/* Blocks with fewer multiply-adds than this run on one thread. */
#define BF16_PAR_MIN ((int64_t)1 << 20)

/* Copies rows [0, rows) and columns [0, cols) of a 32x32 block. */
static void store_block(const float *blk, int rows, int cols, float *C, int64_t ldc)
{
    for (int r = 0; r < rows; r++)
        memcpy(C + r * ldc, blk + r * 32, sizeof(float) * (size_t)cols);
}

void cx_bf16_run_avx512(const pair_src *ps, int64_t off, int64_t len, uint32_t *o)
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

typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

void cx_bf16_gemm_amx(int M, int64_t ncols, int64_t Kp, const uint16_t *A, const bf16_taps *tp,
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
            int rows = bf16_imin(32, M - mb), cols = bf16_imin(32, ncols - nb);
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

void cx_bf16_gemm_avx512(int M, int64_t ncols, int64_t Kp, const uint16_t *A, const bf16_taps *tp,
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
        int rows = bf16_imin(8, M - mb), cols = bf16_imin(32, ncols - nb);
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
