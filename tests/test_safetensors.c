/* Tests of src/io: safetensors reading/writing and validation, half/bfloat16
 * conversions, the JSON parser and escaper, atomic files and file reading. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chexnet.h"
#include "io/fileutil.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char g_dir[512];

static const char *tmp_path(const char *name)
{
    static char buf[8][800];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", g_dir, name);
    return p;
}

static int setup_dir(void **state)
{
    (void)state;
    const char *base = getenv("CX_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0777);
    snprintf(g_dir, sizeof g_dir, "%s/test_safetensors.%ld", base, (long)getpid());
    if (mkdir(g_dir, 0777) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                unlink(tmp_path(e->d_name));
        closedir(d);
    }
    rmdir(g_dir);
    return 0;
}

/* Number of entries in g_dir whose name contains "tmp-" (leftover temps). */
static int count_temps(void)
{
    int n = 0;
    DIR *d = opendir(g_dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp-"))
            n++;
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n)
        assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* Writes a safetensors file: u64 header length (hlen, or the real length if
 * hlen == UINT64_MAX), the header text, then n data bytes (value i & 0xff). */
static const char *write_st(const char *name, uint64_t hlen, const char *header, size_t ndata)
{
    const char *path = tmp_path(name);
    size_t hl = strlen(header);
    uint64_t L = hlen == UINT64_MAX ? hl : hlen;
    unsigned char *buf = malloc(8 + hl + ndata + 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(L >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < ndata; i++)
        buf[8 + hl + i] = (unsigned char)i;
    write_bytes(path, buf, 8 + hl + ndata);
    free(buf);
    return path;
}

/* Opening must fail with code, and the message must name the file and
 * contain each given fragment (NULL-terminated list). */
static void expect_bad(const char *path, cx_status code, ...)
{
    cx_err err = {0};
    cx_st_file *f = (cx_st_file *)(uintptr_t)1;
    cx_status st = cx_st_open(path, &f, &err);
    if (st != code)
        fprintf(stderr, "%s: got %s: %s\n", path, cx_status_name(st), err.msg);
    assert_int_equal(st, code);
    assert_null(f);
    assert_non_null(strstr(err.msg, path));
    va_list ap;
    va_start(ap, code);
    const char *frag;
    while ((frag = va_arg(ap, const char *))) {
        if (!strstr(err.msg, frag))
            fprintf(stderr, "message lacks '%s': %s\n", frag, err.msg);
        assert_non_null(strstr(err.msg, frag));
    }
    va_end(ap);
}

/* -------------------------------------------------------- conversions */

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float fbits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_f16_decode(void **state)
{
    (void)state;
    assert_true(cx_f16_to_f32(0x3c00) == 1.0f);
    assert_true(cx_f16_to_f32(0xc000) == -2.0f);
    assert_true(cx_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(cx_f16_to_f32(0x0400) == ldexpf(1, -14));       /* min normal */
    assert_true(cx_f16_to_f32(0x0001) == ldexpf(1, -24));       /* min subnormal */
    assert_true(cx_f16_to_f32(0x03ff) == ldexpf(1023, -24));    /* max subnormal */
    assert_true(cx_f16_to_f32(0x8001) == -ldexpf(1, -24));
    assert_int_equal(bits(cx_f16_to_f32(0x8000)), 0x80000000u); /* -0 */
    assert_int_equal(bits(cx_f16_to_f32(0x0000)), 0);
    assert_true(isinf(cx_f16_to_f32(0x7c00)) && cx_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(cx_f16_to_f32(0xfc00)) && cx_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(cx_f16_to_f32(0x7e00)));
    assert_true(isnan(cx_f16_to_f32(0x7c01))); /* signalling NaN stays NaN */
    assert_true(cx_f16_to_f32(0x3555) == 0.333251953125f);
    /* Every finite half survives a round trip through float. */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = cx_f16_to_f32((uint16_t)h);
        if (isnan(f))
            assert_true(isnan(cx_f16_to_f32(cx_f32_to_f16(f))));
        else
            assert_int_equal(cx_f32_to_f16(f), h);
    }
}

static void test_f16_encode_rounding(void **state)
{
    (void)state;
    assert_int_equal(cx_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(cx_f32_to_f16(-0.0f), 0x8000);
    /* ties to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 */
    assert_int_equal(cx_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);
    assert_int_equal(cx_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
    assert_int_equal(cx_f32_to_f16(nextafterf(1.0f + ldexpf(1, -11), 2)), 0x3c01);
    /* overflow: 65504 is the largest; 65520 is the tie to infinity */
    assert_int_equal(cx_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(cx_f32_to_f16(65519.0f), 0x7bff);
    assert_int_equal(cx_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(cx_f32_to_f16(-1e10f), 0xfc00);
    assert_int_equal(cx_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(cx_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(cx_f32_to_f16(FLT_MAX), 0x7c00);
    /* subnormals */
    assert_int_equal(cx_f32_to_f16(ldexpf(1, -24)), 0x0001);
    assert_int_equal(cx_f32_to_f16(ldexpf(1, -25)), 0x0000);            /* tie -> even 0 */
    assert_int_equal(cx_f32_to_f16(nextafterf(ldexpf(1, -25), 1)), 0x0001);
    assert_int_equal(cx_f32_to_f16(ldexpf(3, -25)), 0x0002);            /* 1.5 ulp -> 2 */
    assert_int_equal(cx_f32_to_f16(ldexpf(5, -25)), 0x0002);            /* 2.5 ulp -> 2 */
    assert_int_equal(cx_f32_to_f16(-ldexpf(1, -26)), 0x8000);
    assert_int_equal(cx_f32_to_f16(ldexpf(1, -14)), 0x0400);
    assert_int_equal(cx_f32_to_f16(ldexpf(2047, -25)), 0x0400);         /* rounds up to normal */
    assert_int_equal(cx_f32_to_f16(FLT_MIN), 0x0000);
    assert_int_equal(cx_f32_to_f16(fbits(1)), 0x0000);                  /* float subnormal */
    /* NaN stays a (quiet) NaN with its sign */
    uint16_t h = cx_f32_to_f16(NAN);
    assert_int_equal(h & 0x7c00, 0x7c00);
    assert_true(h & 0x3ff);
    assert_int_equal(cx_f32_to_f16(fbits(0xff800001u)) & 0xfe00, 0xfe00);
}

static void test_bf16(void **state)
{
    (void)state;
    assert_true(cx_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(cx_bf16_to_f32(0xc040) == -3.0f);
    assert_true(isinf(cx_bf16_to_f32(0x7f80)));
    assert_true(isnan(cx_bf16_to_f32(0x7fc0)));
    assert_true(cx_bf16_to_f32(0x0001) == fbits(0x00010000u)); /* subnormal */
    assert_int_equal(cx_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(cx_f32_to_bf16(-0.0f), 0x8000);
    /* ties to even */
    assert_int_equal(cx_f32_to_bf16(fbits(0x3f808000u)), 0x3f80);
    assert_int_equal(cx_f32_to_bf16(fbits(0x3f818000u)), 0x3f82);
    assert_int_equal(cx_f32_to_bf16(fbits(0x3f808001u)), 0x3f81);
    assert_int_equal(cx_f32_to_bf16(fbits(0x3f807fffu)), 0x3f80);
    /* overflow to infinity, FLT_MAX rounds up */
    assert_int_equal(cx_f32_to_bf16(FLT_MAX), 0x7f80);
    assert_int_equal(cx_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(cx_f32_to_bf16(fbits(0x7f7f7fffu)), 0x7f7f);
    /* NaN never becomes infinity, even with only low payload bits */
    uint16_t b = cx_f32_to_bf16(fbits(0x7f800001u));
    assert_true(isnan(cx_bf16_to_f32(b)));
    b = cx_f32_to_bf16(fbits(0xffffffffu));
    assert_true(isnan(cx_bf16_to_f32(b)));
    for (uint32_t v = 0; v < 0x10000; v++) {
        float f = cx_bf16_to_f32((uint16_t)v);
        if (!isnan(f))
            assert_int_equal(cx_f32_to_bf16(f), v);
    }
}

static void test_dtype_names(void **state)
{
    (void)state;
    for (int i = 0; i < CX_DT_COUNT; i++) {
        cx_dtype d;
        assert_int_equal(cx_dtype_parse(cx_dtype_name((cx_dtype)i), &d), 0);
        assert_int_equal(d, i);
        assert_true(cx_dtype_size((cx_dtype)i) >= 1);
    }
    assert_int_equal(cx_dtype_size(CX_DT_BF16), 2);
    assert_int_equal(cx_dtype_size(CX_DT_F64), 8);
    assert_int_not_equal(cx_dtype_parse("f32", NULL), 0); /* case matters */
    assert_int_not_equal(cx_dtype_parse("F128", NULL), 0);
}

/* --------------------------------------------------------- round trip */

static void test_round_trip(void **state)
{
    (void)state;
    const char *path = tmp_path("rt.safetensors");
    cx_err err = {0};
    float a[6] = {1.5f, -2.25f, 3e-8f, 65519.f, 1e6f, -0.0f};
    float s[1] = {0.1f};
    int64_t iv[3] = {0, -1, INT64_MAX};
    int64_t sh_a[2] = {2, 3}, sh_z[2] = {0, 4}, sh_i[1] = {3};
    cx_st_writer *w = cx_st_writer_new();
    assert_non_null(w);
    assert_int_equal(cx_st_writer_add_f32(w, "a.f32", CX_DT_F32, 2, sh_a, a, &err), 0);
    assert_int_equal(cx_st_writer_add_f32(w, "a.f16", CX_DT_F16, 2, sh_a, a, &err), 0);
    assert_int_equal(cx_st_writer_add_f32(w, "a.bf16", CX_DT_BF16, 2, sh_a, a, &err), 0);
    assert_int_equal(cx_st_writer_add_f32(w, "scalar", CX_DT_F32, 0, NULL, s, &err), 0);
    assert_int_equal(cx_st_writer_add_f32(w, "empty", CX_DT_F16, 2, sh_z, NULL, &err), 0);
    assert_int_equal(cx_st_writer_add_i64(w, "ints", 1, sh_i, iv, &err), 0);
    assert_int_equal(cx_st_writer_add_i64(w, "bn.num_batches_tracked", 0, NULL, iv + 1, &err), 0);
    assert_int_equal(cx_st_writer_add_f32(w, "caf\xc3\xa9 \"q\"", CX_DT_F32, 0, NULL, s, &err), 0);
    assert_int_equal(cx_st_writer_add_meta(w, "arch", "densenet121", &err), 0);
    assert_int_equal(cx_st_writer_add_meta(w, "classes", "[\"A\",\"B\\\\\"]\n\ttab", &err), 0);
    assert_int_equal(cx_st_writer_add_meta(w, "arch", "densenet169", &err), 0); /* replaces */
    assert_int_equal(cx_st_writer_add_meta(w, "unicode", "\xe2\x9c\x93 \xf0\x9f\x98\x80", &err), 0);
    assert_int_equal(cx_st_writer_write(w, path, &err), 0);
    cx_st_writer_free(w);
    assert_int_equal(count_temps(), 0);

    /* Header: length a multiple of 8, padded with spaces. */
    FILE *fp = fopen(path, "rb");
    unsigned char lb[8];
    assert_int_equal(fread(lb, 1, 8, fp), 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | lb[i];
    assert_int_equal(hl % 8, 0);
    char *hdr = malloc(hl + 1);
    assert_int_equal(fread(hdr, 1, hl, fp), hl);
    fclose(fp);
    hdr[hl] = 0;
    assert_int_equal(hdr[0], '{');
    size_t end = strlen(hdr);
    while (end && hdr[end - 1] == ' ')
        end--;
    assert_int_equal(hdr[end - 1], '}');
    free(hdr);

    cx_st_file *f;
    assert_int_equal(cx_st_open(path, &f, &err), 0);
    assert_int_equal(f->n_tensors, 8);
    assert_int_equal(f->n_meta, 3);
    assert_string_equal(cx_st_meta(f, "arch"), "densenet169");
    assert_string_equal(cx_st_meta(f, "classes"), "[\"A\",\"B\\\\\"]\n\ttab");
    assert_string_equal(cx_st_meta(f, "unicode"), "\xe2\x9c\x93 \xf0\x9f\x98\x80");
    assert_null(cx_st_meta(f, "missing"));
    assert_null(cx_st_find(f, "missing"));
    /* Tensors keep the order they were added in. */
    assert_string_equal(f->tensors[0].name, "a.f32");
    assert_string_equal(f->tensors[7].name, "caf\xc3\xa9 \"q\"");

    const cx_st_tensor *t = cx_st_find(f, "a.f32");
    assert_non_null(t);
    assert_int_equal(t->dtype, CX_DT_F32);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(cx_st_numel(t), 6);
    float out[6];
    assert_int_equal(cx_st_read_f32(f, t, out, 6, &err), 0);
    assert_memory_equal(out, a, sizeof a);

    t = cx_st_find(f, "a.f16");
    assert_int_equal(t->dtype, CX_DT_F16);
    assert_int_equal(t->end - t->begin, 12);
    assert_int_equal(cx_st_read_f32(f, t, out, 6, &err), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(bits(out[i]), bits(cx_f16_to_f32(cx_f32_to_f16(a[i]))));
    assert_true(out[0] == 1.5f && out[3] == 65504.f && isinf(out[4]));
    assert_int_equal(bits(out[5]), 0x80000000u);

    t = cx_st_find(f, "a.bf16");
    assert_int_equal(t->dtype, CX_DT_BF16);
    assert_int_equal(cx_st_read_f32(f, t, out, 6, &err), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(bits(out[i]), bits(cx_bf16_to_f32(cx_f32_to_bf16(a[i]))));

    t = cx_st_find(f, "scalar");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(cx_st_numel(t), 1);
    assert_int_equal(cx_st_read_f32(f, t, out, 1, &err), 0);
    assert_true(out[0] == 0.1f);

    t = cx_st_find(f, "empty");
    assert_int_equal(cx_st_numel(t), 0);
    assert_int_equal(t->begin, t->end);
    assert_int_equal(cx_st_read_f32(f, t, out, 0, &err), 0);

    t = cx_st_find(f, "ints");
    assert_int_equal(t->dtype, CX_DT_I64);
    int64_t got[3];
    memcpy(got, f->data + t->begin, sizeof got); /* little-endian host */
    assert_memory_equal(got, iv, sizeof iv);
    /* Integers are not floats. */
    assert_int_equal(cx_st_read_f32(f, t, out, 3, &err), CX_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "ints"));
    /* Wrong element count. */
    t = cx_st_find(f, "a.f32");
    assert_int_equal(cx_st_read_f32(f, t, out, 5, &err), CX_ESHAPE);
    assert_non_null(strstr(err.msg, "a.f32"));
    assert_non_null(strstr(err.msg, path));

    t = cx_st_find(f, "bn.num_batches_tracked");
    assert_int_equal(t->ndim, 0);
    assert_int_equal(t->end - t->begin, 8);
    assert_non_null(cx_st_find(f, "caf\xc3\xa9 \"q\""));
    cx_st_close(f);

    /* Overwriting an existing file is atomic and leaves no temporaries. */
    w = cx_st_writer_new();
    assert_int_equal(cx_st_writer_add_f32(w, "x", CX_DT_F32, 0, NULL, s, &err), 0);
    assert_int_equal(cx_st_writer_write(w, path, &err), 0);
    cx_st_writer_free(w);
    assert_int_equal(cx_st_open(path, &f, &err), 0);
    assert_int_equal(f->n_tensors, 1);
    assert_int_equal(f->n_meta, 0);
    cx_st_close(f);
    assert_int_equal(count_temps(), 0);

    /* An empty file (no tensors) is valid. */
    w = cx_st_writer_new();
    assert_int_equal(cx_st_writer_write(w, path, &err), 0);
    cx_st_writer_free(w);
    assert_int_equal(cx_st_open(path, &f, &err), 0);
    assert_int_equal(f->n_tensors, 0);
    assert_int_equal(f->data_size, 0);
    cx_st_close(f);
}

/* Hand-made files with every float dtype, unaligned data, F64 range. */
static void test_read_dtypes(void **state)
{
    (void)state;
    cx_err err = {0};
    /* F64: 1.5, -1e300 (-> -inf), 3.4028235e38 (rounds down to FLT_MAX),
     * FLT_MAX + half an ulp (the tie: rounds to even, i.e. infinity) */
    double d[4] = {1.5, -1e300, 3.4028235e38, 3.4028235677973366e38};
    uint16_t h[2] = {0x0001, 0xfc00};
    uint16_t b[2] = {0x3f80, 0x7fc0};
    char hdr[512];
    snprintf(hdr, sizeof hdr,
             "{\"d\":{\"dtype\":\"F64\",\"shape\":[4],\"data_offsets\":[0,32]},"
             "\"h\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[32,36]},"
             "\"b\":{\"data_offsets\":[36,40],\"shape\":[1,2],\"dtype\":\"BF16\"},"
             "\"u\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[40,43]},"
             "\"__metadata__\":{}}");
    size_t hl = strlen(hdr); /* odd length on purpose: unaligned data */
    unsigned char buf[1024];
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    unsigned char *p = buf + 8 + hl;
    memcpy(p, d, 32);
    memcpy(p + 32, h, 4);
    memcpy(p + 36, b, 4);
    p[40] = 1, p[41] = 2, p[42] = 255;
    const char *path = tmp_path("dtypes.safetensors");
    write_bytes(path, buf, 8 + hl + 43);
    cx_st_file *f;
    assert_int_equal(cx_st_open(path, &f, &err), 0);
    assert_int_equal(f->n_meta, 0);
    float out[4];
    assert_int_equal(cx_st_read_f32(f, cx_st_find(f, "d"), out, 4, &err), 0);
    assert_true(out[0] == 1.5f);
    assert_true(isinf(out[1]) && out[1] < 0);
    assert_true(out[2] == FLT_MAX);
    assert_true(isinf(out[3]) && out[3] > 0);
    assert_int_equal(cx_st_read_f32(f, cx_st_find(f, "h"), out, 2, &err), 0);
    assert_true(out[0] == ldexpf(1, -24));
    assert_true(isinf(out[1]) && out[1] < 0);
    assert_int_equal(cx_st_read_f32(f, cx_st_find(f, "b"), out, 2, &err), 0);
    assert_true(out[0] == 1.0f);
    assert_true(isnan(out[1]));
    const cx_st_tensor *t = cx_st_find(f, "u");
    assert_int_equal(t->dtype, CX_DT_U8);
    assert_int_equal(f->data[t->begin + 2], 255);
    cx_st_close(f);
}

/* ---------------------------------------------------------- bad files */

#define T1 "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"

static void test_bad_files(void **state)
{
    (void)state;
    const char *p;
    p = tmp_path("empty.safetensors");
    write_bytes(p, "", 0);
    expect_bad(p, CX_EFORMAT, "0 bytes", NULL);

    p = tmp_path("short.safetensors");
    write_bytes(p, "\x02\0\0\0", 4);
    expect_bad(p, CX_EFORMAT, "too short", NULL);

    expect_bad(tmp_path("does-not-exist.safetensors"), CX_EMISSING, NULL);
    expect_bad(g_dir, CX_EIO, "not a regular file", NULL);

    /* header length beyond the file / beyond the 100 MB limit */
    p = write_st("hlen_beyond.safetensors", 1000, "{}", 0);
    expect_bad(p, CX_EFORMAT, "header length 1000", NULL);
    p = write_st("hlen_limit.safetensors", 100000001ull, "{}", 0);
    expect_bad(p, CX_ELIMIT, "limit", NULL);
    p = write_st("hlen_huge.safetensors", UINT64_MAX - 3, "{}", 0);
    expect_bad(p, CX_ELIMIT, NULL);

    /* truncated data: tensor extends beyond the data section */
    p = write_st("truncated.safetensors", UINT64_MAX, "{" T1 "}", 5);
    expect_bad(p, CX_EFORMAT, "'t'", "truncated", NULL);

    /* malformed JSON, with the offset */
    p = write_st("badjson.safetensors", UINT64_MAX, "{\"t\":{\"dtype\":\"F32\",}", 0);
    expect_bad(p, CX_EFORMAT, "JSON error at byte", NULL);
    p = write_st("badjson2.safetensors", UINT64_MAX, "{" T1 "} x", 8);
    expect_bad(p, CX_EFORMAT, "trailing", NULL);
    p = write_st("nulpad.safetensors", UINT64_MAX, "{" T1 "}\x01", 8);
    expect_bad(p, CX_EFORMAT, "JSON error", NULL);
    p = write_st("leading_ws.safetensors", UINT64_MAX, " {" T1 "}", 8);
    expect_bad(p, CX_EFORMAT, "start with '{'", NULL);
    p = write_st("badutf8.safetensors", UINT64_MAX, "{\"\xff\":1}", 0);
    expect_bad(p, CX_EFORMAT, "UTF-8", NULL);
    p = write_st("dupkey.safetensors", UINT64_MAX, "{" T1 "," T1 "}", 8);
    expect_bad(p, CX_EFORMAT, "duplicate key", NULL);

    /* non-object header / entries */
    p = write_st("array.safetensors", UINT64_MAX, "[1,2]", 0);
    expect_bad(p, CX_EFORMAT, "array, expected an object", NULL);
    p = write_st("entry_str.safetensors", UINT64_MAX, "{\"w\":\"F32\"}", 0);
    expect_bad(p, CX_EFORMAT, "'w'", "expected an object", NULL);

    /* dtype problems */
    p = write_st("dtype.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "unknown dtype 'F33'", NULL);
    p = write_st("dtype_u16.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    expect_bad(p, CX_EUNSUPPORTED, "'w'", "U16", NULL);
    p = write_st("dtype_num.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "dtype", NULL);

    /* shapes */
    p = write_st("shape_neg.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "shape[0]", NULL);
    p = write_st("shape_float.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,2.0],\"data_offsets\":[0,8]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "shape[1]", NULL);
    p = write_st("shape_str.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "shape", NULL);
    p = write_st("shape_ovf.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
                 "\"data_offsets\":[0,0]}}",
                 0);
    expect_bad(p, CX_EFORMAT, "'w'", "overflow", NULL);
    p = write_st("shape_ovf2.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],"
                 "\"data_offsets\":[0,0]}}",
                 0);
    expect_bad(p, CX_EFORMAT, "'w'", NULL);
    p = write_st("dims.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                 "\"data_offsets\":[0,4]}}",
                 4);
    expect_bad(p, CX_ELIMIT, "'w'", "dimensions", NULL);

    /* offsets */
    p = write_st("off_range.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "beyond the data section", NULL);
    p = write_st("off_rev.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "end", NULL);
    p = write_st("off_neg.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "data_offsets", NULL);
    p = write_st("off_three.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "data_offsets", NULL);
    p = write_st("overlap.safetensors", UINT64_MAX,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                 12);
    expect_bad(p, CX_EFORMAT, "'b'", "overlap", "'a'", NULL);
    p = write_st("same.safetensors", UINT64_MAX,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                 8);
    expect_bad(p, CX_EFORMAT, "overlap", NULL);
    p = write_st("hole.safetensors", UINT64_MAX,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
                 20);
    expect_bad(p, CX_EFORMAT, "'b'", "hole", NULL);
    p = write_st("hole_start.safetensors", UINT64_MAX,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12);
    expect_bad(p, CX_EFORMAT, "'a'", "hole", NULL);
    p = write_st("trailing.safetensors", UINT64_MAX, "{" T1 "}", 12);
    expect_bad(p, CX_EFORMAT, "trailing bytes", NULL);
    p = write_st("mismatch.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,8]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "needs 12", NULL);

    /* fields */
    p = write_st("nodtype.safetensors", UINT64_MAX,
                 "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "missing field 'dtype'", NULL);
    p = write_st("noshape.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "missing field 'shape'", NULL);
    p = write_st("nooffsets.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "missing field 'data_offsets'", NULL);
    p = write_st("extra.safetensors", UINT64_MAX,
                 "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8);
    expect_bad(p, CX_EFORMAT, "'w'", "unknown field 'x'", NULL);

    /* metadata */
    p = write_st("meta_num.safetensors", UINT64_MAX,
                 "{\"__metadata__\":{\"arch\":\"densenet121\",\"input_size\":224}," T1 "}", 8);
    expect_bad(p, CX_EFORMAT, "'input_size'", "expected a string", NULL);
    p = write_st("meta_arr.safetensors", UINT64_MAX, "{\"__metadata__\":[\"a\"]," T1 "}", 8);
    expect_bad(p, CX_EFORMAT, "__metadata__", NULL);
    p = write_st("meta_nul.safetensors", UINT64_MAX, "{\"__metadata__\":{\"a\":\"x\\u0000y\"}}", 0);
    expect_bad(p, CX_EUNSUPPORTED, "NUL", NULL);

    /* Padding with spaces (as the reference writes) is fine, and metadata
     * may be null. */
    cx_err err;
    cx_st_file *f;
    p = write_st("padded.safetensors", UINT64_MAX, "{\"__metadata__\":null," T1 "}   ", 8);
    assert_int_equal(cx_st_open(p, &f, &err), 0);
    assert_int_equal(f->n_tensors, 1);
    cx_st_close(f);
}

/* Every truncation of a valid file fails cleanly (never crashes). */
static void test_truncations(void **state)
{
    (void)state;
    cx_err err = {0};
    const char *src = tmp_path("full.safetensors");
    float a[5] = {1, 2, 3, 4, 5};
    int64_t sh[1] = {5};
    cx_st_writer *w = cx_st_writer_new();
    assert_int_equal(cx_st_writer_add_f32(w, "w", CX_DT_F16, 1, sh, a, &err), 0);
    assert_int_equal(cx_st_writer_add_f32(w, "v", CX_DT_F32, 1, sh, a, &err), 0);
    assert_int_equal(cx_st_writer_add_meta(w, "format", "pt", &err), 0);
    assert_int_equal(cx_st_writer_write(w, src, &err), 0);
    cx_st_writer_free(w);
    char *data;
    size_t n;
    assert_int_equal(cx_read_file(src, 1 << 20, &data, &n, &err), 0);
    const char *p = tmp_path("cut.safetensors");
    for (size_t k = 0; k < n; k++) {
        write_bytes(p, data, k);
        cx_st_file *f = NULL;
        cx_status st = cx_st_open(p, &f, &err);
        assert_int_not_equal(st, CX_OK);
        assert_null(f);
        assert_non_null(strstr(err.msg, p));
    }
    /* Flipping any single header byte never crashes. */
    for (size_t k = 0; k < n; k++) {
        data[k] ^= 0x55;
        write_bytes(p, data, n);
        cx_st_file *f = NULL;
        if (cx_st_open(p, &f, &err) == CX_OK)
            cx_st_close(f);
        data[k] ^= 0x55;
    }
    free(data);
}

static void test_writer_errors(void **state)
{
    (void)state;
    cx_err err = {0};
    float a[2] = {1, 2};
    int64_t sh[1] = {2}, neg[1] = {-1};
    cx_st_writer *w = cx_st_writer_new();
    assert_int_equal(cx_st_writer_add_f32(w, "x", CX_DT_F32, 1, sh, a, &err), 0);
    assert_int_equal(cx_st_writer_add_f32(w, "x", CX_DT_F32, 1, sh, a, &err), CX_EARG);
    assert_non_null(strstr(err.msg, "duplicate"));
    assert_int_equal(cx_st_writer_add_f32(w, "y", CX_DT_F64, 1, sh, a, &err), CX_EARG);
    assert_int_equal(cx_st_writer_add_f32(w, "y", CX_DT_I64, 1, sh, a, &err), CX_EARG);
    assert_int_equal(cx_st_writer_add_f32(w, "y", CX_DT_F32, 1, neg, a, &err), CX_EARG);
    assert_int_equal(cx_st_writer_add_f32(w, "y", CX_DT_F32, 9, sh, a, &err), CX_EARG);
    assert_int_equal(cx_st_writer_add_f32(w, "y", CX_DT_F32, 1, sh, NULL, &err), CX_EARG);
    assert_int_equal(cx_st_writer_add_f32(w, "__metadata__", CX_DT_F32, 1, sh, a, &err),
                     CX_EARG);
    assert_int_equal(cx_st_writer_add_f32(w, "bad\xff", CX_DT_F32, 1, sh, a, &err), CX_EARG);
    assert_int_equal(cx_st_writer_add_meta(w, "k", "bad\xc3", &err), CX_EARG);
    /* Writing into a missing folder fails and leaves nothing behind. */
    const char *p = tmp_path("no/such/dir/x.safetensors");
    assert_int_equal(cx_st_writer_write(w, p, &err), CX_EIO);
    assert_non_null(strstr(err.msg, p));
    /* Writing onto a folder fails. */
    assert_int_not_equal(cx_st_writer_write(w, g_dir, &err), CX_OK);
    cx_st_writer_free(w);
    assert_int_equal(count_temps(), 0);
}

/* --------------------------------------------------------------- files */

static void test_atomic_and_read(void **state)
{
    (void)state;
    cx_err err = {0};
    const char *p = tmp_path("atomic.txt");
    assert_int_equal(cx_write_file_atomic(p, "hello", 5, &err), 0);
    assert_int_equal(cx_write_file_atomic(p, "bye", 3, &err), 0);
    char *d;
    size_t n;
    assert_int_equal(cx_read_file(p, 100, &d, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(d, "bye");
    free(d);
    assert_int_equal(cx_read_file(p, 2, &d, &n, &err), CX_ELIMIT);
    assert_null(d);
    assert_int_equal(cx_read_file(tmp_path("nope"), 100, &d, &n, &err), CX_EMISSING);
    assert_non_null(strstr(err.msg, "nope"));
    assert_int_equal(cx_read_file(g_dir, 100, &d, &n, &err), CX_EIO);
    assert_int_equal(cx_write_file_atomic(tmp_path("empty"), "", 0, &err), 0);
    assert_int_equal(cx_read_file(tmp_path("empty"), 100, &d, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_string_equal(d, "");
    free(d);

    /* Streaming writer: abort leaves the old file and no temporary. */
    cx_atomic_file *af;
    assert_int_equal(cx_atomic_open(p, &af, &err), 0);
    assert_int_equal(cx_atomic_write(af, "partial", 7, &err), 0);
    fputs(" via stream", cx_atomic_stream(af));
    assert_int_equal(count_temps(), 1);
    cx_atomic_abort(af);
    assert_int_equal(count_temps(), 0);
    assert_int_equal(cx_read_file(p, 100, &d, &n, &err), 0);
    assert_string_equal(d, "bye");
    free(d);
    assert_int_equal(cx_atomic_open(p, &af, &err), 0);
    assert_int_equal(cx_atomic_write(af, "new", 3, &err), 0);
    fputs(" via stream", cx_atomic_stream(af));
    assert_int_equal(cx_atomic_commit(af, &err), 0);
    assert_int_equal(cx_read_file(p, 100, &d, &n, &err), 0);
    assert_string_equal(d, "new via stream");
    free(d);
    struct stat sb;
    assert_int_equal(stat(p, &sb), 0);
    assert_true(sb.st_mode & S_IRUSR);
    assert_int_equal(cx_atomic_open(tmp_path("no/dir/f"), &af, &err), CX_EIO);
    assert_int_equal(cx_atomic_open("", &af, &err), CX_EARG);

    /* gzip-transparent reading. */
    const char *gzp = tmp_path("t.csv.gz");
    char big[3000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    gzFile gz = gzopen(gzp, "wb");
    assert_non_null(gz);
    assert_int_equal(gzwrite(gz, big, sizeof big), (int)sizeof big);
    assert_int_equal(gzclose(gz), Z_OK);
    assert_int_equal(cx_read_file_gz(gzp, 1 << 20, &d, &n, &err), 0);
    assert_int_equal(n, sizeof big);
    assert_memory_equal(d, big, sizeof big);
    assert_int_equal(d[n], 0);
    free(d);
    assert_int_equal(cx_read_file_gz(gzp, 100, &d, &n, &err), CX_ELIMIT);
    /* plain files pass through */
    assert_int_equal(cx_read_file_gz(p, 100, &d, &n, &err), 0);
    assert_string_equal(d, "new via stream");
    free(d);
    /* a truncated gzip is an error */
    char *raw;
    size_t rn;
    assert_int_equal(cx_read_file(gzp, 1 << 20, &raw, &rn, &err), 0);
    const char *cut = tmp_path("cut.csv.gz");
    write_bytes(cut, raw, rn - 10);
    assert_int_equal(cx_read_file_gz(cut, 1 << 20, &d, &n, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, cut));
    assert_null(d);
    /* corrupt deflate data */
    raw[rn / 2] ^= 0xff;
    raw[rn / 2 + 1] ^= 0xff;
    write_bytes(cut, raw, rn);
    assert_int_not_equal(cx_read_file_gz(cut, 1 << 20, &d, &n, &err), CX_OK);
    free(raw);
    assert_int_equal(cx_read_file_gz(tmp_path("nope.gz"), 100, &d, &n, &err), CX_EMISSING);
}

/* ---------------------------------------------------------------- JSON */

static cx_json *parse_ok(const char *s)
{
    cx_json *j = NULL;
    cx_err err = {0};
    cx_status st = cx_json_parse(s, strlen(s), 0, &j, &err);
    if (st)
        fprintf(stderr, "unexpected failure on %s: %s\n", s, err.msg);
    assert_int_equal(st, CX_OK);
    assert_non_null(j);
    return j;
}

static void parse_bad(const char *s, size_t n, const char *frag)
{
    cx_json *j = (cx_json *)(uintptr_t)1;
    cx_err err = {0};
    cx_status st = cx_json_parse(s, n, 0, &j, &err);
    if (st == CX_OK)
        fprintf(stderr, "unexpectedly accepted: %.*s\n", (int)n, s);
    assert_int_not_equal(st, CX_OK);
    assert_null(j);
    assert_non_null(strstr(err.msg, "byte"));
    if (frag && !strstr(err.msg, frag))
        fprintf(stderr, "'%s' not in: %s\n", frag, err.msg);
    if (frag)
        assert_non_null(strstr(err.msg, frag));
}

static void test_json(void **state)
{
    (void)state;
    cx_json *j = parse_ok(" {\"a\": [1, -2.5e3, true, false, null, \"x\"],\n"
                          "  \"b\": {\"c\": {\"d\": []}, \"e\": {}}, \"n\": -0, "
                          "\"big\": 18446744073709551615, \"neg\": -9223372036854775808,"
                          "\"huge\": 18446744073709551616, \"frac\": 0.5e-2 } ");
    assert_int_equal(j->type, CX_JSON_OBJECT);
    assert_int_equal(cx_json_count(j), 7);
    assert_string_equal(cx_json_key_at(j, 0), "a");
    const cx_json *a = cx_json_get(j, "a");
    assert_int_equal(cx_json_count(a), 6);
    uint64_t u;
    int64_t i64;
    double d;
    assert_int_equal(cx_json_u64(cx_json_at(a, 0), &u), 0);
    assert_int_equal(u, 1);
    assert_int_equal(cx_json_double(cx_json_at(a, 1), &d), 0);
    assert_true(d == -2500.0);
    assert_int_not_equal(cx_json_u64(cx_json_at(a, 1), &u), 0);
    assert_int_equal(cx_json_at(a, 2)->type, CX_JSON_BOOL);
    assert_true(cx_json_at(a, 2)->boolean);
    assert_false(cx_json_at(a, 3)->boolean);
    assert_int_equal(cx_json_at(a, 4)->type, CX_JSON_NULL);
    assert_string_equal(cx_json_string(cx_json_at(a, 5)), "x");
    assert_null(cx_json_at(a, 6));
    assert_null(cx_json_string(cx_json_at(a, 0)));
    assert_int_equal(cx_json_get(cx_json_get(cx_json_get(j, "b"), "c"), "d")->type,
                     CX_JSON_ARRAY);
    assert_null(cx_json_get(j, "zz"));
    assert_null(cx_json_get(a, "a"));
    assert_int_equal(cx_json_u64(cx_json_get(j, "big"), &u), 0);
    assert_true(u == UINT64_MAX);
    assert_int_not_equal(cx_json_i64(cx_json_get(j, "big"), &i64), 0);
    assert_int_equal(cx_json_i64(cx_json_get(j, "neg"), &i64), 0);
    assert_true(i64 == INT64_MIN);
    assert_int_not_equal(cx_json_u64(cx_json_get(j, "neg"), &u), 0);
    assert_int_not_equal(cx_json_u64(cx_json_get(j, "huge"), &u), 0);
    assert_int_equal(cx_json_double(cx_json_get(j, "huge"), &d), 0);
    assert_true(d == 18446744073709551616.0);
    assert_int_equal(cx_json_double(cx_json_get(j, "frac"), &d), 0);
    assert_true(d == 0.005);
    assert_int_equal(cx_json_u64(cx_json_get(j, "n"), &u), 0);
    assert_int_equal(u, 0);
    assert_int_equal(cx_json_get(j, "b")->offset > 0, 1);
    cx_json_free(j);

    /* escapes, \u, surrogate pairs -> UTF-8, embedded NUL */
    j = parse_ok("[\"q\\\"b\\\\s\\/n\\nt\\tr\\rb\\bf\\f\", \"\\u00e9\\u20AC\", "
                 "\"\\ud83d\\ude00\", \"a\\u0000b\", \"\xc3\xa9\xf0\x9f\x98\x80\", \"\"]");
    assert_string_equal(cx_json_string(cx_json_at(j, 0)), "q\"b\\s/n\nt\tr\rb\bf\f");
    assert_string_equal(cx_json_string(cx_json_at(j, 1)), "\xc3\xa9\xe2\x82\xac");
    assert_string_equal(cx_json_string(cx_json_at(j, 2)), "\xf0\x9f\x98\x80");
    assert_int_equal(cx_json_at(j, 3)->len, 3);
    assert_memory_equal(cx_json_string(cx_json_at(j, 3)), "a\0b", 4);
    assert_string_equal(cx_json_string(cx_json_at(j, 4)), "\xc3\xa9\xf0\x9f\x98\x80");
    assert_string_equal(cx_json_string(cx_json_at(j, 5)), "");
    cx_json_free(j);

    /* Scalars at top level; many keys (sorted lookup). */
    j = parse_ok("42");
    assert_int_equal(j->type, CX_JSON_NUMBER);
    cx_json_free(j);
    char *many = malloc(200000);
    size_t k = 0;
    k += (size_t)sprintf(many + k, "{");
    for (int i = 0; i < 5000; i++)
        k += (size_t)sprintf(many + k, "%s\"k%d\":%d", i ? "," : "", (i * 7919) % 5000,
                             (i * 7919) % 5000);
    sprintf(many + k, "}");
    j = parse_ok(many);
    for (int i = 0; i < 5000; i += 37) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(cx_json_u64(cx_json_get(j, key), &u), 0);
        assert_int_equal(u, i);
    }
    cx_json_free(j);
    free(many);

    /* depth limit */
    char deep[300];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    deep[200] = 0;
    cx_err err;
    assert_int_equal(cx_json_parse(deep, 200, 0, &j, &err), CX_ELIMIT);
    assert_non_null(strstr(err.msg, "nesting"));
    assert_int_equal(cx_json_parse(deep, 200, 100, &j, &err), CX_OK);
    cx_json_free(j);
    assert_int_equal(cx_json_parse(deep + 36, 128, 0, &j, &err), CX_OK); /* 64 deep */
    cx_json_free(j);

    /* bad inputs */
    parse_bad("", 0, "empty");
    parse_bad("   ", 3, "empty");
    parse_bad("{", 1, NULL);
    parse_bad("[1,]", 4, NULL);
    parse_bad("[1 2]", 5, "expected ','");
    parse_bad("{\"a\":1,}", 8, "expected a string key");
    parse_bad("{\"a\" 1}", 7, "':'");
    parse_bad("{a:1}", 5, NULL);
    parse_bad("{\"a\":1,\"a\":2}", 13, "duplicate key \"a\"");
    parse_bad("01", 2, "leading zero");
    parse_bad("-", 1, NULL);
    parse_bad("1.", 2, NULL);
    parse_bad(".5", 2, NULL);
    parse_bad("1e", 2, NULL);
    parse_bad("+1", 2, NULL);
    parse_bad("1e999", 5, "out of range");
    parse_bad("NaN", 3, NULL);
    parse_bad("Infinity", 8, NULL);
    parse_bad("tru", 3, NULL);
    parse_bad("nul", 3, NULL);
    parse_bad("truex", 5, "trailing");
    parse_bad("1 2", 3, "trailing");
    parse_bad("\"abc", 4, "unterminated");
    parse_bad("\"a\\", 3, NULL);
    parse_bad("\"\\x\"", 4, "invalid escape");
    parse_bad("\"\\u12\"", 6, NULL);
    parse_bad("\"\\u12g4\"", 8, "hex");
    parse_bad("\"\\ud83d\"", 8, "surrogate");
    parse_bad("\"\\ud83d\\u0041\"", 14, "surrogate");
    parse_bad("\"\\ude00\"", 8, "surrogate");
    parse_bad("\"a\nb\"", 5, "control character");
    parse_bad("\"\xff\"", 3, "UTF-8");
    parse_bad("\"\xc0\xaf\"", 4, "UTF-8");          /* overlong '/' */
    parse_bad("\"\xed\xa0\x80\"", 5, "UTF-8");      /* encoded surrogate */
    parse_bad("\"\xf4\x90\x80\x80\"", 6, "UTF-8");  /* > U+10FFFF */
    parse_bad("\"\xe2\x82\"", 4, "UTF-8");          /* truncated sequence */
    parse_bad("[1]\0", 4, "trailing");
    parse_bad("{\"a\":1}", 5, NULL); /* length cuts the text */
    parse_bad("'a'", 3, NULL);
    parse_bad("[1,2", 4, "unterminated");
    assert_true(cx_utf8_valid("\xc3\xa9", 2));
    assert_false(cx_utf8_valid("\xc3", 1));
}

static void test_json_escape(void **state)
{
    (void)state;
    char buf[128];
    size_t n = cx_json_escape_buf(buf, sizeof buf, "a\"b\\c\nd\x01\x7f\xc3\xa9\xff");
    assert_string_equal(buf, "\"a\\\"b\\\\c\\nd\\u0001\\u007f\xc3\xa9\xef\xbf\xbd\"");
    assert_int_equal(n, strlen(buf));
    /* truncation reports the full length and stays terminated */
    char small[5];
    n = cx_json_escape_buf(small, sizeof small, "abcdefgh");
    assert_int_equal(n, 10);
    assert_string_equal(small, "\"abc");
    assert_int_equal(cx_json_escape_buf(NULL, 0, NULL), 4);
    cx_json_escape_buf(buf, sizeof buf, NULL);
    assert_string_equal(buf, "null");
    /* escaping then parsing gives the original back */
    const char *orig = "tab\there \"quoted\" back\\slash \xe2\x9c\x93 \x1f";
    cx_json_escape_buf(buf, sizeof buf, orig);
    cx_json *j = parse_ok(buf);
    assert_string_equal(cx_json_string(j), orig);
    cx_json_free(j);
    /* to a FILE */
    FILE *f = tmpfile();
    assert_non_null(f);
    cx_json_escape(f, "x\ny");
    rewind(f);
    char line[32] = {0};
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_string_equal(line, "\"x\\ny\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_decode),
        cmocka_unit_test(test_f16_encode_rounding),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_dtype_names),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_read_dtypes),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_atomic_and_read),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_escape),
    };
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
