/* test_augment.c - training augmentation (cx_augment) on synthetic images:
 * the option checks, the draws (deterministic in (seed, epoch, image), one
 * stream per operation, boxes inside any image, factors in their ranges),
 * the identity against the plain preprocessing, rotations by 90 and 180
 * degrees against exact pixel permutations, brightness/contrast/gamma
 * against their formulas, refusals of bad parameters, the JSON description.
 * (Parity with PIL and torchvision on real X-rays: tests/py/test_augment.py.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

#include "chexnet.h"

static cx_image random_image(int w, int h, int ch, unsigned seed)
{
    cx_image im;
    cx_err err;
    assert_int_equal(cx_image_new(w, h, ch, &im, &err), CX_OK);
    for (size_t i = 0; i < (size_t)w * h * ch; i++) {
        seed = seed * 1103515245u + 12345u;
        im.data[i] = (uint8_t)(seed >> 16);
    }
    return im;
}

static void identity(cx_augment_params *p)
{
    memset(p, 0, sizeof *p);
    p->brightness = p->contrast = p->gamma = 1.0;
}

static void test_check(void **state)
{
    (void)state;
    cx_err err;
    cx_augment a;
    memset(&a, 0, sizeof a);
    assert_int_equal(cx_augment_check(&a, &err), CX_OK);
    assert_false(cx_augment_active(&a));
    a.crop_scale[0] = 0.5, a.crop_scale[1] = 1;
    a.crop_ratio[0] = 0.9, a.crop_ratio[1] = 1.1;
    a.rotate = 180, a.brightness = 3, a.contrast = 0.5, a.gamma = 0.99;
    assert_int_equal(cx_augment_check(&a, &err), CX_OK);
    assert_true(cx_augment_active(&a));
    struct {
        double s0, s1, r0, r1, rot, b, c, g;
        const char *word;
    } bad[] = {
        {0, 1, 0, 0, 0, 0, 0, 0, "crop scale"},      {0.6, 0.5, 0, 0, 0, 0, 0, 0, "crop scale"},
        {0.5, 1.01, 0, 0, 0, 0, 0, 0, "crop scale"}, {-0.1, 0.5, 0, 0, 0, 0, 0, 0, "crop scale"},
        {NAN, 1, 0, 0, 0, 0, 0, 0, "crop scale"},    {0, 0, 0.9, 1.1, 0, 0, 0, 0, "crop scale"},
        {0.5, 1, 1.2, 1.1, 0, 0, 0, 0, "crop ratio"}, {0.5, 1, -1, 1, 0, 0, 0, 0, "crop ratio"},
        {0.5, 1, 1, INFINITY, 0, 0, 0, 0, "crop ratio"}, {0, 0, 0, 0, -1, 0, 0, 0, "rotation"},
        {0, 0, 0, 0, 180.5, 0, 0, 0, "rotation"},    {0, 0, 0, 0, NAN, 0, 0, 0, "rotation"},
        {0, 0, 0, 0, 0, -0.1, 0, 0, "brightness"},   {0, 0, 0, 0, 0, INFINITY, 0, 0, "brightness"},
        {0, 0, 0, 0, 0, 0, -2, 0, "contrast"},       {0, 0, 0, 0, 0, 0, 0, 1, "gamma"},
        {0, 0, 0, 0, 0, 0, 0, -0.5, "gamma"},        {0, 0, 0, 0, 0, 0, 0, NAN, "gamma"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cx_augment b = {{bad[i].s0, bad[i].s1}, {bad[i].r0, bad[i].r1}, bad[i].rot, bad[i].b,
                        bad[i].c, bad[i].g};
        err.msg[0] = 0;
        assert_int_equal(cx_augment_check(&b, &err), CX_EARG);
        if (!strstr(err.msg, bad[i].word) && !(i == 5 && strstr(err.msg, "needs a crop scale")))
            fail_msg("case %zu: '%s' does not mention '%s'", i, err.msg, bad[i].word);
    }
}

static void test_draw(void **state)
{
    (void)state;
    cx_loader_opts o;
    cx_loader_opts_default(&o);
    o.augment = 1;
    o.seed = 42;
    o.aug.crop_scale[0] = 0.3, o.aug.crop_scale[1] = 0.9;
    o.aug.crop_ratio[0] = 0.8, o.aug.crop_ratio[1] = 1.25;
    o.aug.rotate = 12, o.aug.brightness = 0.3, o.aug.contrast = 1.5, o.aug.gamma = 0.25;
    const int sizes[][2] = {{1, 1}, {1, 500}, {500, 1}, {2, 3}, {37, 53}, {224, 224},
                            {1024, 1024}, {3000, 2000}};
    int flips = 0, n = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int W = sizes[s][0], H = sizes[s][1];
        for (int img = 0; img < 400; img++) {
            cx_augment_params p, q;
            cx_augment_draw(&o, 3, img, W, H, &p);
            cx_augment_draw(&o, 3, img, W, H, &q);
            assert_memory_equal(&p, &q, sizeof p); /* a function of its arguments */
            assert_int_equal(p.flip, cx_loader_flips(&o, 3, img));
            flips += p.flip, n++;
            assert_true(p.crop);
            assert_true(p.crop_w >= 1 && p.crop_h >= 1 && p.crop_x >= 0 && p.crop_y >= 0);
            assert_true(p.crop_x + p.crop_w <= W && p.crop_y + p.crop_h <= H);
            assert_true(p.angle >= -12 && p.angle < 12);
            assert_true(p.brightness >= 0.7 && p.brightness < 1.3);
            assert_true(p.contrast >= 0 && p.contrast < 2.5);
            assert_true(p.gamma >= 0.75 && p.gamma < 1.25);
            if (W >= 224 && H >= 224) { /* a first draw that fits: area and aspect in range */
                double area = (double)p.crop_w * p.crop_h / ((double)W * H);
                double slack = (double)(p.crop_w + p.crop_h + 1) / ((double)W * H);
                assert_true(area >= 0.3 - slack && area <= 0.9 + slack);
            }
            cx_augment_draw(&o, 4, img, W, H, &q); /* another epoch: other draws */
            assert_true(q.angle != p.angle && q.brightness != p.brightness);
        }
    }
    assert_true(abs(2 * flips - n) < n / 10);
    /* one stream per operation: without rotation the crop is the same */
    cx_loader_opts o2 = o;
    o2.aug.rotate = 0, o2.aug.gamma = 0;
    for (int img = 0; img < 100; img++) {
        cx_augment_params p, q;
        cx_augment_draw(&o, 0, img, 640, 480, &p);
        cx_augment_draw(&o2, 0, img, 640, 480, &q);
        assert_int_equal(p.crop_x, q.crop_x);
        assert_int_equal(p.crop_w, q.crop_w);
        assert_true(q.angle == 0 && q.gamma == 1 && q.brightness == p.brightness);
    }
    /* all off: the flip alone */
    cx_loader_opts o3;
    cx_loader_opts_default(&o3);
    cx_augment_params p;
    cx_augment_draw(&o3, 0, 0, 100, 100, &p);
    assert_true(!p.flip && !p.crop && p.angle == 0 && p.brightness == 1 && p.contrast == 1 &&
                p.gamma == 1);
}

/* Identity parameters: the plain preprocessing (resize + Normalize), bit
 * for bit; a flip mirrors it; a whole-image crop changes nothing. */
static void test_identity(void **state)
{
    (void)state;
    cx_err err;
    cx_input_spec in;
    cx_input_spec_default(&in);
    in.size = 32;
    for (int ch = 1; ch <= 3; ch += 2)
        for (int C = 1; C <= 3; C += 2) {
            in.channels = C;
            cx_image im = random_image(50, 41, ch, 7u + ch + C);
            size_t nf = (size_t)C * 32 * 32;
            float *want = malloc(nf * sizeof *want), *got = malloc(nf * sizeof *got);
            cx_image sized;
            assert_int_equal(cx_image_resize(&im, 32, 32, &sized, &err), CX_OK);
            assert_int_equal(cx_image_to_tensor(&sized, C, in.mean, in.std, want, &err), CX_OK);
            cx_augment_params p;
            identity(&p);
            assert_int_equal(cx_augment_apply(&im, &p, &in, got, &err), CX_OK);
            assert_memory_equal(got, want, nf * sizeof *got);
            p.crop = 1, p.crop_w = 50, p.crop_h = 41;
            assert_int_equal(cx_augment_apply(&im, &p, &in, got, &err), CX_OK);
            assert_memory_equal(got, want, nf * sizeof *got);
            p.crop = 0, p.flip = 1;
            assert_int_equal(cx_augment_apply(&im, &p, &in, got, &err), CX_OK);
            for (int c = 0; c < C; c++)
                for (int y = 0; y < 32; y++)
                    for (int x = 0; x < 32; x++)
                        assert_true(got[(c * 32 + y) * 32 + x] == want[(c * 32 + y) * 32 + 31 - x]);
            free(want);
            free(got);
            cx_image_free(&im);
            cx_image_free(&sized);
        }
}

/* 90 and 180 degrees move pixel centres onto pixel centres: the rotation is
 * then a permutation (counter-clockwise: out(i, j) = src(j, S-1-i)). */
static void test_rotate(void **state)
{
    (void)state;
    cx_err err;
    cx_input_spec in = {24, 3, {0, 0, 0}, {1, 1, 1}};
    cx_image im = random_image(24, 24, 3, 99u);
    size_t np = 24 * 24;
    float *src = malloc(3 * np * sizeof *src), *got = malloc(3 * np * sizeof *got);
    cx_augment_params p;
    identity(&p);
    assert_int_equal(cx_augment_apply(&im, &p, &in, src, &err), CX_OK);
    const double angles[] = {90, -90, 180};
    for (int k = 0; k < 3; k++) {
        p.angle = angles[k];
        assert_int_equal(cx_augment_apply(&im, &p, &in, got, &err), CX_OK);
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 24; i++)
                for (int j = 0; j < 24; j++) {
                    int si = k == 0 ? j : k == 1 ? 23 - j : 23 - i;
                    int sj = k == 0 ? 23 - i : k == 1 ? i : 23 - j;
                    float want = src[c * np + si * 24 + sj];
                    float g = got[c * np + i * 24 + j];
                    if (fabsf(g - want) > 1e-6f)
                        fail_msg("angle %g (%d, %d): %g, want %g", angles[k], i, j, g, want);
                }
    }
    /* a constant image turned a little: the middle stays, corners are black */
    memset(im.data, 200, 24 * 24 * 3);
    p.angle = 30;
    assert_int_equal(cx_augment_apply(&im, &p, &in, got, &err), CX_OK);
    assert_true(fabsf(got[12 * 24 + 12] - 200.0f / 255.0f) < 1e-6f);
    assert_true(got[0] == 0.0f && got[23] == 0.0f && got[23 * 24] == 0.0f &&
                got[23 * 24 + 23] == 0.0f);
    for (size_t i = 0; i < 3 * np; i++)
        assert_true(got[i] >= 0.0f && got[i] <= 200.0f / 255.0f + 1e-6f);
    free(src);
    free(got);
    cx_image_free(&im);
}

/* brightness, contrast, gamma on one channel, against their formulas */
static void test_intensity(void **state)
{
    (void)state;
    cx_err err;
    cx_input_spec in = {16, 1, {0.25f, 0, 0}, {0.5f, 1, 1}};
    cx_image im = random_image(16, 16, 1, 5u);
    float got[256];
    cx_augment_params p;
    identity(&p);
    p.brightness = 1.4, p.contrast = 0.7, p.gamma = 0.8;
    assert_int_equal(cx_augment_apply(&im, &p, &in, got, &err), CX_OK);
    double m = 0;
    for (int i = 0; i < 256; i++)
        m += fminf(1.0f, 1.4f * (im.data[i] / 255.0f));
    m /= 256;
    for (int i = 0; i < 256; i++) {
        double x = fmin(1.0, 1.4 * (im.data[i] / 255.0));
        x = fmin(1.0, fmax(0.0, 0.7 * x + 0.3 * m));
        x = pow(x, 0.8);
        double want = (x - 0.25) / 0.5;
        if (fabs(got[i] - want) > 4e-6)
            fail_msg("pixel %d: %.9g, want %.9g", i, got[i], want);
    }
    /* brightness 0 is black; contrast 0 is the mean everywhere */
    identity(&p);
    p.brightness = 0;
    assert_int_equal(cx_augment_apply(&im, &p, &in, got, &err), CX_OK);
    for (int i = 0; i < 256; i++)
        assert_true(got[i] == (0.0f - 0.25f) / 0.5f);
    identity(&p);
    p.contrast = 0;
    assert_int_equal(cx_augment_apply(&im, &p, &in, got, &err), CX_OK);
    for (int i = 1; i < 256; i++)
        assert_true(got[i] == got[0]);
    cx_image_free(&im);
}

static void test_bad_params(void **state)
{
    (void)state;
    cx_err err;
    cx_input_spec in;
    cx_input_spec_default(&in);
    in.size = 8;
    cx_image im = random_image(10, 10, 3, 1u);
    float out[3 * 64];
    cx_augment_params p;
    identity(&p);
    p.crop = 1, p.crop_x = 5, p.crop_y = 0, p.crop_w = 6, p.crop_h = 4;
    assert_int_equal(cx_augment_apply(&im, &p, &in, out, &err), CX_EARG);
    assert_non_null(strstr(err.msg, "does not fit"));
    identity(&p);
    p.gamma = 0;
    assert_int_equal(cx_augment_apply(&im, &p, &in, out, &err), CX_EARG);
    identity(&p);
    p.angle = NAN;
    assert_int_equal(cx_augment_apply(&im, &p, &in, out, &err), CX_EARG);
    identity(&p);
    p.brightness = -1;
    assert_int_equal(cx_augment_apply(&im, &p, &in, out, &err), CX_EARG);
    identity(&p);
    assert_int_equal(cx_augment_apply(NULL, &p, &in, out, &err), CX_EARG);
    in.channels = 2;
    assert_int_equal(cx_augment_apply(&im, &p, &in, out, &err), CX_EARG);
    cx_image_free(&im);
}

static void test_describe(void **state)
{
    (void)state;
    cx_loader_opts o;
    cx_loader_opts_default(&o);
    char buf[512];
    size_t n = cx_augment_describe(&o, buf, sizeof buf);
    assert_string_equal(buf, "{\"flip\": false, \"crop_scale\": null, \"crop_ratio\": null, "
                             "\"rotate\": 0, \"brightness\": 0, \"contrast\": 0, \"gamma\": 0}");
    assert_int_equal(n, strlen(buf));
    o.augment = 1;
    o.aug.crop_scale[0] = 0.8, o.aug.crop_scale[1] = 1;
    o.aug.rotate = 7.5, o.aug.brightness = 0.1, o.aug.gamma = 0.2;
    cx_augment_describe(&o, buf, sizeof buf);
    assert_string_equal(buf, "{\"flip\": true, \"crop_scale\": [0.8, 1], \"crop_ratio\": [0.75, "
                             "1.3333333333333333], \"rotate\": 7.5, \"brightness\": 0.1, "
                             "\"contrast\": 0, \"gamma\": 0.2}");
    char small[16];
    n = cx_augment_describe(&o, small, sizeof small);
    assert_int_equal(n, strlen(buf));
    assert_int_equal(strlen(small), sizeof small - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),     cmocka_unit_test(test_draw),
        cmocka_unit_test(test_identity),  cmocka_unit_test(test_rotate),
        cmocka_unit_test(test_intensity), cmocka_unit_test(test_bad_params),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
