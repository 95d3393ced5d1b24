/* Run-time CPU feature detection (see cpu.h). */
#include "util/cpu.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

static unsigned long long xgetbv0(void)
{
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static void detect(cx_cpu_info *ci)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return;
    unsigned int max_leaf = a;
    if (max_leaf < 7 || !__get_cpuid(1, &a, &b, &c, &d))
        return;
    int osxsave = (c >> 27) & 1;
    if (!osxsave)
        return;
    unsigned int c1 = c;
    unsigned long long xcr0 = xgetbv0();
    int os_ymm = (xcr0 & 0x6) == 0x6;                   /* SSE, AVX */
    int os_zmm = (xcr0 & 0xe6) == 0xe6;                 /* SSE, AVX, opmask, zmm */
    int os_tiles = (xcr0 & (3ull << 17)) == (3ull << 17); /* XTILECFG, XTILEDATA */
    unsigned int b7, c7, d7, a71 = 0, b71, c71, d71;
    __cpuid_count(7, 0, a, b7, c7, d7);
    unsigned int sub_leaves = a;
    if (sub_leaves >= 1)
        __cpuid_count(7, 1, a71, b71, c71, d71);
    const unsigned int f_dq_bw_vl = (1u << 16) | (1u << 17) | (1u << 30) | (1u << 31);
    const unsigned int f_fma_avx_f16c = (1u << 12) | (1u << 28) | (1u << 29);
    ci->avx2 = os_ymm && (c1 & f_fma_avx_f16c) == f_fma_avx_f16c && ((b7 >> 5) & 1);
    ci->avx512 = ci->avx2 && os_zmm && (b7 & f_dq_bw_vl) == f_dq_bw_vl;
    ci->avx512_bf16 = ci->avx512 && ((a71 >> 5) & 1);
    int amx = ((d7 >> 22) & 1) && ((d7 >> 24) & 1); /* AMX-BF16, AMX-TILE */
#if defined(__linux__) && defined(SYS_arch_prctl)
    /* Linux hands out the 8 KiB tile state only on request (ARCH_REQ_XCOMP_PERM,
     * XFEATURE_XTILEDATA); the permission covers the whole process. */
    if (amx && os_tiles && ci->avx512_bf16)
        ci->amx_bf16 = syscall(SYS_arch_prctl, 0x1023, 18) == 0;
#else
    (void)amx;
    (void)os_tiles;
#endif
}
#else
static void detect(cx_cpu_info *ci) { (void)ci; }
#endif

static cx_cpu_info g_cpu;
static pthread_once_t g_cpu_once = PTHREAD_ONCE_INIT;
static void cpu_init(void)
{
    detect(&g_cpu);
    /* the caps described in cpu.h */
    const char *isa = getenv("CHEXNET_ISA");
    if (isa && strcmp(isa, "avx2") == 0)
        g_cpu.avx512 = g_cpu.avx512_bf16 = g_cpu.amx_bf16 = 0;
    else if (isa && strcmp(isa, "baseline") == 0)
        memset(&g_cpu, 0, sizeof g_cpu);
    const char *cap = getenv("CHEXNET_BF16_KERNEL");
    if (cap && strcmp(cap, "avx512-bf16") == 0)
        g_cpu.amx_bf16 = 0;
    else if (cap && strcmp(cap, "portable") == 0)
        g_cpu.amx_bf16 = g_cpu.avx512_bf16 = 0;
}

const cx_cpu_info *cx_cpu(void)
{
    pthread_once(&g_cpu_once, cpu_init);
    return &g_cpu;
}
