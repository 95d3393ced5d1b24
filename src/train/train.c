/* Training step: forward in training mode, loss, backward, Adam.
 *
 * Layout of activations: CNHW (see kernels/backend.h). Stored for backward:
 * the conv0 output (pre-norm0), the dense block buffers (pre-norm1 inputs of
 * every layer, concatenated in place), the bottleneck output of every dense
 * layer (pre-norm2), the final features and the pooled vector. Every BN-ReLU
 * output that feeds a convolution or a pooling is recomputed in backward
 * from these and the saved batch statistics (Pleiss et al. 2017), so no
 * per-layer normalised copy of the concatenation is ever kept. */
#include "kernels/backend.h"
#include "model/model_internal.h"
#include "util/mem.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Offsets of every BN in the per-channel statistics arrays, model order. */
typedef struct {
    size_t norm0, norm5;
    size_t *norm1[CX_MAX_BLOCKS], *norm2[CX_MAX_BLOCKS];
    size_t trans[CX_MAX_BLOCKS];
} bn_offsets;

struct cx_train {
    cx_model *m;
    bn_offsets bo;
    size_t *bo_n1, *bo_n2;     /* storage of bo.norm1/norm2 */
    const cx_bn **bns;         /* every BN, model order (offsets ascending) */
    int n_bns;
    const cx_ops *ops;
    cx_train_opts opt;
    int batch, H, W, n;
    int H0, W0, Hp, Wp;                        /* conv0 output, after max-pool */
    int Hb[CX_MAX_BLOCKS], Wb[CX_MAX_BLOCKS];

    float *arena;
    size_t arena_n;
    /* stored activations */
    float *input;                              /* [Cin][N][H][W] */
    float *stem;                               /* conv0 out, pre-BN [C0][N][H0][W0] */
    float *block[CX_MAX_BLOCKS];               /* [Cb][N][h][w] */
    float **mid[CX_MAX_BLOCKS];                /* per layer: conv1 out, pre-BN [4k][N][h][w] */
    float *features;                           /* norm5+ReLU [F][N][h][w] */
    float *pooled;                             /* [N][F] */
    float *logits, *dlogits;                   /* [N][K] */
    float *labels;                             /* [N][K] */
    /* gradients of activations */
    float *dblock[CX_MAX_BLOCKS];
    float *dpooled;                            /* [N][F] */
    /* scratch */
    float *act, *dact;                         /* BN-ReLU outputs and their grads */
    float *act2, *dmid;                        /* bottleneck-sized */
    float *scratch;
    size_t scratch_n;
    /* batch statistics of each dense block's channels, computed once */
    float *chm[CX_MAX_BLOCKS], *chv[CX_MAX_BLOCKS];
    /* backward, per block channel: invstd, and the deferred BN terms a, b
     * (see conv1x1_bn_relu_backward_deferred) */
    float *chis, *pend_a, *pend_b;
    /* per-BN-channel saved statistics (all BNs, model order) */
    float *bn_mean, *bn_invstd, *bn_var, *scale, *shift;
    /* loss weights [K] */
    float *wpos, *wneg;

    int64_t *bn_P;             /* values per channel of each BN (batch n) */
    /* parameters: gradient and Adam moments, same layout as model storage */
    float *grad, *adam_m, *adam_v;
    int64_t adam_steps;
};

void cx_train_opts_default(cx_train_opts *o)
{
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = 0.0f;
    o->bn_momentum = 0.1f;
}

double cx_bce_loss(const float *logits, const float *labels, int n, int K, const float *wpos,
                   const float *wneg, float *dlogits)
{
    double total = 0.0;
    for (int k = 0; k < K; k++) {
        double wp = wpos ? wpos[k] : 1.0, wn = wneg ? wneg[k] : 1.0, sum = 0.0;
        for (int i = 0; i < n; i++) {
            double z = logits[(size_t)i * K + k], y = labels[(size_t)i * K + k];
            /* softplus(-z) = -log s(z), softplus(z) = -log(1 - s(z)) */
            double sp_neg = fmax(-z, 0.0) + log1p(exp(-fabs(z)));
            double sp_pos = sp_neg + z;
            sum += wp * y * sp_neg + wn * (1.0 - y) * sp_pos;
            if (dlogits) {
                double s = z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
                dlogits[(size_t)i * K + k] = (float)((wp * y * (s - 1.0) + wn * (1.0 - y) * s) / n);
            }
        }
        total += sum / n;
    }
    return total;
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

/* Walks every BN in model order: offsets into the statistics arrays. */
static int plan_bns(cx_train *t)
{
    const cx_model *m = t->m;
    int nl = 0;
    for (int b = 0; b < m->cfg.n_blocks; b++)
        nl += m->blocks[b].n_layers;
    int nb = 2 + 2 * nl + (m->cfg.n_blocks - 1);
    t->bo_n1 = malloc((size_t)nl * sizeof(size_t));
    t->bo_n2 = malloc((size_t)nl * sizeof(size_t));
    t->bns = malloc((size_t)nb * sizeof *t->bns);
    t->bn_P = malloc((size_t)nb * sizeof *t->bn_P);
    if (!t->bo_n1 || !t->bo_n2 || !t->bns || !t->bn_P)
        return -1;
    bn_offsets *o = &t->bo;
    size_t off = 0, k = 0;
    int i = 0;
    o->norm0 = off;
    off += m->norm0.C;
    t->bns[i++] = &m->norm0;
    for (int b = 0; b < m->cfg.n_blocks; b++) {
        o->norm1[b] = t->bo_n1 + k;
        o->norm2[b] = t->bo_n2 + k;
        for (int l = 0; l < m->blocks[b].n_layers; l++) {
            t->bo_n1[k] = off;
            off += m->blocks[b].layers[l].norm1.C;
            t->bns[i++] = &m->blocks[b].layers[l].norm1;
            t->bo_n2[k] = off;
            off += m->blocks[b].layers[l].norm2.C;
            t->bns[i++] = &m->blocks[b].layers[l].norm2;
            k++;
        }
        if (b != m->cfg.n_blocks - 1) {
            o->trans[b] = off;
            off += m->trans[b].norm.C;
            t->bns[i++] = &m->trans[b].norm;
        }
    }
    o->norm5 = off;
    t->bns[i++] = &m->norm5;
    t->n_bns = i;
    return 0;
}

/* Values per channel of every BN for a batch of n images. */
static void set_bn_P(cx_train *t, int n)
{
    const cx_model *m = t->m;
    int i = 0;
    t->bn_P[i++] = (int64_t)n * t->H0 * t->W0;
    for (int b = 0; b < m->cfg.n_blocks; b++) {
        int64_t P = (int64_t)n * t->Hb[b] * t->Wb[b];
        for (int l = 0; l < m->blocks[b].n_layers; l++) {
            t->bn_P[i++] = P;
            t->bn_P[i++] = P;
        }
        if (b != m->cfg.n_blocks - 1)
            t->bn_P[i++] = P;
    }
    int last = m->cfg.n_blocks - 1;
    t->bn_P[i++] = (int64_t)n * t->Hb[last] * t->Wb[last];
}

cx_status cx_train_new(cx_model *m, int batch, int height, int width, cx_backend_id backend,
                       const cx_train_opts *opts, cx_train **out, cx_err *err)
{
    *out = NULL;
    const cx_ops *ops = backend == CX_BACKEND_REF ? cx_ops_ref() : cx_ops_cpu();
    if (batch < 2 || batch > 4096)
        return cx_seterr(err, CX_EARG,
                         "training batch size %d out of range (2..4096: BatchNorm needs 2)",
                         batch);
    if (height < 32 || width < 32 || height > 4096 || width > 4096)
        return cx_seterr(err, CX_EARG, "input size %dx%d out of range", width, height);
    const cx_config *cfg = &m->cfg;
    cx_train *t = calloc(1, sizeof *t);
    if (!t)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    t->m = m;
    t->ops = ops;
    if (opts)
        t->opt = *opts;
    else
        cx_train_opts_default(&t->opt);
    t->batch = batch;
    t->H = height;
    t->W = width;
    size_t N = (size_t)batch;
    int K = cfg->num_classes;

    t->H0 = cx_out_size(height, 7, 2, 3);
    t->W0 = cx_out_size(width, 7, 2, 3);
    int h = cx_out_size(t->H0, 3, 2, 1), w = cx_out_size(t->W0, 3, 2, 1);
    t->Hp = h;
    t->Wp = w;
    size_t C0 = (size_t)cfg->num_init_features;
    size_t P0 = N * t->H0 * t->W0;
    size_t sizes[64];
    int ns = 0;
    size_t n_act = C0 * P0, n_mid = 0, n_scr = 0;
    n_scr = max_sz(ops->conv_scratch(cfg->in_channels, batch, height, width, (int)C0, 7, 2, 3),
                   ops->conv_bwd_scratch(cfg->in_channels, batch, height, width, (int)C0, 7, 2,
                                         3));
    size_t n_block[CX_MAX_BLOCKS], n_mids = 0;
    for (int b = 0; b < cfg->n_blocks; b++) {
        if (h < 1 || w < 1) {
            free(t);
            return cx_seterr(err, CX_EARG, "input %dx%d too small", width, height);
        }
        t->Hb[b] = h;
        t->Wb[b] = w;
        size_t P = N * h * w;
        const cx_dense_block *blk = &m->blocks[b];
        n_block[b] = (size_t)blk->cout * P;
        for (int l = 0; l < blk->n_layers; l++) {
            const cx_dense_layer *L = &blk->layers[l];
            n_act = max_sz(n_act, (size_t)L->cin * P);
            n_mid = max_sz(n_mid, (size_t)L->conv1.Cout * P);
            n_mids += (size_t)L->conv1.Cout * P;
            n_scr = max_sz(n_scr, ops->conv_bwd_scratch(L->conv2.Cin, batch, h, w, L->conv2.Cout,
                                                        3, 1, 1));
            n_scr = max_sz(n_scr, ops->conv_scratch(L->conv2.Cin, batch, h, w, L->conv2.Cout, 3,
                                                    1, 1));
            n_scr = max_sz(n_scr, ops->conv_bwd_scratch(L->conv1.Cin, batch, h, w, L->conv1.Cout,
                                                        1, 1, 0));
        }
        if (b != cfg->n_blocks - 1) {
            n_act = max_sz(n_act, (size_t)m->trans[b].norm.C * P);
            n_mid = max_sz(n_mid, (size_t)m->trans[b].conv.Cout * P);
            h /= 2;
            w /= 2;
        }
    }
    int last = cfg->n_blocks - 1;
    size_t Pf = N * t->Hb[last] * t->Wb[last];
    size_t F = (size_t)m->num_features;
    n_mid = max_sz(n_mid, F * Pf);
    size_t nbn = cx_model_bn_channels(m), np = (size_t)m->storage_n;

    sizes[ns++] = (size_t)cfg->in_channels * N * height * width; /* input */
    sizes[ns++] = C0 * P0;                                       /* stem */
    for (int b = 0; b < cfg->n_blocks; b++)
        sizes[ns++] = n_block[b];
    sizes[ns++] = n_mids;
    sizes[ns++] = F * Pf;   /* features */
    sizes[ns++] = N * F;    /* pooled */
    sizes[ns++] = N * K;    /* logits */
    sizes[ns++] = N * K;    /* dlogits */
    sizes[ns++] = N * K;    /* labels */
    for (int b = 0; b < cfg->n_blocks; b++)
        sizes[ns++] = n_block[b];
    sizes[ns++] = N * F;    /* dpooled */
    sizes[ns++] = n_act;
    sizes[ns++] = n_act;
    sizes[ns++] = n_mid;
    sizes[ns++] = n_mid;
    sizes[ns++] = n_scr;
    for (int i = 0; i < 5; i++)
        sizes[ns++] = nbn;
    size_t max_cout = 0;
    for (int b = 0; b < cfg->n_blocks; b++) {
        sizes[ns++] = (size_t)m->blocks[b].cout;
        sizes[ns++] = (size_t)m->blocks[b].cout;
        max_cout = max_sz(max_cout, (size_t)m->blocks[b].cout);
    }
    for (int i = 0; i < 3; i++)
        sizes[ns++] = max_cout; /* chis, pend_a, pend_b */
    sizes[ns++] = (size_t)K;
    sizes[ns++] = (size_t)K;
    sizes[ns++] = np; /* grad */
    sizes[ns++] = np; /* adam m */
    sizes[ns++] = np; /* adam v */
    size_t total = 0;
    for (int i = 0; i < ns; i++)
        total += (sizes[i] + 15) & ~(size_t)15;
    t->arena = cx_big_alloc(total * sizeof(float));
    for (int b = 0; b < cfg->n_blocks; b++)
        t->mid[b] = calloc((size_t)m->blocks[b].n_layers, sizeof(float *));
    int ok = t->arena != NULL;
    for (int b = 0; b < cfg->n_blocks; b++)
        ok = ok && t->mid[b];
    if (!ok) {
        cx_train_free(t);
        return cx_seterr(err, CX_ENOMEM, "out of memory planning %.1f MiB for training",
                         total * 4.0 / 1048576.0);
    }
    t->arena_n = total;
    memset(t->arena, 0, total * sizeof(float));
    float *p = t->arena;
    int i = 0;
#define TAKE(dst)                                   \
    do {                                            \
        dst = p;                                    \
        p += (sizes[i++] + 15) & ~(size_t)15;       \
    } while (0)
    TAKE(t->input);
    TAKE(t->stem);
    for (int b = 0; b < cfg->n_blocks; b++)
        TAKE(t->block[b]);
    float *mids;
    TAKE(mids);
    for (int b = 0; b < cfg->n_blocks; b++) {
        size_t P = N * t->Hb[b] * t->Wb[b];
        for (int l = 0; l < m->blocks[b].n_layers; l++) {
            t->mid[b][l] = mids;
            mids += (size_t)m->blocks[b].layers[l].conv1.Cout * P;
        }
    }
    TAKE(t->features);
    TAKE(t->pooled);
    TAKE(t->logits);
    TAKE(t->dlogits);
    TAKE(t->labels);
    for (int b = 0; b < cfg->n_blocks; b++)
        TAKE(t->dblock[b]);
    TAKE(t->dpooled);
    TAKE(t->act);
    TAKE(t->dact);
    TAKE(t->act2);
    TAKE(t->dmid);
    TAKE(t->scratch);
    TAKE(t->bn_mean);
    TAKE(t->bn_invstd);
    TAKE(t->bn_var);
    TAKE(t->scale);
    TAKE(t->shift);
    for (int b = 0; b < cfg->n_blocks; b++) {
        TAKE(t->chm[b]);
        TAKE(t->chv[b]);
    }
    TAKE(t->chis);
    TAKE(t->pend_a);
    TAKE(t->pend_b);
    TAKE(t->wpos);
    TAKE(t->wneg);
    TAKE(t->grad);
    TAKE(t->adam_m);
    TAKE(t->adam_v);
#undef TAKE
    t->scratch_n = n_scr;
    if (plan_bns(t)) {
        cx_train_free(t);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    for (int k = 0; k < K; k++)
        t->wpos[k] = t->wneg[k] = 1.0f;
    *out = t;
    return CX_OK;
}

void cx_train_free(cx_train *t)
{
    if (!t)
        return;
    free(t->bo_n1);
    free(t->bo_n2);
    free(t->bns);
    free(t->bn_P);
    for (int b = 0; b < CX_MAX_BLOCKS; b++)
        free(t->mid[b]);
    cx_big_free(t->arena);
    free(t);
}

size_t cx_train_arena_bytes(const cx_train *t) { return t->arena_n * sizeof(float); }

cx_status cx_train_set_loss_weights(cx_train *t, const float *wpos, const float *wneg,
                                    cx_err *err)
{
    int K = t->m->cfg.num_classes;
    for (int k = 0; k < K; k++) {
        float a = wpos ? wpos[k] : 1.0f, b = wneg ? wneg[k] : 1.0f;
        if (!isfinite(a) || !isfinite(b) || a < 0 || b < 0)
            return cx_seterr(err, CX_EARG, "loss weights of class %d must be finite and >= 0", k);
        t->wpos[k] = a;
        t->wneg[k] = b;
    }
    return CX_OK;
}

const float *cx_train_logits(const cx_train *t) { return t->logits; }

float *cx_train_grad(cx_train *t, int i)
{
    if (i < 0 || i >= t->m->n_tensors || !t->m->tensors[i].trainable)
        return NULL;
    return t->grad + cx_param_offset(t->m, i);
}

float *cx_adam_m(cx_train *t, int i)
{
    if (i < 0 || i >= t->m->n_tensors || !t->m->tensors[i].trainable)
        return NULL;
    return t->adam_m + cx_param_offset(t->m, i);
}

float *cx_adam_v(cx_train *t, int i)
{
    if (i < 0 || i >= t->m->n_tensors || !t->m->tensors[i].trainable)
        return NULL;
    return t->adam_v + cx_param_offset(t->m, i);
}

int64_t cx_adam_steps(const cx_train *t) { return t->adam_steps; }
void cx_adam_set_steps(cx_train *t, int64_t steps) { t->adam_steps = steps; }

/* ---- forward (training mode) ---- */

/* Grad pointer of a model tensor given its data pointer. */
static float *gradp(cx_train *t, const float *data) { return t->grad + (data - t->m->storage); }

/* Batch statistics of x for bn (saved at off), y = relu(bn(x)). The running
 * statistics are updated later by commit_running. When cmean/cvar are given
 * they are the statistics of x's channels, computed once when the channels
 * were written to the dense block (every layer reading the concatenation
 * normalises the same channels with the same batch statistics). */
/* Batch statistics of x (or the known ones) and the folded scale/shift. */
static void bn_train_stats(cx_train *t, size_t off, const cx_bn *bn, const float *x, int64_t P,
                           const float *cmean, const float *cvar)
{
    float *mean = t->bn_mean + off, *var = t->bn_var + off, *is = t->bn_invstd + off;
    float *sc = t->scale + off, *sh = t->shift + off;
    if (cmean) { /* statistics of these channels are already known */
        memcpy(mean, cmean, sizeof(float) * bn->C);
        memcpy(var, cvar, sizeof(float) * bn->C);
    } else {
        t->ops->bn_stats(x, bn->C, P, mean, var);
    }
    for (int c = 0; c < bn->C; c++) {
        is[c] = 1.0f / sqrtf(var[c] + CX_BN_EPS);
        sc[c] = bn->weight[c] * is[c];
        sh[c] = bn->bias[c] - mean[c] * sc[c];
    }
}

static void bn_train_fwd(cx_train *t, size_t off, const cx_bn *bn, const float *x, float *y,
                         int64_t P, const float *cmean, const float *cvar)
{
    bn_train_stats(t, off, bn, x, P, cmean, cvar);
    t->ops->bn_relu(x, y, bn->C, P, t->scale + off, t->shift + off);
}

/* conv(relu(bn(x))) of a 1x1 conv in training mode, the BN-ReLU not stored. */
static void bn_conv1x1_fwd(cx_train *t, size_t off, const cx_bn *bn, const float *x, int64_t P,
                           const float *cmean, const float *cvar, const cx_conv *cv, float *y)
{
    bn_train_stats(t, off, bn, x, P, cmean, cvar);
    t->ops->conv1x1_bn_relu(x, bn->C, P, t->scale + off, t->shift + off, cv->w, cv->Cout, y,
                            t->act);
}

/* Its backward up to the BN-ReLU output: dw += dy a^T, da = w^T dy. */
static void bn_conv1x1_bwd(cx_train *t, size_t off, const cx_bn *bn, const float *x, int64_t P,
                           const cx_conv *cv, const float *dy, float *da)
{
    t->ops->conv1x1_bn_relu_backward(x, bn->C, P, t->scale + off, t->shift + off, cv->w,
                                     cv->Cout, dy, gradp(t, cv->w), da, 0, t->act);
}

/* The same, with BN-ReLU's backward in the deferred form: dx += scale * d,
 * and the per-channel terms added to pa, pb (for bn_backward_finish). The
 * BN's gradients are zero before (each BN has one backward per step), so
 * after the op they hold this layer's sums. */
static void bn_conv1x1_bwd_deferred(cx_train *t, size_t off, const cx_bn *bn, const float *x,
                                    int64_t P, const cx_conv *cv, const float *dy, float *dx,
                                    float *pa, float *pb)
{
    const float *sc = t->scale + off;
    float *dg = gradp(t, bn->weight), *db = gradp(t, bn->bias);
    t->ops->conv1x1_bn_relu_backward_deferred(x, bn->C, P, sc, t->shift + off, t->bn_mean + off,
                                              t->bn_invstd + off, cv->w, cv->Cout, dy,
                                              gradp(t, cv->w), dg, db, dx, t->act);
    for (int c = 0; c < bn->C; c++) {
        float k = sc[c] / (float)P;
        pa[c] -= k * db[c];
        pb[c] -= k * dg[c];
    }
}

/* Recomputes y = relu(bn(x)) with the saved batch statistics. */
static void bn_recompute(cx_train *t, size_t off, const cx_bn *bn, const float *x, float *y,
                         int64_t P)
{
    t->ops->bn_relu(x, y, bn->C, P, t->scale + off, t->shift + off);
}

static void bn_backward(cx_train *t, size_t off, const cx_bn *bn, const float *x, const float *dy,
                        float *dx, int64_t P, int accumulate)
{
    t->ops->bn_relu_backward(x, dy, bn->C, P, bn->weight, bn->bias, t->bn_mean + off,
                             t->bn_invstd + off, gradp(t, bn->weight), gradp(t, bn->bias), dx,
                             accumulate);
}

/* Applies the running-statistics update of every BN from the saved batch
 * statistics (done only once the loss is known to be finite). */
static void commit_running(cx_train *t, int64_t *P_of_bn)
{
    const float mom = t->opt.bn_momentum;
    size_t off = 0;
    for (int i = 0; i < t->n_bns; i++) {
        const cx_bn *bn = t->bns[i];
        int64_t P = P_of_bn[i];
        const double unbias = P > 1 ? (double)P / (double)(P - 1) : 1.0;
        for (int c = 0; c < bn->C; c++) {
            bn->mean[c] = (1.0f - mom) * bn->mean[c] + mom * t->bn_mean[off + c];
            bn->var[c] = (1.0f - mom) * bn->var[c] + mom * (float)(t->bn_var[off + c] * unbias);
        }
        off += bn->C;
    }
}

cx_status cx_train_step(cx_train *t, const float *input, const float *labels, int n,
                        double *loss_out, cx_err *err)
{
    if (n < 2 || n > t->batch)
        return cx_seterr(err, CX_EARG,
                         "training step on %d images (context planned for 2..%d)", n, t->batch);
    cx_model *m = t->m;
    const cx_config *cfg = &m->cfg;
    const cx_ops *ops = t->ops;
    int Cin = cfg->in_channels, K = cfg->num_classes, H = t->H, W = t->W;
    int64_t HW = (int64_t)H * W;
    t->n = n;
    for (int i = 0; i < n * K; i++) {
        float y = labels[i];
        if (!(y >= 0.0f && y <= 1.0f))
            return cx_seterr(err, CX_EARG, "label of image %d class %d is %g, not in [0, 1]",
                             i / K, i % K, y);
    }
    memcpy(t->labels, labels, sizeof(float) * n * K);
    set_bn_P(t, n);

    const bn_offsets bo = t->bo;

    for (int ch = 0; ch < Cin; ch++)
        for (int i = 0; i < n; i++)
            memcpy(t->input + ((int64_t)ch * n + i) * HW, input + ((int64_t)i * Cin + ch) * HW,
                   sizeof(float) * HW);

    /* ---------------- forward ---------------- */
    int64_t P0 = (int64_t)n * t->H0 * t->W0;
    ops->conv2d(t->input, Cin, n, H, W, m->conv0.w, m->conv0.Cout, 7, 2, 3, t->stem, t->scratch,
                t->scratch_n);
    bn_train_fwd(t, bo.norm0, &m->norm0, t->stem, t->act, P0, NULL, NULL);
    ops->maxpool(t->act, m->conv0.Cout, n, t->H0, t->W0, 3, 2, 1, t->block[0]);
    ops->bn_stats(t->block[0], m->conv0.Cout, (int64_t)n * t->Hb[0] * t->Wb[0], t->chm[0],
                  t->chv[0]);
    for (int b = 0; b < cfg->n_blocks; b++) {
        const cx_dense_block *blk = &m->blocks[b];
        int h = t->Hb[b], w = t->Wb[b];
        int64_t P = (int64_t)n * h * w;
        float *buf = t->block[b];
        for (int l = 0; l < blk->n_layers; l++) {
            const cx_dense_layer *L = &blk->layers[l];
            bn_conv1x1_fwd(t, bo.norm1[b][l], &L->norm1, buf, P, t->chm[b], t->chv[b], &L->conv1,
                           t->mid[b][l]);
            /* norm2 + relu + conv2 3x3 -> new channels (BN-ReLU output not stored) */
            size_t o2 = bo.norm2[b][l];
            bn_train_stats(t, o2, &L->norm2, t->mid[b][l], P, NULL, NULL);
            float *newc = buf + (int64_t)L->cin * P;
            ops->conv2d_bn_relu(t->mid[b][l], L->conv2.Cin, n, h, w, t->scale + o2, t->shift + o2,
                                L->conv2.w, L->conv2.Cout, L->conv2.k, newc, t->act2, t->scratch,
                                t->scratch_n);
            ops->bn_stats(newc, L->conv2.Cout, P, t->chm[b] + L->cin, t->chv[b] + L->cin);
        }
        if (b != cfg->n_blocks - 1) {
            const cx_transition *tr = &m->trans[b];
            bn_conv1x1_fwd(t, bo.trans[b], &tr->norm, buf, P, t->chm[b], t->chv[b], &tr->conv,
                           t->act2);
            ops->avgpool(t->act2, tr->conv.Cout, n, h, w, 2, t->block[b + 1]);
            ops->bn_stats(t->block[b + 1], tr->conv.Cout,
                          (int64_t)n * t->Hb[b + 1] * t->Wb[b + 1], t->chm[b + 1],
                          t->chv[b + 1]);
        }
    }
    int last = cfg->n_blocks - 1;
    int hwf = t->Hb[last] * t->Wb[last];
    int64_t Pf = (int64_t)n * hwf;
    int F = m->num_features;
    bn_train_fwd(t, bo.norm5, &m->norm5, t->block[last], t->features, Pf, t->chm[last],
                 t->chv[last]);
    ops->gap(t->features, F, n, hwf, t->pooled);
    ops->linear(t->pooled, n, F, m->fc_w, m->fc_b, K, t->logits);

    double loss = cx_bce_loss(t->logits, t->labels, n, K, t->wpos, t->wneg, t->dlogits);
    *loss_out = loss;
    if (!isfinite(loss))
        return cx_seterr(err, CX_ENUMERIC,
                         "loss is %g (non-finite): stopping before any weight or running "
                         "statistic changes",
                         loss);
    commit_running(t, t->bn_P);

    /* ---------------- backward ---------------- */
    memset(t->grad, 0, sizeof(float) * (size_t)m->storage_n);
    ops->linear_backward(t->pooled, n, F, m->fc_w, K, t->dlogits, gradp(t, m->fc_w),
                         gradp(t, m->fc_b), t->dpooled);
    ops->gap_backward(t->dpooled, F, n, hwf, t->dmid);
    bn_backward(t, bo.norm5, &m->norm5, t->block[last], t->dmid, t->dblock[last], Pf, 0);
    for (int b = last; b >= 0; b--) {
        const cx_dense_block *blk = &m->blocks[b];
        int h = t->Hb[b], w = t->Wb[b];
        int64_t P = (int64_t)n * h * w;
        float *buf = t->block[b], *dbuf = t->dblock[b];
        /* Every layer's norm1 reads the block's channels with the same batch
         * statistics: its BN backward adds scale * d now and leaves the terms
         * that need the whole batch in pend_a/pend_b, added to a channel's
         * gradient once its last reader (the layer that wrote it) is reached. */
        float *mean = t->chm[b], *is = t->chis, *pa = t->pend_a, *pb = t->pend_b;
        for (int c = 0; c < blk->cout; c++) {
            is[c] = 1.0f / sqrtf(t->chv[b][c] + CX_BN_EPS); /* as bn_train_stats */
            pa[c] = pb[c] = 0.0f;
        }
        for (int l = blk->n_layers - 1; l >= 0; l--) {
            const cx_dense_layer *L = &blk->layers[l];
            int cin = L->cin, cnew = L->conv2.Cout;
            float *dnew = dbuf + (int64_t)cin * P;
            if (l != blk->n_layers - 1) /* layers l+1.. read these channels */
                ops->bn_backward_finish(buf + (int64_t)cin * P, cnew, P, mean + cin, is + cin,
                                        pa + cin, pb + cin, dnew);
            /* conv2: input relu(norm2(mid)) recomputed inside the GEMM */
            size_t o2 = bo.norm2[b][l];
            ops->conv2d_bn_relu_backward(t->mid[b][l], L->conv2.Cin, n, h, w, t->scale + o2,
                                         t->shift + o2, L->conv2.w, L->conv2.Cout, L->conv2.k,
                                         dnew, gradp(t, L->conv2.w), t->dmid, t->act2,
                                         t->scratch, t->scratch_n);
            bn_backward(t, o2, &L->norm2, t->mid[b][l], t->dmid, t->dmid, P, 0);
            /* conv1: input relu(norm1(concat)) recomputed inside the GEMMs */
            bn_conv1x1_bwd_deferred(t, bo.norm1[b][l], &L->norm1, buf, P, &L->conv1, t->dmid,
                                    dbuf, pa, pb);
        }
        ops->bn_backward_finish(buf, blk->cin, P, mean, is, pa, pb, dbuf); /* block input */
        if (b > 0) {
            const cx_transition *tr = &m->trans[b - 1];
            int hp = t->Hb[b - 1], wp = t->Wb[b - 1];
            int64_t Pp = (int64_t)n * hp * wp;
            ops->avgpool_backward(dbuf, tr->conv.Cout, n, hp, wp, 2, t->dmid);
            bn_conv1x1_bwd(t, bo.trans[b - 1], &tr->norm, t->block[b - 1], Pp, &tr->conv,
                           t->dmid, t->dact);
            bn_backward(t, bo.trans[b - 1], &tr->norm, t->block[b - 1], t->dact,
                        t->dblock[b - 1], Pp, 0);
        }
    }
    /* stem: max-pool input relu(norm0(conv0)) recomputed */
    bn_recompute(t, bo.norm0, &m->norm0, t->stem, t->act, P0);
    ops->maxpool_backward(t->act, m->conv0.Cout, n, t->H0, t->W0, 3, 2, 1, t->dblock[0],
                          t->dact);
    bn_backward(t, bo.norm0, &m->norm0, t->stem, t->dact, t->dact, P0, 0);
    ops->conv2d_backward(t->input, Cin, n, H, W, m->conv0.w, m->conv0.Cout, 7, 2, 3, t->dact,
                         gradp(t, m->conv0.w), NULL, 0, t->scratch, t->scratch_n);
    return CX_OK;
}

/* ---- Adam ---- */

/* Adam on elements [a, b) of trainable tensor i */
static void adam_range(cx_train *t, int i, int64_t a, int64_t b, float step_size, float bc2_sqrt)
{
    cx_model *m = t->m;
    int64_t off = cx_param_offset(m, i);
    float *w = m->tensors[i].data, *g = t->grad + off, *mm = t->adam_m + off,
          *vv = t->adam_v + off;
    const float fb1 = t->opt.beta1, fb2 = t->opt.beta2, eps = t->opt.eps,
                wd = t->opt.weight_decay;
#pragma omp simd
    for (int64_t j = a; j < b; j++) {
        float gj = g[j];
        if (wd != 0.0f)
            gj += wd * w[j];
        mm[j] = mm[j] * fb1 + (1.0f - fb1) * gj;
        vv[j] = vv[j] * fb2 + (1.0f - fb2) * gj * gj;
        float denom = sqrtf(vv[j]) / bc2_sqrt + eps;
        w[j] -= step_size * (mm[j] / denom);
    }
}

cx_status cx_adam_step(cx_train *t, float lr, cx_err *err)
{
    if (!(lr >= 0) || !isfinite(lr))
        return cx_seterr(err, CX_EARG, "learning rate %g is not a finite number >= 0", lr);
    cx_model *m = t->m;
    /* refuse to apply non-finite gradients: one parallel pass over every
     * gradient (those of running statistics stay zero), then the culprit */
    int bad = 0;
    const float *grad = t->grad;
#pragma omp parallel for reduction(| : bad) schedule(static)
    for (int64_t j = 0; j < m->storage_n; j++)
        bad |= !isfinite(grad[j]);
    for (int i = 0; bad && i < m->n_tensors; i++) {
        cx_param *p = &m->tensors[i];
        const float *g = t->grad + cx_param_offset(m, i);
        for (int64_t j = 0; p->trainable && j < p->numel; j++)
            if (!isfinite(g[j]))
                return cx_seterr(err, CX_ENUMERIC, "non-finite gradient in tensor '%s'",
                                 p->name);
    }
    t->adam_steps++;
    const double b1 = t->opt.beta1, b2 = t->opt.beta2;
    const double bc1 = 1.0 - pow(b1, (double)t->adam_steps);
    const double bc2 = 1.0 - pow(b2, (double)t->adam_steps);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    int64_t total = 0;
    for (int i = 0; i < m->n_tensors; i++)
        total += m->tensors[i].trainable ? m->tensors[i].numel : 0;
    /* the trainable elements, all tensors in a row, shared out evenly */
#pragma omp parallel if (total > 65536)
    {
        int nth = omp_get_num_threads(), tid = omp_get_thread_num();
        int64_t lo = total * tid / nth, hi = total * (tid + 1) / nth, base = 0;
        for (int i = 0; i < m->n_tensors && base < hi; i++) {
            if (!m->tensors[i].trainable)
                continue;
            int64_t n = m->tensors[i].numel;
            int64_t a = lo > base ? lo - base : 0, b = hi < base + n ? hi - base : n;
            if (a < b)
                adam_range(t, i, a, b, step_size, bc2_sqrt);
            base += n;
        }
    }
    return CX_OK;
}

/* ---- ReduceLROnPlateau ---- */

void cx_plateau_init(cx_plateau *p, double lr, double factor, int patience, double threshold)
{
    memset(p, 0, sizeof *p);
    p->lr = lr;
    p->factor = factor;
    p->patience = patience;
    p->threshold = threshold;
    p->min_lr = 0.0;
    p->best = INFINITY;
}

int cx_plateau_step(cx_plateau *p, double val)
{
    /* mode 'min', threshold_mode 'rel': better if val < best * (1 - threshold) */
    if (val < p->best * (1.0 - p->threshold)) {
        p->best = val;
        p->num_bad_epochs = 0;
    } else {
        p->num_bad_epochs++;
    }
    if (p->cooldown_counter > 0) {
        p->cooldown_counter--;
        p->num_bad_epochs = 0;
    }
    if (p->num_bad_epochs > p->patience) {
        double new_lr = fmax(p->lr * p->factor, p->min_lr);
        int reduced = 0;
        if (p->lr - new_lr > 1e-8) { /* PyTorch's eps */
            p->lr = new_lr;
            reduced = 1;
        }
        p->cooldown_counter = p->cooldown;
        p->num_bad_epochs = 0;
        return reduced;
    }
    return 0;
}
