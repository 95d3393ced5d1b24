/* The forward pass of a DenseNet (model/pass.h), with a training flag, and
 * the inference context around it. A context plans all buffers once for
 * (model, batch, H, W) in its backend's memory (cx_ctx_new); cx_forward
 * uploads the batch, runs the pass as a sequence of backend ops and
 * downloads the logits, allocating nothing. */
#include "model/pass.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cx_ctx {
    cx_pass p;
    int n; /* images in the last forward */
    cx_precision prec;
};

float cx_sigmoid(float x)
{
    if (x >= 0) {
        float z = expf(-x);
        return 1.0f / (1.0f + z);
    }
    float z = expf(x);
    return z / (1.0f + z);
}

/* ---------------------------------------------------------------- the pass */

/* Batch statistics of C channels over P values each; with BatchNorm across
 * ranks, those of the global batch. */
static cx_status stats(cx_pass *p, const char *where, const float *x, int C, int64_t P,
                       float *mean, float *var, cx_err *err)
{
    CX_OP(p->be, err, where, bn_stats, x, C, P, mean, var);
    if (p->dist && p->dist->sync_bn)
        return cx_pass_sync_stats(p, where, C, P, mean, var, err);
    return CX_OK;
}

/* The BatchNorm of slot s ready for its ReLU: in inference its running
 * statistics folded into scale and shift; in training its batch statistics
 * (of x over P values per channel, or the block's, already known) folded,
 * with invstd kept for backward. */
static cx_status bn_prepare(cx_pass *p, const cx_bn_slot *s, const float *x, int64_t P, cx_err *err)
{
    cx_backend *be = p->be;
    const char *where = cx_pass_name(p, s->bn->idx);
    if (!p->plan.training) {
        CX_OP(be, err, where, bn_fold, s->bn->C, s->weight, s->bias, s->run_mean, s->run_var,
              CX_BN_EPS, s->scale, s->shift, NULL);
        return CX_OK;
    }
    if (x) { /* its own statistics (norm0, norm2) */
        cx_status st = stats(p, where, x, s->bn->C, P, s->mean, s->var, err);
        if (st)
            return st;
    }
    CX_OP(be, err, where, bn_fold, s->bn->C, s->weight, s->bias, s->mean, s->var, CX_BN_EPS,
          s->scale, s->shift, s->invstd);
    return CX_OK;
}

#define TRY(call)                                                                                  \
    do {                                                                                           \
        cx_status st_ = (call);                                                                    \
        if (st_ != CX_OK)                                                                          \
            return st_;                                                                            \
    } while (0)

/* A dense layer with bf16 convolutions (inference): BN + ReLU written
 * straight into the packed layouts, the 3x3 convolution's input into its
 * zero-padded grid. *wp: the next packed weights. */
static cx_status dense_layer_bf16(cx_pass *p, const cx_bn_slot *s, const cx_dense_layer *L,
                                  float *buf, int n, int h, int w, const uint16_t **wp, cx_err *err)
{
    cx_backend *be = p->be;
    const cx_ops *ops = be->ops;
    int64_t P = (int64_t)n * h * w;
    uint16_t *act16 = p->buf[CX_B_ACT16], *mid16 = p->buf[CX_B_MID16];
    float *mid = p->buf[CX_B_MID], *scr = p->buf[CX_B_SCRATCH16];
    size_t scr_n = p->plan.scratch16_n;
    const char *w1 = cx_pass_name(p, L->conv1.idx), *w2 = cx_pass_name(p, L->conv2.idx);
    TRY(bn_prepare(p, &s[0], NULL, P, err));
    CX_OP(be, err, w1, pack_bf16, buf, L->norm1.C, P, s[0].scale, s[0].shift, act16);
    CX_OP(be, err, w1, conv2d_bf16, act16, L->conv1.Cin, n, h, w, *wp, L->conv1.Cout, 1, mid, scr,
          scr_n);
    *wp += ops->bf16_weights_size(be, L->conv1.Cout, L->conv1.Cin, L->conv1.k);
    TRY(bn_prepare(p, &s[1], NULL, P, err));
    CX_OP(be, err, w2, pack_bf16_grid, mid, L->norm2.C, n, h, w, s[1].scale, s[1].shift, L->conv2.k,
          mid16);
    CX_OP(be, err, w2, conv2d_grid_bf16, mid16, L->conv2.Cin, n, h, w, *wp, L->conv2.Cout,
          L->conv2.k, buf + (int64_t)L->cin * P, scr, scr_n);
    *wp += ops->bf16_weights_size(be, L->conv2.Cout, L->conv2.Cin, L->conv2.k);
    return CX_OK;
}

cx_status cx_pass_forward(cx_pass *p, const float *x, int n, float *logits, cx_err *err)
{
    const cx_model *m = p->m;
    const cx_config *cfg = &m->cfg;
    const cx_plan *pl = &p->plan;
    cx_backend *be = p->be;
    const int training = pl->training, H = pl->H, W = pl->W, Cin = cfg->in_channels;
    be->direct_conv = training; /* see cx_backend.direct_conv */
    const int C0 = m->conv0.Cout;
    float *input = p->buf[CX_B_INPUT], *stem = p->buf[CX_B_STEM], *act = p->buf[CX_B_ACT];
    float *mid = p->buf[CX_B_MID], *mids = p->buf[CX_B_MIDS], *scr = p->buf[CX_B_SCRATCH];
    float *bmean = p->buf[CX_B_BLOCK_MEAN], *bvar = p->buf[CX_B_BLOCK_VAR];
    size_t scr_n = pl->scratch_n;
    const cx_bn_slot *s = p->bn;
    const uint16_t *wp = p->buf[CX_B_W16];

    CX_OP(be, err, "the batch", nchw_to_cnhw, x, n, Cin, (int64_t)H * W, input);

    /* stem: conv0 -> norm0 -> relu -> maxpool into block 1 (in training the
     * conv0 output is kept for backward and the BN-ReLU goes to act) */
    const char *w0 = cx_pass_name(p, m->conv0.idx);
    CX_OP(be, err, w0, conv2d, input, Cin, n, H, W, cx_pass_dev(p, m->conv0.w), C0, 7, 2, 3, stem,
          scr, scr_n);
    int64_t P0 = (int64_t)n * pl->H0 * pl->W0;
    float *a0 = training ? act : stem;
    TRY(bn_prepare(p, s, stem, P0, err));
    CX_OP(be, err, cx_pass_name(p, s->bn->idx), bn_relu, stem, a0, C0, P0, s->scale, s->shift);
    s++;
    CX_OP(be, err, "features.pool0", maxpool, a0, C0, n, pl->H0, pl->W0, 3, 2, 1,
          p->buf[CX_B_BLOCK]);
    if (training)
        TRY(stats(p, "features.pool0", p->buf[CX_B_BLOCK], C0,
                  (int64_t)n * pl->Hb[0] * pl->Wb[0], bmean, bvar, err));

    for (int b = 0; b < cfg->n_blocks; b++) {
        const cx_dense_block *blk = &m->blocks[b];
        int h = pl->Hb[b], w = pl->Wb[b];
        int64_t P = (int64_t)n * h * w;
        float *buf = p->buf[CX_B_BLOCK + b];
        for (int l = 0; l < blk->n_layers; l++, s += 2) {
            const cx_dense_layer *L = &blk->layers[l];
            if (p->bf16) {
                TRY(dense_layer_bf16(p, s, L, buf, n, h, w, &wp, err));
                continue;
            }
            /* norm1 + relu over the first cin channels, conv1 1x1 -> the
             * bottleneck; norm2 + relu, conv2 3x3 -> the new channels (fused:
             * no BN-ReLU output is stored) */
            float *bott = training ? mids : mid;
            const char *w1 = cx_pass_name(p, L->conv1.idx), *w2 = cx_pass_name(p, L->conv2.idx);
            TRY(bn_prepare(p, &s[0], NULL, P, err));
            CX_OP(be, err, w1, conv1x1_bn_relu, buf, L->norm1.C, P, s[0].scale, s[0].shift,
                  cx_pass_dev(p, L->conv1.w), L->conv1.Cout, bott, act);
            TRY(bn_prepare(p, &s[1], bott, P, err));
            float *newc = buf + (int64_t)L->cin * P;
            CX_OP(be, err, w2, conv2d_bn_relu, bott, L->conv2.Cin, n, h, w, s[1].scale, s[1].shift,
                  cx_pass_dev(p, L->conv2.w), L->conv2.Cout, L->conv2.k, newc, act, scr, scr_n);
            if (training) {
                TRY(stats(p, w2, newc, L->conv2.Cout, P, bmean + L->cin, bvar + L->cin, err));
                mids += (int64_t)L->conv1.Cout * pl->batch * h * w;
            }
        }
        if (b != cfg->n_blocks - 1) {
            const cx_transition *t = &m->trans[b];
            const char *wt = cx_pass_name(p, t->conv.idx);
            float *next = p->buf[CX_B_BLOCK + b + 1];
            TRY(bn_prepare(p, s, NULL, P, err));
            if (p->bf16) {
                CX_OP(be, err, wt, pack_bf16, buf, t->norm.C, P, s->scale, s->shift,
                      (uint16_t *)p->buf[CX_B_ACT16]);
                CX_OP(be, err, wt, conv2d_bf16, p->buf[CX_B_ACT16], t->conv.Cin, n, h, w, wp,
                      t->conv.Cout, 1, mid, p->buf[CX_B_SCRATCH16], pl->scratch16_n);
                wp += be->ops->bf16_weights_size(be, t->conv.Cout, t->conv.Cin, t->conv.k);
                CX_OP(be, err, wt, avgpool, mid, t->conv.Cout, n, h, w, 2, next);
            } else {
                /* pool first. The 1x1 convolution and the 2x2 average pool
                 * are both linear, so pooling the BN-ReLU output and then
                 * convolving is the same map with a quarter of the
                 * multiply-adds. In training nothing of it is kept: backward
                 * recomputes the pooled map from the block buffer. */
                CX_OP(be, err, wt, bn_relu, buf, act, t->norm.C, P, s->scale, s->shift);
                CX_OP(be, err, wt, avgpool, act, t->norm.C, n, h, w, 2, mid);
                CX_OP(be, err, wt, conv2d, mid, t->conv.Cin, n, h / 2, w / 2,
                      cx_pass_dev(p, t->conv.w), t->conv.Cout, 1, 1, 0, next, scr, scr_n);
            }
            s++;
            if (training) {
                bmean += blk->cout;
                bvar += blk->cout;
                TRY(stats(p, wt, next, t->conv.Cout, (int64_t)n * pl->Hb[b + 1] * pl->Wb[b + 1],
                          bmean, bvar, err));
            }
        }
    }
    /* head: norm5 + relu -> features, global average pool, classifier */
    int last = cfg->n_blocks - 1, hwf = pl->Hb[last] * pl->Wb[last];
    float *feat = p->buf[CX_B_FEATURES], *pooled = p->buf[CX_B_POOLED];
    TRY(bn_prepare(p, s, NULL, (int64_t)n * hwf, err));
    CX_OP(be, err, cx_pass_name(p, s->bn->idx), bn_relu, p->buf[CX_B_BLOCK + last], feat,
          m->num_features, (int64_t)n * hwf, s->scale, s->shift);
    const char *wc = cx_pass_name(p, m->fc_idx);
    CX_OP(be, err, wc, gap, feat, m->num_features, n, hwf, pooled);
    CX_OP(be, err, wc, linear, pooled, n, m->num_features, cx_pass_dev(p, m->fc_w),
          cx_pass_dev(p, m->fc_b), cfg->num_classes, logits);
    return CX_OK;
}

/* ------------------------------------------------------------- the context */

cx_status cx_ctx_new_on(const cx_model *m, int batch, int height, int width, cx_backend *be,
                        cx_ctx **out, cx_err *err)
{
    *out = NULL;
    cx_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        cx_backend_free(be);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    cx_status st = cx_pass_new(m, batch, height, width, 0, be, &c->p, err);
    if (st) {
        free(c);
        return st;
    }
    *out = c;
    return CX_OK;
}

cx_status cx_ctx_new(const cx_model *m, int batch, int height, int width, cx_backend_id backend,
                     cx_ctx **out, cx_err *err)
{
    *out = NULL;
    cx_backend *be = NULL;
    cx_status st = cx_backend_new(backend, &be, err);
    return st ? st : cx_ctx_new_on(m, batch, height, width, be, out, err);
}

void cx_ctx_free(cx_ctx *c)
{
    if (!c)
        return;
    cx_pass_free(&c->p);
    free(c);
}

size_t cx_ctx_arena_bytes(const cx_ctx *c)
{
    return cx_plan_bytes(&c->p.plan, 0) + (c->p.arena16 ? cx_plan_bytes(&c->p.plan, 1) : 0);
}

cx_status cx_ctx_sync_weights(cx_ctx *c, cx_err *err)
{
    cx_status st = cx_pass_upload_weights(&c->p, err);
    if (!st && c->prec == CX_PRECISION_BF16)
        st = cx_ctx_set_precision(c, CX_PRECISION_BF16, err);
    return st;
}

cx_status cx_forward(cx_ctx *c, const float *input, int n, float *logits, cx_err *err)
{
    cx_pass *p = &c->p;
    if (n < 1 || n > p->plan.batch)
        return cx_seterr(err, CX_EARG, "forward of %d images with a context planned for %d", n,
                         p->plan.batch);
    const cx_config *cfg = &p->m->cfg;
    cx_backend *be = p->be;
    int K = cfg->num_classes;
    c->n = n;
    TRY(cx_be_bind(be, err));
    const void *x;
    size_t in_bytes = sizeof(float) * (size_t)n * cfg->in_channels * p->plan.H * p->plan.W;
    cx_status st = cx_be_in(be, input, p->buf[CX_B_NCHW], in_bytes, &x);
    if (st)
        return cx_be_fail(be, st, "upload", "the batch", err);
    float *out = cx_be_out(be, logits, p->buf[CX_B_OUT] ? (char *)p->buf[CX_B_OUT] + 64 : NULL);
    if ((st = cx_pass_forward(p, x, n, out, err)))
        return st;
    if ((st = cx_be_out_done(be, logits, out, sizeof(float) * (size_t)n * K)))
        return cx_be_fail(be, st, "download", "the logits", err);
    for (int i = 0; i < n * K; i++)
        if (!isfinite(logits[i]))
            return cx_seterr(err, CX_ENUMERIC,
                             "non-finite logit for image %d class %d (check the weights)", i / K,
                             i % K);
    return CX_OK;
}

cx_status cx_ctx_features(const cx_ctx *c, int i, float *dst, int *C, int *h, int *w, cx_err *err)
{
    const cx_pass *p = &c->p;
    int last = p->m->cfg.n_blocks - 1;
    int F = p->m->num_features, hh = p->plan.Hb[last], ww = p->plan.Wb[last];
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
    cx_backend *be = p->be;
    float *out = cx_be_out(be, dst, p->buf[CX_B_FEATURE_OUT]);
    TRY(cx_be_bind(be, err));
    CX_OP(be, err, "the features", cnhw_to_nchw, p->buf[CX_B_FEATURES], F, c->n, (int64_t)hh * ww,
          i, 1, out);
    cx_status st = cx_be_out_done(be, dst, out, sizeof(float) * (size_t)F * hh * ww);
    return st ? cx_be_fail(be, st, "download", "the features", err) : CX_OK;
}

/* ---------------------------------------------------------------- bf16 */

const char *cx_precision_name(cx_precision p) { return p == CX_PRECISION_BF16 ? "bf16" : "fp32"; }

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

cx_status cx_ctx_set_precision(cx_ctx *c, cx_precision prec, cx_err *err)
{
    if (prec != CX_PRECISION_F32 && prec != CX_PRECISION_BF16)
        return cx_seterr(err, CX_EARG, "unknown precision %d", (int)prec);
    cx_backend *be = c->p.be;
    c->prec = CX_PRECISION_F32;
    int bf16 = prec == CX_PRECISION_BF16 &&
               cx_precision_effective(be->entry->id, prec) == CX_PRECISION_BF16;
    TRY(cx_be_bind(be, err));
    cx_status st = cx_pass_set_bf16(&c->p, bf16, err);
    if (!st && bf16)
        c->prec = CX_PRECISION_BF16;
    return st;
}
