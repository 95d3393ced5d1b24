/* fuzz_labels: cx_labels_load - ChestX-ray14 metadata, split lists and label
 * CSVs (format detection, class columns, missing/uncertain labels,
 * duplicates), plain or gzip; every class, then two named classes. */
#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_setup();
    return 0;
}

static void use(cx_labels *l)
{
    int n = cx_labels_num_images(l), K = cx_labels_num_classes(l);
    for (int i = 0; i < n && i < 256; i++) {
        if (cx_labels_find(l, cx_labels_image(l, i)) < -2)
            abort();
        for (int k = 0; k < K; k++) {
            int v = cx_labels_get(l, i, k);
            if (v != 0 && v != 1 && v != CX_LABEL_MISSING)
                abort();
        }
    }
    for (int k = 0; k < K; k++)
        (void)cx_labels_class(l, k);
    for (int i = 0; i < cx_labels_num_warnings(l); i++)
        (void)cx_labels_warning(l, i);
    (void)cx_labels_format(l);
    cx_labels_free(l);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = fuzz_file(data, size, "labels.csv");
    cx_labels *l = NULL;
    cx_err err;
    if (cx_labels_load(p, 0, NULL, &l, &err) == CX_OK)
        use(l);
    static const char *const two[2] = {"Pneumonia", "Pleural Effusion"};
    if (cx_labels_load(p, 2, two, &l, &err) == CX_OK)
        use(l);
    return 0;
}
