/* fuzz_model: cx_model_load - safetensors, torchvision/legacy/DataParallel
 * names, the DenseNet configuration inferred from the shapes, dtypes,
 * metadata (classes as JSON, input size, mean/std). */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = fuzz_file(data, size, "model.safetensors");
    cx_model *m = NULL;
    cx_err err;
    if (cx_model_load(p, &m, &err) != CX_OK)
        return 0;
    int K = cx_model_num_classes(m);
    for (int k = 0; k < K; k++)
        if (!cx_model_class_name(m, k))
            abort();
    float mean[3], std[3];
    cx_model_normalization(m, mean, std);
    for (int c = 0; c < 3; c++)
        if (!(std[c] > 0) || mean[c] != mean[c])
            abort(); /* validated at load */
    for (int i = 0; i < cx_model_num_meta(m); i++)
        if (!cx_model_meta(m, cx_model_meta_at(m, i)->key))
            abort();
    (void)cx_image_input_floats(m, 1);
    (void)cx_model_num_params(m);
    cx_model_free(m);
    return 0;
}
