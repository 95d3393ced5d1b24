/* Large, long-lived buffers (the activation arenas): 64-byte aligned, and
 * backed by transparent huge pages where the OS offers them, so that the
 * strided walks of convolution and BatchNorm kernels over hundreds of MiB
 * do not miss the TLB on every row. */
#ifndef CX_UTIL_MEM_H
#define CX_UTIL_MEM_H

#include <stddef.h>

/* NULL when out of memory; release with cx_big_free. */
void *cx_big_alloc(size_t bytes);
void cx_big_free(void *p);

#endif
