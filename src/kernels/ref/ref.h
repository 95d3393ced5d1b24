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

/* One Adam step of parameter j (cx_adam_hyper). */
static inline void cx_adam_update(float *w, const float *g, float *m, float *v, int64_t j,
                                  const cx_adam_hyper *h)
{
    float gj = g[j];
    if (h->weight_decay != 0.0f)
        gj += h->weight_decay * w[j];
    m[j] = m[j] * h->beta1 + (1.0f - h->beta1) * gj;
    v[j] = v[j] * h->beta2 + (1.0f - h->beta2) * gj * gj;
    float denom = sqrtf(v[j]) / h->bc2_sqrt + h->eps;
    w[j] -= h->step_size * (m[j] / denom);
}

#endif
