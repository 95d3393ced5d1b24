/* localize.c - heat maps against radiologists' boxes: the pointing game and
 * the IoU of the thresholded map, per class and overall, with percentile
 * bootstrap CIs over images (definitions in chexnet.h, cx_loc_item). */
#include "chexnet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void cx_loc_opts_default(cx_loc_opts *o)
{
    o->threshold = 0.5;
    o->n_bootstrap = 10000;
    o->seed = 0;
}

/* pixel range [*a, *b) whose centres lie in [x, x + w), clipped to [0, n) */
static void box_span(double x, double w, int n, int *a, int *b)
{
    double lo = ceil(x - 0.5), hi = ceil(x + w - 0.5);
    if (lo < 0)
        lo = 0;
    if (lo > n) /* a box wholly past the image: an empty span */
        lo = n;
    if (hi > n)
        hi = n;
    if (hi < lo)
        hi = lo;
    *a = (int)lo;
    *b = (int)hi;
}

cx_status cx_loc_item_eval(const cx_loc_item *it, double threshold, double *hit, double *iou,
                           cx_err *err)
{
    if (!it || !it->map || it->h <= 0 || it->w <= 0)
        return cx_seterr(err, CX_EARG, "cx_loc_item_eval: the item needs a map");
    if (it->width <= 0 || it->height <= 0 || it->width > CX_IMAGE_MAX_SIDE ||
        it->height > CX_IMAGE_MAX_SIDE)
        return cx_seterr(err, CX_EARG, "cx_loc_item_eval: image size %dx%d out of range",
                         it->width, it->height);
    if (!(threshold >= 0 && threshold <= 1))
        return cx_seterr(err, CX_EARG, "cx_loc_item_eval: the threshold must be in [0, 1]");
    if (it->n_boxes <= 0 || !it->boxes)
        return cx_seterr(err, CX_EARG, "cx_loc_item_eval: an item needs at least one box");
    for (int k = 0; k < it->n_boxes; k++) {
        const cx_box *b = &it->boxes[k];
        if (!isfinite(b->x) || !isfinite(b->y) || !(b->w > 0) || !(b->h > 0) ||
            !isfinite(b->w) || !isfinite(b->h))
            return cx_seterr(err, CX_EARG,
                             "cx_loc_item_eval: box %d is not finite with positive size", k);
    }
    const int W = it->width, H = it->height;
    size_t n = (size_t)W * H;
    float *up = malloc(sizeof(float) * n);
    uint8_t *in = calloc(n, 1);
    if (!up || !in) {
        free(up);
        free(in);
        return cx_seterr(err, CX_ENOMEM, "cx_loc_item_eval: out of memory for %dx%d", W, H);
    }
    float lo = 0, hi = 0;
    cx_status st = cx_cam_upsample_raw(it->map, it->h, it->w, H, W, up, &lo, &hi, err);
    if (st) {
        free(up);
        free(in);
        return st;
    }
    for (int k = 0; k < it->n_boxes; k++) {
        const cx_box *b = &it->boxes[k];
        int x0, x1, y0, y1;
        box_span(b->x, b->w, W, &x0, &x1);
        box_span(b->y, b->h, H, &y0, &y1);
        for (int y = y0; y < y1; y++)
            memset(in + (size_t)y * W + x0, 1, (size_t)(x1 - x0));
    }
    /* v - lo >= threshold * (hi - lo): the differences of floats are exact in
     * double and there is one rounding (the product), so threshold 1 keeps
     * exactly the peaks and 0 every pixel */
    const double range = (double)hi - (double)lo, cut = threshold * range;
    size_t n_max = 0, n_max_in = 0, inter = 0, uni = 0;
    for (size_t p = 0; p < n; p++) {
        float v = up[p];
        if (v == hi) {
            n_max++;
            n_max_in += in[p];
        }
        int m = (double)v - (double)lo >= cut;
        inter += m && in[p];
        uni += m || in[p];
    }
    free(up);
    free(in);
    *hit = n_max ? (double)n_max_in / (double)n_max : 0.0;
    *iou = uni ? (double)inter / (double)uni : 0.0;
    return CX_OK;
}

typedef struct {
    double hit, iou;
    int n;
} img_sum;

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

/* the figures of the items with sel[i] set; images: the sorted distinct ids */
static cx_status group_stat(const cx_loc_item *items, const double *hit, const double *iou,
                            const uint8_t *sel, int n_items, const cx_loc_opts *o,
                            cx_loc_stat *out, cx_err *err)
{
    out->n_items = out->n_images = 0;
    out->pointing.value = out->pointing.lo = out->pointing.hi = NAN;
    out->iou = out->pointing;
    int *ids = malloc(sizeof(int) * (size_t)(n_items > 0 ? n_items : 1));
    if (!ids)
        return cx_seterr(err, CX_ENOMEM, "cx_localize: out of memory");
    int m = 0;
    double sh = 0, si = 0;
    for (int i = 0; i < n_items; i++)
        if (sel[i]) {
            ids[m++] = items[i].image;
            sh += hit[i];
            si += iou[i];
        }
    out->n_items = m;
    if (!m) {
        free(ids);
        return CX_OK;
    }
    out->pointing.value = sh / m;
    out->iou.value = si / m;
    qsort(ids, (size_t)m, sizeof(int), cmp_int);
    int ni = 0;
    for (int i = 0; i < m; i++)
        if (!i || ids[i] != ids[i - 1])
            ids[ni++] = ids[i];
    out->n_images = ni;
    if (o->n_bootstrap <= 0) {
        free(ids);
        return CX_OK;
    }
    img_sum *s = calloc((size_t)ni, sizeof *s);
    uint32_t *idx = malloc(sizeof(uint32_t) * (size_t)ni);
    double *bh = malloc(sizeof(double) * (size_t)o->n_bootstrap);
    double *bi = malloc(sizeof(double) * (size_t)o->n_bootstrap);
    if (!s || !idx || !bh || !bi) {
        free(ids);
        free(s);
        free(idx);
        free(bh);
        free(bi);
        return cx_seterr(err, CX_ENOMEM, "cx_localize: out of memory for the bootstrap");
    }
    for (int i = 0; i < n_items; i++)
        if (sel[i]) {
            int *f = bsearch(&items[i].image, ids, (size_t)ni, sizeof(int), cmp_int);
            img_sum *q = &s[f - ids];
            q->hit += hit[i];
            q->iou += iou[i];
            q->n++;
        }
    for (int b = 0; b < o->n_bootstrap; b++) {
        cx_bootstrap_indices(o->seed, (uint64_t)b, (uint32_t)ni, idx);
        double h = 0, u = 0;
        long c = 0;
        for (int j = 0; j < ni; j++) {
            h += s[idx[j]].hit;
            u += s[idx[j]].iou;
            c += s[idx[j]].n;
        }
        bh[b] = h / (double)c;
        bi[b] = u / (double)c;
    }
    out->pointing.lo = cx_percentile(bh, (size_t)o->n_bootstrap, 2.5);
    out->pointing.hi = cx_percentile(bh, (size_t)o->n_bootstrap, 97.5);
    out->iou.lo = cx_percentile(bi, (size_t)o->n_bootstrap, 2.5);
    out->iou.hi = cx_percentile(bi, (size_t)o->n_bootstrap, 97.5);
    free(ids);
    free(s);
    free(idx);
    free(bh);
    free(bi);
    return CX_OK;
}

cx_status cx_localize(const cx_loc_item *items, int n_items, int n_classes,
                      const cx_loc_opts *opts, cx_loc_result *out, cx_err *err)
{
    memset(out, 0, sizeof *out);
    cx_loc_opts o;
    if (opts)
        o = *opts;
    else
        cx_loc_opts_default(&o);
    if (n_items < 0 || (n_items && !items) || n_classes <= 0)
        return cx_seterr(err, CX_EARG, "cx_localize: invalid arguments");
    if (o.n_bootstrap < 0)
        return cx_seterr(err, CX_EARG, "cx_localize: n_bootstrap must be >= 0");
    for (int i = 0; i < n_items; i++)
        if (items[i].cls < 0 || items[i].cls >= n_classes)
            return cx_seterr(err, CX_EARG, "cx_localize: item %d: class %d out of range", i,
                             items[i].cls);
    out->n_classes = n_classes;
    out->n_items = n_items;
    out->per_class = calloc((size_t)n_classes, sizeof *out->per_class);
    out->hit = malloc(sizeof(double) * (size_t)(n_items ? n_items : 1));
    out->iou = malloc(sizeof(double) * (size_t)(n_items ? n_items : 1));
    uint8_t *sel = malloc((size_t)(n_items ? n_items : 1));
    cx_status st = CX_OK;
    if (!out->per_class || !out->hit || !out->iou || !sel) {
        st = cx_seterr(err, CX_ENOMEM, "cx_localize: out of memory");
        goto out;
    }
    for (int i = 0; i < n_items && !st; i++) {
        st = cx_loc_item_eval(&items[i], o.threshold, &out->hit[i], &out->iou[i], err);
        if (st && err) {
            char msg[sizeof err->msg];
            memcpy(msg, err->msg, sizeof msg);
            cx_seterr(err, st, "item %d (image %d, class %d): %s", i, items[i].image,
                      items[i].cls, msg);
        }
    }
    for (int c = 0; c < n_classes && !st; c++) {
        for (int i = 0; i < n_items; i++)
            sel[i] = items[i].cls == c;
        st = group_stat(items, out->hit, out->iou, sel, n_items, &o, &out->per_class[c], err);
    }
    if (!st) {
        memset(sel, 1, (size_t)(n_items ? n_items : 1));
        st = group_stat(items, out->hit, out->iou, sel, n_items, &o, &out->overall, err);
    }
out:
    free(sel);
    if (st)
        cx_loc_result_free(out);
    return st;
}

void cx_loc_result_free(cx_loc_result *r)
{
    if (!r)
        return;
    free(r->per_class);
    free(r->hit);
    free(r->iou);
    memset(r, 0, sizeof *r);
}
