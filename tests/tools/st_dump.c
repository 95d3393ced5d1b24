/* st_dump: prints a safetensors file as one JSON object (for the Python
 * oracle tests), or rewrites it with the C writer.
 *
 *   st_dump FILE                    names, dtypes, shapes, offsets, metadata
 *   st_dump --values FILE           ... plus every tensor's values
 *   st_dump --raw OUT FILE          ... plus all F32/F16/BF16/F64 tensors
 *                                   converted to fp32, concatenated in header
 *                                   order, written to OUT (little-endian)
 *   st_dump --copy OUT --dtype f32|f16|bf16 FILE
 *                                   rewrites FILE with cx_st_writer: float
 *                                   tensors stored as dtype, I64 as I64,
 *                                   metadata copied
 *
 * Errors go to stderr as "st_dump: <status>: <message>", exit status 1. */
#include "chexnet.h"
#include "io/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int die(const cx_err *e)
{
    fprintf(stderr, "st_dump: %s: %s\n", cx_status_name(e->code), e->msg);
    return 1;
}

static int is_float(cx_dtype d)
{
    return d == CX_DT_F32 || d == CX_DT_F16 || d == CX_DT_BF16 || d == CX_DT_F64;
}

static void print_float(float v)
{
    if (isnan(v))
        fputs("NaN", stdout);
    else if (isinf(v))
        fputs(v > 0 ? "Infinity" : "-Infinity", stdout);
    else
        printf("%.9g", v);
}

static int64_t load_int(const uint8_t *p, cx_dtype dt)
{
    switch (dt) {
    case CX_DT_I64: {
        uint64_t u = 0;
        for (int i = 7; i >= 0; i--)
            u = (u << 8) | p[i];
        return (int64_t)u;
    }
    case CX_DT_I32: {
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        return (int32_t)u;
    }
    case CX_DT_I16: return (int16_t)(uint16_t)(p[0] | p[1] << 8);
    case CX_DT_I8: return (int8_t)p[0];
    case CX_DT_U8:
    case CX_DT_BOOL: return p[0];
    default: return 0;
    }
}

static int usage(void)
{
    fprintf(stderr, "usage: st_dump [--values] [--raw OUT] [--copy OUT --dtype f32|f16|bf16] FILE\n");
    return 2;
}

int main(int argc, char **argv)
{
    int values = 0;
    const char *raw = NULL, *copy = NULL, *file = NULL;
    cx_dtype copy_dt = CX_DT_F32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--values"))
            values = 1;
        else if (!strcmp(argv[i], "--raw") && i + 1 < argc)
            raw = argv[++i];
        else if (!strcmp(argv[i], "--copy") && i + 1 < argc)
            copy = argv[++i];
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "f32"))
                copy_dt = CX_DT_F32;
            else if (!strcmp(d, "f16"))
                copy_dt = CX_DT_F16;
            else if (!strcmp(d, "bf16"))
                copy_dt = CX_DT_BF16;
            else
                return usage();
        } else if (argv[i][0] == '-' && argv[i][1])
            return usage();
        else if (!file)
            file = argv[i];
        else
            return usage();
    }
    if (!file)
        return usage();

    cx_err err = {0};
    cx_st_file *f;
    if (cx_st_open(file, &f, &err))
        return die(&err);

    if (copy) {
        cx_st_writer *w = cx_st_writer_new();
        float **bufs = calloc((size_t)f->n_tensors + 1, sizeof *bufs);
        int rc = 0;
        for (int i = 0; i < f->n_meta && !rc; i++)
            if (cx_st_writer_add_meta(w, f->meta[i].key, f->meta[i].value, &err))
                rc = die(&err);
        for (int i = 0; i < f->n_tensors && !rc; i++) {
            const cx_st_tensor *t = &f->tensors[i];
            int64_t n = cx_st_numel(t);
            if (is_float(t->dtype)) {
                bufs[i] = malloc((size_t)(n ? n : 1) * sizeof(float));
                if (cx_st_read_f32(f, t, bufs[i], n, &err) ||
                    cx_st_writer_add_f32(w, t->name, copy_dt, t->ndim, t->shape, bufs[i], &err))
                    rc = die(&err);
            } else if (t->dtype == CX_DT_I64) {
                int64_t *v = malloc((size_t)(n ? n : 1) * sizeof *v);
                for (int64_t j = 0; j < n; j++)
                    v[j] = load_int(f->data + t->begin + 8 * j, CX_DT_I64);
                bufs[i] = (float *)v;
                if (cx_st_writer_add_i64(w, t->name, t->ndim, t->shape, v, &err))
                    rc = die(&err);
            } else {
                fprintf(stderr, "st_dump: tensor '%s': cannot copy dtype %s\n", t->name,
                        cx_dtype_name(t->dtype));
                rc = 1;
            }
        }
        if (!rc && cx_st_writer_write(w, copy, &err))
            rc = die(&err);
        for (int i = 0; i < f->n_tensors; i++)
            free(bufs[i]);
        free(bufs);
        cx_st_writer_free(w);
        cx_st_close(f);
        return rc;
    }

    FILE *rawf = NULL;
    if (raw && !(rawf = fopen(raw, "wb"))) {
        perror(raw);
        cx_st_close(f);
        return 1;
    }
    printf("{\"file\":");
    cx_json_escape(stdout, file);
    printf(",\"data_size\":%llu,\"metadata\":{", (unsigned long long)f->data_size);
    for (int i = 0; i < f->n_meta; i++) {
        if (i)
            putchar(',');
        cx_json_escape(stdout, f->meta[i].key);
        putchar(':');
        cx_json_escape(stdout, f->meta[i].value);
    }
    printf("},\"tensors\":[");
    int rc = 0;
    for (int i = 0; i < f->n_tensors && !rc; i++) {
        const cx_st_tensor *t = &f->tensors[i];
        int64_t n = cx_st_numel(t);
        printf("%s{\"name\":", i ? "," : "");
        cx_json_escape(stdout, t->name);
        printf(",\"dtype\":\"%s\",\"shape\":[", cx_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            printf(d ? ",%lld" : "%lld", (long long)t->shape[d]);
        printf("],\"numel\":%lld,\"data_offsets\":[%llu,%llu]", (long long)n,
               (unsigned long long)t->begin, (unsigned long long)t->end);
        float *buf = NULL;
        if (is_float(t->dtype) && (values || rawf)) {
            buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
            if (!buf || cx_st_read_f32(f, t, buf, n, &err)) {
                if (!buf)
                    cx_seterr(&err, CX_ENOMEM, "out of memory");
                rc = die(&err);
                free(buf);
                break;
            }
            if (rawf && fwrite(buf, sizeof *buf, (size_t)n, rawf) != (size_t)n) {
                perror(raw);
                rc = 1;
            }
        }
        if (values) {
            printf(",\"values\":[");
            for (int64_t j = 0; j < n; j++) {
                if (j)
                    putchar(',');
                if (buf)
                    print_float(buf[j]);
                else
                    printf("%lld", (long long)load_int(f->data + t->begin +
                                                           (uint64_t)j * cx_dtype_size(t->dtype),
                                                       t->dtype));
            }
            putchar(']');
        }
        free(buf);
        putchar('}');
    }
    printf("]}\n");
    if (rawf && fclose(rawf) != 0) {
        perror(raw);
        rc = 1;
    }
    cx_st_close(f);
    return rc;
}
