/* fuzz_pack: cx_pack_open (header, class names, trailer, section sizes,
 * index records, labels, string table) and every image read back. The file
 * size in the trailer and the header and index CRCs are recomputed first,
 * so that mutations reach the validation behind them. */
#include "fuzz_common.h"

#include <zlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

#define HDR 64
#define TRL 64

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void fix(uint8_t *b, size_t n)
{
    if (n < HDR + TRL)
        return;
    uint8_t *t = b + n - TRL;
    put64(t + 56, n);
    uint64_t data_off = get64(b + 40);
    if (data_off <= n - TRL)
        put32le(t + 52, (uint32_t)crc32(0, b, (uInt)data_off));
    uint64_t idx_off = get64(t + 24), idx_bytes = get64(t + 32);
    if (idx_off <= n - TRL && idx_bytes <= n - TRL - idx_off)
        put32le(t + 48, (uint32_t)crc32(0, b + idx_off, (uInt)idx_bytes));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *b = malloc(size ? size : 1);
    if (!b)
        return 0;
    memcpy(b, data, size);
    fix(b, size);
    const char *p = fuzz_file(b, size, "in.cxpack");
    free(b);
    cx_dataset *ds = NULL;
    cx_err err;
    if (cx_pack_open(p, &ds, &err) != CX_OK)
        return 0;
    int n = cx_dataset_size(ds), K = cx_dataset_num_classes(ds);
    const uint8_t *y = cx_dataset_labels(ds);
    for (int i = 0; i < n && i < 64; i++) {
        (void)cx_dataset_name(ds, i);
        (void)cx_dataset_patient_id(ds, cx_dataset_patient(ds, i));
        for (int k = 0; k < K; k++)
            if (y[(size_t)i * K + k] > 1)
                abort(); /* validated at open */
        for (int ch = 0; ch <= 3; ch += 1 + (ch == 1)) {
            cx_image im;
            if (cx_dataset_image(ds, i, ch, &im, &err) == CX_OK)
                cx_image_free(&im);
        }
    }
    cx_dataset_free(ds);
    return 0;
}
