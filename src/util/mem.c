#define _DEFAULT_SOURCE
#include "util/mem.h"

#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define HUGE_PAGE ((size_t)2 << 20)

void *cx_big_alloc(size_t bytes)
{
    if (bytes < 2 * HUGE_PAGE)
        return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    size_t n = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    void *p = aligned_alloc(HUGE_PAGE, n);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (p)
        (void)madvise(p, n, MADV_HUGEPAGE); /* a hint: without THP nothing changes */
#endif
    return p;
}

void cx_big_free(void *p)
{
    free(p);
}
