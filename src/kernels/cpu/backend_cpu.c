/* The CPU backend (kernels/backend.h): one variant per instruction set this
 * machine can run (kernels/cpu/variant.h, best first), its own thread
 * count, host memory. Its ops are in kernels/cpu/cpu.c (one table per
 * variant); the parts below are compiled once and shared by the variants. */
#include "kernels/cpu/backend_cpu.h"
#include "kernels/cpu/variant.h"
#include "kernels/ref/ref.h"

#include <omp.h>
#include <stdlib.h>

typedef struct {
    const cx_cpu_variant *v;
    int threads; /* OpenMP threads its ops use (cx_get_threads() when made) */
} cpu_state;

cx_status cx_cpu_bind(cx_backend *be)
{
    const cpu_state *s = be->state;
    if (omp_get_max_threads() != s->threads)
        omp_set_num_threads(s->threads);
    return CX_OK;
}

/* One parallel pass over every value, then the first culprit. */
cx_status cx_cpu_find_nonfinite(cx_backend *be, const float *x, int64_t n, int64_t *first)
{
    int bad = 0;
#pragma omp parallel for reduction(| : bad) schedule(static)
    for (int64_t j = 0; j < n; j++)
        bad |= !isfinite(x[j]);
    *first = -1;
    for (int64_t j = 0; bad && j < n; j++)
        if (!isfinite(x[j])) {
            *first = j;
            break;
        }
    return CX_OK;
}

/* Adam on parameters [a, b) */
static void adam_range(float *w, const float *g, float *m, float *v, int64_t a, int64_t b,
                       const cx_adam_hyper *h)
{
    const cx_adam_hyper hh = *h;
#pragma omp simd
    for (int64_t j = a; j < b; j++)
        cx_adam_update(w, g, m, v, j, &hh);
}

/* Every parameter in one parallel pass, shared out evenly. */
cx_status cx_cpu_adam(cx_backend *be, float *w, const float *g, float *m, float *v, int64_t n,
                      const cx_adam_hyper *h, const int64_t *bad)
{
    if (bad && *bad >= 0)
        return CX_OK;
#pragma omp parallel if (n > 65536)
    {
        int nth = omp_get_num_threads(), tid = omp_get_thread_num();
        adam_range(w, g, m, v, n * tid / nth, n * (tid + 1) / nth, h);
    }
    return CX_OK;
}

static int cpu_variants(void) { return cx_cpu_variant_count(); }

static const char *cpu_variant_name(int variant)
{
    const cx_cpu_variant *v = cx_cpu_variant_at(variant);
    return v ? v->name : "none";
}

static cx_status cpu_create(cx_backend *be, int variant, cx_err *err)
{
    cpu_state *s = calloc(1, sizeof *s);
    if (!s)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    s->v = cx_cpu_variant_at(variant);
    s->threads = cx_get_threads();
    be->state = s;
    be->ops = s->v->ops;
    return CX_OK;
}

static void cpu_destroy(cx_backend *be) { free(be->state); }

const cx_backend_entry cx_backend_cpu_entry = {
    .name = "cpu",
    .id = CX_BACKEND_CPU,
    .about = "fp32 GEMM kernels per instruction set and OpenMP threads",
    .variants = cpu_variants,
    .variant_name = cpu_variant_name,
    .create = cpu_create,
    .destroy = cpu_destroy,
};
