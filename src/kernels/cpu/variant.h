/* Instruction-set variants of the CPU backend. kernels/cpu/cpu.c and
 * kernels/cpu/sgemm.c are compiled once per variant, each with its own
 * target flags (CMakeLists.txt), and CX_VARIANT set to the variant's name,
 * which suffixes their external symbols (CX_V). At run time the best
 * variant the CPU can run is chosen (kernels/cpu/dispatch.c); CHEXNET_ISA
 * caps the choice for tests and comparisons.
 *
 *   x86-64:  avx512   AVX-512 F/BW/DQ/VL + AVX2 + FMA   (own 8x32 GEMM)
 *            avx2     AVX2 + FMA + F16C                 (6x16)
 *            baseline x86-64 (SSE2)                     (4x8)
 *   aarch64: neon     Armv8-A (NEON is part of it)      (8x8)
 *   other:   portable                                   (4x8)
 * The bf16 kernels are chosen separately (kernels/cpu/bf16.h). */
#ifndef CX_CPU_VARIANT_H
#define CX_CPU_VARIANT_H

#include <stdint.h>

#include "kernels/backend.h"

#define CX_VCAT2(a, b) a##_##b
#define CX_VCAT(a, b) CX_VCAT2(a, b)
#define CX_V(name) CX_VCAT(name, CX_VARIANT)
#define CX_VSTR2(a) #a
#define CX_VSTR(a) CX_VSTR2(a)
#define CX_VARIANT_NAME CX_VSTR(CX_VARIANT)

struct cx_bnrelu_grad;

typedef struct cx_cpu_variant {
    const char *name; /* "avx512", "avx2", "baseline", "neon", "portable" */
    const cx_ops *ops;
    /* the variant's GEMMs (kernels/cpu/sgemm.h), for tests and benchmarks */
    void (*sgemm)(int transA, int transB, int M, int N, int K, const float *A, int lda,
                  const float *B, int ldb, int accumulate, float *C, int ldc);
    void (*sgemm_bnrelu)(int transA, int transB, int M, int N, int K, const float *A, int lda,
                         const float *B, int ldb, const float *bscale, const float *bshift,
                         int accumulate, float *C, int ldc);
    void (*sgemm_bnrelu_grad)(int transA, int M, int N, int K, const float *A, int lda,
                              const float *B, int ldb, const struct cx_bnrelu_grad *e, float *dx,
                              int ldx);
    void (*sgemm_conv_same)(int Cout, int Cin, int k, const float *w, int N, int H, int W,
                            const float *x, int64_t ldx, const float *bscale,
                            const float *bshift, float *y, int64_t ldy);
    int (*sgemm_conv_same_winograd)(int Cout, int Cin, int k, int N, int H, int W);
    int (*sgemm_conv3x3_winograd)(int Cout, int Cin, const float *w, int N, int H, int W,
                                  const float *x, int64_t ldx, const float *bscale,
                                  const float *bshift, float *y, int64_t ldy);
    int (*sgemm_conv3x3_winograd_depth)(int Cin);
    const char *(*gemm_kernel)(void);
    int (*gemm_depth)(int K);
} cx_cpu_variant;

/* The variants this build has that this CPU can run, best first, after the
 * cap CHEXNET_ISA (a variant name: nothing better than it is used; an
 * unknown name or one above the CPU caps nothing). Index 0 is the one the
 * CPU backend runs. */
int cx_cpu_variant_count(void);
const cx_cpu_variant *cx_cpu_variant_at(int i);

/* Every variant of this build, whether the CPU can run it or not (for
 * messages: which exist). */
int cx_cpu_variant_all(const cx_cpu_variant **out, int max);

#endif
