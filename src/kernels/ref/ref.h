/* The reference backend's ops that the CPU backend runs as they are: a few
 * values per channel or per image, plain loops (kernels/ref/ref.c), and
 * Adam's arithmetic on one parameter, which every backend's adam applies so
 * that equal gradients give equal weights. Signatures as in cx_ops
 * (kernels/backend.h). */
#ifndef CX_REF_H
#define CX_REF_H

#include <math.h>

#include "kernels/backend.h"

cx_status cx_ref_nchw_to_cnhw(cx_backend *be, const float *x, int N, int C, int64_t HW, float *y);
cx_status cx_ref_cnhw_to_nchw(cx_backend *be, const float *x, int C, int N, int64_t HW, int n0,
                              int n, float *y);
cx_status cx_ref_bn_fold(cx_backend *be, int C, const float *weight, const float *bias,
                         const float *mean, const float *var, float eps, float *scale, float *shift,
                         float *invstd);
cx_status cx_ref_bn_running_update(cx_backend *be, int C, int64_t P, float momentum,
                                   const float *mean, const float *var, float *run_mean,
                                   float *run_var, const double *loss);
cx_status cx_ref_bn_deferred_terms(cx_backend *be, int C, int64_t P, const float *scale,
                                   const float *dgamma, const float *dbeta, float *a, float *b);
cx_status cx_ref_bce_loss(cx_backend *be, const float *logits, const float *labels, int n, int K,
                          const float *wpos, const float *wneg, double *loss, float *dlogits);

/* One Adam step of one parameter (cx_adam_hyper). */
static inline void cx_adam_update(float *w, float g, float *m, float *v, const cx_adam_hyper *h)
{
    if (h->weight_decay != 0.0f)
        g += h->weight_decay * *w;
    *m = *m * h->beta1 + (1.0f - h->beta1) * g;
    *v = *v * h->beta2 + (1.0f - h->beta2) * g * g;
    float denom = sqrtf(*v) / h->bc2_sqrt + h->eps;
    *w -= h->step_size * (*m / denom);
}

#endif
