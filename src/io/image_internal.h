/* image_internal.h - row-by-row image decoding (internal).
 *
 * The decoders hand their output to a sink one row at a time, in order
 * (y = 0 .. h-1), each row w pixels of ch 8-bit channels (HWC, the pixels
 * cx_image_load gives). A sink that keeps only what it needs (a resize keeps
 * the horizontally resampled rows) decodes an image without ever holding it:
 * memory then grows with neither the bit depth nor the pixel count, except
 * for interlaced PNGs (libpng needs the whole image, at 8 bits per sample)
 * and progressive JPEGs (libjpeg keeps the coefficients).
 */
#ifndef CX_IO_IMAGE_INTERNAL_H
#define CX_IO_IMAGE_INTERNAL_H

#include "chexnet.h"

typedef struct cx_row_sink cx_row_sink;
struct cx_row_sink {
    /* Called once, with the decoded size and the channels of the rows, before
     * any row; a status other than CX_OK (err set) stops decoding. */
    cx_status (*begin)(cx_row_sink *s, int w, int h, int ch, cx_err *err);
    /* Row y (px: w * ch bytes, valid during the call). */
    void (*row)(cx_row_sink *s, int y, const uint8_t *px);
};

/* Decodes buf[0..n) (PNG or JPEG; channels as cx_image_load) into sink. On
 * an error the sink may have received some rows; the caller discards them.
 * The pixel limit (cx_limits) is checked from the header, before begin. */
cx_status cx_image_decode_mem(const void *buf, size_t n, const char *name, int channels,
                              cx_row_sink *sink, cx_err *err);
/* The limit on an image file's size (encoded bytes). */
#define CX_IMAGE_MAX_FILE_BYTES ((size_t)1 << 31)
/* An image file's bytes, as every image reader reads them (the one
 * whole-file reader): a regular file within CX_IMAGE_MAX_FILE_BYTES, not
 * empty; a missing file is CX_EIO. The caller frees *data. */
cx_status cx_image_read_file(const char *path, uint8_t **data, size_t *len, cx_err *err);
/* The same from a file (checked and read as cx_image_load does). */
cx_status cx_image_decode_file(const char *path, int channels, cx_row_sink *sink,
                               cx_err *err);

/* What cx_image_load_resized_ex saw of the source. */
typedef struct {
    int src_width, src_height;
    int grey;  /* 1 channel, or RGB with R = G = B in every pixel */
} cx_resize_info;

/* cx_image_load_resized, or with short_side > 0 (width and height ignored)
 * torchvision's Resize(short_side) as cx_image_resize_short; info may be
 * NULL (implemented in data/preprocess.c). */
cx_status cx_image_load_resized_ex(const char *path, int channels, int width, int height,
                                   int short_side, cx_image *out, cx_resize_info *info,
                                   cx_err *err);

/* Chooses a box {x, y, w, h} of a decoded image of width x height (box
 * holds the whole image on entry). */
typedef void (*cx_box_fn)(void *user, int width, int height, int box[4]);
/* The box that box_fn chooses once the size is known, cut from the decoded
 * rows as they arrive and resized to width x height: cx_image_crop then
 * cx_image_resize, without holding the decoded image (data/preprocess.c). */
cx_status cx_image_load_box_resized(const char *path, int channels, int width, int height,
                                    cx_box_fn box_fn, void *user, cx_image *out, cx_err *err);

#endif
