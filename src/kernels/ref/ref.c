/* Reference kernels: plain C loops, double accumulation, no threads, no BLAS.
 * They define what every op computes; faster backends are tested against
 * them. Layouts: see kernels/backend.h (activations CNHW). */
#include "kernels/backend.h"

#include <float.h>
#include <math.h>

static void ref_bn_relu(const float *x, float *y, int C, int64_t P, const float *scale,
                        const float *shift)
{
    for (int c = 0; c < C; c++)
        for (int64_t p = 0; p < P; p++) {
            float v = x[c * P + p] * scale[c] + shift[c];
            y[c * P + p] = v > 0.0f ? v : 0.0f;
        }
}

static size_t ref_conv_scratch(int Cin, int N, int H, int W, int Cout, int k, int s, int pad)
{
    return 0;
}

static void ref_conv2d(const float *x, int Cin, int N, int H, int W, const float *w, int Cout,
                       int k, int s, int pad, float *y, float *scratch, size_t scratch_n)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    int64_t Pi = (int64_t)N * H * W, Po = (int64_t)N * Ho * Wo;
    for (int co = 0; co < Cout; co++)
        for (int n = 0; n < N; n++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double acc = 0.0;
                    for (int ci = 0; ci < Cin; ci++)
                        for (int ky = 0; ky < k; ky++) {
                            int iy = oy * s - pad + ky;
                            if (iy < 0 || iy >= H)
                                continue;
                            for (int kx = 0; kx < k; kx++) {
                                int ix = ox * s - pad + kx;
                                if (ix < 0 || ix >= W)
                                    continue;
                                acc += (double)x[ci * Pi + (int64_t)n * H * W + iy * W + ix] *
                                       w[(((int64_t)co * Cin + ci) * k + ky) * k + kx];
                            }
                        }
                    y[co * Po + (int64_t)n * Ho * Wo + oy * Wo + ox] = (float)acc;
                }
}

static void ref_maxpool(const float *x, int C, int N, int H, int W, int k, int s, int pad,
                        float *y)
{
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) {
            const float *xp = x + ((int64_t)c * N + n) * H * W;
            float *yp = y + ((int64_t)c * N + n) * Ho * Wo;
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    float m = -INFINITY;
                    for (int ky = 0; ky < k; ky++) {
                        int iy = oy * s - pad + ky;
                        if (iy < 0 || iy >= H)
                            continue;
                        for (int kx = 0; kx < k; kx++) {
                            int ix = ox * s - pad + kx;
                            if (ix < 0 || ix >= W)
                                continue;
                            float v = xp[iy * W + ix];
                            if (v > m || isnan(v))
                                m = v;
                        }
                    }
                    yp[oy * Wo + ox] = m;
                }
        }
}

static void ref_avgpool(const float *x, int C, int N, int H, int W, int k, float *y)
{
    int Ho = H / k, Wo = W / k;
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) {
            const float *xp = x + ((int64_t)c * N + n) * H * W;
            float *yp = y + ((int64_t)c * N + n) * Ho * Wo;
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double acc = 0.0;
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++)
                            acc += xp[(oy * k + ky) * W + ox * k + kx];
                    yp[oy * Wo + ox] = (float)(acc / (k * k));
                }
        }
}

static void ref_gap(const float *x, int C, int N, int HW, float *y)
{
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) {
            double acc = 0.0;
            const float *xp = x + ((int64_t)c * N + n) * HW;
            for (int i = 0; i < HW; i++)
                acc += xp[i];
            y[(int64_t)n * C + c] = (float)(acc / HW);
        }
}

static void ref_linear(const float *x, int N, int F, const float *w, const float *b, int M,
                       float *y)
{
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++) {
            double acc = b ? b[m] : 0.0;
            for (int f = 0; f < F; f++)
                acc += (double)x[(int64_t)n * F + f] * w[(int64_t)m * F + f];
            y[(int64_t)n * M + m] = (float)acc;
        }
}

static const cx_ops REF_OPS = {
    .name = "ref",
    .bn_relu = ref_bn_relu,
    .conv2d = ref_conv2d,
    .conv_scratch = ref_conv_scratch,
    .maxpool = ref_maxpool,
    .avgpool = ref_avgpool,
    .gap = ref_gap,
    .linear = ref_linear,
};

const cx_ops *cx_ops_ref(void) { return &REF_OPS; }
