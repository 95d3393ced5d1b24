/* The packed bf16 layouts of the ref and cpu backends (model code never
 * sees them: it asks its backend for sizes and packing, kernels/backend.h).
 * bf16 is the top half of an fp32. A packed activation matrix of K channels
 * by P = N*H*W positions stores channel pairs side by side:
 *     element (k, p) at (k/2) * 2*Pp + 2*p + (k & 1),
 * with K padded to Kp = cx_bf16_kpad(K) and P to Pp = cx_bf16_ppad(P), the
 * padding zero; this is the pair layout VDPBF16PS and AMX's TDPBF16PS read.
 * Pp leaves 32 spare columns so kernels may read whole 32-column blocks from
 * any column of a row.
 * Packed convolution weights: the matrix Wr[q*Cout + co][ci] = w[co][ci][q]
 * (q = ky*k + kx) of M = k*k*Cout rows, row-major bf16 with rows padded to
 * Mp = cx_bf16_mpad(M) and columns to Kp = cx_bf16_kpad(Cin), padding zero. */
#ifndef CX_BF16_LAYOUT_H
#define CX_BF16_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

static inline int64_t cx_bf16_kpad(int64_t K) { return (K + 31) & ~(int64_t)31; }
static inline int64_t cx_bf16_ppad(int64_t P) { return ((P + 31) & ~(int64_t)31) + 32; }
/* 32 spare rows: kernels may read whole 32-row blocks from any row. */
static inline int64_t cx_bf16_mpad(int64_t M) { return ((M + 31) & ~(int64_t)31) + 32; }

/* The grid layout: the input of a "same" convolution of odd kernel k (pad
 * p = (k-1)/2) over N images of H x W, zero-padded so that every tap is a
 * column shift: channel pairs as above, with element (c, n, y, x) at column
 *     G + (n*Hq + y + p) * Wq + x + p,   Hq = H + 2p, Wq = W + 2p,
 * of pair rows Qp columns long; G = p*Wq + p guard columns lead, and Qp
 * leaves G + 32 after the Q = N*Hq*Wq grid columns. Everything outside the
 * images is zero. */
typedef struct {
    int Hq, Wq;
    int64_t Q, G, Qp;
} cx_bf16_grid;
static inline cx_bf16_grid cx_bf16_grid_of(int N, int H, int W, int k)
{
    int p = (k - 1) / 2;
    cx_bf16_grid g;
    g.Hq = H + 2 * p;
    g.Wq = W + 2 * p;
    g.Q = (int64_t)N * g.Hq * g.Wq;
    g.G = (int64_t)p * g.Wq + p;
    g.Qp = (2 * g.G + g.Q + 32 + 31) & ~(int64_t)31;
    return g;
}

/* Elements (uint16) of each packed buffer: activations K x P, the grid of a
 * k x k convolution, and a convolution's weights (k*k*Cout rows of Cin). */
static inline size_t cx_bf16_act_elems(int K, int64_t P)
{
    return (size_t)(cx_bf16_kpad(K) * cx_bf16_ppad(P));
}
static inline size_t cx_bf16_grid_elems(int K, int N, int H, int W, int k)
{
    return (size_t)(cx_bf16_kpad(K) * cx_bf16_grid_of(N, H, W, k).Qp);
}
static inline size_t cx_bf16_weights_elems(int Cout, int Cin, int k)
{
    return (size_t)cx_bf16_mpad((int64_t)k * k * Cout) * (size_t)cx_bf16_kpad(Cin);
}

/* Round to nearest even; NaN stays NaN (quiet). */
static inline uint16_t cx_f32_to_bf16(float f)
{
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((v.u >> 16) | 0x40u);
    v.u += 0x7fffu + ((v.u >> 16) & 1u);
    return (uint16_t)(v.u >> 16);
}
static inline float cx_bf16_to_f32(uint16_t h)
{
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

/* Packs conv weights w [Cout][Cin][k][k] fp32 into the layout above; out has
 * cx_bf16_mpad(k*k*Cout) * cx_bf16_kpad(Cin) elements. */
void cx_bf16_pack_conv_weights(const float *w, int Cout, int Cin, int k, uint16_t *out);

#endif
