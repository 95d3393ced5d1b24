/* image.c - PNG and JPEG decoding to PIL-identical 8-bit pixels, PNG writing.
 *
 * Decoders: Debian's libpng 1.6 and libjpeg-turbo (the same libjpeg PIL uses
 * on Debian, with PIL's settings: ISLOW DCT, fancy upsampling), so JPEG
 * pixels are identical to PIL's. See include/chexnet.h ("images") for the
 * exact pixel semantics, including the documented 16-bit grey choice.
 *
 * Error handling: both libraries report fatal errors by longjmp'ing back to
 * the decoder function. Everything allocated between setjmp and longjmp is
 * reachable through volatile pointers (or through the library's own structs,
 * which are destroyed on every path), so nothing leaks on error.
 */
#define _POSIX_C_SOURCE 200809L
#include "chexnet.h"
#include "io/dicom.h"
#include "io/fileutil.h"
#include "io/image_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

/* Encoded files larger than this are refused (a 16384^2 RGBA PNG stored
 * uncompressed is ~1 GiB). */

static const uint8_t PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static const char *nm(const char *name)
{
    return name && *name ? name : "<memory>";
}

int cx_image_sniff(const void *buf, size_t n)
{
    const uint8_t *b = buf;
    if (!b)
        return 0;
    if (n >= 8 && !memcmp(b, PNG_SIG, 8))
        return 1;
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return 2;
    if (cx_dicom_sniff(b, n))
        return 3;
    return 0;
}

void cx_image_free(cx_image *im)
{
    if (!im)
        return;
    free(im->data);
    memset(im, 0, sizeof *im);
}

cx_status cx_image_new(int width, int height, int channels, cx_image *out,
                       cx_err *err)
{
    if (!out)
        return cx_seterr(err, CX_EARG, "cx_image_new: out is NULL");
    memset(out, 0, sizeof *out);
    if (width <= 0 || height <= 0 || (channels != 1 && channels != 3))
        return cx_seterr(err, CX_EARG, "cx_image_new: invalid size %dx%dx%d",
                         width, height, channels);
    if (width > CX_IMAGE_MAX_SIDE || height > CX_IMAGE_MAX_SIDE)
        return cx_seterr(err, CX_ELIMIT,
                         "cx_image_new: %dx%d exceeds the limit of %d per side",
                         width, height, CX_IMAGE_MAX_SIDE);
    size_t n = (size_t)width * height * channels;
    out->data = calloc(n, 1);
    if (!out->data)
        return cx_seterr(err, CX_ENOMEM, "cannot allocate a %dx%d image", width,
                         height);
    out->width = width;
    out->height = height;
    out->channels = channels;
    return CX_OK;
}

/* PIL's ITU-R 601-2 luma (Convert.c L24). */
static inline uint8_t luma(const uint8_t *p)
{
    return (uint8_t)((p[0] * 19595u + p[1] * 38470u + p[2] * 7471u + 0x8000u) >> 16);
}

cx_status cx_image_convert(const cx_image *in, int channels, cx_image *out,
                           cx_err *err)
{
    if (!in || !in->data || !out || (in->channels != 1 && in->channels != 3))
        return cx_seterr(err, CX_EARG, "cx_image_convert: invalid image");
    if (channels != 1 && channels != 3)
        return cx_seterr(err, CX_EARG, "cx_image_convert: channels must be 1 or 3, not %d",
                         channels);
    cx_status st = cx_image_new(in->width, in->height, channels, out, err);
    if (st)
        return st;
    size_t np = (size_t)in->width * in->height;
    const uint8_t *s = in->data;
    uint8_t *d = out->data;
    if (in->channels == channels)
        memcpy(d, s, np * channels);
    else if (channels == 3)
        for (size_t i = 0; i < np; i++)
            d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i];
    else
        for (size_t i = 0; i < np; i++)
            d[i] = luma(s + 3 * i);
    return CX_OK;
}

static cx_status check_dims(const char *name, const char *fmt, unsigned long w,
                            unsigned long h, cx_err *err)
{
    if (w == 0 || h == 0)
        return cx_seterr(err, CX_EFORMAT, "%s: invalid %s: header claims %lux%lu pixels",
                         nm(name), fmt, w, h);
    if (w > CX_IMAGE_MAX_SIDE || h > CX_IMAGE_MAX_SIDE)
        return cx_seterr(err, CX_ELIMIT,
                         "%s: %s header claims %lux%lu pixels, beyond the limit of %d per side",
                         nm(name), fmt, w, h, CX_IMAGE_MAX_SIDE);
    cx_limits lim;
    cx_limits_get(&lim);
    uint64_t np = (uint64_t)w * h;
    if (np > lim.max_pixels)
        return cx_seterr(err, CX_ELIMIT,
                         "%s: %s of %lux%lu = %llu pixels, more than the pixel limit of %llu "
                         "(raise it with --max-pixels N)",
                         nm(name), fmt, w, h, (unsigned long long)np,
                         (unsigned long long)lim.max_pixels);
    return CX_OK;
}

/* Converts n decoded source pixels with sch channels (first three = RGB when
 * sch >= 3, first = grey when sch <= 2) to dch channels. */
static void pixels_to(uint8_t *d, int dch, const uint8_t *s, int sch, size_t n)
{
    if (sch <= 2) {
        if (dch == 1)
            for (size_t i = 0; i < n; i++)
                d[i] = s[i * sch];
        else
            for (size_t i = 0; i < n; i++)
                d[3 * i] = d[3 * i + 1] = d[3 * i + 2] = s[i * sch];
    } else {
        if (dch == 3)
            for (size_t i = 0; i < n; i++) {
                d[3 * i] = s[i * sch];
                d[3 * i + 1] = s[i * sch + 1];
                d[3 * i + 2] = s[i * sch + 2];
            }
        else
            for (size_t i = 0; i < n; i++)
                d[i] = luma(s + i * sch);
    }
}

/* ------------------------------------------------------------------ PNG */

typedef struct {
    const uint8_t *buf;
    size_t n, pos;
    char msg[256];
} png_src;

static void png_on_error(png_structp png, png_const_charp msg)
{
    png_src *src = png_get_error_ptr(png);
    if (src && !src->msg[0])
        snprintf(src->msg, sizeof src->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg; /* benign (e.g. an ancillary chunk's CRC): PIL accepts these too */
}

static void png_read_mem(png_structp png, png_bytep dst, size_t len)
{
    png_src *src = png_get_io_ptr(png);
    if (len > src->n - src->pos) {
        snprintf(src->msg, sizeof src->msg, "truncated file (unexpected end of data)");
        png_error(png, "truncated");
    }
    memcpy(dst, src->buf + src->pos, len);
    src->pos += len;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* How a decoded PNG row (8 bits per sample after libpng's transforms) becomes
 * output pixels. */
typedef struct {
    int ctype, depth, sch, dch;
    unsigned mul;          /* 1/2/4-bit grey: PIL's "1" (x255), "L;2" (x85), "L;4" (x17) */
    uint8_t lut[256][3];   /* palette */
} png_conv;

static void png_convert_row(const png_conv *c, uint8_t *dst, uint8_t *src, size_t w)
{
    if (c->ctype == PNG_COLOR_TYPE_PALETTE) {
        if (c->dch == 3)
            for (size_t i = 0; i < w; i++)
                memcpy(dst + 3 * i, c->lut[src[i]], 3);
        else
            for (size_t i = 0; i < w; i++)
                dst[i] = luma(c->lut[src[i]]);
        return;
    }
    if (c->mul > 1)
        for (size_t i = 0; i < w; i++)
            src[i] = (uint8_t)(src[i] * c->mul);
    pixels_to(dst, c->dch, src, c->sch, w);
}

static cx_status decode_png(const uint8_t *buf, size_t n, const char *name,
                            int want, cx_row_sink *sink, cx_err *err)
{
    /* Check the IHDR ourselves so that absurd sizes are refused with a clear
     * message before libpng (or we) allocate anything. */
    if (n < 33 || memcmp(buf + 12, "IHDR", 4) || be32(buf + 8) != 13)
        return cx_seterr(err, CX_EFORMAT, "%s: invalid PNG: %s", nm(name),
                         n < 33 ? "truncated file (no complete IHDR chunk)"
                                : "first chunk is not IHDR");
    cx_status st = check_dims(name, "PNG", be32(buf + 16), be32(buf + 20), err);
    if (st)
        return st;

    png_src src = {buf, n, 0, {0}};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src,
                                             png_on_error, png_on_warning);
    if (!png)
        return cx_seterr(err, CX_ENOMEM, "%s: cannot create a PNG decoder", nm(name));
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return cx_seterr(err, CX_ENOMEM, "%s: cannot create a PNG decoder", nm(name));
    }
    uint8_t *volatile raw = NULL;     /* decoded rows (interlaced: all of them) */
    png_bytep *volatile rows = NULL;  /* interlaced: row pointers into raw */
    uint8_t *volatile outrow = NULL;  /* one converted row */
    png_conv *volatile conv = NULL;
    volatile cx_status code = CX_EFORMAT; /* another code: err is already set */
    if (setjmp(png_jmpbuf(png))) {
        free(raw);
        free(rows);
        free(outrow);
        free(conv);
        png_destroy_read_struct(&png, &info, NULL);
        if (code != CX_EFORMAT)
            return code;
        return cx_seterr(err, CX_EFORMAT, "%s: invalid PNG: %s", nm(name),
                         src.msg[0] ? src.msg : "decoding failed");
    }
    png_set_user_limits(png, CX_IMAGE_MAX_SIDE, CX_IMAGE_MAX_SIDE);
    /* Every ancillary chunk but tRNS is skipped unread (its CRC checked,
     * its data discarded as it streams past): none of them changes the
     * pixels chexnet gives (no gamma, no colour management, no text), and
     * libpng would otherwise allocate the length a chunk claims, so a
     * 59-byte file claiming a 1.6 GB tEXt chunk made it ask for 1.6 GB. */
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);

    conv = calloc(1, sizeof *conv);
    if (!conv) {
        code = cx_seterr(err, CX_ENOMEM, "%s: out of memory", nm(name));
        png_longjmp(png, 1);
    }
    png_colorp palette = NULL;
    int npal = 0;
    if (ctype == PNG_COLOR_TYPE_PALETTE &&
        !(png_get_PLTE(png, info, &palette, &npal) & PNG_INFO_PLTE)) {
        snprintf(src.msg, sizeof src.msg, "palette image without a PLTE chunk");
        png_error(png, "no PLTE");
    }
    if (ctype == PNG_COLOR_TYPE_PALETTE) {
        /* Indexes past the PLTE entries: PIL's palette keeps its initial
         * grey ramp there (i, i, i); libpng only warns. */
        for (int i = 0; i < 256; i++)
            conv->lut[i][0] = conv->lut[i][1] = conv->lut[i][2] = (uint8_t)i;
        for (int i = 0; i < npal && i < 256; i++) {
            conv->lut[i][0] = palette[i].red;
            conv->lut[i][1] = palette[i].green;
            conv->lut[i][2] = palette[i].blue;
        }
    }
    /* Only unpacking and 16 -> 8 bits (high byte: libpng's strip_16, the
     * same as PIL's ";16B" raw modes). No gamma, no tRNS expansion, no sBIT
     * shift: PIL applies none of them. */
    if (depth == 16)
        png_set_strip_16(png);
    if (depth < 8)
        png_set_packing(png);
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int sch = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)w * sch || sch < 1 || sch > 4) {
        snprintf(src.msg, sizeof src.msg, "unexpected row layout");
        png_error(png, "layout");
    }
    int native = (ctype & PNG_COLOR_MASK_COLOR) ? 3 : 1;
    conv->ctype = ctype;
    conv->depth = depth;
    conv->sch = sch;
    conv->dch = want ? want : native;
    conv->mul = ctype == PNG_COLOR_TYPE_GRAY && depth < 8
                    ? (depth == 1 ? 255u : depth == 2 ? 85u : 17u)
                    : 1u;
    outrow = malloc((size_t)w * conv->dch);
    raw = malloc(passes > 1 ? rowbytes * h : rowbytes);
    if (passes > 1 && raw)
        rows = malloc(sizeof(png_bytep) * h);
    if (!outrow || !raw || (passes > 1 && !rows)) {
        code = cx_seterr(err, CX_ENOMEM, "%s: out of memory for %ux%u pixels", nm(name), w, h);
        png_longjmp(png, 1);
    }
    if ((st = sink->begin(sink, (int)w, (int)h, conv->dch, err))) {
        code = st;
        png_longjmp(png, 1);
    }
    if (passes > 1) {
        /* Interlaced: libpng assembles the passes in the whole image. */
        for (png_uint_32 y = 0; y < h; y++)
            rows[y] = raw + (size_t)y * rowbytes;
        png_read_image(png, rows);
        for (png_uint_32 y = 0; y < h; y++) {
            png_convert_row(conv, outrow, rows[y], w);
            sink->row(sink, (int)y, outrow);
        }
    } else {
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(png, raw, NULL);
            png_convert_row(conv, outrow, raw, w);
            sink->row(sink, (int)y, outrow);
        }
    }
    png_read_end(png, NULL); /* checks the rest of the stream (CRCs, IEND) */
    free(raw);
    free(rows);
    free(outrow);
    free(conv);
    png_destroy_read_struct(&png, &info, NULL);
    return CX_OK;
}

/* ----------------------------------------------------------------- JPEG */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 64];
} jpeg_errmgr;

static void jpeg_on_error(j_common_ptr cinfo)
{
    jpeg_errmgr *e = (jpeg_errmgr *)cinfo->err;
    if (!e->msg[0])
        (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings (level -1) mean corrupt data that libjpeg would paper over, e.g.
 * "Premature end of JPEG file" padded with grey: an error for us. Trace
 * messages (level >= 0) are ignored. */
static void jpeg_on_message(j_common_ptr cinfo, int level)
{
    if (level < 0) {
        jpeg_errmgr *e = (jpeg_errmgr *)cinfo->err;
        if (!e->msg[0]) {
            char m[JMSG_LENGTH_MAX];
            (*cinfo->err->format_message)(cinfo, m);
            if (cinfo->err->msg_code == JWRN_JPEG_EOF)
                snprintf(e->msg, sizeof e->msg, "truncated file (%s)", m);
            else
                snprintf(e->msg, sizeof e->msg, "%s", m);
        }
        longjmp(e->jb, 1);
    }
}

static void jpeg_silent(j_common_ptr cinfo)
{
    (void)cinfo;
}

static cx_status decode_jpeg(const uint8_t *buf, size_t n, const char *name,
                             int want, cx_row_sink *sink, cx_err *err)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_errmgr em;
    memset(&em, 0, sizeof em);
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&em.pub);
    em.pub.error_exit = jpeg_on_error;
    em.pub.emit_message = jpeg_on_message;
    em.pub.output_message = jpeg_silent;
    uint8_t *volatile raw = NULL;     /* one decoded row */
    uint8_t *volatile outrow = NULL;  /* one converted row */
    volatile cx_status code = CX_EFORMAT;
    if (setjmp(em.jb)) {
        free(raw);
        free(outrow);
        jpeg_destroy_decompress(&cinfo);
        if (code != CX_EFORMAT)
            return code; /* err already set */
        return cx_seterr(err, CX_EFORMAT, "%s: invalid JPEG: %s", nm(name),
                         em.msg[0] ? em.msg : "decoding failed");
    }
    jpeg_create_decompress(&cinfo);
    cinfo.mem->max_memory_to_use = (long)1 << 31;
    jpeg_mem_src(&cinfo, buf, (unsigned long)n);
    jpeg_read_header(&cinfo, TRUE);
    cx_status st = check_dims(name, "JPEG", cinfo.image_width, cinfo.image_height, err);
    if (st) {
        code = st;
        longjmp(em.jb, 1);
    }
    int sch;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
        cinfo.out_color_space = JCS_GRAYSCALE;
        sch = 1;
        break;
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo.out_color_space = JCS_RGB;
        sch = 3;
        break;
    default:
        code = cx_seterr(err, CX_EUNSUPPORTED,
                         "%s: CMYK/YCCK JPEG images are not supported (convert to RGB first)",
                         nm(name));
        longjmp(em.jb, 1);
    }
    jpeg_calc_output_dimensions(&cinfo);
    unsigned w = cinfo.output_width, h = cinfo.output_height;
    if ((int)cinfo.output_components != sch) {
        snprintf(em.msg, sizeof em.msg, "unexpected number of components");
        longjmp(em.jb, 1);
    }
    int dch = want ? want : sch;
    raw = malloc((size_t)w * sch);
    outrow = malloc((size_t)w * dch);
    if (!raw || !outrow) {
        code = cx_seterr(err, CX_ENOMEM, "%s: out of memory for %ux%u pixels", nm(name), w, h);
        longjmp(em.jb, 1);
    }
    if ((st = sink->begin(sink, (int)w, (int)h, dch, err))) {
        code = st;
        longjmp(em.jb, 1);
    }
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_width != w || cinfo.output_height != h) {
        snprintf(em.msg, sizeof em.msg, "unexpected output size");
        longjmp(em.jb, 1);
    }
    while (cinfo.output_scanline < h) {
        unsigned y = cinfo.output_scanline;
        JSAMPROW row = raw;
        if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) {
            snprintf(em.msg, sizeof em.msg, "truncated file");
            longjmp(em.jb, 1);
        }
        if (dch == sch) {
            sink->row(sink, (int)y, raw);
        } else {
            pixels_to(outrow, dch, raw, sch, w);
            sink->row(sink, (int)y, outrow);
        }
    }
    jpeg_finish_decompress(&cinfo);
    free(raw);
    free(outrow);
    jpeg_destroy_decompress(&cinfo);
    return CX_OK;
}

/* ------------------------------------------------------------- loading */

/* DICOM: DCMTK decodes the whole frame (the pixel pipeline needs every
 * stored value for the window); the 8-bit result goes to the sink row by
 * row. */
static cx_status decode_dicom(const uint8_t *buf, size_t n, const char *name, int want,
                              cx_row_sink *sink, cx_err *err)
{
    cx_image im = {0};
    cx_status st = cx_dicom_decode(buf, n, name, want, &im, NULL, err);
    if (st)
        return st;
    if (!(st = check_dims(name, "DICOM", (unsigned long)im.width, (unsigned long)im.height, err)) &&
        !(st = sink->begin(sink, im.width, im.height, im.channels, err))) {
        size_t stride = (size_t)im.width * im.channels;
        for (int y = 0; y < im.height; y++)
            sink->row(sink, y, im.data + stride * y);
    }
    cx_image_free(&im);
    return st;
}

cx_status cx_image_decode_mem(const void *buf, size_t n, const char *name, int channels,
                              cx_row_sink *sink, cx_err *err)
{
    if (channels != 0 && channels != 1 && channels != 3)
        return cx_seterr(err, CX_EARG, "%s: channels must be 0, 1 or 3, not %d",
                         nm(name), channels);
    if (!buf || n == 0)
        return cx_seterr(err, CX_EFORMAT, "%s: empty file, not an image", nm(name));
    switch (cx_image_sniff(buf, n)) {
    case 1:
        return decode_png(buf, n, name, channels, sink, err);
    case 2:
        return decode_jpeg(buf, n, name, channels, sink, err);
    case 3:
        if (!cx_dicom_decode)
            return cx_seterr(err, CX_EUNSUPPORTED, "%s: %s", nm(name), CX_DICOM_NOT_LINKED);
        return decode_dicom(buf, n, name, channels, sink, err);
    default:
        return cx_seterr(err, CX_EFORMAT,
                         "%s: not a PNG or JPEG image nor a DICOM file (unrecognised "
                         "signature)", nm(name));
    }
}

/* The sink that keeps the whole image. */
typedef struct {
    cx_row_sink base;
    cx_image *out;
    const char *name;
} full_sink;

static cx_status full_begin(cx_row_sink *s, int w, int h, int ch, cx_err *err)
{
    full_sink *f = (full_sink *)s;
    cx_status st = cx_image_new(w, h, ch, f->out, err);
    if (st == CX_ENOMEM)
        return cx_seterr(err, CX_ENOMEM, "%s: out of memory for %dx%d pixels", nm(f->name), w,
                         h);
    return st;
}

static void full_row(cx_row_sink *s, int y, const uint8_t *px)
{
    full_sink *f = (full_sink *)s;
    size_t rb = (size_t)f->out->width * f->out->channels;
    memcpy(f->out->data + (size_t)y * rb, px, rb);
}

cx_status cx_image_load_mem(const void *buf, size_t n, const char *name,
                            int channels, cx_image *out, cx_err *err)
{
    if (!out)
        return cx_seterr(err, CX_EARG, "cx_image_load_mem: out is NULL");
    memset(out, 0, sizeof *out);
    full_sink f = {{full_begin, full_row}, out, name};
    cx_status st = cx_image_decode_mem(buf, n, name, channels, &f.base, err);
    if (st)
        cx_image_free(out);
    return st;
}

/* Reads an image file whole (the encoded bytes): a regular file within the
 * size limit, not empty. */
cx_status cx_image_read_file(const char *path, uint8_t **data, size_t *len, cx_err *err)
{
    *data = NULL;
    *len = 0;
    if (!path || !*path)
        return cx_seterr(err, CX_EARG, "cx_image_load: empty path");
    cx_read_opts o = {0};
    o.max_bytes = CX_IMAGE_MAX_FILE_BYTES;
    o.regular_only = 1;
    o.missing = CX_EIO;
    char *buf;
    cx_status st = cx_read_file_ex(path, &o, &buf, len, NULL, err);
    if (st)
        return st;
    if (*len == 0) {
        free(buf);
        return cx_seterr(err, CX_EFORMAT, "%s: empty file, not an image", path);
    }
    *data = (uint8_t *)buf;
    return CX_OK;
}

cx_status cx_image_decode_file(const char *path, int channels, cx_row_sink *sink,
                               cx_err *err)
{
    uint8_t *buf;
    size_t n;
    cx_status st = cx_image_read_file(path, &buf, &n, err);
    if (st)
        return st;
    st = cx_image_decode_mem(buf, n, path, channels, sink, err);
    free(buf);
    return st;
}

cx_status cx_image_load(const char *path, int channels, cx_image *out,
                        cx_err *err)
{
    if (!out)
        return cx_seterr(err, CX_EARG, "cx_image_load: out is NULL");
    memset(out, 0, sizeof *out);
    full_sink f = {{full_begin, full_row}, out, path};
    cx_status st = cx_image_decode_file(path, channels, &f.base, err);
    if (st)
        cx_image_free(out);
    return st;
}

/* -------------------------------------------------------------- writing */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
    char msg[256];
} png_sink;

static void png_write_mem(png_structp png, png_bytep data, size_t len)
{
    png_sink *s = png_get_io_ptr(png);
    if (s->n + len > s->cap) {
        size_t cap = s->cap ? s->cap : 1 << 16;
        while (cap < s->n + len)
            cap *= 2;
        uint8_t *q = realloc(s->p, cap);
        if (!q) {
            s->oom = 1;
            png_error(png, "out of memory");
        }
        s->p = q;
        s->cap = cap;
    }
    memcpy(s->p + s->n, data, len);
    s->n += len;
}

static void png_flush_mem(png_structp png)
{
    (void)png;
}

static void png_on_werror(png_structp png, png_const_charp msg)
{
    png_sink *s = png_get_error_ptr(png);
    if (s && !s->msg[0])
        snprintf(s->msg, sizeof s->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

cx_status cx_image_save_png(const cx_image *im, const char *path, cx_err *err)
{
    if (!im || !im->data || im->width <= 0 || im->height <= 0 ||
        (im->channels != 1 && im->channels != 3))
        return cx_seterr(err, CX_EARG, "cx_image_save_png: invalid image");
    if (!path || !*path)
        return cx_seterr(err, CX_EARG, "cx_image_save_png: empty path");
    png_sink sink;
    memset(&sink, 0, sizeof sink);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &sink,
                                              png_on_werror, png_on_warning);
    if (!png)
        return cx_seterr(err, CX_ENOMEM, "%s: cannot create a PNG encoder", path);
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        return cx_seterr(err, CX_ENOMEM, "%s: cannot create a PNG encoder", path);
    }
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        free(sink.p);
        png_destroy_write_struct(&png, &info);
        return cx_seterr(err, sink.oom ? CX_ENOMEM : CX_EIO, "%s: cannot encode PNG: %s",
                         path, sink.msg[0] ? sink.msg : "libpng error");
    }
    png_set_write_fn(png, &sink, png_write_mem, png_flush_mem);
    png_set_compression_level(png, 3);
    png_set_IHDR(png, info, (png_uint_32)im->width, (png_uint_32)im->height, 8,
                 im->channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    rows = malloc(sizeof(png_bytep) * im->height);
    if (!rows) {
        sink.oom = 1;
        png_error(png, "out of memory");
    }
    size_t stride = (size_t)im->width * im->channels;
    for (int y = 0; y < im->height; y++)
        rows[y] = im->data + (size_t)y * stride;
    png_write_image(png, rows);
    png_write_end(png, NULL);
    free(rows);
    png_destroy_write_struct(&png, &info);

    cx_atomic_file *af = NULL;
    cx_status st = cx_atomic_open(path, &af, err);
    if (!st) {
        st = cx_atomic_write(af, sink.p, sink.n, err);
        if (st)
            cx_atomic_abort(af);
        else
            st = cx_atomic_commit(af, err);
    }
    free(sink.p);
    return st;
}
