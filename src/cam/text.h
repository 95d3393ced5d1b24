/* text.h - anti-aliased text for the heat map legend (internal): FreeType
 * with DejaVu Sans (Debian: fonts-dejavu-core), looked for at
 * $CHEXNET_FONT, then in the usual font folders of Debian/Ubuntu, Fedora
 * and Arch. */
#ifndef CX_CAM_TEXT_H
#define CX_CAM_TEXT_H

#include "chexnet.h"

typedef struct cx_text cx_text;

/* A face at px pixels (the em size). The error names the font looked for. */
cx_status cx_text_open(int px, cx_text **out, cx_err *err);
void cx_text_close(cx_text *t);
/* Line height and ascent in pixels. */
int cx_text_line_height(const cx_text *t);
int cx_text_ascent(const cx_text *t);
/* Advance width in pixels of the UTF-8 text s[0..n) (n < 0: strlen). */
int cx_text_width(cx_text *t, const char *s, int n);
/* Draws s[0..n) with its baseline at y, starting at x, in colour rgb,
 * blended by the glyphs' coverage; clipped to the image (RGB). */
void cx_text_draw(cx_text *t, cx_image *im, int x, int y, const char *s, int n,
                  const uint8_t rgb[3]);
/* The path of the font file used (for messages), or NULL when none found. */
const char *cx_text_font_path(void);

#endif
