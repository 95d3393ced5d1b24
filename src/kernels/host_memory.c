/* Memory of the host-memory backends (kernels/host_memory.h). */
#include "kernels/host_memory.h"
#include "util/mem.h"

#include <string.h>

cx_status cx_host_alloc(cx_backend *be, size_t bytes, void **out)
{
    *out = cx_big_alloc(bytes ? bytes : 64);
    if (!*out)
        return cx_seterr(&be->err, CX_ENOMEM, "out of memory allocating %.1f MiB",
                         bytes / 1048576.0);
    return CX_OK;
}

void cx_host_free(cx_backend *be, void *p)
{
    (void)be;
    cx_big_free(p);
}

cx_status cx_host_zero(cx_backend *be, void *p, size_t bytes)
{
    (void)be;
    memset(p, 0, bytes);
    return CX_OK;
}

cx_status cx_host_copy(cx_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (dst != src && bytes)
        memcpy(dst, src, bytes);
    return CX_OK;
}
