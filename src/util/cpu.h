/* What the CPU (and the OS) lets us use, detected once at run time. Kernels
 * built for optional instruction sets (kernels/cpu/variant.h, bf16) run only
 * where these flags say so, so a binary built on one x86-64 machine runs
 * correctly on any other.
 *
 * CHEXNET_ISA=avx512|avx2|baseline caps what is reported (for tests and
 * comparisons: it never enables what the CPU lacks): avx2 clears the
 * AVX-512, AVX512-BF16 and AMX flags; baseline clears every flag.
 * CHEXNET_BF16_KERNEL=avx512-bf16|portable caps the bf16 flags alone. */
#ifndef CX_UTIL_CPU_H
#define CX_UTIL_CPU_H

typedef struct {
    int avx2;        /* AVX2 + FMA + F16C usable (OS saves the ymm state) */
    int avx512;      /* AVX-512 F/DQ/BW/VL (and AVX2) usable (OS saves the zmm state) */
    int avx512_bf16; /* VDPBF16PS / VCVTNE2PS2BF16 */
    int amx_bf16;    /* AMX tiles with TDPBF16PS, and the OS granted tile data */
} cx_cpu_info;

/* Detected once (thread-safe); never NULL. */
const cx_cpu_info *cx_cpu(void);

#endif
