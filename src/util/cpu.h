/* What the CPU (and the OS) lets us use, detected once at run time, and the
 * BLIS sub-configuration chosen from it. Kernels built with target
 * attributes for optional instruction sets check these flags first, so a
 * binary built on one x86-64 machine runs correctly on any other. */
#ifndef CX_UTIL_CPU_H
#define CX_UTIL_CPU_H

typedef struct {
    int intel, amd;
    int avx512;      /* AVX-512 F/DQ/BW/VL usable (OS saves the zmm state) */
    int avx512_bf16; /* VDPBF16PS / VCVTNE2PS2BF16 */
    int amx_bf16;    /* AMX tiles with TDPBF16PS, and the OS granted tile data */
} cx_cpu_info;

/* Detected once (thread-safe); never NULL. */
const cx_cpu_info *cx_cpu(void);

/* Called before the first BLIS call: BLIS 0.9 cannot count the FMA units of
 * CPUs it does not know by model number (recent Xeons, virtual machines) and
 * then falls back to its AVX2 'haswell' kernels; on an Intel CPU with
 * AVX-512 we select its 'skx' kernels instead (measured: 1.3x on DenseNet's
 * GEMMs on a 2-core Xeon VM). A BLIS_ARCH_TYPE set by the user is kept. */
void cx_blis_configure(void);

#endif
