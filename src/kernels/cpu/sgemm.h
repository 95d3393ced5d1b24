/* fp32 GEMM of the CPU backend (sgemm.c). */
#ifndef CX_CPU_SGEMM_H
#define CX_CPU_SGEMM_H

/* C[M][N] = op(A) op(B) (accumulate = 0) or C += op(A) op(B) (accumulate =
 * 1); row-major; op(A) is A[M][K] (lda) or, with transA, A^T of A[K][M];
 * op(B) is B[K][N] (ldb) or, with transB, B^T of B[N][K]. Uses the
 * AVX-512 kernel where the CPU has AVX-512, BLAS elsewhere. */
void cx_sgemm(int transA, int transB, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, int accumulate, float *C, int ldc);

/* As cx_sgemm, with stored row i of B (a row of op(B) when not transposed,
 * a column when transposed) read as max(0, B * bscale[i] + bshift[i]): a
 * BatchNorm + ReLU applied while packing, never stored. Fast with the
 * AVX-512 kernel; plain loops elsewhere (callers then transform B first). */
void cx_sgemm_bnrelu(int transA, int transB, int M, int N, int K, const float *A, int lda,
                     const float *B, int ldb, const float *bscale, const float *bshift,
                     int accumulate, float *C, int ldc);

/* BatchNorm + ReLU's backward after a GEMM, in the deferred form (see
 * conv1x1_bn_relu_backward_deferred in kernels/backend.h). x is the BN input
 * with the layout of dx; per row m: mask = x * scale + shift > 0 and
 * xh = (x - mean) * invstd. */
typedef struct {
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

/* C[q*Cout + co][n] = sum_ci w[co][ci][q] B[ci][n] for taps q < taps (the
 * kn2row GEMM of a convolution), reading the weights in place; with bscale,
 * B's row ci is read as max(0, B * bscale[ci] + bshift[ci]) (as in
 * cx_sgemm_bnrelu). Meant for the AVX-512 kernel (plain loops elsewhere:
 * reorder and use cx_sgemm there). */
void cx_sgemm_conv_taps(int Cout, int Cin, int taps, const float *w, int N, const float *B,
                        int ldb, const float *bscale, const float *bshift, float *C, int ldc);

/* "avx512" or "blas": what cx_sgemm runs on this machine. */
const char *cx_sgemm_kernel(void);

#endif
