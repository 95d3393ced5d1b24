/* safetensors.h - internal helpers next to safetensors.c (the public API is
 * the "safetensors" section of include/chexnet.h). */
#ifndef CX_IO_SAFETENSORS_H
#define CX_IO_SAFETENSORS_H

#include "chexnet.h"

#include <stdint.h>

/* IEEE binary16 and bfloat16 <-> binary32. The narrowing conversions round to
 * nearest, ties to even (as PyTorch's .half() / .bfloat16()), overflow to
 * infinity, keep the sign of zero and turn NaN into a quiet NaN. */
float cx_f16_to_f32(uint16_t h);
uint16_t cx_f32_to_f16(float f);
float cx_bf16_to_f32(uint16_t b);
uint16_t cx_f32_to_bf16(float f);

#endif
