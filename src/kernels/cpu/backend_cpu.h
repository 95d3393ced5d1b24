/* The CPU backend's parts compiled once (kernels/cpu/backend_cpu.c) that
 * every instruction-set variant's op table (kernels/cpu/cpu.c) shares: the
 * binding of its threads, and the optimiser's passes over all parameters.
 * Signatures as in cx_ops (kernels/backend.h). */
#ifndef CX_BACKEND_CPU_H
#define CX_BACKEND_CPU_H

#include "kernels/backend.h"

cx_status cx_cpu_bind(cx_backend *be);
cx_status cx_cpu_find_nonfinite(cx_backend *be, const float *x, int64_t n, int64_t *first);
cx_status cx_cpu_adam(cx_backend *be, float *w, const float *g, float *m, float *v, int64_t n,
                      const cx_adam_hyper *h, const int64_t *bad);

#endif
