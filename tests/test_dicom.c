/* test_dicom.c - DICOM decoding through the library's image loader.
 *
 * Small datasets are written byte by byte here (explicit VR little endian,
 * as a Part 10 file with preamble and meta header, or bare): 8-bit and
 * 12-bit greyscale with rescale and window, MONOCHROME1, signed values, a
 * Modality LUT, RGB in both planar configurations, several frames, views
 * that are not frontal chest X-rays. The expected pixels follow the pipeline
 * documented in chexnet.h. Bad inputs (every truncation of a valid file,
 * absurd sizes, inconsistent bit depths, missing or short pixel data, no
 * pixel data at all) must give errors, never crashes (this test also runs
 * under AddressSanitizer). Transfer syntaxes and the oracle comparisons with
 * pydicom are in tests/py/test_dicom.py.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <unistd.h>

#include "chexnet.h"

/* ------------------------------------------------------- a tiny writer */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void u16(buf *b, unsigned v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(b, x, 2);
}

static void u32(buf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}

static void tag(buf *b, unsigned g, unsigned e, const char *vr)
{
    u16(b, g);
    u16(b, e);
    put(b, vr, 2);
}

/* a string element, padded to even length (UI with NUL, others space) */
static void el_str(buf *b, unsigned g, unsigned e, const char *vr, const char *s)
{
    size_t n = strlen(s), pad = n & 1;
    tag(b, g, e, vr);
    u16(b, (unsigned)(n + pad));
    put(b, s, n);
    if (pad)
        put(b, !strcmp(vr, "UI") ? "\0" : " ", 1);
}

static void el_us(buf *b, unsigned g, unsigned e, unsigned v)
{
    tag(b, g, e, "US");
    u16(b, 2);
    u16(b, v);
}

/* OB/OW with a 4-byte length */
static void el_long(buf *b, unsigned g, unsigned e, const char *vr, const void *d, uint32_t n)
{
    tag(b, g, e, vr);
    u16(b, 0);
    u32(b, n);
    put(b, d, n);
}

typedef struct {
    int rows, cols, spp, alloc, stored, high, repr, planar, frames;
    const char *photometric;
    const char *slope, *intercept, *center, *width, *function;
    const char *modality, *body, *view, *laterality;
    const uint16_t *mlut; /* Modality LUT: desc[3] then data */
    int mlut_n;
    int part10;
    int no_pixels;
    uint32_t pixel_bytes_cut; /* drop this many bytes of pixel data */
} spec;

static spec base_spec(int rows, int cols)
{
    spec s = {0};
    s.rows = rows;
    s.cols = cols;
    s.spp = 1;
    s.alloc = 8;
    s.stored = 8;
    s.high = 7;
    s.photometric = "MONOCHROME2";
    s.modality = "CR";
    s.body = "CHEST";
    s.view = "PA";
    s.part10 = 1;
    s.frames = 1;
    return s;
}

static void lut_item(buf *b, const uint16_t *lut, int n)
{
    /* (0028,3000) SQ of one item: LUT Descriptor, LUT Data (explicit lengths) */
    buf it = {0};
    tag(&it, 0x0028, 0x3002, "US");
    u16(&it, 6);
    for (int i = 0; i < 3; i++)
        u16(&it, lut[i]);
    tag(&it, 0x0028, 0x3006, "OW");
    u16(&it, 0);
    u32(&it, (uint32_t)(2 * n));
    for (int i = 0; i < n; i++)
        u16(&it, lut[3 + i]);
    tag(b, 0x0028, 0x3000, "SQ");
    u16(b, 0);
    u32(b, (uint32_t)(it.n + 8));
    u16(b, 0xfffe);
    u16(b, 0xe000);
    u32(b, (uint32_t)it.n);
    put(b, it.p, it.n);
    free(it.p);
}

/* Writes a dataset (elements in ascending tag order) with pixels px. */
static buf make_dicom(const spec *s, const void *px, size_t px_bytes)
{
    buf b = {0};
    if (s->part10) {
        uint8_t pre[128] = {0};
        put(&b, pre, 128);
        put(&b, "DICM", 4);
        buf m = {0};
        uint8_t ver[2] = {0, 1};
        el_long(&m, 0x0002, 0x0001, "OB", ver, 2);
        el_str(&m, 0x0002, 0x0002, "UI", "1.2.840.10008.5.1.4.1.1.1");
        el_str(&m, 0x0002, 0x0003, "UI", "1.2.3.4.5.6.7");
        el_str(&m, 0x0002, 0x0010, "UI", "1.2.840.10008.1.2.1");
        tag(&b, 0x0002, 0x0000, "UL");
        u16(&b, 4);
        u32(&b, (uint32_t)m.n);
        put(&b, m.p, m.n);
        free(m.p);
    }
    el_str(&b, 0x0008, 0x0016, "UI", "1.2.840.10008.5.1.4.1.1.1");
    el_str(&b, 0x0008, 0x0018, "UI", "1.2.3.4.5.6.7");
    if (s->modality)
        el_str(&b, 0x0008, 0x0060, "CS", s->modality);
    if (s->body)
        el_str(&b, 0x0018, 0x0015, "CS", s->body);
    if (s->view)
        el_str(&b, 0x0018, 0x5101, "CS", s->view);
    if (s->laterality)
        el_str(&b, 0x0020, 0x0062, "CS", s->laterality);
    el_us(&b, 0x0028, 0x0002, (unsigned)s->spp);
    el_str(&b, 0x0028, 0x0004, "CS", s->photometric);
    if (s->spp == 3)
        el_us(&b, 0x0028, 0x0006, (unsigned)s->planar);
    if (s->frames > 1) {
        char f[16];
        snprintf(f, sizeof f, "%d", s->frames);
        el_str(&b, 0x0028, 0x0008, "IS", f);
    }
    el_us(&b, 0x0028, 0x0010, (unsigned)s->rows);
    el_us(&b, 0x0028, 0x0011, (unsigned)s->cols);
    el_us(&b, 0x0028, 0x0100, (unsigned)s->alloc);
    el_us(&b, 0x0028, 0x0101, (unsigned)s->stored);
    el_us(&b, 0x0028, 0x0102, (unsigned)s->high);
    el_us(&b, 0x0028, 0x0103, (unsigned)s->repr);
    if (s->center)
        el_str(&b, 0x0028, 0x1050, "DS", s->center);
    if (s->width)
        el_str(&b, 0x0028, 0x1051, "DS", s->width);
    if (s->intercept)
        el_str(&b, 0x0028, 0x1052, "DS", s->intercept);
    if (s->slope)
        el_str(&b, 0x0028, 0x1053, "DS", s->slope);
    if (s->function)
        el_str(&b, 0x0028, 0x1056, "CS", s->function);
    if (s->mlut)
        lut_item(&b, s->mlut, s->mlut_n);
    if (!s->no_pixels) {
        size_t n = px_bytes - s->pixel_bytes_cut;
        size_t even = (n + 1) & ~(size_t)1;
        uint8_t *tmp = calloc(even ? even : 1, 1);
        assert_non_null(tmp);
        memcpy(tmp, px, n);
        el_long(&b, 0x7fe0, 0x0010, s->alloc == 8 ? "OB" : "OW", tmp, (uint32_t)even);
        free(tmp);
    }
    return b;
}

static cx_status load(const buf *b, cx_image *im, cx_image_info *info, cx_err *err)
{
    return cx_image_load_mem_info(b->p, b->n, "test.dcm", 0, im, info, err);
}

/* ---------------------------------------------------------------- tests */

enum { W = 37, H = 23 }; /* odd sizes: odd pixel data lengths, padding */

static void test_sniff(void **state)
{
    (void)state;
    spec s = base_spec(H, W);
    uint8_t px[W * H] = {0};
    buf b = make_dicom(&s, px, sizeof px);
    assert_int_equal(cx_image_sniff(b.p, b.n), 3);
    s.part10 = 0;
    buf bare = make_dicom(&s, px, sizeof px);
    assert_int_equal(cx_image_sniff(bare.p, bare.n), 3);
    assert_int_equal(cx_image_sniff("\x08\x00\x16\x00garbage", 12), 0);
    assert_int_equal(cx_image_sniff("hello world, not an image", 25), 0);
    free(b.p);
    free(bare.p);
}

static void test_8bit_identity(void **state)
{
    (void)state;
    uint8_t px[W * H];
    for (int i = 0; i < W * H; i++)
        px[i] = (uint8_t)(i * 7 + 3);
    for (int part10 = 0; part10 < 2; part10++) {
        spec s = base_spec(H, W);
        s.part10 = part10;
        buf b = make_dicom(&s, px, sizeof px);
        cx_image im;
        cx_image_info info;
        cx_err err = {0};
        assert_int_equal(load(&b, &im, &info, &err), CX_OK);
        assert_int_equal(im.width, W);
        assert_int_equal(im.height, H);
        assert_int_equal(im.channels, 1);
        assert_memory_equal(im.data, px, sizeof px);
        assert_string_equal(info.format, "dicom");
        assert_string_equal(info.photometric, "MONOCHROME2");
        assert_string_equal(info.voi, "full-range");
        assert_int_equal(info.n_warnings, 0);
        cx_image_free(&im);
        /* channels 3 replicates grey, as PNG */
        assert_int_equal(cx_image_load_mem(b.p, b.n, "x", 3, &im, &err), CX_OK);
        assert_int_equal(im.channels, 3);
        for (int i = 0; i < W * H; i++)
            assert_true(im.data[3 * i] == px[i] && im.data[3 * i + 2] == px[i]);
        cx_image_free(&im);
        free(b.p);
    }
}

static void test_mono1_and_window(void **state)
{
    (void)state;
    uint8_t px8[W * H];
    uint16_t px16[W * H];
    int16_t pxs[W * H];
    for (int i = 0; i < W * H; i++) {
        px8[i] = (uint8_t)(i * 5);
        px16[i] = (uint16_t)((i * 37) % 4096);
        pxs[i] = (int16_t)((i * 37) % 4096 - 2048);
    }
    cx_err err = {0};
    cx_image im;
    cx_image_info info;
    /* MONOCHROME1, 8 bit: inverted */
    spec s = base_spec(H, W);
    s.photometric = "MONOCHROME1";
    buf b = make_dicom(&s, px8, sizeof px8);
    assert_int_equal(load(&b, &im, &info, &err), CX_OK);
    for (int i = 0; i < W * H; i++)
        assert_int_equal(im.data[i], 255 - px8[i]);
    cx_image_free(&im);
    free(b.p);
    /* 12 bits in 16, rescale and a LINEAR window */
    s = base_spec(H, W);
    s.alloc = 16;
    s.stored = 12;
    s.high = 11;
    s.slope = "0.5";
    s.intercept = "-100";
    s.center = "700.25";
    s.width = "1201.5";
    b = make_dicom(&s, px16, sizeof px16);
    assert_int_equal(load(&b, &im, &info, &err), CX_OK);
    assert_string_equal(info.voi, "window");
    for (int i = 0; i < W * H; i++) {
        double x = px16[i] * 0.5 - 100, c = 700.25, w = 1201.5, y;
        if (x <= c - 0.5 - (w - 1) / 2)
            y = 0;
        else if (x > c - 0.5 + (w - 1) / 2)
            y = 255;
        else
            y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255;
        assert_int_equal(im.data[i], (int)floor(y + 0.5));
    }
    cx_image_free(&im);
    free(b.p);
    /* bits above BitsStored are ignored (an overlay bit, say) */
    uint16_t noisy[W * H];
    for (int i = 0; i < W * H; i++)
        noisy[i] = (uint16_t)(px16[i] | 0xf000);
    b = make_dicom(&s, noisy, sizeof noisy);
    cx_image im2;
    assert_int_equal(load(&b, &im2, &info, &err), CX_OK);
    cx_image_free(&im2);
    free(b.p);
    /* signed 12 bit, full range: -2048..2047 onto 0..255 */
    s = base_spec(H, W);
    s.alloc = 16;
    s.stored = 12;
    s.high = 11;
    s.repr = 1;
    b = make_dicom(&s, pxs, sizeof pxs);
    assert_int_equal(load(&b, &im, &info, &err), CX_OK);
    for (int i = 0; i < W * H; i++)
        assert_int_equal(im.data[i], (int)floor((pxs[i] + 2048) * 255.0 / 4095 + 0.5));
    cx_image_free(&im);
    free(b.p);
    /* SIGMOID and LINEAR_EXACT */
    const char *fns[2] = {"SIGMOID", "LINEAR_EXACT"};
    for (int f = 0; f < 2; f++) {
        s = base_spec(H, W);
        s.alloc = 16;
        s.stored = 12;
        s.high = 11;
        s.center = "2000";
        s.width = "1500";
        s.function = fns[f];
        b = make_dicom(&s, px16, sizeof px16);
        assert_int_equal(load(&b, &im, &info, &err), CX_OK);
        for (int i = 0; i < W * H; i++) {
            double x = px16[i], y;
            if (f == 0)
                y = 255 / (1 + exp(-4 * (x - 2000) / 1500));
            else
                y = x <= 2000 - 750 ? 0 : x > 2000 + 750 ? 255 : ((x - 2000) / 1500 + 0.5) * 255;
            assert_int_equal(im.data[i], (int)floor(y + 0.5));
        }
        cx_image_free(&im);
        free(b.p);
    }
}

static void test_modality_lut(void **state)
{
    (void)state;
    /* 8-bit stored values through a 256-entry, 10-bit Modality LUT */
    uint16_t lut[3 + 256];
    lut[0] = 256;
    lut[1] = 0;
    lut[2] = 10;
    for (int i = 0; i < 256; i++)
        lut[3 + i] = (uint16_t)(1023 - 4 * i);
    uint8_t px[W * H];
    for (int i = 0; i < W * H; i++)
        px[i] = (uint8_t)(i * 3);
    spec s = base_spec(H, W);
    s.mlut = lut;
    s.mlut_n = 256;
    buf b = make_dicom(&s, px, sizeof px);
    cx_image im;
    cx_image_info info;
    cx_err err = {0};
    assert_int_equal(load(&b, &im, &info, &err), CX_OK);
    for (int i = 0; i < W * H; i++)
        assert_int_equal(im.data[i], (int)floor((1023 - 4 * px[i]) * 255.0 / 1023 + 0.5));
    cx_image_free(&im);
    free(b.p);
}

static void test_rgb(void **state)
{
    (void)state;
    uint8_t px[W * H * 3], planar[W * H * 3];
    for (int i = 0; i < W * H * 3; i++)
        px[i] = (uint8_t)(i * 11);
    for (int i = 0; i < W * H; i++)
        for (int k = 0; k < 3; k++)
            planar[k * W * H + i] = px[3 * i + k];
    for (int pc = 0; pc < 2; pc++) {
        spec s = base_spec(H, W);
        s.spp = 3;
        s.photometric = "RGB";
        s.planar = pc;
        buf b = make_dicom(&s, pc ? planar : px, sizeof px);
        cx_image im;
        cx_image_info info;
        cx_err err = {0};
        assert_int_equal(load(&b, &im, &info, &err), CX_OK);
        assert_int_equal(im.channels, 3);
        assert_memory_equal(im.data, px, sizeof px);
        cx_image_free(&im);
        free(b.p);
    }
}

static int has_warning(const cx_image_info *info, const char *what)
{
    for (int i = 0; i < info->n_warnings; i++)
        if (strstr(info->warnings[i], what))
            return 1;
    return 0;
}

static void test_warnings(void **state)
{
    (void)state;
    uint8_t px[W * H * 2] = {0};
    cx_image im;
    cx_image_info info;
    cx_err err = {0};
    spec s = base_spec(H, W);
    s.view = "LL";
    buf b = make_dicom(&s, px, W * H);
    assert_int_equal(load(&b, &im, &info, &err), CX_OK);
    assert_true(has_warning(&info, "lateral"));
    cx_image_free(&im);
    free(b.p);
    s = base_spec(H, W);
    s.body = "KNEE";
    s.laterality = "R";
    s.modality = "MR";
    b = make_dicom(&s, px, W * H);
    assert_int_equal(load(&b, &im, &info, &err), CX_OK);
    assert_int_equal(info.n_warnings, 3);
    assert_true(has_warning(&info, "KNEE") && has_warning(&info, "MR") &&
                has_warning(&info, "ImageLaterality is R"));
    cx_image_free(&im);
    free(b.p);
    s = base_spec(H, W);
    s.frames = 2;
    b = make_dicom(&s, px, sizeof px);
    assert_int_equal(load(&b, &im, &info, &err), CX_OK);
    assert_true(has_warning(&info, "2 frames"));
    cx_image_free(&im);
    free(b.p);
    /* absent attributes: no warnings */
    s = base_spec(H, W);
    s.view = s.body = s.modality = NULL;
    b = make_dicom(&s, px, W * H);
    assert_int_equal(load(&b, &im, &info, &err), CX_OK);
    assert_int_equal(info.n_warnings, 0);
    cx_image_free(&im);
    free(b.p);
}

static void expect_error(const spec *s, const void *px, size_t n, cx_status code,
                         const char *what)
{
    buf b = make_dicom(s, px, n);
    cx_image im;
    cx_err err = {0};
    cx_status st = cx_image_load_mem(b.p, b.n, "bad.dcm", 0, &im, &err);
    if (st != code || !strstr(err.msg, what) || !strstr(err.msg, "bad.dcm"))
        fail_msg("expected %s with '%s', got %s: %s", cx_status_name(code), what,
                 cx_status_name(st), err.msg);
    assert_null(im.data);
    free(b.p);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    static uint16_t px[256 * 256];
    spec s = base_spec(H, W);
    s.rows = 0;
    expect_error(&s, px, 0, CX_EFORMAT, "37x0 pixels");
    s = base_spec(60000, 60000);
    expect_error(&s, px, 64, CX_ELIMIT, "beyond the limit");
    s = base_spec(H, W);
    s.stored = 12; /* more than allocated */
    expect_error(&s, px, W * H, CX_EFORMAT, "BitsStored 12");
    s = base_spec(H, W);
    s.alloc = 32;
    s.stored = 32;
    s.high = 31;
    expect_error(&s, px, (size_t)W * H * 4 > sizeof px ? sizeof px : (size_t)W * H * 4,
                 CX_EUNSUPPORTED, "BitsAllocated 32");
    s = base_spec(H, W);
    s.no_pixels = 1;
    expect_error(&s, px, 0, CX_EUNSUPPORTED, "without pixel data");
    s = base_spec(H, W);
    s.photometric = "PALETTE COLOR";
    expect_error(&s, px, W * H, CX_EUNSUPPORTED, "PALETTE COLOR");
    s = base_spec(H, W);
    s.spp = 3;
    s.photometric = "MONOCHROME2";
    expect_error(&s, px, W * H * 3, CX_EFORMAT, "three samples");
    s = base_spec(H, W);
    s.slope = "0";
    expect_error(&s, px, W * H, CX_EFORMAT, "RescaleSlope");
    /* pixel data shorter than the image: refused, not read past */
    s = base_spec(H, W);
    s.alloc = 16;
    s.stored = 16;
    s.high = 15;
    s.pixel_bytes_cut = 100;
    {
        buf b = make_dicom(&s, px, W * H * 2);
        cx_image im;
        cx_err err = {0};
        assert_int_not_equal(cx_image_load_mem(b.p, b.n, "short.dcm", 0, &im, &err), CX_OK);
        free(b.p);
    }
}

/* Lengths DCMTK would trust: refused before it allocates or recurses. */
static void test_hostile_structure(void **state)
{
    (void)state;
    cx_image im;
    cx_err err = {0};
    /* an OB element claiming 4 GiB in a file of a few hundred bytes */
    uint8_t px[W * H] = {0};
    spec s = base_spec(H, W);
    buf b = make_dicom(&s, px, sizeof px);
    buf h = {0};
    put(&h, b.p, 132);
    tag(&h, 0x0002, 0x0001, "OB");
    u16(&h, 0);
    u32(&h, 0xff000002u);
    put(&h, "\0\1", 2);
    assert_int_equal(cx_image_load_mem(h.p, h.n, "huge.dcm", 0, &im, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "claims 4278190082 bytes"));
    /* sequences nested 5000 deep (undefined lengths) */
    buf d = {0};
    el_str(&d, 0x0008, 0x0060, "CS", "CR");
    for (int i = 0; i < 5000; i++) {
        tag(&d, 0x0040, 0xa730, "SQ");
        u16(&d, 0);
        u32(&d, 0xffffffffu);
        u16(&d, 0xfffe);
        u16(&d, 0xe000);
        u32(&d, 0xffffffffu);
    }
    assert_int_equal(cx_image_load_mem(d.p, d.n, "deep.dcm", 0, &im, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "nested more than 32 deep"));
    free(b.p);
    free(h.p);
    free(d.p);
}

/* The fuzzers' regression inputs (tests/fuzz/corpus/dicom/regress-*): each
 * is refused quickly, none allocates gigabytes, recurses or loops (an alarm
 * ends the test after 20 s). */
static void test_fuzz_regressions(void **state)
{
    (void)state;
    const char *src = getenv("CX_SOURCE");
    if (!src)
        skip();
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/corpus/dicom", src);
    DIR *d = opendir(dir);
    if (!d)
        skip();
    alarm(20);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "regress-", 8))
            continue;
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        cx_image im;
        cx_err err = {0};
        cx_status st = cx_image_load(p, 0, &im, &err);
        if (st == CX_OK)
            fail_msg("%s decoded; expected an error", e->d_name);
        n++;
    }
    closedir(d);
    alarm(0);
    assert_true(n >= 8);
}

/* Every prefix of a valid file: an error or (never) pixels, no crash. */
static void test_truncations(void **state)
{
    (void)state;
    uint16_t px[W * H];
    for (int i = 0; i < W * H; i++)
        px[i] = (uint16_t)(i * 13);
    spec s = base_spec(H, W);
    s.alloc = 16;
    s.stored = 12;
    s.high = 11;
    s.center = "100";
    s.width = "200";
    buf b = make_dicom(&s, px, sizeof px);
    int ok = 0;
    for (size_t n = 1; n < b.n; n++) {
        cx_image im;
        cx_err err = {0};
        cx_status st = cx_image_load_mem(b.p, n, "cut.dcm", 0, &im, &err);
        if (st == CX_OK) {
            ok++;
            cx_image_free(&im);
        } else {
            assert_null(im.data);
        }
    }
    /* only a cut inside the last element's padding could still decode */
    assert_true(ok <= 1);
    /* flipped bytes in the header: errors or images, never a crash */
    for (size_t i = 128; i < b.n - W * H * 2; i++) {
        uint8_t save = b.p[i];
        b.p[i] ^= 0xff;
        cx_image im;
        cx_err err = {0};
        if (!cx_image_load_mem(b.p, b.n, "flip.dcm", 0, &im, &err))
            cx_image_free(&im);
        b.p[i] = save;
    }
    free(b.p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff),          cmocka_unit_test(test_8bit_identity),
        cmocka_unit_test(test_mono1_and_window), cmocka_unit_test(test_modality_lut),
        cmocka_unit_test(test_rgb),            cmocka_unit_test(test_warnings),
        cmocka_unit_test(test_bad_inputs),     cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_hostile_structure), cmocka_unit_test(test_fuzz_regressions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
