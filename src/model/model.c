/* DenseNet-BC model: configuration, parameter table, initialisation,
 * metadata. Tensor names and order are torchvision's state-dict. */
#define _GNU_SOURCE
#include "model/model_internal.h"
#include "util/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const CX_CHESTXRAY14_CLASSES[14] = {
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass",
    "Nodule", "Pneumonia", "Pneumothorax", "Consolidation", "Edema",
    "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"};

cx_status cx_config_preset(const char *arch, int num_classes, int in_channels,
                           cx_config *cfg, cx_err *err)
{
    static const struct {
        const char *name;
        int blocks[4];
    } presets[] = {
        {"densenet121", {6, 12, 24, 16}},
        {"densenet169", {6, 12, 32, 32}},
        {"densenet201", {6, 12, 48, 32}},
    };
    if (num_classes < 1 || num_classes > 100000)
        return cx_seterr(err, CX_EARG, "number of classes %d out of range", num_classes);
    if (in_channels < 1 || in_channels > 4)
        return cx_seterr(err, CX_EARG, "input channels %d out of range (1..4)", in_channels);
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (arch && !strcmp(arch, presets[i].name)) {
            memset(cfg, 0, sizeof *cfg);
            snprintf(cfg->arch, sizeof cfg->arch, "%s", presets[i].name);
            cfg->growth_rate = 32;
            cfg->n_blocks = 4;
            memcpy(cfg->block_config, presets[i].blocks, sizeof presets[i].blocks);
            cfg->num_init_features = 64;
            cfg->bn_size = 4;
            cfg->num_classes = num_classes;
            cfg->in_channels = in_channels;
            return CX_OK;
        }
    }
    return cx_seterr(err, CX_EARG,
                     "unknown architecture '%s' (known: densenet121, densenet169, densenet201)",
                     arch ? arch : "(null)");
}

int cx_config_num_features(const cx_config *cfg)
{
    int c = cfg->num_init_features;
    for (int b = 0; b < cfg->n_blocks; b++) {
        c += cfg->block_config[b] * cfg->growth_rate;
        if (b != cfg->n_blocks - 1)
            c /= 2;
    }
    return c;
}

static cx_status check_config(const cx_config *c, cx_err *err)
{
    if (c->growth_rate < 1 || c->growth_rate > 4096 || c->n_blocks < 1 ||
        c->n_blocks > CX_MAX_BLOCKS || c->num_init_features < 1 ||
        c->num_init_features > 65536 || c->bn_size < 1 || c->bn_size > 64 ||
        c->num_classes < 1 || c->num_classes > 100000 || c->in_channels < 1 ||
        c->in_channels > 4)
        return cx_seterr(err, CX_EARG, "invalid DenseNet configuration");
    for (int b = 0; b < c->n_blocks; b++)
        if (c->block_config[b] < 1 || c->block_config[b] > 1024)
            return cx_seterr(err, CX_EARG, "invalid number of layers %d in block %d",
                             c->block_config[b], b + 1);
    return CX_OK;
}

/* ---- parameter table construction -------------------------------------- */

/* The storage holds the trainable tensors first, then the running
 * statistics (each group in state-dict order), so that gradients, Adam's
 * moments and everything an optimiser or a gradient reduction touches is
 * one contiguous range [0, n_trainable) (model_internal.h). */
typedef struct {
    cx_model *m;
    int cap;
    int64_t off;      /* running offset of trainable tensors, in floats */
    int64_t off_buf;  /* running offset of the other tensors, after them */
    int64_t n_train;  /* trainable floats (known when building) */
    int build;        /* 0: count only, 1: fill */
} table_builder;

static int add_tensor(table_builder *tb, const char *name, int ndim, const int64_t *shape,
                      cx_param_kind kind)
{
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++)
        numel *= shape[d];
    int i = tb->m->n_tensors++;
    int trainable = kind == CX_PARAM_WEIGHT || kind == CX_PARAM_BIAS;
    if (tb->build) {
        cx_param *p = &tb->m->tensors[i];
        snprintf(p->name, sizeof p->name, "%s", name);
        p->data = tb->m->storage + (trainable ? tb->off : tb->n_train + tb->off_buf);
        p->ndim = ndim;
        for (int d = 0; d < 4; d++)
            p->shape[d] = d < ndim ? shape[d] : 1;
        p->numel = numel;
        p->kind = kind;
        p->trainable = trainable;
        if (p->trainable)
            tb->m->n_trainable += numel;
    }
    if (trainable)
        tb->off += numel;
    else
        tb->off_buf += numel;
    return i;
}

static void add_bn(table_builder *tb, const char *prefix, int C, cx_bn *bn)
{
    char name[96];
    int64_t s[1] = {C};
    static const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    static const cx_param_kind kinds[4] = {CX_PARAM_WEIGHT, CX_PARAM_BIAS,
                                           CX_PARAM_RUNNING_MEAN, CX_PARAM_RUNNING_VAR};
    int first = -1;
    for (int j = 0; j < 4; j++) {
        snprintf(name, sizeof name, "%s.%s", prefix, suffix[j]);
        int i = add_tensor(tb, name, 1, s, kinds[j]);
        if (j == 0)
            first = i;
    }
    if (tb->build) {
        cx_param *t = tb->m->tensors;
        bn->weight = t[first].data;
        bn->bias = t[first + 1].data;
        bn->mean = t[first + 2].data;
        bn->var = t[first + 3].data;
        bn->C = C;
        bn->idx = first;
    }
}

static void add_conv(table_builder *tb, const char *prefix, int cin, int cout, int k,
                     int stride, int pad, cx_conv *cv)
{
    char name[96];
    int64_t s[4] = {cout, cin, k, k};
    snprintf(name, sizeof name, "%s.weight", prefix);
    int i = add_tensor(tb, name, 4, s, CX_PARAM_WEIGHT);
    if (tb->build) {
        cv->w = tb->m->tensors[i].data;
        cv->Cin = cin;
        cv->Cout = cout;
        cv->k = k;
        cv->stride = stride;
        cv->pad = pad;
        cv->idx = i;
    }
}

static void build_table(table_builder *tb)
{
    cx_model *m = tb->m;
    const cx_config *c = &m->cfg;
    char p[96];
    m->n_tensors = 0;
    m->n_trainable = 0;
    tb->off = tb->off_buf = 0;
    add_conv(tb, "features.conv0", c->in_channels, c->num_init_features, 7, 2, 3, &m->conv0);
    add_bn(tb, "features.norm0", c->num_init_features, &m->norm0);
    int ch = c->num_init_features;
    int inner = c->bn_size * c->growth_rate;
    for (int b = 0; b < c->n_blocks; b++) {
        cx_dense_block *blk = &m->blocks[b];
        if (tb->build) {
            blk->n_layers = c->block_config[b];
            blk->cin = ch;
            blk->cout = ch + c->block_config[b] * c->growth_rate;
        }
        for (int l = 0; l < c->block_config[b]; l++) {
            int cin = ch + l * c->growth_rate;
            cx_dense_layer *L = tb->build ? &blk->layers[l] : NULL;
            cx_dense_layer dummy;
            if (!L)
                L = &dummy;
            L->cin = cin;
            snprintf(p, sizeof p, "features.denseblock%d.denselayer%d.norm1", b + 1, l + 1);
            add_bn(tb, p, cin, &L->norm1);
            snprintf(p, sizeof p, "features.denseblock%d.denselayer%d.conv1", b + 1, l + 1);
            add_conv(tb, p, cin, inner, 1, 1, 0, &L->conv1);
            snprintf(p, sizeof p, "features.denseblock%d.denselayer%d.norm2", b + 1, l + 1);
            add_bn(tb, p, inner, &L->norm2);
            snprintf(p, sizeof p, "features.denseblock%d.denselayer%d.conv2", b + 1, l + 1);
            add_conv(tb, p, inner, c->growth_rate, 3, 1, 1, &L->conv2);
        }
        ch += c->block_config[b] * c->growth_rate;
        if (b != c->n_blocks - 1) {
            snprintf(p, sizeof p, "features.transition%d.norm", b + 1);
            add_bn(tb, p, ch, &m->trans[b].norm);
            snprintf(p, sizeof p, "features.transition%d.conv", b + 1);
            add_conv(tb, p, ch, ch / 2, 1, 1, 0, &m->trans[b].conv);
            ch /= 2;
        }
    }
    add_bn(tb, "features.norm5", ch, &m->norm5);
    int64_t ws[2] = {c->num_classes, ch}, bs[1] = {c->num_classes};
    int iw = add_tensor(tb, "classifier.weight", 2, ws, CX_PARAM_WEIGHT);
    int ib = add_tensor(tb, "classifier.bias", 1, bs, CX_PARAM_BIAS);
    if (tb->build) {
        m->fc_w = m->tensors[iw].data;
        m->fc_b = m->tensors[ib].data;
        m->fc_idx = iw;
        m->num_features = ch;
    }
}

void cx_input_spec_default(cx_input_spec *s)
{
    /* ImageNet's channel statistics, which torchvision's DenseNet-121 (and
     * so CheXNet) was trained with */
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    s->size = 224;
    s->channels = 3;
    memcpy(s->mean, mean, sizeof mean);
    memcpy(s->std, sd, sizeof sd);
}

static void set_default_meta(cx_model *m)
{
    cx_input_spec in;
    cx_input_spec_default(&in);
    m->input_size = in.size;
    memcpy(m->mean, in.mean, sizeof m->mean);
    memcpy(m->std, in.std, sizeof m->std);
    m->file_dtype = CX_DT_F32;
}

static char **default_class_names(int n)
{
    char **names = calloc((size_t)n, sizeof *names);
    if (!names)
        return NULL;
    for (int i = 0; i < n; i++) {
        char buf[32];
        const char *s = buf;
        if (n == 14)
            s = CX_CHESTXRAY14_CLASSES[i];
        else if (n == 1)
            s = "Pneumonia";
        else
            snprintf(buf, sizeof buf, "class_%d", i);
        names[i] = strdup(s);
        if (!names[i]) {
            for (int j = 0; j < i; j++)
                free(names[j]);
            free(names);
            return NULL;
        }
    }
    return names;
}

cx_status cx_model_new(const cx_config *cfg, cx_model **out, cx_err *err)
{
    *out = NULL;
    cx_status st = check_config(cfg, err);
    if (st)
        return st;
    cx_model *m = calloc(1, sizeof *m);
    if (!m)
        return cx_seterr(err, CX_ENOMEM, "out of memory allocating the model");
    m->cfg = *cfg;
    if (!m->cfg.arch[0])
        snprintf(m->cfg.arch, sizeof m->cfg.arch, "densenet");
    /* count, then allocate and fill */
    table_builder tb = {m, 0, 0, 0, 0, 0};
    build_table(&tb);
    int n_tensors = m->n_tensors;
    int64_t n_floats = tb.off + tb.off_buf;
    tb.n_train = tb.off;
    m->tensors = calloc((size_t)n_tensors, sizeof *m->tensors);
    m->storage = calloc((size_t)n_floats, sizeof(float));
    for (int b = 0; b < cfg->n_blocks; b++)
        m->blocks[b].layers = calloc((size_t)cfg->block_config[b], sizeof(cx_dense_layer));
    int ok = m->tensors && m->storage;
    for (int b = 0; b < cfg->n_blocks; b++)
        ok = ok && m->blocks[b].layers;
    m->class_names = default_class_names(cfg->num_classes);
    if (!ok || !m->class_names) {
        cx_model_free(m);
        return cx_seterr(err, CX_ENOMEM, "out of memory allocating %lld parameters",
                         (long long)n_floats);
    }
    m->storage_n = n_floats;
    tb.build = 1;
    build_table(&tb);
    /* neutral BatchNorm: weight 1, running_var 1 */
    for (int i = 0; i < m->n_tensors; i++) {
        cx_param *p = &m->tensors[i];
        int is_bn_weight = p->ndim == 1 && p->kind == CX_PARAM_WEIGHT;
        if (is_bn_weight || p->kind == CX_PARAM_RUNNING_VAR)
            for (int64_t j = 0; j < p->numel; j++)
                p->data[j] = 1.0f;
    }
    set_default_meta(m);
    *out = m;
    return CX_OK;
}

void cx_model_free(cx_model *m)
{
    if (!m)
        return;
    free(m->tensors);
    free(m->storage);
    for (int b = 0; b < CX_MAX_BLOCKS; b++)
        free(m->blocks[b].layers);
    if (m->class_names)
        for (int i = 0; i < m->cfg.num_classes; i++)
            free(m->class_names[i]);
    free(m->class_names);
    for (int i = 0; i < m->n_meta; i++) {
        free(m->meta[i].key);
        free(m->meta[i].value);
    }
    free(m->meta);
    free(m->thresholds);
    free(m->temperature);
    free(m);
}

void cx_model_init(cx_model *m, uint64_t seed)
{
    cx_rng rng;
    cx_rng_seed(&rng, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        cx_param *p = &m->tensors[i];
        if (p->ndim == 4) {
            /* kaiming_normal_(mode='fan_in', nonlinearity='relu') */
            double fan_in = (double)(p->shape[1] * p->shape[2] * p->shape[3]);
            double sd = sqrt(2.0 / fan_in);
            for (int64_t j = 0; j < p->numel; j++)
                p->data[j] = (float)(cx_rng_normal(&rng) * sd);
        } else if (p->ndim == 2) {
            /* nn.Linear default: kaiming_uniform_(a=sqrt(5)) -> U(-1/sqrt(fan_in), ..) */
            double bound = 1.0 / sqrt((double)p->shape[1]);
            for (int64_t j = 0; j < p->numel; j++)
                p->data[j] = (float)((2.0 * cx_rng_uniform(&rng) - 1.0) * bound);
        } else {
            float v = 0.0f;
            if ((p->kind == CX_PARAM_WEIGHT && i != m->fc_idx + 1) ||
                p->kind == CX_PARAM_RUNNING_VAR)
                v = 1.0f;
            if (i == m->fc_idx + 1) /* classifier.bias: torchvision sets 0 */
                v = 0.0f;
            for (int64_t j = 0; j < p->numel; j++)
                p->data[j] = v;
        }
    }
}

const cx_config *cx_model_config(const cx_model *m) { return &m->cfg; }
int64_t cx_model_num_params(const cx_model *m) { return m->n_trainable; }
int cx_model_num_tensors(const cx_model *m) { return m->n_tensors; }
cx_dtype cx_model_file_dtype(const cx_model *m) { return m->file_dtype; }
int cx_model_num_classes(const cx_model *m) { return m->cfg.num_classes; }
int cx_model_input_size(const cx_model *m) { return m->input_size; }
const float *cx_model_classifier_weight(const cx_model *m) { return m->fc_w; }
const float *cx_model_classifier_bias(const cx_model *m) { return m->fc_b; }

cx_param *cx_model_tensor(cx_model *m, int i)
{
    if (i < 0 || i >= m->n_tensors)
        return NULL;
    return &m->tensors[i];
}

cx_param *cx_model_find(cx_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name))
            return &m->tensors[i];
    return NULL;
}

const char *cx_model_class_name(const cx_model *m, int i)
{
    if (i < 0 || i >= m->cfg.num_classes)
        return NULL;
    return m->class_names[i];
}

cx_status cx_model_set_class_names(cx_model *m, int n, const char *const *names, cx_err *err)
{
    if (n != m->cfg.num_classes)
        return cx_seterr(err, CX_ESHAPE, "%d class names given for a model with %d outputs", n,
                         m->cfg.num_classes);
    char **nn = calloc((size_t)n, sizeof *nn);
    if (!nn)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        if (!names[i] || !names[i][0]) {
            for (int j = 0; j < i; j++)
                free(nn[j]);
            free(nn);
            return cx_seterr(err, CX_EARG, "class name %d is empty", i);
        }
        nn[i] = strdup(names[i]);
    }
    for (int i = 0; i < n; i++)
        free(m->class_names[i]);
    free(m->class_names);
    m->class_names = nn;
    return CX_OK;
}

void cx_model_normalization(const cx_model *m, float mean[3], float std[3])
{
    memcpy(mean, m->mean, sizeof m->mean);
    memcpy(std, m->std, sizeof m->std);
}

void cx_model_input_spec(const cx_model *m, cx_input_spec *s)
{
    s->size = m->input_size;
    s->channels = m->cfg.in_channels == 1 ? 1 : 3;
    cx_model_normalization(m, s->mean, s->std);
}

const char *cx_model_meta(const cx_model *m, const char *key)
{
    for (int i = 0; i < m->n_meta; i++)
        if (!strcmp(m->meta[i].key, key))
            return m->meta[i].value;
    return NULL;
}

int cx_model_num_meta(const cx_model *m) { return m->n_meta; }

const cx_kv *cx_model_meta_at(const cx_model *m, int i)
{
    if (i < 0 || i >= m->n_meta)
        return NULL;
    return &m->meta[i];
}

cx_status cx_model_set_meta(cx_model *m, const char *key, const char *value, cx_err *err)
{
    if (!key || !*key || !value)
        return cx_seterr(err, CX_EARG, "metadata key and value must be non-empty");
    cx_status st = cx_model_parse_calibration(m, key, value, NULL, err);
    if (st)
        return st;
    for (int i = 0; i < m->n_meta; i++) {
        if (!strcmp(m->meta[i].key, key)) {
            char *v = strdup(value);
            if (!v)
                return cx_seterr(err, CX_ENOMEM, "out of memory");
            free(m->meta[i].value);
            m->meta[i].value = v;
            return CX_OK;
        }
    }
    cx_kv *nm = realloc(m->meta, (size_t)(m->n_meta + 1) * sizeof *nm);
    if (!nm)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    m->meta = nm;
    nm[m->n_meta].key = strdup(key);
    nm[m->n_meta].value = strdup(value);
    if (!nm[m->n_meta].key || !nm[m->n_meta].value) {
        free(nm[m->n_meta].key);
        free(nm[m->n_meta].value);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    m->n_meta++;
    return CX_OK;
}

void cx_model_remove_meta(cx_model *m, const char *key)
{
    for (int i = 0; i < m->n_meta; i++)
        if (!strcmp(m->meta[i].key, key)) {
            free(m->meta[i].key);
            free(m->meta[i].value);
            memmove(&m->meta[i], &m->meta[i + 1], sizeof *m->meta * (size_t)(m->n_meta - i - 1));
            m->n_meta--;
            break;
        }
    if (!strcmp(key, "thresholds")) {
        free(m->thresholds);
        m->thresholds = NULL;
    } else if (!strcmp(key, "temperature")) {
        free(m->temperature);
        m->temperature = NULL;
    }
}

cx_status cx_model_with_head(const cx_model *src, int num_classes, uint64_t seed,
                             cx_model **out, cx_err *err)
{
    *out = NULL;
    cx_config cfg = src->cfg;
    cfg.num_classes = num_classes;
    cx_model *m = NULL;
    cx_status st = cx_model_new(&cfg, &m, err);
    if (st)
        return st;
    cx_model_init(m, seed); /* classifier as torchvision; the rest is copied */
    for (int i = 0; i < m->n_tensors; i++) {
        cx_param *p = &m->tensors[i];
        if (!strncmp(p->name, "classifier.", 11))
            continue;
        memcpy(p->data, src->tensors[i].data, sizeof(float) * (size_t)p->numel);
    }
    m->input_size = src->input_size;
    memcpy(m->mean, src->mean, sizeof m->mean);
    memcpy(m->std, src->std, sizeof m->std);
    *out = m;
    return CX_OK;
}
