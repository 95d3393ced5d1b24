/* model_input.c - a model's input: the preprocessing of preprocess.c with
 * the model's input size, channels and normalisation (cx_model_input_spec). */
#include "chexnet.h"

#include <string.h>

size_t cx_image_input_floats(const cx_model *m, int ten_crop)
{
    if (!m)
        return 0;
    cx_input_spec in;
    cx_model_input_spec(m, &in);
    return cx_input_floats(&in, ten_crop);
}

cx_status cx_image_preprocess(const cx_model *m, const cx_image *im, int ten_crop,
                              float *dst, cx_err *err)
{
    if (!m)
        return cx_seterr(err, CX_EARG, "cx_image_preprocess: invalid arguments");
    cx_input_spec in;
    cx_model_input_spec(m, &in);
    return cx_image_to_input(&in, im, ten_crop, dst, err);
}

cx_status cx_image_load_input(const cx_model *m, const char *path, int ten_crop,
                              float *dst, cx_image *keep, cx_err *err)
{
    if (keep)
        memset(keep, 0, sizeof *keep);
    if (!m)
        return cx_seterr(err, CX_EARG, "cx_image_load_input: invalid arguments");
    cx_input_spec in;
    cx_model_input_spec(m, &in);
    return cx_image_load_to_input(&in, path, ten_crop, dst, keep, err);
}

cx_status cx_image_load_input_info(const cx_model *m, const char *path, int ten_crop,
                                   float *dst, cx_image *keep, cx_image_info *info,
                                   cx_err *err)
{
    if (keep)
        memset(keep, 0, sizeof *keep);
    if (!m)
        return cx_seterr(err, CX_EARG, "cx_image_load_input: invalid arguments");
    cx_input_spec in;
    cx_model_input_spec(m, &in);
    return cx_image_load_to_input_info(&in, path, ten_crop, dst, keep, info, err);
}
