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
#include "data/labels.h"
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


/* ------------------------------------------------------------ label formats */

static void test_label_pieces(void **state)
{
    (void)state;
    /* the NIH class lookup */
    assert_int_equal(cx_nih_class_index("Atelectasis"), 0);
    assert_int_equal(cx_nih_class_index("pleural thickening"), 12);
    assert_int_equal(cx_nih_class_index("Infiltrate"), 3);
    assert_int_equal(cx_nih_class_index("Infiltration"), 3);
    assert_int_equal(cx_nih_class_index("no_finding"), CX_NIH_NO_FINDING);
    assert_int_equal(cx_nih_class_index("Covid"), -1);
    /* Finding Labels */
    uint8_t has[15];
    cx_err err = {0};
    assert_int_equal(cx_nih_findings("Effusion| Mass ", has, "f", 3, &err), CX_OK);
    for (int k = 0; k < 15; k++)
        assert_int_equal(has[k], k == 2 || k == 4);
    assert_int_equal(cx_nih_findings("No Finding", has, "f", 3, &err), CX_OK);
    for (int k = 0; k < 15; k++)
        assert_int_equal(has[k], k == 14);
    assert_int_equal(cx_nih_findings("Mass|Covid", has, "f", 7, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "f:7: finding 'Covid'"));
    assert_int_equal(cx_nih_findings("No Finding|Mass", has, "f", 8, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "f:8: 'No Finding' together with findings"));
    assert_int_equal(cx_nih_findings(" ", has, "f", 9, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "f:9: empty Finding Labels"));
    /* label values */
    assert_int_equal(cx_parse_label(" 1.0 "), 1);
    assert_int_equal(cx_parse_label("false"), 0);
    assert_int_equal(cx_parse_label(""), CX_LABEL_MISSING);
    assert_int_equal(cx_parse_label("-1"), CX_LABEL_MISSING);
    assert_int_equal(cx_parse_label("2"), -2);
    assert_int_equal(cx_parse_label01("1"), 1);
    assert_int_equal(cx_parse_label01("0.0"), 0);
    assert_int_equal(cx_parse_label01(""), -1);
    assert_int_equal(cx_parse_label01("nan"), -1);
    /* layouts */
    const char *csv = "\xEF\xBB\xBFImage Index,Finding Labels\na.png,Mass\n";
    const char *split = "\n a_1.png 0 1 0\n";
    const char *list = "a_1.png\nb_2.png\n";
    const char *named = "a_1.png yes no\n";
    assert_int_equal(cx_label_layout_sniff(csv, strlen(csv)), CX_LAYOUT_CSV);
    assert_int_equal(cx_label_layout_sniff(split, strlen(split)), CX_LAYOUT_SPLIT);
    assert_int_equal(cx_label_layout_sniff(list, strlen(list)), CX_LAYOUT_LIST);
    assert_int_equal(cx_label_layout_sniff(named, strlen(named)), CX_LAYOUT_LIST);
    /* split rows */
    char f0[] = "x.png", f1[] = "1", f2[] = "0", f3[] = "2";
    char *fields[] = {f0, f1, f2, f3};
    cx_csv_row row = {3, fields, 12};
    uint8_t v[3];
    assert_int_equal(cx_split_row(&row, 2, v, "l.txt", &err), CX_OK);
    assert_int_equal(v[0], 1);
    assert_int_equal(v[1], 0);
    assert_int_equal(cx_split_row(&row, 3, v, "l.txt", &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "l.txt:12: 3 fields; expected an image and 3 labels"));
    row.n_fields = 4;
    assert_int_equal(cx_split_row(&row, 3, v, "l.txt", &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "l.txt:12: label 3 is '2', not 0/1"));
}

/* Every format read as a label table (evaluation) and as a dataset
 * (training) through the one parser: the same labels either way. */
static void check_same(const char *path, const char *format, const char *source, int K,
                       const char *const *classes, const char *const *ids, const int *want,
                       int n)
{
    cx_err err = {0};
    cx_labels *l = NULL;
    if (cx_labels_load(path, K, classes, &l, &err))
        fail_msg("%s: %s", path, err.msg);
    assert_string_equal(cx_labels_format(l), format);
    assert_int_equal(cx_labels_num_images(l), n);
    assert_int_equal(cx_labels_num_classes(l), K);
    cx_dataset_opts o;
    cx_dataset_opts_default(&o);
    o.labels = path;
    o.n_classes = K;
    o.classes = classes;
    cx_dataset *ds = NULL;
    if (cx_dataset_load(&o, &ds, &err))
        fail_msg("%s: %s", path, err.msg);
    assert_string_equal(cx_dataset_source(ds), source);
    assert_int_equal(cx_dataset_size(ds), n);
    assert_int_equal(cx_dataset_num_classes(ds), K);
    const uint8_t *y = cx_dataset_labels(ds);
    for (int i = 0; i < n; i++) {
        int li = cx_labels_find(l, ids[i]), di = cx_dataset_find(ds, ids[i]);
        assert_true(li >= 0);
        assert_true(di >= 0);
        for (int k = 0; k < K; k++) {
            assert_int_equal(cx_labels_get(l, li, k), want[i * K + k]);
            assert_int_equal(y[(size_t)di * K + k], want[i * K + k]);
        }
    }
    cx_dataset_free(ds);
    cx_labels_free(l);
}

static void test_label_formats(void **state)
{
    (void)state;
    static const char *const cls[] = {"Effusion", "Pneumonia", "Mass"};
    static const char *const ids[] = {"00000001_000.png", "00000001_001.png",
                                      "00000002_000.png"};
    static const int want[] = {1, 0, 1, /**/ 0, 0, 0, /**/ 0, 1, 0};
    /* ChestX-ray14 metadata */
    const char *meta = tmp_path("Data_Entry.csv");
    write_file(meta, "Image Index,Finding Labels,Follow-up #,Patient ID\n"
                     "00000001_000.png,Effusion|Mass,0,1\n"
                     "00000001_001.png,No Finding,1,1\n"
                     "00000002_000.png, Pneumonia ,0,2\n");
    check_same(meta, "chestxray14-metadata", "chestxray14-metadata", 3, cls, ids, want, 3);
    /* a split list: 14 labels in CheXNet's order */
    const char *split = tmp_path("split.txt");
    write_file(split, "00000001_000.png 0 0 1 0 1 0 0 0 0 0 0 0 0 0\n"
                      "00000001_001.png 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
                      "00000002_000.png 0 0 0 0 0 0 1 0 0 0 0 0 0 0\n");
    check_same(split, "split-list", "split-list", 3, cls, ids, want, 3);
    /* a CSV with class columns (the dataset's manifest) */
    const char *csv = tmp_path("manifest.csv");
    write_file(csv, "path,patient,Mass,Pneumonia,Effusion\n"
                    "00000001_000.png,1,1,0,1\n"
                    "00000001_001.png,1,0,0,0.0\n"
                    "00000002_000.png,2,0,1.0,0\n");
    check_same(csv, "csv", "manifest", 3, cls, ids, want, 3);

    /* a finding that is not a label fails both ways, naming the line */
    write_file(meta, "Image Index,Finding Labels,Patient ID\n"
                     "a.png,Mass,1\n"
                     "b.png,Mass|Covid,2\n");
    cx_err err = {0};
    cx_labels *l = NULL;
    assert_int_equal(cx_labels_load(meta, 3, cls, &l, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "Data_Entry.csv:3: finding 'Covid'"));
    cx_dataset_opts o;
    cx_dataset_opts_default(&o);
    o.labels = meta;
    cx_dataset *ds = NULL;
    assert_int_equal(cx_dataset_load(&o, &ds, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "Data_Entry.csv:3: finding 'Covid'"));
    /* a split-list value that is not 0/1, both ways */
    write_file(split, "00000001_000.png 0 0 1 0 1 0 0 0 0 0 0 0 0 0\n"
                      "00000001_001.png 0 0 0 0 0 0 0 0 0 0 0 0 0 7\n");
    assert_int_equal(cx_labels_load(split, 3, cls, &l, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "split.txt:2: label 14 is '7', not 0/1"));
    o.labels = split;
    assert_int_equal(cx_dataset_load(&o, &ds, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "split.txt:2: label 14 is '7', not 0/1"));
}

int main(void)
{
    const char *t = getenv("CX_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/test_text", t && *t ? t : "/tmp");
    char parent[1024];
    snprintf(parent, sizeof parent, "%s", t && *t ? t : "/tmp");
    mkdir(parent, 0777);
    mkdir(g_tmp, 0777);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_escape_bad_utf8),
        cmocka_unit_test(test_json_escape_controls),
        cmocka_unit_test(test_csv_field_quoting),
        cmocka_unit_test(test_label_pieces),
        cmocka_unit_test(test_label_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
