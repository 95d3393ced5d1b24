/* Helpers shared by the C tests (test_backend_ops.c, test_sgemm.c, test_bf16.c,
 * test_grad.c). */
#ifndef CX_TESTUTIL_H
#define CX_TESTUTIL_H

#include <stdlib.h>
#include <string.h>

#include "chexnet.h"
#include "util/rng.h"

/* n uniform values in [lo, hi) (malloc'd). */
static inline float *rand_buf(cx_rng *r, size_t n, float lo, float hi)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * (float)cx_rng_uniform(r);
    return v;
}

/* Realistic, non-identity BatchNorm parameters and running statistics for
 * every 1-D tensor but the classifier's. */
static inline void perturb_bn(cx_model *m, uint64_t seed)
{
    cx_rng r;
    cx_rng_seed(&r, seed);
    for (int i = 0; i < cx_model_num_tensors(m); i++) {
        cx_param *p = cx_model_tensor(m, i);
        if (p->ndim != 1 || !strncmp(p->name, "classifier", 10))
            continue;
        for (int64_t j = 0; j < p->numel; j++) {
            double u = cx_rng_uniform(&r);
            switch (p->kind) {
            case CX_PARAM_WEIGHT: p->data[j] = (float)(0.5 + u); break;
            case CX_PARAM_BIAS: p->data[j] = (float)(u - 0.5) * 0.4f; break;
            case CX_PARAM_RUNNING_MEAN: p->data[j] = (float)(u - 0.3) * 0.6f; break;
            case CX_PARAM_RUNNING_VAR: p->data[j] = (float)(0.2 + 2.0 * u); break;
            }
        }
    }
}

/* The small DenseNet-BC of the whole-model tests: growth 8, blocks 2-3-2,
 * 16 initial features, 5 classes, 3 input channels; weights from seed 42
 * and realistic BatchNorm statistics (perturb_bn, seed 43). NULL if it
 * cannot be built. */
static inline cx_model *small_densenet(void)
{
    cx_config cfg = {.arch = "densenet", .growth_rate = 8, .n_blocks = 3,
                     .block_config = {2, 3, 2}, .num_init_features = 16, .bn_size = 4,
                     .num_classes = 5, .in_channels = 3};
    cx_model *m = NULL;
    cx_err err = {0};
    if (cx_model_new(&cfg, &m, &err) != CX_OK)
        return NULL;
    cx_model_init(m, 42);
    perturb_bn(m, 43);
    return m;
}

#endif
