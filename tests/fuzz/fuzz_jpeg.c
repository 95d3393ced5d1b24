/* fuzz_jpeg: JPEG decoding (cx_image_load_mem, as stored and as luma) and
 * decoding row by row into a resize (cx_image_load_resized). */
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
    cx_image im;
    cx_err err;
    if (cx_image_load_mem(data, size, "fuzz.jpg", 0, &im, &err) == CX_OK) {
        cx_image small;
        if (cx_image_resize(&im, 5, 8, &small, &err) == CX_OK)
            cx_image_free(&small);
        cx_image_free(&im);
        if (cx_image_load_mem(data, size, "fuzz.jpg", 1, &im, &err) == CX_OK)
            cx_image_free(&im);
    }
    const char *p = fuzz_file(data, size, "in.jpg");
    if (cx_image_load_resized(p, 3, 6, 9, &im, &err) == CX_OK)
        cx_image_free(&im);
    return 0;
}
