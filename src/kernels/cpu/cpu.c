/* CPU backend: convolutions as GEMMs (cx_sgemm, kernels/cpu/sgemm.c; bf16
 * kernels in kernels/cpu/bf16.c), everything else as OpenMP loops. Layouts
 * as in kernels/backend.h (activations CNHW). This file is compiled once per
 * instruction-set variant (kernels/cpu/variant.h), so the compiler's
 * vectorisation of the loops below follows the variant too. */
#include "kernels/backend.h"
#include "kernels/bf16_layout.h"
#include "kernels/cpu/backend_cpu.h"
#include "kernels/cpu/bf16.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/variant.h"
#include "kernels/host_memory.h"
#include "kernels/ref/ref.h"

#include <math.h>
#include <string.h>

/* Cap on the im2col buffer, in floats (32 MiB); at least one image fits. */
#define CX_IM2COL_CAP ((size_t)8 << 20)

/* Regions with less work than this run on one thread (OpenMP start-up and
 * barriers cost more than they save on small tensors, e.g. at batch 1). */
#define CX_PAR_MIN 32768

static cx_status cpu_bn_relu(cx_backend *be, const float *x, float *y, int C, int64_t P,
                             const float *scale, const float *shift)
{
#pragma omp parallel for schedule(static) if ((int64_t)C * P > CX_PAR_MIN)
    for (int c = 0; c < C; c++) {
        const float sc = scale[c], sh = shift[c];
        const float *xp = x + c * P;
        float *yp = y + c * P;
#pragma omp simd
        for (int64_t p = 0; p < P; p++) {
            float v = xp[p] * sc + sh;
            yp[p] = v > 0.0f ? v : 0.0f;
        }
    }
    return CX_OK;
}

static int is_pointwise(int k, int s, int pad) { return k == 1 && s == 1 && pad == 0; }

/* "Same" convolutions (stride 1, 2*pad = k-1, e.g. DenseNet's 3x3) avoid
 * im2col: forward computes Z[(kk,co)][p] = sum_ci W[co][ci][kk] x[ci][p] as
 * one GEMM (K = Cin) and adds the k*k shifted planes of Z in the GEMM's
 * epilogue (Z is never stored); backward builds the k*k shifted copies of
 * dy (k*k*Cout rows instead of k*k*Cin) and gets dx and dw from one GEMM
 * each. Memory traffic is Cout/Cin of im2col's. */
static int is_same_conv(int k, int s, int pad) { return k > 1 && s == 1 && 2 * pad == k - 1; }

static int kn2row_images(int N, int HW, int Cout, int k)
{
    size_t per_image = (size_t)k * k * Cout * HW;
    size_t nb = CX_IM2COL_CAP / per_image;
    if (nb < 1)
        nb = 1;
    if (nb > (size_t)N)
        nb = (size_t)N;
    return (int)nb;
}

static size_t cpu_conv_scratch(const cx_backend *be, int Cin, int N, int H, int W, int Cout, int k,
                               int s, int pad)
{
    if (is_pointwise(k, s, pad))
        return 0;
    if (is_same_conv(k, s, pad)) /* Z is never stored */
        return 0;
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    size_t per_image = (size_t)Cin * k * k * Ho * Wo;
    size_t nb = CX_IM2COL_CAP / per_image;
    if (nb < 1)
        nb = 1;
    if (nb > (size_t)N)
        nb = (size_t)N;
    return per_image * nb;
}

/* col[(ci*k + ky)*k + kx][j*Ho*Wo + oy*Wo + ox] for images n0..n0+nb-1. */
static void im2col(const float *x, int Cin, int N, int H, int W, int k, int s, int pad,
                   int n0, int nb, float *col)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    int64_t P = (int64_t)N * H * W, cols = (int64_t)nb * Ho * Wo;
    int rows = Cin * k * k;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        int ci = r / (k * k), ky = (r / k) % k, kx = r % k;
        float *dst = col + r * cols;
        for (int j = 0; j < nb; j++) {
            const float *src = x + ci * P + (int64_t)(n0 + j) * H * W;
            float *d = dst + (int64_t)j * Ho * Wo;
            for (int oy = 0; oy < Ho; oy++) {
                int iy = oy * s - pad + ky;
                float *drow = d + oy * Wo;
                if (iy < 0 || iy >= H) {
                    memset(drow, 0, sizeof(float) * Wo);
                    continue;
                }
                const float *srow = src + iy * W;
                if (s == 1) {
                    int lo = pad - kx, hi = W + pad - kx; /* ox range with ix in [0,W) */
                    if (lo < 0)
                        lo = 0;
                    if (hi > Wo)
                        hi = Wo;
                    for (int ox = 0; ox < lo && ox < Wo; ox++)
                        drow[ox] = 0.0f;
                    if (hi > lo)
                        memcpy(drow + lo, srow + lo - pad + kx, sizeof(float) * (hi - lo));
                    for (int ox = hi > lo ? hi : lo; ox < Wo; ox++)
                        drow[ox] = 0.0f;
                } else {
                    /* ox range with ix = ox*s - pad + kx inside [0, W) */
                    int off = kx - pad;
                    int lo = off >= 0 ? 0 : (-off + s - 1) / s;
                    int hi = W - 1 - off < 0 ? 0 : (W - 1 - off) / s + 1;
                    if (hi > Wo)
                        hi = Wo;
                    if (lo > hi)
                        lo = hi;
                    for (int ox = 0; ox < lo; ox++)
                        drow[ox] = 0.0f;
                    const float *sr = srow + off;
                    if (s == 2) { /* the stem's stride: constant, vectorised */
#pragma omp simd
                        for (int ox = lo; ox < hi; ox++)
                            drow[ox] = sr[2 * ox];
                    } else {
                        for (int ox = lo; ox < hi; ox++)
                            drow[ox] = sr[ox * s];
                    }
                    for (int ox = hi; ox < Wo; ox++)
                        drow[ox] = 0.0f;
                }
            }
        }
    }
}

/* A "same" convolution by kn2row (see is_same_conv); with bsc, x's channel
 * ci is read as max(0, x * bsc[ci] + bsh[ci]) (inside the GEMM's packing). */
static void same_conv(const cx_backend *be, const float *x, int Cin, int N, int H, int W,
                      const float *w, int Cout, int k, const float *bsc, const float *bsh, float *y)
{
    int64_t Po = (int64_t)N * H * W;
    if (be->direct_conv)
        cx_sgemm_conv_same_direct(Cout, Cin, k, w, N, H, W, x, Po, bsc, bsh, y, Po);
    else
        cx_sgemm_conv_same(Cout, Cin, k, w, N, H, W, x, Po, bsc, bsh, y, Po);
}

static cx_status cpu_conv2d(cx_backend *be, const float *x, int Cin, int N, int H, int W,
                            const float *w, int Cout, int k, int s, int pad, float *y,
                            float *scratch, size_t scratch_n)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    int64_t Po = (int64_t)N * Ho * Wo;
    if (is_pointwise(k, s, pad)) {
        /* y[Cout][N*HW] = w[Cout][Cin] * x[Cin][N*HW] */
        cx_sgemm(0, 0, Cout, (int)Po, Cin, w, Cin, x, (int)Po, 0, y, (int)Po);
        return CX_OK;
    }
    if (is_same_conv(k, s, pad)) {
        same_conv(be, x, Cin, N, H, W, w, Cout, k, NULL, NULL, y);
        return CX_OK;
    }
    size_t per_image = (size_t)Cin * k * k * Ho * Wo;
    int nb = (int)(scratch_n / per_image);
    if (nb < 1)
        nb = 1; /* caller guarantees scratch_n >= per_image */
    int K = Cin * k * k;
    for (int n0 = 0; n0 < N; n0 += nb) {
        int cnt = N - n0 < nb ? N - n0 : nb;
        int cols = cnt * Ho * Wo;
        im2col(x, Cin, N, H, W, k, s, pad, n0, cnt, scratch);
        /* rows of y for images n0.. are at stride Po */
        cx_sgemm(0, 0, Cout, cols, K, w, K, scratch, cols, 0, y + (int64_t)n0 * Ho * Wo,
                 (int)Po);
    }
    return CX_OK;
}

/* bf16 convolutions (kernels/cpu/bf16.c). Pointwise: one GEMM. "Same"
 * convolutions read the zero-padded grid layout (kernels/bf16_layout.h), where
 * every tap is a column shift: the k*k taps are summed in the kernel's
 * accumulators over the grid, and the image positions are cropped out. */
static void grid_conv(const uint16_t *xg, int Cin, int N, int H, int W, const uint16_t *w,
                      int Cout, int k, float *y, float *yq)
{
    int pad = (k - 1) / 2;
    cx_bf16_grid g = cx_bf16_grid_of(N, H, W, k);
    int64_t HW = (int64_t)H * W, P = (int64_t)N * HW;
    int64_t shift[121];
    for (int q = 0; q < k * k && q < 121; q++)
        shift[q] = (int64_t)(q / k - pad) * g.Wq + (q % k - pad);
    cpu_bf16_conv_taps(Cout, g.Q, cx_bf16_kpad(Cin), w, k * k, shift, xg + 2 * g.G, g.Qp, yq,
                       g.Q);
#pragma omp parallel for collapse(2) schedule(static) if ((int64_t)Cout * P > CX_PAR_MIN)
    for (int co = 0; co < Cout; co++)
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < H; oy++)
                memcpy(y + co * P + n * HW + (int64_t)oy * W,
                       yq + co * g.Q + ((int64_t)n * g.Hq + oy + pad) * g.Wq + pad,
                       sizeof(float) * (size_t)W);
}

static size_t cpu_conv_grid_bf16_scratch(const cx_backend *be, int Cin, int N, int H, int W,
                                         int Cout, int k)
{
    (void)Cin;
    return (size_t)Cout * (size_t)cx_bf16_grid_of(N, H, W, k).Q;
}

static cx_status cpu_conv2d_grid_bf16(cx_backend *be, const uint16_t *xg, int Cin, int N, int H,
                                      int W, const uint16_t *w, int Cout, int k, float *y,
                                      float *scratch, size_t scratch_n)
{
    (void)scratch_n;
    grid_conv(xg, Cin, N, H, W, w, Cout, k, y, scratch);
    return CX_OK;
}

static size_t cpu_conv_bf16_scratch(const cx_backend *be, int Cin, int N, int H, int W, int Cout,
                                    int k)
{
    if (k == 1)
        return 0;
    cx_bf16_grid g = cx_bf16_grid_of(N, H, W, k);
    /* the input copied into the grid (bf16, counted in floats) + the grid output */
    return (size_t)(cx_bf16_kpad(Cin) * g.Qp / 2) + 16 + (size_t)Cout * g.Q;
}

static cx_status cpu_conv2d_bf16(cx_backend *be, const uint16_t *x, int Cin, int N, int H, int W,
                                 const uint16_t *w, int Cout, int k, float *y, float *scratch,
                                 size_t scratch_n)
{
    (void)scratch_n;
    int64_t HW = (int64_t)H * W, P = (int64_t)N * HW, Pp = cx_bf16_ppad(P);
    int64_t Kp = cx_bf16_kpad(Cin);
    if (k == 1) {
        cpu_bf16_gemm(Cout, P, Kp, w, x, Pp, y, P);
        return CX_OK;
    }
    /* plain packed input: copy it into the grid layout first */
    int pad = (k - 1) / 2;
    cx_bf16_grid g = cx_bf16_grid_of(N, H, W, k);
    uint32_t *xq = (uint32_t *)scratch; /* one bf16 pair per uint32 */
    float *yq = scratch + ((size_t)(Kp * g.Qp / 2) + 15) / 16 * 16;
    const uint32_t *xs = (const uint32_t *)x;
    int64_t pairs = Kp / 2;
#pragma omp parallel for schedule(static) if (pairs * g.Qp > 65536)
    for (int64_t j = 0; j < pairs; j++) {
        uint32_t *d = xq + j * g.Qp;
        const uint32_t *src = xs + j * Pp;
        memset(d, 0, sizeof(uint32_t) * (size_t)g.Qp);
        for (int n = 0; n < N; n++)
            for (int iy = 0; iy < H; iy++)
                memcpy(d + g.G + ((int64_t)n * g.Hq + iy + pad) * g.Wq + pad,
                       src + n * HW + (int64_t)iy * W, sizeof(uint32_t) * (size_t)W);
    }
    grid_conv((const uint16_t *)xq, Cin, N, H, W, w, Cout, k, y, yq);
    return CX_OK;
}

/* The BN-ReLU goes into the GEMM's packing of B (sgemm.c). */
static cx_status cpu_conv1x1_bn_relu(cx_backend *be, const float *x, int Cin, int64_t P,
                                     const float *scale, const float *shift, const float *w,
                                     int Cout, float *y, float *scratch)
{
    (void)scratch;
    cx_sgemm_bnrelu(0, 0, Cout, (int)P, Cin, w, Cin, x, (int)P, scale, shift, 0, y, (int)P);
    return CX_OK;
}

static cx_status cpu_conv1x1_bn_relu_backward(cx_backend *be, const float *x, int Cin, int64_t P,
                                              const float *scale, const float *shift,
                                              const float *w, int Cout, const float *dy, float *dw,
                                              float *da, int accumulate, float *scratch)
{
    (void)scratch;
    cx_sgemm_bnrelu(0, 1, Cout, Cin, (int)P, dy, (int)P, x, (int)P, scale, shift, 1, dw, Cin);
    if (da)
        cx_sgemm(1, 0, Cin, (int)P, Cout, w, Cin, dy, (int)P, accumulate, da, (int)P);
    return CX_OK;
}

/* The input range [*lo, *hi) of pooling window o (size k, stride s, padding
 * pad) inside an axis of n values. */
static inline void pool_window(int o, int k, int s, int pad, int n, int *lo, int *hi)
{
    int a = o * s - pad, b = a + k;
    *lo = a < 0 ? 0 : a;
    *hi = b > n ? n : b;
}

/* Max of a and b that propagates NaN like PyTorch's max pooling. */
static inline float max_nan(float m, float v) { return (v > m || v != v) ? v : m; }

static cx_status cpu_maxpool(cx_backend *be, const float *x, int C, int N, int H, int W, int k,
                             int s, int pad, float *y)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    int64_t planes = (int64_t)C * N;
#pragma omp parallel if (planes * Ho * Wo > 16384)
    {
        float *rowmax = NULL;
        if (W <= 4096)
            rowmax = __builtin_alloca(sizeof(float) * (size_t)W);
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            const float *xp = x + pl * H * W;
            float *yp = y + pl * Ho * Wo;
            for (int oy = 0; oy < Ho; oy++) {
                int y0, y1;
                pool_window(oy, k, s, pad, H, &y0, &y1);
                if (rowmax) {
                    /* separable: max over the window's rows, then columns */
                    memcpy(rowmax, xp + y0 * W, sizeof(float) * W);
                    for (int iy = y0 + 1; iy < y1; iy++) {
                        const float *xr = xp + iy * W;
#pragma omp simd
                        for (int ix = 0; ix < W; ix++)
                            rowmax[ix] = max_nan(rowmax[ix], xr[ix]);
                    }
                    /* windows wholly inside the row: ox in [in0, in1) */
                    int in0 = (pad + s - 1) / s, in1 = (W - k + pad) / s + 1;
                    if (in1 > Wo)
                        in1 = Wo;
                    if (in0 > in1)
                        in0 = in1;
                    for (int ox = 0; ox < Wo; ox++) {
                        if (ox == in0 && k == 3) {
                            /* the common 3-wide window, branch-free */
                            const float *r = rowmax - pad;
                            float *yr = yp + oy * Wo;
                            if (s == 2) { /* constant stride: vectorised */
#pragma omp simd
                                for (int o = in0; o < in1; o++)
                                    yr[o] = max_nan(max_nan(r[2 * o], r[2 * o + 1]), r[2 * o + 2]);
                                ox = in1;
                            }
                            for (; ox < in1; ox++) {
                                const float *q = r + ox * s;
                                yr[ox] = max_nan(max_nan(q[0], q[1]), q[2]);
                            }
                            if (ox >= Wo)
                                break;
                        }
                        int x0, x1;
                        pool_window(ox, k, s, pad, W, &x0, &x1);
                        float m = rowmax[x0];
                        for (int ix = x0 + 1; ix < x1; ix++)
                            m = max_nan(m, rowmax[ix]);
                        yp[oy * Wo + ox] = m;
                    }
                    continue;
                }
                for (int ox = 0; ox < Wo; ox++) {
                    int x0, x1;
                    pool_window(ox, k, s, pad, W, &x0, &x1);
                    float m = -INFINITY;
                    for (int iy = y0; iy < y1; iy++)
                        for (int ix = x0; ix < x1; ix++)
                            m = max_nan(m, xp[iy * W + ix]);
                    yp[oy * Wo + ox] = m;
                }
            }
        }
    }
    return CX_OK;
}

static cx_status cpu_avgpool(cx_backend *be, const float *x, int C, int N, int H, int W, int k,
                             float *y)
{
    int Ho = H / k, Wo = W / k;
    int64_t planes = (int64_t)C * N;
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static) if (planes * H * W > CX_PAR_MIN)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * H * W;
        float *yp = y + pl * Ho * Wo;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float acc = 0.0f;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        acc += xp[(oy * k + ky) * W + ox * k + kx];
                yp[oy * Wo + ox] = acc * inv;
            }
    }
    return CX_OK;
}

static cx_status cpu_gap(cx_backend *be, const float *x, int C, int N, int HW, float *y)
{
#pragma omp parallel for schedule(static) if ((int64_t)C * N * HW > CX_PAR_MIN)
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) {
            const float *xp = x + ((int64_t)c * N + n) * HW;
            float acc = 0.0f;
            for (int i = 0; i < HW; i++)
                acc += xp[i];
            y[(int64_t)n * C + c] = acc / (float)HW;
        }
    return CX_OK;
}

static cx_status cpu_linear(cx_backend *be, const float *x, int N, int F, const float *w,
                            const float *b, int M, float *y)
{
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++)
            y[(int64_t)n * M + m] = b ? b[m] : 0.0f;
    cx_sgemm(0, 1, N, M, F, x, F, w, F, 1, y, M);
    return CX_OK;
}

/* ---- training ---- */

/* Reductions below sum a chunk of CX_CHUNK values in float SIMD lanes and the
 * chunk sums in double: vectorised, and accurate to about 1e-7 relative. */
#define CX_CHUNK 1024

static cx_status cpu_bn_stats(cx_backend *be, const float *x, int C, int64_t P, float *mean,
                              float *var)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *xp = x + c * P;
        double s = 0.0;
        for (int64_t p0 = 0; p0 < P; p0 += CX_CHUNK) {
            int64_t p1 = p0 + CX_CHUNK < P ? p0 + CX_CHUNK : P;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t p = p0; p < p1; p++)
                acc += xp[p];
            s += acc;
        }
        const float mu = (float)(s / P);
        double v = 0.0;
        for (int64_t p0 = 0; p0 < P; p0 += CX_CHUNK) {
            int64_t p1 = p0 + CX_CHUNK < P ? p0 + CX_CHUNK : P;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int64_t p = p0; p < p1; p++) {
                float d = xp[p] - mu;
                acc += d * d;
            }
            v += acc;
        }
        mean[c] = mu;
        var[c] = (float)(v / P);
    }
    return CX_OK;
}

static cx_status cpu_bn_relu_backward(cx_backend *be, const float *x, const float *dy, int C,
                                      int64_t P, const float *gamma, const float *beta,
                                      const float *mean, const float *invstd, float *dgamma,
                                      float *dbeta, float *dx, int accumulate)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *xp = x + c * P, *dyp = dy + c * P;
        float *dxp = dx + c * P;
        const float g = gamma[c], b = beta[c], mu = mean[c], is = invstd[c];
        double sdy = 0.0, sdyx = 0.0;
        for (int64_t p0 = 0; p0 < P; p0 += CX_CHUNK) {
            int64_t p1 = p0 + CX_CHUNK < P ? p0 + CX_CHUNK : P;
            float a1 = 0.0f, a2 = 0.0f;
#pragma omp simd reduction(+ : a1, a2)
            for (int64_t p = p0; p < p1; p++) {
                float xh = (xp[p] - mu) * is;
                float d = (g * xh + b) > 0.0f ? dyp[p] : 0.0f;
                a1 += d;
                a2 += d * xh;
            }
            sdy += a1;
            sdyx += a2;
        }
        dgamma[c] += (float)sdyx;
        dbeta[c] += (float)sdy;
        const float k = g * is / (float)P, fsdy = (float)sdy, fsdyx = (float)sdyx,
                    fP = (float)P;
        if (accumulate) {
#pragma omp simd
            for (int64_t p = 0; p < P; p++) {
                float xh = (xp[p] - mu) * is;
                float d = (g * xh + b) > 0.0f ? dyp[p] : 0.0f;
                dxp[p] += k * (fP * d - fsdy - xh * fsdyx);
            }
        } else {
#pragma omp simd
            for (int64_t p = 0; p < P; p++) {
                float xh = (xp[p] - mu) * is;
                float d = (g * xh + b) > 0.0f ? dyp[p] : 0.0f;
                dxp[p] = k * (fP * d - fsdy - xh * fsdyx);
            }
        }
    }
    return CX_OK;
}

static cx_status cpu_conv1x1_bn_relu_backward_deferred(
    cx_backend *be, const float *x, int Cin, int64_t P, const float *scale, const float *shift,
    const float *mean, const float *invstd, const float *w, int Cout, const float *dy, float *dw,
    float *dgamma, float *dbeta, float *dx, float *scratch)
{
    (void)scratch;
    cx_bnrelu_grad e = {x, scale, shift, mean, invstd, dgamma, dbeta};
    /* g = w^T dy lives only in registers: the epilogue applies the mask */
    cx_sgemm_bnrelu(0, 1, Cout, Cin, (int)P, dy, (int)P, x, (int)P, scale, shift, 1, dw, Cin);
    cx_sgemm_bnrelu_grad(1, Cin, (int)P, Cout, w, Cin, dy, (int)P, &e, dx, (int)P);
    return CX_OK;
}

static cx_status cpu_bn_backward_finish(cx_backend *be, const float *x, int C, int64_t P,
                                        const float *mean, const float *invstd, const float *a,
                                        const float *b, float *dx)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *xp = x + c * P;
        float *dxp = dx + c * P;
        const float ac = a[c], bc = b[c], mu = mean[c], is = invstd[c];
#pragma omp simd
        for (int64_t p = 0; p < P; p++)
            dxp[p] += ac + bc * ((xp[p] - mu) * is);
    }
    return CX_OK;
}

static size_t cpu_conv_bwd_scratch(const cx_backend *be, int Cin, int N, int H, int W, int Cout,
                                   int k, int s, int pad)
{
    if (is_same_conv(k, s, pad)) {
        int nb = kn2row_images(N, H * W, Cout, k);
        return (size_t)k * k * Cout * H * W * nb + 2 * (size_t)k * k * Cout * Cin;
    }
    return 2 * cpu_conv_scratch(be, Cin, N, H, W, Cout, k, s, pad);
}

/* dx[ci][n0+j][iy][ix] += dcol[(ci*k+ky)*k+kx][j*Ho*Wo + oy*Wo + ox] */
static void col2im_add(const float *dcol, int Cin, int N, int H, int W, int k, int s, int pad,
                       int n0, int nb, float *dx)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    int64_t P = (int64_t)N * H * W, cols = (int64_t)nb * Ho * Wo;
#pragma omp parallel for schedule(static)
    for (int ci = 0; ci < Cin; ci++)
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *src = dcol + ((int64_t)(ci * k + ky) * k + kx) * cols;
                for (int j = 0; j < nb; j++) {
                    float *d = dx + ci * P + (int64_t)(n0 + j) * H * W;
                    const float *sp = src + (int64_t)j * Ho * Wo;
                    for (int oy = 0; oy < Ho; oy++) {
                        int iy = oy * s - pad + ky;
                        if (iy < 0 || iy >= H)
                            continue;
                        for (int ox = 0; ox < Wo; ox++) {
                            int ix = ox * s - pad + kx;
                            if (ix >= 0 && ix < W)
                                d[iy * W + ix] += sp[oy * Wo + ox];
                        }
                    }
                }
            }
}

/* Backward of same_conv (bsc as there): dw added to, dx (+)= (skipped when
 * NULL). */
static void same_conv_backward(const float *x, int Cin, int N, int H, int W, const float *w,
                               int Cout, int k, const float *bsc, const float *bsh,
                               const float *dy, float *dw, float *dx, int accumulate,
                               float *scratch)
{
    int pad = (k - 1) / 2;
    int64_t Po = (int64_t)N * H * W;
    int HW = H * W, kk2 = k * k, nb = kn2row_images(N, HW, Cout, k);
    int M = kk2 * Cout;
    float *D = scratch, *A = scratch + (size_t)M * HW * nb, *dWr = A + (size_t)M * Cin;
    /* A[ci][(kk,co)] = w[co][ci][kk] */
    for (int co = 0; co < Cout; co++)
        for (int ci = 0; ci < Cin; ci++)
            for (int q = 0; q < kk2; q++)
                A[(size_t)ci * M + (size_t)q * Cout + co] = w[((size_t)co * Cin + ci) * kk2 + q];
    for (int n0 = 0; n0 < N; n0 += nb) {
        int cnt = N - n0 < nb ? N - n0 : nb;
        int cols = cnt * HW;
        /* D[(kk,co)][iy][ix] = dy[co][iy - dy_kk][ix - dx_kk], 0 outside */
#pragma omp parallel for collapse(2) schedule(static)
        for (int q = 0; q < kk2; q++)
            for (int co = 0; co < Cout; co++) {
                int sy = q / k - pad, sx = q % k - pad;
                for (int j = 0; j < cnt; j++) {
                    float *dp = D + ((int64_t)q * Cout + co) * cols + (int64_t)j * HW;
                    const float *gp = dy + co * Po + (int64_t)(n0 + j) * HW;
                    for (int iy = 0; iy < H; iy++) {
                        int oy = iy - sy;
                        float *dr = dp + iy * W;
                        if (oy < 0 || oy >= H) {
                            memset(dr, 0, sizeof(float) * W);
                            continue;
                        }
                        const float *gr = gp + oy * W;
                        int ix0 = sx > 0 ? sx : 0, ix1 = sx < 0 ? W + sx : W;
                        for (int ix = 0; ix < ix0; ix++)
                            dr[ix] = 0.0f;
                        memcpy(dr + ix0, gr + ix0 - sx, sizeof(float) * (ix1 - ix0));
                        for (int ix = ix1; ix < W; ix++)
                            dr[ix] = 0.0f;
                    }
                }
            }
        /* dWr[(kk,co)][ci] (+)= D[M][cols] x[ci][cols]^T */
        cx_sgemm_bnrelu(0, 1, M, Cin, cols, D, cols, x + (int64_t)n0 * HW, (int)Po, bsc, bsh,
                        n0 ? 1 : 0, dWr, Cin);
        if (dx) /* dx[Cin][cols] (+)= A[Cin][M] D[M][cols] */
            cx_sgemm(0, 0, Cin, cols, M, A, M, D, cols, accumulate, dx + (int64_t)n0 * HW,
                     (int)Po);
    }
    for (int co = 0; co < Cout; co++)
        for (int ci = 0; ci < Cin; ci++)
            for (int q = 0; q < kk2; q++)
                dw[((size_t)co * Cin + ci) * kk2 + q] += dWr[((size_t)q * Cout + co) * Cin + ci];
}

static cx_status cpu_conv2d_backward(cx_backend *be, const float *x, int Cin, int N, int H, int W,
                                     const float *w, int Cout, int k, int s, int pad,
                                     const float *dy, float *dw, float *dx, int accumulate,
                                     float *scratch, size_t scratch_n)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    int64_t Po = (int64_t)N * Ho * Wo;
    if (is_pointwise(k, s, pad)) {
        /* dw[Cout][Cin] += dy[Cout][P] x[Cin][P]^T; dx[Cin][P] (+)= w^T dy */
        cx_sgemm(0, 1, Cout, Cin, (int)Po, dy, (int)Po, x, (int)Po, 1, dw, Cin);
        if (dx)
            cx_sgemm(1, 0, Cin, (int)Po, Cout, w, Cin, dy, (int)Po, accumulate, dx, (int)Po);
        return CX_OK;
    }
    if (is_same_conv(k, s, pad)) {
        same_conv_backward(x, Cin, N, H, W, w, Cout, k, NULL, NULL, dy, dw, dx, accumulate,
                           scratch);
        return CX_OK;
    }
    size_t per_image = (size_t)Cin * k * k * Ho * Wo;
    int nb = (int)(scratch_n / (2 * per_image));
    if (nb < 1)
        nb = 1;
    int K = Cin * k * k;
    float *col = scratch, *dcol = scratch + per_image * nb;
    if (dx && !accumulate)
        memset(dx, 0, sizeof(float) * (size_t)Cin * N * H * W);
    for (int n0 = 0; n0 < N; n0 += nb) {
        int cnt = N - n0 < nb ? N - n0 : nb;
        int cols = cnt * Ho * Wo;
        const float *dyc = dy + (int64_t)n0 * Ho * Wo; /* rows at stride Po */
        im2col(x, Cin, N, H, W, k, s, pad, n0, cnt, col);
        cx_sgemm(0, 1, Cout, K, cols, dyc, (int)Po, col, cols, 1, dw, K);
        if (dx) {
            cx_sgemm(1, 0, K, cols, Cout, w, K, dyc, (int)Po, 0, dcol, cols);
            col2im_add(dcol, Cin, N, H, W, k, s, pad, n0, cnt, dx);
        }
    }
    return CX_OK;
}

static cx_status cpu_conv2d_bn_relu(cx_backend *be, const float *x, int Cin, int N, int H, int W,
                                    const float *scale, const float *shift, const float *w,
                                    int Cout, int k, float *y, float *act, float *scratch,
                                    size_t scratch_n)
{
    int pad = (k - 1) / 2;
    if (is_same_conv(k, 1, pad)) { /* BN-ReLU inside the GEMM's packing */
        same_conv(be, x, Cin, N, H, W, w, Cout, k, scale, shift, y);
        return CX_OK;
    }
    cpu_bn_relu(be, x, act, Cin, (int64_t)N * H * W, scale, shift);
    cpu_conv2d(be, act, Cin, N, H, W, w, Cout, k, 1, pad, y, scratch, scratch_n);
    return CX_OK;
}

static cx_status cpu_conv2d_bn_relu_backward(cx_backend *be, const float *x, int Cin, int N, int H,
                                             int W, const float *scale, const float *shift,
                                             const float *w, int Cout, int k, const float *dy,
                                             float *dw, float *da, float *act, float *scratch,
                                             size_t scratch_n)
{
    int pad = (k - 1) / 2;
    if (is_same_conv(k, 1, pad)) {
        same_conv_backward(x, Cin, N, H, W, w, Cout, k, scale, shift, dy, dw, da, 0, scratch);
        return CX_OK;
    }
    cpu_bn_relu(be, x, act, Cin, (int64_t)N * H * W, scale, shift);
    cpu_conv2d_backward(be, act, Cin, N, H, W, w, Cout, k, 1, pad, dy, dw, da, 0, scratch,
                        scratch_n);
    return CX_OK;
}

/* The window of output ox (3 wide, stride 2) lies wholly inside the row
 * for ox in [1, (W - 2) / 2]: there, for rows [y0, y1), the index of each
 * window's maximum (the first one; the last NaN if any), a row at a time in
 * the windows' order, vectorised across ox (m: the running maxima). */
static void argmax3s2_row(const float *xp, int W, int y0, int y1, int o0, int o1, float *m,
                          int *arg)
{
    for (int iy = y0; iy < y1; iy++) {
        const float *r = xp + iy * W - 1;
        int base = iy * W - 1;
        if (iy == y0) {
#pragma omp simd
            for (int o = o0; o < o1; o++) {
                m[o] = r[2 * o];
                arg[o] = base + 2 * o;
            }
        }
        for (int d = iy == y0; d < 3; d++) {
#pragma omp simd
            for (int o = o0; o < o1; o++) {
                float v = r[2 * o + d];
                int up = v > m[o] || v != v;
                m[o] = up ? v : m[o];
                arg[o] = up ? base + 2 * o + d : arg[o];
            }
        }
    }
}

/* dx gets dy at the window's first maximum (the last NaN, if any) */
static inline void maxpool_bwd_window(const float *xp, int W, int y0, int y1, int x0, int x1,
                                      float g, float *dxp)
{
    float m = -INFINITY;
    int a = -1;
    for (int iy = y0; iy < y1; iy++)
        for (int ix = x0; ix < x1; ix++) {
            float v = xp[iy * W + ix];
            if (v > m || isnan(v) || a < 0) {
                m = v;
                a = iy * W + ix;
            }
        }
    if (a >= 0)
        dxp[a] += g;
}

static cx_status cpu_maxpool_backward(cx_backend *be, const float *x, int C, int N, int H, int W,
                                      int k, int s, int pad, const float *dy, float *dx)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    int64_t planes = (int64_t)C * N;
    /* the stem's 3x3 stride-2 pooling: interior windows vectorised */
    int in1 = (W - 2) / 2 + 1 < Wo ? (W - 2) / 2 + 1 : Wo; /* interior: ox in [1, in1) */
    int fast = k == 3 && s == 2 && pad == 1 && Wo <= 4096 && in1 > 1;
#pragma omp parallel
    {
        int *arg = fast ? __builtin_alloca(sizeof(int) * (size_t)Wo) : NULL;
        float *mx = fast ? __builtin_alloca(sizeof(float) * (size_t)Wo) : NULL;
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            const float *xp = x + pl * H * W, *dyp = dy + pl * Ho * Wo;
            float *dxp = dx + pl * H * W;
            memset(dxp, 0, sizeof(float) * H * W);
            for (int oy = 0; oy < Ho; oy++) {
                int y0, y1, x0, x1, ox = 0;
                pool_window(oy, k, s, pad, H, &y0, &y1);
                const float *g = dyp + oy * Wo;
                if (fast) { /* in ox order, as below: the same sums */
                    maxpool_bwd_window(xp, W, y0, y1, 0, 2, g[0], dxp);
                    argmax3s2_row(xp, W, y0, y1, 1, in1, mx, arg);
                    for (int o = 1; o < in1; o++)
                        dxp[arg[o]] += g[o];
                    ox = in1;
                }
                for (; ox < Wo; ox++) {
                    pool_window(ox, k, s, pad, W, &x0, &x1);
                    maxpool_bwd_window(xp, W, y0, y1, x0, x1, g[ox], dxp);
                }
            }
        }
    }
    return CX_OK;
}

static cx_status cpu_avgpool_backward(cx_backend *be, const float *dy, int C, int N, int H, int W,
                                      int k, float *dx)
{
    int Ho = H / k, Wo = W / k;
    int64_t planes = (int64_t)C * N;
    const float inv = 1.0f / (float)(k * k);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *dyp = dy + pl * Ho * Wo;
        float *dxp = dx + pl * H * W;
        if (Ho * k != H || Wo * k != W)
            memset(dxp, 0, sizeof(float) * H * W);
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float v = dyp[oy * Wo + ox] * inv;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        dxp[(oy * k + ky) * W + ox * k + kx] = v;
            }
    }
    return CX_OK;
}

static cx_status cpu_gap_backward(cx_backend *be, const float *dy, int C, int N, int HW, float *dx)
{
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) {
            float v = dy[(int64_t)n * C + c] / (float)HW;
            float *dxp = dx + ((int64_t)c * N + n) * HW;
            for (int i = 0; i < HW; i++)
                dxp[i] = v;
        }
    return CX_OK;
}

static cx_status cpu_linear_backward(cx_backend *be, const float *x, int N, int F, const float *w,
                                     int M, const float *dy, float *dw, float *db, float *dx)
{
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++)
            db[m] += dy[(int64_t)n * M + m];
    /* dw[M][F] += dy[N][M]^T x[N][F] */
    cx_sgemm(1, 0, M, F, N, dy, M, x, F, 1, dw, F);
    if (dx) /* dx[N][F] = dy[N][M] w[M][F] */
        cx_sgemm(0, 0, N, F, M, dy, M, w, F, 0, dx, F);
    return CX_OK;
}

/* bf16: packing (kernels/cpu/bf16.c) in the layouts of kernels/bf16_layout.h */
static size_t cpu_bf16_act_size(const cx_backend *be, int K, int64_t P)
{
    return cx_bf16_act_elems(K, P);
}

static size_t cpu_bf16_grid_size(const cx_backend *be, int K, int N, int H, int W, int k)
{
    return cx_bf16_grid_elems(K, N, H, W, k);
}

static size_t cpu_bf16_weights_size(const cx_backend *be, int Cout, int Cin, int k)
{
    return cx_bf16_weights_elems(Cout, Cin, k);
}

static cx_status cpu_pack_bf16_weights(cx_backend *be, const float *w, int Cout, int Cin, int k,
                                       uint16_t *out)
{
    cx_bf16_pack_conv_weights(w, Cout, Cin, k, out);
    return CX_OK;
}

static cx_status cpu_pack_bf16(cx_backend *be, const float *x, int K, int64_t P, const float *scale,
                               const float *shift, uint16_t *out)
{
    cpu_bf16_pack(x, K, P, scale, shift, out);
    return CX_OK;
}

static cx_status cpu_pack_bf16_grid(cx_backend *be, const float *x, int K, int N, int H, int W,
                                    const float *scale, const float *shift, int k, uint16_t *out)
{
    cpu_bf16_pack_grid(x, K, N, H, W, scale, shift, k, out);
    return CX_OK;
}

static const char *cpu_gemm_kernel(const cx_backend *be) { return cx_sgemm_kernel(); }

static const char *cpu_bf16_kernel_name(const cx_backend *be) { return cpu_bf16_kernel(); }

static int cpu_gemm_depth(const cx_backend *be, int K) { return cx_sgemm_depth(K); }

static int cpu_conv_winograd(const cx_backend *be, int Cin, int N, int H, int W, int Cout, int k)
{
    return !be->direct_conv && cx_sgemm_conv_same_winograd(Cout, Cin, k, N, H, W)
               ? cx_sgemm_conv3x3_winograd_depth(Cin)
               : 0;
}

/* The variant's op table: its own kernels above; the per-channel
 * bookkeeping from the reference (kernels/ref/ref.h); memory, threads and
 * the optimiser from kernels/cpu/backend_cpu.c. */
static const cx_ops OPS = {
    .name = "cpu",
    .host_memory = 1,
    .bind = cx_cpu_bind,
    .alloc = cx_host_alloc,
    .free = cx_host_free,
    .zero = cx_host_zero,
    .upload = cx_host_copy,
    .download = cx_host_copy,
    .nchw_to_cnhw = cx_ref_nchw_to_cnhw,
    .cnhw_to_nchw = cx_ref_cnhw_to_nchw,
    .bn_fold = cx_ref_bn_fold,
    .bn_relu = cpu_bn_relu,
    .bn_stats = cpu_bn_stats,
    .bn_running_update = cx_ref_bn_running_update,
    .conv2d = cpu_conv2d,
    .conv_scratch = cpu_conv_scratch,
    .maxpool = cpu_maxpool,
    .avgpool = cpu_avgpool,
    .gap = cpu_gap,
    .linear = cpu_linear,
    .conv1x1_bn_relu = cpu_conv1x1_bn_relu,
    .conv2d_bn_relu = cpu_conv2d_bn_relu,
    .bce_loss = cx_ref_bce_loss,
    .bn_relu_backward = cpu_bn_relu_backward,
    .conv2d_backward = cpu_conv2d_backward,
    .conv_bwd_scratch = cpu_conv_bwd_scratch,
    .conv1x1_bn_relu_backward = cpu_conv1x1_bn_relu_backward,
    .conv2d_bn_relu_backward = cpu_conv2d_bn_relu_backward,
    .conv1x1_bn_relu_backward_deferred = cpu_conv1x1_bn_relu_backward_deferred,
    .bn_deferred_terms = cx_ref_bn_deferred_terms,
    .bn_backward_finish = cpu_bn_backward_finish,
    .maxpool_backward = cpu_maxpool_backward,
    .avgpool_backward = cpu_avgpool_backward,
    .gap_backward = cpu_gap_backward,
    .linear_backward = cpu_linear_backward,
    .find_nonfinite = cx_cpu_find_nonfinite,
    .adam = cx_cpu_adam,
    .bf16_act_size = cpu_bf16_act_size,
    .bf16_grid_size = cpu_bf16_grid_size,
    .bf16_weights_size = cpu_bf16_weights_size,
    .pack_bf16_weights = cpu_pack_bf16_weights,
    .pack_bf16 = cpu_pack_bf16,
    .conv2d_bf16 = cpu_conv2d_bf16,
    .conv_bf16_scratch = cpu_conv_bf16_scratch,
    .pack_bf16_grid = cpu_pack_bf16_grid,
    .conv2d_grid_bf16 = cpu_conv2d_grid_bf16,
    .conv_grid_bf16_scratch = cpu_conv_grid_bf16_scratch,
    .gemm_kernel = cpu_gemm_kernel,
    .gemm_depth = cpu_gemm_depth,
    .conv_winograd = cpu_conv_winograd,
    .bf16_kernel = cpu_bf16_kernel_name,
};

static const cx_cpu_variant VARIANT = {
    .name = CX_VARIANT_NAME,
    .ops = &OPS,
    .sgemm = cx_sgemm,
    .sgemm_bnrelu = cx_sgemm_bnrelu,
    .sgemm_bnrelu_grad = cx_sgemm_bnrelu_grad,
    .sgemm_conv_same = cx_sgemm_conv_same,
    .sgemm_conv_same_winograd = cx_sgemm_conv_same_winograd,
    .sgemm_conv3x3_winograd = cx_sgemm_conv3x3_winograd,
    .sgemm_conv3x3_winograd_depth = cx_sgemm_conv3x3_winograd_depth,
    .gemm_kernel = cx_sgemm_kernel,
    .gemm_depth = cx_sgemm_depth,
};

const cx_cpu_variant *CX_V(cx_cpu_variant)(void) { return &VARIANT; }
