/* fuzz_readers: the reader study's files (cx_readers_run: id column, class
 * column by name, 0/1 decisions or scores, coverage of the first reader's
 * ids). The input holds up to three CSV files separated by a line "====":
 * two readers and a model. */
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
    const char *sep = "\n====\n";
    const uint8_t *part[3] = {data, NULL, NULL};
    size_t len[3] = {size, 0, 0};
    int np = 1;
    for (size_t i = 0; np < 3 && i + 6 <= size; i++)
        if (!memcmp(data + i, sep, 6)) {
            len[np - 1] = (size_t)(data + i - part[np - 1]);
            part[np] = data + i + 6;
            len[np] = size - (i + 6);
            np++;
            i += 5;
        }
    if (np < 3)
        return 0;
    static const char *names[3] = {"r1.csv", "r2.csv", "m.csv"};
    cx_rater readers[2], model[1];
    for (int k = 0; k < 3; k++) {
        const char *p = fuzz_file(part[k], len[k], names[k]);
        cx_rater r = {k == 2 ? "model" : (k ? "r2" : "r1"), p};
        if (k < 2)
            readers[k] = r;
        else
            model[0] = r;
    }
    /* the p pointers stay valid: fuzz_file keeps the last 8 paths */
    cx_readers_opts o;
    memset(&o, 0, sizeof o);
    o.class_name = "Pleural Effusion";
    o.n_readers = 2;
    o.readers = readers;
    o.n_models = 1;
    o.models = model;
    o.n_bootstrap = 3;
    o.seed = 1;
    cx_readers_result *r = NULL;
    cx_err err;
    if (cx_readers_run(&o, &r, &err) == CX_OK)
        cx_readers_free(r);
    return 0;
}
