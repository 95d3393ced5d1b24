/* Model files: save/load round trip with metadata, the legacy and
 * DataParallel names, and bad model files (missing tensor, wrong shape,
 * wrong dtype, unexpected tensor, inconsistent metadata): each a clear error
 * naming the file and the tensor, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chexnet.h"
#include "model/model_internal.h"

static char g_dir[1024];

static const char *tmp_path(const char *name)
{
    static char buf[8][1200];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static cx_model *small_model(int classes)
{
    cx_config cfg = {.arch = "densenet", .growth_rate = 4, .n_blocks = 2,
                     .block_config = {2, 2}, .num_init_features = 8, .bn_size = 2,
                     .num_classes = classes, .in_channels = 3};
    cx_model *m = NULL;
    assert_int_equal(cx_model_new(&cfg, &m, NULL), CX_OK);
    cx_model_init(m, 1);
    return m;
}

/* Writes the model's tensors under other names / with changes. */
typedef enum { W_ALL, W_DROP, W_BAD_SHAPE, W_BAD_DTYPE, W_EXTRA, W_RENAME_LEGACY } write_mode;

static void write_variant(cx_model *m, const char *path, write_mode mode, const char *target,
                          const char *classes_meta)
{
    cx_st_writer *w = cx_st_writer_new();
    cx_err err = {0};
    static int64_t i64[4096];
    for (int i = 0; i < cx_model_num_tensors(m); i++) {
        cx_param *p = cx_model_tensor(m, i);
        char name[260];
        snprintf(name, sizeof name, "%s", p->name);
        int hit = target && !strcmp(p->name, target);
        if (mode == W_DROP && hit)
            continue;
        if (mode == W_RENAME_LEGACY) {
            char tmp[220];
            snprintf(tmp, sizeof tmp, "module.densenet121.%s", p->name);
            const char *from[2] = {".norm1.", ".conv2."}, *to[2] = {".norm.1.", ".conv.2."};
            for (int r = 0; r < 2; r++) {
                char *q = strstr(tmp, from[r]);
                if (q) {
                    char rest[220];
                    snprintf(rest, sizeof rest, "%s", q + strlen(from[r]));
                    snprintf(q, sizeof tmp - (size_t)(q - tmp), "%s%s", to[r], rest);
                }
            }
            if (!strncmp(tmp + 19, "classifier.", 11)) {
                snprintf(name, sizeof name, "module.densenet121.classifier.0.%s", tmp + 30);
            } else {
                snprintf(name, sizeof name, "%s", tmp);
            }
        }
        if (mode == W_BAD_SHAPE && hit) {
            int64_t shape[4] = {p->shape[0], p->shape[1], 1, 1};
            if (p->ndim == 4) {
                assert_int_equal(cx_st_writer_add_f32(w, name, CX_DT_F32, 4, shape, p->data, &err),
                                 CX_OK);
                continue;
            }
        }
        if (mode == W_BAD_DTYPE && hit) {
            assert_true(p->numel <= 4096);
            assert_int_equal(cx_st_writer_add_i64(w, name, p->ndim, p->shape, i64, &err), CX_OK);
            continue;
        }
        assert_int_equal(cx_st_writer_add_f32(w, name, CX_DT_F32, p->ndim, p->shape, p->data, &err),
                         CX_OK);
    }
    if (mode == W_EXTRA) {
        /* the writer references the data until it writes: keep it alive */
        static const int64_t s[1] = {3};
        static const float v[3] = {1, 2, 3};
        assert_int_equal(cx_st_writer_add_f32(w, "features.extra.weight", CX_DT_F32, 1, s, v, &err),
                         CX_OK);
    }
    if (classes_meta)
        assert_int_equal(cx_st_writer_add_meta(w, "classes", classes_meta, &err), CX_OK);
    assert_int_equal(cx_st_writer_write(w, path, &err), CX_OK);
    cx_st_writer_free(w);
}

static void expect_error(const char *path, cx_status code, const char *needle1,
                         const char *needle2)
{
    cx_model *m = NULL;
    cx_err err = {0};
    cx_status st = cx_model_load(path, &m, &err);
    if (st != code)
        fail_msg("%s: expected status %d, got %d (%s)", path, code, st, err.msg);
    assert_null(m);
    assert_non_null(strstr(err.msg, path));
    if (needle1 && !strstr(err.msg, needle1))
        fail_msg("message '%s' lacks '%s'", err.msg, needle1);
    if (needle2 && !strstr(err.msg, needle2))
        fail_msg("message '%s' lacks '%s'", err.msg, needle2);
    printf("  ok: %s\n", err.msg);
}

static void test_round_trip(void **state)
{
    cx_model *m = small_model(3);
    const char *names[3] = {"Effusion", "Mass \"big\"", "Pneumonia"};
    cx_err err = {0};
    assert_int_equal(cx_model_set_class_names(m, 3, names, &err), CX_OK);
    assert_int_equal(cx_model_set_meta(m, "training_data", "kermany", &err), CX_OK);
    const char *p = tmp_path("rt.safetensors");
    assert_int_equal(cx_model_save(m, p, CX_DT_F32, &err), CX_OK);
    cx_model *m2 = NULL;
    assert_int_equal(cx_model_load(p, &m2, &err), CX_OK);
    assert_int_equal(cx_model_num_tensors(m2), cx_model_num_tensors(m));
    for (int i = 0; i < cx_model_num_tensors(m); i++)
        assert_memory_equal(cx_model_tensor(m, i)->data, cx_model_tensor(m2, i)->data,
                            cx_model_tensor(m, i)->numel * sizeof(float));
    assert_string_equal(cx_model_class_name(m2, 1), "Mass \"big\"");
    assert_string_equal(cx_model_meta(m2, "training_data"), "kermany");
    assert_int_equal(cx_model_input_size(m2), 224);
    assert_int_equal(cx_model_config(m2)->growth_rate, 4);
    assert_int_equal(cx_model_config(m2)->bn_size, 2);
    assert_int_equal(cx_model_file_dtype(m2), CX_DT_F32);
    cx_model_free(m2);
    /* F16 storage */
    const char *p16 = tmp_path("rt16.safetensors");
    assert_int_equal(cx_model_save(m, p16, CX_DT_F16, &err), CX_OK);
    assert_int_equal(cx_model_load(p16, &m2, &err), CX_OK);
    assert_int_equal(cx_model_file_dtype(m2), CX_DT_F16);
    cx_model_free(m2);
    /* legacy + DataParallel names load to the same weights */
    const char *pl = tmp_path("legacy.safetensors");
    write_variant(m, pl, W_RENAME_LEGACY, NULL, NULL);
    assert_int_equal(cx_model_load(pl, &m2, &err), CX_OK);
    for (int i = 0; i < cx_model_num_tensors(m); i++)
        assert_memory_equal(cx_model_tensor(m, i)->data, cx_model_tensor(m2, i)->data,
                            cx_model_tensor(m, i)->numel * sizeof(float));
    /* no metadata, 3 outputs: generic names */
    assert_string_equal(cx_model_class_name(m2, 0), "class_0");
    cx_model_free(m2);
    cx_model_free(m);
}

static void test_canonical_names(void **state)
{
    char out[128];
    struct {
        const char *in, *want;
        int keep;
    } cases[] = {
        {"module.densenet121.features.denseblock1.denselayer1.norm.1.weight",
         "features.denseblock1.denselayer1.norm1.weight", 1},
        {"module.features.denseblock4.denselayer16.conv.2.weight",
         "features.denseblock4.denselayer16.conv2.weight", 1},
        {"module.densenet121.classifier.0.bias", "classifier.bias", 1},
        {"features.transition1.norm.weight", "features.transition1.norm.weight", 1},
        {"features.norm0.num_batches_tracked", "", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int keep = cx_canonical_name(cases[i].in, out, sizeof out);
        assert_int_equal(keep, cases[i].keep);
        if (keep)
            assert_string_equal(out, cases[i].want);
    }
}

static void test_bad_files(void **state)
{
    cx_model *m = small_model(3);
    const char *p;
    p = tmp_path("missing.safetensors");
    write_variant(m, p, W_DROP, "features.denseblock2.denselayer1.norm2.running_var", NULL);
    expect_error(p, CX_EMISSING, "features.denseblock2.denselayer1.norm2.running_var", NULL);

    p = tmp_path("noconv0.safetensors");
    write_variant(m, p, W_DROP, "features.conv0.weight", NULL);
    expect_error(p, CX_EMISSING, "features.conv0.weight", NULL);

    p = tmp_path("shape.safetensors");
    write_variant(m, p, W_BAD_SHAPE, "features.denseblock1.denselayer2.conv2.weight", NULL);
    expect_error(p, CX_ESHAPE, "features.denseblock1.denselayer2.conv2.weight", "expected");

    p = tmp_path("dtype.safetensors");
    write_variant(m, p, W_BAD_DTYPE, "features.norm5.bias", NULL);
    expect_error(p, CX_EFORMAT, "features.norm5.bias", "I64");

    p = tmp_path("extra.safetensors");
    write_variant(m, p, W_EXTRA, NULL, NULL);
    expect_error(p, CX_EFORMAT, "features.extra.weight", NULL);

    p = tmp_path("classes.safetensors");
    write_variant(m, p, W_ALL, NULL, "[\"A\", \"B\"]");
    expect_error(p, CX_ESHAPE, "classes", NULL);

    p = tmp_path("classes-json.safetensors");
    write_variant(m, p, W_ALL, NULL, "[\"A\", \"B\", ");
    expect_error(p, CX_EFORMAT, "classes", NULL);

    p = tmp_path("empty.safetensors");
    FILE *f = fopen(p, "wb");
    fclose(f);
    expect_error(p, CX_EFORMAT, NULL, NULL);

    cx_model *none = NULL;
    cx_err err = {0};
    cx_status st = cx_model_load(tmp_path("does-not-exist.safetensors"), &none, &err);
    assert_true(st == CX_EIO || st == CX_EMISSING);
    assert_non_null(strstr(err.msg, "does-not-exist"));
    cx_model_free(m);
}

/* A model file with the model's tensors and one extra metadata entry. */
static void write_with_meta(cx_model *m, const char *path, const char *key, const char *value)
{
    cx_st_writer *w = cx_st_writer_new();
    cx_err err = {0};
    assert_int_equal(cx_model_to_writer(m, w, CX_DT_F32, &err), CX_OK);
    if (key)
        assert_int_equal(cx_st_writer_add_meta(w, key, value, &err), CX_OK);
    assert_int_equal(cx_st_writer_write(w, path, &err), CX_OK);
    cx_st_writer_free(w);
}

/* "thresholds" and "temperature": checked at load and when set; the
 * probability is cx_sigmoid(logit / T), bit for bit cx_sigmoid(logit)
 * without a temperature. */
static void test_thresholds_temperature(void **state)
{
    (void)state;
    cx_model *m = small_model(3);
    cx_err err = {0};
    float t[3], T[3];
    assert_int_equal(cx_model_thresholds(m, t), 0);
    assert_int_equal(cx_model_temperature(m, T), 0);
    assert_true(T[0] == 1.0f && T[1] == 1.0f && T[2] == 1.0f);
    const float zs[] = {-80.0f, -3.25f, -1e-7f, 0.0f, 0.3f, 7.5f, 88.0f};
    for (size_t i = 0; i < sizeof zs / sizeof zs[0]; i++) {
        float a = cx_model_probability(m, 1, zs[i]), b = cx_sigmoid(zs[i]);
        assert_memory_equal(&a, &b, sizeof a);
    }

    const float tv[3] = {0.25f, 0.5f, 0.125f}, Tv[3] = {2.0f, 0.5f, 1.3f};
    assert_int_equal(cx_model_set_thresholds(m, tv, &err), CX_OK);
    assert_int_equal(cx_model_set_temperature(m, Tv, &err), CX_OK);
    const float bad_t[3] = {0.5f, 1.0f, 0.5f}, bad_T[3] = {1.0f, -2.0f, 1.0f};
    assert_int_equal(cx_model_set_thresholds(m, bad_t, &err), CX_ENUMERIC);
    assert_non_null(strstr(err.msg, "thresholds"));
    assert_int_equal(cx_model_set_temperature(m, bad_T, &err), CX_ENUMERIC);
    assert_non_null(strstr(err.msg, "temperature"));
    assert_int_equal(cx_model_set_meta(m, "thresholds", "[0.5, 0.5]", &err), CX_ESHAPE);
    /* the refused values left the good ones in place */
    assert_int_equal(cx_model_thresholds(m, t), 1);
    assert_memory_equal(t, tv, sizeof t);
    float p = cx_model_probability(m, 0, 3.0f), q = cx_sigmoid(1.5f);
    assert_memory_equal(&p, &q, sizeof p);

    /* a round trip through a file keeps them exactly */
    const char *path = tmp_path("calibrated.safetensors");
    assert_int_equal(cx_model_save(m, path, CX_DT_F32, &err), CX_OK);
    cx_model *r = NULL;
    assert_int_equal(cx_model_load(path, &r, &err), CX_OK);
    assert_int_equal(cx_model_thresholds(r, t), 1);
    assert_memory_equal(t, tv, sizeof t);
    assert_int_equal(cx_model_temperature(r, T), 1);
    assert_memory_equal(T, Tv, sizeof T);
    /* removing them: the model is back to plain sigmoid, no thresholds */
    for (int i = 0; i < 4; i++)
        cx_model_remove_meta(r, CX_MODEL_CALIBRATION_KEYS[i]);
    assert_int_equal(cx_model_thresholds(r, NULL), 0);
    assert_int_equal(cx_model_temperature(r, NULL), 0);
    assert_null(cx_model_meta(r, "thresholds"));
    assert_null(cx_model_meta(r, "temperature"));
    p = cx_model_probability(r, 0, 3.0f);
    q = cx_sigmoid(3.0f);
    assert_memory_equal(&p, &q, sizeof p);
    cx_model_free(r);
    cx_model_free(m);

    /* malformed metadata: load errors naming the file and the key */
    m = small_model(3);
    static const struct {
        const char *key, *value;
        cx_status code;
        const char *needle;
    } bad[] = {
        {"thresholds", "[0.5, 0.5", CX_EFORMAT, "JSON"},
        {"thresholds", "{\"a\": 0.5}", CX_EFORMAT, "JSON array"},
        {"thresholds", "[0.5, 0.5]", CX_ESHAPE, "3 classes"},
        {"thresholds", "[0.5, 0.5, 0.5, 0.5]", CX_ESHAPE, "3 classes"},
        {"thresholds", "[0.5, 1, 0.5]", CX_ENUMERIC, "(0, 1)"},
        {"thresholds", "[0.5, -0.1, 0.5]", CX_ENUMERIC, "(0, 1)"},
        {"thresholds", "[0.5, 1e-50, 0.5]", CX_ENUMERIC, "(0, 1)"},
        {"thresholds", "[0.5, 0.99999999999, 0.5]", CX_ENUMERIC, "(0, 1)"},
        {"thresholds", "[0.5, null, 0.5]", CX_EFORMAT, "not a number"},
        {"temperature", "[1, 0, 1]", CX_ENUMERIC, "positive"},
        {"temperature", "[1, 1e39, 1]", CX_ENUMERIC, "positive"},
        {"temperature", "[1, 1]", CX_ESHAPE, "3 classes"},
        {"temperature", "2", CX_EFORMAT, "JSON array"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *bp = tmp_path("bad-calibration.safetensors");
        write_with_meta(m, bp, bad[i].key, bad[i].value);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i].key);
        expect_error(bp, bad[i].code, quoted, bad[i].needle);
    }
    cx_model_free(m);
}

/* mean/std: one value stands for all channels of a 1-channel model only */
static void test_single_mean_std(void **state)
{
    (void)state;
    cx_config cfg = {.arch = "densenet", .growth_rate = 4, .n_blocks = 2,
                     .block_config = {2, 2}, .num_init_features = 8, .bn_size = 2,
                     .num_classes = 1, .in_channels = 1};
    cx_model *m = NULL, *r = NULL;
    cx_err err = {0};
    assert_int_equal(cx_model_new(&cfg, &m, NULL), CX_OK);
    cx_model_init(m, 2);
    const char *p = tmp_path("one-channel.safetensors");
    cx_st_writer *w;
    /* the tensors with our own mean/std */
    for (int pass = 0; pass < 2; pass++) {
        w = cx_st_writer_new();
        for (int i = 0; i < cx_model_num_tensors(m); i++) {
            cx_param *t = cx_model_tensor(m, i);
            assert_int_equal(cx_st_writer_add_f32(w, t->name, CX_DT_F32, t->ndim, t->shape,
                                                  t->data, &err),
                             CX_OK);
        }
        assert_int_equal(cx_st_writer_add_meta(w, "mean", pass ? "0.5, 0.5" : "0.5", &err),
                         CX_OK);
        assert_int_equal(cx_st_writer_add_meta(w, "std", "0.00048828125", &err), CX_OK);
        assert_int_equal(cx_st_writer_write(w, p, &err), CX_OK);
        cx_st_writer_free(w);
        if (pass) {
            expect_error(p, CX_EFORMAT, "'mean'", "1 or 3");
            continue;
        }
        assert_int_equal(cx_model_load(p, &r, &err), CX_OK);
        float mean[3], sd[3];
        cx_model_normalization(r, mean, sd);
        assert_true(mean[0] == 0.5f && sd[0] == 0.00048828125f);
        cx_model_free(r);
    }
    cx_model_free(m);
    /* a 3-channel model wants three */
    m = small_model(1);
    w = cx_st_writer_new();
    for (int i = 0; i < cx_model_num_tensors(m); i++) {
        cx_param *t = cx_model_tensor(m, i);
        assert_int_equal(
            cx_st_writer_add_f32(w, t->name, CX_DT_F32, t->ndim, t->shape, t->data, &err), CX_OK);
    }
    assert_int_equal(cx_st_writer_add_meta(w, "std", "0.25", &err), CX_OK);
    p = tmp_path("three-channel-one-std.safetensors");
    assert_int_equal(cx_st_writer_write(w, p, &err), CX_OK);
    cx_st_writer_free(w);
    expect_error(p, CX_EFORMAT, "'std'", "3 comma-separated");
    cx_model_free(m);
}

static void test_with_head(void **state)
{
    cx_model *m = small_model(14), *h = NULL;
    cx_err err = {0};
    assert_int_equal(cx_model_with_head(m, 1, 5, &h, &err), CX_OK);
    assert_int_equal(cx_model_num_classes(h), 1);
    assert_string_equal(cx_model_class_name(h, 0), "Pneumonia");
    cx_param *a = cx_model_find(m, "features.denseblock2.denselayer2.conv2.weight"),
             *b = cx_model_find(h, "features.denseblock2.denselayer2.conv2.weight");
    assert_memory_equal(a->data, b->data, a->numel * sizeof(float));
    assert_float_equal(cx_model_classifier_bias(h)[0], 0.0f, 0.0f);
    cx_model_free(h);
    cx_model_free(m);
}

int main(void)
{
    const char *tmp = getenv("CX_TMP");
    snprintf(g_dir, sizeof g_dir, "%s/model_io", tmp ? tmp : "/tmp/cx-tests");
    mkdir(tmp ? tmp : "/tmp/cx-tests", 0777);
    mkdir(g_dir, 0777);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip), cmocka_unit_test(test_canonical_names),
        cmocka_unit_test(test_bad_files), cmocka_unit_test(test_with_head),
        cmocka_unit_test(test_thresholds_temperature), cmocka_unit_test(test_single_mean_std)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
