/* Training augmentation (see cx_augment in chexnet.h): the draws, a
 * function of (seed, epoch, dataset index) with one stream per operation,
 * and their application to an image. The loader (loader.c) cuts the crop
 * box out of the decoded rows as they arrive (cx_image_load_box_resized)
 * and finishes with cx_aug_finish, the same code as cx_augment_apply. */
#include "data/data_internal.h"
#include "data/augment.h"
#include "util/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One stream per operation: the keys are mixed into the seed. */
#define KEY_CROP 0x43524F50ULL
#define KEY_ROTATE 0x524F5441ULL
#define KEY_BRIGHT 0x42524954ULL
#define KEY_CONTRAST 0x434F4E54ULL
#define KEY_GAMMA 0x47414D4DULL

static void stream(cx_rng *r, const cx_loader_opts *o, uint64_t key, int epoch, int image)
{
    cx_rng_seed(r, cx_data_hash(o->seed ^ key, (uint64_t)(uint32_t)epoch,
                                (uint64_t)(uint32_t)image));
}

static double uniform(cx_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * cx_rng_uniform(r);
}

int cx_augment_active(const cx_augment *a)
{
    return a && (a->crop_scale[1] > 0 || a->rotate > 0 || a->brightness > 0 ||
                 a->contrast > 0 || a->gamma > 0);
}

static int finite_in(double v, double lo, double hi) { return isfinite(v) && v >= lo && v <= hi; }

cx_status cx_augment_check(const cx_augment *a, cx_err *err)
{
    if (!a)
        return CX_OK;
    const double *s = a->crop_scale, *r = a->crop_ratio;
    int crop = !(s[0] == 0 && s[1] == 0);
    if (crop && !(finite_in(s[0], 0, 1) && finite_in(s[1], 0, 1) && s[0] > 0 && s[0] <= s[1]))
        return cx_seterr(err, CX_EARG,
                         "crop scale %g,%g: wants two area fractions 0 < lo <= hi <= 1", s[0],
                         s[1]);
    if (!(r[0] == 0 && r[1] == 0)) {
        if (!crop)
            return cx_seterr(err, CX_EARG, "a crop aspect ratio needs a crop scale");
        if (!(isfinite(r[0]) && isfinite(r[1]) && r[0] > 0 && r[0] <= r[1]))
            return cx_seterr(err, CX_EARG,
                             "crop ratio %g,%g: wants two aspect ratios (width / height) "
                             "0 < lo <= hi",
                             r[0], r[1]);
    }
    if (!finite_in(a->rotate, 0, 180))
        return cx_seterr(err, CX_EARG, "rotation %g: wants degrees in 0..180", a->rotate);
    if (!finite_in(a->brightness, 0, 1e6))
        return cx_seterr(err, CX_EARG, "brightness %g: wants a number >= 0", a->brightness);
    if (!finite_in(a->contrast, 0, 1e6))
        return cx_seterr(err, CX_EARG, "contrast %g: wants a number >= 0", a->contrast);
    if (!(finite_in(a->gamma, 0, 1) && a->gamma < 1))
        return cx_seterr(err, CX_EARG, "gamma %g: wants a number >= 0 and < 1 (gamma in "
                         "[1 - g, 1 + g] must stay positive)", a->gamma);
    return CX_OK;
}

/* torchvision RandomResizedCrop.get_params on a width x height image. */
static void draw_box(cx_rng *r, const cx_augment *a, int W, int H, int box[4])
{
    double lo_r = a->crop_ratio[0] > 0 ? a->crop_ratio[0] : 3.0 / 4.0;
    double hi_r = a->crop_ratio[1] > 0 ? a->crop_ratio[1] : 4.0 / 3.0;
    double area = (double)W * H, l0 = log(lo_r), l1 = log(hi_r);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * uniform(r, a->crop_scale[0], a->crop_scale[1]);
        double aspect = exp(uniform(r, l0, l1));
        /* Python's round(): half to even, as nearbyint in the default mode */
        int w = (int)nearbyint(sqrt(target * aspect));
        int h = (int)nearbyint(sqrt(target / aspect));
        if (w > 0 && w <= W && h > 0 && h <= H) {
            int y = (int)cx_rng_below(r, (uint64_t)(H - h + 1));
            int x = (int)cx_rng_below(r, (uint64_t)(W - w + 1));
            box[0] = x, box[1] = y, box[2] = w, box[3] = h;
            return;
        }
    }
    /* the centre box of the nearest allowed aspect ratio */
    double in_ratio = (double)W / H;
    int w = W, h = H;
    if (in_ratio < lo_r)
        h = (int)nearbyint(w / lo_r);
    else if (in_ratio > hi_r)
        w = (int)nearbyint(h * hi_r);
    if (h < 1)
        h = 1;
    if (w < 1)
        w = 1;
    box[0] = (W - w) / 2, box[1] = (H - h) / 2, box[2] = w, box[3] = h;
}

void cx_augment_draw(const cx_loader_opts *o, int epoch, int image, int width, int height,
                     cx_augment_params *p)
{
    memset(p, 0, sizeof *p);
    p->brightness = p->contrast = p->gamma = 1.0;
    p->flip = cx_loader_flips(o, epoch, image);
    const cx_augment *a = &o->aug;
    cx_rng r;
    if (a->crop_scale[1] > 0 && width > 0 && height > 0) {
        int box[4];
        stream(&r, o, KEY_CROP, epoch, image);
        draw_box(&r, a, width, height, box);
        p->crop = 1;
        p->crop_x = box[0], p->crop_y = box[1], p->crop_w = box[2], p->crop_h = box[3];
    }
    if (a->rotate > 0) {
        stream(&r, o, KEY_ROTATE, epoch, image);
        p->angle = uniform(&r, -a->rotate, a->rotate);
    }
    if (a->brightness > 0) {
        stream(&r, o, KEY_BRIGHT, epoch, image);
        p->brightness = uniform(&r, fmax(0.0, 1.0 - a->brightness), 1.0 + a->brightness);
    }
    if (a->contrast > 0) {
        stream(&r, o, KEY_CONTRAST, epoch, image);
        p->contrast = uniform(&r, fmax(0.0, 1.0 - a->contrast), 1.0 + a->contrast);
    }
    if (a->gamma > 0) {
        stream(&r, o, KEY_GAMMA, epoch, image);
        p->gamma = uniform(&r, 1.0 - a->gamma, 1.0 + a->gamma);
    }
}

/* Rotation of C planes of S x S about their centre as torchvision's rotate
 * on a float tensor: output pixel (i, j) reads the source at
 *   x = cos(t) (j - c) - sin(t) (i - c) + c,  y = sin(t) (j - c) + cos(t) (i - c) + c,
 * c = (S - 1) / 2, bilinear, neighbours outside the image counting 0. */
static void rotate_planes(const float *src, float *dst, int C, int S, double cs, double sn)
{
    const double c = (S - 1) * 0.5;
    const size_t np = (size_t)S * S;
    for (int i = 0; i < S; i++) {
        const double yi = i - c, bx = c - sn * yi, by = c + cs * yi;
        for (int j = 0; j < S; j++) {
            const double xj = j - c, x = cs * xj + bx, y = sn * xj + by;
            const size_t o = (size_t)i * S + j;
            /* |x|, |y| < 2 S: the conversions are exact floors */
            int x0 = (int)x, y0 = (int)y;
            x0 -= x < x0;
            y0 -= y < y0;
            if (x0 < -1 || x0 >= S || y0 < -1 || y0 >= S) {
                for (int k = 0; k < C; k++)
                    dst[k * np + o] = 0.0f;
                continue;
            }
            const float ax = (float)(x - x0), ay = (float)(y - y0);
            const float w00 = (1 - ax) * (1 - ay), w01 = ax * (1 - ay), w10 = (1 - ax) * ay,
                        w11 = ax * ay;
            if (x0 >= 0 && x0 + 1 < S && y0 >= 0 && y0 + 1 < S) {
                const size_t s0 = (size_t)y0 * S + x0;
                for (int k = 0; k < C; k++) {
                    const float *q = src + k * np + s0;
                    dst[k * np + o] = w00 * q[0] + w01 * q[1] + w10 * q[S] + w11 * q[S + 1];
                }
                continue;
            }
            const int inx0 = x0 >= 0, inx1 = x0 + 1 < S, iny0 = y0 >= 0, iny1 = y0 + 1 < S;
            for (int k = 0; k < C; k++) {
                const float *pl = src + k * np;
                float p00 = 0, p01 = 0, p10 = 0, p11 = 0;
                if (iny0) {
                    const float *row = pl + (size_t)y0 * S;
                    if (inx0) p00 = row[x0];
                    if (inx1) p01 = row[x0 + 1];
                }
                if (iny1) {
                    const float *row = pl + (size_t)(y0 + 1) * S;
                    if (inx0) p10 = row[x0];
                    if (inx1) p11 = row[x0 + 1];
                }
                dst[k * np + o] = w00 * p00 + w01 * p01 + w10 * p10 + w11 * p11;
            }
        }
    }
}

static inline float clamp01(float v) { return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; }

/* The 8-bit value of output channel c of pixel i, as cx_image_to_tensor
 * reads it (1 -> 3 channels replicates, 3 -> 1 takes the luma). */
static inline uint8_t pixel(const cx_image *im, int C, int c, size_t i)
{
    const uint8_t *p = im->data;
    if (im->channels == C)
        return p[i * C + c];
    if (im->channels == 1)
        return p[i];
    const uint8_t *q = p + 3 * i;
    return (uint8_t)((q[0] * 19595u + q[1] * 38470u + q[2] * 7471u + 0x8000u) >> 16);
}

/* Before the rotation every step acts on each pixel value alone (the
 * contrast's mean is the image's, taken first), so brightness, contrast,
 * gamma (and Normalize, without a rotation) are one table of the 256 8-bit
 * values per channel: the same float operations as element by element, at
 * the cost of a lookup. */
cx_status cx_aug_finish(const cx_image *sized, const cx_augment_params *p, int C,
                        const float mean[3], const float std[3], float *dst, cx_err *err)
{
    const int S = sized->width;
    const size_t np = (size_t)S * S;
    float lut[3][256];
    for (int v = 0; v < 256; v++) { /* v / 255 as ToTensor, then brightness */
        float x = (float)v / 255.0f;
        if (p->brightness != 1.0)
            x = clamp01((float)p->brightness * x);
        lut[0][v] = lut[1][v] = lut[2][v] = x;
    }
    if (p->contrast != 1.0) {
        /* m: the mean grey level (torchvision: 0.2989 R + 0.587 G + 0.114 B) */
        double sum = 0;
        const float *b = lut[0];
        for (size_t i = 0; i < np; i++)
            sum += C == 3 ? 0.2989f * b[pixel(sized, C, 0, i)] + 0.587f * b[pixel(sized, C, 1, i)] +
                                0.114f * b[pixel(sized, C, 2, i)]
                          : b[pixel(sized, C, 0, i)];
        const float m = (float)(sum / (double)np);
        const float f = (float)p->contrast, g = (float)(1.0 - p->contrast);
        for (int v = 0; v < 256; v++)
            lut[0][v] = lut[1][v] = lut[2][v] = clamp01(f * lut[0][v] + g * m);
    }
    if (p->gamma != 1.0) {
        const float g = (float)p->gamma;
        for (int v = 0; v < 256; v++)
            lut[0][v] = lut[1][v] = lut[2][v] = clamp01(powf(lut[0][v], g));
    }
    const int rotate = p->angle != 0.0;
    if (!rotate) /* Normalize folded into the tables */
        for (int c = 0; c < C; c++)
            for (int v = 0; v < 256; v++)
                lut[c][v] = (lut[c][v] - mean[c]) / std[c];
    float *vals = dst, *tmp = NULL;
    if (rotate) {
        if (!(tmp = malloc((size_t)C * np * sizeof *tmp)))
            return cx_seterr(err, CX_ENOMEM, "out of memory (rotation)");
        vals = tmp;
    }
    for (int c = 0; c < C; c++) {
        float *d = vals + c * np;
        for (int y = 0; y < S; y++) {
            float *row = d + (size_t)y * S;
            size_t i0 = (size_t)y * S;
            if (p->flip)
                for (int x = 0; x < S; x++)
                    row[x] = lut[c][pixel(sized, C, c, i0 + (S - 1 - x))];
            else
                for (int x = 0; x < S; x++)
                    row[x] = lut[c][pixel(sized, C, c, i0 + x)];
        }
    }
    if (rotate) {
        double t = p->angle * (M_PI / 180.0);
        rotate_planes(tmp, dst, C, S, cos(t), sin(t));
        free(tmp);
        for (int c = 0; c < C; c++) {
            const float m = mean[c], s = std[c];
            float *d = dst + c * np;
            for (size_t i = 0; i < np; i++)
                d[i] = (d[i] - m) / s;
        }
    }
    return CX_OK;
}

static cx_status check_params(const cx_augment_params *p, cx_err *err)
{
    if (!isfinite(p->angle) || !(p->brightness >= 0) || !isfinite(p->brightness) ||
        !(p->contrast >= 0) || !isfinite(p->contrast) || !(p->gamma > 0) || !isfinite(p->gamma))
        return cx_seterr(err, CX_EARG,
                         "cx_augment_apply: angle %g, brightness %g, contrast %g, gamma %g: "
                         "want finite values, factors >= 0, gamma > 0",
                         p->angle, p->brightness, p->contrast, p->gamma);
    return CX_OK;
}

cx_status cx_augment_apply(const cx_image *src, const cx_augment_params *p,
                           const cx_input_spec *in, float *dst, cx_err *err)
{
    if (!src || !src->data || !p || !in || !dst)
        return cx_seterr(err, CX_EARG, "cx_augment_apply: invalid arguments");
    if (in->size <= 0 || in->size > CX_IMAGE_MAX_SIDE || (in->channels != 1 && in->channels != 3))
        return cx_seterr(err, CX_EARG, "cx_augment_apply: invalid input size or channels");
    cx_status st = check_params(p, err);
    if (st)
        return st;
    cx_image box = {0}, sized = {0};
    const cx_image *from = src;
    if (p->crop) {
        if ((st = cx_image_crop(src, p->crop_x, p->crop_y, p->crop_w, p->crop_h, &box, err)))
            return st;
        from = &box;
    }
    st = cx_image_resize(from, in->size, in->size, &sized, err);
    cx_image_free(&box);
    if (st)
        return st;
    st = cx_aug_finish(&sized, p, in->channels, in->mean, in->std, dst, err);
    cx_image_free(&sized);
    return st;
}

/* The shortest decimal that reads back as v. */
static void num(char *buf, size_t n, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            return;
    }
}

size_t cx_augment_describe(const cx_loader_opts *o, char *buf, size_t n)
{
    const cx_augment *a = &o->aug;
    char s0[32], s1[32], r0[32], r1[32], rot[32], b[32], c[32], g[32];
    num(rot, sizeof rot, a->rotate);
    num(b, sizeof b, a->brightness);
    num(c, sizeof c, a->contrast);
    num(g, sizeof g, a->gamma);
    char crop[192] = "\"crop_scale\": null, \"crop_ratio\": null";
    if (a->crop_scale[1] > 0) {
        num(s0, sizeof s0, a->crop_scale[0]);
        num(s1, sizeof s1, a->crop_scale[1]);
        num(r0, sizeof r0, a->crop_ratio[0] > 0 ? a->crop_ratio[0] : 3.0 / 4.0);
        num(r1, sizeof r1, a->crop_ratio[1] > 0 ? a->crop_ratio[1] : 4.0 / 3.0);
        snprintf(crop, sizeof crop, "\"crop_scale\": [%s, %s], \"crop_ratio\": [%s, %s]", s0,
                 s1, r0, r1);
    }
    int k = snprintf(buf, n,
                     "{\"flip\": %s, %s, \"rotate\": %s, \"brightness\": %s, \"contrast\": %s, "
                     "\"gamma\": %s}",
                     o->augment ? "true" : "false", crop, rot, b, c, g);
    return k < 0 ? 0 : (size_t)k;
}
