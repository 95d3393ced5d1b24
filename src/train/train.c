/* A training step: the forward pass in training mode (model/pass.h), the
 * loss and its gradient, the running statistics, the backward pass, and
 * Adam: sequences of backend ops with one upload of the batch and one
 * download of the loss and logits (and one of the finite check's flag). */
#include "kernels/ref/ref.h"
#include "model/pass.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cx_train {
    cx_pass p;
    cx_train_opts opt;
    int n; /* images in the last step */
    int64_t adam_steps;
    const double *loss; /* the last step's loss and logits, on the host */
    const float *logits;
    void *out_host; /* their host copy (a backend with its own memory) */
    float *wbase;       /* the loss weights as set: wpos [K], wneg [K] */
    double loss_scale;  /* the factor they were uploaded with */
    /* data-parallel training */
    const cx_comm *comm;
    int overlap;
    int64_t bucket;     /* floats per gradient bucket */
    int64_t pending_hi; /* gradients [0, pending_hi) not yet sent */
    int sent;           /* sums started since the last wait */
    cx_pass_dist dist;
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
    double loss = 0.0;
    (void)cx_ref_bce_loss(NULL, logits, labels, n, K, wpos, wneg, &loss, dlogits);
    return loss;
}

cx_status cx_train_new_on(cx_model *m, int batch, int height, int width, cx_backend *be,
                          const cx_train_opts *opts, cx_train **out, cx_err *err)
{
    *out = NULL;
    cx_train *t = calloc(1, sizeof *t);
    if (!t) {
        cx_backend_free(be);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    if (opts)
        t->opt = *opts;
    else
        cx_train_opts_default(&t->opt);
    cx_status st = cx_pass_new(m, batch, height, width, 1, be, &t->p, err);
    if (st) {
        free(t);
        return st;
    }
    cx_pass *p = &t->p;
    size_t out_bytes = p->plan.bytes[CX_B_OUT];
    t->out_host = be->ops->host_memory ? p->buf[CX_B_OUT] : malloc(out_bytes);
    if (!t->out_host) {
        cx_train_free(t);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    t->loss = t->out_host;
    t->logits = (const float *)((const char *)t->out_host + 64);
    /* the planned state starts at zero (gradients, Adam's moments: every
     * buffer but the weights, the arena's last); unit loss weights */
    st = cx_be_bind(be, err);
    if (!st && (st = be->ops->zero(be, p->arena, cx_plan_offset(&p->plan, CX_B_WEIGHTS))))
        st = cx_be_fail(be, st, "zero", "the training state", err);
    if (!st)
        st = cx_train_set_loss_weights(t, NULL, NULL, err);
    if (st) {
        cx_train_free(t);
        return st;
    }
    if (!be->ops->host_memory)
        memset(t->out_host, 0, out_bytes);
    *out = t;
    return CX_OK;
}

cx_status cx_train_new(cx_model *m, int batch, int height, int width, cx_backend_id backend,
                       const cx_train_opts *opts, cx_train **out, cx_err *err)
{
    *out = NULL;
    cx_backend *be = NULL;
    cx_status st = cx_backend_new(backend, &be, err);
    return st ? st : cx_train_new_on(m, batch, height, width, be, opts, out, err);
}

void cx_train_free(cx_train *t)
{
    if (!t)
        return;
    if (t->dist.dev_a)
        t->p.be->ops->free(t->p.be, t->dist.dev_a);
    if (t->dist.dev_b)
        t->p.be->ops->free(t->p.be, t->dist.dev_b);
    free(t->dist.host);
    free(t->dist.host_f);
    free(t->wbase);
    if (t->p.be && !t->p.be->ops->host_memory)
        free(t->out_host);
    cx_pass_free(&t->p);
    free(t);
}

size_t cx_train_arena_bytes(const cx_train *t) { return cx_plan_bytes(&t->p.plan, 0); }

/* The loss weights times `scale` go up (a rank's share of the global
 * batch's mean: its loss and gradients then add up over the ranks). */
static cx_status upload_loss_weights(cx_train *t, double scale, cx_err *err)
{
    int K = t->p.m->cfg.num_classes;
    float *w = malloc(sizeof(float) * 2 * (size_t)K);
    if (!w)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    for (int k = 0; k < 2 * K; k++)
        w[k] = scale == 1.0 ? t->wbase[k] : (float)(t->wbase[k] * scale);
    cx_backend *be = t->p.be;
    cx_status st = be->ops->upload(be, t->p.buf[CX_B_LOSS_W], w, sizeof(float) * 2 * (size_t)K);
    free(w);
    if (st)
        return cx_be_fail(be, st, "upload", "the loss weights", err);
    t->loss_scale = scale;
    return CX_OK;
}

cx_status cx_train_set_loss_weights(cx_train *t, const float *wpos, const float *wneg, cx_err *err)
{
    int K = t->p.m->cfg.num_classes;
    if (!t->wbase && !(t->wbase = malloc(sizeof(float) * 2 * (size_t)K)))
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    for (int k = 0; k < K; k++) {
        float a = wpos ? wpos[k] : 1.0f, b = wneg ? wneg[k] : 1.0f;
        if (!isfinite(a) || !isfinite(b) || a < 0 || b < 0)
            return cx_seterr(err, CX_EARG, "loss weights of class %d must be finite and >= 0", k);
    }
    for (int k = 0; k < K; k++) {
        t->wbase[k] = wpos ? wpos[k] : 1.0f;
        t->wbase[K + k] = wneg ? wneg[k] : 1.0f;
    }
    return upload_loss_weights(t, 1.0, err);
}

/* ---- data-parallel training ---- */

static cx_status dist_sum(void *user, double *v, size_t n, cx_err *err)
{
    const cx_comm *c = ((cx_train *)user)->comm;
    return c->allreduce_f64(c->user, v, n, err);
}

/* Starts the sum of gradients [lo, hi). */
static cx_status send_grads(cx_train *t, int64_t lo, int64_t hi, cx_err *err)
{
    const cx_comm *c = t->comm;
    t->sent++;
    return c->iallreduce_f32(c->user, (float *)t->p.buf[CX_B_GRAD] + lo, (size_t)(hi - lo), err);
}

/* The backward pass has finished gradients [lo, n_trainable): with overlap
 * a bucket starts once bucket floats are ready (the ready range as one
 * message); otherwise started sums are only moved along. */
static cx_status dist_grads_done(void *user, int64_t lo, cx_err *err)
{
    cx_train *t = user;
    if (t->overlap && lo < t->pending_hi && t->pending_hi - lo >= t->bucket) {
        cx_status st = send_grads(t, lo, t->pending_hi, err);
        t->pending_hi = lo;
        return st;
    }
    return t->sent ? t->comm->progress(t->comm->user, err) : CX_OK;
}

/* After the backward pass: what is left goes (without overlap: all of it,
 * in buckets). */
static cx_status flush_grads(cx_train *t, cx_err *err)
{
    cx_status st = CX_OK;
    while (!st && t->pending_hi > 0) {
        int64_t lo = t->overlap || t->pending_hi <= t->bucket ? 0 : t->pending_hi - t->bucket;
        st = send_grads(t, lo, t->pending_hi, err);
        t->pending_hi = lo;
    }
    return st;
}

static cx_status wait_grads(cx_train *t, cx_err *err)
{
    if (!t->sent)
        return CX_OK;
    t->sent = 0;
    return t->comm->wait_all(t->comm->user, err);
}

cx_status cx_train_set_comm(cx_train *t, const cx_comm *comm, int sync_bn, int overlap,
                            size_t bucket_bytes, cx_err *err)
{
    cx_pass *p = &t->p;
    if (!comm) {
        p->dist = NULL;
        t->comm = NULL;
        return CX_OK;
    }
    if (!p->be->ops->host_memory)
        return cx_seterr(err, CX_EARG,
                         "training over several ranks needs a backend that computes in host "
                         "memory (ref or cpu)");
    int C = cx_pass_max_channels(p);
    if (!t->dist.host) {
        t->dist.host = malloc(sizeof(double) * (2 * (size_t)C + 1));
        t->dist.host_f = malloc(sizeof(float) * 4 * (size_t)C);
        if (!t->dist.host || !t->dist.host_f)
            return cx_seterr(err, CX_ENOMEM, "out of memory");
        cx_status st = p->be->ops->alloc(p->be, sizeof(float) * (size_t)C, (void **)&t->dist.dev_a);
        if (!st)
            st = p->be->ops->alloc(p->be, sizeof(float) * (size_t)C, (void **)&t->dist.dev_b);
        if (st)
            return cx_be_fail(p->be, st, "alloc", "the BatchNorm sums", err);
    }
    t->comm = comm;
    t->overlap = overlap;
    t->bucket = (int64_t)((bucket_bytes ? bucket_bytes : (size_t)4 << 20) / sizeof(float));
    if (t->bucket < 1)
        t->bucket = 1;
    t->dist.sync_bn = sync_bn;
    t->dist.user = t;
    t->dist.sum = dist_sum;
    t->dist.grads_done = dist_grads_done;
    p->dist = &t->dist;
    return CX_OK;
}

const float *cx_train_logits(const cx_train *t) { return t->logits; }

static int trainable(const cx_train *t, int i)
{
    return i >= 0 && i < t->p.m->n_tensors && t->p.m->tensors[i].trainable;
}

float *cx_train_grad(cx_train *t, int i)
{
    return trainable(t, i) ? (float *)t->p.buf[CX_B_GRAD] + cx_param_offset(t->p.m, i) : NULL;
}

float *cx_adam_m(cx_train *t, int i)
{
    return trainable(t, i) ? (float *)t->p.buf[CX_B_ADAM_M] + cx_param_offset(t->p.m, i) : NULL;
}

float *cx_adam_v(cx_train *t, int i)
{
    return trainable(t, i) ? (float *)t->p.buf[CX_B_ADAM_V] + cx_param_offset(t->p.m, i) : NULL;
}

int64_t cx_adam_steps(const cx_train *t) { return t->adam_steps; }
void cx_adam_set_steps(cx_train *t, int64_t steps) { t->adam_steps = steps; }

cx_status cx_train_sync_model(cx_train *t, cx_err *err)
{
    return cx_pass_download_weights(&t->p, err);
}

cx_status cx_train_reload_model(cx_train *t, cx_err *err)
{
    return cx_pass_upload_weights(&t->p, err);
}

/* The running statistics of every BN from the step's batch statistics,
 * unless the loss is not finite (a device-side gate: nothing is read back). */
static cx_status commit_bn(cx_train *t, int i, int64_t P, const double *loss, cx_err *err)
{
    const cx_bn_slot *s = &t->p.bn[i];
    CX_OP(t->p.be, err, cx_pass_name(&t->p, s->bn->idx), bn_running_update, s->bn->C, P,
          t->opt.bn_momentum, s->mean, s->var, s->run_mean, s->run_var, loss);
    return CX_OK;
}

/* n: the images the batch statistics are over (all ranks' with sync-BN) */
static cx_status commit_running(cx_train *t, int n, const double *loss, cx_err *err)
{
    const cx_model *m = t->p.m;
    const cx_plan *pl = &t->p.plan;
    int i = 0, last = m->cfg.n_blocks - 1;
    cx_status st = commit_bn(t, i++, (int64_t)n * pl->H0 * pl->W0, loss, err);
    for (int b = 0; b <= last && !st; b++) {
        int64_t P = (int64_t)n * pl->Hb[b] * pl->Wb[b];
        int count = 2 * m->blocks[b].n_layers + (b != last); /* norm1, norm2 ..., transition */
        for (int j = 0; j < count && !st; j++)
            st = commit_bn(t, i++, P, loss, err);
    }
    return st ? st : commit_bn(t, i, (int64_t)n * pl->Hb[last] * pl->Wb[last], loss, err);
}

cx_status cx_train_step(cx_train *t, const float *input, const float *labels, int n,
                        double *loss_out, cx_err *err)
{
    return cx_train_step_global(t, input, labels, n, n, loss_out, err);
}

cx_status cx_train_step_global(cx_train *t, const float *input, const float *labels, int n,
                               int n_global, double *loss_out, cx_err *err)
{
    cx_pass *p = &t->p;
    int sync_bn = t->comm && t->dist.sync_bn;
    if (!t->comm)
        n_global = n;
    if (n < (sync_bn ? 1 : 2) || n > p->plan.batch || n_global < 2)
        return cx_seterr(err, CX_EARG,
                         "training step on %d images (context planned for %d..%d, BatchNorm "
                         "needs 2 in its batch)",
                         n, sync_bn ? 1 : 2, p->plan.batch);
    const cx_config *cfg = &p->m->cfg;
    cx_backend *be = p->be;
    int K = cfg->num_classes;
    t->n = n;
    for (int i = 0; i < n * K; i++) {
        float y = labels[i];
        if (!(y >= 0.0f && y <= 1.0f))
            return cx_seterr(err, CX_EARG, "label of image %d class %d is %g, not in [0, 1]", i / K,
                             i % K, y);
    }
    cx_status st = cx_be_bind(be, err);
    if (st)
        return st;
    if (t->comm) {
        /* this rank's share of the global batch's mean loss */
        double scale = (double)n / n_global;
        if (scale != t->loss_scale && (st = upload_loss_weights(t, scale, err)))
            return st;
        t->pending_hi = p->m->n_trainable;
    }
    /* the batch and its labels go up */
    const void *x, *y;
    size_t in_bytes = sizeof(float) * (size_t)n * cfg->in_channels * p->plan.H * p->plan.W;
    if ((st = cx_be_in(be, input, p->buf[CX_B_NCHW], in_bytes, &x)) ||
        (st = cx_be_in(be, labels, p->buf[CX_B_LABELS], sizeof(float) * (size_t)n * K, &y)))
        return cx_be_fail(be, st, "upload", "the batch", err);
    double *loss = p->buf[CX_B_OUT];
    float *logits = (float *)((char *)p->buf[CX_B_OUT] + 64);
    const float *lw = p->buf[CX_B_LOSS_W];
    if ((st = cx_pass_forward(p, x, n, logits, err)))
        return st;
    CX_OP(be, err, "the loss", bce_loss, logits, y, n, K, lw, lw + K, loss, p->buf[CX_B_DLOGITS]);
    if ((st = commit_running(t, sync_bn ? n_global : n, loss, err)) ||
        (st = cx_pass_backward(p, n, err)))
        return st;
    if (t->comm && (st = flush_grads(t, err)))
        return st;
    /* the loss and logits come down */
    if ((st = cx_be_out_done(be, t->out_host, p->buf[CX_B_OUT], 64 + sizeof(float) * n * K)))
        return cx_be_fail(be, st, "download", "the loss", err);
    double total = *t->loss;
    if (t->comm) { /* the global batch's loss: every rank decides alike */
        if ((st = t->comm->allreduce_f64(t->comm->user, &total, 1, err)))
            return st;
    }
    *loss_out = total;
    if (!isfinite(total)) {
        if (t->comm && (st = wait_grads(t, err)))
            return st;
        return cx_seterr(err, CX_ENUMERIC,
                         "loss is %g (non-finite): stopping before any weight or running "
                         "statistic changes",
                         total);
    }
    return CX_OK;
}

/* ---- Adam ---- */

cx_status cx_adam_step(cx_train *t, float lr, cx_err *err)
{
    if (!(lr >= 0) || !isfinite(lr))
        return cx_seterr(err, CX_EARG, "learning rate %g is not a finite number >= 0", lr);
    cx_pass *p = &t->p;
    const cx_model *m = p->m;
    cx_backend *be = p->be;
    cx_status st = cx_be_bind(be, err);
    if (st)
        return st;
    /* non-finite gradients are refused: the check gates the update on the
     * backend, and its flag comes down once */
    const double b1 = t->opt.beta1, b2 = t->opt.beta2;
    const double bc1 = 1.0 - pow(b1, (double)(t->adam_steps + 1));
    const double bc2 = 1.0 - pow(b2, (double)(t->adam_steps + 1));
    cx_adam_hyper h = {(float)(lr / bc1), (float)sqrt(bc2), t->opt.beta1,
                       t->opt.beta2,      t->opt.eps,       t->opt.weight_decay};
    int64_t nt = m->n_trainable, *flag = p->buf[CX_B_FLAG], bad;
    float *g = p->buf[CX_B_GRAD];
    if (t->comm && (st = wait_grads(t, err))) /* the gradients summed over the ranks */
        return st;
    CX_OP(be, err, "the gradients", find_nonfinite, g, nt, flag);
    CX_OP(be, err, "the parameters", adam, p->w, g, p->buf[CX_B_ADAM_M], p->buf[CX_B_ADAM_V], nt,
          &h, flag);
    if ((st = be->ops->download(be, &bad, flag, sizeof bad)))
        return cx_be_fail(be, st, "download", "the finite check", err);
    if (bad >= 0) {
        for (int i = 0; i < m->n_tensors; i++) {
            const cx_param *q = &m->tensors[i];
            int64_t off = cx_param_offset(m, i);
            if (q->trainable && bad >= off && bad < off + q->numel)
                return cx_seterr(err, CX_ENUMERIC, "non-finite gradient in tensor '%s'", q->name);
        }
        return cx_seterr(err, CX_ENUMERIC, "non-finite gradient");
    }
    t->adam_steps++;
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
