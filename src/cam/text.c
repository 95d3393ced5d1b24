/* text.c - anti-aliased text through FreeType (see text.h). */
#include "cam/text.h"

#include <ft2build.h>
#include FT_FREETYPE_H

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct cx_text {
    FT_Library lib;
    FT_Face face;
    int line_h, ascent;
};

static const char *const font_paths[] = {
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", /* Debian, Ubuntu */
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf", /* Fedora */
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf", /* Arch */
    NULL,
};

const char *cx_text_font_path(void)
{
    const char *env = getenv("CHEXNET_FONT");
    if (env && *env)
        return access(env, R_OK) == 0 ? env : NULL;
    for (int i = 0; font_paths[i]; i++)
        if (access(font_paths[i], R_OK) == 0)
            return font_paths[i];
    return NULL;
}

cx_status cx_text_open(int px, cx_text **out, cx_err *err)
{
    *out = NULL;
    const char *env = getenv("CHEXNET_FONT");
    const char *path = cx_text_font_path();
    if (!path) {
        if (env && *env)
            return cx_seterr(err, CX_EIO, "heat map legend: cannot read the font %s "
                             "($CHEXNET_FONT)", env);
        return cx_seterr(err, CX_EMISSING,
                         "heat map legend: the font DejaVu Sans is not installed "
                         "(Debian: apt-get install fonts-dejavu-core; or set CHEXNET_FONT "
                         "to a TrueType file)");
    }
    cx_text *t = calloc(1, sizeof *t);
    if (!t)
        return cx_seterr(err, CX_ENOMEM, "heat map legend: out of memory");
    if (FT_Init_FreeType(&t->lib)) {
        free(t);
        return cx_seterr(err, CX_EUNSUPPORTED, "heat map legend: FreeType did not start");
    }
    if (FT_New_Face(t->lib, path, 0, &t->face)) {
        FT_Done_FreeType(t->lib);
        free(t);
        return cx_seterr(err, CX_EFORMAT, "heat map legend: %s is not a font FreeType reads",
                         path);
    }
    if (FT_Set_Pixel_Sizes(t->face, 0, (FT_UInt)(px < 1 ? 1 : px))) {
        cx_text_close(t);
        return cx_seterr(err, CX_EFORMAT, "heat map legend: %s has no %d-pixel size", path,
                         px);
    }
    const FT_Size_Metrics *sm = &t->face->size->metrics;
    t->ascent = (int)((sm->ascender + 63) >> 6);
    t->line_h = (int)((sm->height + 63) >> 6);
    if (t->line_h < px)
        t->line_h = px;
    *out = t;
    return CX_OK;
}

void cx_text_close(cx_text *t)
{
    if (!t)
        return;
    if (t->face)
        FT_Done_Face(t->face);
    if (t->lib)
        FT_Done_FreeType(t->lib);
    free(t);
}

int cx_text_line_height(const cx_text *t) { return t->line_h; }
int cx_text_ascent(const cx_text *t) { return t->ascent; }

/* next code point of UTF-8 s[*i..n); malformed bytes give U+FFFD */
static unsigned long next_cp(const unsigned char *s, int n, int *i)
{
    unsigned c = s[(*i)++];
    if (c < 0x80)
        return c;
    int k = c >= 0xF0 && c < 0xF5 ? 3 : c >= 0xE0 ? 2 : c >= 0xC2 && c < 0xE0 ? 1 : -1;
    if (k < 0 || c >= 0xF5)
        return 0xFFFD;
    unsigned long cp = c & (0x3F >> k);
    for (int j = 0; j < k; j++) {
        if (*i >= n || (s[*i] & 0xC0) != 0x80)
            return 0xFFFD;
        cp = (cp << 6) | (s[(*i)++] & 0x3F);
    }
    return cp;
}

int cx_text_width(cx_text *t, const char *s, int n)
{
    if (n < 0)
        n = (int)strlen(s);
    long w = 0;
    int i = 0;
    while (i < n) {
        unsigned long cp = next_cp((const unsigned char *)s, n, &i);
        if (!FT_Load_Char(t->face, cp, FT_LOAD_DEFAULT))
            w += t->face->glyph->advance.x;
    }
    return (int)((w + 63) >> 6);
}

void cx_text_draw(cx_text *t, cx_image *im, int x, int y, const char *s, int n,
                  const uint8_t rgb[3])
{
    if (n < 0)
        n = (int)strlen(s);
    long pen = (long)x * 64; /* x may be negative (text wider than a narrow image) */
    int i = 0;
    while (i < n) {
        unsigned long cp = next_cp((const unsigned char *)s, n, &i);
        if (FT_Load_Char(t->face, cp, FT_LOAD_RENDER))
            continue;
        FT_GlyphSlot g = t->face->glyph;
        const FT_Bitmap *b = &g->bitmap;
        int gx = (int)(pen >> 6) + g->bitmap_left, gy = y - g->bitmap_top;
        if (b->pixel_mode == FT_PIXEL_MODE_GRAY)
            for (unsigned r = 0; r < b->rows; r++) {
                int yy = gy + (int)r;
                if (yy < 0 || yy >= im->height)
                    continue;
                const unsigned char *src = b->buffer + (long)r * b->pitch;
                for (unsigned c = 0; c < b->width; c++) {
                    int xx = gx + (int)c;
                    if (xx < 0 || xx >= im->width || !src[c])
                        continue;
                    uint8_t *p = im->data + ((size_t)yy * im->width + xx) * 3;
                    unsigned a = src[c];
                    for (int k = 0; k < 3; k++)
                        p[k] = (uint8_t)((p[k] * (255 - a) + rgb[k] * a + 127) / 255);
                }
            }
        pen += g->advance.x;
    }
}
