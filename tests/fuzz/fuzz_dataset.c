/* fuzz_dataset: cx_dataset_load from a label source - ChestX-ray14
 * metadata, split lists, manifests (path, 0/1 classes, patient column) -
 * then a random patient-level split and a split from the same file used as
 * a list (cx_split_from_lists). */
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
    const char *p = fuzz_file(data, size, "manifest.csv");
    cx_dataset_opts o;
    cx_dataset_opts_default(&o);
    o.labels = p;
    cx_dataset *ds = NULL;
    cx_err err;
    if (cx_dataset_load(&o, &ds, &err) != CX_OK)
        return 0;
    int n = cx_dataset_size(ds);
    for (int i = 0; i < n && i < 256; i++) {
        if (cx_dataset_find(ds, cx_dataset_name(ds, i)) < -2)
            abort();
        (void)cx_dataset_patient_id(ds, cx_dataset_patient(ds, i));
    }
    const double f[3] = {0.6, 0.2, 0.2};
    cx_split sp;
    if (cx_split_random(ds, f, 1, &sp, &err) == CX_OK)
        cx_split_free(&sp);
    if (cx_split_from_lists(ds, p, NULL, NULL, 0.25, 2, &sp, &err) == CX_OK)
        cx_split_free(&sp);
    cx_dataset_free(ds);
    return 0;
}
