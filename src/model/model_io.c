/* Loading and saving DenseNet models as safetensors with torchvision's
 * state-dict names. Loading accepts the variants found in real CheXNet
 * checkpoints without a conversion step:
 *   - DataParallel prefixes: "module.", "module.densenet121." (arnoweng);
 *   - pre-2018 torchvision names in dense layers: norm.1 relu.1 conv.1
 *     norm.2 relu.2 conv.2;
 *   - a Sequential(Linear, Sigmoid) head: "classifier.0.weight".
 * num_batches_tracked is ignored on load and written as 0 on save, so saved
 * files load in torchvision with load_state_dict(strict=True). */
#define _GNU_SOURCE
#include "io/json.h"
#include "model/model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int starts_with(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* Replaces every occurrence of `from` by `to` (to no longer than from). */
static void replace_all(char *s, const char *from, const char *to)
{
    size_t lf = strlen(from), lt = strlen(to);
    char *p = s;
    while ((p = strstr(p, from))) {
        memmove(p + lt, p + lf, strlen(p + lf) + 1);
        memcpy(p, to, lt);
        p += lt;
    }
}

int cx_canonical_name(const char *in, char *out, size_t n)
{
    const char *s = in;
    while (starts_with(s, "module."))
        s += strlen("module.");
    static const char *arch_prefix[] = {"densenet121.", "densenet169.", "densenet201.",
                                        "densenet161.", "densenet.", "model."};
    for (size_t i = 0; i < sizeof arch_prefix / sizeof arch_prefix[0]; i++)
        if (starts_with(s, arch_prefix[i]) &&
            (starts_with(s + strlen(arch_prefix[i]), "features.") ||
             starts_with(s + strlen(arch_prefix[i]), "classifier."))) {
            s += strlen(arch_prefix[i]);
            break;
        }
    snprintf(out, n, "%s", s);
    if (ends_with(out, ".num_batches_tracked"))
        return 0;
    if (strstr(out, ".denselayer")) {
        replace_all(out, ".norm.1.", ".norm1.");
        replace_all(out, ".relu.1.", ".relu1.");
        replace_all(out, ".conv.1.", ".conv1.");
        replace_all(out, ".norm.2.", ".norm2.");
        replace_all(out, ".relu.2.", ".relu2.");
        replace_all(out, ".conv.2.", ".conv2.");
    }
    if (starts_with(out, "classifier.0."))
        memmove(out + strlen("classifier."), out + strlen("classifier.0."),
                strlen(out + strlen("classifier.0.")) + 1);
    return 1;
}

typedef struct {
    char name[256];
    const cx_st_tensor *t;
    int used;
} named_tensor;

static named_tensor *find_named(named_tensor *v, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v[i].name, name))
            return &v[i];
    return NULL;
}

/* "a,b,c": three numbers; a 1-channel model also takes one ("a"), which
 * stands for all three. */
static cx_status parse_floats3(const char *path, const char *key, const char *s, float out[3],
                               int one_ok, cx_err *err)
{
    const char *what = one_ok ? "1 or 3 comma-separated numbers" : "3 comma-separated numbers";
    char *end;
    int n = 0;
    for (;;) {
        while (*s == ' ')
            s++;
        out[n] = strtof(s, &end);
        if (end == s)
            return cx_seterr(err, CX_EFORMAT, "%s: metadata '%s' must be %s, got '%s'", path,
                             key, what, s);
        n++;
        s = end;
        while (*s == ' ')
            s++;
        if (*s != ',')
            break;
        if (n == 3)
            return cx_seterr(err, CX_EFORMAT, "%s: metadata '%s' must be %s, got more", path,
                             key, what);
        s++;
    }
    if (*s)
        return cx_seterr(err, CX_EFORMAT, "%s: metadata '%s' must be %s, got '%s' after them",
                         path, key, what, s);
    if (n == 1 && one_ok)
        out[1] = out[2] = out[0];
    else if (n != 3)
        return cx_seterr(err, CX_EFORMAT, "%s: metadata '%s' must be %s, got %d", path, key,
                         what, n);
    return CX_OK;
}

/* ------------------------------------------------ thresholds, temperature */

/* "thresholds": one probability threshold per class in (0, 1) (positive when
 * p >= t); "temperature": one positive number per class (p = sigmoid(logit /
 * T)). Both JSON arrays in the order of the classes. */
cx_status cx_model_parse_calibration(cx_model *m, const char *key, const char *value,
                                     const char *where, cx_err *err)
{
    int is_t = !strcmp(key, "thresholds"), is_temp = !strcmp(key, "temperature");
    if (!is_t && !is_temp)
        return CX_OK;
    const char *w = where ? where : "model";
    const int nc = m->cfg.num_classes;
    const char *want = is_t ? "numbers in (0, 1)" : "positive numbers";
    cx_json *j = NULL;
    cx_err jerr = {0};
    if (cx_json_parse(value, strlen(value), 4, &j, &jerr))
        return cx_seterr(err, CX_EFORMAT,
                         "%s: metadata '%s' = '%.200s' is not a JSON array of %s: %s", w, key,
                         value, want, jerr.msg);
    if (j->type != CX_JSON_ARRAY) {
        cx_json_free(j);
        return cx_seterr(err, CX_EFORMAT,
                         "%s: metadata '%s' = '%.200s' is not a JSON array of %s", w, key,
                         value, want);
    }
    if ((int)cx_json_count(j) != nc) {
        int n = (int)cx_json_count(j);
        cx_json_free(j);
        return cx_seterr(err, CX_ESHAPE,
                         "%s: metadata '%s' has %d values but the model has %d classes (one "
                         "per class, in the order of 'classes')",
                         w, key, n, nc);
    }
    float *v = malloc(sizeof(float) * (size_t)(nc > 0 ? nc : 1));
    if (!v) {
        cx_json_free(j);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    for (int i = 0; i < nc; i++) {
        double d;
        const char *cls = m->class_names && m->class_names[i] ? m->class_names[i] : "";
        if (cx_json_double(cx_json_at(j, i), &d)) {
            free(v);
            cx_json_free(j);
            return cx_seterr(err, CX_EFORMAT,
                             "%s: metadata '%s': value %d (class '%s') is not a number", w, key,
                             i + 1, cls);
        }
        float f = (float)d;
        int ok = isfinite(d) && isfinite(f) && (is_t ? f > 0 && f < 1 : f > 0);
        if (!ok) {
            free(v);
            cx_json_free(j);
            return cx_seterr(err, CX_ENUMERIC,
                             "%s: metadata '%s': value %d (class '%s') = %.12g is not %s", w, key,
                             i + 1, cls, d, is_t ? "in (0, 1)" : "a finite positive number");
        }
        v[i] = f;
    }
    cx_json_free(j);
    float **dst = is_t ? &m->thresholds : &m->temperature;
    free(*dst);
    *dst = v;
    return CX_OK;
}

const char *const CX_MODEL_CALIBRATION_KEYS[4] = {"thresholds", "temperature",
                                                  "threshold_method", "cam_range"};

int cx_model_thresholds(const cx_model *m, float *t)
{
    if (!m->thresholds)
        return 0;
    if (t)
        memcpy(t, m->thresholds, sizeof(float) * (size_t)m->cfg.num_classes);
    return 1;
}

int cx_model_temperature(const cx_model *m, float *T)
{
    for (int i = 0; T && i < m->cfg.num_classes; i++)
        T[i] = m->temperature ? m->temperature[i] : 1.0f;
    return m->temperature != NULL;
}

float cx_model_probability(const cx_model *m, int cls, float logit)
{
    /* without a temperature the logit goes in unchanged: the same bits as
     * cx_sigmoid(logit) */
    if (m->temperature && cls >= 0 && cls < m->cfg.num_classes)
        logit /= m->temperature[cls];
    return cx_sigmoid(logit);
}

static void fmt_float(char *buf, size_t n, float v);

/* values as a JSON array, each the shortest form that reads back exactly */
static cx_status set_float_array(cx_model *m, const char *key, const float *v, cx_err *err)
{
    const int nc = m->cfg.num_classes;
    size_t cap = 3 + (size_t)nc * 34;
    char *s = malloc(cap);
    if (!s)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    size_t k = 0;
    s[k++] = '[';
    for (int i = 0; i < nc; i++) {
        char b[32];
        if (!isfinite(v[i])) {
            free(s);
            return cx_seterr(err, CX_ENUMERIC, "%s of class '%s' is not a finite number", key,
                             m->class_names[i]);
        }
        fmt_float(b, sizeof b, v[i]);
        k += (size_t)snprintf(s + k, cap - k, "%s%s", i ? ", " : "", b);
    }
    s[k++] = ']';
    s[k] = 0;
    cx_status st = cx_model_set_meta(m, key, s, err); /* checks the values */
    free(s);
    return st;
}

cx_status cx_model_set_thresholds(cx_model *m, const float *t, cx_err *err)
{
    return set_float_array(m, "thresholds", t, err);
}

cx_status cx_model_set_temperature(cx_model *m, const float *T, cx_err *err)
{
    return set_float_array(m, "temperature", T, err);
}

static cx_status apply_metadata(cx_model *m, const cx_st_file *f, const char *path, cx_err *err)
{
    cx_status st;
    const char *classes = cx_st_meta(f, "classes");
    if (classes) {
        cx_json *j = NULL;
        cx_err jerr = {0};
        if (cx_json_parse(classes, strlen(classes), 4, &j, &jerr))
            return cx_seterr(err, CX_EFORMAT, "%s: metadata 'classes' is not a JSON array: %s",
                             path, jerr.msg);
        int n = (int)cx_json_count(j);
        if (j->type != CX_JSON_ARRAY || n != m->cfg.num_classes) {
            cx_json_free(j);
            return cx_seterr(err, CX_ESHAPE,
                             "%s: metadata 'classes' lists %d names but classifier.weight has "
                             "%d outputs",
                             path, n, m->cfg.num_classes);
        }
        const char **names = calloc((size_t)n, sizeof *names);
        if (!names) {
            cx_json_free(j);
            return cx_seterr(err, CX_ENOMEM, "out of memory");
        }
        for (int i = 0; i < n; i++) {
            names[i] = cx_json_string(cx_json_at(j, i));
            if (!names[i] || !names[i][0]) {
                free(names);
                cx_json_free(j);
                return cx_seterr(err, CX_EFORMAT,
                                 "%s: metadata 'classes' entry %d is not a non-empty string",
                                 path, i);
            }
        }
        st = cx_model_set_class_names(m, n, names, err);
        free(names);
        cx_json_free(j);
        if (st)
            return st;
    }
    /* after the class names, which the messages name */
    for (int i = 0; i < f->n_meta; i++)
        if ((st = cx_model_parse_calibration(m, f->meta[i].key, f->meta[i].value, path, err)) ||
            (st = cx_model_set_meta(m, f->meta[i].key, f->meta[i].value, err)))
            return st;
    const char *size = cx_st_meta(f, "input_size");
    if (size) {
        char *end;
        long v = strtol(size, &end, 10);
        if (end == size || *end || v < 32 || v > 4096)
            return cx_seterr(err, CX_EFORMAT, "%s: metadata 'input_size' = '%s' is not 32..4096",
                             path, size);
        m->input_size = (int)v;
    }
    const char *mean = cx_st_meta(f, "mean"), *sd = cx_st_meta(f, "std");
    const int one = m->cfg.in_channels == 1;
    if (mean && (st = parse_floats3(path, "mean", mean, m->mean, one, err)))
        return st;
    if (sd && (st = parse_floats3(path, "std", sd, m->std, one, err)))
        return st;
    /* Normalisation maps a pixel v in [0, 1] to (v - mean) / std: every
     * such value must be a finite float, so mean is finite and std finite
     * and positive (and not so small that the quotient overflows). */
    for (int i = 0; i < 3; i++) {
        float mu = m->mean[i], sg = m->std[i];
        if (!isfinite(mu))
            return cx_seterr(err, CX_ENUMERIC,
                             "%s: metadata 'mean' = '%s': value %d is not a finite number",
                             path, mean ? mean : "", i + 1);
        if (!isfinite(sg) || !(sg > 0))
            return cx_seterr(err, CX_ENUMERIC,
                             "%s: metadata 'std' = '%s': value %d is not a finite positive "
                             "number",
                             path, sd ? sd : "", i + 1);
        if (!isfinite((0.0f - mu) / sg) || !isfinite((1.0f - mu) / sg))
            return cx_seterr(err, CX_ENUMERIC,
                             "%s: metadata 'mean'/'std': channel %d maps pixels to infinity "
                             "(mean %g, std %g)",
                             path, i + 1, (double)mu, (double)sg);
    }
    return CX_OK;
}

static const cx_st_tensor *need(named_tensor *v, int n, const char *name)
{
    named_tensor *t = find_named(v, n, name);
    return t ? t->t : NULL;
}

/* Infers the DenseNet configuration from the tensor shapes. */
static cx_status infer_config(named_tensor *v, int n, const cx_st_file *f, const char *path,
                              cx_config *cfg, cx_err *err)
{
    memset(cfg, 0, sizeof *cfg);
    const cx_st_tensor *c0 = need(v, n, "features.conv0.weight");
    const cx_st_tensor *fc = need(v, n, "classifier.weight");
    if (!c0)
        return cx_seterr(err, CX_EMISSING,
                         "%s: no tensor 'features.conv0.weight': not a torchvision DenseNet", path);
    if (!fc)
        return cx_seterr(err, CX_EMISSING, "%s: no tensor 'classifier.weight'", path);
    if (c0->ndim != 4 || c0->shape[2] != 7 || c0->shape[3] != 7)
        return cx_seterr(err, CX_ESHAPE, "%s: tensor 'features.conv0.weight' must be [C,in,7,7]",
                         path);
    if (fc->ndim != 2)
        return cx_seterr(err, CX_ESHAPE, "%s: tensor 'classifier.weight' must be 2-D", path);
    cfg->num_init_features = (int)c0->shape[0];
    cfg->in_channels = (int)c0->shape[1];
    cfg->num_classes = (int)fc->shape[0];
    char name[96];
    for (int b = 0; b < CX_MAX_BLOCKS; b++) {
        int l = 0;
        for (;;) {
            snprintf(name, sizeof name, "features.denseblock%d.denselayer%d.conv1.weight", b + 1,
                     l + 1);
            if (!find_named(v, n, name))
                break;
            l++;
        }
        if (!l)
            break;
        cfg->block_config[b] = l;
        cfg->n_blocks = b + 1;
    }
    if (!cfg->n_blocks)
        return cx_seterr(err, CX_EMISSING, "%s: no dense blocks found", path);
    const cx_st_tensor *c1 = need(v, n, "features.denseblock1.denselayer1.conv1.weight");
    const cx_st_tensor *c2 = need(v, n, "features.denseblock1.denselayer1.conv2.weight");
    if (!c2)
        return cx_seterr(err, CX_EMISSING,
                         "%s: missing tensor 'features.denseblock1.denselayer1.conv2.weight'",
                         path);
    if (c1->ndim != 4 || c2->ndim != 4 || c2->shape[0] < 1 || c1->shape[0] % c2->shape[0])
        return cx_seterr(err, CX_ESHAPE,
                         "%s: dense layer 1 convolutions have inconsistent shapes", path);
    cfg->growth_rate = (int)c2->shape[0];
    cfg->bn_size = (int)(c1->shape[0] / c2->shape[0]);
    const char *arch = cx_st_meta(f, "arch");
    cx_config preset;
    snprintf(cfg->arch, sizeof cfg->arch, "densenet");
    static const char *names[] = {"densenet121", "densenet169", "densenet201"};
    for (int i = 0; i < 3; i++) {
        if (cx_config_preset(names[i], cfg->num_classes, cfg->in_channels, &preset, NULL))
            continue;
        preset.num_init_features = cfg->num_init_features;
        if (preset.growth_rate == cfg->growth_rate && preset.bn_size == cfg->bn_size &&
            preset.n_blocks == cfg->n_blocks && preset.num_init_features == 64 &&
            !memcmp(preset.block_config, cfg->block_config, sizeof cfg->block_config))
            snprintf(cfg->arch, sizeof cfg->arch, "%s", names[i]);
    }
    if (arch && !strcmp(cfg->arch, "densenet") && strlen(arch) < sizeof cfg->arch)
        snprintf(cfg->arch, sizeof cfg->arch, "%s", arch);
    return CX_OK;
}

cx_status cx_model_load(const char *path, cx_model **out, cx_err *err)
{
    *out = NULL;
    cx_st_file *f = NULL;
    cx_status st = cx_st_open(path, &f, err);
    if (st)
        return st;
    named_tensor *v = calloc((size_t)f->n_tensors + 1, sizeof *v);
    if (!v) {
        cx_st_close(f);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    int n = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        char canon[256];
        if (strlen(f->tensors[i].name) >= sizeof v[0].name) {
            st = cx_seterr(err, CX_EFORMAT, "%s: unexpected tensor '%.80s...' (name too long)",
                           path, f->tensors[i].name);
            goto done;
        }
        if (!cx_canonical_name(f->tensors[i].name, canon, sizeof canon))
            continue;
        if (!strncmp(canon, "optimizer.", 10)) /* training checkpoint state */
            continue;
        named_tensor *dup = find_named(v, n, canon);
        if (dup) {
            st = cx_seterr(err, CX_EFORMAT, "%s: tensors '%s' and '%s' both map to '%s'", path,
                           dup->t->name, f->tensors[i].name, canon);
            goto done;
        }
        snprintf(v[n].name, sizeof v[n].name, "%s", canon);
        v[n].t = &f->tensors[i];
        n++;
    }
    cx_config cfg;
    if ((st = infer_config(v, n, f, path, &cfg, err)))
        goto done;
    cx_model *m = NULL;
    if ((st = cx_model_new(&cfg, &m, err)))
        goto done;
    for (int i = 0; i < m->n_tensors; i++) {
        cx_param *p = &m->tensors[i];
        named_tensor *nt = find_named(v, n, p->name);
        if (!nt) {
            st = cx_seterr(err, CX_EMISSING, "%s: missing tensor '%s'", path, p->name);
            cx_model_free(m);
            goto done;
        }
        const cx_st_tensor *t = nt->t;
        int same = t->ndim == p->ndim;
        for (int d = 0; same && d < p->ndim; d++)
            same = t->shape[d] == p->shape[d];
        if (!same) {
            char want[64] = "", got[64] = "";
            for (int d = 0; d < p->ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%lld", d ? "," : "",
                         (long long)p->shape[d]);
            for (int d = 0; d < t->ndim && d < 8; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "," : "",
                         (long long)t->shape[d]);
            st = cx_seterr(err, CX_ESHAPE, "%s: tensor '%s' has shape [%s], expected [%s]", path,
                           t->name, got, want);
            cx_model_free(m);
            goto done;
        }
        if (t->dtype != CX_DT_F32 && t->dtype != CX_DT_F16 && t->dtype != CX_DT_BF16 &&
            t->dtype != CX_DT_F64) {
            st = cx_seterr(err, CX_EFORMAT, "%s: tensor '%s' has dtype %s, expected a float type",
                           path, t->name, cx_dtype_name(t->dtype));
            cx_model_free(m);
            goto done;
        }
        if ((st = cx_st_read_f32(f, t, p->data, p->numel, err))) {
            cx_model_free(m);
            goto done;
        }
        nt->used = 1;
        if (i == 0)
            m->file_dtype = t->dtype;
    }
    for (int i = 0; i < n; i++)
        if (!v[i].used) {
            st = cx_seterr(err, CX_EFORMAT, "%s: unexpected tensor '%s' for a %s", path,
                           v[i].t->name, cfg.arch);
            cx_model_free(m);
            goto done;
        }
    if ((st = apply_metadata(m, f, path, err))) {
        cx_model_free(m);
        goto done;
    }
    *out = m;
done:
    free(v);
    cx_st_close(f);
    return st;
}

/* Shortest %g form of a float that reads back exactly. */
static void fmt_float(char *buf, size_t n, float v)
{
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtof(buf, NULL) == v)
            return;
    }
}

static void fmt_float3(char *buf, size_t n, const float v[3])
{
    char a[32], b[32], c[32];
    fmt_float(a, sizeof a, v[0]);
    fmt_float(b, sizeof b, v[1]);
    fmt_float(c, sizeof c, v[2]);
    snprintf(buf, n, "%s,%s,%s", a, b, c);
}

static char *classes_json(const cx_model *m)
{
    size_t cap = 3;
    for (int i = 0; i < m->cfg.num_classes; i++)
        cap += cx_json_escape_buf(NULL, 0, m->class_names[i]) + 2;
    char *s = malloc(cap + 1);
    if (!s)
        return NULL;
    size_t k = 0;
    s[k++] = '[';
    for (int i = 0; i < m->cfg.num_classes; i++) {
        if (i) {
            s[k++] = ',';
            s[k++] = ' ';
        }
        k += cx_json_escape_buf(s + k, cap + 1 - k, m->class_names[i]);
    }
    s[k++] = ']';
    s[k] = 0;
    return s;
}

cx_status cx_model_save(const cx_model *m, const char *path, cx_dtype dtype, cx_err *err)
{
    cx_st_writer *w = cx_st_writer_new();
    if (!w)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    cx_status st = cx_model_to_writer(m, w, dtype, err);
    if (!st)
        st = cx_st_writer_write(w, path, err);
    cx_st_writer_free(w);
    return st;
}

cx_status cx_model_to_writer(const cx_model *m, cx_st_writer *w, cx_dtype dtype, cx_err *err)
{
    if (dtype != CX_DT_F32 && dtype != CX_DT_F16 && dtype != CX_DT_BF16)
        return cx_seterr(err, CX_EARG, "cannot save a model as %s (use F32, F16 or BF16)",
                         cx_dtype_name(dtype));
    static const int64_t zero = 0;
    cx_status st = CX_OK;
    for (int i = 0; i < m->n_tensors && !st; i++) {
        const cx_param *p = &m->tensors[i];
        /* running statistics keep fp32 precision only if asked for fp32;
         * torch loads any float dtype into its fp32 buffers. */
        st = cx_st_writer_add_f32(w, p->name, dtype, p->ndim, p->shape, p->data, err);
        if (!st && p->kind == CX_PARAM_RUNNING_VAR) {
            char name[128];
            snprintf(name, sizeof name, "%.*s.num_batches_tracked",
                     (int)(strlen(p->name) - strlen(".running_var")), p->name);
            st = cx_st_writer_add_i64(w, name, 0, NULL, &zero, err);
        }
    }
    char *classes = classes_json(m);
    char buf[128];
    if (!st && !classes)
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
    static const char *own[] = {"arch", "classes", "input_size", "mean", "std", "format"};
    for (int i = 0; i < m->n_meta && !st; i++) {
        int skip = 0;
        for (size_t j = 0; j < sizeof own / sizeof own[0]; j++)
            skip |= !strcmp(m->meta[i].key, own[j]);
        if (!skip)
            st = cx_st_writer_add_meta(w, m->meta[i].key, m->meta[i].value, err);
    }
    if (!st)
        st = cx_st_writer_add_meta(w, "format", "pt", err);
    if (!st)
        st = cx_st_writer_add_meta(w, "arch", m->cfg.arch, err);
    if (!st)
        st = cx_st_writer_add_meta(w, "classes", classes, err);
    snprintf(buf, sizeof buf, "%d", m->input_size);
    if (!st)
        st = cx_st_writer_add_meta(w, "input_size", buf, err);
    fmt_float3(buf, sizeof buf, m->mean);
    if (!st)
        st = cx_st_writer_add_meta(w, "mean", buf, err);
    fmt_float3(buf, sizeof buf, m->std);
    if (!st)
        st = cx_st_writer_add_meta(w, "std", buf, err);
    free(classes);
    return st;
}
