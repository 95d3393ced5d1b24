/* Reference fused ops: a pointwise convolution of a BatchNorm + ReLU and its
 * backward (also in the deferred form), as plain loops that compute max(0, x * scale + shift) where it
 * is read (nothing stored). */
#include "kernels/backend.h"
#include "kernels/ref/ref_fused.h"

#include <string.h>

static float bnr(const float *x, int64_t P, const float *scale, const float *shift, int ci,
                 int64_t p)
{
    float v = x[(int64_t)ci * P + p] * scale[ci] + shift[ci];
    return v > 0.0f ? v : 0.0f;
}

void ref_conv1x1_bn_relu(const float *x, int Cin, int64_t P, const float *scale,
                         const float *shift, const float *w, int Cout, float *y, float *scratch)
{
    (void)scratch;
    for (int co = 0; co < Cout; co++) {
        float *yr = y + (int64_t)co * P;
        memset(yr, 0, sizeof(float) * (size_t)P);
        for (int ci = 0; ci < Cin; ci++) {
            float a = w[(int64_t)co * Cin + ci];
            for (int64_t p = 0; p < P; p++)
                yr[p] += a * bnr(x, P, scale, shift, ci, p);
        }
    }
}

void ref_conv1x1_bn_relu_backward(const float *x, int Cin, int64_t P, const float *scale,
                                  const float *shift, const float *w, int Cout, const float *dy,
                                  float *dw, float *da, int accumulate, float *scratch)
{
    (void)scratch;
    for (int co = 0; co < Cout; co++)
        for (int ci = 0; ci < Cin; ci++) {
            float acc = 0.0f;
            for (int64_t p = 0; p < P; p++)
                acc += dy[(int64_t)co * P + p] * bnr(x, P, scale, shift, ci, p);
            dw[(int64_t)co * Cin + ci] += acc;
        }
    if (!da)
        return;
    for (int ci = 0; ci < Cin; ci++) {
        float *d = da + (int64_t)ci * P;
        if (!accumulate)
            memset(d, 0, sizeof(float) * (size_t)P);
        for (int co = 0; co < Cout; co++) {
            float a = w[(int64_t)co * Cin + ci];
            const float *g = dy + (int64_t)co * P;
            for (int64_t p = 0; p < P; p++)
                d[p] += a * g[p];
        }
    }
}

void ref_conv1x1_bn_relu_backward_deferred(const float *x, int Cin, int64_t P,
                                           const float *scale, const float *shift,
                                           const float *mean, const float *invstd,
                                           const float *w, int Cout, const float *dy, float *dw,
                                           float *dgamma, float *dbeta, float *dx,
                                           float *scratch)
{
    ref_conv1x1_bn_relu_backward(x, Cin, P, scale, shift, w, Cout, dy, dw, NULL, 0, scratch);
    for (int ci = 0; ci < Cin; ci++) {
        double sd = 0.0, sdh = 0.0;
        for (int64_t p = 0; p < P; p++) {
            float g = 0.0f; /* (w^T dy)[ci][p] */
            for (int co = 0; co < Cout; co++)
                g += w[(int64_t)co * Cin + ci] * dy[(int64_t)co * P + p];
            float xv = x[(int64_t)ci * P + p];
            float d = xv * scale[ci] + shift[ci] > 0.0f ? g : 0.0f;
            sd += d;
            sdh += (double)d * ((xv - mean[ci]) * invstd[ci]);
            dx[(int64_t)ci * P + p] += scale[ci] * d;
        }
        dbeta[ci] += (float)sd;
        dgamma[ci] += (float)sdh;
    }
}

void ref_bn_backward_finish(const float *x, int C, int64_t P, const float *mean,
                            const float *invstd, const float *a, const float *b, float *dx)
{
    for (int c = 0; c < C; c++)
        for (int64_t p = 0; p < P; p++) {
            int64_t i = (int64_t)c * P + p;
            dx[i] += a[c] + b[c] * ((x[i] - mean[c]) * invstd[c]);
        }
}
