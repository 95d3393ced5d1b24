/* Unit tests of the evaluation code: CSV reader, label tables, exact AUROC
 * with ties, degenerate classes, operating points, bootstrap determinism and
 * its multiplicity walk checked against a naive re-computation. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chexnet.h"
#include "data/csv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

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

static void write_gz(const char *path, const char *text)
{
    gzFile f = gzopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(gzwrite(f, text, (unsigned)strlen(text)), (int)strlen(text));
    gzclose(f);
}

/* ---------------------------------------------------------------- CSV */

static void test_csv_quotes(void **state)
{
    (void)state;
    const char *t = "\xEF\xBB\xBFimage,\"a,b\",c\r\n"
                    "x.png,\"he said \"\"hi\"\"\",\"two\r\nlines\"\r\n"
                    "\r\n"
                    "y.png,,3"; /* no final newline */
    cx_csv *c;
    cx_err err = {0};
    assert_int_equal(cx_csv_parse(t, strlen(t), "mem", NULL, &c, &err), CX_OK);
    assert_int_equal(c->n_cols, 3);
    assert_string_equal(c->header[0], "image");
    assert_string_equal(c->header[1], "a,b");
    assert_int_equal(c->n_rows, 2);
    assert_string_equal(c->rows[0].fields[1], "he said \"hi\"");
    assert_string_equal(c->rows[0].fields[2], "two\nlines");
    assert_int_equal(c->rows[0].line, 2);
    assert_string_equal(c->rows[1].fields[0], "y.png");
    assert_string_equal(c->rows[1].fields[1], "");
    assert_string_equal(c->rows[1].fields[2], "3");
    assert_int_equal(c->rows[1].line, 5);
    assert_int_equal(cx_csv_col(c, "A,B"), 1);
    assert_int_equal(cx_csv_col(c, "zzz"), -1);
    cx_csv_free(c);
}

static void test_csv_errors(void **state)
{
    (void)state;
    cx_csv *c = NULL;
    cx_err err = {0};
    const char *ragged = "a,b\n1,2\n3\n";
    assert_int_equal(cx_csv_parse(ragged, strlen(ragged), "r.csv", NULL, &c, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "r.csv:3:"));
    const char *unterminated = "a,b\n1,\"2\n3,4\n";
    assert_int_equal(cx_csv_parse(unterminated, strlen(unterminated), "u.csv", NULL, &c, &err),
                     CX_EFORMAT);
    assert_non_null(strstr(err.msg, "unterminated"));
    assert_non_null(strstr(err.msg, "line 2"));
    const char *after = "a,b\n\"1\"x,2\n";
    assert_int_equal(cx_csv_parse(after, strlen(after), "q.csv", NULL, &c, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "q.csv:2:"));
    const char *stray = "a,b\n1,2\"3\n";
    assert_int_equal(cx_csv_parse(stray, strlen(stray), "s.csv", NULL, &c, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "s.csv:2:"));
    const char nul[] = "a,b\n1,\0002\n";
    assert_int_equal(cx_csv_parse(nul, sizeof nul - 1, "n.csv", NULL, &c, &err), CX_EFORMAT);
    assert_int_equal(cx_csv_read(tmp_path("does-not-exist.csv"), NULL, &c, &err), CX_EIO);
    const char *empty = "";
    assert_int_equal(cx_csv_parse(empty, 0, "e.csv", NULL, &c, &err), CX_EFORMAT);
}

static void test_csv_gzip_and_whitespace(void **state)
{
    (void)state;
    const char *text = "x 1 0\ny\t0  1\n\n   \nz 1 1";
    write_gz(tmp_path("ws.txt.gz"), text);
    write_file(tmp_path("ws.txt"), text);
    cx_csv_opts o = {CX_CSV_WHITESPACE, 0, 0};
    for (int gz = 0; gz < 2; gz++) {
        cx_csv *c;
        cx_err err = {0};
        assert_int_equal(cx_csv_read(tmp_path(gz ? "ws.txt.gz" : "ws.txt"), &o, &c, &err), CX_OK);
        assert_int_equal(c->n_rows, 3);
        assert_int_equal(c->rows[1].n_fields, 3);
        assert_string_equal(c->rows[1].fields[2], "1");
        assert_string_equal(c->rows[2].fields[0], "z");
        assert_int_equal(c->rows[2].line, 5);
        cx_csv_free(c);
    }
    /* a truncated gzip stream is an error, not a short file */
    size_t n = 0;
    char *big = malloc(200000);
    for (int i = 0; i < 199999; i++)
        big[i] = "abc,def\n"[i % 8] ^ (char)(i % 7 == 0 ? 0 : 0);
    big[199999] = 0;
    write_gz(tmp_path("big.gz"), big);
    free(big);
    FILE *f = fopen(tmp_path("big.gz"), "rb");
    fseek(f, 0, SEEK_END);
    n = (size_t)ftell(f);
    fclose(f);
    assert_int_equal(truncate(tmp_path("big.gz"), (off_t)(n / 2)), 0);
    char *buf;
    size_t len;
    cx_err err = {0};
    assert_int_not_equal(cx_read_text_file(tmp_path("big.gz"), &buf, &len, &err), CX_OK);
}

static void test_parse_double(void **state)
{
    (void)state;
    double v;
    assert_int_equal(cx_csv_parse_double(" 0.25 ", &v), 0);
    assert_true(v == 0.25);
    assert_int_equal(cx_csv_parse_double("1e-3", &v), 0);
    assert_int_equal(cx_csv_parse_double("", &v), -1);
    assert_int_equal(cx_csv_parse_double("nan", &v), -1);
    assert_int_equal(cx_csv_parse_double("inf", &v), -1);
    assert_int_equal(cx_csv_parse_double("0.5x", &v), -1);
    assert_int_equal(cx_csv_parse_double("abc", &v), -1);
}

/* ------------------------------------------------------------- labels */

static void test_labels_formats(void **state)
{
    (void)state;
    cx_err err = {0};
    cx_labels *l;
    /* ChestX-ray14 metadata, gzip, bracketed header names with commas */
    write_gz(tmp_path("de.csv.gz"),
             "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
             "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"
             "00000001_000.png,Cardiomegaly,0,1,57,M,PA,2682,2749,0.143,0.143\n"
             "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143\n"
             "00000002_000.png,No Finding,0,2,81,M,PA,2500,2048,0.171,0.171\n"
             "00000003_000.png,Hernia|Pleural_Thickening,0,3,81,F,PA,2582,2991,0.143,0.143");
    const char *want[3] = {"Cardiomegaly", "pleural thickening", "Hernia"};
    assert_int_equal(cx_labels_load(tmp_path("de.csv.gz"), 3, want, &l, &err), CX_OK);
    assert_string_equal(cx_labels_format(l), "chestxray14-metadata");
    assert_int_equal(cx_labels_num_images(l), 4);
    int i = cx_labels_find(l, "/some/dir/00000001_001.png");
    assert_int_equal(i, 1);
    assert_int_equal(cx_labels_get(l, i, 0), 1);
    assert_int_equal(cx_labels_get(l, i, 1), 0);
    i = cx_labels_find(l, "00000003_000.png");
    assert_int_equal(cx_labels_get(l, i, 1), 1);
    assert_int_equal(cx_labels_get(l, i, 2), 1);
    assert_int_equal(cx_labels_find(l, "nope.png"), -1);
    cx_labels_free(l);
    /* all 14 classes by default */
    assert_int_equal(cx_labels_load(tmp_path("de.csv.gz"), 0, NULL, &l, &err), CX_OK);
    assert_int_equal(cx_labels_num_classes(l), 14);
    cx_labels_free(l);
    /* unknown class: error naming it */
    const char *bad[1] = {"Fracture"};
    assert_int_equal(cx_labels_load(tmp_path("de.csv.gz"), 1, bad, &l, &err), CX_EMISSING);
    assert_non_null(strstr(err.msg, "Fracture"));

    /* split list, no final newline */
    write_file(tmp_path("split.txt"), "a.png 0 1 0 0 0 0 0 0 0 0 0 0 0 1\n"
                                      "b.png 1 0 0 0 0 0 0 0 0 0 0 0 0 0");
    const char *w2[2] = {"Hernia", "Atelectasis"};
    assert_int_equal(cx_labels_load(tmp_path("split.txt"), 2, w2, &l, &err), CX_OK);
    assert_string_equal(cx_labels_format(l), "split-list");
    assert_int_equal(cx_labels_get(l, cx_labels_find(l, "a.png"), 0), 1);
    assert_int_equal(cx_labels_get(l, cx_labels_find(l, "b.png"), 1), 1);
    cx_labels_free(l);
    write_file(tmp_path("split13.txt"), "a.png 0 1 0 0 0 0 0 0 0 0 0 0 0\n");
    assert_int_equal(cx_labels_load(tmp_path("split13.txt"), 2, w2, &l, &err), CX_EFORMAT);

    /* CSV with class columns, uncertain (-1) and blank = missing */
    write_file(tmp_path("cls.csv"), "path,split,pneumonia,Edema\n"
                                    "train/N/x.jpeg,train,0,1.0\n"
                                    "train/P/y.jpeg,train,1,-1\n"
                                    "train/P/z.jpeg,test,1,\n");
    const char *w3[2] = {"Pneumonia", "edema"};
    assert_int_equal(cx_labels_load(tmp_path("cls.csv"), 2, w3, &l, &err), CX_OK);
    assert_string_equal(cx_labels_format(l), "csv");
    assert_int_equal(cx_labels_get(l, cx_labels_find(l, "y.jpeg"), 0), 1);
    assert_int_equal(cx_labels_get(l, cx_labels_find(l, "y.jpeg"), 1), CX_LABEL_MISSING);
    assert_int_equal(cx_labels_get(l, cx_labels_find(l, "train/N/x.jpeg"), 1), 1);
    assert_int_equal(cx_labels_get(l, cx_labels_find(l, "z.jpeg"), 1), CX_LABEL_MISSING);
    cx_labels_free(l);
    /* not a label */
    write_file(tmp_path("bad.csv"), "image,Edema\na.png,0\nb.png,yes\n");
    const char *w4[1] = {"Edema"};
    assert_int_equal(cx_labels_load(tmp_path("bad.csv"), 1, w4, &l, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "bad.csv:3:"));
}

static void test_labels_duplicates(void **state)
{
    (void)state;
    cx_err err = {0};
    cx_labels *l;
    const char *w[1] = {"Edema"};
    write_file(tmp_path("dup_same.csv"), "image,Edema\na.png,0\nb.png,1\na.png,0\n");
    assert_int_equal(cx_labels_load(tmp_path("dup_same.csv"), 1, w, &l, &err), CX_OK);
    assert_int_equal(cx_labels_num_images(l), 2);
    assert_int_equal(cx_labels_num_warnings(l), 1);
    assert_non_null(strstr(cx_labels_warning(l, 0), "duplicate"));
    cx_labels_free(l);
    write_file(tmp_path("dup_diff.csv"), "image,Edema\na.png,0\nb.png,1\na.png,1\n");
    assert_int_equal(cx_labels_load(tmp_path("dup_diff.csv"), 1, w, &l, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "a.png"));
    assert_non_null(strstr(err.msg, ":4:"));
    /* same file name in two folders: the basename is ambiguous */
    write_file(tmp_path("amb.csv"), "path,Edema\nx/a.png,0\ny/a.png,1\n");
    assert_int_equal(cx_labels_load(tmp_path("amb.csv"), 1, w, &l, &err), CX_OK);
    assert_int_equal(cx_labels_find(l, "a.png"), -2);
    assert_int_equal(cx_labels_find(l, "y/a.png"), 1);
    cx_labels_free(l);
}

/* -------------------------------------------------------------- AUROC */

static void test_auroc_ties(void **state)
{
    (void)state;
    double auc;
    const double s1[] = {0.1, 0.4, 0.35, 0.8};
    const int8_t y1[] = {0, 0, 1, 1};
    assert_int_equal(cx_auroc(s1, y1, 4, &auc), 1);
    assert_true(fabs(auc - 0.75) < 1e-15);
    const double s2[] = {0.5, 0.5, 0.5, 0.5};
    const int8_t y2[] = {0, 1, 0, 1};
    assert_int_equal(cx_auroc(s2, y2, 4, &auc), 1);
    assert_true(fabs(auc - 0.5) < 1e-15);
    /* one positive tied with one negative, above another negative */
    const double s3[] = {1, 1, 0};
    const int8_t y3[] = {1, 0, 0};
    assert_int_equal(cx_auroc(s3, y3, 3, &auc), 1);
    assert_true(fabs(auc - 0.75) < 1e-15);
    /* missing labels are ignored */
    const double s4[] = {0.9, 0.1, 0.5, 0.7};
    const int8_t y4[] = {1, 0, CX_LABEL_MISSING, 0};
    assert_int_equal(cx_auroc(s4, y4, 4, &auc), 1);
    assert_true(fabs(auc - 1.0) < 1e-15);
    /* scores outside [0,1] are fine: ranks only */
    const double s5[] = {-3, 12, 7, 7};
    const int8_t y5[] = {0, 1, 1, 0};
    assert_int_equal(cx_auroc(s5, y5, 4, &auc), 1);
    assert_true(fabs(auc - 0.875) < 1e-15);
}

static void test_auroc_degenerate(void **state)
{
    (void)state;
    double auc;
    const double s[] = {0.1, 0.2, 0.3};
    const int8_t none[] = {0, 0, 0}, all[] = {1, 1, 1};
    assert_int_equal(cx_auroc(s, none, 3, &auc), 0);
    assert_true(isnan(auc));
    assert_int_equal(cx_auroc(s, all, 3, &auc), 0);
    assert_true(isnan(auc));
    double thr;
    assert_int_equal(cx_choose_threshold(s, none, 3, CX_OP_MAXF1, &thr), 0);
}

static void test_roc_curve(void **state)
{
    (void)state;
    /* sklearn.metrics.roc_curve([0,0,1,1],[0.1,0.4,0.35,0.8]):
     * fpr [0,0,0.5,0.5,1], tpr [0,0.5,0.5,1,1], thr [inf,0.8,0.4,0.35,0.1] */
    const double s[] = {0.1, 0.4, 0.35, 0.8};
    const int8_t y[] = {0, 0, 1, 1};
    double *f, *t, *h;
    size_t m;
    cx_err err = {0};
    assert_int_equal(cx_roc_curve(s, y, 4, 0, &f, &t, &h, &m, &err), CX_OK);
    assert_int_equal(m, 5);
    const double ef[] = {0, 0, 0.5, 0.5, 1}, et[] = {0, 0.5, 0.5, 1, 1},
                 eh[] = {INFINITY, 0.8, 0.4, 0.35, 0.1};
    for (size_t i = 0; i < m; i++) {
        assert_true(f[i] == ef[i]);
        assert_true(t[i] == et[i]);
        assert_true(h[i] == eh[i]);
    }
    free(f);
    free(t);
    free(h);
}

static void test_metrics_and_thresholds(void **state)
{
    (void)state;
    const double s[] = {0.9, 0.8, 0.7, 0.6, 0.5, 0.4};
    const int8_t y[] = {1, 0, 1, 1, 0, 0};
    cx_confusion c = cx_confusion_at(s, y, 6, 0.6); /* >= 0.6: 4 positive calls */
    assert_true(c.tp == 3 && c.fp == 1 && c.tn == 2 && c.fn == 0);
    cx_binary_metrics m;
    cx_metrics_from_confusion(&c, &m);
    assert_true(fabs(m.sensitivity - 1.0) < 1e-15);
    assert_true(fabs(m.specificity - 2.0 / 3) < 1e-15);
    assert_true(fabs(m.ppv - 0.75) < 1e-15);
    assert_true(fabs(m.npv - 1.0) < 1e-15);
    assert_true(fabs(m.f1 - 6.0 / 7) < 1e-15);
    assert_int_equal(m.zero_division, 0);
    /* nothing called positive: PPV 0/0 -> 0 as sklearn, flagged */
    c = cx_confusion_at(s, y, 6, 2.0);
    cx_metrics_from_confusion(&c, &m);
    assert_true(m.ppv == 0 && (m.zero_division & CX_ZD_PPV));
    assert_true(m.f1 == 0 && !(m.zero_division & CX_ZD_F1));
    double t;
    assert_int_equal(cx_choose_threshold(s, y, 6, CX_OP_MAXF1, &t), 1);
    assert_true(t == 0.6);
    assert_int_equal(cx_choose_threshold(s, y, 6, CX_OP_YOUDEN, &t), 1);
    assert_true(t == 0.6); /* J = 1 - 1/3 */
}

static void test_percentile(void **state)
{
    (void)state;
    double v[] = {4, 1, 3, 2};
    /* numpy.percentile([1,2,3,4], [2.5, 50, 97.5]) = 1.075, 2.5, 3.925 */
    assert_true(fabs(cx_percentile(v, 4, 2.5) - 1.075) < 1e-12);
    assert_true(fabs(cx_percentile(v, 4, 50) - 2.5) < 1e-12);
    assert_true(fabs(cx_percentile(v, 4, 97.5) - 3.925) < 1e-12);
    assert_true(isnan(cx_percentile(v, 0, 50)));
}

/* ------------------------------------------------------------ bootstrap */

/* A small synthetic evaluation: n images, 3 classes (one very rare, so that
 * some resamples are degenerate), heavily tied scores. */
static void make_tables(int n, cx_pred_table **pred, cx_labels **lab)
{
    const char *cls[3] = {"A", "B", "Rare"};
    cx_err err = {0};
    assert_int_equal(cx_pred_new(n, 3, cls, pred, &err), CX_OK);
    char *csv = malloc((size_t)n * 64 + 64);
    size_t u = (size_t)sprintf(csv, "image,A,B,Rare\n");
    uint64_t x = 12345;
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "img%04d.png", i);
        cx_pred_set_image(*pred, i, id, &err);
        int ya = 0, yb = 0, yr = i == 7 || i == 33;
        for (int k = 0; k < 3; k++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            double r = (double)(x >> 11) / 9007199254740992.0;
            int yk = k == 0 ? (ya = r < 0.3) : k == 1 ? (yb = (x >> 7) % 5 == 0) : yr;
            double sc = round((0.5 * r + 0.4 * yk) * 10) / 10; /* 1 decimal: many ties */
            (*pred)->scores[(size_t)i * 3 + k] = sc;
        }
        u += (size_t)sprintf(csv + u, "%s,%d,%d,%d\n", id, ya, yb, yr);
    }
    write_file(tmp_path("boot_labels.csv"), csv);
    free(csv);
    assert_int_equal(cx_labels_load(tmp_path("boot_labels.csv"), 3, cls, lab, &err), CX_OK);
}

static void test_bootstrap_deterministic(void **state)
{
    (void)state;
    cx_pred_table *p;
    cx_labels *l;
    make_tables(300, &p, &l);
    cx_eval_opts o;
    cx_eval_opts_default(&o);
    o.n_bootstrap = 500;
    o.seed = 42;
    cx_err err = {0};
    cx_eval_result *r1, *r2, *r3;
    cx_set_threads(1);
    assert_int_equal(cx_evaluate(p, l, NULL, &o, &r1, &err), CX_OK);
    cx_set_threads(4);
    assert_int_equal(cx_evaluate(p, l, NULL, &o, &r2, &err), CX_OK);
    o.seed = 43;
    assert_int_equal(cx_evaluate(p, l, NULL, &o, &r3, &err), CX_OK);
    cx_set_threads(0);
    for (int k = 0; k < 3; k++) {
        assert_memory_equal(&r1->cls[k].auroc, &r2->cls[k].auroc, sizeof(cx_stat));
        assert_memory_equal(&r1->cls[k].f1, &r2->cls[k].f1, sizeof(cx_stat));
        assert_int_equal(r1->cls[k].boot_skipped, r2->cls[k].boot_skipped);
    }
    assert_memory_equal(&r1->mean_auroc, &r2->mean_auroc, sizeof(cx_stat));
    assert_true(r1->cls[0].auroc.lo != r3->cls[0].auroc.lo ||
                r1->cls[0].auroc.hi != r3->cls[0].auroc.hi);
    /* the rare class (2 positives of 300) has degenerate resamples */
    assert_true(r1->cls[2].boot_skipped > 0);
    assert_true(r1->mean_skipped >= r1->cls[2].boot_skipped);
    cx_eval_free(r1);
    cx_eval_free(r2);
    cx_eval_free(r3);
    cx_pred_free(p);
    cx_labels_free(l);
}

/* The multiplicity walk against expanding each resample and calling
 * cx_auroc / cx_confusion_at on it. */
static void test_bootstrap_matches_naive(void **state)
{
    (void)state;
    int n = 200, B = 300;
    cx_pred_table *p;
    cx_labels *l;
    make_tables(n, &p, &l);
    cx_eval_opts o;
    cx_eval_opts_default(&o);
    o.n_bootstrap = B;
    o.seed = 7;
    o.threshold = 0.5;
    cx_err err = {0};
    cx_eval_result *r;
    assert_int_equal(cx_evaluate(p, l, NULL, &o, &r, &err), CX_OK);
    uint32_t *idx = malloc((size_t)n * sizeof *idx);
    double *sc = malloc((size_t)n * sizeof *sc);
    int8_t *y = malloc((size_t)n);
    double *auc = malloc((size_t)B * sizeof *auc), *f1 = malloc((size_t)B * sizeof *f1);
    for (int k = 0; k < 3; k++) {
        size_t m = 0;
        long skipped = 0;
        for (int b = 0; b < B; b++) {
            cx_bootstrap_indices(7, (uint64_t)b, (uint32_t)n, idx);
            for (int i = 0; i < n; i++) {
                sc[i] = p->scores[(size_t)idx[i] * 3 + k];
                y[i] = (int8_t)cx_labels_get(l, cx_labels_find(l, p->images[idx[i]]), k);
            }
            double a;
            if (!cx_auroc(sc, y, (size_t)n, &a)) {
                skipped++;
                continue;
            }
            cx_confusion c = cx_confusion_at(sc, y, (size_t)n, 0.5);
            cx_binary_metrics bm;
            cx_metrics_from_confusion(&c, &bm);
            auc[m] = a;
            f1[m] = bm.f1;
            m++;
        }
        assert_int_equal(skipped, r->cls[k].boot_skipped);
        double lo = cx_percentile(auc, m, 2.5), hi = cx_percentile(auc, m, 97.5);
        assert_true(fabs(lo - r->cls[k].auroc.lo) < 1e-12);
        assert_true(fabs(hi - r->cls[k].auroc.hi) < 1e-12);
        lo = cx_percentile(f1, m, 2.5);
        hi = cx_percentile(f1, m, 97.5);
        assert_true(fabs(lo - r->cls[k].f1.lo) < 1e-12);
        assert_true(fabs(hi - r->cls[k].f1.hi) < 1e-12);
    }
    free(idx);
    free(sc);
    free(y);
    free(auc);
    free(f1);
    cx_eval_free(r);
    cx_pred_free(p);
    cx_labels_free(l);
}

static void test_evaluate_errors(void **state)
{
    (void)state;
    cx_err err = {0};
    cx_pred_table *p;
    cx_labels *l;
    const char *cls[1] = {"Edema"};
    write_file(tmp_path("e_labels.csv"), "image,Edema\na.png,0\nb.png,0\n");
    assert_int_equal(cx_labels_load(tmp_path("e_labels.csv"), 1, cls, &l, &err), CX_OK);
    /* an image without a label: named in the error */
    write_file(tmp_path("e_pred.csv"), "image,Edema\na.png,0.1\nc.png,0.3\n");
    assert_int_equal(cx_pred_load(tmp_path("e_pred.csv"), &p, &err), CX_OK);
    cx_eval_result *r;
    cx_eval_opts o;
    cx_eval_opts_default(&o);
    o.n_bootstrap = 10;
    assert_int_equal(cx_evaluate(p, l, NULL, &o, &r, &err), CX_EMISSING);
    assert_non_null(strstr(err.msg, "c.png"));
    cx_pred_free(p);
    /* no positives: undefined AUROC, NaN (never a number), a warning */
    write_file(tmp_path("e_pred2.csv"), "image,Edema\na.png,0.1\nb.png,0.3\n");
    assert_int_equal(cx_pred_load(tmp_path("e_pred2.csv"), &p, &err), CX_OK);
    assert_int_equal(cx_evaluate(p, l, NULL, &o, &r, &err), CX_OK);
    assert_int_equal(r->cls[0].defined, 0);
    assert_true(isnan(r->cls[0].auroc.value));
    assert_true(isnan(r->mean_auroc.value));
    assert_true(r->n_warnings > 0);
    assert_int_equal(cx_eval_write_json(r, tmp_path("e.json"), &err), CX_OK);
    char *txt;
    size_t n;
    assert_int_equal(cx_read_text_file(tmp_path("e.json"), &txt, &n, &err), CX_OK);
    assert_null(strstr(txt, "nan"));
    assert_null(strstr(txt, "NaN"));
    assert_non_null(strstr(txt, "\"value\": null"));
    free(txt);
    cx_eval_free(r);
    cx_pred_free(p);
    cx_labels_free(l);
    /* non-numeric score, duplicate with different scores */
    write_file(tmp_path("e_pred3.csv"), "image,Edema\na.png,0.1\nb.png,high\n");
    assert_int_equal(cx_pred_load(tmp_path("e_pred3.csv"), &p, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, ":3:"));
    write_file(tmp_path("e_pred4.csv"), "image,Edema\na.png,0.1\na.png,0.2\n");
    assert_int_equal(cx_pred_load(tmp_path("e_pred4.csv"), &p, &err), CX_EFORMAT);
    write_file(tmp_path("e_pred5.csv"), "image,Edema\na.png,1.7\nb.png,-2\n");
    assert_int_equal(cx_pred_load(tmp_path("e_pred5.csv"), &p, &err), CX_OK);
    assert_int_equal(p->n_warnings, 1);
    assert_non_null(strstr(p->warnings[0], "outside [0,1]"));
    cx_pred_free(p);
    /* two columns naming one class: the message names both (made before
     * the table holding the names is freed; ASan checks the order) */
    write_file(tmp_path("e_pred6.csv"), "image,Effusion,effusion\na.png,0.1,0.2\n");
    assert_int_equal(cx_pred_load(tmp_path("e_pred6.csv"), &p, &err), CX_EFORMAT);
    assert_null(p);
    assert_non_null(strstr(err.msg, "columns 'Effusion' and 'effusion' name the same class"));
}

/* The row and byte limits of text tables: counted while reading (plain and
 * gzip) and while parsing text in memory; the messages name the options. */
static void test_text_limits(void **state)
{
    (void)state;
    cx_limits saved, l;
    cx_limits_get(&saved);
    cx_err err;
    const char *plain = tmp_path("lim.csv");
    write_file(plain, "image,Edema\na,1\nb,0\nc,1\n");
    l = saved;
    l.max_rows = 2;
    assert_int_equal(cx_limits_set(&l, &err), CX_OK);
    cx_csv *t = NULL;
    cx_csv_opts o = {CX_CSV_COMMA, 1, 0};
    assert_int_equal(cx_csv_read(plain, &o, &t, &err), CX_ELIMIT);
    assert_non_null(strstr(err.msg, "--max-rows"));
    assert_non_null(strstr(err.msg, plain));
    const char *txt = "image,Edema\na,1\nb,0\nc,1";  /* no final newline */
    assert_int_equal(cx_csv_parse(txt, strlen(txt), "mem", &o, &t, &err), CX_ELIMIT);
    l.max_rows = 3;
    assert_int_equal(cx_limits_set(&l, &err), CX_OK);
    assert_int_equal(cx_csv_read(plain, &o, &t, &err), CX_OK);
    assert_int_equal(t->n_rows, 3);
    cx_csv_free(t);
    assert_int_equal(cx_csv_parse(txt, strlen(txt), "mem", &o, &t, &err), CX_OK);
    cx_csv_free(t);
    /* bytes, after decompression */
    const char *gz = tmp_path("lim.csv.gz");
    gzFile g = gzopen(gz, "wb9");
    assert_non_null(g);
    gzputs(g, "image,Edema\n");
    for (int i = 0; i < 20000; i++)
        gzputs(g, "a,1\n");
    gzclose(g);
    l = saved;
    l.max_bytes = 50000;
    assert_int_equal(cx_limits_set(&l, &err), CX_OK);
    assert_int_equal(cx_csv_read(gz, &o, &t, &err), CX_ELIMIT);
    assert_non_null(strstr(err.msg, "--max-bytes"));
    l.max_bytes = 100000;
    assert_int_equal(cx_limits_set(&l, &err), CX_OK);
    assert_int_equal(cx_csv_read(gz, &o, &t, &err), CX_OK);
    assert_int_equal(t->n_rows, 20000);
    cx_csv_free(t);
    assert_int_equal(cx_limits_set(&saved, &err), CX_OK);
}

/* SHA-256 against the FIPS 180-2 test vectors, and the provenance's command
 * line quoting. */
static void test_provenance(void **state)
{
    (void)state;
    cx_err err = {0};
    char hex[65];
    long long n;
    write_file(tmp_path("abc.txt"), "abc");
    assert_int_equal(cx_sha256_file(tmp_path("abc.txt"), hex, &n, &err), CX_OK);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_int_equal(n, 3);
    write_file(tmp_path("empty.txt"), "");
    assert_int_equal(cx_sha256_file(tmp_path("empty.txt"), hex, &n, &err), CX_OK);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    write_file(tmp_path("two.txt"), "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
    assert_int_equal(cx_sha256_file(tmp_path("two.txt"), hex, NULL, &err), CX_OK);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    assert_int_equal(cx_sha256_file(tmp_path("no-such-file"), hex, NULL, &err), CX_EIO);
    assert_non_null(strstr(err.msg, "no-such-file"));

    cx_provenance p;
    char *argv[] = {"evaluate", "--title", "it's a test", "--json", "o.json", ""};
    assert_int_equal(cx_provenance_init(&p, "chexnet", 6, argv, &err), CX_OK);
    assert_string_equal(p.command_line,
                        "chexnet evaluate --title 'it'\\''s a test' --json o.json ''");
    assert_int_equal(strlen(p.created), 20);
    assert_int_equal(p.created[10], 'T');
    assert_int_equal(p.created[19], 'Z');
    assert_string_equal(p.version, CX_VERSION);
    assert_int_equal(cx_provenance_add_input(&p, "labels", tmp_path("abc.txt"), &err), CX_OK);
    assert_int_equal(cx_provenance_add_input(&p, "x", tmp_path("no-such-file"), &err), CX_EIO);
    assert_int_equal(p.n_inputs, 1);
    assert_string_equal(p.inputs[0].role, "labels");
    assert_int_equal(p.inputs[0].size, 3);
    assert_string_equal(p.inputs[0].sha256,
                        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    cx_provenance_free(&p);
}

int main(void)
{
    const char *t = getenv("CX_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/test_eval", t && *t ? t : "/tmp");
    char parent[1024];
    snprintf(parent, sizeof parent, "%s", t && *t ? t : "/tmp");
    mkdir(parent, 0777);
    mkdir(g_tmp, 0777);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_quotes),
        cmocka_unit_test(test_text_limits),
        cmocka_unit_test(test_csv_errors),
        cmocka_unit_test(test_csv_gzip_and_whitespace),
        cmocka_unit_test(test_parse_double),
        cmocka_unit_test(test_labels_formats),
        cmocka_unit_test(test_labels_duplicates),
        cmocka_unit_test(test_auroc_ties),
        cmocka_unit_test(test_auroc_degenerate),
        cmocka_unit_test(test_roc_curve),
        cmocka_unit_test(test_metrics_and_thresholds),
        cmocka_unit_test(test_percentile),
        cmocka_unit_test(test_bootstrap_deterministic),
        cmocka_unit_test(test_bootstrap_matches_naive),
        cmocka_unit_test(test_evaluate_errors),
        cmocka_unit_test(test_provenance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
