/* fuzz_png: PNG decoding (cx_image_load_mem, 3 and 1 channels) and decoding
 * row by row into a resize (cx_image_load_resized). Every chunk's CRC is
 * recomputed first, so that mutations reach libpng's decoding and ours
 * instead of stopping at a CRC mismatch. */
#include "fuzz_common.h"

#include <zlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

/* Rewrites the CRC of every complete chunk after the signature. */
static void fix_crcs(uint8_t *b, size_t n)
{
    size_t pos = 8;
    while (pos + 12 <= n) {
        uint32_t len = fuzz_be32(b + pos);
        if (len > n - pos - 12)
            break;
        uint32_t crc = (uint32_t)crc32(0, b + pos + 4, (uInt)len + 4);
        fuzz_put_be32(b + pos + 8 + len, crc);
        pos += 12 + (size_t)len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *b = malloc(size ? size : 1);
    if (!b)
        return 0;
    memcpy(b, data, size);
    fix_crcs(b, size);
    cx_image im;
    cx_err err;
    if (cx_image_load_mem(b, size, "fuzz.png", 0, &im, &err) == CX_OK) {
        cx_image small;
        if (cx_image_resize(&im, 7, 5, &small, &err) == CX_OK)
            cx_image_free(&small);
        cx_image_free(&im);
        if (cx_image_load_mem(b, size, "fuzz.png", 1, &im, &err) == CX_OK)
            cx_image_free(&im);
    }
    const char *p = fuzz_file(b, size, "in.png");
    if (cx_image_load_resized(p, 3, 9, 6, &im, &err) == CX_OK)
        cx_image_free(&im);
    free(b);
    return 0;
}
