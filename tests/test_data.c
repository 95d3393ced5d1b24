/* Unit tests of the data pipeline: datasets from the three label formats,
 * patient-level split invariants and determinism, list splits, split files,
 * packs (round trip, corrupt files), the loader (determinism across thread
 * counts, resume, flips, pack == files), bad inputs with line numbers. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "chexnet.h"
#include "util/rng.h"

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
    static char buf[16][1200];
    static int k = 0;
    k = (k + 1) % 16;
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

#define HEADER                                                                                 \
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View "       \
    "Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]\n"

/* A synthetic ChestX-ray14 metadata table: n_pat patients with 1..9 images
 * each (as NIH: name PPPPPPPP_III.png), findings drawn from a seeded rng.
 * Returns the number of rows. */
static int make_metadata(const char *path, int n_pat, uint64_t seed, int gz)
{
    size_t cap = 1 << 20, u = 0;
    char *t = malloc(cap);
    u += (size_t)sprintf(t, "%s", HEADER);
    cx_rng r;
    cx_rng_seed(&r, seed);
    int rows = 0;
    for (int p = 1; p <= n_pat; p++) {
        int m = 1 + (int)cx_rng_below(&r, 9);
        for (int j = 0; j < m; j++) {
            char lab[256] = "";
            for (int k = 0; k < 14; k++)
                if (cx_rng_below(&r, 8) == 0) {
                    if (lab[0])
                        strcat(lab, "|");
                    strcat(lab, CX_CHESTXRAY14_CLASSES[k]);
                }
            if (!lab[0])
                strcpy(lab, "No Finding");
            if (u + 512 > cap) {
                cap *= 2;
                t = realloc(t, cap);
            }
            u += (size_t)sprintf(t + u, "%08d_%03d.png,%s,%d,%d,50,M,PA,2048,2500,0.14,0.14\n", p,
                                 j, lab, j, p);
            rows++;
        }
    }
    if (gz)
        write_gz(path, t);
    else
        write_file(path, t);
    free(t);
    return rows;
}

static cx_dataset *load(const char *labels, const char *task, const char *dir, cx_err *err)
{
    cx_dataset_opts o;
    cx_dataset_opts_default(&o);
    o.labels = labels;
    o.task = task;
    o.image_dir = dir;
    cx_dataset *ds = NULL;
    cx_status st = cx_dataset_load(&o, &ds, err);
    if (st)
        return NULL;
    return ds;
}

/* ------------------------------------------------------------- datasets */

static void test_metadata_load(void **state)
{
    (void)state;
    const char *p = tmp_path("meta.csv.gz");
    int rows = make_metadata(p, 300, 1, 1);
    cx_err err = {0};
    cx_dataset *ds = load(p, NULL, NULL, &err);
    assert_non_null(ds);
    assert_int_equal(cx_dataset_size(ds), rows);
    assert_int_equal(cx_dataset_num_classes(ds), 14);
    assert_int_equal(cx_dataset_num_patients(ds), 300);
    assert_string_equal(cx_dataset_source(ds), "chestxray14-metadata");
    assert_string_equal(cx_dataset_patient_id(ds, cx_dataset_patient(ds, 0)), "1");
    cx_dataset *dp = load(p, "pneumonia", NULL, &err);
    assert_non_null(dp);
    assert_int_equal(cx_dataset_num_classes(dp), 1);
    assert_string_equal(cx_dataset_class(dp, 0), "Pneumonia");
    for (int i = 0; i < rows; i++)
        assert_int_equal(cx_dataset_labels(dp)[i], cx_dataset_labels(ds)[i * 14 + 6]);
    assert_int_equal(cx_dataset_find(ds, "00000002_000.png"), cx_dataset_find(dp, "00000002_000.png"));
    assert_int_equal(cx_dataset_find(ds, "nope.png"), -1);
    cx_dataset_free(ds);
    cx_dataset_free(dp);
}

static void expect_error(const char *labels, const char *task, const char *needle,
                         cx_status code)
{
    cx_err err = {0};
    cx_dataset *ds = load(labels, task, NULL, &err);
    assert_null(ds);
    if (code)
        assert_int_equal(err.code, code);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' lacks '%s'", err.msg, needle);
}

static void test_bad_rows(void **state)
{
    (void)state;
    const char *p = tmp_path("bad1.csv");
    write_file(p, HEADER "00000001_000.png,Pneumonia,0,1,57,M,PA,2682,2749,0.143,0.143\n"
                         "00000001_001.png,Cardiomegaly,1,1,58,M,PA,2894,2729,0.143\n");
    expect_error(p, NULL, "bad1.csv:3", CX_EFORMAT); /* 10 fields instead of 11 */
    write_file(p, HEADER "00000001_000.png,Pneumonia,0,1,57,M,PA,2682,2749,0.143,0.143\n"
                         "00000002_000.png,Pneumonia|Flu,0,2,57,M,PA,2682,2749,0.143,0.143\n");
    expect_error(p, NULL, "bad1.csv:3: finding 'Flu'", CX_EFORMAT);
    write_file(p, HEADER "00000001_000.png,No Finding|Mass,0,1,57,M,PA,2682,2749,0.143,0.143\n");
    expect_error(p, NULL, "bad1.csv:2", CX_EFORMAT);
    write_file(p, HEADER "00000001_000.png,Mass,0,,57,M,PA,2682,2749,0.143,0.143\n");
    expect_error(p, NULL, "bad1.csv:2: empty 'Patient ID'", CX_EFORMAT);
    write_file(p, HEADER "00000001_000.png,Mass,0,1,57,M,PA,2682,2749,0.143,0.143\n"
                         "00000001_000.png,Edema,0,1,57,M,PA,2682,2749,0.143,0.143\n");
    expect_error(p, NULL, "bad1.csv:3: image '00000001_000.png' appears twice", CX_EFORMAT);
    /* a class that is not a ChestX-ray14 finding */
    write_file(p, HEADER "00000001_000.png,Mass,0,1,57,M,PA,2682,2749,0.143,0.143\n");
    cx_dataset_opts o;
    cx_dataset_opts_default(&o);
    const char *cls[] = {"Pneumonia", "Covid"};
    o.labels = p;
    o.n_classes = 2;
    o.classes = cls;
    cx_dataset *ds = NULL;
    cx_err err = {0};
    assert_int_not_equal(cx_dataset_load(&o, &ds, &err), CX_OK);
    assert_non_null(strstr(err.msg, "'Covid' is not a ChestX-ray14 finding"));
    expect_error(p, "lungs", "unknown task", CX_EARG);

    /* split lists */
    const char *l = tmp_path("bad.txt");
    write_file(l, "00000001_000.png 0 0 0 0 0 0 1 0 0 0 0 0 0 0\n"
                  "00000002_000.png 0 0 0 0 0 0 2 0 0 0 0 0 0 0\n");
    expect_error(l, NULL, "bad.txt:2: label 7 is '2'", CX_EFORMAT);
    write_file(l, "00000001_000.png 0 0 0 0 0 0 1 0 0 0 0 0 0 0\n"
                  "00000002_000.png 0 0 0 0 0 0 0 0 0 0 0 0 0\n");
    expect_error(l, NULL, "bad.txt:2: 14 fields", CX_EFORMAT);
    write_file(l, "a.png\nb.png\n");
    expect_error(l, NULL, "plain image list has no labels", CX_EFORMAT);

    /* manifests */
    const char *m = tmp_path("bad_manifest.csv");
    write_file(m, "path,pneumonia,patient\na.png,1,p1\nb.png,yes,p2\n");
    expect_error(m, NULL, "no column holds only 0/1", CX_EMISSING);
    expect_error(m, "pneumonia", "bad_manifest.csv:3: column 'pneumonia' has 'yes'", CX_EFORMAT);
    write_file(m, "path,pneumonia,patient\na.png,1,p1\nb.png,0,\n");
    expect_error(m, "pneumonia", "bad_manifest.csv:3: empty patient", CX_EFORMAT);
    write_file(m, "path,normal,patient\na.png,1,p1\n");
    expect_error(m, "pneumonia", "no column for class 'Pneumonia'", CX_EMISSING);
}

static void test_manifest(void **state)
{
    (void)state;
    const char *m = tmp_path("manifest.csv");
    write_file(m, "path,split,label,pneumonia,subtype,patient_key\n"
                  "train/a.jpeg,train,P,1,virus,K1\n"
                  "train/b.jpeg,train,N,0,normal,K2\n"
                  "test/c.jpeg,test,P,1,bacteria,K1\n");
    cx_err err = {0};
    cx_dataset *ds = load(m, NULL, NULL, &err);
    assert_non_null(ds);
    assert_int_equal(cx_dataset_num_classes(ds), 1);
    assert_string_equal(cx_dataset_class(ds, 0), "pneumonia");
    assert_int_equal(cx_dataset_num_patients(ds), 2);
    assert_int_equal(cx_dataset_patient(ds, 0), cx_dataset_patient(ds, 2));
    assert_int_equal(cx_dataset_num_warnings(ds), 0);
    cx_dataset_free(ds);
    /* without a patient column: one patient per image, with a warning */
    write_file(m, "path,pneumonia\na.jpeg,1\nb.jpeg,0\n");
    ds = load(m, "pneumonia", NULL, &err);
    assert_non_null(ds);
    assert_string_equal(cx_dataset_class(ds, 0), "Pneumonia");
    assert_int_equal(cx_dataset_num_patients(ds), 2);
    assert_int_equal(cx_dataset_num_warnings(ds), 1);
    cx_dataset_free(ds);
}

/* --------------------------------------------------------------- splits */

static void check_split_invariants(const cx_dataset *ds, const cx_split *sp)
{
    int n = cx_dataset_size(ds), np = cx_dataset_num_patients(ds);
    int *pp = malloc((size_t)np * sizeof *pp);
    for (int q = 0; q < np; q++)
        pp[q] = -1;
    int cnt[3] = {0, 0, 0};
    for (int i = 0; i < n; i++) {
        int p = sp->part[i], q = cx_dataset_patient(ds, i);
        assert_true(p >= 0 && p < 3);
        if (pp[q] >= 0)
            assert_int_equal(pp[q], p); /* no patient in two parts */
        pp[q] = p;
        cnt[p]++;
    }
    for (int p = 0; p < 3; p++) {
        assert_int_equal(cnt[p], sp->count[p]);
        for (int j = 0; j < sp->count[p]; j++) {
            assert_int_equal(sp->part[sp->index[p][j]], p);
            if (j)
                assert_true(sp->index[p][j] > sp->index[p][j - 1]);
        }
    }
    assert_int_equal(sp->crossing_patients, 0);
    assert_int_equal(sp->patients[0] + sp->patients[1] + sp->patients[2], np);
    free(pp);
}

static void test_random_split(void **state)
{
    (void)state;
    const char *p = tmp_path("meta2.csv");
    int rows = make_metadata(p, 2000, 7, 0);
    cx_err err = {0};
    cx_dataset *ds = load(p, "all14", NULL, &err);
    assert_non_null(ds);
    double f[3] = {0.7, 0.1, 0.2};
    cx_split a, b, c;
    assert_int_equal(cx_split_random(ds, f, 42, &a, &err), CX_OK);
    check_split_invariants(ds, &a);
    /* the fractions miss by at most half a patient (<= 9 images) */
    for (int q = 0; q < 3; q++)
        assert_true(fabs(a.count[q] - f[q] * rows) <= 9.0);
    /* positives add up */
    const uint8_t *y = cx_dataset_labels(ds);
    for (int k = 0; k < 14; k++) {
        int tot = 0;
        for (int i = 0; i < rows; i++)
            tot += y[i * 14 + k];
        assert_int_equal(a.positives[k] + a.positives[14 + k] + a.positives[28 + k], tot);
    }
    assert_int_equal(cx_split_random(ds, f, 42, &b, &err), CX_OK);
    assert_memory_equal(a.part, b.part, (size_t)rows);
    assert_int_equal(cx_split_random(ds, f, 43, &c, &err), CX_OK);
    assert_memory_not_equal(a.part, c.part, (size_t)rows);
    check_split_invariants(ds, &c);
    cx_split_free(&b);
    cx_split_free(&c);
    /* bad fractions */
    double bad[3] = {0.7, 0.2, 0.2};
    assert_int_equal(cx_split_random(ds, bad, 1, &b, &err), CX_EARG);
    double neg[3] = {1.1, -0.1, 0};
    assert_int_equal(cx_split_random(ds, neg, 1, &b, &err), CX_EARG);
    /* a zero fraction: empty part */
    double f2[3] = {0.8, 0.2, 0};
    assert_int_equal(cx_split_random(ds, f2, 1, &b, &err), CX_OK);
    assert_int_equal(b.count[2], 0);
    check_split_invariants(ds, &b);
    cx_split_free(&b);

    /* written files read back as lists give the same partition */
    const char *dir = tmp_path("split_out");
    assert_int_equal(cx_split_write(ds, &a, dir, &err), CX_OK);
    char tr[1300], va[1300], te[1300];
    snprintf(tr, sizeof tr, "%s/train.txt", dir);
    snprintf(va, sizeof va, "%s/val.txt", dir);
    snprintf(te, sizeof te, "%s/test.txt", dir);
    assert_int_equal(cx_split_from_lists(ds, tr, va, te, 0, 0, &b, &err), CX_OK);
    assert_memory_equal(a.part, b.part, (size_t)rows);
    cx_split_free(&b);
    /* and as the dataset itself (labels from the lists) */
    cx_dataset_opts o;
    cx_dataset_opts_default(&o);
    const char *lists[3] = {tr, va, te};
    o.lists = lists;
    o.n_lists = 3;
    cx_dataset *dl = NULL;
    assert_int_equal(cx_dataset_load(&o, &dl, &err), CX_OK);
    assert_int_equal(cx_dataset_size(dl), rows);
    assert_int_equal(cx_dataset_num_patients(dl), 2000);
    for (int i = 0; i < rows; i++) {
        int j = cx_dataset_find(dl, cx_dataset_name(ds, i));
        assert_true(j >= 0);
        assert_memory_equal(cx_dataset_labels(dl) + j * 14, y + i * 14, 14);
    }
    assert_int_equal(cx_split_from_lists(dl, tr, va, te, 0, 0, &b, &err), CX_OK);
    check_split_invariants(dl, &b);
    for (int q = 0; q < 3; q++)
        assert_int_equal(a.count[q], b.count[q]);
    cx_split_free(&b);
    cx_dataset_free(dl);
    cx_split_free(&a);
    cx_dataset_free(ds);
}

/* The split does not depend on the order of rows in the file. */
static void test_split_row_order(void **state)
{
    (void)state;
    const char *p1 = tmp_path("ord1.csv"), *p2 = tmp_path("ord2.csv");
    write_file(p1, HEADER
               "00000001_000.png,Mass,0,1,1,M,PA,1,1,1,1\n"
               "00000002_000.png,Mass,0,2,1,M,PA,1,1,1,1\n"
               "00000003_000.png,Edema,0,3,1,M,PA,1,1,1,1\n"
               "00000003_001.png,No Finding,0,3,1,M,PA,1,1,1,1\n"
               "00000004_000.png,Pneumonia,0,4,1,M,PA,1,1,1,1\n"
               "00000005_000.png,Pneumonia,0,5,1,M,PA,1,1,1,1\n");
    write_file(p2, HEADER
               "00000005_000.png,Pneumonia,0,5,1,M,PA,1,1,1,1\n"
               "00000003_001.png,No Finding,0,3,1,M,PA,1,1,1,1\n"
               "00000004_000.png,Pneumonia,0,4,1,M,PA,1,1,1,1\n"
               "00000001_000.png,Mass,0,1,1,M,PA,1,1,1,1\n"
               "00000003_000.png,Edema,0,3,1,M,PA,1,1,1,1\n"
               "00000002_000.png,Mass,0,2,1,M,PA,1,1,1,1\n");
    cx_err err = {0};
    cx_dataset *a = load(p1, "pneumonia", NULL, &err), *b = load(p2, "pneumonia", NULL, &err);
    assert_non_null(a);
    assert_non_null(b);
    double f[3] = {0.5, 0.25, 0.25};
    for (uint64_t seed = 0; seed < 20; seed++) {
        cx_split sa, sb;
        assert_int_equal(cx_split_random(a, f, seed, &sa, &err), CX_OK);
        assert_int_equal(cx_split_random(b, f, seed, &sb, &err), CX_OK);
        for (int i = 0; i < 6; i++)
            assert_int_equal(sa.part[i], sb.part[cx_dataset_find(b, cx_dataset_name(a, i))]);
        check_split_invariants(a, &sa);
        cx_split_free(&sa);
        cx_split_free(&sb);
    }
    cx_dataset_free(a);
    cx_dataset_free(b);
}

static void test_no_positive_warning(void **state)
{
    (void)state;
    const char *p = tmp_path("nopos.csv");
    write_file(p, HEADER
               "00000001_000.png,Mass,0,1,1,M,PA,1,1,1,1\n"
               "00000002_000.png,Pneumonia,0,2,1,M,PA,1,1,1,1\n"
               "00000003_000.png,No Finding,0,3,1,M,PA,1,1,1,1\n");
    cx_err err = {0};
    cx_dataset *ds = load(p, "pneumonia", NULL, &err);
    assert_non_null(ds);
    const char *tr = tmp_path("np_train.txt"), *va = tmp_path("np_val.txt");
    write_file(tr, "00000001_000.png\n00000002_000.png\n");
    write_file(va, "00000003_000.png"); /* no final newline */
    cx_split sp;
    assert_int_equal(cx_split_from_lists(ds, tr, va, NULL, 0, 0, &sp, &err), CX_OK);
    assert_int_equal(sp.count[0], 2);
    assert_int_equal(sp.count[1], 1);
    assert_int_equal(sp.count[2], 0);
    int found = 0;
    for (int i = 0; i < sp.n_warnings; i++)
        if (strstr(sp.warnings[i], "val split") && strstr(sp.warnings[i], "'Pneumonia'"))
            found = 1;
    assert_true(found);
    cx_split_free(&sp);
    /* list errors: unknown image, image in two lists, with line numbers */
    write_file(va, "00000003_000.png\n00000009_000.png\n");
    assert_int_equal(cx_split_from_lists(ds, tr, va, NULL, 0, 0, &sp, &err), CX_EMISSING);
    assert_non_null(strstr(err.msg, "np_val.txt:2: image '00000009_000.png' is not in"));
    write_file(va, "00000003_000.png\n00000001_000.png\n");
    assert_int_equal(cx_split_from_lists(ds, tr, va, NULL, 0, 0, &sp, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "np_val.txt:2: image '00000001_000.png' is also in the train"));
    cx_dataset_free(ds);
}

static void test_carve_val(void **state)
{
    (void)state;
    const char *p = tmp_path("meta3.csv");
    int rows = make_metadata(p, 500, 3, 0);
    cx_err err = {0};
    cx_dataset *ds = load(p, "pneumonia", NULL, &err);
    assert_non_null(ds);
    /* NIH style: train_val and test lists of plain names */
    const char *tv = tmp_path("train_val_list.txt"), *te = tmp_path("test_list.txt");
    FILE *a = fopen(tv, "w"), *b = fopen(te, "w");
    int ntv = 0;
    for (int i = 0; i < rows; i++) {
        const char *nm = cx_dataset_name(ds, i);
        int pat = atoi(nm);
        if (pat % 5 == 0)
            fprintf(b, "%s\n", nm);
        else {
            fprintf(a, "%s\n", nm);
            ntv++;
        }
    }
    fclose(a);
    fclose(b);
    cx_split sp, sp2;
    assert_int_equal(cx_split_from_lists(ds, tv, NULL, te, 0.125, 9, &sp, &err), CX_OK);
    check_split_invariants(ds, &sp);
    assert_int_equal(sp.count[0] + sp.count[1], ntv);
    assert_true(fabs(sp.count[1] - 0.125 * ntv) <= 9.0);
    assert_int_equal(cx_split_from_lists(ds, tv, NULL, te, 0.125, 9, &sp2, &err), CX_OK);
    assert_memory_equal(sp.part, sp2.part, (size_t)rows);
    cx_split_free(&sp);
    cx_split_free(&sp2);
    cx_dataset_free(ds);
}

/* ------------------------------------------------------ images and packs */

/* Writes n synthetic X-ray-like PNGs (grey and RGB, several sizes) and a
 * manifest; returns the manifest path. Image i of patient i / 2. */
static const char *make_images(int n, const char *sub)
{
    char dir[1300];
    snprintf(dir, sizeof dir, "%s/%s", g_tmp, sub);
    mkdir(dir, 0777);
    char nested[1400];
    snprintf(nested, sizeof nested, "%s/images_001", dir);
    mkdir(nested, 0777);
    snprintf(nested, sizeof nested, "%s/images_001/images", dir);
    mkdir(nested, 0777);
    static char man[1400];
    snprintf(man, sizeof man, "%s/manifest.csv", dir);
    FILE *m = fopen(man, "w");
    assert_non_null(m);
    fprintf(m, "path,Pneumonia,Edema,patient\n");
    cx_rng r;
    cx_rng_seed(&r, 5);
    for (int i = 0; i < n; i++) {
        int w = 20 + (int)cx_rng_below(&r, 60), h = 20 + (int)cx_rng_below(&r, 60);
        int ch = i % 3 == 0 ? 3 : 1;
        if (i % 7 == 1) /* already the target size */
            w = h = 32;
        cx_image im;
        cx_err err = {0};
        assert_int_equal(cx_image_new(w, h, ch, &im, &err), CX_OK);
        for (size_t j = 0; j < (size_t)w * h * ch; j++)
            im.data[j] = (uint8_t)cx_rng_below(&r, 256);
        if (i % 6 == 3) /* RGB file with grey content */
            for (size_t j = 0; j < (size_t)w * h; j++)
                im.data[3 * j + 1] = im.data[3 * j + 2] = im.data[3 * j];
        char name[64], path[1600];
        snprintf(name, sizeof name, "%08d_%03d.png", i / 2, i % 2);
        snprintf(path, sizeof path, "%s/images_001/images/%s", dir, name);
        assert_int_equal(cx_image_save_png(&im, path, &err), CX_OK);
        cx_image_free(&im);
        fprintf(m, "images_001/images/%s,%d,%d,P%d\n", name, (int)cx_rng_below(&r, 2),
                (int)cx_rng_below(&r, 2), i / 2);
    }
    fclose(m);
    return man;
}

static void test_missing_images(void **state)
{
    (void)state;
    const char *man = make_images(6, "imgs_missing");
    /* a ChestX-ray14-style list naming images, two of them absent */
    const char *l = tmp_path("missing_list.txt");
    write_file(l, "00000000_000.png 0 0 0 0 0 0 1 0 0 0 0 0 0 0\n"
                  "00000000_001.png 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
                  "00000077_000.png 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
                  "00000001_000.png 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
                  "00000078_000.png 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n");
    char dir[1300];
    snprintf(dir, sizeof dir, "%s/imgs_missing", g_tmp);
    cx_err err = {0};
    cx_dataset *ds = load(l, "pneumonia", dir, &err);
    assert_non_null(ds);
    /* found recursively in images_001/images */
    assert_non_null(cx_dataset_path(ds, 0));
    assert_non_null(strstr(cx_dataset_path(ds, 0), "images_001/images/00000000_000.png"));
    assert_int_equal(cx_dataset_check_images(ds, NULL, 0, &err), CX_EMISSING);
    assert_non_null(strstr(err.msg, "2 of 5 images"));
    assert_non_null(strstr(err.msg, "00000077_000.png, 00000078_000.png"));
    int ok[3] = {0, 1, 3};
    assert_int_equal(cx_dataset_check_images(ds, ok, 3, &err), CX_OK);
    /* the loader refuses before any batch */
    cx_loader *ld;
    int all[5] = {0, 1, 2, 3, 4};
    assert_int_equal(cx_loader_new(ds, all, 5, NULL, &ld, &err), CX_EMISSING);
    assert_non_null(strstr(err.msg, "2 of 5 images"));
    cx_dataset_free(ds);
    /* manifest paths are relative to its folder */
    ds = load(man, NULL, NULL, &err);
    assert_non_null(ds);
    assert_int_equal(cx_dataset_num_classes(ds), 2);
    assert_int_equal(cx_dataset_check_images(ds, NULL, 0, &err), CX_OK);
    cx_dataset_free(ds);
}

static void test_pack_roundtrip(void **state)
{
    (void)state;
    const char *man = make_images(20, "imgs_pack");
    cx_err err = {0};
    cx_dataset *ds = load(man, NULL, NULL, &err);
    assert_non_null(ds);
    const char *pk = tmp_path("test.cxpack");
    for (int mode = 0; mode <= 3; mode++) {
        if (mode == 2)
            continue;
        cx_pack_opts po;
        cx_pack_opts_default(&po);
        po.size = 32;
        po.channels = mode;
        po.threads = 3;
        assert_int_equal(cx_pack_write(ds, NULL, 0, &po, pk, NULL, NULL, &err), CX_OK);
        cx_dataset *pd = NULL;
        if (cx_pack_open(pk, &pd, &err))
            fail_msg("%s", err.msg);
        assert_int_equal(cx_dataset_size(pd), 20);
        assert_int_equal(cx_dataset_pack_size(pd), 32);
        assert_int_equal(cx_dataset_num_classes(pd), 2);
        assert_string_equal(cx_dataset_class(pd, 1), "Edema");
        assert_int_equal(cx_dataset_num_patients(pd), 10);
        assert_memory_equal(cx_dataset_labels(pd), cx_dataset_labels(ds), 40);
        for (int i = 0; i < 20; i++) {
            assert_string_equal(cx_dataset_name(pd, i), cx_dataset_name(ds, i));
            assert_string_equal(cx_dataset_patient_id(pd, cx_dataset_patient(pd, i)),
                                cx_dataset_patient_id(ds, cx_dataset_patient(ds, i)));
            cx_image a, b, c;
            assert_int_equal(cx_dataset_image(ds, i, mode == 1 ? 1 : 3, &a, &err), CX_OK);
            if (a.width != 32 || a.height != 32) {
                assert_int_equal(cx_image_resize(&a, 32, 32, &c, &err), CX_OK);
                cx_image_free(&a);
                a = c;
            }
            assert_int_equal(cx_dataset_image(pd, i, mode == 1 ? 1 : 3, &b, &err), CX_OK);
            assert_int_equal(b.width, 32);
            assert_memory_equal(a.data, b.data, (size_t)32 * 32 * a.channels);
            /* stored channels: grey content -> 1 in auto mode */
            cx_image s;
            assert_int_equal(cx_dataset_image(pd, i, 0, &s, &err), CX_OK);
            int expect = mode ? mode : (i % 3 == 0 && i % 6 != 3) ? 3 : 1;
            assert_int_equal(s.channels, expect);
            cx_image_free(&a);
            cx_image_free(&b);
            cx_image_free(&s);
        }
        cx_dataset_free(pd);
    }
    /* the file does not depend on the thread count */
    {
        cx_pack_opts po;
        cx_pack_opts_default(&po);
        po.size = 24;
        const char *p1 = tmp_path("t1.cxpack"), *p3 = tmp_path("t3.cxpack");
        po.threads = 1;
        assert_int_equal(cx_pack_write(ds, NULL, 0, &po, p1, NULL, NULL, &err), CX_OK);
        po.threads = 3;
        assert_int_equal(cx_pack_write(ds, NULL, 0, &po, p3, NULL, NULL, &err), CX_OK);
        char *b1, *b3;
        size_t n1, n3;
        FILE *f1 = fopen(p1, "rb"), *f3 = fopen(p3, "rb");
        fseek(f1, 0, SEEK_END);
        fseek(f3, 0, SEEK_END);
        n1 = (size_t)ftell(f1);
        n3 = (size_t)ftell(f3);
        assert_int_equal(n1, n3);
        rewind(f1);
        rewind(f3);
        b1 = malloc(n1);
        b3 = malloc(n3);
        assert_int_equal(fread(b1, 1, n1, f1), n1);
        assert_int_equal(fread(b3, 1, n3, f3), n3);
        assert_memory_equal(b1, b3, n1);
        fclose(f1);
        fclose(f3);
        free(b1);
        free(b3);
    }
    /* a subset */
    int sub[3] = {4, 9, 17};
    assert_int_equal(cx_pack_write(ds, sub, 3, NULL, pk, NULL, NULL, &err), CX_OK);
    cx_dataset *pd = NULL;
    assert_int_equal(cx_pack_open(pk, &pd, &err), CX_OK);
    assert_int_equal(cx_dataset_size(pd), 3);
    assert_string_equal(cx_dataset_name(pd, 2), cx_dataset_name(ds, 17));
    assert_int_equal(cx_dataset_pack_size(pd), 224);
    cx_dataset_free(pd);
    /* a pack as the label source of cx_dataset_load, selecting a class */
    cx_dataset *sel = load(pk, NULL, NULL, &err);
    assert_non_null(sel);
    assert_int_equal(cx_dataset_num_classes(sel), 2);
    cx_dataset_free(sel);
    cx_dataset_opts o;
    cx_dataset_opts_default(&o);
    const char *edema[1] = {"EDEMA"};
    o.labels = pk;
    o.n_classes = 1;
    o.classes = edema;
    assert_int_equal(cx_dataset_load(&o, &sel, &err), CX_OK);
    assert_int_equal(cx_dataset_num_classes(sel), 1);
    assert_string_equal(cx_dataset_class(sel, 0), "Edema");
    for (int j = 0; j < 3; j++)
        assert_int_equal(cx_dataset_labels(sel)[j], cx_dataset_labels(ds)[sub[j] * 2 + 1]);
    cx_dataset_free(sel);
    o.task = "all14";
    o.n_classes = 0;
    assert_int_equal(cx_dataset_load(&o, &sel, &err), CX_EMISSING);
    assert_non_null(strstr(err.msg, "the pack has no class 'Atelectasis'"));
    cx_dataset_free(ds);
}

static void test_pack_corrupt(void **state)
{
    (void)state;
    const char *man = make_images(8, "imgs_corrupt");
    cx_err err = {0};
    cx_dataset *ds = load(man, NULL, NULL, &err);
    assert_non_null(ds);
    const char *pk = tmp_path("c.cxpack");
    cx_pack_opts po;
    cx_pack_opts_default(&po);
    po.size = 16;
    assert_int_equal(cx_pack_write(ds, NULL, 0, &po, pk, NULL, NULL, &err), CX_OK);
    cx_dataset_free(ds);
    FILE *f = fopen(pk, "rb");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)len);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    const char *bad = tmp_path("bad.cxpack");
    cx_dataset *pd = NULL;
    /* truncated at several points */
    long cuts[] = {0, 10, 100, len / 2, len - 1};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        FILE *g = fopen(bad, "wb");
        fwrite(buf, 1, (size_t)cuts[c], g);
        fclose(g);
        assert_int_equal(cx_pack_open(bad, &pd, &err), CX_EFORMAT);
        assert_null(pd);
        assert_non_null(strstr(err.msg, "bad.cxpack"));
    }
    /* bad magic */
    buf[0] ^= 1;
    FILE *g = fopen(bad, "wb");
    fwrite(buf, 1, (size_t)len, g);
    fclose(g);
    assert_int_equal(cx_pack_open(bad, &pd, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "magic"));
    buf[0] ^= 1;
    /* a flipped byte in the index (just before the trailer) */
    buf[len - 64 - 3] ^= 0x40;
    g = fopen(bad, "wb");
    fwrite(buf, 1, (size_t)len, g);
    fclose(g);
    assert_int_equal(cx_pack_open(bad, &pd, &err), CX_EFORMAT);
    assert_non_null(strstr(err.msg, "checksum"));
    buf[len - 64 - 3] ^= 0x40;
    /* appended garbage */
    g = fopen(bad, "wb");
    fwrite(buf, 1, (size_t)len, g);
    fwrite("xx", 1, 2, g);
    fclose(g);
    assert_int_equal(cx_pack_open(bad, &pd, &err), CX_EFORMAT);
    /* intact copy opens */
    g = fopen(bad, "wb");
    fwrite(buf, 1, (size_t)len, g);
    fclose(g);
    assert_int_equal(cx_pack_open(bad, &pd, &err), CX_OK);
    cx_dataset_free(pd);
    free(buf);
    assert_int_equal(cx_pack_open(tmp_path("nonexistent.cxpack"), &pd, &err), CX_EIO);
}

/* --------------------------------------------------------------- loader */

typedef struct {
    int nb, n[64];
    float *x;
    float *y;
    int ids[64 * 8];
} epoch_out;

static void run_epoch(const cx_dataset *ds, const int *idx, int n, cx_loader_opts *lo,
                      int epoch, int start, epoch_out *e)
{
    cx_err err = {0};
    cx_loader *l;
    assert_int_equal(cx_loader_new(ds, idx, n, lo, &l, &err), CX_OK);
    size_t img = (size_t)lo->channels * lo->size * lo->size;
    int K = cx_dataset_num_classes(ds);
    e->x = calloc((size_t)n * img, sizeof(float));
    e->y = calloc((size_t)n * K, sizeof(float));
    float *bx = malloc((size_t)lo->batch * img * sizeof(float));
    float *by = malloc((size_t)lo->batch * K * sizeof(float));
    int bids[64];
    assert_int_equal(cx_loader_start_epoch(l, epoch, start, &err), CX_OK);
    int got, off = start * lo->batch;
    e->nb = 0;
    for (;;) {
        assert_int_equal(cx_loader_next(l, bx, by, bids, &got, &err), CX_OK);
        if (!got)
            break;
        e->n[e->nb++] = got;
        memcpy(e->x + (size_t)off * img, bx, (size_t)got * img * sizeof(float));
        memcpy(e->y + (size_t)off * K, by, (size_t)got * K * sizeof(float));
        memcpy(e->ids + off, bids, (size_t)got * sizeof(int));
        off += got;
    }
    free(bx);
    free(by);
    cx_loader_free(l);
}

static void test_loader(void **state)
{
    (void)state;
    const char *man = make_images(21, "imgs_loader");
    cx_err err = {0};
    cx_dataset *ds = load(man, NULL, NULL, &err);
    assert_non_null(ds);
    int idx[19];
    for (int i = 0; i < 19; i++)
        idx[i] = i + 1; /* a subset: images 1..19 */
    cx_loader_opts lo;
    cx_loader_opts_default(&lo);
    lo.batch = 4;
    lo.size = 32;
    lo.augment = 1;
    lo.seed = 11;
    size_t img = (size_t)3 * 32 * 32;
    epoch_out a, b, c, d;
    lo.threads = 1;
    run_epoch(ds, idx, 19, &lo, 3, 0, &a);
    assert_int_equal(a.nb, 5);
    assert_int_equal(a.n[4], 3);
    lo.threads = 4;
    lo.prefetch = 3;
    run_epoch(ds, idx, 19, &lo, 3, 0, &b);
    /* identical whatever the thread count */
    assert_memory_equal(a.ids, b.ids, 19 * sizeof(int));
    assert_memory_equal(a.x, b.x, 19 * img * sizeof(float));
    assert_memory_equal(a.y, b.y, 19 * 2 * sizeof(float));
    /* a permutation of the subset */
    int seen[21] = {0};
    for (int j = 0; j < 19; j++) {
        assert_true(a.ids[j] >= 1 && a.ids[j] <= 19);
        assert_int_equal(seen[a.ids[j]]++, 0);
        const uint8_t *y = cx_dataset_labels(ds) + a.ids[j] * 2;
        assert_true(a.y[j * 2] == y[0] && a.y[j * 2 + 1] == y[1]);
    }
    /* resume at batch 2: the same batches as the tail of the full epoch */
    run_epoch(ds, idx, 19, &lo, 3, 2, &c);
    assert_int_equal(c.nb, 3);
    assert_memory_equal(a.ids + 8, c.ids + 8, 11 * sizeof(int));
    assert_memory_equal(a.x + 8 * img, c.x + 8 * img, 11 * img * sizeof(float));
    /* another epoch: another order */
    run_epoch(ds, idx, 19, &lo, 4, 0, &d);
    assert_memory_not_equal(a.ids, d.ids, 19 * sizeof(int));
    /* flips: some images flipped, and flipped == mirror of unflipped */
    cx_loader_opts nf = lo;
    nf.augment = 0;
    nf.shuffle = 0;
    epoch_out u;
    run_epoch(ds, idx, 19, &nf, 3, 0, &u);
    int flipped = 0;
    for (int j = 0; j < 19; j++) {
        int id = a.ids[j];
        const float *fa = a.x + (size_t)j * img, *fu = u.x + (size_t)(id - 1) * img;
        int fl = cx_loader_flips(&lo, 3, id);
        flipped += fl;
        for (int r = 0; r < 3 * 32; r++)
            for (int x = 0; x < 32; x++)
                assert_true(fa[r * 32 + x] == fu[r * 32 + (fl ? 31 - x : x)]);
    }
    assert_true(flipped > 0 && flipped < 19);
    /* the values are the normalised pixels */
    {
        cx_image im, rs;
        assert_int_equal(cx_dataset_image(ds, 5, 0, &im, &err), CX_OK);
        assert_int_equal(cx_image_resize(&im, 32, 32, &rs, &err), CX_OK);
        float *t = malloc(img * sizeof(float));
        assert_int_equal(cx_image_to_tensor(&rs, 3, lo.mean, lo.std, t, &err), CX_OK);
        assert_memory_equal(t, u.x + 4 * img, img * sizeof(float));
        free(t);
        cx_image_free(&im);
        cx_image_free(&rs);
    }
    /* a pack at the loader's size gives the same tensors as the files */
    const char *pk = tmp_path("loader.cxpack");
    cx_pack_opts po;
    cx_pack_opts_default(&po);
    po.size = 32;
    assert_int_equal(cx_pack_write(ds, NULL, 0, &po, pk, NULL, NULL, &err), CX_OK);
    cx_dataset *pd = NULL;
    assert_int_equal(cx_pack_open(pk, &pd, &err), CX_OK);
    epoch_out p;
    run_epoch(pd, idx, 19, &lo, 3, 0, &p);
    assert_memory_equal(a.ids, p.ids, 19 * sizeof(int));
    assert_memory_equal(a.x, p.x, 19 * img * sizeof(float));
    /* 1-channel output */
    cx_loader_opts one = nf;
    one.channels = 1;
    epoch_out g;
    run_epoch(ds, idx, 19, &one, 0, 0, &g);
    assert_int_equal(g.nb, 5);
    /* drop_last */
    cx_loader *l;
    cx_loader_opts dl = lo;
    dl.drop_last = 1;
    assert_int_equal(cx_loader_new(ds, idx, 19, &dl, &l, &err), CX_OK);
    assert_int_equal(cx_loader_num_batches(l), 4);
    assert_int_equal(cx_loader_start_epoch(l, 0, 5, &err), CX_EARG);
    /* restart in the middle of an epoch */
    float *bx = malloc((size_t)4 * img * sizeof(float)), by[8];
    int got;
    assert_int_equal(cx_loader_start_epoch(l, 3, 0, &err), CX_OK);
    assert_int_equal(cx_loader_next(l, bx, by, NULL, &got, &err), CX_OK);
    assert_int_equal(cx_loader_start_epoch(l, 3, 1, &err), CX_OK);
    assert_int_equal(cx_loader_next(l, bx, by, NULL, &got, &err), CX_OK);
    assert_int_equal(got, 4);
    assert_memory_equal(bx, a.x + 4 * img, 4 * img * sizeof(float));
    free(bx);
    cx_loader_free(l);
    /* a decoding error surfaces in next(), naming the file */
    char victim[1500];
    snprintf(victim, sizeof victim, "%s", cx_dataset_path(ds, 2));
    write_file(victim, "not an image");
    int one_idx[1] = {2};
    assert_int_equal(cx_loader_new(ds, one_idx, 1, &nf, &l, &err), CX_OK);
    assert_int_not_equal(cx_loader_next(l, bx = malloc(img * 4 * sizeof(float)), by, NULL, &got, &err),
                         CX_OK);
    assert_non_null(strstr(err.msg, "00000001_000.png"));
    free(bx);
    cx_loader_free(l);

    epoch_out *all[] = {&a, &b, &c, &d, &u, &p, &g};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(all[i]->x);
        free(all[i]->y);
    }
    cx_dataset_free(pd);
    cx_dataset_free(ds);
}

int main(void)
{
    const char *t = getenv("CX_TMP");
    snprintf(g_tmp, sizeof g_tmp, "%s/test_data", t && *t ? t : "/tmp");
    if (t && *t)
        mkdir(t, 0777);
    mkdir(g_tmp, 0777);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metadata_load),
        cmocka_unit_test(test_bad_rows),
        cmocka_unit_test(test_manifest),
        cmocka_unit_test(test_random_split),
        cmocka_unit_test(test_split_row_order),
        cmocka_unit_test(test_no_positive_warning),
        cmocka_unit_test(test_carve_val),
        cmocka_unit_test(test_missing_images),
        cmocka_unit_test(test_pack_roundtrip),
        cmocka_unit_test(test_pack_corrupt),
        cmocka_unit_test(test_loader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
