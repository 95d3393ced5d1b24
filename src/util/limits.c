/* Process-wide bounds on untrusted input (see cx_limits in chexnet.h). */
#include "chexnet.h"

#include <string.h>

#define DEF_PIXELS ((uint64_t)8192 * 8192)
#define DEF_ROWS ((uint64_t)10000000)
#define DEF_BYTES ((uint64_t)1 << 30)

static cx_limits g_limits = {DEF_PIXELS, DEF_ROWS, DEF_BYTES};

void cx_limits_default(cx_limits *l)
{
    l->max_pixels = DEF_PIXELS;
    l->max_rows = DEF_ROWS;
    l->max_bytes = DEF_BYTES;
}

void cx_limits_get(cx_limits *l)
{
    __atomic_load(&g_limits.max_pixels, &l->max_pixels, __ATOMIC_RELAXED);
    __atomic_load(&g_limits.max_rows, &l->max_rows, __ATOMIC_RELAXED);
    __atomic_load(&g_limits.max_bytes, &l->max_bytes, __ATOMIC_RELAXED);
}

cx_status cx_limits_set(const cx_limits *l, cx_err *err)
{
    if (!l)
        return cx_seterr(err, CX_EARG, "cx_limits_set: no limits given");
    cx_limits v = *l;
    if (!v.max_pixels)
        v.max_pixels = DEF_PIXELS;
    if (!v.max_rows)
        v.max_rows = DEF_ROWS;
    if (!v.max_bytes)
        v.max_bytes = DEF_BYTES;
    if (v.max_rows > CX_LIMIT_MAX_ROWS)
        return cx_seterr(err, CX_EARG, "the row limit (--max-rows) can be at most %u",
                         CX_LIMIT_MAX_ROWS);
    if (v.max_bytes > (uint64_t)SIZE_MAX / 4)
        return cx_seterr(err, CX_EARG, "the byte limit (--max-bytes) can be at most %zu",
                         SIZE_MAX / 4);
    __atomic_store(&g_limits.max_pixels, &v.max_pixels, __ATOMIC_RELAXED);
    __atomic_store(&g_limits.max_rows, &v.max_rows, __ATOMIC_RELAXED);
    __atomic_store(&g_limits.max_bytes, &v.max_bytes, __ATOMIC_RELAXED);
    return CX_OK;
}
