/* The kernel interface: one table of operations per backend. Each backend is
 * its own compilation unit (src/kernels/ref: plain C reference, kept forever
 * as the oracle; src/kernels/cpu: BLAS + OpenMP). Model code only calls
 * through this table.
 *
 * Activations use layout CNHW: channel-major with the batch inside, i.e.
 * element (n, c, y, x) of a tensor with N images of H x W is at
 *     c * (N*H*W) + n * (H*W) + y * W + x.
 * A channel is one contiguous plane of N*H*W values, so a dense block's
 * concatenation is a buffer [Cmax][N][H][W] whose first C channels are the
 * input of the layer that reads C channels, and 1x1 convolutions are plain
 * GEMMs over it.
 * Conv weights are PyTorch's [Cout][Cin][kh][kw]; linear weights [M][F]. */
#ifndef CX_BACKEND_H
#define CX_BACKEND_H

#include <stddef.h>
#include <stdint.h>

typedef struct cx_ops {
    const char *name;

    /* y[c][p] = max(0, x[c][p] * scale[c] + shift[c]), layout CNHW, P = N*H*W
     * values per channel. x and y may alias. */
    void (*bn_relu)(const float *x, float *y, int C, int64_t P, const float *scale,
                    const float *shift);

    /* Convolution without bias, square kernel k, stride s, zero padding pad.
     * x: CNHW [Cin][N][H][W]; w: [Cout][Cin][k][k]; y: CNHW [Cout][N][Ho][Wo]
     * (overwritten). scratch: at least conv_scratch(...) floats. */
    void (*conv2d)(const float *x, int Cin, int N, int H, int W, const float *w, int Cout,
                   int k, int s, int pad, float *y, float *scratch, size_t scratch_n);
    size_t (*conv_scratch)(int Cin, int N, int H, int W, int Cout, int k, int s, int pad);

    /* Max pooling k x k, stride s, padding pad (padding never wins), floor mode.
     * x: CNHW [C][N][H][W] -> y: CNHW [C][N][Ho][Wo]. */
    void (*maxpool)(const float *x, int C, int N, int H, int W, int k, int s, int pad, float *y);

    /* Average pooling k x k, stride k, no padding, floor mode.
     * x: CNHW [C][N][H][W] -> y: CNHW [C][N][H/k][W/k]. */
    void (*avgpool)(const float *x, int C, int N, int H, int W, int k, float *y);

    /* Global average pooling. x: CNHW [C][N][HW] -> y: [N][C]. */
    void (*gap)(const float *x, int C, int N, int HW, float *y);

    /* y[n][m] = b[m] + sum_f x[n][f] * w[m][f]. x: [N][F], w: [M][F], y: [N][M]. */
    void (*linear)(const float *x, int N, int F, const float *w, const float *b, int M,
                   float *y);

    /* Pointwise convolution of a BatchNorm + ReLU, which need not be stored:
     * y[Cout][P] = w[Cout][Cin] max(0, x[ci][p] * scale[ci] + shift[ci]).
     * x: CNHW [Cin][P]; y overwritten; scratch: Cin*P floats the backend may
     * use for the BN-ReLU output. */
    void (*conv1x1_bn_relu)(const float *x, int Cin, int64_t P, const float *scale,
                            const float *shift, const float *w, int Cout, float *y,
                            float *scratch);

    /* A "same" convolution (k odd, stride 1, padding (k-1)/2) of a BatchNorm
     * + ReLU, which need not be stored: y = conv2d(max(0, x * scale[ci] +
     * shift[ci]), w). x: CNHW [Cin][N][H][W]; y overwritten; act: Cin*N*H*W
     * floats the backend may use for the BN-ReLU output; scratch:
     * conv_scratch(Cin, N, H, W, Cout, k, 1, (k-1)/2) floats. */
    void (*conv2d_bn_relu)(const float *x, int Cin, int N, int H, int W, const float *scale,
                           const float *shift, const float *w, int Cout, int k, float *y,
                           float *act, float *scratch, size_t scratch_n);

    /* ---- training (backward ops ADD into parameter gradients) ---- */

    /* Batch statistics per channel over P values: mean and biased variance.
     * x: CNHW [C][P]. */
    void (*bn_stats)(const float *x, int C, int64_t P, float *mean, float *var);

    /* Backward of y = relu(gamma * (x - mean) * invstd + beta) in training
     * mode (batch statistics). x: CNHW [C][P] (BN input), dy: [C][P] (grad of
     * the ReLU output). dgamma, dbeta: [C], added to. dx: [C][P], overwritten
     * (accumulate = 0) or added to (accumulate = 1). */
    void (*bn_relu_backward)(const float *x, const float *dy, int C, int64_t P,
                             const float *gamma, const float *beta, const float *mean,
                             const float *invstd, float *dgamma, float *dbeta, float *dx,
                             int accumulate);

    /* Backward of conv2d (same conventions as conv2d). dw [Cout][Cin][k][k]
     * is added to; dx (CNHW [Cin][N][H][W]) is overwritten, or added to when
     * accumulate = 1, or skipped when NULL. scratch: conv_bwd_scratch floats. */
    void (*conv2d_backward)(const float *x, int Cin, int N, int H, int W, const float *w,
                            int Cout, int k, int s, int pad, const float *dy, float *dw,
                            float *dx, int accumulate, float *scratch, size_t scratch_n);
    size_t (*conv_bwd_scratch)(int Cin, int N, int H, int W, int Cout, int k, int s, int pad);

    /* Backward of conv1x1_bn_relu up to the BN-ReLU output a: dw[Cout][Cin]
     * += dy[Cout][P] a^T; da[Cin][P] = w^T dy (overwritten, or added to with
     * accumulate; skipped when NULL). scratch as above. */
    void (*conv1x1_bn_relu_backward)(const float *x, int Cin, int64_t P, const float *scale,
                                     const float *shift, const float *w, int Cout,
                                     const float *dy, float *dw, float *da, int accumulate,
                                     float *scratch);

    /* Backward of conv2d_bn_relu up to the BN-ReLU output a: dw += (as
     * conv2d_backward); da [Cin][N][H][W] = the gradient at a (overwritten).
     * act as above; scratch: conv_bwd_scratch(..., k, 1, (k-1)/2) floats. */
    void (*conv2d_bn_relu_backward)(const float *x, int Cin, int N, int H, int W,
                                    const float *scale, const float *shift, const float *w,
                                    int Cout, int k, const float *dy, float *dw, float *da,
                                    float *act, float *scratch, size_t scratch_n);

    /* The backward of conv1x1_bn_relu and of its BatchNorm + ReLU (training
     * mode) in one, in a deferred form for channels that several layers read
     * with the same batch statistics (a dense block's concatenation). With
     * a = max(0, x * scale + shift), g = w^T dy, d = g where a > 0 (else 0)
     * and xh = (x - mean) * invstd, BN's input gradient is
     *     dx = scale * d - scale / P * (sum_p d + xh * sum_p d * xh).
     * This op adds dw[Cout][Cin] += dy a^T, dx[Cin][P] += scale * d,
     * dbeta[Cin] += sum_p d and dgamma[Cin] += sum_p d * xh; the caller
     * finishes dx with bn_backward_finish once every reader of a channel is
     * done. g need not be stored (scratch: Cin*P floats, as above). */
    void (*conv1x1_bn_relu_backward_deferred)(const float *x, int Cin, int64_t P,
                                              const float *scale, const float *shift,
                                              const float *mean, const float *invstd,
                                              const float *w, int Cout, const float *dy,
                                              float *dw, float *dgamma, float *dbeta,
                                              float *dx, float *scratch);
    /* dx[c][p] += a[c] + b[c] * (x[c][p] - mean[c]) * invstd[c]: what the
     * deferred form leaves, with a[c] = -sum over the readers of scale / P *
     * dbeta and b[c] the same with dgamma. x, dx: [C][P]. */
    void (*bn_backward_finish)(const float *x, int C, int64_t P, const float *mean,
                               const float *invstd, const float *a, const float *b, float *dx);

    /* Max-pool backward: the gradient goes to the first maximum of each
     * window (PyTorch's rule). x: the pooling input; dx overwritten. */
    void (*maxpool_backward)(const float *x, int C, int N, int H, int W, int k, int s, int pad,
                             const float *dy, float *dx);
    /* Average-pool backward (k x k, stride k); dx [C][N][H][W] overwritten
     * (rows/columns beyond the last full window get 0). */
    void (*avgpool_backward)(const float *dy, int C, int N, int H, int W, int k, float *dx);
    /* Global-average-pool backward: dy [N][C] -> dx CNHW [C][N][HW], overwritten. */
    void (*gap_backward)(const float *dy, int C, int N, int HW, float *dx);
    /* Linear backward: dw [M][F] and db [M] added to; dx [N][F] overwritten
     * (skipped when NULL). */
    void (*linear_backward)(const float *x, int N, int F, const float *w, int M,
                            const float *dy, float *dw, float *db, float *dx);

    /* ---- bf16 inference (see "bf16 layouts" below) ---- */

    /* out = bf16(max(0, x * scale[k] + shift[k])), or bf16(x) when scale is
     * NULL, rounded to nearest even. x: CNHW [K][P] fp32; out: packed pairs
     * (Kp x Pp, padding written as zeros). */
    void (*pack_bf16)(const float *x, int K, int64_t P, const float *scale, const float *shift,
                      uint16_t *out);
    /* Convolution of packed bf16 input with packed bf16 weights, fp32
     * accumulation and output: pointwise (k = 1) or "same" (odd k, stride 1,
     * pad (k-1)/2) only. x: packed [Cin][N*H*W]; w: cx_bf16_pack_conv_weights;
     * y: CNHW [Cout][N][H][W] fp32, overwritten. */
    void (*conv2d_bf16)(const uint16_t *x, int Cin, int N, int H, int W, const uint16_t *w,
                        int Cout, int k, float *y, float *scratch, size_t scratch_n);
    size_t (*conv_bf16_scratch)(int Cin, int N, int H, int W, int Cout, int k);
    /* As pack_bf16, into the zero-padded grid layout of a following "same"
     * convolution of odd kernel k (cx_bf16_grid below); x: CNHW
     * [K][N][H][W]. */
    void (*pack_bf16_grid)(const float *x, int K, int N, int H, int W, const float *scale,
                           const float *shift, int k, uint16_t *out);
    /* "Same" convolution (odd k) of a grid-packed input; otherwise as
     * conv2d_bf16. */
    void (*conv2d_grid_bf16)(const uint16_t *xg, int Cin, int N, int H, int W,
                             const uint16_t *w, int Cout, int k, float *y, float *scratch,
                             size_t scratch_n);
    size_t (*conv_grid_bf16_scratch)(int Cin, int N, int H, int W, int Cout, int k);
    /* Name of the fp32 GEMM this backend runs on this machine. */
    const char *(*gemm_kernel)(void);
    /* Name of the bf16 kernel this backend runs on this machine. */
    const char *(*bf16_kernel)(void);
} cx_ops;

/* ---- bf16 layouts (shared by every backend) ----
 * bf16 is the top half of an fp32. A packed activation matrix of K channels
 * by P = N*H*W positions stores channel pairs side by side:
 *     element (k, p) at (k/2) * 2*Pp + 2*p + (k & 1),
 * with K padded to Kp = cx_bf16_kpad(K) and P to Pp = cx_bf16_ppad(P), the
 * padding zero; this is the pair layout VDPBF16PS and AMX's TDPBF16PS read.
 * Pp leaves 32 spare columns so kernels may read whole 32-column blocks from
 * any column of a row.
 * Packed convolution weights: the matrix Wr[q*Cout + co][ci] = w[co][ci][q]
 * (q = ky*k + kx) of M = k*k*Cout rows, row-major bf16 with rows padded to
 * Mp = cx_bf16_mpad(M) and columns to Kp = cx_bf16_kpad(Cin), padding zero. */
static inline int64_t cx_bf16_kpad(int64_t K) { return (K + 31) & ~(int64_t)31; }
static inline int64_t cx_bf16_ppad(int64_t P) { return ((P + 31) & ~(int64_t)31) + 32; }
/* 32 spare rows: kernels may read whole 32-row blocks from any row. */
static inline int64_t cx_bf16_mpad(int64_t M) { return ((M + 31) & ~(int64_t)31) + 32; }

/* The grid layout: the input of a "same" convolution of odd kernel k (pad
 * p = (k-1)/2) over N images of H x W, zero-padded so that every tap is a
 * column shift: channel pairs as above, with element (c, n, y, x) at column
 *     G + (n*Hq + y + p) * Wq + x + p,   Hq = H + 2p, Wq = W + 2p,
 * of pair rows Qp columns long; G = p*Wq + p guard columns lead, and Qp
 * leaves G + 32 after the Q = N*Hq*Wq grid columns. Everything outside the
 * images is zero. */
typedef struct {
    int Hq, Wq;
    int64_t Q, G, Qp;
} cx_bf16_grid;
static inline cx_bf16_grid cx_bf16_grid_of(int N, int H, int W, int k)
{
    int p = (k - 1) / 2;
    cx_bf16_grid g;
    g.Hq = H + 2 * p;
    g.Wq = W + 2 * p;
    g.Q = (int64_t)N * g.Hq * g.Wq;
    g.G = (int64_t)p * g.Wq + p;
    g.Qp = (2 * g.G + g.Q + 32 + 31) & ~(int64_t)31;
    return g;
}

/* Round to nearest even; NaN stays NaN (quiet). */
static inline uint16_t cx_f32_to_bf16(float f)
{
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((v.u >> 16) | 0x40u);
    v.u += 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(v.u >> 16);
}
static inline float cx_bf16_to_f32(uint16_t h)
{
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

/* Packs conv weights w [Cout][Cin][k][k] fp32 into the layout above; out has
 * cx_bf16_mpad(k*k*Cout) * cx_bf16_kpad(Cin) elements. */
void cx_bf16_pack_conv_weights(const float *w, int Cout, int Cin, int k, uint16_t *out);

const cx_ops *cx_ops_ref(void);
const cx_ops *cx_ops_cpu(void);

/* Output size of a convolution or pooling window (floor mode). */
static inline int cx_out_size(int in, int k, int s, int pad) { return (in + 2 * pad - k) / s + 1; }

#endif
