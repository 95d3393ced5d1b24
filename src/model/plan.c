/* The planner: every buffer of a DenseNet pass by name (model/pass.h), their
 * sizes for inference or training in one function, carved from one arena of
 * the backend's memory; and the pass's lifecycle (weights uploaded once,
 * BatchNorm slots). */
#include "model/pass.h"

#include <stdlib.h>
#include <string.h>

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }
static size_t align64(size_t bytes) { return (bytes + 63) & ~(size_t)63; }

/* The carve orders: inference's and training's own buffers first, as
 * their arenas always were; then any other (staging), the weights last. */
static const unsigned char ORDER_INFER[] = {
    CX_B_INPUT,     CX_B_STEM,      CX_B_BLOCK,     CX_B_BLOCK + 1, CX_B_BLOCK + 2, CX_B_BLOCK + 3,
    CX_B_BLOCK + 4, CX_B_BLOCK + 5, CX_B_BLOCK + 6, CX_B_BLOCK + 7, CX_B_ACT,       CX_B_MID,
    CX_B_SCRATCH,   CX_B_FEATURES,  CX_B_POOLED,    CX_B_BN_SCALE,  CX_B_BN_SHIFT};
static const unsigned char ORDER_TRAIN[] = {
    CX_B_INPUT,      CX_B_STEM,       CX_B_BLOCK,      CX_B_BLOCK + 1,  CX_B_BLOCK + 2,
    CX_B_BLOCK + 3,  CX_B_BLOCK + 4,  CX_B_BLOCK + 5,  CX_B_BLOCK + 6,  CX_B_BLOCK + 7,
    CX_B_MIDS,       CX_B_FEATURES,   CX_B_POOLED,     CX_B_OUT,        CX_B_DLOGITS,
    CX_B_LABELS,     CX_B_DBLOCK,     CX_B_DBLOCK + 1, CX_B_DBLOCK + 2, CX_B_DBLOCK + 3,
    CX_B_DBLOCK + 4, CX_B_DBLOCK + 5, CX_B_DBLOCK + 6, CX_B_DBLOCK + 7, CX_B_DPOOLED,
    CX_B_ACT,        CX_B_DACT,       CX_B_MID,        CX_B_DMID,       CX_B_SCRATCH,
    CX_B_BN_MEAN,    CX_B_BN_INVSTD,  CX_B_BN_VAR,     CX_B_BN_SCALE,   CX_B_BN_SHIFT};

static void set_order(cx_plan *p)
{
    const unsigned char *first = p->training ? ORDER_TRAIN : ORDER_INFER;
    int nfirst = p->training ? (int)sizeof ORDER_TRAIN : (int)sizeof ORDER_INFER, n = 0;
    unsigned char seen[CX_B_W16] = {0};
    for (int i = 0; i < nfirst; i++) {
        p->order[n++] = first[i];
        seen[first[i]] = 1;
    }
    for (int b = 0; b < CX_B_W16; b++)
        if (!seen[b] && b != CX_B_WEIGHTS)
            p->order[n++] = (unsigned char)b;
    p->order[n] = CX_B_WEIGHTS;
}

cx_status cx_plan_make(const cx_model *m, int batch, int height, int width, int training,
                       const cx_backend *be, cx_plan *p, cx_err *err)
{
    memset(p, 0, sizeof *p);
    if (training && (batch < 2 || batch > 4096))
        return cx_seterr(err, CX_EARG,
                         "training batch size %d out of range (2..4096: BatchNorm needs 2)", batch);
    if (batch < 1 || batch > 4096)
        return cx_seterr(err, CX_EARG, "batch size %d out of range (1..4096)", batch);
    if (height < 32 || width < 32 || height > 4096 || width > 4096)
        return cx_seterr(err, CX_EARG, "input size %dx%d out of range (32..4096)", width, height);
    const cx_config *cfg = &m->cfg;
    const cx_ops *ops = be->ops;
    const size_t f = sizeof(float), N = (size_t)batch;
    const int host = ops->host_memory, K = cfg->num_classes, Cin = cfg->in_channels;
    const int C0 = cfg->num_init_features;
    p->training = training;
    p->batch = batch;
    p->H = height;
    p->W = width;
    p->H0 = cx_out_size(height, 7, 2, 3);
    p->W0 = cx_out_size(width, 7, 2, 3);
    int h = cx_out_size(p->H0, 3, 2, 1), w = cx_out_size(p->W0, 3, 2, 1);

    size_t P0 = N * p->H0 * p->W0;
    size_t n_act = training ? C0 * P0 : 0, n_mid = 0, n_mids = 0, n_scr;
    /* the stem's 7x7/2 convolution, and in training its weight gradient */
    n_scr = ops->conv_scratch(be, Cin, batch, height, width, C0, 7, 2, 3);
    if (training)
        n_scr = max_sz(n_scr, ops->conv_bwd_scratch(be, Cin, batch, height, width, C0, 7, 2, 3));
    size_t block_ch = 0, max_cout = 0;
    for (int b = 0; b < cfg->n_blocks; b++) {
        const cx_dense_block *blk = &m->blocks[b];
        if (h < 1 || w < 1)
            return cx_seterr(err, CX_EARG, "input %dx%d too small for %d dense blocks", width,
                             height, cfg->n_blocks);
        p->Hb[b] = h;
        p->Wb[b] = w;
        size_t P = N * h * w;
        p->bytes[CX_B_BLOCK + b] = blk->cout * P * f;
        if (training)
            p->bytes[CX_B_DBLOCK + b] = blk->cout * P * f;
        block_ch += (size_t)blk->cout;
        max_cout = max_sz(max_cout, (size_t)blk->cout);
        for (int l = 0; l < blk->n_layers; l++) {
            const cx_dense_layer *L = &blk->layers[l];
            n_act = max_sz(n_act, (size_t)L->cin * P);
            n_act = max_sz(n_act, (size_t)L->conv2.Cin * P);
            n_mid = max_sz(n_mid, (size_t)L->conv1.Cout * P);
            n_mids += (size_t)L->conv1.Cout * P;
            n_scr = max_sz(
                n_scr, ops->conv_scratch(be, L->conv1.Cin, batch, h, w, L->conv1.Cout, 1, 1, 0));
            n_scr = max_sz(
                n_scr, ops->conv_scratch(be, L->conv2.Cin, batch, h, w, L->conv2.Cout, 3, 1, 1));
            if (training) {
                n_scr = max_sz(n_scr, ops->conv_bwd_scratch(be, L->conv2.Cin, batch, h, w,
                                                            L->conv2.Cout, 3, 1, 1));
                n_scr = max_sz(n_scr, ops->conv_bwd_scratch(be, L->conv1.Cin, batch, h, w,
                                                            L->conv1.Cout, 1, 1, 0));
            }
        }
        if (b != cfg->n_blocks - 1) {
            const cx_transition *t = &m->trans[b];
            /* the BN-ReLU output (ACT); the conv output before pooling
             * (bf16) or the pooled BN-ReLU output before the conv (MID);
             * the 1x1 convolution over the pooled map, and in training its
             * backward (DMID: the gradient of the pooled map) */
            size_t Pq = N * (h / 2) * (w / 2);
            n_act = max_sz(n_act, (size_t)t->norm.C * P);
            n_mid = max_sz(n_mid, (size_t)t->conv.Cout * P);
            n_mid = max_sz(n_mid, (size_t)t->conv.Cin * Pq);
            n_scr = max_sz(n_scr,
                           ops->conv_scratch(be, t->conv.Cin, batch, h, w, t->conv.Cout, 1, 1, 0));
            n_scr = max_sz(n_scr, ops->conv_scratch(be, t->conv.Cin, batch, h / 2, w / 2,
                                                    t->conv.Cout, 1, 1, 0));
            if (training)
                n_scr = max_sz(n_scr, ops->conv_bwd_scratch(be, t->conv.Cin, batch, h / 2, w / 2,
                                                            t->conv.Cout, 1, 1, 0));
            h /= 2;
            w /= 2;
        }
    }
    int last = cfg->n_blocks - 1;
    size_t F = (size_t)m->num_features, Pf = N * p->Hb[last] * p->Wb[last];
    size_t nbn = cx_model_bn_channels(m), nt = (size_t)m->n_trainable;
    if (training)
        n_mid = max_sz(n_mid, F * Pf); /* the head's gradient */
    size_t *B = p->bytes;
    B[CX_B_INPUT] = (size_t)Cin * N * height * width * f;
    B[CX_B_STEM] = C0 * P0 * f;
    B[CX_B_MIDS] = training ? n_mids * f : 0;
    B[CX_B_ACT] = n_act * f;
    B[CX_B_MID] = n_mid * f;
    B[CX_B_SCRATCH] = n_scr * f;
    p->scratch_n = n_scr;
    B[CX_B_FEATURES] = F * Pf * f;
    B[CX_B_POOLED] = N * F * f;
    B[CX_B_BN_SCALE] = B[CX_B_BN_SHIFT] = nbn * f;
    if (training || !host)
        B[CX_B_OUT] = 64 + N * K * f;
    if (!host) {
        B[CX_B_NCHW] = B[CX_B_INPUT];
        B[CX_B_FEATURE_OUT] = F * p->Hb[last] * p->Wb[last] * f;
        B[CX_B_WEIGHTS] = (size_t)m->storage_n * f;
    }
    if (training) {
        B[CX_B_DLOGITS] = N * K * f;
        if (!host)
            B[CX_B_LABELS] = N * K * f;
        B[CX_B_DPOOLED] = N * F * f;
        B[CX_B_DACT] = n_act * f;
        B[CX_B_DMID] = n_mid * f;
        B[CX_B_BN_MEAN] = B[CX_B_BN_INVSTD] = B[CX_B_BN_VAR] = nbn * f;
        B[CX_B_BLOCK_MEAN] = B[CX_B_BLOCK_VAR] = block_ch * f;
        B[CX_B_BLOCK_INVSTD] = B[CX_B_PEND_A] = B[CX_B_PEND_B] = max_cout * f;
        B[CX_B_LOSS_W] = 2 * (size_t)K * f;
        B[CX_B_GRAD] = B[CX_B_ADAM_M] = B[CX_B_ADAM_V] = nt * f;
        B[CX_B_FLAG] = sizeof(int64_t);
    }
    set_order(p);
    return CX_OK;
}

static size_t w16_bytes(const cx_backend *be, const cx_conv *cv)
{
    return be->ops->bf16_weights_size(be, cv->Cout, cv->Cin, cv->k) * sizeof(uint16_t);
}

cx_status cx_plan_bf16(const cx_model *m, const cx_backend *be, cx_plan *p, cx_err *err)
{
    const cx_ops *ops = be->ops;
    size_t n_w = 0, n_act = 0, n_mid = 0, n_scr = 0;
    int N = p->batch;
    for (int b = 0; b < m->cfg.n_blocks; b++) {
        const cx_dense_block *blk = &m->blocks[b];
        int h = p->Hb[b], w = p->Wb[b];
        int64_t P = (int64_t)N * h * w;
        for (int l = 0; l < blk->n_layers; l++) {
            const cx_dense_layer *L = &blk->layers[l];
            if (L->conv1.k != 1 || L->conv2.k % 2 != 1)
                return cx_seterr(err, CX_EARG,
                                 "bf16 needs 1x1 bottleneck and odd 'same' convolutions");
            n_w += w16_bytes(be, &L->conv1) + w16_bytes(be, &L->conv2);
            n_act = max_sz(n_act, ops->bf16_act_size(be, L->cin, P));
            n_mid = max_sz(n_mid, ops->bf16_grid_size(be, L->conv2.Cin, N, h, w, L->conv2.k));
            n_scr = max_sz(n_scr, ops->conv_grid_bf16_scratch(be, L->conv2.Cin, N, h, w,
                                                              L->conv2.Cout, L->conv2.k));
            n_scr =
                max_sz(n_scr, ops->conv_bf16_scratch(be, L->conv1.Cin, N, h, w, L->conv1.Cout, 1));
        }
        if (b != m->cfg.n_blocks - 1) {
            const cx_transition *t = &m->trans[b];
            n_w += w16_bytes(be, &t->conv);
            n_act = max_sz(n_act, ops->bf16_act_size(be, t->conv.Cin, P));
        }
    }
    p->bytes[CX_B_W16] = n_w;
    p->bytes[CX_B_ACT16] = n_act * sizeof(uint16_t);
    p->bytes[CX_B_MID16] = n_mid * sizeof(uint16_t);
    p->bytes[CX_B_SCRATCH16] = n_scr * sizeof(float);
    p->scratch16_n = n_scr;
    return CX_OK;
}

size_t cx_plan_bytes(const cx_plan *p, int bf16)
{
    size_t total = 0;
    for (int i = bf16 ? CX_B_W16 : 0; i < (bf16 ? CX_B_COUNT : CX_B_W16); i++)
        total += align64(p->bytes[i]);
    return total;
}

size_t cx_plan_offset(const cx_plan *p, int buf)
{
    size_t off = 0;
    for (int i = 0; i < CX_B_W16 && p->order[i] != buf; i++)
        off += align64(p->bytes[p->order[i]]);
    return off;
}

void cx_plan_carve(const cx_plan *p, int bf16, void *base, void **views)
{
    char *q = base;
    for (int i = bf16 ? CX_B_W16 : 0; i < (bf16 ? CX_B_COUNT : CX_B_W16); i++) {
        int b = bf16 ? i : p->order[i];
        views[b] = p->bytes[b] ? q : NULL;
        q += align64(p->bytes[b]);
    }
}

/* ---- the pass's memory ---- */

/* Every BN in model order, with its slices of the planned statistics. */
static cx_status make_bn_slots(cx_pass *p, cx_err *err)
{
    const cx_model *m = p->m;
    int n = 2 + (m->cfg.n_blocks - 1);
    for (int b = 0; b < m->cfg.n_blocks; b++)
        n += 2 * m->blocks[b].n_layers;
    p->bn = calloc((size_t)n, sizeof *p->bn);
    if (!p->bn)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    p->n_bn = n;
    int training = p->plan.training, i = 0;
    size_t off = 0, boff = 0;
    float *blk_mean = p->buf[CX_B_BLOCK_MEAN], *blk_var = p->buf[CX_B_BLOCK_VAR];
#define SLOT(bnp, own_stats)                                                                       \
    do {                                                                                           \
        cx_bn_slot *s = &p->bn[i++];                                                               \
        const cx_bn *bn_ = (bnp);                                                                  \
        s->bn = bn_;                                                                               \
        s->weight = cx_pass_dev(p, bn_->weight);                                                   \
        s->bias = cx_pass_dev(p, bn_->bias);                                                       \
        s->run_mean = cx_pass_dev(p, bn_->mean);                                                   \
        s->run_var = cx_pass_dev(p, bn_->var);                                                     \
        s->scale = (float *)p->buf[CX_B_BN_SCALE] + off;                                           \
        s->shift = (float *)p->buf[CX_B_BN_SHIFT] + off;                                           \
        if (training) {                                                                            \
            s->invstd = (float *)p->buf[CX_B_BN_INVSTD] + off;                                     \
            s->mean = (own_stats) ? (float *)p->buf[CX_B_BN_MEAN] + off : blk_mean + boff;         \
            s->var = (own_stats) ? (float *)p->buf[CX_B_BN_VAR] + off : blk_var + boff;            \
        }                                                                                          \
        off += (size_t)bn_->C;                                                                     \
    } while (0)
    SLOT(&m->norm0, 1);
    for (int b = 0; b < m->cfg.n_blocks; b++) {
        for (int l = 0; l < m->blocks[b].n_layers; l++) {
            SLOT(&m->blocks[b].layers[l].norm1, 0);
            SLOT(&m->blocks[b].layers[l].norm2, 1);
        }
        if (b != m->cfg.n_blocks - 1)
            SLOT(&m->trans[b].norm, 0);
        if (b != m->cfg.n_blocks - 1)
            boff += (size_t)m->blocks[b].cout;
    }
    SLOT(&m->norm5, 0);
#undef SLOT
    return CX_OK;
}

void cx_pass_free(cx_pass *p)
{
    if (!p->be)
        return;
    if (p->arena16)
        p->be->ops->free(p->be, p->arena16);
    if (p->arena)
        p->be->ops->free(p->be, p->arena);
    free(p->bn);
    cx_backend_free(p->be);
    memset(p, 0, sizeof *p);
}

cx_status cx_pass_upload_weights(cx_pass *p, cx_err *err)
{
    const void *w;
    size_t bytes = (size_t)p->m->storage_n * sizeof(float);
    cx_status st = cx_be_in(p->be, p->m->storage, p->buf[CX_B_WEIGHTS], bytes, &w);
    if (st)
        return cx_be_fail(p->be, st, "upload", "the model's weights", err);
    p->w = (float *)w;
    return CX_OK;
}

cx_status cx_pass_download_weights(cx_pass *p, cx_err *err)
{
    cx_status st =
        cx_be_out_done(p->be, p->m->storage, p->w, (size_t)p->m->storage_n * sizeof(float));
    return st ? cx_be_fail(p->be, st, "download", "the model's weights", err) : CX_OK;
}

cx_status cx_pass_new(const cx_model *m, int batch, int height, int width, int training,
                      cx_backend *be, cx_pass *p, cx_err *err)
{
    memset(p, 0, sizeof *p);
    p->m = m;
    p->be = be;
    cx_status st = cx_plan_make(m, batch, height, width, training, be, &p->plan, err);
    if (!st) {
        size_t bytes = cx_plan_bytes(&p->plan, 0);
        st = be->ops->alloc(be, bytes, &p->arena);
        if (st) {
            st = cx_seterr(err, st, "out of memory planning %.1f MiB %s(backend %s)",
                           bytes / 1048576.0, training ? "for training " : "of activations ",
                           be->entry->name);
            p->arena = NULL;
        }
    }
    if (!st) {
        cx_plan_carve(&p->plan, 0, p->arena, p->buf);
        st = cx_pass_upload_weights(p, err);
    }
    if (!st)
        st = make_bn_slots(p, err);
    if (st)
        cx_pass_free(p);
    return st;
}

cx_status cx_pass_set_bf16(cx_pass *p, int on, cx_err *err)
{
    cx_backend *be = p->be;
    if (p->arena16)
        be->ops->free(be, p->arena16);
    p->arena16 = NULL;
    p->bf16 = 0;
    for (int i = CX_B_W16; i < CX_B_COUNT; i++) {
        p->plan.bytes[i] = 0;
        p->buf[i] = NULL;
    }
    p->plan.scratch16_n = 0;
    if (!on)
        return CX_OK;
    const cx_model *m = p->m;
    cx_status st = cx_plan_bf16(m, be, &p->plan, err);
    if (st)
        return st;
    size_t bytes = cx_plan_bytes(&p->plan, 1);
    if (be->ops->alloc(be, bytes, &p->arena16)) {
        p->arena16 = NULL;
        return cx_seterr(err, CX_ENOMEM, "out of memory planning %.1f MiB for bf16",
                         bytes / 1048576.0);
    }
    cx_plan_carve(&p->plan, 1, p->arena16, p->buf);
    /* the block and transition convolutions' weights, packed in forward order */
    uint16_t *wp = p->buf[CX_B_W16];
    for (int b = 0; b < m->cfg.n_blocks; b++) {
        const cx_conv *cvs[3] = {NULL, NULL, NULL};
        for (int l = 0; l <= m->blocks[b].n_layers; l++) {
            int n = 0;
            if (l < m->blocks[b].n_layers) {
                cvs[n++] = &m->blocks[b].layers[l].conv1;
                cvs[n++] = &m->blocks[b].layers[l].conv2;
            } else if (b != m->cfg.n_blocks - 1) {
                cvs[n++] = &m->trans[b].conv;
            }
            for (int j = 0; j < n; j++) {
                const cx_conv *cv = cvs[j];
                st = be->ops->pack_bf16_weights(be, cx_pass_dev(p, cv->w), cv->Cout, cv->Cin, cv->k,
                                                wp);
                if (st)
                    return cx_be_fail(be, st, "pack_bf16_weights", cx_pass_name(p, cv->idx), err);
                wp += be->ops->bf16_weights_size(be, cv->Cout, cv->Cin, cv->k);
            }
        }
    }
    p->bf16 = 1;
    return CX_OK;
}
