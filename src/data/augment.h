/* augment.h - the part of training augmentation the loader shares
 * (internal; the public side is cx_augment in chexnet.h). */
#ifndef CX_DATA_AUGMENT_H
#define CX_DATA_AUGMENT_H

#include "chexnet.h"

/* Steps 3-6 of cx_augment (flip, rotation, brightness, contrast, gamma,
 * Normalize) on an image already resized to S x S, into dst [C][S][S]. */
cx_status cx_aug_finish(const cx_image *sized, const cx_augment_params *p, int C,
                        const float mean[3], const float std[3], float *dst, cx_err *err);

#endif
