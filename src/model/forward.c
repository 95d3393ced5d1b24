/* Inference: memory planning and the forward pass of a DenseNet.
 *
 * All activations live in one arena planned by cx_ctx_new for (model,
 * batch, H, W); cx_forward allocates nothing. Activation layout is CNHW
 * (see kernels/backend.h). Each dense block owns one buffer
 * [C_block_out][N][h][w]: the block's input is written to its first channels
 * (by max-pool or by the transition's average pool) and layer l writes its k
 * new channels at channel offset cin_l, so concatenation never copies. */
#include "kernels/backend.h"
#include "model/model_internal.h"
#include "util/mem.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cx_ctx {
    const cx_model *m;
    const cx_ops *ops;
    int batch, H, W;
    int n; /* images in the last forward */

    /* spatial sizes */
    int H0, W0;                    /* after conv0 */
    int Hb[CX_MAX_BLOCKS], Wb[CX_MAX_BLOCKS]; /* of each dense block */

    float *arena;
    size_t arena_n;
    /* views into the arena (sizes for the planned batch) */
    float *input;                   /* CNHW [Cin][N][H][W] */
    float *stem;                    /* CNHW [C0][N][H0][W0] */
    float *block[CX_MAX_BLOCKS];    /* CNHW [Cout_b][N][Hb][Wb] */
    float *act;                     /* BN-ReLU of the concatenated input */
    float *mid;                     /* bottleneck / transition conv output */
    float *scratch;                 /* im2col */
    size_t scratch_n;
    float *features;                /* CNHW [F][N][h][w]: norm5 + ReLU */
    float *pooled;                  /* [N][F] */
    float *scale, *shift;           /* per-BN-channel folded affine, all BNs */

    /* bf16 (cx_ctx_set_precision): a second arena, absent for fp32 */
    cx_backend_id backend;
    cx_precision prec;
    void *arena16;
    size_t arena16_bytes;
    uint16_t *w16;      /* packed weights of the block and transition convs, forward order */
    uint16_t *act16;    /* packed BN-ReLU of a 1x1 conv's input (layout: kernels/backend.h) */
    uint16_t *mid16;    /* BN-ReLU of the bottleneck in the 3x3 conv's grid layout */
    float *scratch16;
    size_t scratch16_n;
};

const char *cx_backend_name(cx_backend_id id)
{
    switch (id) {
    case CX_BACKEND_REF: return "ref";
    case CX_BACKEND_CPU: return "cpu";
    }
    return "unknown";
}

static const cx_ops *backend_ops(cx_backend_id id)
{
    switch (id) {
    case CX_BACKEND_REF: return cx_ops_ref();
    case CX_BACKEND_CPU: return cx_ops_cpu();
    }
    return NULL;
}

float cx_sigmoid(float x)
{
    if (x >= 0) {
        float z = expf(-x);
        return 1.0f / (1.0f + z);
    }
    float z = expf(x);
    return z / (1.0f + z);
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

cx_status cx_ctx_new(const cx_model *m, int batch, int height, int width, cx_backend_id backend,
                     cx_ctx **out, cx_err *err)
{
    *out = NULL;
    const cx_ops *ops = backend_ops(backend);
    if (!ops)
        return cx_seterr(err, CX_EARG, "unknown backend %d", (int)backend);
    if (batch < 1 || batch > 4096)
        return cx_seterr(err, CX_EARG, "batch size %d out of range (1..4096)", batch);
    if (height < 32 || width < 32 || height > 4096 || width > 4096)
        return cx_seterr(err, CX_EARG, "input size %dx%d out of range (32..4096)", width,
                         height);
    const cx_config *cfg = &m->cfg;
    cx_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    c->m = m;
    c->ops = ops;
    c->backend = backend;
    c->batch = batch;
    c->H = height;
    c->W = width;
    size_t N = (size_t)batch;

    /* ---- plan sizes (floats) ---- */
    c->H0 = cx_out_size(height, 7, 2, 3);
    c->W0 = cx_out_size(width, 7, 2, 3);
    int h = cx_out_size(c->H0, 3, 2, 1), w = cx_out_size(c->W0, 3, 2, 1);
    size_t n_input = (size_t)cfg->in_channels * N * height * width;
    size_t n_stem = (size_t)cfg->num_init_features * N * c->H0 * c->W0;
    size_t n_block[CX_MAX_BLOCKS];
    size_t n_act = 0, n_mid = 0, n_scratch = 0;
    n_scratch = ops->conv_scratch(cfg->in_channels, batch, height, width,
                                  cfg->num_init_features, 7, 2, 3);
    for (int b = 0; b < cfg->n_blocks; b++) {
        const cx_dense_block *blk = &m->blocks[b];
        if (h < 1 || w < 1) {
            free(c);
            return cx_seterr(err, CX_EARG, "input %dx%d too small for %d dense blocks", width,
                             height, cfg->n_blocks);
        }
        c->Hb[b] = h;
        c->Wb[b] = w;
        size_t P = N * h * w;
        n_block[b] = (size_t)blk->cout * P;
        for (int l = 0; l < blk->n_layers; l++) {
            const cx_dense_layer *L = &blk->layers[l];
            n_act = max_sz(n_act, (size_t)L->cin * P);
            n_act = max_sz(n_act, (size_t)L->conv2.Cin * P);
            n_mid = max_sz(n_mid, (size_t)L->conv1.Cout * P);
            n_scratch = max_sz(n_scratch, ops->conv_scratch(L->conv1.Cin, batch, h, w,
                                                            L->conv1.Cout, 1, 1, 0));
            n_scratch = max_sz(n_scratch, ops->conv_scratch(L->conv2.Cin, batch, h, w,
                                                            L->conv2.Cout, 3, 1, 1));
        }
        if (b != cfg->n_blocks - 1) {
            const cx_transition *t = &m->trans[b];
            n_act = max_sz(n_act, (size_t)t->norm.C * P);
            n_mid = max_sz(n_mid, (size_t)t->conv.Cout * P);
            n_scratch = max_sz(n_scratch, ops->conv_scratch(t->conv.Cin, batch, h, w,
                                                            t->conv.Cout, 1, 1, 0));
            h /= 2;
            w /= 2;
        }
    }
    int last = cfg->n_blocks - 1;
    size_t n_feat = (size_t)m->num_features * N * c->Hb[last] * c->Wb[last];
    size_t n_pooled = N * m->num_features;
    size_t n_bn = cx_model_bn_channels(m);

    /* ---- carve the arena (each view 64-byte aligned) ---- */
    size_t sizes[16], k = 0;
    sizes[k++] = n_input;
    sizes[k++] = n_stem;
    for (int b = 0; b < cfg->n_blocks; b++)
        sizes[k++] = n_block[b];
    sizes[k++] = n_act;
    sizes[k++] = n_mid;
    sizes[k++] = n_scratch;
    sizes[k++] = n_feat;
    sizes[k++] = n_pooled;
    sizes[k++] = n_bn;
    sizes[k++] = n_bn;
    size_t total = 0;
    for (size_t i = 0; i < k; i++)
        total += (sizes[i] + 15) & ~(size_t)15;
    c->arena = cx_big_alloc(total * sizeof(float));
    if (!c->arena) {
        free(c);
        return cx_seterr(err, CX_ENOMEM, "out of memory planning %.1f MiB of activations",
                         total * 4.0 / 1048576.0);
    }
    c->arena_n = total;
    float *p = c->arena;
    size_t i = 0;
#define TAKE(dst)                                   \
    do {                                            \
        dst = p;                                    \
        p += (sizes[i++] + 15) & ~(size_t)15;       \
    } while (0)
    TAKE(c->input);
    TAKE(c->stem);
    for (int b = 0; b < cfg->n_blocks; b++)
        TAKE(c->block[b]);
    TAKE(c->act);
    TAKE(c->mid);
    TAKE(c->scratch);
    TAKE(c->features);
    TAKE(c->pooled);
    TAKE(c->scale);
    TAKE(c->shift);
#undef TAKE
    c->scratch_n = n_scratch;
    *out = c;
    return CX_OK;
}

void cx_ctx_free(cx_ctx *c)
{
    if (!c)
        return;
    cx_big_free(c->arena16);
    cx_big_free(c->arena);
    free(c);
}

size_t cx_ctx_arena_bytes(const cx_ctx *c)
{
    return c->arena_n * sizeof(float) + c->arena16_bytes;
}

/* ---- bf16 ---- */

const char *cx_precision_name(cx_precision p)
{
    return p == CX_PRECISION_BF16 ? "bf16" : "fp32";
}

int cx_precision_parse(const char *s)
{
    if (!s)
        return -1;
    if (!strcmp(s, "fp32") || !strcmp(s, "f32") || !strcmp(s, "float32"))
        return CX_PRECISION_F32;
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16"))
        return CX_PRECISION_BF16;
    return -1;
}

cx_precision cx_ctx_precision(const cx_ctx *c) { return c->prec; }

static size_t w16_size(const cx_conv *cv)
{
    return (size_t)cx_bf16_mpad((int64_t)cv->k * cv->k * cv->Cout) * (size_t)cx_bf16_kpad(cv->Cin);
}

static size_t align64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

cx_status cx_ctx_set_precision(cx_ctx *c, cx_precision p, cx_err *err)
{
    if (p != CX_PRECISION_F32 && p != CX_PRECISION_BF16)
        return cx_seterr(err, CX_EARG, "unknown precision %d", (int)p);
    cx_big_free(c->arena16);
    c->arena16 = NULL;
    c->arena16_bytes = 0;
    c->w16 = c->act16 = c->mid16 = NULL;
    c->scratch16 = NULL;
    c->scratch16_n = 0;
    c->prec = CX_PRECISION_F32;
    if (p == CX_PRECISION_F32 || cx_precision_effective(c->backend, p) != p)
        return CX_OK;
    const cx_ops *ops = c->ops;
    if (!ops->pack_bf16 || !ops->conv2d_bf16 || !ops->pack_bf16_grid || !ops->conv2d_grid_bf16)
        return cx_seterr(err, CX_EARG, "the %s backend has no bf16 kernels", ops->name);
    const cx_model *m = c->m;
    size_t n_w = 0, n_act = 0, n_mid = 0, n_scr = 0;
    for (int b = 0; b < m->cfg.n_blocks; b++) {
        const cx_dense_block *blk = &m->blocks[b];
        int h = c->Hb[b], w = c->Wb[b];
        int64_t Pp = cx_bf16_ppad((int64_t)c->batch * h * w);
        for (int l = 0; l < blk->n_layers; l++) {
            const cx_dense_layer *L = &blk->layers[l];
            if (L->conv1.k != 1 || L->conv2.k % 2 != 1)
                return cx_seterr(err, CX_EARG, "bf16 needs 1x1 bottleneck and odd 'same' convolutions");
            n_w += w16_size(&L->conv1) + w16_size(&L->conv2);
            n_act = max_sz(n_act, (size_t)(cx_bf16_kpad(L->cin) * Pp));
            cx_bf16_grid g = cx_bf16_grid_of(c->batch, h, w, L->conv2.k);
            n_mid = max_sz(n_mid, (size_t)(cx_bf16_kpad(L->conv2.Cin) * g.Qp));
            n_scr = max_sz(n_scr, ops->conv_grid_bf16_scratch(L->conv2.Cin, c->batch, h, w,
                                                              L->conv2.Cout, L->conv2.k));
            n_scr = max_sz(n_scr, ops->conv_bf16_scratch(L->conv1.Cin, c->batch, h, w,
                                                         L->conv1.Cout, 1));
        }
        if (b != m->cfg.n_blocks - 1) {
            const cx_transition *t = &m->trans[b];
            n_w += w16_size(&t->conv);
            n_act = max_sz(n_act, (size_t)(cx_bf16_kpad(t->conv.Cin) * Pp));
        }
    }
    size_t bytes = align64(n_w * 2) + align64(n_act * 2) + align64(n_mid * 2) +
                   align64(n_scr * sizeof(float));
    char *a = cx_big_alloc(bytes);
    if (!a)
        return cx_seterr(err, CX_ENOMEM, "out of memory planning %.1f MiB for bf16",
                         bytes / 1048576.0);
    c->arena16 = a;
    c->arena16_bytes = bytes;
    c->w16 = (uint16_t *)a;
    a += align64(n_w * 2);
    c->act16 = (uint16_t *)a;
    a += align64(n_act * 2);
    c->mid16 = (uint16_t *)a;
    a += align64(n_mid * 2);
    c->scratch16 = (float *)a;
    c->scratch16_n = n_scr;
    uint16_t *wp = c->w16;
    for (int b = 0; b < m->cfg.n_blocks; b++) {
        for (int l = 0; l < m->blocks[b].n_layers; l++) {
            const cx_dense_layer *L = &m->blocks[b].layers[l];
            cx_bf16_pack_conv_weights(L->conv1.w, L->conv1.Cout, L->conv1.Cin, 1, wp);
            wp += w16_size(&L->conv1);
            cx_bf16_pack_conv_weights(L->conv2.w, L->conv2.Cout, L->conv2.Cin, L->conv2.k, wp);
            wp += w16_size(&L->conv2);
        }
        if (b != m->cfg.n_blocks - 1) {
            const cx_conv *cv = &m->trans[b].conv;
            cx_bf16_pack_conv_weights(cv->w, cv->Cout, cv->Cin, 1, wp);
            wp += w16_size(cv);
        }
    }
    c->prec = CX_PRECISION_BF16;
    return CX_OK;
}

const char *cx_gemm_kernel(cx_backend_id backend)
{
    const cx_ops *ops = backend_ops(backend);
    return ops && ops->gemm_kernel ? ops->gemm_kernel() : "none";
}

const char *cx_bf16_kernel(cx_backend_id backend)
{
    const cx_ops *ops = backend_ops(backend);
    return ops && ops->bf16_kernel ? ops->bf16_kernel() : "none";
}

cx_precision cx_precision_effective(cx_backend_id backend, cx_precision p)
{
    if (p != CX_PRECISION_BF16 || strcmp(cx_bf16_kernel(backend), "portable"))
        return p;
    const char *e = getenv("CHEXNET_BF16_KERNEL"); /* asked for by name: tests, comparisons */
    return e && !strcmp(e, "portable") ? p : CX_PRECISION_F32;
}

/* Folds inference BatchNorm into y = x * scale + shift, as PyTorch's CPU
 * kernel does: scale = weight / sqrt(var + eps), shift = bias - mean * scale. */
static void fold_bn(const cx_bn *bn, float *scale, float *shift)
{
    for (int i = 0; i < bn->C; i++) {
        float inv = 1.0f / sqrtf(bn->var[i] + CX_BN_EPS);
        scale[i] = bn->weight[i] * inv;
        shift[i] = bn->bias[i] - bn->mean[i] * scale[i];
    }
}

typedef struct {
    float *scale, *shift;
} bn_cursor;

/* Folds bn into the cursor's next slot of the arena and moves past it; the
 * slot holds bn's per-channel scale and shift. */
static bn_cursor fold_next(bn_cursor *cur, const cx_bn *bn)
{
    bn_cursor f = *cur;
    fold_bn(bn, f.scale, f.shift);
    cur->scale += bn->C;
    cur->shift += bn->C;
    return f;
}

static void bn_relu(cx_ctx *c, bn_cursor *cur, const cx_bn *bn, const float *x, float *y,
                    int64_t P)
{
    bn_cursor f = fold_next(cur, bn);
    c->ops->bn_relu(x, y, bn->C, P, f.scale, f.shift);
}

/* y = conv(relu(bn(x))) for a 1x1 conv, the BN-ReLU never stored. */
static void conv1x1_bn_relu(cx_ctx *c, bn_cursor *cur, const cx_bn *bn, const float *x,
                            const cx_conv *cv, float *y, int64_t P)
{
    bn_cursor f = fold_next(cur, bn);
    c->ops->conv1x1_bn_relu(x, bn->C, P, f.scale, f.shift, cv->w, cv->Cout, y, c->act);
}

/* bf16: BN + ReLU of x written straight into the packed bf16 layout. */
static void bn_relu_pack(cx_ctx *c, bn_cursor *cur, const cx_bn *bn, const float *x,
                         uint16_t *y, int64_t P)
{
    bn_cursor f = fold_next(cur, bn);
    c->ops->pack_bf16(x, bn->C, P, f.scale, f.shift, y);
}

/* bf16 convolution of packed x with the next packed weights (cursor *wp). */
static void conv_bf16(cx_ctx *c, const uint16_t **wp, const cx_conv *cv, const uint16_t *x,
                      int n, int h, int w, float *y)
{
    c->ops->conv2d_bf16(x, cv->Cin, n, h, w, *wp, cv->Cout, cv->k, y, c->scratch16,
                        c->scratch16_n);
    *wp += w16_size(cv);
}

cx_status cx_forward(cx_ctx *c, const float *input, int n, float *logits, cx_err *err)
{
    if (n < 1 || n > c->batch)
        return cx_seterr(err, CX_EARG, "forward of %d images with a context planned for %d", n,
                         c->batch);
    const cx_model *m = c->m;
    const cx_config *cfg = &m->cfg;
    const cx_ops *ops = c->ops;
    int H = c->H, W = c->W, Cin = cfg->in_channels;
    int64_t HW = (int64_t)H * W;
    c->n = n;

    /* NCHW -> CNHW */
    for (int ch = 0; ch < Cin; ch++)
        for (int i = 0; i < n; i++)
            memcpy(c->input + ((int64_t)ch * n + i) * HW, input + ((int64_t)i * Cin + ch) * HW,
                   sizeof(float) * HW);

    bn_cursor cur = {c->scale, c->shift};
    int bf16 = c->prec == CX_PRECISION_BF16;
    const uint16_t *wp = c->w16;

    /* stem: conv0 -> norm0 -> relu -> maxpool into block 1 */
    ops->conv2d(c->input, Cin, n, H, W, m->conv0.w, m->conv0.Cout, 7, 2, 3, c->stem, c->scratch,
                c->scratch_n);
    int64_t P0 = (int64_t)n * c->H0 * c->W0;
    bn_relu(c, &cur, &m->norm0, c->stem, c->stem, P0);
    ops->maxpool(c->stem, m->conv0.Cout, n, c->H0, c->W0, 3, 2, 1, c->block[0]);

    for (int b = 0; b < cfg->n_blocks; b++) {
        const cx_dense_block *blk = &m->blocks[b];
        int h = c->Hb[b], w = c->Wb[b];
        int64_t P = (int64_t)n * h * w;
        float *buf = c->block[b];
        for (int l = 0; l < blk->n_layers; l++) {
            const cx_dense_layer *L = &blk->layers[l];
            if (bf16) {
                /* the same layer with packed bf16 convolution inputs */
                bn_relu_pack(c, &cur, &L->norm1, buf, c->act16, P);
                conv_bf16(c, &wp, &L->conv1, c->act16, n, h, w, c->mid);
                /* the 3x3 conv's input goes straight into its zero-padded grid */
                bn_cursor f = fold_next(&cur, &L->norm2);
                ops->pack_bf16_grid(c->mid, L->norm2.C, n, h, w, f.scale, f.shift,
                                    L->conv2.k, c->mid16);
                ops->conv2d_grid_bf16(c->mid16, L->conv2.Cin, n, h, w, wp, L->conv2.Cout,
                                      L->conv2.k, buf + (int64_t)L->cin * P, c->scratch16,
                                      c->scratch16_n);
                wp += w16_size(&L->conv2);
                continue;
            }
            /* norm1 + relu over the first cin channels, conv1 1x1 -> mid; norm2 +
             * relu, conv2 3x3 -> new channels (fused: no BN-ReLU output is
             * stored) */
            conv1x1_bn_relu(c, &cur, &L->norm1, buf, &L->conv1, c->mid, P);
            bn_cursor f = fold_next(&cur, &L->norm2);
            ops->conv2d_bn_relu(c->mid, L->conv2.Cin, n, h, w, f.scale, f.shift, L->conv2.w,
                                L->conv2.Cout, L->conv2.k, buf + (int64_t)L->cin * P, c->act,
                                c->scratch, c->scratch_n);
        }
        if (b != cfg->n_blocks - 1) {
            const cx_transition *t = &m->trans[b];
            if (bf16) {
                bn_relu_pack(c, &cur, &t->norm, buf, c->act16, P);
                conv_bf16(c, &wp, &t->conv, c->act16, n, h, w, c->mid);
            } else {
                conv1x1_bn_relu(c, &cur, &t->norm, buf, &t->conv, c->mid, P);
            }
            ops->avgpool(c->mid, t->conv.Cout, n, h, w, 2, c->block[b + 1]);
        }
    }
    int last = cfg->n_blocks - 1;
    int64_t Pf = (int64_t)n * c->Hb[last] * c->Wb[last];
    bn_relu(c, &cur, &m->norm5, c->block[last], c->features, Pf);
    ops->gap(c->features, m->num_features, n, c->Hb[last] * c->Wb[last], c->pooled);
    ops->linear(c->pooled, n, m->num_features, m->fc_w, m->fc_b, cfg->num_classes, logits);
    for (int i = 0; i < n * cfg->num_classes; i++)
        if (!isfinite(logits[i]))
            return cx_seterr(err, CX_ENUMERIC,
                             "non-finite logit for image %d class %d (check the weights)",
                             i / cfg->num_classes, i % cfg->num_classes);
    return CX_OK;
}

cx_status cx_ctx_features(const cx_ctx *c, int i, float *dst, int *C, int *h, int *w,
                          cx_err *err)
{
    int last = c->m->cfg.n_blocks - 1;
    int F = c->m->num_features, hh = c->Hb[last], ww = c->Wb[last];
    if (C)
        *C = F;
    if (h)
        *h = hh;
    if (w)
        *w = ww;
    if (!dst)
        return CX_OK;
    if (i < 0 || i >= c->n)
        return cx_seterr(err, CX_EARG, "image %d not in the last forward (%d images)", i, c->n);
    int64_t hw = (int64_t)hh * ww;
    for (int ch = 0; ch < F; ch++)
        memcpy(dst + ch * hw, c->features + ((int64_t)ch * c->n + i) * hw, sizeof(float) * hw);
    return CX_OK;
}
