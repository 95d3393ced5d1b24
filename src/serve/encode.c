/* encode.c - growable text buffers, JSON strings, base64 and PNG encoding in
 * memory (libpng) for the server's responses. */
#define _GNU_SOURCE
#include "serve/serve.h"
#include "io/json.h"

#include <png.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int sb_grow(sbuf *b, size_t add)
{
    if (b->oom)
        return -1;
    if (b->n + add + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + add + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void sb_put(sbuf *b, const void *d, size_t n)
{
    if (sb_grow(b, n))
        return;
    memcpy(b->p + b->n, d, n);
    b->n += n;
    b->p[b->n] = 0;
}

void sb_puts(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

void sb_printf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sb_grow(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

static void sb_put_cb(void *ctx, const char *s, size_t n)
{
    sb_put(ctx, s, n);
}

/* JSON string (cx_json_escape: always valid JSON). */
void sb_json_str(sbuf *b, const char *s)
{
    cx_json_escape_put(sb_put_cb, b, s);
}

void sb_base64(sbuf *b, const uint8_t *d, size_t n)
{
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (sb_grow(b, (n + 2) / 3 * 4))
        return;
    char *o = b->p + b->n;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *o++ = T[v >> 18];
        *o++ = T[(v >> 12) & 63];
        *o++ = T[(v >> 6) & 63];
        *o++ = T[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0);
        *o++ = T[v >> 18];
        *o++ = T[(v >> 12) & 63];
        *o++ = i + 1 < n ? T[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    b->n = (size_t)(o - b->p);
    b->p[b->n] = 0;
}

/* ------------------------------------------------------------------ PNG */

typedef struct {
    sbuf out;
    char msg[200];
} png_ctx;

static void on_write(png_structp png, png_bytep data, size_t len)
{
    png_ctx *c = png_get_io_ptr(png);
    sb_put(&c->out, data, len);
    if (c->out.oom)
        png_error(png, "out of memory");
}

static void on_flush(png_structp png)
{
    (void)png;
}

static void on_error(png_structp png, png_const_charp msg)
{
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "libpng error");
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

cx_status serve_png_encode(const uint8_t *pix, int w, int h, int ch, uint8_t **out, size_t *n,
                           cx_err *err)
{
    *out = NULL;
    *n = 0;
    if (!pix || w <= 0 || h <= 0 || (ch != 1 && ch != 3 && ch != 4))
        return cx_seterr(err, CX_EARG, "serve_png_encode: invalid image");
    png_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, NULL);
        free(c);
        return cx_seterr(err, CX_ENOMEM, "out of memory (libpng)");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        cx_status st = cx_seterr(err, c->out.oom ? CX_ENOMEM : CX_EIO, "PNG encoding: %s",
                                 c->msg);
        free(c->out.p);
        free(c);
        return st;
    }
    png_set_write_fn(png, c, on_write, on_flush);
    /* speed over size: these PNGs travel once, to a browser or a PACS */
    png_set_compression_level(png, 1);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8,
                 ch == 1 ? PNG_COLOR_TYPE_GRAY : ch == 3 ? PNG_COLOR_TYPE_RGB
                                                         : PNG_COLOR_TYPE_RGB_ALPHA,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, pix + (size_t)y * w * ch);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    *out = (uint8_t *)c->out.p;
    *n = c->out.n;
    free(c);
    return CX_OK;
}
