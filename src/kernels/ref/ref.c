/* The reference backend: ref_ops.inc instantiated for float. It defines what
 * every op computes; faster backends are tested against it. */
#include "kernels/backend.h"
#include "kernels/ref/ref_bf16.h"
#include "kernels/ref/ref_fused.h"

#define REAL float
#define FN(name) ref_##name
#include "kernels/ref/ref_ops.inc"

/* The BN-ReLU output is stored in act, then the plain convolution. */
static void ref_conv2d_bn_relu(const float *x, int Cin, int N, int H, int W, const float *scale,
                               const float *shift, const float *w, int Cout, int k, float *y,
                               float *act, float *scratch, size_t scratch_n)
{
    ref_bn_relu(x, act, Cin, (int64_t)N * H * W, scale, shift);
    ref_conv2d(act, Cin, N, H, W, w, Cout, k, 1, (k - 1) / 2, y, scratch, scratch_n);
}

static void ref_conv2d_bn_relu_backward(const float *x, int Cin, int N, int H, int W,
                                        const float *scale, const float *shift, const float *w,
                                        int Cout, int k, const float *dy, float *dw, float *da,
                                        float *act, float *scratch, size_t scratch_n)
{
    ref_bn_relu(x, act, Cin, (int64_t)N * H * W, scale, shift);
    ref_conv2d_backward(act, Cin, N, H, W, w, Cout, k, 1, (k - 1) / 2, dy, dw, da, 0, scratch,
                        scratch_n);
}

static const cx_ops REF_OPS = {
    .name = "ref",
    .bn_relu = ref_bn_relu,
    .conv2d = ref_conv2d,
    .conv_scratch = ref_conv_scratch,
    .maxpool = ref_maxpool,
    .avgpool = ref_avgpool,
    .gap = ref_gap,
    .linear = ref_linear,
    .conv1x1_bn_relu = ref_conv1x1_bn_relu,
    .conv1x1_bn_relu_backward = ref_conv1x1_bn_relu_backward,
    .conv1x1_bn_relu_backward_deferred = ref_conv1x1_bn_relu_backward_deferred,
    .conv2d_bn_relu = ref_conv2d_bn_relu,
    .conv2d_bn_relu_backward = ref_conv2d_bn_relu_backward,
    .bn_backward_finish = ref_bn_backward_finish,
    .bn_stats = ref_bn_stats,
    .bn_relu_backward = ref_bn_relu_backward,
    .conv2d_backward = ref_conv2d_backward,
    .conv_bwd_scratch = ref_conv_bwd_scratch,
    .maxpool_backward = ref_maxpool_backward,
    .avgpool_backward = ref_avgpool_backward,
    .gap_backward = ref_gap_backward,
    .linear_backward = ref_linear_backward,
    .pack_bf16 = ref_pack_bf16,
    .conv2d_bf16 = ref_conv2d_bf16,
    .conv_bf16_scratch = ref_conv_bf16_scratch,
    .pack_bf16_grid = ref_pack_bf16_grid,
    .conv2d_grid_bf16 = ref_conv2d_grid_bf16,
    .conv_grid_bf16_scratch = ref_conv_grid_bf16_scratch,
    .gemm_kernel = ref_bf16_kernel,
    .bf16_kernel = ref_bf16_kernel,
};

const cx_ops *cx_ops_ref(void) { return &REF_OPS; }
