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

/* Called before the first BLIS call (the first call decides; later ones
 * only report). With fast = 0, BLIS chooses its kernels itself. With
 * fast = 1, on an Intel CPU with AVX-512 that BLIS 0.9 cannot classify (it
 * cannot count the FMA units of recent Xeons or of virtual machines, and
 * then picks its 'haswell' configuration), BLIS_ARCH_TYPE=skx is set first:
 * its conventional kernels, measured 1.3-1.45x faster on DenseNet's GEMM
 * shapes on a 2-core Xeon VM, whose fp32 sums are plain sequential FMAs
 * (rel. error per GEMM about 3e-7 there, against 1.3e-7 for the default,
 * whose skinny-matrix kernels sum in several partial sums). A BLIS_ARCH_TYPE
 * set by the user is kept. Returns 1 when the fast kernels were selected. */
int cx_blis_configure(int fast);

#endif
