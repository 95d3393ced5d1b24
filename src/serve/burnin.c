/* burnin.c - text burned into the Secondary Capture that goes back to the
 * PACS (labels, probabilities, "research use only"). The glyphs are libgd's
 * built-in Giant font (9x15 pixels), scaled by a whole factor to the image's
 * width, white on a darkened band at the top left. */
#include "serve/serve.h"

#include <gd.h>
#include <gdfontg.h>
#include <string.h>

/* draws one line of at most maxc characters at (x0, y0) */
static void draw_line(cx_image *im, gdFontPtr f, int scale, int x0, int y0, const char *s,
                      int len)
{
    for (int ci = 0; ci < len; ci++) {
        int ch = (unsigned char)s[ci];
        if (ch < f->offset || ch >= f->offset + f->nchars)
            ch = '?';
        const char *g = f->data + (size_t)(ch - f->offset) * f->w * f->h;
        int xc = x0 + ci * f->w * scale;
        for (int gy = 0; gy < f->h; gy++)
            for (int gx = 0; gx < f->w; gx++) {
                if (!g[gy * f->w + gx])
                    continue;
                for (int sy = 0; sy < scale; sy++)
                    for (int sx = 0; sx < scale; sx++) {
                        int x = xc + gx * scale + sx, y = y0 + gy * scale + sy;
                        if (x >= im->width || y >= im->height)
                            continue;
                        uint8_t *p = im->data + ((size_t)y * im->width + x) * 3;
                        p[0] = p[1] = p[2] = 255;
                    }
            }
    }
}

/* the next piece of s that fits in maxc characters, broken at a space when
 * there is one; returns its length, *next the start of the rest */
static int wrap(const char *s, int maxc, const char **next)
{
    int len = (int)strlen(s);
    if (len <= maxc) {
        *next = s + len;
        return len;
    }
    int cut = maxc;
    while (cut > maxc / 2 && s[cut] != ' ')
        cut--;
    if (s[cut] != ' ')
        cut = maxc;
    *next = s + cut;
    while (**next == ' ')
        (*next)++;
    return cut;
}

void serve_burn_text(cx_image *im, const char *const *lines, int n)
{
    if (!im || !im->data || im->channels != 3 || n <= 0)
        return;
    gdFontPtr f = gdFontGetGiant();
    int scale = im->width / 700 > 1 ? im->width / 700 : 1;
    int pad = 4 * scale, lh = (f->h + 2) * scale;
    int maxc = (im->width - 2 * pad) / (f->w * scale);
    if (maxc < 8)
        return;
    /* wrapped lines: their count and the longest */
    int rows = 0, longest = 0;
    for (int i = 0; i < n; i++) {
        const char *s = lines[i], *next;
        do {
            int l = wrap(s, maxc, &next);
            longest = l > longest ? l : longest;
            rows++;
            s = next;
        } while (*s);
    }
    int bw = longest * f->w * scale + 2 * pad, bh = rows * lh + 2 * pad;
    if (bw > im->width)
        bw = im->width;
    if (bh > im->height)
        bh = im->height;
    /* the band: the X-ray darkened to a third, so the text reads on any image */
    for (int y = 0; y < bh; y++)
        for (int x = 0; x < bw; x++) {
            uint8_t *p = im->data + ((size_t)y * im->width + x) * 3;
            for (int k = 0; k < 3; k++)
                p[k] = (uint8_t)(p[k] / 3);
        }
    int row = 0;
    for (int i = 0; i < n; i++) {
        const char *s = lines[i], *next;
        do {
            int l = wrap(s, maxc, &next);
            draw_line(im, f, scale, pad, pad + row * lh + scale, s, l);
            row++;
            s = next;
        } while (*s);
    }
}
