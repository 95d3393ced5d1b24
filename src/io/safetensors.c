/* safetensors reading (mmap, full validation as the reference implementation)
 * and writing (atomic), plus half/bfloat16 conversions.
 *
 * Format: u64 little-endian header length N, N bytes of UTF-8 JSON
 *   {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
 *    "__metadata__": {"key": "value", ...}}
 * then the data section; offsets are relative to its start. */
#include "io/safetensors.h"

#include "io/fileutil.h"
#include "io/json.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    size_t size;
} g_dtypes[CX_DT_COUNT] = {
    [CX_DT_F32] = {"F32", 4}, [CX_DT_F16] = {"F16", 2}, [CX_DT_BF16] = {"BF16", 2},
    [CX_DT_F64] = {"F64", 8}, [CX_DT_I64] = {"I64", 8}, [CX_DT_I32] = {"I32", 4},
    [CX_DT_I16] = {"I16", 2}, [CX_DT_I8] = {"I8", 1},   [CX_DT_U8] = {"U8", 1},
    [CX_DT_BOOL] = {"BOOL", 1},
};

/* Valid in the format but not representable by cx_dtype. */
static const char *const g_unsupported_dtypes[] = {"U16", "U32", "U64", "F8_E5M2", "F8_E4M3",
                                                   "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2",
                                                   "C64"};

size_t cx_dtype_size(cx_dtype dt)
{
    return (unsigned)dt < CX_DT_COUNT ? g_dtypes[dt].size : 0;
}

const char *cx_dtype_name(cx_dtype dt)
{
    return (unsigned)dt < CX_DT_COUNT ? g_dtypes[dt].name : "?";
}

int cx_dtype_parse(const char *name, cx_dtype *out)
{
    if (!name)
        return -1;
    for (int i = 0; i < CX_DT_COUNT; i++)
        if (!strcmp(name, g_dtypes[i].name)) {
            if (out)
                *out = (cx_dtype)i;
            return 0;
        }
    return -1;
}

/* ------------------------------------------------------- half conversions */

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float cx_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0)
            return u2f(sign);
        uint32_t e = 113; /* subnormal: normalise */
        while (!(man & 0x400)) {
            man <<= 1;
            e--;
        }
        return u2f(sign | (e << 23) | ((man & 0x3ff) << 13));
    }
    if (exp == 31)
        return u2f(sign | 0x7f800000u | (man << 13));
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t cx_f32_to_f16(float f)
{
    uint32_t x = f2u(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) {
        if (x > 0x7f800000u) /* NaN: quiet, keep the top payload bits */
            return sign | 0x7e00 | (uint16_t)((x >> 13) & 0x1ff);
        return sign | 0x7c00;
    }
    if (x >= 0x47800000u) /* >= 65536: beyond any rounding to 65504 */
        return sign | 0x7c00;
    if (x < 0x38800000u) { /* below the smallest normal 2^-14 */
        if (x <= 0x33000000u) /* <= 2^-25: rounds to zero (tie to even) */
            return sign;
        uint32_t e = x >> 23, m = (x & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return sign | (uint16_t)r;
    }
    uint32_t h = (((x >> 23) - 112) << 10) | ((x & 0x7fffff) >> 13);
    uint32_t rem = x & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* a carry into the exponent is right, up to infinity */
    return sign | (uint16_t)h;
}

float cx_bf16_to_f32(uint16_t b)
{
    return u2f((uint32_t)b << 16);
}

uint16_t cx_f32_to_bf16(float f)
{
    uint32_t x = f2u(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x0040);
    x += 0x7fffu + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static float f64_to_f32(double d)
{
    if (isnan(d))
        return (float)d;
    double a = fabs(d);
    if (a > FLT_MAX) {
        /* Values below FLT_MAX + half an ulp round to FLT_MAX, the rest to
         * infinity (round to nearest even; FLT_MAX has an odd mantissa). */
        double limit = ldexp(1.0, 128) - ldexp(1.0, 103);
        float r = a < limit ? FLT_MAX : INFINITY;
        return d < 0 ? -r : r;
    }
    return (float)d;
}

/* Little-endian loads/stores independent of the host's byte order. */
static uint16_t ld16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static uint64_t ld64(const uint8_t *p)
{
    return (uint64_t)ld32(p) | ((uint64_t)ld32(p + 4) << 32);
}

static void st16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void st32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void st64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* ----------------------------------------------------------------- reading */

typedef struct {
    void *map;       /* mmap'd file, or malloc'd copy when !mapped */
    size_t map_size;
    int mapped;
    int *by_name;    /* tensor indices sorted by name */
} st_impl;

static int64_t numel_of(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

int64_t cx_st_numel(const cx_st_tensor *t)
{
    return t ? numel_of(t->ndim, t->shape) : 0;
}

void cx_st_close(cx_st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    st_impl *im = f->impl_;
    if (im) {
        if (im->map) {
            if (im->mapped)
                munmap(im->map, im->map_size);
            else
                free(im->map);
        }
        free(im->by_name);
        free(im);
    }
    free(f->path);
    free(f);
}

static int cmp_by_offset(const void *a, const void *b, void *ctx)
{
    const cx_st_tensor *t = ctx;
    const cx_st_tensor *x = &t[*(const int *)a], *y = &t[*(const int *)b];
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

static int cmp_by_name(const void *a, const void *b, void *ctx)
{
    const cx_st_tensor *t = ctx;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* qsort_r is a GNU extension with a glibc-specific signature; sort with our
 * own merge sort instead to stay portable. */
static void sort_idx(int *idx, int *tmp, int n,
                     int (*cmp)(const void *, const void *, void *), void *ctx)
{
    if (n < 2)
        return;
    int h = n / 2;
    sort_idx(idx, tmp, h, cmp, ctx);
    sort_idx(idx + h, tmp, n - h, cmp, ctx);
    int a = 0, b = h, k = 0;
    while (a < h && b < n)
        tmp[k++] = cmp(&idx[b], &idx[a], ctx) < 0 ? idx[b++] : idx[a++];
    while (a < h)
        tmp[k++] = idx[a++];
    while (b < n)
        tmp[k++] = idx[b++];
    memcpy(idx, tmp, (size_t)n * sizeof *idx);
}

static int is_unsupported_dtype(const char *s)
{
    for (size_t i = 0; i < sizeof g_unsupported_dtypes / sizeof *g_unsupported_dtypes; i++)
        if (!strcmp(s, g_unsupported_dtypes[i]))
            return 1;
    return 0;
}

/* Validates one tensor entry and fills t (name already set). */
static cx_status parse_entry(const char *path, const char *name, const cx_json *v,
                             uint64_t data_size, cx_st_tensor *t, cx_err *err)
{
    if (v->type != CX_JSON_OBJECT)
        return cx_seterr(err, CX_EFORMAT,
                         "%s: tensor '%.200s': header entry is a JSON %s, expected an object",
                         path, name, cx_json_type_name(v->type));
    for (size_t i = 0; i < cx_json_count(v); i++) {
        const char *k = cx_json_key_at(v, i);
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets"))
            return cx_seterr(err, CX_EFORMAT,
                             "%s: tensor '%.200s': unknown field '%.100s' (expected dtype, "
                             "shape, data_offsets)",
                             path, name, k);
    }
    const cx_json *jd = cx_json_get(v, "dtype"), *js = cx_json_get(v, "shape"),
                  *jo = cx_json_get(v, "data_offsets");
    if (!jd || !js || !jo)
        return cx_seterr(err, CX_EFORMAT, "%s: tensor '%.200s': missing field '%s'", path, name,
                         !jd ? "dtype" : !js ? "shape" : "data_offsets");
    const char *ds = cx_json_string(jd);
    if (!ds)
        return cx_seterr(err, CX_EFORMAT, "%s: tensor '%.200s': dtype is a JSON %s, expected a string",
                         path, name, cx_json_type_name(jd->type));
    if (cx_dtype_parse(ds, &t->dtype)) {
        if (is_unsupported_dtype(ds))
            return cx_seterr(err, CX_EUNSUPPORTED, "%s: tensor '%.200s': dtype %s is not supported",
                             path, name, ds);
        return cx_seterr(err, CX_EFORMAT, "%s: tensor '%.200s': unknown dtype '%.50s'", path, name,
                         ds);
    }
    if (js->type != CX_JSON_ARRAY)
        return cx_seterr(err, CX_EFORMAT, "%s: tensor '%.200s': shape is a JSON %s, expected an array",
                         path, name, cx_json_type_name(js->type));
    size_t nd = cx_json_count(js);
    if (nd > CX_ST_MAX_DIMS)
        return cx_seterr(err, CX_ELIMIT, "%s: tensor '%.200s': %zu dimensions, at most %d supported",
                         path, name, nd, CX_ST_MAX_DIMS);
    t->ndim = (int)nd;
    /* numel * dtype size, with overflow checks (numel stays below 2^63 / 8
     * so that byte counts fit in int64 too). */
    int zero = 0, overflow = 0;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        uint64_t d;
        if (cx_json_u64(cx_json_at(js, i), &d) || d > (uint64_t)INT64_MAX)
            return cx_seterr(err, CX_EFORMAT,
                             "%s: tensor '%.200s': shape[%zu] is not a non-negative integer",
                             path, name, i);
        t->shape[i] = (int64_t)d;
        if (d == 0)
            zero = 1;
        else if (numel > ((uint64_t)INT64_MAX / 8) / d)
            overflow = 1;
        else
            numel *= d;
    }
    if (zero)
        numel = 0;
    else if (overflow)
        return cx_seterr(err, CX_EFORMAT, "%s: tensor '%.200s': shape size overflows", path, name);
    uint64_t bytes = numel * cx_dtype_size(t->dtype);
    if (jo->type != CX_JSON_ARRAY || cx_json_count(jo) != 2)
        return cx_seterr(err, CX_EFORMAT,
                         "%s: tensor '%.200s': data_offsets must be an array [begin, end]", path,
                         name);
    if (cx_json_u64(cx_json_at(jo, 0), &t->begin) || cx_json_u64(cx_json_at(jo, 1), &t->end))
        return cx_seterr(err, CX_EFORMAT,
                         "%s: tensor '%.200s': data_offsets are not non-negative integers", path,
                         name);
    if (t->end < t->begin)
        return cx_seterr(err, CX_EFORMAT, "%s: tensor '%.200s': data_offsets end %llu < begin %llu",
                         path, name, (unsigned long long)t->end, (unsigned long long)t->begin);
    if (t->end - t->begin != bytes)
        return cx_seterr(err, CX_EFORMAT,
                         "%s: tensor '%.200s': data_offsets span %llu bytes but shape x %s needs "
                         "%llu",
                         path, name, (unsigned long long)(t->end - t->begin), cx_dtype_name(t->dtype),
                         (unsigned long long)bytes);
    if (t->end > data_size)
        return cx_seterr(err, CX_EFORMAT,
                         "%s: tensor '%.200s': data_offsets [%llu, %llu] beyond the data section "
                         "(%llu bytes; file truncated?)",
                         path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                         (unsigned long long)data_size);
    return CX_OK;
}

static cx_status parse_header(cx_st_file *f, const cx_json *root, cx_err *err)
{
    const char *path = f->path;
    size_t n = cx_json_count(root);
    const cx_json *meta = cx_json_get(root, "__metadata__");
    size_t nt = n - (meta ? 1 : 0);
    if (nt > (size_t)INT32_MAX / 2)
        return cx_seterr(err, CX_ELIMIT, "%s: too many tensors", path);
    f->tensors = calloc(nt ? nt : 1, sizeof *f->tensors);
    if (!f->tensors)
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
    if (meta && meta->type != CX_JSON_NULL) {
        if (meta->type != CX_JSON_OBJECT)
            return cx_seterr(err, CX_EFORMAT, "%s: __metadata__ is a JSON %s, expected an object",
                             path, cx_json_type_name(meta->type));
        size_t nm = cx_json_count(meta);
        f->meta = calloc(nm ? nm : 1, sizeof *f->meta);
        if (!f->meta)
            return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
        for (size_t i = 0; i < nm; i++) {
            const char *k = cx_json_key_at(meta, i);
            const cx_json *v = cx_json_value_at(meta, i);
            if (v->type != CX_JSON_STRING)
                return cx_seterr(err, CX_EFORMAT,
                                 "%s: __metadata__ value of '%.200s' is a JSON %s, expected a "
                                 "string",
                                 path, k, cx_json_type_name(v->type));
            if (strlen(k) != meta->key_lens[i] || strlen(v->str) != v->len)
                return cx_seterr(err, CX_EUNSUPPORTED,
                                 "%s: __metadata__ entry '%.200s' contains a NUL character",
                                 path, k);
            f->meta[i].key = strdup(k);
            f->meta[i].value = strdup(v->str);
            f->n_meta++;
            if (!f->meta[i].key || !f->meta[i].value)
                return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
        }
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = cx_json_key_at(root, i);
        if (!strcmp(name, "__metadata__"))
            continue;
        if (strlen(name) != root->key_lens[i])
            return cx_seterr(err, CX_EUNSUPPORTED,
                             "%s: tensor '%.200s': name contains a NUL character", path, name);
        cx_st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(name);
        if (!t->name)
            return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
        f->n_tensors++;
        cx_status st = parse_entry(path, name, cx_json_value_at(root, i), f->data_size, t, err);
        if (st)
            return st;
    }
    /* Sorted by offset, the tensors must tile the data section exactly. */
    int nti = f->n_tensors;
    int *idx = malloc(((size_t)nti + 1) * sizeof *idx);
    int *tmp = malloc(((size_t)nti + 1) * sizeof *tmp);
    if (!idx || !tmp) {
        free(idx);
        free(tmp);
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < nti; i++)
        idx[i] = i;
    sort_idx(idx, tmp, nti, cmp_by_offset, f->tensors);
    uint64_t cursor = 0;
    cx_status st = CX_OK;
    for (int i = 0; i < nti && !st; i++) {
        const cx_st_tensor *t = &f->tensors[idx[i]];
        if (t->begin < cursor) {
            const cx_st_tensor *prev = &f->tensors[idx[i - 1]];
            st = cx_seterr(err, CX_EFORMAT,
                           "%s: tensor '%.200s': data_offsets [%llu, %llu] overlap tensor "
                           "'%.200s' [%llu, %llu]",
                           path, t->name, (unsigned long long)t->begin,
                           (unsigned long long)t->end, prev->name,
                           (unsigned long long)prev->begin, (unsigned long long)prev->end);
        } else if (t->begin > cursor) {
            st = cx_seterr(err, CX_EFORMAT,
                           "%s: tensor '%.200s': data_offsets begin at %llu, leaving a hole of "
                           "%llu unused bytes at %llu",
                           path, t->name, (unsigned long long)t->begin,
                           (unsigned long long)(t->begin - cursor), (unsigned long long)cursor);
        }
        cursor = t->end;
    }
    if (!st && cursor != f->data_size)
        st = cx_seterr(err, CX_EFORMAT,
                       "%s: the data section has %llu bytes but the tensors cover %llu "
                       "(trailing bytes after the last tensor)",
                       path, (unsigned long long)f->data_size, (unsigned long long)cursor);
    if (!st) {
        for (int i = 0; i < nti; i++)
            idx[i] = i;
        sort_idx(idx, tmp, nti, cmp_by_name, f->tensors);
        ((st_impl *)f->impl_)->by_name = idx;
        idx = NULL;
    }
    free(idx);
    free(tmp);
    return st;
}

cx_status cx_st_open(const char *path, cx_st_file **out, cx_err *err)
{
    *out = NULL;
    if (!path || !*path)
        return cx_seterr(err, CX_EARG, "safetensors: empty path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cx_seterr(err, errno == ENOENT ? CX_EMISSING : CX_EIO, "%s: %s", path,
                         strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return cx_seterr(err, CX_EIO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return cx_seterr(err, CX_EIO, "%s: not a regular file", path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return cx_seterr(err, CX_EFORMAT,
                         "%s: file is %llu bytes, too short for a safetensors file (an 8-byte "
                         "header length comes first)",
                         path, (unsigned long long)size);
    }
    if (size > (uint64_t)SIZE_MAX) {
        close(fd);
        return cx_seterr(err, CX_ELIMIT, "%s: file too large to map", path);
    }
    cx_st_file *f = calloc(1, sizeof *f);
    st_impl *im = calloc(1, sizeof *im);
    if (!f || !im || !(f->path = strdup(path))) {
        free(im);
        if (f)
            free(f->path);
        free(f);
        close(fd);
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
    }
    f->impl_ = im;
    im->map_size = (size_t)size;
    void *map = mmap(NULL, im->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map != MAP_FAILED) {
        im->map = map;
        im->mapped = 1;
    } else {
        /* No mmap (unusual file system): read it instead. */
        im->map = malloc(im->map_size);
        if (!im->map) {
            close(fd);
            cx_st_close(f);
            return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
        }
        size_t got = 0;
        while (got < im->map_size) {
            ssize_t r = pread(fd, (char *)im->map + got, im->map_size - got, (off_t)got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                int e = errno;
                close(fd);
                cx_st_close(f);
                return cx_seterr(err, CX_EIO, "%s: read failed: %s", path,
                                 r < 0 ? strerror(e) : "file shrank while reading");
            }
            got += (size_t)r;
        }
    }
    close(fd);
    const uint8_t *base = im->map;
    uint64_t hlen = ld64(base);
    if (hlen > CX_ST_MAX_HEADER) {
        cx_st_close(f);
        return cx_seterr(err, CX_ELIMIT, "%s: header length %llu exceeds the limit of %u bytes",
                         path, (unsigned long long)hlen, CX_ST_MAX_HEADER);
    }
    if (hlen > size - 8) {
        cx_st_close(f);
        return cx_seterr(err, CX_EFORMAT,
                         "%s: header length %llu goes beyond the end of the file (%llu bytes; "
                         "truncated or not a safetensors file)",
                         path, (unsigned long long)hlen, (unsigned long long)size);
    }
    const char *hdr = (const char *)base + 8;
    if (!cx_utf8_valid(hdr, (size_t)hlen)) {
        cx_st_close(f);
        return cx_seterr(err, CX_EFORMAT, "%s: header is not valid UTF-8", path);
    }
    cx_json *root = NULL;
    cx_err je = {0};
    if (cx_json_parse(hdr, (size_t)hlen, 0, &root, &je)) {
        cx_st_close(f);
        return cx_seterr(err, je.code == CX_ENOMEM ? CX_ENOMEM : CX_EFORMAT,
                         "%s: header: %s (header starts at byte 8)", path, je.msg);
    }
    if (root->type != CX_JSON_OBJECT) {
        cx_st_close(f);
        cx_status st = cx_seterr(err, CX_EFORMAT, "%s: header is a JSON %s, expected an object",
                                 path, cx_json_type_name(root->type));
        cx_json_free(root);
        return st;
    }
    if (hdr[0] != '{') { /* as the reference: no leading whitespace */
        cx_st_close(f);
        cx_json_free(root);
        return cx_seterr(err, CX_EFORMAT, "%s: header must start with '{'", path);
    }
    f->data = base + 8 + hlen;
    f->data_size = size - 8 - hlen;
    cx_status st = parse_header(f, root, err);
    cx_json_free(root);
    if (st) {
        cx_st_close(f);
        return st;
    }
    *out = f;
    return CX_OK;
}

const cx_st_tensor *cx_st_find(const cx_st_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    const st_impl *im = f->impl_;
    int lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const cx_st_tensor *t = &f->tensors[im->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0)
            return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *cx_st_meta(const cx_st_file *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta[i].key, key))
            return f->meta[i].value;
    return NULL;
}

cx_status cx_st_read_f32(const cx_st_file *f, const cx_st_tensor *t, float *dst, int64_t n,
                         cx_err *err)
{
    if (!f || !t)
        return cx_seterr(err, CX_EARG, "safetensors: NULL file or tensor");
    int64_t ne = cx_st_numel(t);
    if (n != ne)
        return cx_seterr(err, CX_ESHAPE, "%s: tensor '%.200s' has %lld elements, caller expects %lld",
                         f->path, t->name, (long long)ne, (long long)n);
    if (t->end > f->data_size || t->end < t->begin ||
        t->end - t->begin != (uint64_t)ne * cx_dtype_size(t->dtype))
        return cx_seterr(err, CX_EARG, "%s: tensor '%.200s': descriptor does not match the file",
                         f->path, t->name);
    if (ne && !dst)
        return cx_seterr(err, CX_EARG, "%s: tensor '%.200s': NULL destination", f->path, t->name);
    const uint8_t *p = f->data + t->begin;
    switch (t->dtype) {
    case CX_DT_F32:
        for (int64_t i = 0; i < ne; i++)
            dst[i] = u2f(ld32(p + 4 * i));
        break;
    case CX_DT_F16:
        for (int64_t i = 0; i < ne; i++)
            dst[i] = cx_f16_to_f32(ld16(p + 2 * i));
        break;
    case CX_DT_BF16:
        for (int64_t i = 0; i < ne; i++)
            dst[i] = cx_bf16_to_f32(ld16(p + 2 * i));
        break;
    case CX_DT_F64:
        for (int64_t i = 0; i < ne; i++) {
            uint64_t u = ld64(p + 8 * i);
            double d;
            memcpy(&d, &u, 8);
            dst[i] = f64_to_f32(d);
        }
        break;
    default:
        return cx_seterr(err, CX_EUNSUPPORTED,
                         "%s: tensor '%.200s': dtype %s cannot be read as floating point",
                         f->path, t->name, cx_dtype_name(t->dtype));
    }
    return CX_OK;
}

/* ----------------------------------------------------------------- writing */

typedef struct {
    char *name;
    cx_dtype dtype;
    int ndim;
    int64_t shape[CX_ST_MAX_DIMS];
    const float *f32;
    const int64_t *i64;
    uint64_t nbytes;
} wentry;

struct cx_st_writer {
    wentry *e;
    int n, cap;
    cx_kv *meta;
    int n_meta, cap_meta;
};

cx_st_writer *cx_st_writer_new(void)
{
    return calloc(1, sizeof(cx_st_writer));
}

void cx_st_writer_free(cx_st_writer *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n; i++)
        free(w->e[i].name);
    free(w->e);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->meta);
    free(w);
}

static cx_status writer_add(cx_st_writer *w, const char *name, cx_dtype dtype, int ndim,
                            const int64_t *shape, const float *f32, const int64_t *i64,
                            cx_err *err)
{
    if (!w || !name)
        return cx_seterr(err, CX_EARG, "safetensors writer: NULL writer or name");
    if (!cx_utf8_valid(name, strlen(name)))
        return cx_seterr(err, CX_EARG, "safetensors writer: tensor name is not valid UTF-8");
    if (!strcmp(name, "__metadata__"))
        return cx_seterr(err, CX_EARG, "safetensors writer: '__metadata__' is reserved");
    if (ndim < 0 || ndim > CX_ST_MAX_DIMS || (ndim && !shape))
        return cx_seterr(err, CX_EARG, "safetensors writer: tensor '%.200s': bad ndim %d", name,
                         ndim);
    uint64_t numel = 1;
    int zero = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return cx_seterr(err, CX_EARG,
                             "safetensors writer: tensor '%.200s': negative dimension %lld", name,
                             (long long)shape[i]);
        if (shape[i] == 0)
            zero = 1;
        else if (numel > (uint64_t)INT64_MAX / 8 / (uint64_t)shape[i])
            return cx_seterr(err, CX_ELIMIT, "safetensors writer: tensor '%.200s' is too large",
                             name);
        else
            numel *= (uint64_t)shape[i];
    }
    if (zero)
        numel = 0;
    if (numel && !f32 && !i64)
        return cx_seterr(err, CX_EARG, "safetensors writer: tensor '%.200s': NULL data", name);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->e[i].name, name))
            return cx_seterr(err, CX_EARG, "safetensors writer: duplicate tensor '%.200s'", name);
    if (w->n == w->cap) {
        int nc = w->cap ? w->cap * 2 : 64;
        wentry *ne = realloc(w->e, (size_t)nc * sizeof *ne);
        if (!ne)
            return cx_seterr(err, CX_ENOMEM, "safetensors writer: out of memory");
        w->e = ne;
        w->cap = nc;
    }
    wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    if (!e->name)
        return cx_seterr(err, CX_ENOMEM, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        e->shape[i] = shape[i];
    e->f32 = f32;
    e->i64 = i64;
    e->nbytes = numel * cx_dtype_size(dtype);
    w->n++;
    return CX_OK;
}

cx_status cx_st_writer_add_f32(cx_st_writer *w, const char *name, cx_dtype dtype, int ndim,
                               const int64_t *shape, const float *data, cx_err *err)
{
    if (dtype != CX_DT_F32 && dtype != CX_DT_F16 && dtype != CX_DT_BF16)
        return cx_seterr(err, CX_EARG,
                         "safetensors writer: tensor '%.200s': can store floats as F32, F16 or "
                         "BF16, not %s",
                         name ? name : "?", cx_dtype_name(dtype));
    return writer_add(w, name, dtype, ndim, shape, data, NULL, err);
}

cx_status cx_st_writer_add_i64(cx_st_writer *w, const char *name, int ndim,
                               const int64_t *shape, const int64_t *data, cx_err *err)
{
    return writer_add(w, name, CX_DT_I64, ndim, shape, NULL, data, err);
}

cx_status cx_st_writer_add_meta(cx_st_writer *w, const char *key, const char *value,
                                cx_err *err)
{
    if (!w || !key || !value)
        return cx_seterr(err, CX_EARG, "safetensors writer: NULL metadata key or value");
    if (!cx_utf8_valid(key, strlen(key)) || !cx_utf8_valid(value, strlen(value)))
        return cx_seterr(err, CX_EARG,
                         "safetensors writer: metadata '%.200s' is not valid UTF-8", key);
    char *v = strdup(value);
    if (!v)
        return cx_seterr(err, CX_ENOMEM, "safetensors writer: out of memory");
    for (int i = 0; i < w->n_meta; i++)
        if (!strcmp(w->meta[i].key, key)) { /* replace */
            free(w->meta[i].value);
            w->meta[i].value = v;
            return CX_OK;
        }
    if (w->n_meta == w->cap_meta) {
        int nc = w->cap_meta ? w->cap_meta * 2 : 8;
        cx_kv *nm = realloc(w->meta, (size_t)nc * sizeof *nm);
        if (!nm) {
            free(v);
            return cx_seterr(err, CX_ENOMEM, "safetensors writer: out of memory");
        }
        w->meta = nm;
        w->cap_meta = nc;
    }
    char *k = strdup(key);
    if (!k) {
        free(v);
        return cx_seterr(err, CX_ENOMEM, "safetensors writer: out of memory");
    }
    w->meta[w->n_meta].key = k;
    w->meta[w->n_meta].value = v;
    w->n_meta++;
    return CX_OK;
}

/* A growing text buffer for the header. */
typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_reserve(sbuf *b, size_t extra)
{
    if (b->oom || b->len + extra + 1 <= b->cap)
        return;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->len + extra + 1)
        nc *= 2;
    char *ns = realloc(b->s, nc);
    if (!ns) {
        b->oom = 1;
        return;
    }
    b->s = ns;
    b->cap = nc;
}

static void sb_puts(sbuf *b, const char *s)
{
    size_t n = strlen(s);
    sb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}

static void sb_json(sbuf *b, const char *s)
{
    size_t n = cx_json_escape_buf(NULL, 0, s);
    sb_reserve(b, n);
    if (b->oom)
        return;
    cx_json_escape_buf(b->s + b->len, n + 1, s);
    b->len += n;
}

#define CHUNK 16384

static cx_status write_data(cx_atomic_file *af, const wentry *e, uint8_t *buf, cx_err *err)
{
    uint64_t numel = e->nbytes / cx_dtype_size(e->dtype);
    size_t es = cx_dtype_size(e->dtype);
    for (uint64_t i = 0; i < numel; i += CHUNK) {
        size_t m = numel - i < CHUNK ? (size_t)(numel - i) : CHUNK;
        for (size_t j = 0; j < m; j++) {
            uint8_t *o = buf + j * es;
            switch (e->dtype) {
            case CX_DT_F32: st32(o, f2u(e->f32[i + j])); break;
            case CX_DT_F16: st16(o, cx_f32_to_f16(e->f32[i + j])); break;
            case CX_DT_BF16: st16(o, cx_f32_to_bf16(e->f32[i + j])); break;
            case CX_DT_I64: st64(o, (uint64_t)e->i64[i + j]); break;
            default: return cx_seterr(err, CX_EARG, "safetensors writer: bad dtype");
            }
        }
        cx_status st = cx_atomic_write(af, buf, m * es, err);
        if (st)
            return st;
    }
    return CX_OK;
}

cx_status cx_st_writer_write(cx_st_writer *w, const char *path, cx_err *err)
{
    if (!w || !path)
        return cx_seterr(err, CX_EARG, "safetensors writer: NULL writer or path");
    sbuf b = {0};
    char num[64];
    sb_puts(&b, "{");
    int first = 1;
    if (w->n_meta) {
        sb_puts(&b, "\"__metadata__\":{");
        for (int i = 0; i < w->n_meta; i++) {
            if (i)
                sb_puts(&b, ",");
            sb_json(&b, w->meta[i].key);
            sb_puts(&b, ":");
            sb_json(&b, w->meta[i].value);
        }
        sb_puts(&b, "}");
        first = 0;
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const wentry *e = &w->e[i];
        if (!first)
            sb_puts(&b, ",");
        first = 0;
        sb_json(&b, e->name);
        sb_puts(&b, ":{\"dtype\":\"");
        sb_puts(&b, cx_dtype_name(e->dtype));
        sb_puts(&b, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)e->shape[d]);
            sb_puts(&b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + e->nbytes));
        sb_puts(&b, num);
        off += e->nbytes;
    }
    sb_puts(&b, "}");
    while (!b.oom && b.len % 8)
        sb_puts(&b, " ");
    if (b.oom) {
        free(b.s);
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory building the header", path);
    }
    if (b.len > CX_ST_MAX_HEADER) {
        free(b.s);
        return cx_seterr(err, CX_ELIMIT, "%s: header of %zu bytes exceeds the limit of %u", path,
                         b.len, CX_ST_MAX_HEADER);
    }
    uint8_t *buf = malloc((size_t)CHUNK * 8);
    if (!buf) {
        free(b.s);
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory", path);
    }
    cx_atomic_file *af;
    cx_status st = cx_atomic_open(path, &af, err);
    if (st) {
        free(b.s);
        free(buf);
        return st;
    }
    uint8_t lenbuf[8];
    st64(lenbuf, b.len);
    st = cx_atomic_write(af, lenbuf, 8, err);
    if (!st)
        st = cx_atomic_write(af, b.s, b.len, err);
    for (int i = 0; i < w->n && !st; i++)
        st = write_data(af, &w->e[i], buf, err);
    free(b.s);
    free(buf);
    if (st) {
        cx_atomic_abort(af);
        return st;
    }
    return cx_atomic_commit(af, err);
}
