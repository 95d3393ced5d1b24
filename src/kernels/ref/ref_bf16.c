/* Reference bf16 inference ops: plain loops over the packed layouts of
 * kernels/bf16_layout.h. Products of two bf16 values are exact in fp32; sums are
 * fp32. The BatchNorm before packing is one fused multiply-add (fmaf), as in
 * every faster kernel, so packing is bit-identical everywhere. Faster
 * backends are tested against these. */
#include "kernels/backend.h"
#include "kernels/bf16_layout.h"
#include "kernels/ref/ref_bf16.h"

#include <math.h>
#include <string.h>

void cx_bf16_pack_conv_weights(const float *w, int Cout, int Cin, int k, uint16_t *out)
{
    int64_t kk2 = (int64_t)k * k, M = kk2 * Cout;
    int64_t Mp = cx_bf16_mpad(M), Kp = cx_bf16_kpad(Cin);
    memset(out, 0, sizeof(uint16_t) * (size_t)(Mp * Kp));
    for (int64_t q = 0; q < kk2; q++)
        for (int co = 0; co < Cout; co++)
            for (int ci = 0; ci < Cin; ci++)
                out[(q * Cout + co) * Kp + ci] = cx_f32_to_bf16(w[((int64_t)co * Cin + ci) * kk2 + q]);
}

void ref_pack_bf16(const float *x, int K, int64_t P, const float *scale, const float *shift,
                   uint16_t *out)
{
    int64_t Kp = cx_bf16_kpad(K), Pp = cx_bf16_ppad(P);
    memset(out, 0, sizeof(uint16_t) * (size_t)(Kp * Pp));
    for (int k = 0; k < K; k++)
        for (int64_t p = 0; p < P; p++) {
            float v = x[(int64_t)k * P + p];
            if (scale) {
                v = fmaf(v, scale[k], shift[k]);
                v = v > 0.0f ? v : 0.0f;
            }
            out[(int64_t)(k / 2) * 2 * Pp + 2 * p + (k & 1)] = cx_f32_to_bf16(v);
        }
}

static float packed_at(const uint16_t *x, int64_t Pp, int k, int64_t p)
{
    return cx_bf16_to_f32(x[(int64_t)(k / 2) * 2 * Pp + 2 * p + (k & 1)]);
}

void ref_conv2d_bf16(const uint16_t *x, int Cin, int N, int H, int W, const uint16_t *w,
                     int Cout, int k, float *y, float *scratch, size_t scratch_n)
{
    (void)scratch;
    (void)scratch_n;
    int64_t HW = (int64_t)H * W, P = (int64_t)N * HW, Pp = cx_bf16_ppad(P);
    int64_t Kp = cx_bf16_kpad(Cin);
    int pad = (k - 1) / 2;
    for (int co = 0; co < Cout; co++)
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < H; oy++)
                for (int ox = 0; ox < W; ox++) {
                    float acc = 0.0f;
                    for (int q = 0; q < k * k; q++) {
                        int iy = oy + q / k - pad, ix = ox + q % k - pad;
                        if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                            continue;
                        const uint16_t *wr = w + ((int64_t)q * Cout + co) * Kp;
                        int64_t p = n * HW + (int64_t)iy * W + ix;
                        for (int ci = 0; ci < Cin; ci++)
                            acc += cx_bf16_to_f32(wr[ci]) * packed_at(x, Pp, ci, p);
                    }
                    y[(int64_t)co * P + n * HW + (int64_t)oy * W + ox] = acc;
                }
}

size_t ref_conv_bf16_scratch(int Cin, int N, int H, int W, int Cout, int k)
{
    (void)Cin, (void)N, (void)H, (void)W, (void)Cout, (void)k;
    return 0;
}

void ref_pack_bf16_grid(const float *x, int K, int N, int H, int W, const float *scale,
                        const float *shift, int k, uint16_t *out)
{
    cx_bf16_grid g = cx_bf16_grid_of(N, H, W, k);
    int p = (k - 1) / 2;
    int64_t Kp = cx_bf16_kpad(K), P = (int64_t)N * H * W;
    memset(out, 0, sizeof(uint16_t) * (size_t)(Kp * g.Qp));
    for (int c = 0; c < K; c++)
        for (int n = 0; n < N; n++)
            for (int y = 0; y < H; y++)
                for (int xx = 0; xx < W; xx++) {
                    float v = x[(int64_t)c * P + ((int64_t)n * H + y) * W + xx];
                    if (scale) {
                        v = fmaf(v, scale[c], shift[c]);
                        v = v > 0.0f ? v : 0.0f;
                    }
                    int64_t col = g.G + ((int64_t)n * g.Hq + y + p) * g.Wq + xx + p;
                    out[(int64_t)(c / 2) * 2 * g.Qp + 2 * col + (c & 1)] = cx_f32_to_bf16(v);
                }
}

void ref_conv2d_grid_bf16(const uint16_t *xg, int Cin, int N, int H, int W, const uint16_t *w,
                          int Cout, int k, float *y, float *scratch, size_t scratch_n)
{
    (void)scratch;
    (void)scratch_n;
    cx_bf16_grid g = cx_bf16_grid_of(N, H, W, k);
    int p = (k - 1) / 2;
    int64_t Kp = cx_bf16_kpad(Cin), P = (int64_t)N * H * W;
    for (int co = 0; co < Cout; co++)
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < H; oy++)
                for (int ox = 0; ox < W; ox++) {
                    float acc = 0.0f;
                    for (int q = 0; q < k * k; q++) {
                        /* the padding is stored as zeros: no bounds checks */
                        int64_t col = g.G + ((int64_t)n * g.Hq + oy + q / k) * g.Wq + ox + q % k;
                        const uint16_t *wr = w + ((int64_t)q * Cout + co) * Kp;
                        for (int ci = 0; ci < Cin; ci++)
                            acc += cx_bf16_to_f32(wr[ci]) *
                                   cx_bf16_to_f32(xg[(int64_t)(ci / 2) * 2 * g.Qp + 2 * col +
                                                     (ci & 1)]);
                    }
                    (void)p;
                    y[(int64_t)co * P + ((int64_t)n * H + oy) * W + ox] = acc;
                }
}

size_t ref_conv_grid_bf16_scratch(int Cin, int N, int H, int W, int Cout, int k)
{
    (void)Cin, (void)N, (void)H, (void)W, (void)Cout, (void)k;
    return 0;
}

const char *ref_bf16_kernel(void) { return "reference"; }
