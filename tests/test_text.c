/* Unit tests of the text writers and readers every part of chexnet shares:
 * the one JSON string escaper (through a FILE, a buffer, the evaluation
 * code's text buffer), the one CSV field quoter, the one whole-file reader
 * and the one label-table parser (every format it reads). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chexnet.h"
#include "data/csv.h"
#include "eval/textbuf.h"
#include "io/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_tmp[1024];

static const char *tmp_path(const char *name)
{
    static char buf[8][1200];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_tmp, name);
    return buf[k];
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(text, 1, strlen(text), f);
    fclose(f);
}

/* ------------------------------------------------------------ JSON strings */

/* The three ways to the escaper, each output checked to be one valid JSON
 * string (the strict parser: valid UTF-8, no raw control characters) that
 * decodes to want. */
enum { VIA_FILE, VIA_BUF, VIA_TEXTBUF };

static char *escape_via(int via, const char *s)
{
    if (via == VIA_FILE) {
        char *out = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&out, &n);
        assert_non_null(f);
        cx_json_escape(f, s);
        fclose(f);
        return out;
    }
    if (via == VIA_BUF) {
        size_t n = cx_json_escape_buf(NULL, 0, s);
        char *out = malloc(n + 1);
        assert_non_null(out);
        assert_int_equal(cx_json_escape_buf(out, n + 1, s), n);
        return out;
    }
    cx_tb b;
    cx_tb_init(&b);
    cx_tb_json_str(&b, s);
    assert_false(b.oom);
    char *out = strndup(b.s, b.n);
    cx_tb_free(&b);
    return out;
}

static void check_escape(const char *in, const char *want)
{
    for (int via = VIA_FILE; via <= VIA_TEXTBUF; via++) {
        char *out = escape_via(via, in);
        /* no raw control byte, and valid UTF-8 */
        for (const unsigned char *p = (const unsigned char *)out; *p; p++)
            assert_true(*p >= 0x20 && *p != 0x7f);
        assert_true(cx_utf8_valid(out, strlen(out)));
        cx_json *v = NULL;
        cx_err err = {0};
        if (cx_json_parse(out, strlen(out), 0, &v, &err) != CX_OK)
            fail_msg("via %d: '%s' is not valid JSON: %s", via, out, err.msg);
        assert_int_equal(v->type, CX_JSON_STRING);
        assert_int_equal(v->len, strlen(want));
        assert_memory_equal(v->str, want, strlen(want));
        cx_json_free(v);
        free(out);
    }
}

static void test_json_escape_bad_utf8(void **state)
{
    (void)state;
    /* valid UTF-8 passes through */
    check_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* every byte that is not part of valid UTF-8 becomes U+FFFD */
    check_escape("a\xff" "b", "a\xef\xbf\xbd" "b");                  /* never valid */
    check_escape("\x80", "\xef\xbf\xbd");                            /* lone continuation */
    check_escape("x\xc3", "x\xef\xbf\xbd");                          /* truncated at the end */
    check_escape("\xc3(", "\xef\xbf\xbd(");                          /* bad continuation */
    check_escape("\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd");            /* overlong '/' */
    check_escape("\xe0\x80\xaf", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* overlong */
    check_escape("\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* surrogate */
    check_escape("\xf4\x90\x80\x80",
                 "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* > U+10FFFF */
    /* a Latin-1 file name */
    check_escape("r\xe9sum\xe9.png", "r\xef\xbf\xbdsum\xef\xbf\xbd.png");
}

static void test_json_escape_controls(void **state)
{
    (void)state;
    /* every control character and DEL survives as itself, escaped */
    for (int c = 1; c < 0x20; c++) {
        char in[4] = {'<', (char)c, '>', 0};
        check_escape(in, in);
    }
    check_escape("\x7f", "\x7f");
    check_escape("q\"b\\s/", "q\"b\\s/");
    check_escape("", "");
    /* the forms: short escapes where JSON has them, \u00XX otherwise */
    char *out = escape_via(VIA_TEXTBUF, "\n\r\t\b\f\x01\x1f\x7f\"\\");
    assert_string_equal(out, "\"\\n\\r\\t\\b\\f\\u0001\\u001f\\u007f\\\"\\\\\"");
    free(out);
    /* NULL is null */
    out = escape_via(VIA_FILE, NULL);
    assert_string_equal(out, "null");
    free(out);
}

/* -------------------------------------------------------------- CSV fields */

static char *quote_via(int via, const char *s)
{
    if (via == VIA_FILE) {
        char *out = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&out, &n);
        assert_non_null(f);
        cx_csv_field(f, s);
        fclose(f);
        return out;
    }
    cx_tb b;
    cx_tb_init(&b);
    cx_tb_csv_field(&b, s);
    char *out = strndup(b.s ? b.s : "", b.n);
    cx_tb_free(&b);
    return out;
}

static void test_csv_field_quoting(void **state)
{
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"plain.png", "plain.png"},
        {"", ""},
        {"a,b", "\"a,b\""},
        {"say \"hi\"", "\"say \"\"hi\"\"\""},
        {"\"", "\"\"\"\""},
        {"two\nlines", "\"two\nlines\""},
        {"cr\rhere", "\"cr\rhere\""},
        {"crlf\r\n", "\"crlf\r\n\""},
        {" spaced ", " spaced "},      /* spaces alone are data, not quoted */
        {"tab\there", "tab\there"},
        {"semi;colon", "semi;colon"},
        {"caf\xc3\xa9", "caf\xc3\xa9"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        for (int via = VIA_FILE; via <= VIA_TEXTBUF; via += VIA_TEXTBUF - VIA_FILE) {
            char *out = quote_via(via, cases[i].in);
            assert_string_equal(out, cases[i].out);
            free(out);
        }
    }
    /* a row of every case reads back field for field */
    char *row = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&row, &n);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (i)
            fputc(',', f);
        cx_csv_field(f, cases[i].in);
    }
    fputc('\n', f);
    fclose(f);
    cx_csv_opts o = {CX_CSV_COMMA, 0, 0};
    cx_csv *t = NULL;
    cx_err err = {0};
    assert_int_equal(cx_csv_parse(row, n, "row", &o, &t, &err), CX_OK);
    assert_int_equal(t->n_rows, 1);
    assert_int_equal(t->rows[0].n_fields, (int)(sizeof cases / sizeof cases[0]));
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *want = cases[i].in;
        /* the reader takes CRLF inside quotes as a line end, LF */
        if (!strcmp(want, "crlf\r\n"))
            want = "crlf\n";
        assert_string_equal(t->rows[0].fields[i], want);
    }
    cx_csv_free(t);
    free(row);
}

int main(void)
{
    const char *t = getenv("CX_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/test_text", t && *t ? t : "/tmp");
    char parent[1024];
    snprintf(parent, sizeof parent, "%s", t && *t ? t : "/tmp");
    mkdir(parent, 0777);
    mkdir(g_tmp, 0777);
    (void)tmp_path;
    (void)write_file;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_escape_bad_utf8),
        cmocka_unit_test(test_json_escape_controls),
        cmocka_unit_test(test_csv_field_quoting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
