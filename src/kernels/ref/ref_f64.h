/* The reference kernels in double precision (ref_ops.inc with REAL =
 * double), for finite-difference gradient checks. Same signatures and
 * layouts as cx_ops in kernels/backend.h, with double buffers. */
#ifndef CX_REF_F64_H
#define CX_REF_F64_H

#include <stddef.h>
#include <stdint.h>

typedef struct cx_ops64 {
    void (*bn_relu)(const double *x, double *y, int C, int64_t P, const double *scale,
                    const double *shift);
    void (*conv2d)(const double *x, int Cin, int N, int H, int W, const double *w, int Cout,
                   int k, int s, int pad, double *y, double *scratch, size_t scratch_n);
    void (*maxpool)(const double *x, int C, int N, int H, int W, int k, int s, int pad,
                    double *y);
    void (*avgpool)(const double *x, int C, int N, int H, int W, int k, double *y);
    void (*gap)(const double *x, int C, int N, int HW, double *y);
    void (*linear)(const double *x, int N, int F, const double *w, const double *b, int M,
                   double *y);
    void (*bn_stats)(const double *x, int C, int64_t P, double *mean, double *var);
    void (*bn_relu_backward)(const double *x, const double *dy, int C, int64_t P,
                             const double *gamma, const double *beta, const double *mean,
                             const double *invstd, double *dgamma, double *dbeta, double *dx,
                             int accumulate);
    void (*conv2d_backward)(const double *x, int Cin, int N, int H, int W, const double *w,
                            int Cout, int k, int s, int pad, const double *dy, double *dw,
                            double *dx, int accumulate, double *scratch, size_t scratch_n);
    void (*maxpool_backward)(const double *x, int C, int N, int H, int W, int k, int s, int pad,
                             const double *dy, double *dx);
    void (*avgpool_backward)(const double *dy, int C, int N, int H, int W, int k, double *dx);
    void (*gap_backward)(const double *dy, int C, int N, int HW, double *dx);
    void (*linear_backward)(const double *x, int N, int F, const double *w, int M,
                            const double *dy, double *dw, double *db, double *dx);
    void (*nchw_to_cnhw)(const double *x, int N, int C, int64_t HW, double *y);
    void (*cnhw_to_nchw)(const double *x, int C, int N, int64_t HW, int n0, int n, double *y);
    void (*bn_fold)(int C, const double *weight, const double *bias, const double *mean,
                    const double *var, double eps, double *scale, double *shift, double *invstd);
    void (*bn_running_update)(int C, int64_t P, double momentum, const double *mean,
                              const double *var, double *run_mean, double *run_var,
                              const double *loss);
    void (*bn_deferred_terms)(int C, int64_t P, const double *scale, const double *dgamma,
                              const double *dbeta, double *a, double *b);
    void (*bce_loss)(const double *logits, const double *labels, int n, int K, const double *wpos,
                     const double *wneg, double *loss, double *dlogits);
} cx_ops64;

const cx_ops64 *cx_ops_ref64(void);

#endif
