/* fp32 GEMM for DenseNet's shapes, written for accuracy as much as speed.
 * This file is compiled once per instruction-set variant of the CPU backend
 * (kernels/cpu/variant.h); the microkernels come from ukr_avx512.inc
 * (AVX-512 intrinsics) or ukr_vec.inc (portable vector code, for AVX2 + FMA,
 * the x86-64 baseline and NEON).
 *
 * Blocking as in BLIS: K in chunks of KC; A packed into MR-row panels
 * (k-major: MR values per k), shared by the threads; B packed per thread
 * into NR-column panels (NR values per k); an MR x NR register block per
 * microkernel call. Threads share out the NR-column panels (and, when there
 * are few, blocks of A's rows).
 *
 * Accuracy: a dot product summed in one register over all of K has an error
 * growing with K. The microkernels sum CH = 32 products per register, add
 * those partial sums into a second set, and add each KC chunk into C:
 * three levels of partial sums, so no value passes through more than
 * about CH + K/CH + K/KC roundings (cx_sgemm_depth), not K.
 * On DenseNet's GEMMs the relative error is about 1.2e-7 (2.8e-7 for a
 * plain sequential kernel), which keeps training gradients at least as
 * accurate as PyTorch's fp32 ones. Transposes and tails are handled by the
 * packing, so one microkernel serves every call. */
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/variant.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CH 32
/* GEMMs with fewer multiply-adds run on the calling thread only */
#define SGEMM_PAR_MIN ((double)(1 << 18))

static inline float bn_relu1(float v, const float *bsc, const float *bsh, int i)
{
    if (!bsc)
        return v;
    v = v * bsc[i] + bsh[i];
    return v > 0.0f ? v : 0.0f;
}

/* pb[k*np + c] = B[n0 + c][k0 + k] (B transposed) for k in [kfrom, kc),
 * BN-ReLU'd by stored row with bsc, zero columns from nr to np (the
 * kernel's NR): the part of pack_bt that the vector code leaves. */
static void pack_bt_scalar(const float *B, int ldb, int k0, int kfrom, int kc, int n0, int nr,
                           int np, const float *bsc, const float *bsh, float *pb)
{
    for (int c = 0; c < np; c++) {
        if (c < nr) {
            const float *s = B + (int64_t)(n0 + c) * ldb + k0;
            for (int k = kfrom; k < kc; k++)
                pb[k * np + c] = bn_relu1(s[k], bsc, bsh, n0 + c);
        } else {
            for (int k = kfrom; k < kc; k++)
                pb[k * np + c] = 0.0f;
        }
    }
}

#if defined(__AVX512F__)
#include "kernels/cpu/ukr_avx512.inc"
#else
#include "kernels/cpu/ukr_vec.inc"
#endif

/* Prefetches (towards L2) rows [ka, kb) of the NR-column panel of B (not
 * transposed) at column n0: the next panel a thread will pack, while it
 * computes with the current one. Its rows are ldb floats apart, often in
 * different pages, where no hardware prefetcher follows; without this the
 * packing waits on memory. */
static inline void prefetch_panel(const float *B, int ldb, int ka, int kb, int n0)
{
    for (int k = ka; k < kb; k++) {
        const char *p = (const char *)(B + (int64_t)k * ldb + n0);
        for (int off = 0; off < (int)(NR * sizeof(float)); off += 64)
            __builtin_prefetch(p + off, 0, 2);
    }
}

/* pack_a for conv_same's A: rows r0.. (mr of them, zero rows after) of
 * (q, co) with co fastest, co in [co0, co0 + nco): row r is tap q = r / nco
 * of channel co = co0 + r % nco, pa[k*MR + i] = w[co][k][q]. */
static void pack_a_taps(const float *w, int Cin, int kk, int co0, int nco, int r0, int mr,
                        float *pa)
{
    for (int i = 0; i < MR; i++) {
        if (i < mr) {
            int r = r0 + i;
            const float *src = w + (int64_t)(co0 + r % nco) * Cin * kk + r / nco;
            for (int k = 0; k < Cin; k++)
                pa[(size_t)k * MR + i] = src[(int64_t)k * kk];
        } else {
            for (int k = 0; k < Cin; k++)
                pa[(size_t)k * MR + i] = 0.0f;
        }
    }
}

/* Per-thread buffers kept between calls (a thread's first call, or a larger
 * size, allocates): steady-state passes allocate nothing. */
static _Thread_local float *tls_a, *tls_b;
static _Thread_local size_t tls_a_n, tls_b_n;
static _Thread_local float *tls_s; /* the calling thread's: row sums (doubles) */
static _Thread_local size_t tls_s_n;
static _Thread_local float *tls_c; /* Winograd's products of a block of tiles */
static _Thread_local size_t tls_c_n;
static _Thread_local float *tls_u; /* the calling thread's: Winograd's weights */
static _Thread_local size_t tls_u_n;

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



/* Plain loops (no buffers): the last resort when a panel buffer cannot be
 * allocated. */
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
 * buffers): one row of op(A) B at a time. */
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

#include "kernels/cpu/wino.inc"

/* cx_sgemm_conv_same's plain loops (no buffers, or k > 11). */
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

/* cx_sgemm_conv_same on the blocked kernel. Threads take disjoint ranges of
 * output channels (no two add into the same y), each with its rows of A
 * packed whole (K = Cin in one chunk) and every panel of B packed in turn. */
static void conv_same_blocked(int Cout, int Cin, int k, const float *w, int N, int H, int W,
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
        /* the thread's rows of A are (q, co), co fastest: consecutive rows of a
         * block add into different channels, so no store in the epilogue is
         * read back by the next row's (partly overlapping, shifted) load */
        int nco = co1 - co0, nrows = nco * kk, nblk = (nrows + MR - 1) / MR;
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
                pack_a_taps(w, Cin, kk, co0, nco, b * MR, mr, pa + (size_t)b * MR * Cin);
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
                if (nb + 1 < nN) /* the next panel's rows, during this one */
                    prefetch_panel(x, (int)ldx, (int)((int64_t)Cin * b / nblk),
                                   (int)((int64_t)Cin * (b + 1) / nblk), (int)(n0 + NR));
                int rb = b * MR;
                ukr_taps(Cin, rows, MR, pb, co0 + rb % nco, rb / nco, co0, co1, mr, shift, valid,
                         y, ldy, (int)n0,
                         P);
            }
        }
    }
    if (oom) /* nothing was computed: the plain loops instead */
        conv_same_plain(Cout, Cin, k, w, N, H, W, x, ldx, bsc, bsh, y, ldy);
}

/* With eg (cx_sgemm_bnrelu_grad): K in one chunk (the epilogue needs the
 * whole sum), the gradient epilogue instead of the store, and per-thread
 * row sums added up in thread order. */
static void sgemm_blocked(const a_view *av, int tb, int M, int N, int K, const float *B, int ldb,
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
            int nth = omp_get_num_threads(), tid = omp_get_thread_num();
            int t0 = (int)((int64_t)ntask * tid / nth), t1 = (int)((int64_t)ntask * (tid + 1) / nth);
            for (int t = t0; t < t1; t++) {
                int nb = t / groups, g = t % groups;
                /* the panel this thread packs next, if another: fetched during this task */
                int nbn = t + 1 < t1 && (t + 1) / groups != nb && !tb ? (t + 1) / groups : -1;
                int n0 = nb * NR, nr = N - n0 < NR ? N - n0 : NR;
                int mb0 = (int)((int64_t)nM * g / groups);
                int mb1 = (int)((int64_t)nM * (g + 1) / groups);
                if (nb != packed) {
                    if (tb)
                        pack_bt(B, ldb, k0, kc, n0, nr, bsc, bsh, pb);
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
                    if (nbn >= 0) {
                        int i = mb - mb0, cnt = mb1 - mb0;
                        prefetch_panel(B, ldb, k0 + (int)((int64_t)kc * i / cnt),
                                       k0 + (int)((int64_t)kc * (i + 1) / cnt), nbn * NR);
                    }
                    float *c = C + (int64_t)mb * MR * ldc + n0;
                    if (eg)
                        ukr_grad(kc, rows, cs, pb, eg, mb * MR, n0, c, ldc, mr, nr, sums);
                    else
                        ukr(kc, rows, cs, pb, c, ldc, mr, nr, accumulate || k0 > 0);
                }
            }
            if (k0 + kcmax < K) {
#pragma omp barrier /* every thread is done with pa before it is packed again */
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
    sgemm_blocked(&av, transB, M, N, K, B, ldb, bscale, bshift, accumulate, C, ldc, NULL);
}

void cx_sgemm_bnrelu_grad(int transA, int M, int N, int K, const float *A, int lda,
                          const float *B, int ldb, const cx_bnrelu_grad *e, float *dx, int ldx)
{
    if (M <= 0 || N <= 0 || K <= 0) /* K = 0: g = 0, d = 0 everywhere, nothing changes */
        return;
    a_view av = a_plain(transA, A, lda, M);
    sgemm_blocked(&av, 0, M, N, K, B, ldb, NULL, NULL, 1, dx, ldx, e);
}

void cx_sgemm_conv_same(int Cout, int Cin, int k, const float *w, int N, int H, int W,
                        const float *x, int64_t ldx, const float *bscale, const float *bshift,
                        float *y, int64_t ldy)
{
    if (Cout <= 0 || N <= 0 || H <= 0 || W <= 0)
        return;
    if (k == 3 && wino_pays(Cout, Cin, N, H, W) &&
        conv3x3_wino(Cout, Cin, w, N, H, W, x, ldx, bscale, bshift, y, ldy))
        return;
    cx_sgemm_conv_same_direct(Cout, Cin, k, w, N, H, W, x, ldx, bscale, bshift, y, ldy);
}

void cx_sgemm_conv_same_direct(int Cout, int Cin, int k, const float *w, int N, int H, int W,
                               const float *x, int64_t ldx, const float *bscale,
                               const float *bshift, float *y, int64_t ldy)
{
    if (Cout <= 0 || N <= 0 || H <= 0 || W <= 0)
        return;
    if (k <= 11 && Cin > 0) {
        conv_same_blocked(Cout, Cin, k, w, N, H, W, x, ldx, bscale, bshift, y, ldy);
        return;
    }
    conv_same_plain(Cout, Cin, k, w, N, H, W, x, ldx, bscale, bshift, y, ldy);
}

int cx_sgemm_conv_same_winograd(int Cout, int Cin, int k, int N, int H, int W)
{
    return k == 3 && wino_pays(Cout, Cin, N, H, W);
}

int cx_sgemm_conv3x3_winograd(int Cout, int Cin, const float *w, int N, int H, int W,
                              const float *x, int64_t ldx, const float *bscale,
                              const float *bshift, float *y, int64_t ldy)
{
    if (Cout <= 0 || Cin <= 0 || N <= 0 || H <= 0 || W <= 0)
        return 0;
    return conv3x3_wino(Cout, Cin, w, N, H, W, x, ldx, bscale, bshift, y, ldy);
}

int cx_sgemm_conv3x3_winograd_depth(int Cin)
{
    /* U's GEMM (K = 9), V's 2 roundings, the GEMM over Cin, the output's 4 */
    return cx_sgemm_depth(9) + 2 + cx_sgemm_depth(Cin) + 4;
}

const char *cx_sgemm_kernel(void) { return UKR_NAME; }

int cx_sgemm_depth(int K)
{
    /* CH products per register, the register sums of a chunk (at most
     * ceil(K / CH) of them, whether K is chunked or not), the chunks into C,
     * the product's own rounding where there is no FMA, C's earlier value */
    return CH + (K + CH - 1) / CH + (K + KC - 1) / KC + 2;
}
