/* Thread count of the OpenMP loops and kernels. */
#include "chexnet.h"

#include <omp.h>

static int g_threads = 0;

void cx_set_threads(int n)
{
    if (n <= 0)
        n = omp_get_num_procs();
    g_threads = n;
    omp_set_num_threads(n);
}

int cx_get_threads(void)
{
    if (g_threads <= 0)
        return omp_get_max_threads();
    return g_threads;
}
