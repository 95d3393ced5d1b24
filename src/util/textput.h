/* textput.h - the output callback of the text writers (JSON strings, CSV
 * fields): put(ctx, s, n) appends the n bytes at s to the caller's output.
 * Writers call it with consecutive pieces of their output, in order. */
#ifndef CX_UTIL_TEXTPUT_H
#define CX_UTIL_TEXTPUT_H

#include <stddef.h>

typedef void (*cx_text_put)(void *ctx, const char *s, size_t n);

#endif
