/* preprocess.c - PIL/torchvision-identical resizing, crops and tensors.
 *
 * Resize: Pillow's (>= 7) convolution resampling with the BILINEAR (triangle)
 * filter, re-implemented from its documented semantics: for each output
 * pixel the source interval is [center - support, center + support] with
 * center = (i + 0.5) * scale and support = scale (at least 1); taps are
 * triangle weights normalised to sum 1, then quantised to 22-bit fixed point
 * (round half away from zero). The horizontal pass runs over only the rows
 * the vertical pass needs, rounds to 8 bits, then the vertical pass. Sums
 * start at 1 << 21 (rounding) and are shifted right by 22, clamped to
 * 0..255. This reproduces PIL's pixels exactly.
 */
#include "chexnet.h"
#include "io/image_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PREC 22

typedef struct {
    int ksize;
    int *bounds; /* [out][2]: first tap, tap count */
    int32_t *k;  /* [out][ksize] fixed-point weights */
} coeffs;

static void coeffs_free(coeffs *c)
{
    free(c->bounds);
    free(c->k);
    c->bounds = NULL;
    c->k = NULL;
}

static int coeffs_make(int in_size, int out_size, coeffs *c)
{
    double scale = (double)in_size / out_size, fscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * fscale; /* bilinear filter support is 1 */
    int ksize = (int)ceil(support) * 2 + 1;
    c->ksize = ksize;
    c->bounds = malloc(sizeof(int) * 2 * out_size);
    c->k = malloc(sizeof(int32_t) * (size_t)ksize * out_size);
    double *w = malloc(sizeof(double) * ksize);
    if (!c->bounds || !c->k || !w) {
        free(w);
        coeffs_free(c);
        return -1;
    }
    double ss = 1.0 / fscale;
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        double sum = 0.0;
        for (int x = 0; x < xmax; x++) {
            double t = (x + xmin - center + 0.5) * ss;
            if (t < 0.0)
                t = -t;
            double v = t < 1.0 ? 1.0 - t : 0.0;
            w[x] = v;
            sum += v;
        }
        int32_t *k = c->k + (size_t)xx * ksize;
        for (int x = 0; x < ksize; x++) {
            double v = x < xmax ? (sum != 0.0 ? w[x] / sum : w[x]) : 0.0;
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PREC)) : (int32_t)(0.5 + v * (1 << PREC));
        }
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    free(w);
    return 0;
}

static inline uint8_t clip8(int32_t v)
{
    v >>= PREC;
    return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v;
}

static cx_status check_image(const cx_image *im, const char *fn, cx_err *err)
{
    if (!im || !im->data || im->width <= 0 || im->height <= 0 ||
        (im->channels != 1 && im->channels != 3))
        return cx_seterr(err, CX_EARG, "%s: invalid image", fn);
    return CX_OK;
}

/* The resize as a row sink (io/image_internal.h): source rows arrive in
 * order; the horizontal pass runs on each row the vertical pass needs as it
 * arrives, and the vertical pass runs at the end (resize_finish). Memory:
 * the output plus (rows the vertical pass reads) x (output width), so a
 * 16384-row source resized to 224 x 224 holds 16384 x 224 x C bytes, never
 * the source. cx_image_resize feeds an image in memory through the same
 * code. */
typedef struct {
    cx_row_sink base;
    int tw, th;        /* target size (short_side == 0) */
    int short_side;    /* > 0: torchvision Resize(short_side) instead */
    cx_box_fn box_fn;  /* non-NULL: resize only the box it chooses */
    void *box_user;
    int bx, by;        /* the box's corner in the decoded image */
    int track_grey;    /* note whether every RGB row has R = G = B */
    cx_image *out;
    int W, H, C;       /* source */
    int copy;          /* same size: rows go straight to out */
    int need_h, need_v;
    int y0, y1;        /* source rows the vertical pass reads */
    int rowlen;        /* pixels per row of tmp */
    coeffs ch, cv;
    uint8_t *tmp;      /* rows y0..y1-1 after the horizontal pass */
    int grey;          /* with track_grey: 1 while every row had R = G = B */
} resize_sink;

static void resize_release(resize_sink *r)
{
    free(r->tmp);
    r->tmp = NULL;
    coeffs_free(&r->ch);
    coeffs_free(&r->cv);
}

static cx_status short_side_size(int w, int h, int size, int *nw, int *nh, cx_err *err)
{
    if (size <= 0 || size > CX_IMAGE_MAX_SIDE)
        return cx_seterr(err, CX_EARG, "cx_image_resize_short: invalid size %d", size);
    int shrt = w <= h ? w : h, lng = w <= h ? h : w;
    /* torchvision: int(size * long / short) with Python's true division */
    double nl = (double)((long long)size * lng) / (double)shrt;
    if (nl > CX_IMAGE_MAX_SIDE)
        return cx_seterr(err, CX_ELIMIT, "cx_image_resize_short: result beyond %d pixels",
                         CX_IMAGE_MAX_SIDE);
    int new_long = (int)nl;
    *nw = w <= h ? size : new_long;
    *nh = w <= h ? new_long : size;
    return CX_OK;
}

static cx_status resize_begin(cx_row_sink *s, int W, int H, int C, cx_err *err)
{
    resize_sink *r = (resize_sink *)s;
    cx_status st;
    if (r->box_fn) { /* a box of the decoded image: it is the source from now on */
        int box[4] = {0, 0, W, H};
        r->box_fn(r->box_user, W, H, box);
        if (box[2] <= 0 || box[3] <= 0 || box[0] < 0 || box[1] < 0 || box[0] > W - box[2] ||
            box[1] > H - box[3])
            return cx_seterr(err, CX_EARG,
                             "cx_image_load_box_resized: %dx%d at (%d, %d) does not fit in a "
                             "%dx%d image",
                             box[2], box[3], box[0], box[1], W, H);
        r->bx = box[0];
        r->by = box[1];
        W = box[2];
        H = box[3];
    }
    if (r->short_side > 0 && (st = short_side_size(W, H, r->short_side, &r->tw, &r->th, err)))
        return st;
    if ((st = cx_image_new(r->tw, r->th, C, r->out, err)))
        return st;
    r->W = W;
    r->H = H;
    r->C = C;
    r->grey = C == 3;
    if (W == r->tw && H == r->th) { /* PIL returns a copy */
        r->copy = 1;
        return CX_OK;
    }
    if (coeffs_make(W, r->tw, &r->ch) || coeffs_make(H, r->th, &r->cv))
        goto oom;
    r->need_h = W != r->tw;
    r->need_v = H != r->th;
    if (r->need_v) {
        r->y0 = r->cv.bounds[0];
        r->y1 = r->cv.bounds[2 * r->th - 2] + r->cv.bounds[2 * r->th - 1];
    } else {
        r->y0 = 0;
        r->y1 = H;
    }
    r->rowlen = r->need_h ? r->tw : W;
    r->tmp = malloc((size_t)r->rowlen * (size_t)(r->y1 - r->y0) * C);
    if (!r->tmp)
        goto oom;
    return CX_OK;
oom:
    resize_release(r);
    cx_image_free(r->out);
    return cx_seterr(err, CX_ENOMEM, "cx_image_resize: out of memory");
}

/* The horizontal pass of one row. */
static void resample_row(const coeffs *ch, int width, int C, const uint8_t *row, uint8_t *drow)
{
    for (int xx = 0; xx < width; xx++) {
        const int32_t *k = ch->k + (size_t)xx * ch->ksize;
        int xmin = ch->bounds[2 * xx], xn = ch->bounds[2 * xx + 1];
        const uint8_t *p = row + (size_t)xmin * C;
        if (C == 1) {
            int32_t s0 = 1 << (PREC - 1);
            for (int x = 0; x < xn; x++)
                s0 += p[x] * k[x];
            drow[xx] = clip8(s0);
        } else {
            int32_t s0 = 1 << (PREC - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xn; x++) {
                s0 += p[3 * x] * k[x];
                s1 += p[3 * x + 1] * k[x];
                s2 += p[3 * x + 2] * k[x];
            }
            drow[3 * xx] = clip8(s0);
            drow[3 * xx + 1] = clip8(s1);
            drow[3 * xx + 2] = clip8(s2);
        }
    }
}

static void resize_row(cx_row_sink *s, int y, const uint8_t *px)
{
    resize_sink *r = (resize_sink *)s;
    const int C = r->C;
    if (r->box_fn) {
        if (y < r->by || y >= r->by + r->H)
            return;
        y -= r->by;
        px += (size_t)r->bx * C;
    }
    if (r->track_grey && r->grey) {
        for (int x = 0; x < r->W; x++)
            if (px[3 * x] != px[3 * x + 1] || px[3 * x] != px[3 * x + 2]) {
                r->grey = 0;
                break;
            }
    }
    if (r->copy) {
        memcpy(r->out->data + (size_t)y * r->W * C, px, (size_t)r->W * C);
        return;
    }
    if (y < r->y0 || y >= r->y1)
        return;
    uint8_t *drow = r->tmp + (size_t)(y - r->y0) * r->rowlen * C;
    if (r->need_h)
        resample_row(&r->ch, r->tw, C, px, drow);
    else
        memcpy(drow, px, (size_t)r->W * C);
}

/* The vertical pass; frees the working memory. On failure out is freed. */
static cx_status resize_finish(resize_sink *r, cx_err *err)
{
    if (r->copy)
        return CX_OK;
    const int C = r->C, height = r->th;
    const size_t stride = (size_t)r->rowlen * C;
    if (r->need_v) {
        int32_t *acc = malloc(sizeof(int32_t) * stride);
        if (!acc) {
            resize_release(r);
            cx_image_free(r->out);
            return cx_seterr(err, CX_ENOMEM, "cx_image_resize: out of memory");
        }
        for (int yy = 0; yy < height; yy++) {
            const int32_t *k = r->cv.k + (size_t)yy * r->cv.ksize;
            int ymin = r->cv.bounds[2 * yy] - r->y0, yn = r->cv.bounds[2 * yy + 1];
            for (size_t i = 0; i < stride; i++)
                acc[i] = 1 << (PREC - 1);
            for (int y = 0; y < yn; y++) {
                const uint8_t *row = r->tmp + (size_t)(ymin + y) * stride;
                int32_t kv = k[y];
                for (size_t i = 0; i < stride; i++)
                    acc[i] += row[i] * kv;
            }
            uint8_t *drow = r->out->data + (size_t)yy * stride;
            for (size_t i = 0; i < stride; i++)
                drow[i] = clip8(acc[i]);
        }
        free(acc);
    } else {
        memcpy(r->out->data, r->tmp, stride * height);
    }
    resize_release(r);
    return CX_OK;
}

static void resize_sink_init(resize_sink *r, int width, int height, int short_side,
                             cx_image *out)
{
    memset(r, 0, sizeof *r);
    r->base.begin = resize_begin;
    r->base.row = resize_row;
    r->tw = width;
    r->th = height;
    r->short_side = short_side;
    r->out = out;
    memset(out, 0, sizeof *out);
}

cx_status cx_image_resize(const cx_image *in, int width, int height,
                          cx_image *out, cx_err *err)
{
    cx_status st = check_image(in, "cx_image_resize", err);
    if (st)
        return st;
    if (!out || out == in)
        return cx_seterr(err, CX_EARG, "cx_image_resize: invalid output");
    resize_sink r;
    resize_sink_init(&r, width, height, 0, out);
    if ((st = resize_begin(&r.base, in->width, in->height, in->channels, err)))
        return st;
    const size_t rb = (size_t)in->width * in->channels;
    for (int y = 0; y < in->height; y++)
        resize_row(&r.base, y, in->data + (size_t)y * rb);
    return resize_finish(&r, err);
}

cx_status cx_image_load_resized_ex(const char *path, int channels, int width, int height,
                                   int short_side, cx_image *out, cx_resize_info *info,
                                   cx_err *err)
{
    if (!out)
        return cx_seterr(err, CX_EARG, "cx_image_load_resized: out is NULL");
    if (short_side <= 0 && (width <= 0 || height <= 0 || width > CX_IMAGE_MAX_SIDE ||
                            height > CX_IMAGE_MAX_SIDE))
        return cx_seterr(err, CX_EARG, "cx_image_load_resized: invalid size %dx%d", width,
                         height);
    resize_sink r;
    resize_sink_init(&r, width, height, short_side, out);
    r.track_grey = info != NULL;
    cx_status st = cx_image_decode_file(path, channels, &r.base, err);
    if (!st)
        st = resize_finish(&r, err);
    if (st) {
        resize_release(&r);
        cx_image_free(out);
        return st;
    }
    if (info) {
        info->src_width = r.W;
        info->src_height = r.H;
        info->grey = r.C == 1 || r.grey;
    }
    return CX_OK;
}

cx_status cx_image_load_box_resized(const char *path, int channels, int width, int height,
                                   cx_box_fn box_fn, void *user, cx_image *out, cx_err *err)
{
    if (!out || !box_fn)
        return cx_seterr(err, CX_EARG, "cx_image_load_box_resized: invalid arguments");
    if (width <= 0 || height <= 0 || width > CX_IMAGE_MAX_SIDE || height > CX_IMAGE_MAX_SIDE)
        return cx_seterr(err, CX_EARG, "cx_image_load_box_resized: invalid size %dx%d", width,
                         height);
    resize_sink r;
    resize_sink_init(&r, width, height, 0, out);
    r.box_fn = box_fn;
    r.box_user = user;
    cx_status st = cx_image_decode_file(path, channels, &r.base, err);
    if (!st)
        st = resize_finish(&r, err);
    if (st) {
        resize_release(&r);
        cx_image_free(out);
    }
    return st;
}

cx_status cx_image_load_resized(const char *path, int channels, int width, int height,
                                cx_image *out, cx_err *err)
{
    return cx_image_load_resized_ex(path, channels, width, height, 0, out, NULL, err);
}

cx_status cx_image_resize_short(const cx_image *in, int size, cx_image *out,
                                cx_err *err)
{
    cx_status st = check_image(in, "cx_image_resize_short", err);
    if (st)
        return st;
    int nw, nh;
    if ((st = short_side_size(in->width, in->height, size, &nw, &nh, err)))
        return st;
    return cx_image_resize(in, nw, nh, out, err);
}

cx_status cx_image_crop(const cx_image *in, int x, int y, int width, int height,
                        cx_image *out, cx_err *err)
{
    cx_status st = check_image(in, "cx_image_crop", err);
    if (st)
        return st;
    if (!out || out == in)
        return cx_seterr(err, CX_EARG, "cx_image_crop: invalid output");
    if (width <= 0 || height <= 0 || x < 0 || y < 0 || x > in->width - width ||
        y > in->height - height)
        return cx_seterr(err, CX_EARG,
                         "cx_image_crop: %dx%d at (%d, %d) does not fit in a %dx%d image",
                         width, height, x, y, in->width, in->height);
    st = cx_image_new(width, height, in->channels, out, err);
    if (st)
        return st;
    size_t rb = (size_t)width * in->channels;
    for (int r = 0; r < height; r++)
        memcpy(out->data + r * rb,
               in->data + ((size_t)(y + r) * in->width + x) * in->channels, rb);
    return CX_OK;
}

cx_status cx_image_center_crop(const cx_image *in, int width, int height,
                               cx_image *out, cx_err *err)
{
    cx_status st = check_image(in, "cx_image_center_crop", err);
    if (st)
        return st;
    if (width > in->width || height > in->height)
        return cx_seterr(err, CX_EARG,
                         "cx_image_center_crop: %dx%d is larger than the %dx%d image", width,
                         height, in->width, in->height);
    /* Python's round() rounds half to even; (a - b) / 2.0 is exact. */
    int top = (int)nearbyint((in->height - height) / 2.0);
    int left = (int)nearbyint((in->width - width) / 2.0);
    return cx_image_crop(in, left, top, width, height, out, err);
}

cx_status cx_image_flip_h(const cx_image *in, cx_image *out, cx_err *err)
{
    cx_status st = check_image(in, "cx_image_flip_h", err);
    if (st)
        return st;
    if (!out || out == in)
        return cx_seterr(err, CX_EARG, "cx_image_flip_h: invalid output");
    st = cx_image_new(in->width, in->height, in->channels, out, err);
    if (st)
        return st;
    const int W = in->width, C = in->channels;
    for (int y = 0; y < in->height; y++) {
        const uint8_t *s = in->data + (size_t)y * W * C;
        uint8_t *d = out->data + (size_t)y * W * C;
        for (int x = 0; x < W; x++)
            memcpy(d + (size_t)x * C, s + (size_t)(W - 1 - x) * C, C);
    }
    return CX_OK;
}

static cx_status five_crop(const cx_image *im, int size, cx_image out[5], cx_err *err)
{
    int W = im->width, H = im->height;
    cx_status st;
    if ((st = cx_image_crop(im, 0, 0, size, size, &out[0], err)) ||
        (st = cx_image_crop(im, W - size, 0, size, size, &out[1], err)) ||
        (st = cx_image_crop(im, 0, H - size, size, size, &out[2], err)) ||
        (st = cx_image_crop(im, W - size, H - size, size, size, &out[3], err)) ||
        (st = cx_image_center_crop(im, size, size, &out[4], err)))
        return st;
    return CX_OK;
}

cx_status cx_image_tencrop(const cx_image *in, int size, cx_image out[10], cx_err *err)
{
    cx_status st = check_image(in, "cx_image_tencrop", err);
    if (st)
        return st;
    if (!out)
        return cx_seterr(err, CX_EARG, "cx_image_tencrop: out is NULL");
    memset(out, 0, sizeof(cx_image) * 10);
    if (size <= 0 || size > in->width || size > in->height)
        return cx_seterr(err, CX_EARG, "cx_image_tencrop: crop %d does not fit in %dx%d",
                         size, in->width, in->height);
    cx_image flipped = {0};
    if (!(st = five_crop(in, size, out, err)) && !(st = cx_image_flip_h(in, &flipped, err)))
        st = five_crop(&flipped, size, out + 5, err);
    cx_image_free(&flipped);
    if (st)
        for (int i = 0; i < 10; i++)
            cx_image_free(&out[i]);
    return st;
}

cx_status cx_image_to_tensor(const cx_image *in, int channels, const float mean[3],
                             const float std[3], float *dst, cx_err *err)
{
    cx_status st = check_image(in, "cx_image_to_tensor", err);
    if (st)
        return st;
    if ((channels != 1 && channels != 3) || !mean || !std || !dst)
        return cx_seterr(err, CX_EARG, "cx_image_to_tensor: invalid arguments");
    for (int c = 0; c < channels; c++)
        if (!(std[c] != 0.0f) || !isfinite(std[c]) || !isfinite(mean[c]))
            return cx_seterr(err, CX_ENUMERIC, "cx_image_to_tensor: invalid mean/std");
    const size_t np = (size_t)in->width * in->height;
    const int C = in->channels;
    for (int c = 0; c < channels; c++) {
        float *d = dst + (size_t)c * np;
        const float m = mean[c], s = std[c];
        float lut[256];
        for (int v = 0; v < 256; v++) /* torchvision: float(v) / 255, sub, div */
            lut[v] = ((float)v / 255.0f - m) / s;
        const uint8_t *p = in->data;
        if (channels == C) {
            for (size_t i = 0; i < np; i++)
                d[i] = lut[p[i * C + c]];
        } else if (C == 1) {
            for (size_t i = 0; i < np; i++)
                d[i] = lut[p[i]];
        } else {
            for (size_t i = 0; i < np; i++) {
                const uint8_t *q = p + 3 * i;
                d[i] = lut[(q[0] * 19595u + q[1] * 38470u + q[2] * 7471u + 0x8000u) >> 16];
            }
        }
    }
    return CX_OK;
}

/* ------------------------------------------------------ network input */

static cx_status check_spec(const cx_input_spec *in, const char *fn, cx_err *err)
{
    if (!in)
        return cx_seterr(err, CX_EARG, "%s: invalid arguments", fn);
    if (in->size <= 0 || in->size > CX_IMAGE_MAX_SIDE)
        return cx_seterr(err, CX_EARG, "%s: invalid model input size %d", fn, in->size);
    if (in->channels != 1 && in->channels != 3)
        return cx_seterr(err, CX_EARG, "%s: invalid input channels %d", fn, in->channels);
    return CX_OK;
}

size_t cx_input_floats(const cx_input_spec *in, int ten_crop)
{
    if (!in || in->size <= 0)
        return 0;
    size_t s = (size_t)in->size;
    return (ten_crop ? 10 : 1) * (size_t)(in->channels == 1 ? 1 : 3) * s * s;
}

/* The crops of a resized image (S x S, or short side S * 256 / 224 for ten
 * crops) as normalised tensors into dst. */
static cx_status sized_to_input(const cx_input_spec *in, const cx_image *sized, int ten_crop,
                                float *dst, cx_err *err)
{
    const int S = in->size, C = in->channels;
    if (!ten_crop)
        return cx_image_to_tensor(sized, C, in->mean, in->std, dst, err);
    cx_image crops[10];
    cx_status st = cx_image_tencrop(sized, S, crops, err);
    if (!st) {
        size_t per = (size_t)C * S * S;
        for (int i = 0; i < 10 && !st; i++)
            st = cx_image_to_tensor(&crops[i], C, in->mean, in->std, dst + i * per, err);
        for (int i = 0; i < 10; i++)
            cx_image_free(&crops[i]);
    }
    return st;
}

cx_status cx_image_to_input(const cx_input_spec *in, const cx_image *im, int ten_crop,
                            float *dst, cx_err *err)
{
    cx_status st = check_image(im, "cx_image_preprocess", err);
    if (st)
        return st;
    if (!dst)
        return cx_seterr(err, CX_EARG, "cx_image_preprocess: invalid arguments");
    if ((st = check_spec(in, "cx_image_preprocess", err)))
        return st;
    const int S = in->size;
    cx_image grey = {0}, sized = {0};
    const cx_image *src = im;
    if (in->channels == 1 && im->channels == 3) { /* PIL convert("L") before resizing */
        if ((st = cx_image_convert(im, 1, &grey, err)))
            return st;
        src = &grey;
    }
    if (!ten_crop)
        st = cx_image_resize(src, S, S, &sized, err);
    else
        st = cx_image_resize_short(src, (int)((long long)S * 256 / 224), &sized, err);
    if (!st)
        st = sized_to_input(in, &sized, ten_crop, dst, err);
    cx_image_free(&sized);
    cx_image_free(&grey);
    return st;
}

/* Names the file in err: preprocessing messages do not know it. */
static cx_status name_file(const char *path, cx_status st, cx_err *err)
{
    if (st && err) {
        cx_err e2 = *err;
        cx_seterr(err, st, "%s: %s", path, e2.msg);
    }
    return st;
}

/* Resized network input straight from the file (no decoded image held). */
static cx_status load_input_streamed(const cx_input_spec *in, const char *path, int ten_crop,
                                     float *dst, cx_err *err)
{
    if (!dst)
        return cx_seterr(err, CX_EARG, "cx_image_load_input: invalid arguments");
    cx_status st = check_spec(in, "cx_image_preprocess", err);
    if (st)
        return st;
    const int S = in->size;
    cx_image sized = {0};
    /* channels 1: PIL convert("L") before resizing, as cx_image_to_input */
    int R = (int)((long long)S * 256 / 224);
    st = cx_image_load_resized_ex(path, in->channels == 1 ? 1 : 0, S, S, ten_crop ? R : 0,
                                  &sized, NULL, err);
    if (st)
        return st;
    st = sized_to_input(in, &sized, ten_crop, dst, err);
    cx_image_free(&sized);
    return name_file(path, st, err);
}

cx_status cx_image_load_to_input_info(const cx_input_spec *in, const char *path, int ten_crop,
                                      float *dst, cx_image *keep, cx_image_info *info,
                                      cx_err *err)
{
    cx_image im;
    if (keep)
        memset(keep, 0, sizeof *keep);
    cx_status st = cx_image_load_info(path, 0, &im, info, err);
    if (st)
        return st;
    st = cx_image_to_input(in, &im, ten_crop, dst, err);
    if (st) {
        cx_image_free(&im);
        return name_file(path, st, err);
    }
    if (keep)
        *keep = im;
    else
        cx_image_free(&im);
    return CX_OK;
}

cx_status cx_image_load_to_input(const cx_input_spec *in, const char *path, int ten_crop,
                                 float *dst, cx_image *keep, cx_err *err)
{
    if (!keep)
        return load_input_streamed(in, path, ten_crop, dst, err);
    memset(keep, 0, sizeof *keep);
    cx_image im;
    cx_status st = cx_image_load(path, 0, &im, err);
    if (st)
        return st;
    st = cx_image_to_input(in, &im, ten_crop, dst, err);
    if (st) {
        cx_image_free(&im);
        return name_file(path, st, err);
    }
    *keep = im;
    return CX_OK;
}
