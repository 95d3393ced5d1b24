/* bf16 kernels of the CPU backend (bf16.c): packing and GEMM over the
 * layouts of kernels/bf16_layout.h, dispatched at run time to AMX, AVX512-BF16
 * or portable C. */
#ifndef CX_CPU_BF16_H
#define CX_CPU_BF16_H

#include <stddef.h>
#include <stdint.h>

void cpu_bf16_pack(const float *x, int K, int64_t P, const float *scale, const float *shift,
                   uint16_t *out);
void cpu_bf16_pack_grid(const float *x, int K, int N, int H, int W, const float *scale,
                        const float *shift, int k, uint16_t *out);

/* C[m][n] = sum_k A[m][k] B(k, n) for m < M, n < ncols (overwritten, row
 * stride ldc). A: packed weights, cx_bf16_mpad(M) rows of Kp (a multiple of
 * 32) bf16. B: packed activations starting at the first column used, with
 * Pp = ldb columns per pair row; the kernel may read up to 31 columns past
 * ncols. */
void cpu_bf16_gemm(int M, int64_t ncols, int64_t Kp, const uint16_t *A, const uint16_t *B,
                   int64_t ldb, float *C, int64_t ldc);

/* C[co][n] = sum_t sum_k A[t*Cout*Kp + co*Kp + k] B(k, n + shift[t]), for
 * co < Cout, n < ncols: a "same" convolution with ntaps = k*k taps over a
 * spatially padded packed input (packed weights as in kernels/bf16_layout.h).
 * B(k, n + shift) must be inside the buffer for n < ncols + 31. */
void cpu_bf16_conv_taps(int Cout, int64_t ncols, int64_t Kp, const uint16_t *A, int ntaps,
                        const int64_t *shift, const uint16_t *B, int64_t ldb, float *C,
                        int64_t ldc);

/* "amx", "avx512-bf16" or "portable": the kernel cpu_bf16_gemm uses here. */
const char *cpu_bf16_kernel(void);

#endif
