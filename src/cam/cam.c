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
#include "cam/text.h"
#include "io/json.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

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

/* Bilinear upsampling of a [h][w] map to [H][W] with half-pixel centres,
 * without normalisation; the minimum and maximum go to *lo and *hi. */
static cx_status upsample_raw(const char *fn, const float *cam, int h, int w, int H, int W,
                              float *dst, float *lo_out, float *hi_out, cx_err *err)
{
    if (!cam || !dst || h <= 0 || w <= 0 || H <= 0 || W <= 0)
        return cx_seterr(err, CX_EARG, "%s: invalid arguments", fn);
    for (int i = 0; i < h * w; i++)
        if (!isfinite(cam[i]))
            return cx_seterr(err, CX_ENUMERIC, "%s: non-finite map value", fn);
    int *x0 = malloc(sizeof(int) * W), *x1 = malloc(sizeof(int) * W);
    float *lx = malloc(sizeof(float) * W);
    if (!x0 || !x1 || !lx) {
        free(x0);
        free(x1);
        free(lx);
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory", fn);
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
    *lo_out = lo;
    *hi_out = hi;
    return CX_OK;
}

cx_status cx_cam_upsample(const float *cam, int h, int w, int H, int W, float *dst,
                          cx_err *err)
{
    float lo, hi;
    cx_status st = upsample_raw("cx_cam_upsample", cam, h, w, H, W, dst, &lo, &hi, err);
    if (st)
        return st;
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

cx_status cx_cam_upsample_raw(const float *cam, int h, int w, int H, int W, float *dst,
                              float *min, float *max, cx_err *err)
{
    float lo, hi;
    cx_status st = upsample_raw("cx_cam_upsample_raw", cam, h, w, H, W, dst, &lo, &hi, err);
    if (st)
        return st;
    if (min)
        *min = lo;
    if (max)
        *max = hi;
    return CX_OK;
}

cx_status cx_cam_scale_map(const float *cam, int h, int w, int H, int W, cx_cam_scale scale,
                           float lo, float hi, float *dst, float *range_lo, float *range_hi,
                           cx_err *err)
{
    if (scale == CX_CAM_SCALE_IMAGE) {
        float a = 0, b = 0;
        cx_status st = upsample_raw("cx_cam_scale_map", cam, h, w, H, W, dst, &a, &b, err);
        if (st)
            return st;
        /* the same arithmetic as cx_cam_upsample */
        size_t n = (size_t)H * W;
        float range = b - a;
        if (!(range > 0) || !isfinite(range))
            memset(dst, 0, sizeof(float) * n);
        else {
            float inv = 1.0f / range;
            for (size_t i = 0; i < n; i++) {
                float v = (dst[i] - a) * inv;
                dst[i] = v < 0 ? 0 : v > 1 ? 1 : v;
            }
        }
        if (range_lo)
            *range_lo = a;
        if (range_hi)
            *range_hi = b;
        return CX_OK;
    }
    if (scale != CX_CAM_SCALE_MODEL)
        return cx_seterr(err, CX_EARG, "cx_cam_scale_map: unknown scale %d", (int)scale);
    if (!(isfinite(lo) && isfinite(hi) && lo < hi))
        return cx_seterr(err, CX_EARG,
                         "cx_cam_scale_map: the model scale needs finite lo < hi (got %g, %g)",
                         lo, hi);
    float a, b;
    cx_status st = upsample_raw("cx_cam_scale_map", cam, h, w, H, W, dst, &a, &b, err);
    if (st)
        return st;
    size_t n = (size_t)H * W;
    double inv = 1.0 / ((double)hi - lo);
    for (size_t i = 0; i < n; i++) {
        double v = ((double)dst[i] - lo) * inv;
        dst[i] = (float)(v < 0 ? 0 : v > 1 ? 1 : v);
    }
    if (range_lo)
        *range_lo = lo;
    if (range_hi)
        *range_hi = hi;
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

/* ------------------------------------------------------------ scales */

const char *cx_cam_scale_name(cx_cam_scale s)
{
    return s == CX_CAM_SCALE_MODEL ? "model" : s == CX_CAM_SCALE_IMAGE ? "image" : "?";
}

int cx_cam_scale_parse(const char *s, cx_cam_scale *out)
{
    if (s && !strcasecmp(s, "image"))
        *out = CX_CAM_SCALE_IMAGE;
    else if (s && !strcasecmp(s, "model"))
        *out = CX_CAM_SCALE_MODEL;
    else
        return -1;
    return 0;
}

cx_status cx_model_cam_range(const cx_model *m, const char *model_name, float *lo, float *hi,
                             int *found, cx_err *err)
{
    if (found)
        *found = 0;
    if (!m || !lo || !hi)
        return cx_seterr(err, CX_EARG, "cx_model_cam_range: model, lo and hi are required");
    const char *name = model_name ? model_name : "the model";
    const char *v = cx_model_meta(m, "cam_range");
    if (!v)
        return CX_OK;
    int nc = cx_model_num_classes(m);
    cx_json *root = NULL;
    cx_err je = {0};
    if (cx_json_parse(v, strlen(v), 8, &root, &je))
        return cx_seterr(err, CX_EFORMAT, "%s: metadata \"cam_range\" is not JSON: %s", name,
                         je.msg);
    cx_status st = CX_OK;
    if (root->type != CX_JSON_ARRAY || cx_json_count(root) != (size_t)nc) {
        st = cx_seterr(err, CX_EFORMAT,
                       "%s: metadata \"cam_range\" must be an array of %d [lo, hi] pairs "
                       "(one per class), not %s of %zu",
                       name, nc, cx_json_type_name(root->type), cx_json_count(root));
        goto out;
    }
    for (int k = 0; k < nc; k++) {
        const cx_json *p = cx_json_at(root, (size_t)k);
        double a, b;
        if (p->type != CX_JSON_ARRAY || cx_json_count(p) != 2 ||
            cx_json_double(cx_json_at(p, 0), &a) || cx_json_double(cx_json_at(p, 1), &b) ||
            !isfinite(a) || !isfinite(b) || !isfinite((float)a) || !isfinite((float)b) ||
            !((float)a < (float)b)) {
            st = cx_seterr(err, CX_EFORMAT,
                           "%s: metadata \"cam_range\" entry %d (class %s) must be a pair "
                           "[lo, hi] of finite numbers with lo < hi",
                           name, k, cx_model_class_name(m, k));
            goto out;
        }
        lo[k] = (float)a;
        hi[k] = (float)b;
    }
    if (found)
        *found = 1;
out:
    cx_json_free(root);
    return st;
}

/* ------------------------------------------------------------ overlays */

void cx_cam_style_default(cx_cam_style *s)
{
    memset(s, 0, sizeof *s);
    s->alpha = 0.5f;
    s->scale = CX_CAM_SCALE_IMAGE;
    s->probability = NAN;
    s->legend = 1;
}

typedef struct {
    const char *s;
    int n;
} text_seg;

/* Greedy word wrap of s into lines no wider than maxw (a word wider than
 * that gets a line of its own, clipped when drawn); returns the count. */
static int wrap_text(cx_text *t, const char *s, int maxw, text_seg *out, int cap)
{
    int nl = 0;
    const char *p = s;
    while (nl < cap) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *best = NULL, *q = p;
        for (;;) {
            const char *we = q;
            while (*we == ' ')
                we++;
            if (!*we)
                break; /* only spaces left */
            while (*we && *we != ' ')
                we++;
            if (best && cx_text_width(t, p, (int)(we - p)) > maxw)
                break;
            best = q = we;
            if (!*we)
                break;
        }
        out[nl].s = p;
        out[nl].n = (int)(best - p);
        nl++;
        p = best;
    }
    return nl;
}

#define LEGEND_MAX_LINES 24

typedef struct {
    text_seg title[LEGEND_MAX_LINES], caption[LEGEND_MAX_LINES], notice[LEGEND_MAX_LINES];
    int n_title, n_caption, n_notice;
    char title_s[320], caption_s[200], lo_s[32], hi_s[32];
    int f, m, lh, bar_h, band_h;
} legend_plan;

static const char NOTICE[] = "Research use only - not a medical device";

static void legend_plan_make(cx_text *t, int f, int W, const cx_cam_style *st, float lo,
                             float hi, legend_plan *L)
{
    L->f = f;
    L->m = f / 2 > 4 ? f / 2 : 4;
    L->lh = cx_text_line_height(t);
    L->bar_h = (int)lround(0.9 * f);
    int maxw = W - 2 * L->m;
    if (maxw < 1)
        maxw = 1;
    char p[64] = "";
    if (isfinite(st->probability))
        snprintf(p, sizeof p, "p = %.3g", st->probability);
    if (st->class_name && *p)
        snprintf(L->title_s, sizeof L->title_s, "%.200s   %s", st->class_name, p);
    else if (st->class_name)
        snprintf(L->title_s, sizeof L->title_s, "%.200s", st->class_name);
    else if (*p)
        snprintf(L->title_s, sizeof L->title_s, "%s", p);
    else
        snprintf(L->title_s, sizeof L->title_s, "Class activation map");
    snprintf(L->caption_s, sizeof L->caption_s, "%s",
             st->scale == CX_CAM_SCALE_MODEL
                 ? "Colour scale: the model's fixed range for this class"
                 : "Colour scale: this image's own min-max (not comparable between images)");
    snprintf(L->lo_s, sizeof L->lo_s, "%.3g", lo);
    snprintf(L->hi_s, sizeof L->hi_s, "%.3g", hi);
    L->n_title = wrap_text(t, L->title_s, maxw, L->title, LEGEND_MAX_LINES);
    L->n_caption = wrap_text(t, L->caption_s, maxw, L->caption, LEGEND_MAX_LINES);
    L->n_notice = wrap_text(t, NOTICE, maxw, L->notice, LEGEND_MAX_LINES);
    L->band_h = L->m + L->n_title * L->lh + L->m / 2 + L->bar_h + L->lh +
                L->n_caption * L->lh + L->m / 2 + L->n_notice * L->lh + L->m;
}

static void fill_rect(cx_image *im, int x0, int y0, int x1, int y1, const uint8_t rgb[3])
{
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            memcpy(im->data + ((size_t)y * im->width + x) * 3, rgb, 3);
}

static void legend_draw(cx_text *t, cx_image *im, int y0, const legend_plan *L,
                        cx_cam_legend_geom *g)
{
    static const uint8_t bg[3] = {20, 20, 20}, fg[3] = {240, 240, 240};
    const int W = im->width, asc = cx_text_ascent(t);
    fill_rect(im, 0, y0, W, y0 + L->band_h, bg);
    int y = y0 + L->m;
    for (int i = 0; i < L->n_title; i++, y += L->lh)
        cx_text_draw(t, im, L->m, y + asc, L->title[i].s, L->title[i].n, fg);
    y += L->m / 2;
    int bx0 = L->m, bx1 = W - L->m > bx0 + 2 ? W - L->m : (W > 2 ? W : bx0 + 2);
    if (bx1 > W) {
        bx0 = 0;
        bx1 = W;
    }
    int nb = bx1 - bx0;
    for (int x = bx0; x < bx1; x++) {
        uint8_t rgb[3];
        cx_cam_colormap(nb > 1 ? (float)(x - bx0) / (float)(nb - 1) : 0.0f, rgb);
        fill_rect(im, x, y, x + 1, y + L->bar_h, rgb);
    }
    g->bar_x0 = bx0;
    g->bar_x1 = bx1;
    g->bar_y0 = y;
    g->bar_y1 = y + L->bar_h;
    y += L->bar_h;
    cx_text_draw(t, im, bx0, y + asc, L->lo_s, -1, fg);
    int wh = cx_text_width(t, L->hi_s, -1);
    cx_text_draw(t, im, bx1 - wh, y + asc, L->hi_s, -1, fg);
    y += L->lh;
    for (int i = 0; i < L->n_caption; i++, y += L->lh)
        cx_text_draw(t, im, L->m, y + asc, L->caption[i].s, L->caption[i].n, fg);
    y += L->m / 2;
    for (int i = 0; i < L->n_notice; i++, y += L->lh)
        cx_text_draw(t, im, L->m, y + asc, L->notice[i].s, L->notice[i].n, fg);
}

cx_status cx_cam_overlay_ex(const cx_image *xray, const float *cam, int h, int w,
                            const cx_cam_style *style, cx_image *out,
                            cx_cam_legend_geom *geom, cx_err *err)
{
    cx_cam_legend_geom g = {0};
    if (geom)
        *geom = g;
    if (!xray || !xray->data || (xray->channels != 1 && xray->channels != 3) || !out ||
        !style)
        return cx_seterr(err, CX_EARG, "cx_cam_overlay: invalid image");
    const float alpha = style->alpha;
    if (!(alpha >= 0 && alpha <= 1))
        return cx_seterr(err, CX_EARG, "cx_cam_overlay: alpha must be in [0, 1]");
    const int W = xray->width, H = xray->height;
    size_t n = (size_t)W * H;
    float *t = malloc(sizeof(float) * n);
    if (!t)
        return cx_seterr(err, CX_ENOMEM, "cx_cam_overlay: out of memory for %dx%d", W, H);
    float rlo = 0, rhi = 0;
    cx_status st = cx_cam_scale_map(cam, h, w, H, W, style->scale, style->lo, style->hi, t,
                                    &rlo, &rhi, err);
    cx_text *font = NULL;
    legend_plan *L = NULL;
    int band = 0;
    if (!st && style->legend) {
        int f = (int)lround(0.025 * W);
        if (f < 11)
            f = 11;
        L = malloc(sizeof *L);
        if (!L)
            st = cx_seterr(err, CX_ENOMEM, "cx_cam_overlay: out of memory");
        if (!st)
            st = cx_text_open(f, &font, err);
        if (!st) {
            legend_plan_make(font, f, W, style, rlo, rhi, L);
            band = L->band_h;
            if ((long)H + band > CX_IMAGE_MAX_SIDE)
                st = cx_seterr(err, CX_ELIMIT,
                               "cx_cam_overlay: the X-ray (%d rows) and the legend (%d) are "
                               "taller than %d pixels; draw it without the legend",
                               H, band, CX_IMAGE_MAX_SIDE);
        }
    }
    if (!st)
        st = cx_image_new(W, H + band, 3, out, err);
    if (st) {
        free(t);
        free(L);
        cx_text_close(font);
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
    g.lo = rlo;
    g.hi = rhi;
    if (band) {
        g.band_y = H;
        g.band_h = band;
        g.font_px = L->f;
        legend_draw(font, out, H, L, &g);
    }
    free(L);
    cx_text_close(font);
    if (geom)
        *geom = g;
    return CX_OK;
}

cx_status cx_cam_overlay(const cx_image *xray, const float *cam, int h, int w, float alpha,
                         cx_image *out, cx_err *err)
{
    cx_cam_style s;
    cx_cam_style_default(&s);
    s.alpha = alpha;
    s.legend = 0;
    return cx_cam_overlay_ex(xray, cam, h, w, &s, out, NULL, err);
}
