/* Memory of the host-memory backends (ref, cpu): ordinary host memory,
 * large buffers on transparent huge pages (util/mem.h); upload and
 * download are copies, and nothing when source and destination are one
 * buffer (the zero-copy views of kernels/backend.h). Signatures as in
 * cx_ops. */
#ifndef CX_HOST_MEMORY_H
#define CX_HOST_MEMORY_H

#include "kernels/backend.h"

cx_status cx_host_alloc(cx_backend *be, size_t bytes, void **out);
void cx_host_free(cx_backend *be, void *p);
cx_status cx_host_zero(cx_backend *be, void *p, size_t bytes);
cx_status cx_host_copy(cx_backend *be, void *dst, const void *src, size_t bytes);

#endif
