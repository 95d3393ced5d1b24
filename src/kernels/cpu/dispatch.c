/* The CPU backend's variants (kernels/cpu/variant.h): which this build has
 * (CX_CPU_VARIANTS, a list X(name) ... best first, set by the build), which
 * the CPU can run (util/cpu.h, after CHEXNET_ISA), and the entry points that
 * call the chosen one. Compiled once, for the baseline. */
#include "chexnet.h"
#include "kernels/cpu/sgemm.h"
#include "kernels/cpu/variant.h"
#include "util/cpu.h"

#include <pthread.h>
#include <string.h>

#ifndef CX_CPU_VARIANTS
#error "CX_CPU_VARIANTS must list the variants compiled into this build"
#endif

#define X(v) const cx_cpu_variant *cx_cpu_variant_##v(void);
CX_CPU_VARIANTS
#undef X

static const cx_cpu_variant *(*const ALL[])(void) = {
#define X(v) cx_cpu_variant_##v,
    CX_CPU_VARIANTS
#undef X
};
#define NALL ((int)(sizeof ALL / sizeof *ALL))

static const cx_cpu_variant *g_run[NALL];
static int g_nrun;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int can_run(const char *name)
{
    const cx_cpu_info *ci = cx_cpu();
    if (!strcmp(name, "avx512"))
        return ci->avx512;
    if (!strcmp(name, "avx2"))
        return ci->avx2;
    return 1; /* baseline, neon, portable: what the build targets */
}

static void init(void)
{
    for (int i = 0; i < NALL; i++) {
        const cx_cpu_variant *v = ALL[i]();
        if (can_run(v->name))
            g_run[g_nrun++] = v;
    }
}

int cx_cpu_variant_count(void)
{
    pthread_once(&g_once, init);
    return g_nrun;
}

const cx_cpu_variant *cx_cpu_variant_at(int i)
{
    pthread_once(&g_once, init);
    return i >= 0 && i < g_nrun ? g_run[i] : NULL;
}

int cx_cpu_variant_all(const cx_cpu_variant **out, int max)
{
    for (int i = 0; i < NALL && i < max; i++)
        out[i] = ALL[i]();
    return NALL;
}

/* the last variant (the build's baseline) runs everywhere: never NULL */
static const cx_cpu_variant *best(void) { return cx_cpu_variant_at(0); }

void cx_sgemm(int transA, int transB, int M, int N, int K, const float *A, int lda,
              const float *B, int ldb, int accumulate, float *C, int ldc)
{
    best()->sgemm(transA, transB, M, N, K, A, lda, B, ldb, accumulate, C, ldc);
}

void cx_sgemm_bnrelu(int transA, int transB, int M, int N, int K, const float *A, int lda,
                     const float *B, int ldb, const float *bscale, const float *bshift,
                     int accumulate, float *C, int ldc)
{
    best()->sgemm_bnrelu(transA, transB, M, N, K, A, lda, B, ldb, bscale, bshift, accumulate, C,
                         ldc);
}

void cx_sgemm_bnrelu_grad(int transA, int M, int N, int K, const float *A, int lda,
                          const float *B, int ldb, const cx_bnrelu_grad *e, float *dx, int ldx)
{
    best()->sgemm_bnrelu_grad(transA, M, N, K, A, lda, B, ldb, e, dx, ldx);
}

void cx_sgemm_conv_same(int Cout, int Cin, int k, const float *w, int N, int H, int W,
                        const float *x, int64_t ldx, const float *bscale, const float *bshift,
                        float *y, int64_t ldy)
{
    best()->sgemm_conv_same(Cout, Cin, k, w, N, H, W, x, ldx, bscale, bshift, y, ldy);
}

int cx_sgemm_conv_same_winograd(int Cout, int Cin, int k, int N, int H, int W)
{
    return best()->sgemm_conv_same_winograd(Cout, Cin, k, N, H, W);
}

int cx_sgemm_conv3x3_winograd(int Cout, int Cin, const float *w, int N, int H, int W,
                              const float *x, int64_t ldx, const float *bscale,
                              const float *bshift, float *y, int64_t ldy)
{
    return best()->sgemm_conv3x3_winograd(Cout, Cin, w, N, H, W, x, ldx, bscale, bshift, y, ldy);
}

int cx_sgemm_conv3x3_winograd_depth(int Cin) { return best()->sgemm_conv3x3_winograd_depth(Cin); }

const char *cx_sgemm_kernel(void) { return best()->gemm_kernel(); }

int cx_sgemm_depth(int K) { return best()->gemm_depth(K); }

const char *cx_cpu_variant_name(void) { return best()->name; }

const char *cx_cpu_variants_built(void)
{
    static const char names[] =
#define X(v) " " #v
        CX_CPU_VARIANTS
#undef X
        ;
    return names + 1;
}
