/* fp32 GEMM for DenseNet's shapes, written for accuracy as much as speed.
 *
 * Blocking as in BLIS: K in chunks of KC; A packed into 8-row panels
 * (k-major: 8 values per k), shared by the threads; B packed per thread into
 * 32-column panels (32 values per k); an 8x32 register block (16 zmm) per
 * microkernel call. Threads share out the 32-column panels (and, when there
 * are few, blocks of A's rows).
 *
 * Accuracy: a dot product summed in one register over all of K has an error
 * growing with K. The microkernel sums CH = 32 products per register, adds
 * those partial sums into a second set, and adds each KC chunk into C:
 * three levels of partial sums. On DenseNet's GEMMs the relative error is
 * about 1.2e-7 (2.8e-7 for a plain sequential kernel such as BLIS's skx
 * kernels, 1.3e-7 for BLIS's skinny-matrix kernels), which keeps training
 * gradients at least as accurate as PyTorch's fp32 ones. Transposes and
 * tails are handled by the packing, so one microkernel serves every call. */
#include "kernels/cpu/sgemm.h"
#include "util/cpu.h"

#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CX_X86 1
#endif

#define MR 8
#define NR 32
#ifndef KC
#define KC 512
#endif
#ifndef CH
#define CH 32
#endif
/* GEMMs with fewer multiply-adds run on the calling thread only */
#define SGEMM_PAR_MIN ((double)(1 << 18))

/* The AVX-512 kernel runs where the CPU has AVX-512, unless the environment
 * says CHEXNET_SGEMM=blas (to test and compare the fallback). */
static int use_avx512(void)
{
    static int v = -1;
    int cur = __atomic_load_n(&v, __ATOMIC_RELAXED);
    if (cur < 0) {
        const char *e = getenv("CHEXNET_SGEMM");
        cur = cx_cpu()->avx512 && !(e && !strcmp(e, "blas"));
        __atomic_store_n(&v, cur, __ATOMIC_RELAXED);
    }
    return cur;
}

/* Per-thread buffers kept between calls (a thread's first call, or a larger
 * size, allocates): steady-state passes allocate nothing. */
static _Thread_local float *tls_a, *tls_b;
static _Thread_local size_t tls_a_n, tls_b_n;
static _Thread_local float *tls_s; /* the calling thread's: row sums (doubles) */
static _Thread_local size_t tls_s_n;

static float *grow(float **p, size_t *cap, size_t n)
{
    if (*cap < n) {
        free(*p);
        *cap = 0;
        *p = aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
        if (!*p)
            return NULL;
        *cap = n;
    }
    return *p;
}

/* Where op(A)'s element (m, k) is:
 *     base[(m % mi) * s_mi + (m / mi) * s_mo + k * s_k]
 * A plain or transposed matrix has mi = M; the kn2row view of convolution
 * weights w[Cout][Cin][q] as rows (q, co) has mi = Cout, s_mi = Cin*q_n,
 * s_mo = 1, s_k = q_n, so they need no reordering. */
typedef struct {
    const float *base;
    int mi;
    int64_t s_mi, s_mo, s_k;
} a_view;

static a_view a_plain(int ta, const float *A, int lda, int M)
{
    a_view v = {A, M > 0 ? M : 1, ta ? 1 : lda, 0, ta ? lda : 1};
    return v;
}

static inline const float *a_row(const a_view *a, int64_t m)
{
    return a->base + (m % a->mi) * a->s_mi + (m / a->mi) * a->s_mo;
}

/* pa[k*MR + r] = op(A)[m0 + r][k0 + k], zero rows past mr */
static void pack_a(const a_view *a, int m0, int mr, int k0, int kc, float *pa)
{
    if (a->s_mi == 1 && a->s_mo == 0 && a->s_k != 1) {
        /* transposed: 8 consecutive values per k */
        for (int k = 0; k < kc; k++) {
            const float *s = a->base + (int64_t)(k0 + k) * a->s_k + m0;
            float *d = pa + k * MR;
            int r = 0;
            for (; r < mr; r++)
                d[r] = s[r];
            for (; r < MR; r++)
                d[r] = 0.0f;
        }
        return;
    }
    for (int r = 0; r < MR; r++) {
        if (r < mr) {
            const float *s = a_row(a, m0 + r) + (int64_t)k0 * a->s_k;
            for (int k = 0; k < kc; k++)
                pa[k * MR + r] = s[(int64_t)k * a->s_k];
        } else {
            for (int k = 0; k < kc; k++)
                pa[k * MR + r] = 0.0f;
        }
    }
}

#ifdef CX_X86
/* lanes of half (0 or 1) of a 32-column panel holding columns < nr */
static inline __mmask16 tail_mask(int nr, int half)
{
    int n = nr - 16 * half;
    return n >= 16 ? (__mmask16)0xffff : n > 0 ? (__mmask16)((1u << n) - 1) : 0;
}

/* pack_b without transpose: two zmm per k (masked at the panel's tail);
 * with bsc, B's row k0 + k becomes max(0, B * bsc + bsh) on the way. */
__attribute__((target("avx512f"))) static void pack_b_nn(const float *B, int ldb, int k0, int kc,
                                                         int n0, int nr, const float *bsc,
                                                         const float *bsh, float *pb)
{
    const __mmask16 m0 = tail_mask(nr, 0), m1 = tail_mask(nr, 1);
    const __m512 zero = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const float *s = B + (int64_t)(k0 + k) * ldb + n0;
        /* rows are ldb apart (often > 4 KiB): fetch a few ahead */
        _mm_prefetch((const char *)(s + 8 * (int64_t)ldb), _MM_HINT_T0);
        _mm_prefetch((const char *)(s + 8 * (int64_t)ldb + 16), _MM_HINT_T0);
        __m512 v0 = _mm512_maskz_loadu_ps(m0, s), v1 = _mm512_maskz_loadu_ps(m1, s + 16);
        if (bsc) {
            __m512 sc = _mm512_set1_ps(bsc[k0 + k]), sh = _mm512_set1_ps(bsh[k0 + k]);
            v0 = _mm512_maskz_max_ps(m0, _mm512_fmadd_ps(v0, sc, sh), zero);
            v1 = _mm512_maskz_max_ps(m1, _mm512_fmadd_ps(v1, sc, sh), zero);
        }
        _mm512_store_ps(pb + k * NR, v0);
        _mm512_store_ps(pb + k * NR + 16, v1);
    }
}
#endif

#ifdef CX_X86
/* In-register transpose of 16 rows of 16 floats: r[j] becomes column j. */
__attribute__((target("avx512f"), always_inline)) static inline void tr16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 16; i += 8)
        for (int j = 0; j < 4; j++) {
            t[i + j] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0x88);
            t[i + j + 4] = _mm512_shuffle_f32x4(r[i + j], r[i + j + 4], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xdd);
    }
}
#endif

static inline float bn_relu1(float v, const float *bsc, const float *bsh, int i)
{
    if (!bsc)
        return v;
    v = v * bsc[i] + bsh[i];
    return v > 0.0f ? v : 0.0f;
}

#ifdef CX_X86
/* Transposed B, k in [0, kc) with kc a multiple of 16: 16x16 blocks of B's
 * rows (BN-ReLU applied per row), transposed in registers. */
__attribute__((target("avx512f"))) static void pack_bt_avx512(const float *B, int ldb, int k0,
                                                              int kc, int n0, int nr,
                                                              const float *bsc,
                                                              const float *bsh, float *pb)
{
    const __m512 zero = _mm512_setzero_ps();
    for (int cb = 0; cb < NR; cb += 16)
        for (int kb = 0; kb < kc; kb += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                int c = cb + i;
                if (c >= nr) {
                    r[i] = zero;
                    continue;
                }
                r[i] = _mm512_loadu_ps(B + (int64_t)(n0 + c) * ldb + k0 + kb);
                if (bsc)
                    r[i] = _mm512_max_ps(_mm512_fmadd_ps(r[i], _mm512_set1_ps(bsc[n0 + c]),
                                                         _mm512_set1_ps(bsh[n0 + c])),
                                         zero);
            }
            tr16(r);
            for (int j = 0; j < 16; j++)
                _mm512_store_ps(pb + (kb + j) * NR + cb, r[j]);
        }
}
#endif

/* pb[k*NR + c] = op(B)[k0 + k][n0 + c], zero columns past nr; with bsc,
 * stored row i of B is transformed to max(0, B * bsc[i] + bsh[i]) */
static void pack_b(int tb, const float *B, int ldb, int k0, int kc, int n0, int nr,
                   const float *bsc, const float *bsh, float *pb)
{
    if (!tb) {
        for (int k = 0; k < kc; k++) {
            const float *s = B + (int64_t)(k0 + k) * ldb + n0;
            float *d = pb + k * NR;
            for (int c = 0; c < nr; c++)
                d[c] = bn_relu1(s[c], bsc, bsh, k0 + k);
            if (nr < NR)
                memset(d + nr, 0, sizeof(float) * (size_t)(NR - nr));
        }
    } else {
        int kdone = 0;
#ifdef CX_X86
        if (use_avx512()) {
            kdone = kc & ~15;
            pack_bt_avx512(B, ldb, k0, kdone, n0, nr, bsc, bsh, pb);
        }
#endif
        for (int c = 0; c < NR; c++) {
            if (c < nr) {
                const float *s = B + (int64_t)(n0 + c) * ldb + k0;
                for (int k = kdone; k < kc; k++)
                    pb[k * NR + c] = bn_relu1(s[k], bsc, bsh, n0 + c);
            } else {
                for (int k = kdone; k < kc; k++)
                    pb[k * NR + c] = 0.0f;
            }
        }
    }
}

/* Plain loops (no buffers): the last resort when a panel buffer cannot be
 * allocated, and the path of transformed B on CPUs without AVX-512. */
static void sgemm_plain(const a_view *av, int tb, int M, int N, int K, const float *B, int ldb,
                        const float *bsc, const float *bsh, int accumulate, float *C, int ldc)
{
#pragma omp parallel for schedule(static) if ((double)M * N * K >= SGEMM_PAR_MIN)
    for (int m = 0; m < M; m++) {
        float *c = C + (int64_t)m * ldc;
        if (!accumulate)
            memset(c, 0, sizeof(float) * (size_t)N);
        for (int k = 0; k < K; k++) {
            float a = a_row(av, m)[(int64_t)k * av->s_k];
            if (tb) {
                for (int n = 0; n < N; n++)
                    c[n] += a * bn_relu1(B[(int64_t)n * ldb + k], bsc, bsh, n);
            } else {
                const float *b = B + (int64_t)k * ldb;
                for (int n = 0; n < N; n++)
                    c[n] += a * bn_relu1(b[n], bsc, bsh, k);
            }
        }
    }
}

/* The gradient epilogue's plain loops (cx_sgemm_bnrelu_grad without
 * AVX-512, or without buffers): one row of op(A) B at a time. */
static void sgemm_grad_plain(const a_view *av, int M, int N, int K, const float *B, int ldb,
                             const cx_bnrelu_grad *e, float *DX, int ldx)
{
#pragma omp parallel for schedule(static) if ((double)M * N * K >= SGEMM_PAR_MIN)
    for (int m = 0; m < M; m++) {
        const float *x = e->x + (int64_t)m * ldx;
        float *dx = DX + (int64_t)m * ldx;
        const float sc = e->scale[m], sh = e->shift[m], mu = e->mean[m], is = e->invstd[m];
        double sd = 0.0, sdh = 0.0;
        for (int n = 0; n < N; n++) {
            float g = 0.0f;
            for (int k = 0; k < K; k++)
                g += a_row(av, m)[(int64_t)k * av->s_k] * B[(int64_t)k * ldb + n];
            float d = x[n] * sc + sh > 0.0f ? g : 0.0f;
            sd += d;
            sdh += d * ((x[n] - mu) * is);
            dx[n] += sc * d;
        }
        e->dbeta[m] += (float)sd;
        e->dgamma[m] += (float)sdh;
    }
}

/* cx_sgemm_conv_same's plain loops (no AVX-512, or no buffers). */
static void conv_same_plain(int Cout, int Cin, int k, const float *w, int N, int H, int W,
                            const float *x, int64_t ldx, const float *bsc, const float *bsh,
                            float *y, int64_t ldy)
{
    int pad = (k - 1) / 2;
#pragma omp parallel for collapse(2) schedule(static) if ((double)Cout * N * H * W * Cin * k * k >= SGEMM_PAR_MIN)
    for (int co = 0; co < Cout; co++)
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < H; oy++)
                for (int ox = 0; ox < W; ox++) {
                    float acc = 0.0f;
                    for (int q = 0; q < k * k; q++) {
                        int iy = oy + q / k - pad, ix = ox + q % k - pad;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                            continue;
                        int64_t p = ((int64_t)n * H + iy) * W + ix;
                        float g = 0.0f;
                        for (int ci = 0; ci < Cin; ci++)
                            g += w[((int64_t)co * Cin + ci) * k * k + q] *
                                 bn_relu1(x[ci * ldx + p], bsc, bsh, ci);
                        acc += g;
                    }
                    y[co * ldy + ((int64_t)n * H + oy) * W + ox] = acc;
                }
}

#ifdef CX_X86
/* Prefetches row r of a 32-column tile at base (rows ld floats apart); the
 * address is computed as an integer as it may lie past the matrix (the
 * last row block's "next" rows), where a prefetch is harmless. */
static inline void prefetch_tile(uintptr_t base, int r, int ld)
{
    uintptr_t p = base + (uintptr_t)((int64_t)r * ld) * sizeof(float);
    _mm_prefetch((const char *)p, _MM_HINT_T0);
    _mm_prefetch((const char *)(p + 64), _MM_HINT_T0);
}

/* sum = A-block x pb over kc: element (r, k) of the A block is
 * rows[r][k * cs] (a packed panel: rows[r] = pa + r, cs = MR; or A in
 * place). Partial sums of CH products per register, then over the chunk. */
__attribute__((target("avx512f"), always_inline)) static inline void
ukr_sum(int kc, const float *const rows[MR], int64_t cs, const float *pb, __m512 sum[MR][2])
{
    const float *r0 = rows[0], *r1 = rows[1], *r2 = rows[2], *r3 = rows[3], *r4 = rows[4],
                *r5 = rows[5], *r6 = rows[6], *r7 = rows[7];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
        sum[r][0] = sum[r][1] = _mm512_setzero_ps();
    for (int k0 = 0; k0 < kc; k0 += CH) {
        int k1 = k0 + CH < kc ? k0 + CH : kc;
        __m512 acc[MR][2];
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++)
            acc[r][0] = acc[r][1] = _mm512_setzero_ps();
        for (int k = k0; k < k1; k++) {
            __m512 b0 = _mm512_load_ps(pb + k * NR), b1 = _mm512_load_ps(pb + k * NR + 16);
            int64_t o = k * cs;
            const float av[MR] = {r0[o], r1[o], r2[o], r3[o], r4[o], r5[o], r6[o], r7[o]};
#pragma GCC unroll 8
            for (int r = 0; r < MR; r++) {
                __m512 a = _mm512_set1_ps(av[r]);
                acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            sum[r][0] = _mm512_add_ps(sum[r][0], acc[r][0]);
            sum[r][1] = _mm512_add_ps(sum[r][1], acc[r][1]);
        }
    }
}

/* C[0..mr)[0..nr) (+)= the A block x pb (load = 1: C holds earlier chunks) */
__attribute__((target("avx512f"))) static void ukr(int kc, const float *const rows[MR],
                                                   int64_t cs, const float *pb, float *C, int ldc,
                                                   int mr, int nr, int load)
{
    /* the next row block's C rows (ldc apart: no hardware prefetcher follows
     * them) arrive while this block's products are summed */
    for (int r = MR; r < 2 * MR; r++)
        prefetch_tile((uintptr_t)C, r, ldc);
    __m512 sum[MR][2];
    ukr_sum(kc, rows, cs, pb, sum);
    __mmask16 m0 = tail_mask(nr, 0), m1 = tail_mask(nr, 1);
    for (int r = 0; r < mr; r++) {
        float *c = C + (int64_t)r * ldc;
        __m512 v0 = sum[r][0], v1 = sum[r][1];
        if (load) {
            v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c), v0);
            v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + 16), v1);
        }
        _mm512_mask_storeu_ps(c, m0, v0);
        _mm512_mask_storeu_ps(c + 16, m1, v1);
    }
}

/* The BN-ReLU gradient epilogue (cx_sgemm_bnrelu_grad) of rows m0.., for
 * the whole of K at once: g = the A block x pb; with x's tile at X (rows
 * ldc apart), d = g where x * scale + shift > 0 (else 0); DX += scale * d;
 * sums[2m] += sum d and sums[2m + 1] += sum d * (x - mean) * invstd. */
__attribute__((target("avx512f"))) static void ukr_grad(int kc, const float *const rows[MR],
                                                        int64_t cs, const float *pb,
                                                        const cx_bnrelu_grad *e, int m0, int n0,
                                                        float *DX, int ldc, int mr, int nr,
                                                        double *sums)
{
    /* the next row block's x and dx (rows ldc apart: no hardware prefetcher
     * follows them) arrive while this block's products are summed */
    for (int r = MR; r < 2 * MR; r++) {
        prefetch_tile((uintptr_t)(e->x + (int64_t)m0 * ldc + n0), r, ldc);
        prefetch_tile((uintptr_t)DX, r, ldc);
    }
    __m512 sum[MR][2];
    ukr_sum(kc, rows, cs, pb, sum);
    const __mmask16 k0 = tail_mask(nr, 0), k1 = tail_mask(nr, 1);
    const __m512 zero = _mm512_setzero_ps();
    for (int r = 0; r < mr; r++) {
        int m = m0 + r;
        const float *x = e->x + (int64_t)m * ldc + n0;
        float *dx = DX + (int64_t)r * ldc;
        __m512 sc = _mm512_set1_ps(e->scale[m]), sh = _mm512_set1_ps(e->shift[m]);
        __m512 mu = _mm512_set1_ps(e->mean[m]), is = _mm512_set1_ps(e->invstd[m]);
        __m512 x0 = _mm512_maskz_loadu_ps(k0, x), x1 = _mm512_maskz_loadu_ps(k1, x + 16);
        __mmask16 p0 = _mm512_mask_cmp_ps_mask(k0, _mm512_fmadd_ps(x0, sc, sh), zero, _CMP_GT_OQ);
        __mmask16 p1 = _mm512_mask_cmp_ps_mask(k1, _mm512_fmadd_ps(x1, sc, sh), zero, _CMP_GT_OQ);
        __m512 d0 = _mm512_maskz_mov_ps(p0, sum[r][0]), d1 = _mm512_maskz_mov_ps(p1, sum[r][1]);
        __m512 h0 = _mm512_mul_ps(_mm512_sub_ps(x0, mu), is);
        __m512 h1 = _mm512_mul_ps(_mm512_sub_ps(x1, mu), is);
        sums[2 * m] += _mm512_reduce_add_ps(_mm512_add_ps(d0, d1));
        sums[2 * m + 1] += _mm512_reduce_add_ps(_mm512_fmadd_ps(d1, h1, _mm512_mul_ps(d0, h0)));
        _mm512_mask_storeu_ps(dx, k0, _mm512_fmadd_ps(sc, d0, _mm512_maskz_loadu_ps(k0, dx)));
        _mm512_mask_storeu_ps(dx + 16, k1,
                              _mm512_fmadd_ps(sc, d1, _mm512_maskz_loadu_ps(k1, dx + 16)));
    }
}

/* The kn2row epilogue (cx_sgemm_conv_same) of rows m0 + r, r < mr, row m
 * being tap m % kk of output channel m / kk: the tile is added into y at
 * the tap's shift, in the lanes whose target lies inside the image
 * (valid[q], a 32-bit mask per tap). */
__attribute__((target("avx512f"))) static void ukr_taps(int kc, const float *const rows[MR],
                                                        int64_t cs, const float *pb, int m0,
                                                        int mr, int kk, const int64_t *shift,
                                                        const uint32_t *valid, float *y,
                                                        int64_t ldy, int n0)
{
    __m512 sum[MR][2];
    ukr_sum(kc, rows, cs, pb, sum);
    int co = m0 / kk, q = m0 % kk; /* of row r, stepped (no division per row) */
    for (int r = 0; r < mr; r++) {
        /* lanes outside the image are masked off: the address may lie
         * before y's start (masked lanes are never touched) */
        float *t = (float *)((uintptr_t)(y + co * ldy + n0) - (uintptr_t)(shift[q] * 4));
        __mmask16 v0 = (__mmask16)(valid[q] & 0xffff), v1 = (__mmask16)(valid[q] >> 16);
        _mm512_mask_storeu_ps(t, v0, _mm512_add_ps(_mm512_maskz_loadu_ps(v0, t), sum[r][0]));
        _mm512_mask_storeu_ps(t + 16, v1,
                              _mm512_add_ps(_mm512_maskz_loadu_ps(v1, t + 16), sum[r][1]));
        if (++q == kk) {
            q = 0;
            co++;
        }
    }
}

/* pack_a for conv_same's A, row m = (co, q) = w[co][.][q], rows m0.. (mr
 * of them, zero rows after): for each k = ci, a block's rows are one or two
 * runs of consecutive taps, contiguous in w[co][ci][.], copied by masked
 * 8-float moves. */
__attribute__((target("avx512f,avx512vl"))) static void pack_a_taps(const float *w, int Cin,
                                                                   int kk, int m0, int mr,
                                                                   float *pa)
{
    int run_r[MR], run_n[MR], nrun = 0; /* runs: first row in the block, length */
    const float *run_src[MR];
    for (int r = 0; r < mr;) {
        int m = m0 + r, co = m / kk, q = m % kk;
        int n = kk - q < mr - r ? kk - q : mr - r;
        run_r[nrun] = r;
        run_n[nrun] = n;
        run_src[nrun] = w + (int64_t)co * Cin * kk + q;
        nrun++;
        r += n;
    }
    /* lanes run_r .. run_r + run_n of the block take run j */
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i idx[MR];
    __mmask8 ld[MR], put[MR];
    for (int j = 0; j < nrun; j++) {
        idx[j] = _mm256_sub_epi32(lane, _mm256_set1_epi32(run_r[j]));
        ld[j] = (__mmask8)((1u << run_n[j]) - 1);
        put[j] = (__mmask8)(ld[j] << run_r[j]);
    }
    for (int k = 0; k < Cin; k++) {
        __m256 v = _mm256_setzero_ps();
        for (int j = 0; j < nrun; j++)
            v = _mm256_mask_permutexvar_ps(
                v, put[j], idx[j], _mm256_maskz_loadu_ps(ld[j], run_src[j] + (int64_t)k * kk));
        _mm256_store_ps(pa + (size_t)k * MR, v);
    }
}

/* cx_sgemm_conv_same on the AVX-512 kernel. Threads take disjoint ranges of
 * output channels (no two add into the same y), each with its rows of A
 * packed whole (K = Cin in one chunk) and every panel of B packed in turn. */
static void conv_same_avx512(int Cout, int Cin, int k, const float *w, int N, int H, int W,
                             const float *x, int64_t ldx, const float *bsc, const float *bsh,
                             float *y, int64_t ldy)
{
    int kk = k * k, pad = (k - 1) / 2, HW = H * W;
    int64_t P = (int64_t)N * HW;
    int nN = (int)((P + NR - 1) / NR);
    int64_t shift[121];
    for (int q = 0; q < kk && q < 121; q++)
        shift[q] = (int64_t)(q / k - pad) * W + (q % k - pad);
    int par = (double)Cout * kk * P * Cin >= SGEMM_PAR_MIN && !omp_in_parallel();
    int oom = 0;
#pragma omp parallel if (par) shared(oom)
    {
        int nth = omp_get_num_threads(), tid = omp_get_thread_num();
        int co0 = (int)((int64_t)Cout * tid / nth), co1 = (int)((int64_t)Cout * (tid + 1) / nth);
        int r0 = co0 * kk, nrows = (co1 - co0) * kk, nblk = (nrows + MR - 1) / MR;
        float *pb = grow(&tls_b, &tls_b_n, (size_t)NR * Cin);
        float *pa = nblk ? grow(&tls_a, &tls_a_n, (size_t)nblk * MR * Cin) : NULL;
        if (!pb || (nblk && !pa)) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp barrier
        int skip;
#pragma omp atomic read
        skip = oom;
        if (!skip) {
            for (int co = co0; co < co1; co++)
                memset(y + co * ldy, 0, sizeof(float) * (size_t)P);
            for (int b = 0; b < nblk; b++) {
                int mr = nrows - b * MR < MR ? nrows - b * MR : MR;
                pack_a_taps(w, Cin, kk, r0 + b * MR, mr, pa + (size_t)b * MR * Cin);
            }
        }
        for (int nb = 0; !skip && nb < nN && nblk; nb++) {
            int64_t n0 = (int64_t)nb * NR;
            int nr = P - n0 < NR ? (int)(P - n0) : NR;
            /* position (row, column) in its image of the panel's first column */
            int64_t rem = n0 % HW;
            int yy0 = (int)(rem / W), xx0 = (int)(rem % W);
            /* lanes whose target row / column, shifted by d, is inside */
            uint32_t rowok[11] = {0}, colok[11] = {0};
            for (int l = 0, yy = yy0, xx = xx0; l < nr; l++) {
                for (int d = -pad; d <= pad; d++) {
                    if (yy - d >= 0 && yy - d < H)
                        rowok[d + pad] |= 1u << l;
                    if (xx - d >= 0 && xx - d < W)
                        colok[d + pad] |= 1u << l;
                }
                if (++xx == W) {
                    xx = 0;
                    if (++yy == H)
                        yy = 0;
                }
            }
            uint32_t valid[121];
            for (int q = 0; q < kk && q < 121; q++)
                valid[q] = rowok[q / k] & colok[q % k];
            pack_b_nn(x, (int)ldx, 0, Cin, (int)n0, nr, bsc, bsh, pb);
            for (int b = 0; b < nblk; b++) {
                int mr = nrows - b * MR < MR ? nrows - b * MR : MR;
                const float *rows[MR];
                for (int r = 0; r < MR; r++)
                    rows[r] = pa + (size_t)b * MR * Cin + r;
                ukr_taps(Cin, rows, MR, pb, r0 + b * MR, mr, kk, shift, valid, y, ldy, (int)n0);
            }
        }
    }
    if (oom) /* nothing was computed: the plain loops instead */
        conv_same_plain(Cout, Cin, k, w, N, H, W, x, ldx, bsc, bsh, y, ldy);
}

/* With eg (cx_sgemm_bnrelu_grad): K in one chunk (the epilogue needs the
 * whole sum), the gradient epilogue instead of the store, and per-thread
 * row sums added up in thread order. */
static void sgemm_avx512(const a_view *av, int tb, int M, int N, int K, const float *B, int ldb,
                         const float *bsc, const float *bsh, int accumulate, float *C, int ldc,
                         const cx_bnrelu_grad *eg)
{
    int nM = (M + MR - 1) / MR, nN = (N + NR - 1) / NR;
    int par = (double)M * N * K >= SGEMM_PAR_MIN && !omp_in_parallel();
    int T = par ? omp_get_max_threads() : 1;
    int kcmax = eg ? K : KC;
    /* A is packed when its panels are reused enough (many column panels per
     * thread); otherwise (few columns: batch 1's later blocks) the
     * microkernel reads it in place. */
    int pack = nN > 8 * T;
    float *pa = pack ? grow(&tls_a, &tls_a_n, (size_t)nM * MR * kcmax) : NULL;
    if (pack && !pa)
        pack = 0;
    /* tasks: column panels, times row groups when panels are few */
    int groups = nN >= 2 * T ? 1 : (2 * T + nN - 1) / nN;
    while (groups < nM && (nN * groups) % T && nN * groups < 8 * T)
        groups++; /* an even share per thread when tasks are few */
    if (groups > nM)
        groups = nM;
    int ntask = nN * groups;
    int oom = 0;
    /* per-thread row sums of the gradient epilogue, 2M doubles each */
    double *sums_all = NULL;
    if (eg) {
        sums_all = (double *)grow(&tls_s, &tls_s_n, (size_t)4 * M * T);
        if (!sums_all) {
            sgemm_grad_plain(av, M, N, K, B, ldb, eg, C, ldc);
            return;
        }
        memset(sums_all, 0, sizeof(double) * 2 * (size_t)M * T);
    }
#pragma omp parallel if (par) shared(oom)
    {
        float *pb = grow(&tls_b, &tls_b_n, (size_t)NR * kcmax);
        double *sums = eg ? sums_all + (size_t)2 * M * omp_get_thread_num() : NULL;
        if (!pb) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp barrier
        int skip;
#pragma omp atomic read
        skip = oom;
        for (int k0 = 0; !skip && k0 < K; k0 += kcmax) {
            int kc = K - k0 < kcmax ? K - k0 : kcmax;
            if (pack) {
#pragma omp for schedule(static)
                for (int mb = 0; mb < nM; mb++)
                    pack_a(av, mb * MR, M - mb * MR < MR ? M - mb * MR : MR, k0, kc,
                           pa + (size_t)mb * MR * kcmax);
            }
            int packed = -1; /* the panel in pb (a thread's tasks are consecutive) */
#pragma omp for schedule(static)
            for (int t = 0; t < ntask; t++) {
                int nb = t / groups, g = t % groups;
                int n0 = nb * NR, nr = N - n0 < NR ? N - n0 : NR;
                int mb0 = (int)((int64_t)nM * g / groups);
                int mb1 = (int)((int64_t)nM * (g + 1) / groups);
                if (nb != packed) {
                    if (tb)
                        pack_b(tb, B, ldb, k0, kc, n0, nr, bsc, bsh, pb);
                    else
                        pack_b_nn(B, ldb, k0, kc, n0, nr, bsc, bsh, pb);
                    packed = nb;
                }
                for (int mb = mb0; mb < mb1; mb++) {
                    int mr = M - mb * MR < MR ? M - mb * MR : MR;
                    const float *rows[MR];
                    int64_t cs;
                    if (pack) {
                        for (int r = 0; r < MR; r++)
                            rows[r] = pa + (size_t)mb * MR * kcmax + r;
                        cs = MR;
                    } else {
                        /* rows past M repeat the last one (computed, not stored) */
                        for (int r = 0; r < MR; r++) {
                            int64_t m = mb * MR + (r < mr ? r : mr - 1);
                            rows[r] = a_row(av, m) + (int64_t)k0 * av->s_k;
                        }
                        cs = av->s_k;
                    }
                    float *c = C + (int64_t)mb * MR * ldc + n0;
                    if (eg)
                        ukr_grad(kc, rows, cs, pb, eg, mb * MR, n0, c, ldc, mr, nr, sums);
                    else
                        ukr(kc, rows, cs, pb, c, ldc, mr, nr, accumulate || k0 > 0);
                }
            }
        }
    }
    if (oom) { /* a thread could not get its buffers; nothing was computed */
        if (eg)
            sgemm_grad_plain(av, M, N, K, B, ldb, eg, C, ldc);
        else
            sgemm_plain(av, tb, M, N, K, B, ldb, bsc, bsh, accumulate, C, ldc);
        return;
    }
    if (eg)
        for (int m = 0; m < M; m++) { /* the threads' sums in thread order, one rounding */
            double sd = 0.0, sdh = 0.0;
            for (int t = 0; t < T; t++) {
                sd += sums_all[(size_t)2 * M * t + 2 * m];
                sdh += sums_all[(size_t)2 * M * t + 2 * m + 1];
            }
            eg->dbeta[m] += (float)sd;
            eg->dgamma[m] += (float)sdh;
        }
}
#endif

void cx_sgemm(int transA, int transB, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, int accumulate, float *C, int ldc)
{
    cx_sgemm_bnrelu(transA, transB, M, N, K, A, lda, B, ldb, NULL, NULL, accumulate, C, ldc);
}

void cx_sgemm_bnrelu(int transA, int transB, int M, int N, int K, const float *A, int lda,
                     const float *B, int ldb, const float *bscale, const float *bshift,
                     int accumulate, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        if (!accumulate)
            for (int m = 0; m < M; m++)
                memset(C + (int64_t)m * ldc, 0, sizeof(float) * (size_t)N);
        return;
    }
    a_view av = a_plain(transA, A, lda, M);
#ifdef CX_X86
    if (use_avx512()) {
        sgemm_avx512(&av, transB, M, N, K, B, ldb, bscale, bshift, accumulate, C, ldc, NULL);
        return;
    }
#endif
    if (bscale) {
        sgemm_plain(&av, transB, M, N, K, B, ldb, bscale, bshift, accumulate, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                transB ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb,
                accumulate ? 1.0f : 0.0f, C, ldc);
}

void cx_sgemm_bnrelu_grad(int transA, int M, int N, int K, const float *A, int lda,
                          const float *B, int ldb, const cx_bnrelu_grad *e, float *dx, int ldx)
{
    if (M <= 0 || N <= 0)
        return;
    a_view av = a_plain(transA, A, lda, M);
    if (K <= 0) { /* g = 0: d = 0 everywhere, nothing changes */
        return;
    }
#ifdef CX_X86
    if (use_avx512()) {
        sgemm_avx512(&av, 0, M, N, K, B, ldb, NULL, NULL, 1, dx, ldx, e);
        return;
    }
#endif
    sgemm_grad_plain(&av, M, N, K, B, ldb, e, dx, ldx);
}

void cx_sgemm_conv_same(int Cout, int Cin, int k, const float *w, int N, int H, int W,
                        const float *x, int64_t ldx, const float *bscale, const float *bshift,
                        float *y, int64_t ldy)
{
    if (Cout <= 0 || N <= 0 || H <= 0 || W <= 0)
        return;
#ifdef CX_X86
    if (use_avx512() && k <= 11 && Cin > 0) {
        conv_same_avx512(Cout, Cin, k, w, N, H, W, x, ldx, bscale, bshift, y, ldy);
        return;
    }
#endif
    conv_same_plain(Cout, Cin, k, w, N, H, W, x, ldx, bscale, bshift, y, ldy);
}

const char *cx_sgemm_kernel(void)
{
#ifdef CX_X86
    if (use_avx512())
        return "avx512";
#endif
    return "blas";
}
