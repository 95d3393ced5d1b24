/* textbuf.h - a growable text buffer for JSON, CSV, HTML and SVG output
 * (internal to the evaluation code). Allocation failure is sticky (oom). */
#ifndef CX_EVAL_TEXTBUF_H
#define CX_EVAL_TEXTBUF_H

#include <stddef.h>

typedef struct {
    char *s;
    size_t n, cap;
    int oom;
} cx_tb;

void cx_tb_init(cx_tb *b);
void cx_tb_free(cx_tb *b);
void cx_tb_putn(cx_tb *b, const char *s, size_t n);
void cx_tb_puts(cx_tb *b, const char *s);
void cx_tb_printf(cx_tb *b, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* A JSON string literal (quotes included, escaped: cx_json_escape). */
void cx_tb_json_str(cx_tb *b, const char *s);
/* A JSON number with 17 significant digits, or null when not finite. */
void cx_tb_json_num(cx_tb *b, double v);
/* HTML/XML text with &, <, >, " escaped. */
void cx_tb_html(cx_tb *b, const char *s);
/* A CSV field (cx_csv_field: RFC 4180 quoting). */
void cx_tb_csv_field(cx_tb *b, const char *s);

#endif
