/* Reference fused ops (ref_fused.c). */
#ifndef CX_REF_FUSED_H
#define CX_REF_FUSED_H

#include <stdint.h>

void ref_conv1x1_bn_relu(const float *x, int Cin, int64_t P, const float *scale,
                         const float *shift, const float *w, int Cout, float *y, float *scratch);
void ref_conv1x1_bn_relu_backward(const float *x, int Cin, int64_t P, const float *scale,
                                  const float *shift, const float *w, int Cout, const float *dy,
                                  float *dw, float *da, int accumulate, float *scratch);
void ref_conv1x1_bn_relu_backward_deferred(const float *x, int Cin, int64_t P,
                                           const float *scale, const float *shift,
                                           const float *mean, const float *invstd,
                                           const float *w, int Cout, const float *dy, float *dw,
                                           float *dgamma, float *dbeta, float *dx,
                                           float *scratch);
void ref_bn_backward_finish(const float *x, int C, int64_t P, const float *mean,
                            const float *invstd, const float *a, const float *b, float *dx);

#endif
