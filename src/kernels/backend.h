/* The way into compute: a backend object, its memory and its operations.
 *
 * A backend (cx_backend) is an op table (cx_ops) plus the backend's own
 * state: the CPU backend's state is its instruction-set variant and its
 * thread count; a GPU backend's would be a device and a stream. Backends
 * are created from the registry (kernels/registry.c) by id or by name;
 * an unknown id or name is an error (CX_EARG), never a fallback. Model code
 * (src/model, src/train) computes only through a backend object: it plans
 * its buffers, asks the backend for one arena, and runs a forward pass or a
 * training step as a sequence of op calls, with one upload of the batch and
 * one download of the outputs.
 *
 * Memory. Every buffer an op reads or writes is the backend's memory: the
 * arenas come from alloc, the model's weights are uploaded once per context
 * (again only when the host copy changes), inputs go up with upload and
 * results come down with download. A host-memory backend (host_memory = 1:
 * ref and cpu) computes in ordinary host memory, so its "upload" of a host
 * buffer is the buffer itself: cx_be_in and cx_be_out below hand out the
 * host pointer and no copy is made (the model's weights, the caller's batch
 * and the caller's output buffers are used in place).
 *
 * Operations. Every op takes the backend first and returns a status; an op
 * that fails leaves a message in be->err, and the caller stops at the first
 * failure and names the op and the layer (cx_be_fail). Ops are issued in
 * order; a backend may queue them, and download returns once the data is on
 * the host. Nothing in a pass depends on values computed by an op except
 * through device-side flags (the loss gating the running statistics, the
 * finite check gating Adam), read back with the step's one download, so the
 * sequence of calls for a (model, batch, size) is fixed and could be
 * recorded once and replayed. Size queries (*_scratch, *_size) are not ops:
 * they cannot fail and are asked while planning.
 *
 * Layouts. Activations are CNHW: channel-major with the batch inside, i.e.
 * element (n, c, y, x) of a tensor with N images of H x W is at
 *     c * (N*H*W) + n * (H*W) + y * W + x.
 * A channel is one contiguous plane of N*H*W values, so a dense block's
 * concatenation is a buffer [Cmax][N][H][W] whose first C channels are the
 * input of the layer that reads C channels, and 1x1 convolutions are plain
 * GEMMs over it. The batch arrives NCHW (PyTorch's layout) and is turned
 * into CNHW by an op. Conv weights are PyTorch's [Cout][Cin][kh][kw];
 * linear weights [M][F].
 *
 * Adding a backend: a folder src/kernels/NAME/ with its ops and a
 * cx_backend_entry (name, id, variants, create, destroy), one line in the
 * registry (kernels/registry.c), its id in chexnet.h's cx_backend_id, and
 * its sources in CMakeLists.txt when they need their own flags. The
 * conformance harness (tests/test_backend_ops.c) then runs every op of it
 * against the reference backend, and the forward pass of a small DenseNet,
 * with nothing else to add. */
#ifndef CX_BACKEND_H
#define CX_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "chexnet.h"

typedef struct cx_backend cx_backend;

/* Adam's per-step constants (PyTorch's semantics): with g = grad + wd * w,
 *     m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2,
 *     w -= step_size * m / (sqrt(v) / bc2_sqrt + eps),
 * step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t). */
typedef struct {
    float step_size, bc2_sqrt, beta1, beta2, eps, weight_decay;
} cx_adam_hyper;

typedef struct cx_ops {
    const char *name;
    /* 1: the backend computes in host memory (zero-copy views, above) */
    int host_memory;

    /* ---- the backend on the calling thread ---- */

    /* Makes the backend current on the calling thread before a sequence of
     * ops (the CPU backend: its thread count for OpenMP; a GPU backend: its
     * device). */
    cx_status (*bind)(cx_backend *be);

    /* ---- memory ---- */

    /* bytes of the backend's memory, 64-byte aligned (large ones on huge
     * pages where the OS offers them); *out NULL and CX_ENOMEM on failure */
    cx_status (*alloc)(cx_backend *be, size_t bytes, void **out);
    void (*free)(cx_backend *be, void *p);
    cx_status (*zero)(cx_backend *be, void *p, size_t bytes);
    /* host -> backend and backend -> host; dst == src is allowed (and a
     * no-op) on a host-memory backend */
    cx_status (*upload)(cx_backend *be, void *dst, const void *src, size_t bytes);
    cx_status (*download)(cx_backend *be, void *dst, const void *src, size_t bytes);

    /* ---- layout ---- */

    /* y CNHW [C][N][HW] = x NCHW [N][C][HW] (the batch as given). */
    cx_status (*nchw_to_cnhw)(cx_backend *be, const float *x, int N, int C, int64_t HW, float *y);
    /* y NCHW [n][C][HW] = images n0 .. n0+n-1 of x CNHW [C][N][HW]. */
    cx_status (*cnhw_to_nchw)(cx_backend *be, const float *x, int C, int N, int64_t HW, int n0,
                              int n, float *y);

    /* ---- BatchNorm ---- */

    /* The BatchNorm of statistics (mean, var) as y = x * scale + shift, as
     * PyTorch's CPU kernel folds it:
     *     invstd = 1 / sqrt(var + eps), scale = weight * invstd,
     *     shift = bias - mean * scale       (all [C]).
     * scale and shift, or invstd, may be NULL (not written); with scale NULL
     * weight and bias may be NULL too. Running statistics in inference,
     * batch statistics in training. */
    cx_status (*bn_fold)(cx_backend *be, int C, const float *weight, const float *bias,
                         const float *mean, const float *var, float eps, float *scale, float *shift,
                         float *invstd);

    /* y[c][p] = max(0, x[c][p] * scale[c] + shift[c]), layout CNHW, P = N*H*W
     * values per channel. x and y may alias. */
    cx_status (*bn_relu)(cx_backend *be, const float *x, float *y, int C, int64_t P,
                         const float *scale, const float *shift);

    /* Batch statistics per channel over P values: mean and biased variance.
     * x: CNHW [C][P]. */
    cx_status (*bn_stats)(cx_backend *be, const float *x, int C, int64_t P, float *mean,
                          float *var);

    /* PyTorch's running-statistics update from batch statistics over P
     * values per channel (unbiased variance):
     *     run_mean = (1 - momentum) run_mean + momentum mean,
     *     run_var = (1 - momentum) run_var + momentum var P / (P - 1).
     * Nothing changes unless *loss is finite (loss NULL: always). */
    cx_status (*bn_running_update)(cx_backend *be, int C, int64_t P, float momentum,
                                   const float *mean, const float *var, float *run_mean,
                                   float *run_var, const double *loss);

    /* ---- convolution, pooling, classifier (forward) ---- */

    /* Convolution without bias, square kernel k, stride s, zero padding pad.
     * x: CNHW [Cin][N][H][W]; w: [Cout][Cin][k][k]; y: CNHW [Cout][N][Ho][Wo]
     * (overwritten). scratch: at least conv_scratch(...) floats. */
    cx_status (*conv2d)(cx_backend *be, const float *x, int Cin, int N, int H, int W,
                        const float *w, int Cout, int k, int s, int pad, float *y, float *scratch,
                        size_t scratch_n);
    size_t (*conv_scratch)(const cx_backend *be, int Cin, int N, int H, int W, int Cout, int k,
                           int s, int pad);

    /* Max pooling k x k, stride s, padding pad (padding never wins), floor mode.
     * x: CNHW [C][N][H][W] -> y: CNHW [C][N][Ho][Wo]. */
    cx_status (*maxpool)(cx_backend *be, const float *x, int C, int N, int H, int W, int k, int s,
                         int pad, float *y);

    /* Average pooling k x k, stride k, no padding, floor mode.
     * x: CNHW [C][N][H][W] -> y: CNHW [C][N][H/k][W/k]. */
    cx_status (*avgpool)(cx_backend *be, const float *x, int C, int N, int H, int W, int k,
                         float *y);

    /* Global average pooling. x: CNHW [C][N][HW] -> y: [N][C]. */
    cx_status (*gap)(cx_backend *be, const float *x, int C, int N, int HW, float *y);

    /* y[n][m] = b[m] + sum_f x[n][f] * w[m][f]. x: [N][F], w: [M][F], y: [N][M]. */
    cx_status (*linear)(cx_backend *be, const float *x, int N, int F, const float *w,
                        const float *b, int M, float *y);

    /* Pointwise convolution of a BatchNorm + ReLU, which need not be stored:
     * y[Cout][P] = w[Cout][Cin] max(0, x[ci][p] * scale[ci] + shift[ci]).
     * x: CNHW [Cin][P]; y overwritten; scratch: Cin*P floats the backend may
     * use for the BN-ReLU output. */
    cx_status (*conv1x1_bn_relu)(cx_backend *be, const float *x, int Cin, int64_t P,
                                 const float *scale, const float *shift, const float *w, int Cout,
                                 float *y, float *scratch);

    /* A "same" convolution (k odd, stride 1, padding (k-1)/2) of a BatchNorm
     * + ReLU, which need not be stored: y = conv2d(max(0, x * scale[ci] +
     * shift[ci]), w). x: CNHW [Cin][N][H][W]; y overwritten; act: Cin*N*H*W
     * floats the backend may use for the BN-ReLU output; scratch:
     * conv_scratch(Cin, N, H, W, Cout, k, 1, (k-1)/2) floats. */
    cx_status (*conv2d_bn_relu)(cx_backend *be, const float *x, int Cin, int N, int H, int W,
                                const float *scale, const float *shift, const float *w, int Cout,
                                int k, float *y, float *act, float *scratch, size_t scratch_n);

    /* ---- loss ---- */

    /* Binary cross-entropy on logits, numerically stable, summed over the
     * K classes of mean over the n images (cx_bce_loss in chexnet.h):
     * *loss (one double) and dlogits [n][K] = dL/dlogits. logits, labels:
     * [n][K]; wpos, wneg: [K] or NULL for 1. */
    cx_status (*bce_loss)(cx_backend *be, const float *logits, const float *labels, int n, int K,
                          const float *wpos, const float *wneg, double *loss, float *dlogits);

    /* ---- training backward (backward ops ADD into parameter gradients) ---- */

    /* Backward of y = relu(gamma * (x - mean) * invstd + beta) in training
     * mode (batch statistics). x: CNHW [C][P] (BN input), dy: [C][P] (grad of
     * the ReLU output). dgamma, dbeta: [C], added to. dx: [C][P], overwritten
     * (accumulate = 0) or added to (accumulate = 1); dx may be dy. */
    cx_status (*bn_relu_backward)(cx_backend *be, const float *x, const float *dy, int C, int64_t P,
                                  const float *gamma, const float *beta, const float *mean,
                                  const float *invstd, float *dgamma, float *dbeta, float *dx,
                                  int accumulate);

    /* Backward of conv2d (same conventions as conv2d). dw [Cout][Cin][k][k]
     * is added to; dx (CNHW [Cin][N][H][W]) is overwritten, or added to when
     * accumulate = 1, or skipped when NULL. scratch: conv_bwd_scratch floats. */
    cx_status (*conv2d_backward)(cx_backend *be, const float *x, int Cin, int N, int H, int W,
                                 const float *w, int Cout, int k, int s, int pad, const float *dy,
                                 float *dw, float *dx, int accumulate, float *scratch,
                                 size_t scratch_n);
    size_t (*conv_bwd_scratch)(const cx_backend *be, int Cin, int N, int H, int W, int Cout, int k,
                               int s, int pad);

    /* Backward of conv1x1_bn_relu up to the BN-ReLU output a: dw[Cout][Cin]
     * += dy[Cout][P] a^T; da[Cin][P] = w^T dy (overwritten, or added to with
     * accumulate; skipped when NULL). scratch as above. */
    cx_status (*conv1x1_bn_relu_backward)(cx_backend *be, const float *x, int Cin, int64_t P,
                                          const float *scale, const float *shift, const float *w,
                                          int Cout, const float *dy, float *dw, float *da,
                                          int accumulate, float *scratch);

    /* Backward of conv2d_bn_relu up to the BN-ReLU output a: dw += (as
     * conv2d_backward); da [Cin][N][H][W] = the gradient at a (overwritten).
     * act as above; scratch: conv_bwd_scratch(..., k, 1, (k-1)/2) floats. */
    cx_status (*conv2d_bn_relu_backward)(cx_backend *be, const float *x, int Cin, int N, int H,
                                         int W, const float *scale, const float *shift,
                                         const float *w, int Cout, int k, const float *dy,
                                         float *dw, float *da, float *act, float *scratch,
                                         size_t scratch_n);

    /* The backward of conv1x1_bn_relu and of its BatchNorm + ReLU (training
     * mode) in one, in a deferred form for channels that several layers read
     * with the same batch statistics (a dense block's concatenation). With
     * a = max(0, x * scale + shift), g = w^T dy, d = g where a > 0 (else 0)
     * and xh = (x - mean) * invstd, BN's input gradient is
     *     dx = scale * d - scale / P * (sum_p d + xh * sum_p d * xh).
     * This op adds dw[Cout][Cin] += dy a^T, dx[Cin][P] += scale * d,
     * dbeta[Cin] += sum_p d and dgamma[Cin] += sum_p d * xh; the caller
     * collects the rest with bn_deferred_terms and finishes dx with
     * bn_backward_finish once every reader of a channel is done. g need not
     * be stored (scratch: Cin*P floats, as above). */
    cx_status (*conv1x1_bn_relu_backward_deferred)(cx_backend *be, const float *x, int Cin,
                                                   int64_t P, const float *scale,
                                                   const float *shift, const float *mean,
                                                   const float *invstd, const float *w, int Cout,
                                                   const float *dy, float *dw, float *dgamma,
                                                   float *dbeta, float *dx, float *scratch);
    /* The per-channel terms one reader leaves for bn_backward_finish, from
     * its scale and its sums (dgamma, dbeta as the deferred op left them):
     *     a[c] -= scale[c] / P * dbeta[c],  b[c] -= scale[c] / P * dgamma[c]. */
    cx_status (*bn_deferred_terms)(cx_backend *be, int C, int64_t P, const float *scale,
                                   const float *dgamma, const float *dbeta, float *a, float *b);
    /* dx[c][p] += a[c] + b[c] * (x[c][p] - mean[c]) * invstd[c]: what the
     * deferred form leaves. x, dx: [C][P]. */
    cx_status (*bn_backward_finish)(cx_backend *be, const float *x, int C, int64_t P,
                                    const float *mean, const float *invstd, const float *a,
                                    const float *b, float *dx);

    /* Max-pool backward: the gradient goes to the first maximum of each
     * window (PyTorch's rule). x: the pooling input; dx overwritten. */
    cx_status (*maxpool_backward)(cx_backend *be, const float *x, int C, int N, int H, int W, int k,
                                  int s, int pad, const float *dy, float *dx);
    /* Average-pool backward (k x k, stride k); dx [C][N][H][W] overwritten
     * (rows/columns beyond the last full window get 0). */
    cx_status (*avgpool_backward)(cx_backend *be, const float *dy, int C, int N, int H, int W,
                                  int k, float *dx);
    /* Global-average-pool backward: dy [N][C] -> dx CNHW [C][N][HW], overwritten. */
    cx_status (*gap_backward)(cx_backend *be, const float *dy, int C, int N, int HW, float *dx);
    /* Linear backward: dw [M][F] and db [M] added to; dx [N][F] overwritten
     * (skipped when NULL). */
    cx_status (*linear_backward)(cx_backend *be, const float *x, int N, int F, const float *w,
                                 int M, const float *dy, float *dw, float *db, float *dx);

    /* ---- optimiser ---- */

    /* *first = the lowest index i < n with x[i] not finite, or -1. */
    cx_status (*find_nonfinite)(cx_backend *be, const float *x, int64_t n, int64_t *first);
    /* One Adam step (cx_adam_hyper) over n parameters w with gradients g and
     * moments m, v; nothing changes unless *bad < 0 (bad NULL: always), so
     * find_nonfinite over g can gate it without the host looking. */
    cx_status (*adam)(cx_backend *be, float *w, const float *g, float *m, float *v, int64_t n,
                      const cx_adam_hyper *h, const int64_t *bad);

    /* ---- bf16 inference (the packed layouts are the backend's own; the
     * ref and cpu backends share kernels/bf16_layout.h) ---- */

    /* Elements (uint16) of a packed activation of K channels by P positions,
     * of its grid form for a "same" convolution of odd kernel k over N
     * images of H x W, and of packed weights of a conv [Cout][Cin][k][k]. */
    size_t (*bf16_act_size)(const cx_backend *be, int K, int64_t P);
    size_t (*bf16_grid_size)(const cx_backend *be, int K, int N, int H, int W, int k);
    size_t (*bf16_weights_size)(const cx_backend *be, int Cout, int Cin, int k);
    /* Packs conv weights w [Cout][Cin][k][k] (fp32, the backend's memory). */
    cx_status (*pack_bf16_weights)(cx_backend *be, const float *w, int Cout, int Cin, int k,
                                   uint16_t *out);
    /* out = bf16(max(0, x * scale[k] + shift[k])), or bf16(x) when scale is
     * NULL, rounded to nearest even. x: CNHW [K][P] fp32; out: packed
     * (padding written as zeros). */
    cx_status (*pack_bf16)(cx_backend *be, const float *x, int K, int64_t P, const float *scale,
                           const float *shift, uint16_t *out);
    /* Convolution of packed bf16 input with packed bf16 weights, fp32
     * accumulation and output: pointwise (k = 1) or "same" (odd k, stride 1,
     * pad (k-1)/2) only. x: packed [Cin][N*H*W]; y: CNHW [Cout][N][H][W]
     * fp32, overwritten. */
    cx_status (*conv2d_bf16)(cx_backend *be, const uint16_t *x, int Cin, int N, int H, int W,
                             const uint16_t *w, int Cout, int k, float *y, float *scratch,
                             size_t scratch_n);
    size_t (*conv_bf16_scratch)(const cx_backend *be, int Cin, int N, int H, int W, int Cout,
                                int k);
    /* As pack_bf16, into the grid layout of a following "same" convolution
     * of odd kernel k; x: CNHW [K][N][H][W]. */
    cx_status (*pack_bf16_grid)(cx_backend *be, const float *x, int K, int N, int H, int W,
                                const float *scale, const float *shift, int k, uint16_t *out);
    /* "Same" convolution (odd k) of a grid-packed input; otherwise as
     * conv2d_bf16. */
    cx_status (*conv2d_grid_bf16)(cx_backend *be, const uint16_t *xg, int Cin, int N, int H, int W,
                                  const uint16_t *w, int Cout, int k, float *y, float *scratch,
                                  size_t scratch_n);
    size_t (*conv_grid_bf16_scratch)(const cx_backend *be, int Cin, int N, int H, int W, int Cout,
                                     int k);

    /* ---- what runs ---- */

    /* Name of the fp32 GEMM this backend runs on this machine. */
    const char *(*gemm_kernel)(const cx_backend *be);
    /* The most roundings any element of a K-deep product of its
     * convolutions passes through: the n of the bound
     *     |C - fl(C)| <= gamma_n (|A| |B| + |C0|),  gamma_n = n u / (1 - n u),
     * u = 2^-24, that the conformance harness holds its convolutions to. */
    int (*gemm_depth)(const cx_backend *be, int K);
    /* Whether conv2d and conv2d_bn_relu run this shape (a 3x3 "same"
     * convolution) by Winograd F(2x2, 3x3): 0 if not (or NULL), else the n
     * of its bound, which is over the transformed magnitudes
     * (kernels/cpu/wino.inc, tests/cx_bounds.h), not gemm_depth's. */
    int (*conv_winograd)(const cx_backend *be, int Cin, int N, int H, int W, int Cout, int k);
    /* Name of the bf16 kernel this backend runs on this machine; "portable"
     * means a plain loop slower than fp32 (bf16 is then not worth it). */
    const char *(*bf16_kernel)(const cx_backend *be);
} cx_ops;

/* A backend: its ops and its own state. Made by the registry, used by one
 * context at a time (a context or a trainer owns its backend object). */
struct cx_backend {
    const cx_ops *ops;
    const struct cx_backend_entry *entry;
    int variant; /* which of the entry's variants */
    void *state; /* the backend's own */
    /* 1: 3x3 convolutions by the direct method, never Winograd. A training
     * pass sets it: Winograd's larger rounding error, amplified over many
     * optimiser steps, made the trajectory less accurate than PyTorch fp32's
     * on some kernel sets (py_test_train_torch). */
    int direct_conv;
    cx_err err;  /* what the last failing op said */
};

/* ---- the registry (kernels/registry.c) ---- */

/* One kind of backend. A kind may come in variants (the CPU backend's
 * instruction sets; a GPU backend's devices): those this machine can run,
 * best first; variant 0 is the default. */
typedef struct cx_backend_entry {
    const char *name; /* "cpu": what --backend takes */
    cx_backend_id id;
    const char *about; /* one line for help texts */
    int (*variants)(void);
    const char *(*variant_name)(int variant);
    /* Fills be->ops and be->state for a variant; be->entry and be->variant
     * are set by the registry. */
    cx_status (*create)(cx_backend *be, int variant, cx_err *err);
    void (*destroy)(cx_backend *be);
} cx_backend_entry;

/* Every registered kind, in the order of cx_backend_id. */
int cx_backend_count(void);
const cx_backend_entry *cx_backend_at(int i);
/* NULL when unknown. */
const cx_backend_entry *cx_backend_find(cx_backend_id id);
const cx_backend_entry *cx_backend_find_name(const char *name);

/* A backend object of the default variant (CX_EARG naming the known ones
 * for an unknown id), or of a given variant (for the conformance harness). */
cx_status cx_backend_new(cx_backend_id id, cx_backend **out, cx_err *err);
cx_status cx_backend_new_variant(const cx_backend_entry *e, int variant, cx_backend **out,
                                 cx_err *err);
void cx_backend_free(cx_backend *be);
/* "cpu (avx512, 2 threads)"-like description of a backend object. */
const char *cx_backend_describe(const cx_backend *be, char *buf, size_t n);

/* ---- helpers for callers ---- */

/* A failed op: "backend B: OP (WHERE): what the backend said" into err,
 * returning the op's status. */
cx_status cx_be_fail(const cx_backend *be, cx_status st, const char *op, const char *where,
                     cx_err *err);

/* Calls an op, and on failure returns from the calling function with
 * cx_be_fail's status. `where` names what the op worked on (a layer). */
#define CX_OP(be, err, where, op, ...)                                                             \
    do {                                                                                           \
        cx_backend *be_ = (be);                                                                    \
        cx_status st_ = be_->ops->op(be_, __VA_ARGS__);                                            \
        if (st_ != CX_OK)                                                                          \
            return cx_be_fail(be_, st_, #op, (where), (err));                                      \
    } while (0)

/* Binds the backend to the calling thread (cx_ops.bind) before its ops. */
static inline cx_status cx_be_bind(cx_backend *be, cx_err *err)
{
    cx_status st = be->ops->bind(be);
    return st ? cx_be_fail(be, st, "bind", NULL, err) : CX_OK;
}

/* The backend's view of n bytes of host memory to read: on a host-memory
 * backend the host pointer itself (no copy); elsewhere a copy uploaded into
 * staging (n bytes of the backend's memory). */
static inline cx_status cx_be_in(cx_backend *be, const void *host, void *staging, size_t n,
                                 const void **view)
{
    if (be->ops->host_memory) {
        *view = host;
        return CX_OK;
    }
    *view = staging;
    return be->ops->upload(be, staging, host, n);
}

/* Where ops should write n bytes that end in host memory: the host buffer
 * itself on a host-memory backend, else staging; cx_be_out_done brings them
 * down (nothing to do when they are already there). */
static inline void *cx_be_out(const cx_backend *be, void *host, void *staging)
{
    return be->ops->host_memory ? host : staging;
}
static inline cx_status cx_be_out_done(cx_backend *be, void *host, const void *view, size_t n)
{
    return view == host ? CX_OK : be->ops->download(be, host, view, n);
}

/* Output size of a convolution or pooling window (floor mode). */
static inline int cx_out_size(int in, int k, int s, int pad) { return (in + 2 * pad - k) / s + 1; }

#endif
