/* fp32 GEMM of the CPU backend (sgemm.c). sgemm.c is compiled once per
 * instruction-set variant (kernels/cpu/variant.h): inside a variant's
 * compilation these names are that variant's functions; elsewhere (tests,
 * benchmarks) they call the variant the CPU backend runs on this machine. */
#ifndef CX_CPU_SGEMM_H
#define CX_CPU_SGEMM_H

#include <stdint.h>

#ifdef CX_VARIANT
#include "kernels/cpu/variant.h"
#define cx_sgemm CX_V(cx_sgemm)
#define cx_sgemm_bnrelu CX_V(cx_sgemm_bnrelu)
#define cx_sgemm_bnrelu_grad CX_V(cx_sgemm_bnrelu_grad)
#define cx_sgemm_conv_same CX_V(cx_sgemm_conv_same)
#define cx_sgemm_conv_same_direct CX_V(cx_sgemm_conv_same_direct)
#define cx_sgemm_conv_same_winograd CX_V(cx_sgemm_conv_same_winograd)
#define cx_sgemm_conv3x3_winograd CX_V(cx_sgemm_conv3x3_winograd)
#define cx_sgemm_conv3x3_winograd_depth CX_V(cx_sgemm_conv3x3_winograd_depth)
#define cx_sgemm_kernel CX_V(cx_sgemm_kernel)
#define cx_sgemm_depth CX_V(cx_sgemm_depth)
#endif

/* C[M][N] = op(A) op(B) (accumulate = 0) or C += op(A) op(B) (accumulate =
 * 1); row-major; op(A) is A[M][K] (lda) or, with transA, A^T of A[K][M];
 * op(B) is B[K][N] (ldb) or, with transB, B^T of B[N][K]. */
void cx_sgemm(int transA, int transB, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, int accumulate, float *C, int ldc);

/* As cx_sgemm, with stored row i of B (a row of op(B) when not transposed,
 * a column when transposed) read as max(0, B * bscale[i] + bshift[i]): a
 * BatchNorm + ReLU applied while packing, never stored. */
void cx_sgemm_bnrelu(int transA, int transB, int M, int N, int K, const float *A, int lda,
                     const float *B, int ldb, const float *bscale, const float *bshift,
                     int accumulate, float *C, int ldc);

/* BatchNorm + ReLU's backward after a GEMM, in the deferred form (see
 * conv1x1_bn_relu_backward_deferred in kernels/backend.h). x is the BN input
 * with the layout of dx; per row m: mask = x * scale + shift > 0 and
 * xh = (x - mean) * invstd. */
typedef struct cx_bnrelu_grad {
    const float *x;
    const float *scale, *shift, *mean, *invstd;
    float *dgamma, *dbeta; /* [M], added to */
} cx_bnrelu_grad;

/* With g = op(A) B (B[K][N], not transposed; never stored) and d = g where
 * the mask holds (else 0): dx[m][n] += scale[m] * d, dbeta[m] += sum_n d,
 * dgamma[m] += sum_n d * xh. x and dx rows are ldx apart. The row sums are
 * accumulated in double, in an order fixed by the thread count. */
void cx_sgemm_bnrelu_grad(int transA, int M, int N, int K, const float *A, int lda,
                          const float *B, int ldb, const cx_bnrelu_grad *e, float *dx, int ldx);

/* A "same" k x k convolution (stride 1, padding (k-1)/2) of the N images
 * of H x W in x (CNHW: channel planes ldx apart): y[co][p] = sum over taps
 * q and ci of w[co][ci][q] b(x[ci][p + shift_q]), the taps whose source
 * lies inside p's image; b is max(0, v * bscale[ci] + bshift[ci]) or, with
 * bscale NULL, the identity. y (rows ldy apart) is overwritten. It is the
 * kn2row GEMM (rows (co, q) of Z = W x) with each tile of Z added into y at
 * its tap's shift: Z is never stored (plain loops for k > 11). A 3x3
 * convolution with enough 2x2 output tiles runs Winograd F(2x2, 3x3)
 * instead (cx_sgemm_conv3x3_winograd), unless the environment sets
 * CHEXNET_WINOGRAD=0. */
void cx_sgemm_conv_same(int Cout, int Cin, int k, const float *w, int N, int H, int W,
                        const float *x, int64_t ldx, const float *bscale, const float *bshift,
                        float *y, int64_t ldy);

/* cx_sgemm_conv_same without Winograd: the kn2row GEMM (or plain loops). */
void cx_sgemm_conv_same_direct(int Cout, int Cin, int k, const float *w, int N, int H, int W,
                               const float *x, int64_t ldx, const float *bscale,
                               const float *bshift, float *y, int64_t ldy);

/* 1 where cx_sgemm_conv_same runs this shape by Winograd, else 0. */
int cx_sgemm_conv_same_winograd(int Cout, int Cin, int k, int N, int H, int W);

/* cx_sgemm_conv_same of a 3x3 kernel by Winograd F(2x2, 3x3), whatever the
 * shape (kernels/cpu/wino.inc: the method and its error bound, which is
 * not the direct kernel's). Returns 0, having written nothing, when its
 * buffers cannot be allocated; else 1. */
int cx_sgemm_conv3x3_winograd(int Cout, int Cin, const float *w, int N, int H, int W,
                              const float *x, int64_t ldx, const float *bscale,
                              const float *bshift, float *y, int64_t ldy);

/* The most roundings on any path from a weight and an input to an output of
 * cx_sgemm_conv3x3_winograd with Cin input channels: the n of its bound
 * (kernels/cpu/wino.inc, tests/cx_bounds.h). */
int cx_sgemm_conv3x3_winograd_depth(int Cin);

/* The microkernel, e.g. "avx512 8x32", "avx2 6x16", "neon 8x8". */
const char *cx_sgemm_kernel(void);

/* The most roundings any element of a K-deep product passes through (the
 * partial-sum levels, the product's own rounding without FMA, C's earlier
 * value): the n of the error bound
 *     |C - fl(C)| <= gamma_n (|op(A)| |op(B)| + |C|),  gamma_n = n u / (1 - n u),
 * u = 2^-24, which holds on every CPU and every variant. */
int cx_sgemm_depth(int K);

#endif
