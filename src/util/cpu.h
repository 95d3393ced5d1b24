/* What the CPU (and the OS) lets us use, detected once at run time. Kernels built with target
 * attributes for optional instruction sets check these flags first, so a
 * binary built on one x86-64 machine runs correctly on any other. */
#ifndef CX_UTIL_CPU_H
#define CX_UTIL_CPU_H

typedef struct {
    int avx512;      /* AVX-512 F/DQ/BW/VL usable (OS saves the zmm state) */
    int avx512_bf16; /* VDPBF16PS / VCVTNE2PS2BF16 */
    int amx_bf16;    /* AMX tiles with TDPBF16PS, and the OS granted tile data */
} cx_cpu_info;

/* Detected once (thread-safe); never NULL. */
const cx_cpu_info *cx_cpu(void);


#endif
