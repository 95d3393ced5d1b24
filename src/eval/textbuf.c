/* Growable text buffer (see textbuf.h). */
#include "eval/textbuf.h"
#include "data/csv.h"
#include "io/json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cx_tb_init(cx_tb *b)
{
    memset(b, 0, sizeof *b);
}

void cx_tb_free(cx_tb *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}

static int tb_reserve(cx_tb *b, size_t extra)
{
    if (b->oom)
        return -1;
    if (b->n + extra + 1 <= b->cap)
        return 0;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->n + extra + 1)
        nc *= 2;
    char *ns = realloc(b->s, nc);
    if (!ns) {
        b->oom = 1;
        return -1;
    }
    b->s = ns;
    b->cap = nc;
    return 0;
}

void cx_tb_putn(cx_tb *b, const char *s, size_t n)
{
    if (tb_reserve(b, n))
        return;
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

void cx_tb_puts(cx_tb *b, const char *s)
{
    cx_tb_putn(b, s, strlen(s));
}

void cx_tb_printf(cx_tb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[512];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        cx_tb_putn(b, tmp, (size_t)n);
        return;
    }
    if (tb_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)n;
}

static void tb_put(void *ctx, const char *s, size_t n)
{
    cx_tb_putn(ctx, s, n);
}

void cx_tb_json_str(cx_tb *b, const char *s)
{
    cx_json_escape_put(tb_put, b, s);
}

void cx_tb_json_num(cx_tb *b, double v)
{
    if (!isfinite(v))
        cx_tb_puts(b, "null");
    else
        cx_tb_printf(b, "%.17g", v);
}

void cx_tb_html(cx_tb *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': cx_tb_puts(b, "&amp;"); break;
        case '<': cx_tb_puts(b, "&lt;"); break;
        case '>': cx_tb_puts(b, "&gt;"); break;
        case '"': cx_tb_puts(b, "&quot;"); break;
        default: cx_tb_putn(b, s, 1);
        }
    }
}

void cx_tb_csv_field(cx_tb *b, const char *s)
{
    cx_csv_field_put(tb_put, b, s);
}
