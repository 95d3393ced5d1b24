/* test_image.c - image decoding, preprocessing, PNG writing and CAM helpers.
 *
 * Every PNG colour type / bit depth / interlacing is generated here with
 * libpng from known samples and decoded back; the expected pixels follow the
 * documented PIL semantics (grey 1/2/4 bit scaled x255/x85/x17, alpha and
 * tRNS dropped, 16 bit -> high byte, palette lookup). Bad inputs: empty file,
 * text named .png, truncated PNG and JPEG, a header claiming 200000^2, 0x0,
 * unreadable paths and a directory. (Pixel parity with PIL itself on real
 * files is tests/py/test_image_pil.py.)
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
#include <jpeglib.h>
#include <math.h>
#include <png.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "chexnet.h"

static char g_tmp[1024];

static const char *tmp_path(const char *name)
{
    static char buf[8][1200];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 1200, "%s/%s", g_tmp, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n)
        assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(sz > 0 ? sz : 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

/* ------------------------------------------------------ PNG generation */

/* samples: [h][w][channels] values within the bit depth (palette: index). */
static void gen_png(const char *path, int w, int h, int ctype, int depth, int interlace,
                    const uint16_t *samples, const png_color *pal, int npal,
                    const uint8_t *trns, int ntrns)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_non_null(png);
    assert_non_null(info);
    if (setjmp(png_jmpbuf(png)))
        fail_msg("libpng write failed");
    png_init_io(png, f);
    png_set_IHDR(png, info, w, h, depth, ctype,
                 interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal)
        png_set_PLTE(png, info, pal, npal);
    if (trns)
        png_set_tRNS(png, info, trns, ntrns, NULL);
    png_write_info(png, info);
    int ch = ctype == 0 ? 1 : ctype == 2 ? 3 : ctype == 3 ? 1 : ctype == 4 ? 2 : 4;
    size_t rowbytes = ((size_t)w * ch * depth + 7) / 8;
    uint8_t *rows = calloc(h, rowbytes);
    png_bytep *rp = malloc(sizeof(png_bytep) * h);
    for (int y = 0; y < h; y++) {
        uint8_t *r = rows + y * rowbytes;
        rp[y] = r;
        for (int i = 0; i < w * ch; i++) {
            unsigned v = samples[(size_t)y * w * ch + i];
            if (depth == 16) {
                r[2 * i] = v >> 8;
                r[2 * i + 1] = v & 255;
            } else if (depth == 8) {
                r[i] = v;
            } else {
                int bit = i * depth;
                r[bit / 8] |= v << (8 - depth - bit % 8);
            }
        }
    }
    png_write_image(png, rp);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    fclose(f);
    free(rows);
    free(rp);
}

static void test_png_all_types(void **state)
{
    (void)state;
    const int w = 13, h = 11; /* odd: partial bytes, all Adam7 passes */
    struct {
        int ctype, depth;
    } cases[] = {{0, 1}, {0, 2}, {0, 4}, {0, 8}, {0, 16}, {2, 8}, {2, 16}, {3, 1},
                 {3, 2}, {3, 4}, {3, 8}, {4, 8}, {4, 16}, {6, 8}, {6, 16}};
    png_color pal[256];
    for (int i = 0; i < 256; i++) {
        pal[i].red = (uint8_t)(i * 7 + 3);
        pal[i].green = (uint8_t)(255 - i);
        pal[i].blue = (uint8_t)(i * 13);
    }
    uint8_t trns[4] = {0, 128, 255, 7};
    srand(42);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        for (int il = 0; il < 2; il++) {
            int ct = cases[k].ctype, d = cases[k].depth;
            int ch = ct == 0 ? 1 : ct == 2 ? 3 : ct == 3 ? 1 : ct == 4 ? 2 : 4;
            int npal = ct == 3 ? (1 << d) : 0;
            unsigned maxv = ct == 3 ? (unsigned)npal - 1 : (1u << d) - 1;
            uint16_t *s = malloc(sizeof(uint16_t) * w * h * ch);
            for (int i = 0; i < w * h * ch; i++)
                s[i] = (uint16_t)((unsigned)rand() % (maxv + 1));
            s[0] = (uint16_t)maxv; /* extremes present */
            if (w * h * ch > 1)
                s[ch] = 0;
            char name[64];
            snprintf(name, sizeof name, "gen_%d_%d_%d.png", ct, d, il);
            const char *p = tmp_path(name);
            gen_png(p, w, h, ct, d, il, s, ct == 3 ? pal : NULL, npal,
                    ct == 3 ? trns : NULL, ct == 3 ? (npal < 4 ? npal : 4) : 0);
            for (int want = 0; want <= 3; want += 3) {
                cx_image im;
                cx_err err;
                cx_status st = cx_image_load(p, want, &im, &err);
                if (st)
                    fail_msg("%s: %s", p, err.msg);
                int native = (ct & 2) ? 3 : 1;
                int och = want ? want : native;
                assert_int_equal(im.width, w);
                assert_int_equal(im.height, h);
                assert_int_equal(im.channels, och);
                for (int i = 0; i < w * h; i++) {
                    uint8_t e[3];
                    const uint16_t *q = s + (size_t)i * ch;
                    if (ct == 3) {
                        e[0] = pal[q[0]].red;
                        e[1] = pal[q[0]].green;
                        e[2] = pal[q[0]].blue;
                    } else {
                        for (int c = 0; c < 3; c++) {
                            unsigned v = q[ch >= 3 ? c : 0];
                            e[c] = (uint8_t)(d == 16 ? v >> 8
                                             : d == 8 ? v
                                             : v * (d == 1 ? 255 : d == 2 ? 85 : 17));
                        }
                    }
                    for (int c = 0; c < och; c++)
                        if (im.data[(size_t)i * och + c] != e[c])
                            fail_msg("%s (want %d): pixel %d channel %d: %d != %d", p, want, i,
                                     c, im.data[(size_t)i * och + c], e[c]);
                }
                cx_image_free(&im);
            }
            free(s);
        }
    }
}

static void test_luma(void **state)
{
    (void)state;
    uint16_t s[6] = {255, 0, 0, 10, 200, 30};
    const char *p = tmp_path("luma.png");
    gen_png(p, 2, 1, 2, 8, 0, s, NULL, 0, NULL, 0);
    cx_image im;
    cx_err err;
    assert_int_equal(cx_image_load(p, 1, &im, &err), CX_OK);
    assert_int_equal(im.channels, 1);
    /* PIL: (19595 R + 38470 G + 7471 B + 0x8000) >> 16 */
    assert_int_equal(im.data[0], (255 * 19595 + 0x8000) >> 16);
    assert_int_equal(im.data[1], (10 * 19595 + 200 * 38470 + 30 * 7471 + 0x8000) >> 16);
    cx_image_free(&im);
}

/* ------------------------------------------------------ JPEG generation */

static unsigned char *gen_jpeg(int w, int h, int comps, int progressive, unsigned long *n)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    jpeg_mem_dest(&c, &buf, n);
    c.image_width = w;
    c.image_height = h;
    c.input_components = comps;
    c.in_color_space = comps == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    if (progressive)
        jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    uint8_t *row = malloc((size_t)w * comps);
    while (c.next_scanline < (unsigned)h) {
        for (int x = 0; x < w; x++)
            for (int k = 0; k < comps; k++)
                row[x * comps + k] = (uint8_t)((x * 3 + c.next_scanline * 2 + k * 40) & 255);
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(row);
    return buf;
}

static void test_jpeg(void **state)
{
    (void)state;
    for (int comps = 1; comps <= 3; comps += 2)
        for (int prog = 0; prog < 2; prog++) {
            unsigned long n = 0;
            unsigned char *b = gen_jpeg(61, 47, comps, prog, &n);
            cx_image im;
            cx_err err;
            cx_status st = cx_image_load_mem(b, n, "gen.jpg", 0, &im, &err);
            if (st)
                fail_msg("%s", err.msg);
            assert_int_equal(im.width, 61);
            assert_int_equal(im.height, 47);
            assert_int_equal(im.channels, comps);
            double mad = 0;
            for (int y = 0; y < 47; y++)
                for (int x = 0; x < 61; x++)
                    for (int k = 0; k < comps; k++)
                        mad += fabs((double)im.data[(y * 61 + x) * comps + k] -
                                    ((x * 3 + y * 2 + k * 40) & 255));
            mad /= 61.0 * 47 * comps;
            assert_true(mad < 12.0); /* lossy, but the same picture */
            cx_image_free(&im);

            /* truncated: half the bytes, and just past the header */
            size_t cuts[2] = {n / 2, 200};
            for (int c = 0; c < 2; c++) {
                st = cx_image_load_mem(b, cuts[c], "cut.jpg", 0, &im, &err);
                assert_int_equal(st, CX_EFORMAT);
                assert_non_null(strstr(err.msg, "cut.jpg"));
                assert_null(im.data);
            }
            /* a file path too */
            const char *p = tmp_path("trunc.jpeg");
            write_bytes(p, b, n / 2);
            assert_int_equal(cx_image_load(p, 3, &im, &err), CX_EFORMAT);
            assert_non_null(strstr(err.msg, p));
            assert_non_null(strstr(err.msg, "truncated"));
            free(b);
        }
}

/* -------------------------------------------------------- bad inputs */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static size_t png_header_only(uint8_t *buf, uint32_t w, uint32_t h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(buf, sig, 8);
    put32(buf + 8, 13);
    memcpy(buf + 12, "IHDR", 4);
    put32(buf + 16, w);
    put32(buf + 20, h);
    buf[24] = 8;
    buf[25] = 0;
    buf[26] = buf[27] = buf[28] = 0;
    put32(buf + 29, (uint32_t)crc32(0, buf + 12, 17));
    put32(buf + 33, 0);
    memcpy(buf + 37, "IEND", 4);
    put32(buf + 41, (uint32_t)crc32(0, buf + 37, 4));
    return 45;
}

static void expect_fail(const char *path, cx_status code, const char *needle)
{
    cx_image im;
    cx_err err;
    memset(&err, 0, sizeof err);
    cx_status st = cx_image_load(path, 0, &im, &err);
    if (st != code)
        fail_msg("%s: status %s, expected %s (%s)", path, cx_status_name(st),
                 cx_status_name(code), err.msg);
    assert_null(im.data);
    assert_non_null(strstr(err.msg, path));
    if (needle && !strstr(err.msg, needle))
        fail_msg("%s: message '%s' lacks '%s'", path, err.msg, needle);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    const char *p;
    p = tmp_path("empty.png");
    write_bytes(p, "", 0);
    expect_fail(p, CX_EFORMAT, "empty");

    p = tmp_path("text.png");
    const char *txt = "this is a text file, not a picture\n";
    write_bytes(p, txt, strlen(txt));
    expect_fail(p, CX_EFORMAT, "not a PNG or JPEG");

    uint8_t hb[64];
    p = tmp_path("huge.png");
    write_bytes(p, hb, png_header_only(hb, 200000, 200000));
    expect_fail(p, CX_ELIMIT, "200000x200000");

    p = tmp_path("zero.png");
    write_bytes(p, hb, png_header_only(hb, 0, 0));
    expect_fail(p, CX_EFORMAT, "0x0");

    p = tmp_path("wide.png");
    write_bytes(p, hb, png_header_only(hb, CX_IMAGE_MAX_SIDE + 1, 1));
    expect_fail(p, CX_ELIMIT, NULL);

    /* header fine, no image data at all */
    p = tmp_path("noidat.png");
    write_bytes(p, hb, png_header_only(hb, 10, 10));
    expect_fail(p, CX_EFORMAT, NULL);

    /* truncated PNG: several cut points of a real encoded file */
    uint16_t s[64 * 64];
    for (int i = 0; i < 64 * 64; i++)
        s[i] = (uint16_t)((i * 37) & 255);
    const char *full = tmp_path("full.png");
    gen_png(full, 64, 64, 0, 8, 0, s, NULL, 0, NULL, 0);
    size_t n;
    uint8_t *b = read_bytes(full, &n);
    size_t cuts[] = {5, 8, 20, 33, 40, n / 2, n - 13, n - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        p = tmp_path("cut.png");
        write_bytes(p, b, cuts[k]);
        expect_fail(p, CX_EFORMAT, NULL);
    }
    /* corrupt IDAT byte: CRC error */
    b[n / 2] ^= 0x55;
    p = tmp_path("crc.png");
    write_bytes(p, b, n);
    expect_fail(p, CX_EFORMAT, NULL);
    free(b);

    expect_fail(tmp_path("does-not-exist.png"), CX_EIO, "cannot open");
    p = tmp_path("a-directory.png");
    mkdir(p, 0755);
    expect_fail(p, CX_EIO, "directory");

    cx_image im;
    cx_err err;
    assert_int_equal(cx_image_load_mem(NULL, 0, "x", 0, &im, &err), CX_EFORMAT);
    assert_int_equal(cx_image_load_mem("abc", 3, NULL, 0, &im, &err), CX_EFORMAT);
    assert_int_equal(cx_image_load_mem("abc", 3, "x", 2, &im, &err), CX_EARG);
}

/* ---------------------------------------------------- preprocessing */

static void fill(cx_image *im)
{
    for (int y = 0; y < im->height; y++)
        for (int x = 0; x < im->width; x++)
            for (int c = 0; c < im->channels; c++)
                im->data[((size_t)y * im->width + x) * im->channels + c] =
                    (uint8_t)((x + 16 * y + 50 * c) & 255);
}

static void test_resize(void **state)
{
    (void)state;
    cx_image a, b, g, g2;
    cx_err err;
    assert_int_equal(cx_image_new(40, 30, 3, &a, &err), CX_OK);
    fill(&a);
    /* same size: a copy */
    assert_int_equal(cx_image_resize(&a, 40, 30, &b, &err), CX_OK);
    assert_memory_equal(a.data, b.data, 40 * 30 * 3);
    cx_image_free(&b);
    /* constant images stay constant, down and up */
    memset(a.data, 77, 40 * 30 * 3);
    int sizes[][2] = {{7, 7}, {40, 5}, {3, 30}, {100, 71}, {1, 1}};
    for (int k = 0; k < 5; k++) {
        assert_int_equal(cx_image_resize(&a, sizes[k][0], sizes[k][1], &b, &err), CX_OK);
        for (int i = 0; i < sizes[k][0] * sizes[k][1] * 3; i++)
            assert_int_equal(b.data[i], 77);
        cx_image_free(&b);
    }
    /* grey resize == each channel of the replicated RGB resize */
    fill(&a);
    assert_int_equal(cx_image_new(40, 30, 1, &g, &err), CX_OK);
    fill(&g);
    assert_int_equal(cx_image_convert(&g, 3, &b, &err), CX_OK);
    cx_image rb;
    assert_int_equal(cx_image_resize(&b, 17, 9, &rb, &err), CX_OK);
    assert_int_equal(cx_image_resize(&g, 17, 9, &g2, &err), CX_OK);
    for (int i = 0; i < 17 * 9; i++)
        for (int c = 0; c < 3; c++)
            assert_int_equal(rb.data[i * 3 + c], g2.data[i]);
    cx_image_free(&rb);
    cx_image_free(&g2);
    cx_image_free(&b);
    /* short side */
    assert_int_equal(cx_image_resize_short(&a, 20, &b, &err), CX_OK);
    assert_int_equal(b.height, 20);
    assert_int_equal(b.width, 26); /* int(20 * 40 / 30) */
    cx_image_free(&b);
    assert_int_equal(cx_image_resize(&a, 0, 5, &b, &err), CX_EARG);
    assert_int_equal(cx_image_resize(&a, 5, CX_IMAGE_MAX_SIDE + 1, &b, &err), CX_ELIMIT);
    cx_image_free(&a);
    cx_image_free(&g);
}

static void test_crops(void **state)
{
    (void)state;
    cx_image a, b;
    cx_err err;
    assert_int_equal(cx_image_new(9, 7, 1, &a, &err), CX_OK);
    for (int y = 0; y < 7; y++)
        for (int x = 0; x < 9; x++)
            a.data[y * 9 + x] = (uint8_t)(10 * y + x);
    assert_int_equal(cx_image_crop(&a, 2, 1, 3, 4, &b, &err), CX_OK);
    assert_int_equal(b.data[0], 12);
    assert_int_equal(b.data[3 * 4 - 1], 10 * 4 + 4);
    cx_image_free(&b);
    assert_int_equal(cx_image_crop(&a, 7, 0, 3, 1, &b, &err), CX_EARG);
    assert_int_equal(cx_image_crop(&a, -1, 0, 3, 1, &b, &err), CX_EARG);
    /* centre: (9-4)/2 = 2.5 -> 2, (7-2)/2 = 2.5 -> 2 (round half to even) */
    assert_int_equal(cx_image_center_crop(&a, 4, 2, &b, &err), CX_OK);
    assert_int_equal(b.data[0], 10 * 2 + 2);
    cx_image_free(&b);
    /* (9-2)/2 = 3.5 -> 4 */
    assert_int_equal(cx_image_center_crop(&a, 2, 2, &b, &err), CX_OK);
    assert_int_equal(b.data[0], 10 * 2 + 4);
    cx_image_free(&b);
    assert_int_equal(cx_image_flip_h(&a, &b, &err), CX_OK);
    assert_int_equal(b.data[0], 8);
    assert_int_equal(b.data[9 + 8], 10);
    cx_image_free(&b);
    /* ten-crop order: tl, tr, bl, br, centre, then of the mirror image */
    cx_image t[10];
    assert_int_equal(cx_image_tencrop(&a, 3, t, &err), CX_OK);
    int first[10] = {0, 6, 40, 46, 23, 8, 2, 48, 42, 25};
    for (int k = 0; k < 10; k++) {
        assert_int_equal(t[k].width, 3);
        assert_int_equal(t[k].data[0], first[k]);
        cx_image_free(&t[k]);
    }
    assert_int_equal(cx_image_tencrop(&a, 8, t, &err), CX_EARG);
    cx_image_free(&a);
}

static void test_tensor(void **state)
{
    (void)state;
    cx_image a;
    cx_err err;
    assert_int_equal(cx_image_new(2, 1, 3, &a, &err), CX_OK);
    uint8_t px[6] = {0, 128, 255, 10, 20, 30};
    memcpy(a.data, px, 6);
    float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    float t[6];
    assert_int_equal(cx_image_to_tensor(&a, 3, mean, sd, t, &err), CX_OK);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 2; i++)
            assert_true(t[c * 2 + i] == ((float)px[i * 3 + c] / 255.0f - mean[c]) / sd[c]);
    float z[3] = {0.5f, 0.5f, 0.0f};
    assert_int_equal(cx_image_to_tensor(&a, 3, mean, z, t, &err), CX_ENUMERIC);
    cx_image_free(&a);
}

static void test_save_png(void **state)
{
    (void)state;
    for (int ch = 1; ch <= 3; ch += 2) {
        cx_image a, b;
        cx_err err;
        assert_int_equal(cx_image_new(33, 21, ch, &a, &err), CX_OK);
        fill(&a);
        const char *p = tmp_path(ch == 1 ? "save_g.png" : "save_rgb.png");
        assert_int_equal(cx_image_save_png(&a, p, &err), CX_OK);
        assert_int_equal(cx_image_load(p, 0, &b, &err), CX_OK);
        assert_int_equal(b.channels, ch);
        assert_memory_equal(a.data, b.data, 33 * 21 * ch);
        cx_image_free(&b);
        /* into a missing folder: an error, nothing written */
        assert_int_not_equal(cx_image_save_png(&a, tmp_path("no/such/dir/x.png"), &err), CX_OK);
        cx_image_free(&a);
    }
    /* no temporary files left behind */
    DIR *d = opendir(g_tmp);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp"))
            fail_msg("temporary file left: %s", e->d_name);
    closedir(d);
}

static void test_cam_helpers(void **state)
{
    (void)state;
    cx_err err;
    float cam[4] = {1, 1, 1, 1}, up[16];
    assert_int_equal(cx_cam_upsample(cam, 2, 2, 4, 4, up, &err), CX_OK);
    for (int i = 0; i < 16; i++)
        assert_true(up[i] == 0.0f); /* constant map -> 0 */
    float ramp[2] = {0, 1}, u4[4];
    assert_int_equal(cx_cam_upsample(ramp, 1, 2, 1, 4, u4, &err), CX_OK);
    /* half-pixel centres: x = -0.25 -> clamp 0, 0.25, 0.75, 1.25 -> clamp 1 */
    assert_true(fabsf(u4[0] - 0.0f) < 1e-6f && fabsf(u4[1] - 0.25f) < 1e-6f &&
                fabsf(u4[2] - 0.75f) < 1e-6f && fabsf(u4[3] - 1.0f) < 1e-6f);
    float bad[1] = {NAN};
    assert_int_equal(cx_cam_upsample(bad, 1, 1, 2, 2, up, &err), CX_ENUMERIC);
    /* colour map: luminance rises monotonically */
    double prev = -1;
    for (int i = 0; i <= 64; i++) {
        uint8_t rgb[3];
        cx_cam_colormap(i / 64.0f, rgb);
        double Y = 0.2126 * pow(rgb[0] / 255.0, 2.2) + 0.7152 * pow(rgb[1] / 255.0, 2.2) +
                   0.0722 * pow(rgb[2] / 255.0, 2.2);
        assert_true(Y > prev);
        prev = Y;
    }
    cx_image x, o;
    assert_int_equal(cx_image_new(50, 40, 1, &x, &err), CX_OK);
    fill(&x);
    float m3[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(cx_cam_overlay(&x, m3, 3, 3, 0.5f, &o, &err), CX_OK);
    assert_int_equal(o.width, 50);
    assert_int_equal(o.height, 40);
    assert_int_equal(o.channels, 3);
    cx_image_free(&o);
    assert_int_equal(cx_cam_overlay(&x, m3, 3, 3, 1.5f, &o, &err), CX_EARG);
    cx_image_free(&x);
}

/* ------------------------------------------- row-by-row decode + resize */

static void expect_same_image(const cx_image *a, const cx_image *b, const char *what)
{
    if (a->width != b->width || a->height != b->height || a->channels != b->channels)
        fail_msg("%s: %dx%dx%d vs %dx%dx%d", what, a->width, a->height, a->channels, b->width,
                 b->height, b->channels);
    size_t n = (size_t)a->width * a->height * a->channels;
    for (size_t i = 0; i < n; i++)
        if (a->data[i] != b->data[i])
            fail_msg("%s: byte %zu: %d vs %d", what, i, a->data[i], b->data[i]);
}

/* cx_image_load_resized (rows streamed into the resize) gives the pixels of
 * cx_image_load + cx_image_resize: every PNG type, interlaced or not, and
 * JPEGs, downscaled, upscaled, one side kept, same size. */
static void test_load_resized(void **state)
{
    (void)state;
    const int w = 97, h = 83;
    struct {
        int ctype, depth;
    } cases[] = {{0, 1}, {0, 4}, {0, 8}, {0, 16}, {2, 8}, {2, 16}, {3, 2}, {3, 8},
                 {4, 16}, {6, 8}, {6, 16}};
    png_color pal[256];
    for (int i = 0; i < 256; i++) {
        pal[i].red = (uint8_t)(i * 5 + 1);
        pal[i].green = (uint8_t)(200 - i);
        pal[i].blue = (uint8_t)(i * 11);
    }
    const int sizes[][2] = {{31, 29}, {224, 224}, {97, 40}, {50, 83}, {97, 83}, {1, 1}};
    srand(7);
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int il = 0; il < 2; il++) {
            int ct = cases[k].ctype, d = cases[k].depth;
            int ch = ct == 0 ? 1 : ct == 2 ? 3 : ct == 3 ? 1 : ct == 4 ? 2 : 4;
            unsigned maxv = ct == 3 ? (1u << d) - 1 : (1u << d) - 1;
            uint16_t *smp = malloc(sizeof(uint16_t) * w * h * ch);
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w * ch; x++) /* a gradient with noise */
                    smp[(size_t)y * w * ch + x] =
                        (uint16_t)(((unsigned)(x * 37 + y * 91) + (unsigned)rand() % 50) % (maxv + 1));
            char name[64];
            snprintf(name, sizeof name, "rs_%d_%d_%d.png", ct, d, il);
            const char *p = tmp_path(name);
            gen_png(p, w, h, ct, d, il, smp, ct == 3 ? pal : NULL, ct == 3 ? 1 << d : 0, NULL, 0);
            free(smp);
            for (int want = 0; want <= 3; want++) {
                if (want == 2)
                    continue;
                cx_image full, ref, got;
                cx_err err;
                if (cx_image_load(p, want, &full, &err))
                    fail_msg("%s", err.msg);
                for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++) {
                    if (cx_image_resize(&full, sizes[z][0], sizes[z][1], &ref, &err) ||
                        cx_image_load_resized(p, want, sizes[z][0], sizes[z][1], &got, &err))
                        fail_msg("%s: %s", p, err.msg);
                    char what[160];
                    snprintf(what, sizeof what, "%s channels %d to %dx%d", p, want, sizes[z][0],
                             sizes[z][1]);
                    expect_same_image(&got, &ref, what);
                    cx_image_free(&ref);
                    cx_image_free(&got);
                }
                cx_image_free(&full);
            }
        }
    for (int comps = 1; comps <= 3; comps += 2)
        for (int prog = 0; prog < 2; prog++) {
            unsigned long n = 0;
            unsigned char *b = gen_jpeg(161, 147, comps, prog, &n);
            const char *p = tmp_path("rs.jpg");
            write_bytes(p, b, n);
            free(b);
            for (int want = 0; want <= 3; want += 1 + (want == 1)) {
                cx_image full, ref, got;
                cx_err err;
                if (cx_image_load(p, want, &full, &err) ||
                    cx_image_resize(&full, 64, 70, &ref, &err) ||
                    cx_image_load_resized(p, want, 64, 70, &got, &err))
                    fail_msg("%s: %s", p, err.msg);
                expect_same_image(&got, &ref, "jpeg");
                cx_image_free(&full);
                cx_image_free(&ref);
                cx_image_free(&got);
            }
        }
    /* errors: a truncated file fails and leaves nothing allocated */
    const char *p = tmp_path("rs_2_8_0.png");
    size_t n;
    uint8_t *b = read_bytes(p, &n);
    const char *q = tmp_path("rs_cut.png");
    write_bytes(q, b, n / 2);
    free(b);
    cx_image got;
    cx_err err;
    assert_int_equal(cx_image_load_resized(q, 0, 20, 20, &got, &err), CX_EFORMAT);
    assert_null(got.data);
    assert_non_null(strstr(err.msg, q));
}

/* The model input made without keeping the decoded image (streamed) equals
 * the one made from the decoded image, plain and ten-crop, for 3- and
 * 1-channel models. */
static void test_load_input_streamed(void **state)
{
    (void)state;
    const int w = 300, h = 260;
    uint16_t *smp = malloc(sizeof(uint16_t) * w * h * 3);
    for (int i = 0; i < w * h * 3; i++)
        smp[i] = (uint16_t)((i * 7919u) % 65536u);
    const char *paths[2] = {tmp_path("in_rgb16.png"), tmp_path("in_grey.png")};
    gen_png(paths[0], w, h, 2, 16, 0, smp, NULL, 0, NULL, 0);
    for (int i = 0; i < w * h; i++)
        smp[i] &= 255;
    gen_png(paths[1], w, h, 0, 8, 1, smp, NULL, 0, NULL, 0);
    free(smp);
    for (int in_ch = 1; in_ch <= 3; in_ch += 2) {
        cx_config cfg;
        cx_model *m;
        cx_err err;
        assert_int_equal(cx_config_preset("densenet121", 2, in_ch, &cfg, &err), CX_OK);
        assert_int_equal(cx_model_new(&cfg, &m, &err), CX_OK);
        for (int tc = 0; tc < 2; tc++) {
            size_t nf = cx_image_input_floats(m, tc);
            float *a = malloc(sizeof(float) * nf), *b2 = malloc(sizeof(float) * nf);
            for (int k = 0; k < 2; k++) {
                cx_image keep;
                if (cx_image_load_input(m, paths[k], tc, a, &keep, &err) ||
                    cx_image_load_input(m, paths[k], tc, b2, NULL, &err))
                    fail_msg("%s: %s", paths[k], err.msg);
                if (memcmp(a, b2, sizeof(float) * nf))
                    fail_msg("%s: channels %d ten-crop %d: streamed input differs", paths[k],
                             in_ch, tc);
                cx_image_free(&keep);
            }
            free(a);
            free(b2);
        }
        cx_model_free(m);
    }
}

/* The pixel limit: refused from the header, naming the limit and the
 * option; raising it lets the image through. */
static void test_pixel_limit(void **state)
{
    (void)state;
    cx_limits saved, l;
    cx_limits_get(&saved);
    uint8_t buf[64];
    size_t n = png_header_only(buf, 5000, 4000);
    const char *p = tmp_path("limit.png");
    write_bytes(p, buf, n);
    l = saved;
    l.max_pixels = 1000000;
    cx_err err;
    assert_int_equal(cx_limits_set(&l, &err), CX_OK);
    expect_fail(p, CX_ELIMIT, "--max-pixels");
    cx_image im;
    assert_int_equal(cx_image_load_resized(p, 0, 10, 10, &im, &err), CX_ELIMIT);
    assert_non_null(strstr(err.msg, "20000000 pixels"));
    /* raised: the header passes, the (missing) data is then the error */
    l.max_pixels = 20000000;
    assert_int_equal(cx_limits_set(&l, &err), CX_OK);
    expect_fail(p, CX_EFORMAT, NULL);
    /* 0 selects the default (64 Mi pixels) */
    l.max_pixels = 0;
    assert_int_equal(cx_limits_set(&l, &err), CX_OK);
    cx_limits_get(&l);
    assert_true(l.max_pixels == (uint64_t)8192 * 8192);
    l.max_rows = (uint64_t)CX_LIMIT_MAX_ROWS + 1;
    assert_int_equal(cx_limits_set(&l, &err), CX_EARG);
    assert_int_equal(cx_limits_set(&saved, &err), CX_OK);
}

int main(void)
{
    const char *t = getenv("CX_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/test_image", t && *t ? t : "/tmp");
    mkdir(t && *t ? t : "/tmp", 0755);
    mkdir(g_tmp, 0755);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_all_types), cmocka_unit_test(test_luma),
        cmocka_unit_test(test_jpeg),          cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_resize),        cmocka_unit_test(test_crops),
        cmocka_unit_test(test_tensor),        cmocka_unit_test(test_save_png),
        cmocka_unit_test(test_cam_helpers),   cmocka_unit_test(test_load_resized),
        cmocka_unit_test(test_load_input_streamed), cmocka_unit_test(test_pixel_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
