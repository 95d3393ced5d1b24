/* fuzz_safetensors: cx_st_open (header length, JSON header, dtypes, shapes,
 * offsets, metadata) and cx_st_read_f32 of every tensor. */
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
    const char *p = fuzz_file(data, size, "in.safetensors");
    cx_st_file *f = NULL;
    cx_err err;
    if (cx_st_open(p, &f, &err) != CX_OK)
        return 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const cx_st_tensor *t = &f->tensors[i];
        if (cx_st_find(f, t->name) == NULL)
            abort();
        int64_t n = cx_st_numel(t);
        if (n < 0 || n > (1 << 20))
            continue;
        float *dst = malloc(sizeof(float) * (size_t)(n ? n : 1));
        if (dst) {
            cx_st_read_f32(f, t, dst, n, &err);
            free(dst);
        }
    }
    for (int i = 0; i < f->n_meta; i++)
        if (cx_st_meta(f, f->meta[i].key) == NULL)
            abort();
    cx_st_close(f);
    return 0;
}
