/* Heat map overlays and localisation: the legend band (sized with the image,
 * its colour bar the colour map's), the X-ray region against the overlay's
 * documented blend, the model scale's clamping, the "cam_range" metadata
 * (reading and its errors), and hand-computed localisation cases (the
 * Python oracle, py_test_localize, checks the arithmetic in bulk). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chexnet.h"

static char g_dir[1024];

static void make_xray(cx_image *x, int W, int H, int channels)
{
    cx_err err;
    assert_int_equal(cx_image_new(W, H, channels, x, &err), CX_OK);
    for (int y = 0; y < H; y++)
        for (int i = 0; i < W; i++)
            for (int c = 0; c < channels; c++)
                x->data[((size_t)y * W + i) * channels + c] =
                    (uint8_t)((i * 7 + y * 3 + c * 40) % 256);
}

static void rand_map(float *m, int n, unsigned seed)
{
    for (int i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        m[i] = (float)((seed >> 8) % 10000) / 1000.0f - 3.0f;
    }
}

/* the blend documented at cx_cam_overlay, from t in [0, 1] */
static void expect_blend(const cx_image *x, const float *t, float alpha, const cx_image *out)
{
    uint8_t lut[256][3];
    for (int i = 0; i < 256; i++)
        cx_cam_colormap(i / 255.0f, lut[i]);
    const int C = x->channels;
    size_t n = (size_t)x->width * x->height;
    for (size_t p = 0; p < n; p++) {
        int q = (int)lrintf(t[p] * 255.0f);
        q = q < 0 ? 0 : q > 255 ? 255 : q;
        float a = alpha * (0.25f + 0.75f * t[p]);
        for (int c = 0; c < 3; c++) {
            float xv = x->data[p * C + (C == 3 ? c : 0)];
            float v = (1.0f - a) * xv + a * lut[q][c];
            uint8_t e = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
            if (out->data[p * 3 + c] != e)
                fail_msg("pixel %zu channel %d: %u, expected %u", p, c, out->data[p * 3 + c], e);
        }
    }
}

static void overlay_at(int W, int H, int channels, cx_cam_legend_geom *g, cx_image *out,
                       cx_image *x, float *map)
{
    cx_err err = {0};
    make_xray(x, W, H, channels);
    rand_map(map, 49, (unsigned)W);
    cx_cam_style s;
    cx_cam_style_default(&s);
    s.class_name = "Pneumonia";
    s.probability = 0.006f;
    if (cx_cam_overlay_ex(x, map, 7, 7, &s, out, g, &err))
        fail_msg("%s", err.msg);
}

static void test_legend(void **state)
{
    (void)state;
    cx_err err = {0};
    const int sizes[][2] = {{224, 224}, {1000, 1200}, {3000, 3000}};
    int band[3], font[3];
    for (int k = 0; k < 3; k++) {
        const int W = sizes[k][0], H = sizes[k][1];
        cx_image x, out, plain;
        cx_cam_legend_geom g;
        float map[49];
        overlay_at(W, H, k == 1 ? 3 : 1, &g, &out, &x, map);
        band[k] = g.band_h;
        font[k] = g.font_px;
        /* a band below the X-ray, the whole width */
        assert_int_equal(out.width, W);
        assert_int_equal(g.band_y, H);
        assert_true(g.band_h > 0);
        assert_int_equal(out.height, H + g.band_h);
        /* the X-ray region: the documented blend, on the image scale, and the
         * overlay of cx_cam_overlay pixel for pixel */
        float *t = malloc(sizeof(float) * (size_t)W * H);
        assert_int_equal(cx_cam_upsample(map, 7, 7, H, W, t, &err), CX_OK);
        expect_blend(&x, t, 0.5f, &out);
        free(t);
        assert_int_equal(cx_cam_overlay(&x, map, 7, 7, 0.5f, &plain, &err), CX_OK);
        assert_int_equal(plain.height, H);
        assert_memory_equal(plain.data, out.data, (size_t)W * H * 3);
        cx_image_free(&plain);
        /* the colour bar: nearly the whole width, each column the colour map */
        assert_true(g.bar_x1 - g.bar_x0 >= (int)(0.9 * W));
        assert_true(g.bar_y0 >= g.band_y && g.bar_y1 <= g.band_y + g.band_h);
        assert_true(g.bar_y1 - g.bar_y0 >= g.font_px / 2);
        const int nb = g.bar_x1 - g.bar_x0;
        for (int y = g.bar_y0; y < g.bar_y1; y++)
            for (int i = g.bar_x0; i < g.bar_x1; i++) {
                uint8_t rgb[3];
                cx_cam_colormap((float)(i - g.bar_x0) / (float)(nb - 1), rgb);
                assert_memory_equal(out.data + ((size_t)y * W + i) * 3, rgb, 3);
            }
        /* text: bright pixels above and below the bar, within the band */
        long above = 0, below = 0;
        for (int y = g.band_y; y < g.band_y + g.band_h; y++)
            for (int i = 0; i < W; i++) {
                const uint8_t *p = out.data + ((size_t)y * W + i) * 3;
                if (p[0] > 200 && p[1] > 200 && p[2] > 200 && (y < g.bar_y0 || y >= g.bar_y1))
                    *(y < g.bar_y0 ? &above : &below) += 1;
            }
        assert_true(above > 0);
        assert_true(below > 0);
        /* the range of the colours: the upsampled map's */
        float *u = malloc(sizeof(float) * (size_t)W * H);
        float lo, hi;
        assert_int_equal(cx_cam_upsample_raw(map, 7, 7, H, W, u, &lo, &hi, &err), CX_OK);
        assert_true(g.lo == lo && g.hi == hi);
        free(u);
        cx_image_free(&out);
        cx_image_free(&x);
    }
    /* readable at 224 px, and scaled with the image */
    assert_true(font[0] >= 11);
    assert_int_equal(font[1], 25);
    assert_int_equal(font[2], 75);
    double r = (double)band[2] / band[1];
    assert_true(r > 2.5 && r < 3.5);
    assert_true(band[0] >= 60); /* 224: room for the wrapped lines */
}

static void test_legend_off_and_errors(void **state)
{
    (void)state;
    cx_err err = {0};
    cx_image x, out;
    make_xray(&x, 64, 48, 3);
    float map[49];
    rand_map(map, 49, 5);
    cx_cam_style s;
    cx_cam_style_default(&s);
    s.legend = 0;
    cx_cam_legend_geom g;
    assert_int_equal(cx_cam_overlay_ex(&x, map, 7, 7, &s, &out, &g, &err), CX_OK);
    assert_int_equal(out.height, 48);
    assert_int_equal(g.band_h, 0);
    cx_image_free(&out);
    s.alpha = 2;
    assert_int_equal(cx_cam_overlay_ex(&x, map, 7, 7, &s, &out, NULL, &err), CX_EARG);
    s.alpha = 0.5f;
    s.scale = CX_CAM_SCALE_MODEL;
    s.lo = 1;
    s.hi = 1; /* lo == hi */
    assert_int_equal(cx_cam_overlay_ex(&x, map, 7, 7, &s, &out, NULL, &err), CX_EARG);
    /* no font: a clear error with the legend, none without */
    setenv("CHEXNET_FONT", "/nonexistent/font.ttf", 1);
    s.scale = CX_CAM_SCALE_IMAGE;
    s.legend = 1;
    assert_int_equal(cx_cam_overlay_ex(&x, map, 7, 7, &s, &out, NULL, &err), CX_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent/font.ttf"));
    s.legend = 0;
    assert_int_equal(cx_cam_overlay_ex(&x, map, 7, 7, &s, &out, NULL, &err), CX_OK);
    cx_image_free(&out);
    unsetenv("CHEXNET_FONT");
    cx_image_free(&x);
    cx_cam_scale sc;
    assert_int_equal(cx_cam_scale_parse("Model", &sc), 0);
    assert_int_equal(sc, CX_CAM_SCALE_MODEL);
    assert_int_equal(cx_cam_scale_parse("image", &sc), 0);
    assert_int_equal(sc, CX_CAM_SCALE_IMAGE);
    assert_int_equal(cx_cam_scale_parse("auto", &sc), -1);
    assert_string_equal(cx_cam_scale_name(CX_CAM_SCALE_MODEL), "model");
}

static void test_model_scale(void **state)
{
    (void)state;
    cx_err err = {0};
    const int W = 90, H = 70;
    cx_image x, out;
    make_xray(&x, W, H, 1);
    float map[49];
    rand_map(map, 49, 11); /* values in [-3, 7) */
    cx_cam_style s;
    cx_cam_style_default(&s);
    s.legend = 0;
    s.scale = CX_CAM_SCALE_MODEL;
    float *t = malloc(sizeof(float) * W * H);
    /* the whole map below lo: colour 0 everywhere (cold), at a quarter of alpha */
    s.lo = 10;
    s.hi = 20;
    cx_cam_legend_geom g;
    assert_int_equal(cx_cam_overlay_ex(&x, map, 7, 7, &s, &out, &g, &err), CX_OK);
    for (int i = 0; i < W * H; i++)
        t[i] = 0;
    expect_blend(&x, t, 0.5f, &out);
    assert_true(g.lo == 10 && g.hi == 20);
    cx_image_free(&out);
    /* the whole map above hi: colour 1 everywhere */
    s.lo = -20;
    s.hi = -10;
    assert_int_equal(cx_cam_overlay_ex(&x, map, 7, 7, &s, &out, NULL, &err), CX_OK);
    for (int i = 0; i < W * H; i++)
        t[i] = 1;
    expect_blend(&x, t, 0.5f, &out);
    cx_image_free(&out);
    /* a range inside the map's: (v - lo) / (hi - lo), clamped */
    s.lo = -1;
    s.hi = 4;
    float *u = malloc(sizeof(float) * W * H), mn, mx;
    assert_int_equal(cx_cam_upsample_raw(map, 7, 7, H, W, u, &mn, &mx, &err), CX_OK);
    assert_true(mn < -1 && mx > 4); /* both clamps are exercised */
    int n0 = 0, n1 = 0;
    for (int i = 0; i < W * H; i++) {
        double v = ((double)u[i] - s.lo) / ((double)s.hi - s.lo);
        t[i] = (float)(v < 0 ? 0 : v > 1 ? 1 : v);
        n0 += t[i] == 0;
        n1 += t[i] == 1;
    }
    assert_true(n0 > 0 && n1 > 0);
    float *t2 = malloc(sizeof(float) * W * H), rl, rh;
    assert_int_equal(cx_cam_scale_map(map, 7, 7, H, W, CX_CAM_SCALE_MODEL, s.lo, s.hi, t2, &rl,
                                      &rh, &err),
                     CX_OK);
    assert_memory_equal(t, t2, sizeof(float) * W * H);
    assert_true(rl == -1 && rh == 4);
    assert_int_equal(cx_cam_overlay_ex(&x, map, 7, 7, &s, &out, NULL, &err), CX_OK);
    expect_blend(&x, t, 0.5f, &out);
    cx_image_free(&out);
    /* a confident negative looks cold on the model scale, never on the image's */
    for (int i = 0; i < 49; i++)
        map[i] = -50.0f + 0.1f * (float)i;
    assert_int_equal(cx_cam_scale_map(map, 7, 7, H, W, CX_CAM_SCALE_MODEL, -1, 4, t2, NULL, NULL,
                                      &err),
                     CX_OK);
    float tmax = 0;
    for (int i = 0; i < W * H; i++)
        tmax = t2[i] > tmax ? t2[i] : tmax;
    assert_true(tmax == 0);
    assert_int_equal(cx_cam_scale_map(map, 7, 7, H, W, CX_CAM_SCALE_IMAGE, 0, 0, t2, NULL, NULL,
                                      &err),
                     CX_OK);
    tmax = 0;
    for (int i = 0; i < W * H; i++)
        tmax = t2[i] > tmax ? t2[i] : tmax;
    assert_true(tmax == 1);
    free(t);
    free(t2);
    free(u);
    cx_image_free(&x);
}

static cx_model *small_model(int classes)
{
    cx_config cfg = {.arch = "densenet", .growth_rate = 4, .n_blocks = 2,
                     .block_config = {2, 2}, .num_init_features = 8, .bn_size = 2,
                     .num_classes = classes, .in_channels = 3};
    cx_model *m = NULL;
    assert_int_equal(cx_model_new(&cfg, &m, NULL), CX_OK);
    cx_model_init(m, 1);
    return m;
}

static void test_cam_range_meta(void **state)
{
    (void)state;
    cx_err err = {0};
    cx_model *m = small_model(2);
    float lo[2], hi[2];
    int found = 7;
    assert_int_equal(cx_model_cam_range(m, "m.safetensors", lo, hi, &found, &err), CX_OK);
    assert_int_equal(found, 0);
    assert_int_equal(cx_model_set_meta(m, "cam_range", "[[-1.5, 2], [0, 12.25]]", &err), CX_OK);
    char path[1200];
    snprintf(path, sizeof path, "%s/cam_range.safetensors", g_dir);
    assert_int_equal(cx_model_save(m, path, CX_DT_F32, &err), CX_OK);
    cx_model *m2 = NULL;
    assert_int_equal(cx_model_load(path, &m2, &err), CX_OK);
    assert_int_equal(cx_model_cam_range(m2, path, lo, hi, &found, &err), CX_OK);
    assert_int_equal(found, 1);
    assert_true(lo[0] == -1.5f && hi[0] == 2.0f && lo[1] == 0.0f && hi[1] == 12.25f);
    cx_model_free(m2);
    static const char *bad[] = {
        "[[0, 1]]",                  /* one pair for two classes */
        "[[0, 1], [0, 1], [0, 1]]",  /* three */
        "[[0, 1], [2, 1]]",          /* lo > hi */
        "[[0, 1], [1, 1]]",          /* lo == hi */
        "[[0, 1], [0]]",             /* not a pair */
        "[[0, 1], [0, 1, 2]]",
        "[[0, 1], [\"0\", 1]]",      /* not numbers */
        "[[0, 1], [0, 1e39]]",       /* beyond float */
        "[[0, 1], null]",
        "{\"a\": 1}",
        "[[0, 1], [0, 1]",           /* not JSON */
        "",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        assert_int_equal(cx_model_set_meta(m, "cam_range", bad[k], &err), CX_OK);
        memset(&err, 0, sizeof err);
        found = 7;
        cx_status st = cx_model_cam_range(m, "m.safetensors", lo, hi, &found, &err);
        if (st != CX_EFORMAT)
            fail_msg("cam_range '%s': status %d", bad[k], st);
        assert_int_equal(found, 0);
        assert_non_null(strstr(err.msg, "m.safetensors"));
        assert_non_null(strstr(err.msg, "cam_range"));
    }
    cx_model_free(m);
}

/* localisation cases computed by hand: a 10 x 10 image, the map at that size
 * (no interpolation) */
static double loc1(const float *map, int n, const cx_box *b, int nb, double thr, double *iou)
{
    cx_loc_item it = {0, 0, map, n, n, n, n, nb, b};
    double hit = -1;
    cx_err err = {0};
    if (cx_loc_item_eval(&it, thr, &hit, iou, &err))
        fail_msg("%s", err.msg);
    return hit;
}

static void test_localize_cases(void **state)
{
    (void)state;
    float m[100] = {0};
    double iou;
    /* a peak at (x 7, y 2); box x [5, 10) y [0, 5): pixels 5..9 x 0..4 */
    m[2 * 10 + 7] = 5;
    cx_box b = {5, 0, 5, 5};
    assert_true(loc1(m, 10, &b, 1, 0.5, &iou) == 1);
    assert_true(iou == 1.0 / 25); /* the map above half its range: one pixel */
    /* the box's right edge is exclusive: x [5, 7) leaves pixel 7 out */
    cx_box b2 = {5, 0, 2, 5};
    assert_true(loc1(m, 10, &b2, 1, 0.5, &iou) == 0);
    assert_true(iou == 0);
    /* a fractional edge: pixel 7's centre 7.5 is in [7.5, 8) */
    cx_box b3 = {7.5, 2.5, 0.5, 0.5};
    assert_true(loc1(m, 10, &b3, 1, 0.5, &iou) == 1);
    assert_true(iou == 1);
    cx_box b4 = {7.51, 2.5, 3, 3};
    assert_true(loc1(m, 10, &b4, 1, 0.5, &iou) == 0);
    /* ties: two peaks, one in the box */
    m[9 * 10 + 0] = 5;
    assert_true(loc1(m, 10, &b, 1, 0.5, &iou) == 0.5);
    assert_true(iou == 1.0 / 26);
    /* several boxes: the other peak in the second */
    cx_box two[2] = {{5, 0, 5, 5}, {0, 8, 2, 2}};
    assert_true(loc1(m, 10, two, 2, 0.5, &iou) == 1);
    assert_true(iou == 2.0 / 29);
    /* a constant map: every pixel a peak and above the threshold */
    float c[100];
    for (int i = 0; i < 100; i++)
        c[i] = 3;
    assert_true(loc1(c, 10, &b, 1, 0.5, &iou) == 0.25);
    assert_true(iou == 0.25);
    /* a box partly outside the image is clipped */
    cx_box b5 = {8, 8, 10, 10};
    assert_true(loc1(c, 10, &b5, 1, 0.5, &iou) == 0.04);
    /* a box wholly past the image (far beyond int range): empty, no pixel */
    cx_box b6 = {7.2e13, 1e15, 5, 5};
    assert_true(loc1(c, 10, &b6, 1, 0.5, &iou) == 0);
    assert_true(iou == 0);
    /* threshold 0: everything; 1: the peaks only */
    assert_true(loc1(m, 10, &b, 1, 0.0, &iou) == 0.5);
    assert_true(iou == 0.25);
    /* bad input */
    cx_loc_item it = {0, 0, m, 10, 10, 10, 10, 1, &b};
    double h;
    cx_err err = {0};
    assert_int_equal(cx_loc_item_eval(&it, 1.5, &h, &iou, &err), CX_EARG);
    cx_box z = {0, 0, 0, 3};
    it.boxes = &z;
    assert_int_equal(cx_loc_item_eval(&it, 0.5, &h, &iou, &err), CX_EARG);
    it.boxes = &b;
    it.n_boxes = 0;
    assert_int_equal(cx_loc_item_eval(&it, 0.5, &h, &iou, &err), CX_EARG);
    /* the summary: a class without boxes has no figures */
    cx_loc_item items[3] = {{0, 0, m, 10, 10, 10, 10, 1, &b},
                            {1, 0, c, 10, 10, 10, 10, 1, &b},
                            {1, 2, m, 10, 10, 10, 10, 2, two}};
    cx_loc_opts o;
    cx_loc_opts_default(&o);
    o.n_bootstrap = 200;
    cx_loc_result r;
    assert_int_equal(cx_localize(items, 3, 3, &o, &r, &err), CX_OK);
    assert_int_equal(r.per_class[0].n_items, 2);
    assert_true(fabs(r.per_class[0].pointing.value - 0.375) < 1e-15);
    assert_int_equal(r.per_class[1].n_items, 0);
    assert_true(isnan(r.per_class[1].pointing.value) && isnan(r.per_class[1].iou.lo));
    assert_int_equal(r.overall.n_items, 3);
    assert_int_equal(r.overall.n_images, 2);
    assert_true(fabs(r.overall.pointing.value - 1.75 / 3) < 1e-15);
    assert_true(r.overall.pointing.lo <= r.overall.pointing.value &&
                r.overall.pointing.hi >= r.overall.pointing.value);
    cx_loc_result_free(&r);
    items[2].cls = 3;
    assert_int_equal(cx_localize(items, 3, 3, &o, &r, &err), CX_EARG);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_box_list(void **state)
{
    (void)state;
    cx_err err = {0};
    char path[1200];
    snprintf(path, sizeof path, "%s/boxes.csv", g_dir);
    /* the official header (commas inside, trailing empty fields) */
    write_text(path, "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                     "a.png,Infiltrate,1.5,2,3,4\n"
                     "b.png,Nodule,10,20,30,40,,\n");
    cx_box_list l;
    assert_int_equal(cx_box_list_read(path, &l, &err), CX_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.v[0].image, "a.png");
    assert_string_equal(l.v[0].label, "Infiltration");
    assert_true(l.v[0].box.x == 1.5 && l.v[0].box.y == 2 && l.v[0].box.w == 3 &&
                l.v[0].box.h == 4);
    assert_string_equal(l.v[1].label, "Nodule");
    assert_int_equal(l.v[1].line, 3);
    cx_box_list_free(&l);
    static const char *bad[][2] = {
        {"Image Index,Finding Label,x,y,w,h\na.png,Nodule,1,2,3,4\na.png,Nodule,1,x,3,4\n",
         "line 3"},
        {"Image Index,Finding Label,x,y,w,h\na.png,Nodule,1,2,0,4\n", "line 2"},
        {"Image Index,Finding Label,x,y,w,h\na.png,Nodule,1,2,3\n", "line 2"},
        {"Image Index,Finding Label,x,y,w,h\na.png,Nodule,1,2,3,4,5\n", "line 2"},
        {"Image Index,Finding Label,x,y,w,h\n,Nodule,1,2,3,4\n", "line 2"},
        {"Image Index,Finding Label,x,y,w,h\na.png,Nodule,1,2,3,inf\n", "line 2"},
        {"image,label,x,y,w,h\na.png,Nodule,1,2,3,4\n", "Image Index"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        write_text(path, bad[k][0]);
        memset(&err, 0, sizeof err);
        cx_status st = cx_box_list_read(path, &l, &err);
        if (st != CX_EFORMAT || !strstr(err.msg, bad[k][1]) || !strstr(err.msg, "boxes.csv"))
            fail_msg("case %zu: status %d, '%s'", k, st, err.msg);
        assert_int_equal(l.n, 0);
    }
}

int main(void)
{
    const char *t = getenv("CX_TMP");
    snprintf(g_dir, sizeof g_dir, "%s/test_cam", t ? t : "/tmp");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", g_dir);
    if (system(cmd) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_legend),         cmocka_unit_test(test_legend_off_and_errors),
        cmocka_unit_test(test_model_scale),    cmocka_unit_test(test_cam_range_meta),
        cmocka_unit_test(test_localize_cases), cmocka_unit_test(test_box_list),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
