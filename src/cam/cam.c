/* cam.c - class activation maps, upsampling, colour map and overlays.
 *
 * The colour map is computed here (no table copied from elsewhere): CIELAB
 * lightness rises linearly with t (12 -> 96), so equal steps of the map look
 * like equal steps of intensity, while the hue turns from purple (300 deg)
 * through red and orange to yellow (100 deg) and the chroma peaks in the
 * middle. Colours outside sRGB keep their lightness and hue and lose chroma
 * (bisection) until they fit.
 */
#include "chexnet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

cx_status cx_cam_compute(const cx_ctx *c, const cx_model *m, int i, int cls, float *dst,
                         int *h, int *w, cx_err *err)
{
    if (!c || !m)
        return cx_seterr(err, CX_EARG, "cx_cam_compute: context and model are required");
    int C = 0, hh = 0, ww = 0;
    cx_status st = cx_ctx_features(c, i, NULL, &C, &hh, &ww, err);
    if (st)
        return st;
    if (h)
        *h = hh;
    if (w)
        *w = ww;
    if (!dst)
        return CX_OK;
    int nc = cx_model_num_classes(m);
    if (cls < 0 || cls >= nc)
        return cx_seterr(err, CX_EARG, "cx_cam_compute: class %d out of range (0..%d)", cls,
                         nc - 1);
    if (C != cx_config_num_features(cx_model_config(m)))
        return cx_seterr(err, CX_ESHAPE,
                         "cx_cam_compute: %d feature maps but the classifier expects %d "
                         "(context made for another model?)",
                         C, cx_config_num_features(cx_model_config(m)));
    size_t hw = (size_t)hh * ww;
    float *f = malloc(sizeof(float) * (size_t)C * hw);
    double *acc = calloc(hw, sizeof(double));
    if (!f || !acc) {
        free(f);
        free(acc);
        return cx_seterr(err, CX_ENOMEM, "cx_cam_compute: out of memory");
    }
    st = cx_ctx_features(c, i, f, NULL, NULL, NULL, err);
    if (!st) {
        const float *wc = cx_model_classifier_weight(m) + (size_t)cls * C;
        for (int k = 0; k < C; k++) {
            const float *fk = f + (size_t)k * hw;
            double wk = wc[k];
            for (size_t p = 0; p < hw; p++)
                acc[p] += wk * fk[p];
        }
        for (size_t p = 0; p < hw; p++)
            dst[p] = (float)acc[p];
    }
    free(f);
    free(acc);
    return st;
}

cx_status cx_cam_upsample(const float *cam, int h, int w, int H, int W, float *dst,
                          cx_err *err)
{
    if (!cam || !dst || h <= 0 || w <= 0 || H <= 0 || W <= 0)
        return cx_seterr(err, CX_EARG, "cx_cam_upsample: invalid arguments");
    for (int i = 0; i < h * w; i++)
        if (!isfinite(cam[i]))
            return cx_seterr(err, CX_ENUMERIC, "cx_cam_upsample: non-finite map value");
    int *x0 = malloc(sizeof(int) * W), *x1 = malloc(sizeof(int) * W);
    float *lx = malloc(sizeof(float) * W);
    if (!x0 || !x1 || !lx) {
        free(x0);
        free(x1);
        free(lx);
        return cx_seterr(err, CX_ENOMEM, "cx_cam_upsample: out of memory");
    }
    const double sx = (double)w / W, sy = (double)h / H;
    for (int x = 0; x < W; x++) {
        double s = (x + 0.5) * sx - 0.5;
        if (s < 0)
            s = 0;
        int a = (int)s;
        if (a > w - 1)
            a = w - 1;
        x0[x] = a;
        x1[x] = a < w - 1 ? a + 1 : a;
        lx[x] = (float)(s - a);
    }
    float lo = INFINITY, hi = -INFINITY;
    for (int y = 0; y < H; y++) {
        double s = (y + 0.5) * sy - 0.5;
        if (s < 0)
            s = 0;
        int a = (int)s;
        if (a > h - 1)
            a = h - 1;
        int b = a < h - 1 ? a + 1 : a;
        float ly = (float)(s - a);
        const float *r0 = cam + (size_t)a * w, *r1 = cam + (size_t)b * w;
        float *d = dst + (size_t)y * W;
        for (int x = 0; x < W; x++) {
            float t0 = r0[x0[x]] + lx[x] * (r0[x1[x]] - r0[x0[x]]);
            float t1 = r1[x0[x]] + lx[x] * (r1[x1[x]] - r1[x0[x]]);
            float v = t0 + ly * (t1 - t0);
            d[x] = v;
            if (v < lo)
                lo = v;
            if (v > hi)
                hi = v;
        }
    }
    free(x0);
    free(x1);
    free(lx);
    size_t n = (size_t)H * W;
    float range = hi - lo;
    if (!(range > 0) || !isfinite(range)) {
        memset(dst, 0, sizeof(float) * n);
        return CX_OK;
    }
    float inv = 1.0f / range;
    for (size_t i = 0; i < n; i++) {
        float v = (dst[i] - lo) * inv;
        dst[i] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
    return CX_OK;
}

/* ---------------------------------------------------------- colour map */

static double lab_finv(double t)
{
    const double d = 6.0 / 29.0;
    return t > d ? t * t * t : 3 * d * d * (t - 4.0 / 29.0);
}

static double srgb_gamma(double v)
{
    return v <= 0.0031308 ? 12.92 * v : 1.055 * pow(v, 1 / 2.4) - 0.055;
}

/* CIE LCh(ab), D65 -> linear sRGB; returns 1 when inside the gamut. */
static int lch_to_rgb(double L, double C, double hdeg, double rgb[3])
{
    double hr = hdeg * M_PI / 180.0;
    double a = C * cos(hr), b = C * sin(hr);
    double fy = (L + 16) / 116, fx = fy + a / 500, fz = fy - b / 200;
    double X = 0.95047 * lab_finv(fx), Y = lab_finv(fy), Z = 1.08883 * lab_finv(fz);
    rgb[0] = 3.2404542 * X - 1.5371385 * Y - 0.4985314 * Z;
    rgb[1] = -0.9692660 * X + 1.8760108 * Y + 0.0415560 * Z;
    rgb[2] = 0.0556434 * X - 0.2040259 * Y + 1.0572252 * Z;
    const double eps = 1e-9;
    return rgb[0] >= -eps && rgb[0] <= 1 + eps && rgb[1] >= -eps && rgb[1] <= 1 + eps &&
           rgb[2] >= -eps && rgb[2] <= 1 + eps;
}

void cx_cam_colormap(float t, uint8_t out[3])
{
    double u = isfinite(t) ? t : 0.0;
    u = u < 0 ? 0 : u > 1 ? 1 : u;
    double L = 12.0 + 84.0 * u;
    double hue = 300.0 + 160.0 * u; /* 300 (purple) .. 460 = 100 (yellow) */
    double C = 35.0 + 55.0 * sin(M_PI * u) - 10.0 * u;
    double rgb[3];
    if (!lch_to_rgb(L, C, hue, rgb)) {
        double lo = 0, hi = C;
        for (int it = 0; it < 40; it++) {
            double mid = 0.5 * (lo + hi);
            if (lch_to_rgb(L, mid, hue, rgb))
                lo = mid;
            else
                hi = mid;
        }
        lch_to_rgb(L, lo, hue, rgb);
    }
    for (int c = 0; c < 3; c++) {
        double v = rgb[c] < 0 ? 0 : rgb[c] > 1 ? 1 : rgb[c];
        long q = lround(srgb_gamma(v) * 255.0);
        out[c] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
    }
}

cx_status cx_cam_overlay(const cx_image *xray, const float *cam, int h, int w, float alpha,
                         cx_image *out, cx_err *err)
{
    if (!xray || !xray->data || (xray->channels != 1 && xray->channels != 3) || !out)
        return cx_seterr(err, CX_EARG, "cx_cam_overlay: invalid image");
    if (!(alpha >= 0 && alpha <= 1))
        return cx_seterr(err, CX_EARG, "cx_cam_overlay: alpha must be in [0, 1]");
    const int W = xray->width, H = xray->height;
    size_t n = (size_t)W * H;
    float *t = malloc(sizeof(float) * n);
    if (!t)
        return cx_seterr(err, CX_ENOMEM, "cx_cam_overlay: out of memory for %dx%d", W, H);
    cx_status st = cx_cam_upsample(cam, h, w, H, W, t, err);
    if (!st)
        st = cx_image_new(W, H, 3, out, err);
    if (st) {
        free(t);
        return st;
    }
    uint8_t lut[256][3];
    for (int i = 0; i < 256; i++)
        cx_cam_colormap(i / 255.0f, lut[i]);
    const int C = xray->channels;
    for (size_t p = 0; p < n; p++) {
        int q = (int)lrintf(t[p] * 255.0f);
        q = q < 0 ? 0 : q > 255 ? 255 : q;
        float a = alpha * (0.25f + 0.75f * t[p]);
        for (int c = 0; c < 3; c++) {
            float x = xray->data[p * C + (C == 3 ? c : 0)];
            float v = (1.0f - a) * x + a * lut[q][c];
            out->data[p * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
        }
    }
    free(t);
    return CX_OK;
}
