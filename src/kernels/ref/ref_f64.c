/* ref_ops.inc instantiated for double: finite-difference gradient checks. */
#include "kernels/ref/ref_f64.h"

#define REAL double
#define FN(name) ref64_##name
#include "kernels/ref/ref_ops.inc"

static const cx_ops64 REF64_OPS = {
    .bn_relu = ref64_bn_relu,
    .conv2d = ref64_conv2d,
    .maxpool = ref64_maxpool,
    .avgpool = ref64_avgpool,
    .gap = ref64_gap,
    .linear = ref64_linear,
    .bn_stats = ref64_bn_stats,
    .bn_relu_backward = ref64_bn_relu_backward,
    .conv2d_backward = ref64_conv2d_backward,
    .maxpool_backward = ref64_maxpool_backward,
    .avgpool_backward = ref64_avgpool_backward,
    .gap_backward = ref64_gap_backward,
    .linear_backward = ref64_linear_backward,
    .nchw_to_cnhw = ref64_nchw_to_cnhw,
    .cnhw_to_nchw = ref64_cnhw_to_nchw,
    .bn_fold = ref64_bn_fold,
    .bn_running_update = ref64_bn_running_update,
    .bn_deferred_terms = ref64_bn_deferred_terms,
    .bce_loss = ref64_bce_loss,
};

const cx_ops64 *cx_ops_ref64(void) { return &REF64_OPS; }
