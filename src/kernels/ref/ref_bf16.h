/* Reference bf16 ops (ref_bf16.c), also the portable fallback of the CPU
 * backend's packing on CPUs without AVX512-BF16. */
#ifndef CX_REF_BF16_H
#define CX_REF_BF16_H

#include <stddef.h>
#include <stdint.h>

void ref_pack_bf16(const float *x, int K, int64_t P, const float *scale, const float *shift,
                   uint16_t *out);
void ref_conv2d_bf16(const uint16_t *x, int Cin, int N, int H, int W, const uint16_t *w,
                     int Cout, int k, float *y, float *scratch, size_t scratch_n);
size_t ref_conv_bf16_scratch(int Cin, int N, int H, int W, int Cout, int k);
void ref_pack_bf16_grid(const float *x, int K, int N, int H, int W, const float *scale,
                        const float *shift, int k, uint16_t *out);
void ref_conv2d_grid_bf16(const uint16_t *xg, int Cin, int N, int H, int W, const uint16_t *w,
                          int Cout, int k, float *y, float *scratch, size_t scratch_n);
size_t ref_conv_grid_bf16_scratch(int Cin, int N, int H, int W, int Cout, int k);
const char *ref_bf16_kernel(void);

#endif
