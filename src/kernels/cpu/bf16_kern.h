/* Types shared by the bf16 kernels: bf16.c (packing, the portable GEMM,
 * dispatch) and bf16_x86.c (AMX and AVX512-BF16, compiled with those
 * instruction sets enabled and called only where util/cpu.h reports them). */
#ifndef CX_CPU_BF16_KERN_H
#define CX_CPU_BF16_KERN_H

#include <stdint.h>

/* Both packers walk each pair row (channels 2j, 2j+1) as runs: a run of
 * `len` positions of the two channels (BN + ReLU applied when bn is set)
 * written as interleaved bf16 pairs. */
typedef struct {
    const float *x0, *x1; /* the two channels (x1 NULL: K odd, zeros) */
    float sc0, sh0, sc1, sh1;
    int bn;
} pair_src;

/* All three kernels compute, for m < M and n < ncols,
 *     C[m][n] = sum_t sum_k A[t*astep + m*Kp + k] * B(k, n + shift[t])
 * over ntaps taps t: one tap with shift 0 is a plain GEMM; the k*k taps of
 * a "same" convolution over a spatially padded input are that convolution
 * (the shift of tap (dy, dx) is dy * padded row + dx). */
typedef struct {
    int n;
    int64_t astep;
    const int64_t *shift;
} bf16_taps;

static inline int bf16_imin(int64_t a, int64_t b) { return (int)(a < b ? a : b); }

#if defined(__x86_64__)
void cx_bf16_run_avx512(const pair_src *ps, int64_t off, int64_t len, uint32_t *o);
void cx_bf16_gemm_amx(int M, int64_t ncols, int64_t Kp, const uint16_t *A, const bf16_taps *tp,
                      const uint16_t *B, int64_t ldb, float *C, int64_t ldc);
void cx_bf16_gemm_avx512(int M, int64_t ncols, int64_t Kp, const uint16_t *A,
                         const bf16_taps *tp, const uint16_t *B, int64_t ldb, float *C,
                         int64_t ldc);
#endif

#endif
