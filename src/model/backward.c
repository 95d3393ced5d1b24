/* The training backward of a DenseNet (model/pass.h): from the loss's
 * gradient at the logits to every parameter gradient, as a sequence of
 * backend ops over the buffers the training forward kept. */
#include "model/pass.h"

#define TRY(call)                                                                                  \
    do {                                                                                           \
        cx_status st_ = (call);                                                                    \
        if (st_ != CX_OK)                                                                          \
            return st_;                                                                            \
    } while (0)

/* Backward of slot s's BN + ReLU (batch statistics) from dy at its output:
 * dx overwritten, its weight and bias gradients added to. */
static cx_status bn_backward(cx_pass *p, const cx_bn_slot *s, const float *x, const float *dy,
                             float *dx, int64_t P, cx_err *err)
{
    const cx_bn *bn = s->bn;
    CX_OP(p->be, err, cx_pass_name(p, bn->idx), bn_relu_backward, x, dy, bn->C, P, s->weight,
          s->bias, s->mean, s->invstd, cx_pass_grad(p, bn->weight), cx_pass_grad(p, bn->bias), dx,
          0);
    if (p->dist && p->dist->sync_bn)
        return cx_pass_sync_bn_backward(p, s, x, P, dx, err);
    return CX_OK;
}

/* Tells the trainer that the gradients from `first` (a tensor's host data,
 * the lowest of those just finished) to the end are final. */
static cx_status grads_done(cx_pass *p, const float *first, cx_err *err)
{
    if (!p->dist || !p->dist->grads_done)
        return CX_OK;
    return p->dist->grads_done(p->dist->user, first - p->m->storage, err);
}

static const float *lowest(const float *a, const float *b) { return a < b ? a : b; }

cx_status cx_pass_backward(cx_pass *p, int n, cx_err *err)
{
    const cx_model *m = p->m;
    const cx_config *cfg = &m->cfg;
    const cx_plan *pl = &p->plan;
    cx_backend *be = p->be;
    const int F = m->num_features, K = cfg->num_classes, C0 = m->conv0.Cout;
    float *act = p->buf[CX_B_ACT], *dact = p->buf[CX_B_DACT], *mid = p->buf[CX_B_MID];
    float *dmid = p->buf[CX_B_DMID], *scr = p->buf[CX_B_SCRATCH];
    float *bvar = p->buf[CX_B_BLOCK_VAR], *is = p->buf[CX_B_BLOCK_INVSTD];
    float *pa = p->buf[CX_B_PEND_A], *pb = p->buf[CX_B_PEND_B];
    size_t scr_n = pl->scratch_n;

    /* where each block's slots, statistics and bottleneck outputs start */
    int slot0[CX_MAX_BLOCKS];
    size_t var0[CX_MAX_BLOCKS], mids0[CX_MAX_BLOCKS];
    int si = 1;
    size_t vo = 0, mo = 0;
    for (int b = 0; b < cfg->n_blocks; b++) {
        slot0[b] = si;
        var0[b] = vo;
        mids0[b] = mo;
        si += 2 * m->blocks[b].n_layers + 1;
        vo += (size_t)m->blocks[b].cout;
        for (int l = 0; l < m->blocks[b].n_layers; l++)
            mo += (size_t)m->blocks[b].layers[l].conv1.Cout * pl->batch * pl->Hb[b] * pl->Wb[b];
    }

    CX_OP(be, err, "the gradients", zero, p->buf[CX_B_GRAD],
          (size_t)m->n_trainable * sizeof(float));
    /* head: classifier, global average pool, norm5 + ReLU */
    int last = cfg->n_blocks - 1, hwf = pl->Hb[last] * pl->Wb[last];
    int64_t Pf = (int64_t)n * hwf;
    const char *wc = cx_pass_name(p, m->fc_idx);
    CX_OP(be, err, wc, linear_backward, p->buf[CX_B_POOLED], n, F, cx_pass_dev(p, m->fc_w), K,
          p->buf[CX_B_DLOGITS], cx_pass_grad(p, m->fc_w), cx_pass_grad(p, m->fc_b),
          p->buf[CX_B_DPOOLED]);
    CX_OP(be, err, wc, gap_backward, p->buf[CX_B_DPOOLED], F, n, hwf, dmid);
    TRY(bn_backward(p, &p->bn[p->n_bn - 1], p->buf[CX_B_BLOCK + last], dmid,
                    p->buf[CX_B_DBLOCK + last], Pf, err));
    TRY(grads_done(p, lowest(lowest(m->fc_w, m->fc_b), p->bn[p->n_bn - 1].bn->weight), err));

    for (int b = last; b >= 0; b--) {
        const cx_dense_block *blk = &m->blocks[b];
        int h = pl->Hb[b], w = pl->Wb[b];
        int64_t P = (int64_t)n * h * w;
        float *buf = p->buf[CX_B_BLOCK + b], *dbuf = p->buf[CX_B_DBLOCK + b];
        /* Every layer's norm1 reads the block's channels with the same batch
         * statistics: its BN backward adds scale * d now and leaves the terms
         * that need the whole batch in pa/pb, added to a channel's gradient
         * once its last reader (the layer that wrote it) is reached. */
        const float *mean = p->bn[slot0[b]].mean;
        const char *wb = cx_pass_name(p, blk->layers[0].norm1.idx);
        CX_OP(be, err, wb, bn_fold, blk->cout, NULL, NULL, NULL, bvar + var0[b], CX_BN_EPS, NULL,
              NULL, is);
        CX_OP(be, err, wb, zero, pa, sizeof(float) * (size_t)blk->cout);
        CX_OP(be, err, wb, zero, pb, sizeof(float) * (size_t)blk->cout);
        for (int l = blk->n_layers - 1; l >= 0; l--) {
            const cx_dense_layer *L = &blk->layers[l];
            const cx_bn_slot *s1 = &p->bn[slot0[b] + 2 * l], *s2 = s1 + 1;
            float *bott = (float *)p->buf[CX_B_MIDS] + mids0[b] +
                          (size_t)l * L->conv1.Cout * pl->batch * h * w;
            int cin = L->cin, cnew = L->conv2.Cout;
            float *dnew = dbuf + (int64_t)cin * P;
            const char *w1 = cx_pass_name(p, L->conv1.idx), *w2 = cx_pass_name(p, L->conv2.idx);
            if (l != blk->n_layers - 1) /* layers l+1.. read these channels */
                CX_OP(be, err, w2, bn_backward_finish, buf + (int64_t)cin * P, cnew, P, mean + cin,
                      is + cin, pa + cin, pb + cin, dnew);
            /* conv2: input relu(norm2(bottleneck)) recomputed inside the GEMM */
            CX_OP(be, err, w2, conv2d_bn_relu_backward, bott, L->conv2.Cin, n, h, w, s2->scale,
                  s2->shift, cx_pass_dev(p, L->conv2.w), cnew, L->conv2.k, dnew,
                  cx_pass_grad(p, L->conv2.w), dmid, mid, scr, scr_n);
            TRY(bn_backward(p, s2, bott, dmid, dmid, P, err));
            /* conv1: input relu(norm1(concat)) recomputed inside the GEMMs,
             * its BN's backward deferred */
            float *dg = cx_pass_grad(p, L->norm1.weight), *db = cx_pass_grad(p, L->norm1.bias);
            CX_OP(be, err, w1, conv1x1_bn_relu_backward_deferred, buf, cin, P, s1->scale, s1->shift,
                  s1->mean, s1->invstd, cx_pass_dev(p, L->conv1.w), L->conv1.Cout, dmid,
                  cx_pass_grad(p, L->conv1.w), dg, db, dbuf, act);
            if (p->dist && p->dist->sync_bn)
                TRY(cx_pass_sync_deferred_terms(p, s1, cin, P, pa, pb, err));
            else
                CX_OP(be, err, w1, bn_deferred_terms, cin, P, s1->scale, dg, db, pa, pb);
            TRY(grads_done(p,
                           lowest(lowest(L->norm1.weight, L->norm1.bias),
                                  lowest(lowest(L->conv1.w, L->conv2.w),
                                         lowest(L->norm2.weight, L->norm2.bias))),
                           err));
        }
        CX_OP(be, err, wb, bn_backward_finish, buf, blk->cin, P, mean, is, pa, pb, dbuf);
        if (b > 0) { /* the transition before this block */
            const cx_transition *tr = &m->trans[b - 1];
            const cx_bn_slot *st = &p->bn[slot0[b] - 1];
            int hp = pl->Hb[b - 1], wp = pl->Wb[b - 1];
            int64_t Pp = (int64_t)n * hp * wp;
            float *prev = p->buf[CX_B_BLOCK + b - 1];
            const char *wt = cx_pass_name(p, tr->conv.idx);
            /* forward pooled first: y = conv1x1(u), u = avgpool(a), a =
             * relu(norm(prev)). u is recomputed (into mid); du = w^T dy
             * (into dmid) and dw += dy u^T at a quarter of the positions,
             * then the pool's backward spreads du over a's positions. */
            CX_OP(be, err, wt, bn_relu, prev, act, tr->norm.C, Pp, st->scale, st->shift);
            CX_OP(be, err, wt, avgpool, act, tr->norm.C, n, hp, wp, 2, mid);
            CX_OP(be, err, wt, conv2d_backward, mid, tr->conv.Cin, n, hp / 2, wp / 2,
                  cx_pass_dev(p, tr->conv.w), tr->conv.Cout, 1, 1, 0, dbuf,
                  cx_pass_grad(p, tr->conv.w), dmid, 0, scr, scr_n);
            CX_OP(be, err, wt, avgpool_backward, dmid, tr->norm.C, n, hp, wp, 2, dact);
            TRY(bn_backward(p, st, prev, dact, p->buf[CX_B_DBLOCK + b - 1], Pp, err));
            TRY(grads_done(p, lowest(lowest(tr->norm.weight, tr->norm.bias), tr->conv.w), err));
        }
    }
    /* stem: the max-pool's input relu(norm0(conv0)) recomputed */
    const cx_bn_slot *s0 = &p->bn[0];
    int64_t P0 = (int64_t)n * pl->H0 * pl->W0;
    float *stem = p->buf[CX_B_STEM];
    CX_OP(be, err, cx_pass_name(p, m->norm0.idx), bn_relu, stem, act, C0, P0, s0->scale, s0->shift);
    CX_OP(be, err, "features.pool0", maxpool_backward, act, C0, n, pl->H0, pl->W0, 3, 2, 1,
          p->buf[CX_B_DBLOCK], dact);
    TRY(bn_backward(p, s0, stem, dact, dact, P0, err));
    CX_OP(be, err, cx_pass_name(p, m->conv0.idx), conv2d_backward, p->buf[CX_B_INPUT],
          cfg->in_channels, n, pl->H, pl->W, cx_pass_dev(p, m->conv0.w), C0, 7, 2, 3, dact,
          cx_pass_grad(p, m->conv0.w), NULL, 0, scr, scr_n);
    return grads_done(p, lowest(m->conv0.w, lowest(m->norm0.weight, m->norm0.bias)), err);
}
