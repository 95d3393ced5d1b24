/* eval_internal.h - helpers shared by the evaluation sources (internal). */
#ifndef CX_EVAL_INTERNAL_H
#define CX_EVAL_INTERNAL_H

#include "chexnet.h"

/* Indices of the entries with label 0/1 (all if label == NULL), sorted by
 * score descending (ties by index); *m = their number. NULL if out of memory. */
uint32_t *cx_eval_sort_desc(const double *score, const int8_t *label, size_t n,
                            size_t *m);

/* The bootstrap PRNG (documented at cx_bootstrap_indices). */
void cx_eval_rng_seed(uint64_t s[4], uint64_t seed, uint64_t b);
uint32_t cx_eval_rng_below(uint64_t s[4], uint32_t n);

/* cx_percentile of v[0..m) already sorted ascending. */
double cx_eval_percentile_sorted(const double *v, size_t m, double q);

/* 2.5 and 97.5 percentiles of the finite values of v[0..m) (v is reordered);
 * NaN when none. */
void cx_eval_ci95(double *v, size_t m, double *lo, double *hi);

#endif
