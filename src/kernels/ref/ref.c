/* The reference backend: ref_ops.inc instantiated for float, plain loops
 * with no threads, in host memory. It defines what every op computes;
 * faster backends are tested against it (tests/test_backend_ops.c). The
 * ops whose work is a few values per channel or per image (layout changes,
 * BatchNorm folding and bookkeeping, the loss) are also what the CPU
 * backend runs (ref.h). */
#include "kernels/ref/ref.h"
#include "kernels/bf16_layout.h"
#include "kernels/host_memory.h"
#include "kernels/ref/ref_bf16.h"
#include "kernels/ref/ref_fused.h"

#define REAL float
#define FN(name) ref_##name
#include "kernels/ref/ref_ops.inc"

/* ---- ops shared with the CPU backend (ref.h) ---- */

cx_status cx_ref_nchw_to_cnhw(cx_backend *be, const float *x, int N, int C, int64_t HW, float *y)
{
    ref_nchw_to_cnhw(x, N, C, HW, y);
    return CX_OK;
}

cx_status cx_ref_cnhw_to_nchw(cx_backend *be, const float *x, int C, int N, int64_t HW, int n0,
                              int n, float *y)
{
    ref_cnhw_to_nchw(x, C, N, HW, n0, n, y);
    return CX_OK;
}

cx_status cx_ref_bn_fold(cx_backend *be, int C, const float *weight, const float *bias,
                         const float *mean, const float *var, float eps, float *scale, float *shift,
                         float *invstd)
{
    ref_bn_fold(C, weight, bias, mean, var, eps, scale, shift, invstd);
    return CX_OK;
}

cx_status cx_ref_bn_running_update(cx_backend *be, int C, int64_t P, float momentum,
                                   const float *mean, const float *var, float *run_mean,
                                   float *run_var, const double *loss)
{
    ref_bn_running_update(C, P, momentum, mean, var, run_mean, run_var, loss);
    return CX_OK;
}

cx_status cx_ref_bn_deferred_terms(cx_backend *be, int C, int64_t P, const float *scale,
                                   const float *dgamma, const float *dbeta, float *a, float *b)
{
    ref_bn_deferred_terms(C, P, scale, dgamma, dbeta, a, b);
    return CX_OK;
}

cx_status cx_ref_bce_loss(cx_backend *be, const float *logits, const float *labels, int n, int K,
                          const float *wpos, const float *wneg, double *loss, float *dlogits)
{
    ref_bce_loss(logits, labels, n, K, wpos, wneg, loss, dlogits);
    return CX_OK;
}

/* ---- the rest of the reference ops ---- */

static cx_status rbind(cx_backend *be) { return CX_OK; }

static cx_status rbn_relu(cx_backend *be, const float *x, float *y, int C, int64_t P,
                          const float *scale, const float *shift)
{
    ref_bn_relu(x, y, C, P, scale, shift);
    return CX_OK;
}

static cx_status rbn_stats(cx_backend *be, const float *x, int C, int64_t P, float *mean,
                           float *var)
{
    ref_bn_stats(x, C, P, mean, var);
    return CX_OK;
}

static cx_status rconv2d(cx_backend *be, const float *x, int Cin, int N, int H, int W,
                         const float *w, int Cout, int k, int s, int pad, float *y, float *scratch,
                         size_t scratch_n)
{
    ref_conv2d(x, Cin, N, H, W, w, Cout, k, s, pad, y, scratch, scratch_n);
    return CX_OK;
}

static size_t rconv_scratch(const cx_backend *be, int Cin, int N, int H, int W, int Cout, int k,
                            int s, int pad)
{
    return 0;
}

static cx_status rmaxpool(cx_backend *be, const float *x, int C, int N, int H, int W, int k, int s,
                          int pad, float *y)
{
    ref_maxpool(x, C, N, H, W, k, s, pad, y);
    return CX_OK;
}

static cx_status ravgpool(cx_backend *be, const float *x, int C, int N, int H, int W, int k,
                          float *y)
{
    ref_avgpool(x, C, N, H, W, k, y);
    return CX_OK;
}

static cx_status rgap(cx_backend *be, const float *x, int C, int N, int HW, float *y)
{
    ref_gap(x, C, N, HW, y);
    return CX_OK;
}

static cx_status rlinear(cx_backend *be, const float *x, int N, int F, const float *w,
                         const float *b, int M, float *y)
{
    ref_linear(x, N, F, w, b, M, y);
    return CX_OK;
}

static cx_status rconv1x1_bn_relu(cx_backend *be, const float *x, int Cin, int64_t P,
                                  const float *scale, const float *shift, const float *w, int Cout,
                                  float *y, float *scratch)
{
    ref_conv1x1_bn_relu(x, Cin, P, scale, shift, w, Cout, y, scratch);
    return CX_OK;
}

/* The BN-ReLU output is stored in act, then the plain convolution. */
static cx_status rconv2d_bn_relu(cx_backend *be, const float *x, int Cin, int N, int H, int W,
                                 const float *scale, const float *shift, const float *w, int Cout,
                                 int k, float *y, float *act, float *scratch, size_t scratch_n)
{
    ref_bn_relu(x, act, Cin, (int64_t)N * H * W, scale, shift);
    ref_conv2d(act, Cin, N, H, W, w, Cout, k, 1, (k - 1) / 2, y, scratch, scratch_n);
    return CX_OK;
}

static cx_status rbn_relu_backward(cx_backend *be, const float *x, const float *dy, int C,
                                   int64_t P, const float *gamma, const float *beta,
                                   const float *mean, const float *invstd, float *dgamma,
                                   float *dbeta, float *dx, int accumulate)
{
    ref_bn_relu_backward(x, dy, C, P, gamma, beta, mean, invstd, dgamma, dbeta, dx, accumulate);
    return CX_OK;
}

static cx_status rconv2d_backward(cx_backend *be, const float *x, int Cin, int N, int H, int W,
                                  const float *w, int Cout, int k, int s, int pad, const float *dy,
                                  float *dw, float *dx, int accumulate, float *scratch,
                                  size_t scratch_n)
{
    ref_conv2d_backward(x, Cin, N, H, W, w, Cout, k, s, pad, dy, dw, dx, accumulate, scratch,
                        scratch_n);
    return CX_OK;
}

static cx_status rconv1x1_bn_relu_backward(cx_backend *be, const float *x, int Cin, int64_t P,
                                           const float *scale, const float *shift, const float *w,
                                           int Cout, const float *dy, float *dw, float *da,
                                           int accumulate, float *scratch)
{
    ref_conv1x1_bn_relu_backward(x, Cin, P, scale, shift, w, Cout, dy, dw, da, accumulate, scratch);
    return CX_OK;
}

static cx_status rconv2d_bn_relu_backward(cx_backend *be, const float *x, int Cin, int N, int H,
                                          int W, const float *scale, const float *shift,
                                          const float *w, int Cout, int k, const float *dy,
                                          float *dw, float *da, float *act, float *scratch,
                                          size_t scratch_n)
{
    ref_bn_relu(x, act, Cin, (int64_t)N * H * W, scale, shift);
    ref_conv2d_backward(act, Cin, N, H, W, w, Cout, k, 1, (k - 1) / 2, dy, dw, da, 0, scratch,
                        scratch_n);
    return CX_OK;
}

static cx_status rconv1x1_bn_relu_backward_deferred(cx_backend *be, const float *x, int Cin,
                                                    int64_t P, const float *scale,
                                                    const float *shift, const float *mean,
                                                    const float *invstd, const float *w, int Cout,
                                                    const float *dy, float *dw, float *dgamma,
                                                    float *dbeta, float *dx, float *scratch)
{
    ref_conv1x1_bn_relu_backward_deferred(x, Cin, P, scale, shift, mean, invstd, w, Cout, dy, dw,
                                          dgamma, dbeta, dx, scratch);
    return CX_OK;
}

static cx_status rbn_backward_finish(cx_backend *be, const float *x, int C, int64_t P,
                                     const float *mean, const float *invstd, const float *a,
                                     const float *b, float *dx)
{
    ref_bn_backward_finish(x, C, P, mean, invstd, a, b, dx);
    return CX_OK;
}

static cx_status rmaxpool_backward(cx_backend *be, const float *x, int C, int N, int H, int W,
                                   int k, int s, int pad, const float *dy, float *dx)
{
    ref_maxpool_backward(x, C, N, H, W, k, s, pad, dy, dx);
    return CX_OK;
}

static cx_status ravgpool_backward(cx_backend *be, const float *dy, int C, int N, int H, int W,
                                   int k, float *dx)
{
    ref_avgpool_backward(dy, C, N, H, W, k, dx);
    return CX_OK;
}

static cx_status rgap_backward(cx_backend *be, const float *dy, int C, int N, int HW, float *dx)
{
    ref_gap_backward(dy, C, N, HW, dx);
    return CX_OK;
}

static cx_status rlinear_backward(cx_backend *be, const float *x, int N, int F, const float *w,
                                  int M, const float *dy, float *dw, float *db, float *dx)
{
    ref_linear_backward(x, N, F, w, M, dy, dw, db, dx);
    return CX_OK;
}

static cx_status rfind_nonfinite(cx_backend *be, const float *x, int64_t n, int64_t *first)
{
    *first = -1;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) {
            *first = i;
            break;
        }
    return CX_OK;
}

static cx_status radam(cx_backend *be, float *w, const float *g, float *m, float *v, int64_t n,
                       const cx_adam_hyper *h, const int64_t *bad)
{
    if (bad && *bad >= 0)
        return CX_OK;
    const cx_adam_hyper hh = *h;
    for (int64_t j = 0; j < n; j++)
        cx_adam_update(w, g, m, v, j, &hh);
    return CX_OK;
}

/* ---- bf16 (ref_bf16.c) ---- */

static size_t rbf16_act_size(const cx_backend *be, int K, int64_t P)
{
    return cx_bf16_act_elems(K, P);
}

static size_t rbf16_grid_size(const cx_backend *be, int K, int N, int H, int W, int k)
{
    return cx_bf16_grid_elems(K, N, H, W, k);
}

static size_t rbf16_weights_size(const cx_backend *be, int Cout, int Cin, int k)
{
    return cx_bf16_weights_elems(Cout, Cin, k);
}

static cx_status rpack_bf16_weights(cx_backend *be, const float *w, int Cout, int Cin, int k,
                                    uint16_t *out)
{
    cx_bf16_pack_conv_weights(w, Cout, Cin, k, out);
    return CX_OK;
}

static cx_status rpack_bf16(cx_backend *be, const float *x, int K, int64_t P, const float *scale,
                            const float *shift, uint16_t *out)
{
    ref_pack_bf16(x, K, P, scale, shift, out);
    return CX_OK;
}

static cx_status rconv2d_bf16(cx_backend *be, const uint16_t *x, int Cin, int N, int H, int W,
                              const uint16_t *w, int Cout, int k, float *y, float *scratch,
                              size_t scratch_n)
{
    ref_conv2d_bf16(x, Cin, N, H, W, w, Cout, k, y, scratch, scratch_n);
    return CX_OK;
}

static size_t rconv_bf16_scratch(const cx_backend *be, int Cin, int N, int H, int W, int Cout,
                                 int k)
{
    return ref_conv_bf16_scratch(Cin, N, H, W, Cout, k);
}

static cx_status rpack_bf16_grid(cx_backend *be, const float *x, int K, int N, int H, int W,
                                 const float *scale, const float *shift, int k, uint16_t *out)
{
    ref_pack_bf16_grid(x, K, N, H, W, scale, shift, k, out);
    return CX_OK;
}

static cx_status rconv2d_grid_bf16(cx_backend *be, const uint16_t *xg, int Cin, int N, int H, int W,
                                   const uint16_t *w, int Cout, int k, float *y, float *scratch,
                                   size_t scratch_n)
{
    ref_conv2d_grid_bf16(xg, Cin, N, H, W, w, Cout, k, y, scratch, scratch_n);
    return CX_OK;
}

static size_t rconv_grid_bf16_scratch(const cx_backend *be, int Cin, int N, int H, int W, int Cout,
                                      int k)
{
    return ref_conv_grid_bf16_scratch(Cin, N, H, W, Cout, k);
}

static const char *rkernel(const cx_backend *be) { return ref_bf16_kernel(); }

/* the fused loops (ref_fused.c) sum K products in float, in order */
static int rgemm_depth(const cx_backend *be, int K) { return K + 2; }

static const cx_ops REF_OPS = {
    .name = "ref",
    .host_memory = 1,
    .bind = rbind,
    .alloc = cx_host_alloc,
    .free = cx_host_free,
    .zero = cx_host_zero,
    .upload = cx_host_copy,
    .download = cx_host_copy,
    .nchw_to_cnhw = cx_ref_nchw_to_cnhw,
    .cnhw_to_nchw = cx_ref_cnhw_to_nchw,
    .bn_fold = cx_ref_bn_fold,
    .bn_relu = rbn_relu,
    .bn_stats = rbn_stats,
    .bn_running_update = cx_ref_bn_running_update,
    .conv2d = rconv2d,
    .conv_scratch = rconv_scratch,
    .maxpool = rmaxpool,
    .avgpool = ravgpool,
    .gap = rgap,
    .linear = rlinear,
    .conv1x1_bn_relu = rconv1x1_bn_relu,
    .conv2d_bn_relu = rconv2d_bn_relu,
    .bce_loss = cx_ref_bce_loss,
    .bn_relu_backward = rbn_relu_backward,
    .conv2d_backward = rconv2d_backward,
    .conv_bwd_scratch = rconv_scratch,
    .conv1x1_bn_relu_backward = rconv1x1_bn_relu_backward,
    .conv2d_bn_relu_backward = rconv2d_bn_relu_backward,
    .conv1x1_bn_relu_backward_deferred = rconv1x1_bn_relu_backward_deferred,
    .bn_deferred_terms = cx_ref_bn_deferred_terms,
    .bn_backward_finish = rbn_backward_finish,
    .maxpool_backward = rmaxpool_backward,
    .avgpool_backward = ravgpool_backward,
    .gap_backward = rgap_backward,
    .linear_backward = rlinear_backward,
    .find_nonfinite = rfind_nonfinite,
    .adam = radam,
    .bf16_act_size = rbf16_act_size,
    .bf16_grid_size = rbf16_grid_size,
    .bf16_weights_size = rbf16_weights_size,
    .pack_bf16_weights = rpack_bf16_weights,
    .pack_bf16 = rpack_bf16,
    .conv2d_bf16 = rconv2d_bf16,
    .conv_bf16_scratch = rconv_bf16_scratch,
    .pack_bf16_grid = rpack_bf16_grid,
    .conv2d_grid_bf16 = rconv2d_grid_bf16,
    .conv_grid_bf16_scratch = rconv_grid_bf16_scratch,
    .gemm_kernel = rkernel,
    .gemm_depth = rgemm_depth,
    .bf16_kernel = rkernel,
};

static int ref_variants(void) { return 1; }

static const char *ref_variant_name(int variant) { return "plain C"; }

static cx_status ref_create(cx_backend *be, int variant, cx_err *err)
{
    be->ops = &REF_OPS;
    return CX_OK;
}

const cx_backend_entry cx_backend_ref_entry = {
    .name = "ref",
    .id = CX_BACKEND_REF,
    .about = "plain C reference loops, one thread (the oracle)",
    .variants = ref_variants,
    .variant_name = ref_variant_name,
    .create = ref_create,
    .destroy = NULL,
};
