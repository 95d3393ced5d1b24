/* The training loop: epochs, validation, plateau schedule, best model,
 * atomic checkpoints with exact resume, JSONL log.
 *
 * Checkpoint OUT/last.safetensors = the model (torchvision names) plus
 * "optimizer.adam.m.<name>" / "optimizer.adam.v.<name>" tensors and
 * "chexnet.train.*" metadata (epoch, next batch, Adam steps, lr, plateau
 * state, best validation loss, the epoch's running loss sums). One file
 * written atomically, so a killed run never leaves a model and an optimiser
 * state that disagree. */
#define _GNU_SOURCE
#include "io/fileutil.h"
#include "io/json.h"
#include "model/pass.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void cx_trainer_opts_default(cx_trainer_opts *o)
{
    memset(o, 0, sizeof *o);
    o->epochs = 10;
    o->lr = 1e-3f;
    o->lr_factor = 0.1;
    o->patience = 0;
    o->threshold = 1e-4;
    o->backend = CX_BACKEND_CPU;
    cx_train_opts_default(&o->train);
    o->best_dtype = CX_DT_F32;
    o->batch = 16;
    o->stop_decays = 2;
    o->stop_patience = 3;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double peak_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0;
}

/* Training state that a checkpoint carries besides weights and moments. */
typedef struct {
    int epoch;          /* current epoch (0-based) */
    int next_batch;     /* first batch of `epoch` still to run */
    double lr;
    cx_plateau plateau;
    double best_val;    /* lowest validation loss so far (inf: none) */
    int best_epoch;
    double loss_sum;    /* sum over the epoch's done batches of loss * n */
    long loss_count;    /* images in those batches */
    int lr_divisions;   /* times the schedule divided the learning rate */
    char last_log[4096];/* the log line of the last completed epoch */
} run_state;

static void path_in(char *buf, size_t n, const char *dir, const char *name)
{
    cx_path_join(buf, n, dir, name);
}

static cx_status meta_num(cx_st_writer *w, const char *key, double v, cx_err *err)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.17g", v);
    return cx_st_writer_add_meta(w, key, buf, err);
}

static cx_status save_checkpoint(cx_model *m, cx_train *t, const run_state *rs, const char *path,
                                 cx_err *err)
{
    cx_status st = cx_train_sync_model(t, err); /* the weights where the trainer has them */
    if (st)
        return st;
    cx_st_writer *w = cx_st_writer_new();
    if (!w)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    st = cx_model_to_writer(m, w, CX_DT_F32, err);
    char name[160];
    for (int i = 0; i < m->n_tensors && !st; i++) {
        cx_param *p = &m->tensors[i];
        if (!p->trainable)
            continue;
        snprintf(name, sizeof name, "optimizer.adam.m.%s", p->name);
        st = cx_st_writer_add_f32(w, name, CX_DT_F32, p->ndim, p->shape, cx_adam_m(t, i), err);
        if (!st) {
            snprintf(name, sizeof name, "optimizer.adam.v.%s", p->name);
            st = cx_st_writer_add_f32(w, name, CX_DT_F32, p->ndim, p->shape, cx_adam_v(t, i),
                                      err);
        }
    }
    if (!st) st = meta_num(w, "chexnet.train.epoch", rs->epoch, err);
    if (!st) st = meta_num(w, "chexnet.train.next_batch", rs->next_batch, err);
    if (!st) st = meta_num(w, "chexnet.train.adam_steps", (double)cx_adam_steps(t), err);
    if (!st) st = meta_num(w, "chexnet.train.lr", rs->lr, err);
    if (!st) st = meta_num(w, "chexnet.train.plateau.lr", rs->plateau.lr, err);
    if (!st) st = meta_num(w, "chexnet.train.plateau.best", rs->plateau.best, err);
    if (!st) st = meta_num(w, "chexnet.train.plateau.bad", rs->plateau.num_bad_epochs, err);
    if (!st) st = meta_num(w, "chexnet.train.plateau.cooldown", rs->plateau.cooldown_counter, err);
    if (!st) st = meta_num(w, "chexnet.train.best_val_loss", rs->best_val, err);
    if (!st) st = meta_num(w, "chexnet.train.best_epoch", rs->best_epoch, err);
    if (!st) st = meta_num(w, "chexnet.train.loss_sum", rs->loss_sum, err);
    if (!st) st = meta_num(w, "chexnet.train.loss_count", (double)rs->loss_count, err);
    if (!st) st = meta_num(w, "chexnet.train.lr_divisions", rs->lr_divisions, err);
    if (!st && rs->last_log[0])
        st = cx_st_writer_add_meta(w, "chexnet.train.last_log", rs->last_log, err);
    if (!st)
        st = cx_st_writer_write(w, path, err);
    cx_st_writer_free(w);
    return st;
}

static cx_status get_num(const cx_st_file *f, const char *key, double *v, cx_err *err)
{
    const char *s = cx_st_meta(f, key);
    char *end;
    if (!s)
        return cx_seterr(err, CX_EFORMAT, "%s: not a chexnet training checkpoint (no '%s')",
                         f->path, key);
    errno = 0;
    *v = strtod(s, &end);
    if (end == s || *end)
        return cx_seterr(err, CX_EFORMAT, "%s: metadata '%s' = '%s' is not a number", f->path,
                         key, s);
    return CX_OK;
}

static cx_status load_checkpoint(cx_model *m, cx_train *t, run_state *rs, const char *path,
                                 const cx_trainer_opts *o, const char *aug, cx_err *err)
{
    cx_model *ck = NULL;
    cx_status st = cx_model_load(path, &ck, err);
    if (st)
        return st;
    if (ck->n_tensors != m->n_tensors || ck->cfg.num_classes != m->cfg.num_classes) {
        cx_model_free(ck);
        return cx_seterr(err, CX_ESHAPE,
                         "%s: checkpoint has a different architecture or number of classes "
                         "than this run",
                         path);
    }
    for (int i = 0; i < m->n_tensors; i++) {
        if (ck->tensors[i].numel != m->tensors[i].numel) {
            cx_model_free(ck);
            return cx_seterr(err, CX_ESHAPE, "%s: tensor '%s' differs in shape from this run",
                             path, m->tensors[i].name);
        }
        memcpy(m->tensors[i].data, ck->tensors[i].data, sizeof(float) * m->tensors[i].numel);
    }
    cx_model_free(ck);
    cx_st_file *f = NULL;
    if ((st = cx_st_open(path, &f, err)))
        return st;
    /* the augmentation is part of the run: a resume does not change it */
    const char *was = cx_st_meta(f, "augmentation");
    if (was && strcmp(was, aug)) {
        st = cx_seterr(err, CX_EARG,
                       "%s: this run was started with augmentation %s, and these options ask "
                       "for %s: resume with the run's augmentation options (or start a new run "
                       "in another folder)",
                       path, was, aug);
        cx_st_close(f);
        return st;
    }
    char name[160];
    for (int i = 0; i < m->n_tensors && !st; i++) {
        cx_param *p = &m->tensors[i];
        if (!p->trainable)
            continue;
        for (int which = 0; which < 2 && !st; which++) {
            snprintf(name, sizeof name, "optimizer.adam.%s.%s", which ? "v" : "m", p->name);
            const cx_st_tensor *tt = cx_st_find(f, name);
            if (!tt)
                st = cx_seterr(err, CX_EMISSING, "%s: missing optimizer tensor '%s'", path,
                               name);
            else
                st = cx_st_read_f32(f, tt, which ? cx_adam_v(t, i) : cx_adam_m(t, i), p->numel,
                                    err);
        }
    }
    double v;
    if (!st && !(st = get_num(f, "chexnet.train.epoch", &v, err)))
        rs->epoch = (int)v;
    if (!st && !(st = get_num(f, "chexnet.train.next_batch", &v, err)))
        rs->next_batch = (int)v;
    if (!st && !(st = get_num(f, "chexnet.train.adam_steps", &v, err)))
        cx_adam_set_steps(t, (int64_t)v);
    if (!st)
        st = get_num(f, "chexnet.train.lr", &rs->lr, err);
    if (!st)
        st = get_num(f, "chexnet.train.plateau.lr", &rs->plateau.lr, err);
    if (!st)
        st = get_num(f, "chexnet.train.plateau.best", &rs->plateau.best, err);
    if (!st && !(st = get_num(f, "chexnet.train.plateau.bad", &v, err)))
        rs->plateau.num_bad_epochs = (int)v;
    if (!st && !(st = get_num(f, "chexnet.train.plateau.cooldown", &v, err)))
        rs->plateau.cooldown_counter = (int)v;
    if (!st)
        st = get_num(f, "chexnet.train.best_val_loss", &rs->best_val, err);
    if (!st && !(st = get_num(f, "chexnet.train.best_epoch", &v, err)))
        rs->best_epoch = (int)v;
    if (!st)
        st = get_num(f, "chexnet.train.loss_sum", &rs->loss_sum, err);
    if (!st && !(st = get_num(f, "chexnet.train.loss_count", &v, err)))
        rs->loss_count = (long)v;
    /* older checkpoints: the divisions from the learning rate */
    if (!st && cx_st_meta(f, "chexnet.train.lr_divisions")) {
        if (!(st = get_num(f, "chexnet.train.lr_divisions", &v, err)))
            rs->lr_divisions = (int)v;
    } else if (!st) {
        double k = rs->plateau.lr > 0 ? log(rs->plateau.lr / o->lr) / log(o->lr_factor) : 0;
        rs->lr_divisions = isfinite(k) && k > 0 ? (int)floor(k + 0.5) : 0;
    }
    const char *ll = cx_st_meta(f, "chexnet.train.last_log");
    if (!st && ll)
        snprintf(rs->last_log, sizeof rs->last_log, "%s", ll);
    cx_st_close(f);
    return st;
}

/* Rank 0's training state (weights, running statistics, Adam's moments and
 * steps, schedule and position) to every rank. */
static cx_status bcast_state(cx_model *m, cx_train *t, run_state *rs, const cx_comm *c,
                             cx_err *err)
{
    cx_status st = c->bcast(c->user, m->storage, sizeof(float) * (size_t)m->storage_n, 0, err);
    int first = -1; /* the trainable tensor at offset 0: Adam's moments start there */
    for (int i = 0; i < m->n_tensors && first < 0; i++)
        if (m->tensors[i].trainable && m->tensors[i].data == m->storage)
            first = i;
    if (first < 0)
        return cx_seterr(err, CX_EARG, "the model's storage does not start with a parameter");
    size_t nt = sizeof(float) * (size_t)m->n_trainable;
    if (!st)
        st = c->bcast(c->user, cx_adam_m(t, first), nt, 0, err);
    if (!st)
        st = c->bcast(c->user, cx_adam_v(t, first), nt, 0, err);
    int64_t steps = cx_adam_steps(t);
    if (!st)
        st = c->bcast(c->user, &steps, sizeof steps, 0, err);
    if (!st)
        st = c->bcast(c->user, rs, sizeof *rs, 0, err);
    cx_adam_set_steps(t, steps);
    return st;
}

/* Every rank must hold rank 0's parameters (they start equal and take the
 * same summed gradients): a cheap hash compared at checkpoints catches a
 * reduction that gave different results on different ranks. */
static cx_status check_same_weights(const cx_model *m, const cx_comm *c, cx_err *err)
{
    const unsigned char *b = (const unsigned char *)m->storage;
    uint64_t h = 1469598103934665603ULL, h0;
    for (size_t i = 0; i < sizeof(float) * (size_t)m->n_trainable; i++)
        h = (h ^ b[i]) * 1099511628211ULL;
    h0 = h;
    cx_status st = c->bcast(c->user, &h0, sizeof h0, 0, err);
    double differ = h != h0;
    if (!st)
        st = c->allreduce_f64(c->user, &differ, 1, err);
    if (!st && differ > 0)
        st = cx_seterr(err, CX_ENUMERIC,
                       "the parameters of %.0f rank%s differ from rank 0's (the gradient sums "
                       "were not the same on every rank)",
                       differ, differ == 1 ? "" : "s");
    return st;
}

/* Appends a line to the log and syncs it. */
static cx_status log_append(const char *path, const char *line, cx_err *err)
{
    FILE *f = fopen(path, "a");
    if (!f)
        return cx_seterr(err, CX_EIO, "%s: cannot open for appending: %s", path,
                         strerror(errno));
    int ok = fputs(line, f) >= 0 && fputc('\n', f) != EOF && fflush(f) == 0 &&
             fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok)
        return cx_seterr(err, CX_EIO, "%s: write failed: %s", path, strerror(errno));
    return CX_OK;
}

/* Epoch number of the last line of the log (-1 if none). */
static int log_last_epoch(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[8192];
    int last = -1;
    while (fgets(line, sizeof line, f)) {
        /* epoch lines only (step lines begin with "step") */
        if (!strncmp(line, "{\"epoch\": ", 10))
            last = atoi(line + 10);
    }
    fclose(f);
    return last;
}

/* Images per eval-mode forward during validation: a small inference arena
 * next to the training one keeps the peak memory of training low. */
#define CX_VAL_CHUNK 4

/* Validation: loss (same weights as training) and AUROC per class, in eval
 * mode (running statistics). */
static cx_status validate(cx_model *m, cx_ctx *ctx, cx_loader *val, const cx_trainer_opts *o,
                          float *x, float *y, float *logits, double *loss_out, double *auroc,
                          cx_err *err)
{
    int K = m->cfg.num_classes;
    const cx_comm *c = o->comm;
    cx_status st = cx_loader_start_epoch(val, 0, 0, err);
    if (st)
        return st;
    /* with ranks, each scores its shard of every batch into the places its
     * images have in the whole set, and the sums bring them together (in
     * the order of one process) */
    size_t cap = 1024, n_all = 0;
    double *score = malloc(cap * K * sizeof *score);
    double *lab = malloc(cap * K * sizeof *lab);
    double loss_sum = 0.0;
    if (!score || !lab) {
        free(score);
        free(lab);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    int nb = cx_loader_num_batches(val);
    for (int b = 0; c ? b < nb : 1; b++) {
        int n = 0;
        if ((st = cx_loader_next(val, x, y, NULL, &n, err)))
            break;
        double items = n;
        if (c && (st = c->allreduce_f64(c->user, &items, 1, err)))
            break;
        if (items == 0)
            break;
        size_t lo = c ? (size_t)((int64_t)items * c->rank / c->size) : 0;
        /* eval-mode forward in chunks of the (small) validation context */
        size_t side = (size_t)(o->image_size > 0 ? o->image_size : m->input_size);
        size_t per = (size_t)m->cfg.in_channels * side * side;
        for (int i0 = 0; i0 < n && !st; i0 += CX_VAL_CHUNK)
            st = cx_forward(ctx, x + per * i0, n - i0 < CX_VAL_CHUNK ? n - i0 : CX_VAL_CHUNK,
                            logits + (size_t)i0 * K, err);
        if (st)
            break;
        if (n > 0)
            loss_sum += cx_bce_loss(logits, y, n, K, o->wpos, o->wneg, NULL) * n;
        if (n_all + (size_t)items > cap) {
            while (n_all + (size_t)items > cap)
                cap *= 2;
            double *ns = realloc(score, cap * K * sizeof *ns);
            double *nl = realloc(lab, cap * K * sizeof *nl);
            if (ns)
                score = ns;
            if (nl)
                lab = nl;
            if (!ns || !nl) {
                st = cx_seterr(err, CX_ENOMEM, "out of memory");
                break;
            }
        }
        for (size_t i = 0; i < (size_t)items * K; i++)
            score[n_all * K + i] = lab[n_all * K + i] = 0.0;
        for (int i = 0; i < n; i++)
            for (int k = 0; k < K; k++) {
                score[(n_all + lo + i) * K + k] = logits[i * K + k];
                lab[(n_all + lo + i) * K + k] = y[i * K + k] > 0.5f;
            }
        n_all += (size_t)items;
    }
    if (!st && c) {
        if (!(st = c->allreduce_f64(c->user, &loss_sum, 1, err)) &&
            !(st = c->allreduce_f64(c->user, score, n_all * K, err)))
            st = c->allreduce_f64(c->user, lab, n_all * K, err);
    }
    if (!st) {
        *loss_out = n_all ? loss_sum / n_all : NAN;
        double *s1 = malloc(n_all * sizeof *s1);
        int8_t *l1 = malloc(n_all ? n_all : 1);
        for (int k = 0; k < K && s1 && l1; k++) {
            for (size_t i = 0; i < n_all; i++) {
                s1[i] = score[i * K + k];
                l1[i] = (int8_t)(lab[i * K + k] > 0.5);
            }
            if (!cx_auroc(s1, l1, n_all, &auroc[k]))
                auroc[k] = NAN;
        }
        if (!s1 || !l1)
            st = cx_seterr(err, CX_ENOMEM, "out of memory");
        free(s1);
        free(l1);
    }
    free(score);
    free(lab);
    return st;
}

static void json_double(char *buf, size_t n, double v)
{
    if (isfinite(v))
        snprintf(buf, n, "%.10g", v);
    else
        snprintf(buf, n, "null");
}

/* The stopping condition on the state at the end of epoch `epoch`. */
static int stop_met(const cx_trainer_opts *o, const run_state *rs, int epoch)
{
    int since = rs->best_epoch >= 0 ? epoch - rs->best_epoch : epoch + 1;
    return (o->stop_decays > 0 && rs->lr_divisions >= o->stop_decays) ||
           (o->stop_patience > 0 && since >= o->stop_patience);
}

cx_status cx_trainer_run(cx_model *m, cx_loader *train, cx_loader *val, const cx_trainer_opts *o,
                         cx_err *err)
{
    if (!o->out_dir || !*o->out_dir)
        return cx_seterr(err, CX_EARG, "training needs an output folder");
    if (o->epochs < 1 || !(o->lr > 0) || !(o->lr_factor > 0 && o->lr_factor < 1) ||
        o->patience < 0 || o->stop_decays < 0 || o->stop_patience < 0)
        return cx_seterr(err, CX_EARG, "invalid training options (epochs, lr, factor, patience, "
                                       "stopping condition)");
    const cx_comm *c = o->comm;
    if (c && (c->size < 1 || c->rank < 0 || c->rank >= c->size))
        return cx_seterr(err, CX_EARG, "rank %d of %d ranks", c->rank, c->size);
    const int root = !c || c->rank == 0; /* writes checkpoints, logs, the best model */
    const int ranks = c ? c->size : 1;
    cx_status mst = root ? cx_mkdir_p(o->out_dir, err) : CX_OK;
    if (mst)
        return mst;
    int K = m->cfg.num_classes, C = m->cfg.in_channels;
    int B = 0;
    /* the loader decides batch and image size */
    int nb = cx_loader_num_batches(train);
    if (nb < 1)
        return cx_seterr(err, CX_EARG, "the training set has no batches");
    char last_path[4096], best_path[4096], log_path[4096];
    path_in(last_path, sizeof last_path, o->out_dir, "last.safetensors");
    path_in(best_path, sizeof best_path, o->out_dir, "best.safetensors");
    path_in(log_path, sizeof log_path, o->out_dir, "log.jsonl");

    cx_status st;
    cx_train *t = NULL;
    cx_ctx *ctx = NULL;
    float *x = NULL, *y = NULL, *logits = NULL;
    double *auroc = NULL;
    const char **classes = NULL;
    FILE *steplog = NULL; /* log.jsonl, for the step lines */
    run_state rs;
    memset(&rs, 0, sizeof rs);
    rs.lr = o->lr;
    rs.best_val = INFINITY;
    rs.best_epoch = -1;
    cx_plateau_init(&rs.plateau, o->lr, o->lr_factor, o->patience, o->threshold);

    B = o->batch > 0 ? o->batch : 16;
    if (B < ranks) {
        st = cx_seterr(err, CX_EARG, "batch %d is smaller than the number of ranks (%d)", B,
                       ranks);
        goto done;
    }
    int side = o->image_size > 0 ? o->image_size : m->input_size;
    /* each rank plans for the largest shard of a batch */
    int Bl = (B + ranks - 1) / ranks;
    if ((st = cx_train_new(m, Bl, side, side, o->backend, &o->train, &t, err)))
        goto done;
    if ((st = cx_train_set_loss_weights(t, o->wpos, o->wneg, err)))
        goto done;
    if (c && (st = cx_train_set_comm(t, c, o->sync_bn, !o->no_overlap, o->bucket_bytes, err)))
        goto done;
    if (val && (st = cx_ctx_new(m, B < CX_VAL_CHUNK ? B : CX_VAL_CHUNK, side, side, o->backend,
                                &ctx, err)))
        goto done;
    x = malloc(sizeof(float) * (size_t)B * C * side * side);
    y = malloc(sizeof(float) * (size_t)B * K);
    logits = malloc(sizeof(float) * (size_t)B * K);
    auroc = malloc(sizeof(double) * K);
    classes = malloc(sizeof(char *) * K);
    if (!x || !y || !logits || !auroc || !classes) {
        st = cx_seterr(err, CX_ENOMEM, "out of memory");
        goto done;
    }
    for (int k = 0; k < K; k++)
        classes[k] = cx_model_class_name(m, k);
    /* how the images were augmented, in the model it trains */
    char aug[512];
    cx_augment_describe(cx_loader_options(train), aug, sizeof aug);
    if ((st = cx_model_set_meta(m, "augmentation", aug, err)))
        goto done;

    int stopped = 0; /* the stopping condition ended the run */
    if (o->resume) {
        /* rank 0 reads the checkpoint and sends it (no shared file system
         * is assumed; a failure there stops the group) */
        if (root && access(last_path, R_OK)) {
            st = cx_seterr(err, CX_EMISSING, "%s: no checkpoint to resume from", last_path);
            goto done;
        }
        if ((root && (st = load_checkpoint(m, t, &rs, last_path, o, aug, err))) ||
            (c && (st = bcast_state(m, t, &rs, c, err))) || (st = cx_train_reload_model(t, err)))
            goto done;
        /* a run that the stopping condition ended (at an epoch's end) */
        int met = rs.epoch > 0 && rs.next_batch == 0 && stop_met(o, &rs, rs.epoch - 1);
        if (o->on_resume) {
            cx_resume_info ri = {last_path, rs.epoch, o->epochs, rs.next_batch, nb,
                                 (long)cx_adam_steps(t), met};
            o->on_resume(o->user, &ri);
        }
        if (met && o->stop_when_met)
            stopped = 1;
        /* re-append the last completed epoch's line if the run died between
         * the checkpoint and the log */
        if (root && rs.last_log[0] && rs.epoch > 0 && log_last_epoch(log_path) < rs.epoch)
            if ((st = log_append(log_path, rs.last_log, err)))
                goto done;
    } else {
        if (root)
            unlink(log_path);
        /* every rank starts from rank 0's weights */
        if (c && ((st = c->bcast(c->user, m->storage, sizeof(float) * (size_t)m->storage_n, 0,
                                 err)) ||
                  (st = cx_train_reload_model(t, err))))
            goto done;
    }

    long steps_this_run = 0;
    int stop = 0; /* a stop was asked for (on_step) or max_steps reached */
    if (root && o->log_steps && !(steplog = fopen(log_path, "a"))) {
        st = cx_seterr(err, CX_EIO, "%s: cannot open for appending: %s", log_path,
                       strerror(errno));
        goto done;
    }
    for (; !stopped && rs.epoch < o->epochs; rs.epoch++, rs.next_batch = 0) {
        double t0 = now_s();
        long imgs_this_run = 0;
        if ((st = cx_loader_start_epoch(train, rs.epoch, rs.next_batch, err)))
            goto done;
        if (rs.next_batch == 0) {
            rs.loss_sum = 0;
            rs.loss_count = 0;
        }
        for (int b = rs.next_batch; b < nb; b++) {
            int n = 0;
            if ((st = cx_loader_next(train, x, y, NULL, &n, err)))
                goto done;
            int ng = n; /* images of the global batch (this rank has n of them) */
            if (c) {
                double v = n;
                if ((st = c->allreduce_f64(c->user, &v, 1, err)))
                    goto done;
                ng = (int)v;
            }
            if (ng == 0)
                break;
            /* BatchNorm needs two images: skip a last batch of one (with
             * ranks, one where a rank would get less than BatchNorm needs:
             * one image with sync-BN, two without) */
            if (ng < 2 || (c && ng / ranks < (o->sync_bn ? 1 : 2)))
                continue;
            double loss;
            if ((st = cx_train_step_global(t, x, y, n, ng, &loss, err))) {
                if (st == CX_ENUMERIC) {
                    int have = access(last_path, R_OK) == 0;
                    cx_seterr(err, CX_ENUMERIC,
                              "epoch %d batch %d: loss is %s; stopping. %s%s", rs.epoch + 1,
                              b + 1, isnan(loss) ? "NaN" : (loss > 0 ? "+inf" : "-inf"),
                              have ? "The last good checkpoint is kept: " :
                                     "No checkpoint was written.",
                              have ? last_path : "");
                }
                goto done;
            }
            if ((st = cx_adam_step(t, (float)rs.lr, err)))
                goto done;
            rs.loss_sum += loss * ng;
            rs.loss_count += ng;
            rs.next_batch = b + 1;
            steps_this_run++;
            imgs_this_run += ng;
            if (steplog) {
                char a[64];
                json_double(a, sizeof a, loss);
                fprintf(steplog,
                        "{\"step\": %lld, \"epoch\": %d, \"batch\": %d, \"loss\": %s, "
                        "\"lr\": %.10g}\n",
                        (long long)cx_adam_steps(t), rs.epoch + 1, b + 1, a, rs.lr);
                fflush(steplog);
            }
            if (o->on_step) {
                cx_train_progress pr = {rs.epoch, o->epochs, b + 1, nb, (long)cx_adam_steps(t),
                                        loss, rs.loss_sum / rs.loss_count,
                                        imgs_this_run / fmax(now_s() - t0, 1e-9), rs.lr};
                if (o->on_step(o->user, &pr))
                    stop = 1;
            }
            if (o->max_steps > 0 && steps_this_run >= o->max_steps)
                stop = 1;
            if (c) { /* a stop asked on any rank (a signal) stops them all here */
                double v = stop;
                if ((st = c->allreduce_f64(c->user, &v, 1, err)))
                    goto done;
                stop = v > 0;
            }
            int periodic = o->checkpoint_every > 0 && steps_this_run % o->checkpoint_every == 0;
            if (c && (stop || periodic) && (st = check_same_weights(m, c, err)))
                goto done;
            if (root && (stop || periodic) && rs.next_batch < nb) {
                if ((st = save_checkpoint(m, t, &rs, last_path, err)))
                    goto done;
            }
            if (stop) {
                /* at the end of the pass the epoch is finished first
                 * (validation, best model, checkpoint, log line), below */
                if (rs.next_batch >= nb)
                    break;
                st = cx_seterr(err, CX_EINTERRUPTED,
                               "stopped at epoch %d batch %d/%d after %ld step%s; checkpoint "
                               "%s (resume with --resume)",
                               rs.epoch + 1, rs.next_batch, nb, steps_this_run,
                               steps_this_run == 1 ? "" : "s", last_path);
                goto done;
            }
        }
        double train_s = now_s() - t0;
        double train_loss = rs.loss_count ? rs.loss_sum / rs.loss_count : NAN;
        /* the epoch's weights into the model, and into the validation context */
        if ((st = cx_train_sync_model(t, err)))
            goto done;
        /* the running statistics are rank 0's (without sync-BN each rank's
         * are of its own shards, as PyTorch DDP keeps rank 0's) */
        if (c && ((st = c->bcast(c->user, m->storage + m->n_trainable,
                                 sizeof(float) * (size_t)(m->storage_n - m->n_trainable), 0,
                                 err)) ||
                  (st = cx_train_reload_model(t, err))))
            goto done;
        if (c && (st = check_same_weights(m, c, err)))
            goto done;
        if (ctx && (st = cx_ctx_sync_weights(ctx, err)))
            goto done;
        double val_loss = NAN, mean_auc = NAN;
        for (int k = 0; k < K; k++)
            auroc[k] = NAN;
        if (val) {
            if ((st = validate(m, ctx, val, o, x, y, logits, &val_loss, auroc, err)))
                goto done;
            if (!isfinite(val_loss)) {
                st = cx_seterr(err, CX_ENUMERIC,
                               "epoch %d: validation loss is not finite; stopping. The last "
                               "checkpoint (%s) is from before this epoch's end.",
                               rs.epoch + 1, last_path);
                goto done;
            }
            double s = 0;
            int cnt = 0;
            for (int k = 0; k < K; k++)
                if (isfinite(auroc[k]))
                    s += auroc[k], cnt++;
            mean_auc = cnt ? s / cnt : NAN;
        }
        double crit = val ? val_loss : train_loss;
        int best = crit < rs.best_val;
        double lr_now = rs.lr;
        if (best) {
            rs.best_val = crit;
            rs.best_epoch = rs.epoch;
            char buf[64];
            snprintf(buf, sizeof buf, "%d", rs.epoch + 1);
            cx_model_set_meta(m, "train_epoch", buf, NULL);
            snprintf(buf, sizeof buf, "%.6f", crit);
            cx_model_set_meta(m, val ? "val_loss" : "train_loss", buf, NULL);
            if (val && isfinite(mean_auc)) {
                snprintf(buf, sizeof buf, "%.6f", mean_auc);
                cx_model_set_meta(m, "val_mean_auroc", buf, NULL);
            }
            if (root && (st = cx_model_save(m, best_path, o->best_dtype, err)))
                goto done;
        }
        int reduced = cx_plateau_step(&rs.plateau, crit);
        rs.lr = rs.plateau.lr;
        rs.lr_divisions += reduced;
        int since = rs.epoch - rs.best_epoch;
        int met = stop_met(o, &rs, rs.epoch);
        stopped = met && o->stop_when_met && rs.epoch + 1 < o->epochs;
        double total_s = now_s() - t0;
        /* the log line */
        char line[4096], a[64], b2[64], c3[64], d4[64];
        json_double(a, sizeof a, train_loss);
        json_double(b2, sizeof b2, val_loss);
        json_double(c3, sizeof c3, mean_auc);
        int k0 = snprintf(line, sizeof line,
                          "{\"epoch\": %d, \"train_loss\": %s, \"val_loss\": %s, "
                          "\"val_mean_auroc\": %s, \"val_auroc\": {",
                          rs.epoch + 1, a, b2, c3);
        for (int k = 0; k < K && k0 < (int)sizeof line - 900; k++) {
            char esc[256];
            cx_json_escape_buf(esc, sizeof esc, classes[k]);
            json_double(a, sizeof a, auroc[k]);
            k0 += snprintf(line + k0, sizeof line - k0, "%s%s: %s", k ? ", " : "", esc, a);
        }
        json_double(d4, sizeof d4, rs.best_val);
        snprintf(line + k0, sizeof line - k0,
                 "}, \"lr\": %.10g, \"next_lr\": %.10g, \"lr_reduced\": %s, \"best\": %s, "
                 "\"steps\": %lld, \"train_seconds\": %.1f, \"seconds\": %.1f, "
                 "\"train_images_per_s\": %.2f, \"peak_rss_mb\": %.0f, "
                 "\"lr_divisions\": %d, \"best_epoch\": %d, \"best_loss\": %s, "
                 "\"epochs_since_best\": %d, \"stop_after_decays\": %d, "
                 "\"stop_patience\": %d, \"stop_condition_met\": %s, \"stopping\": %s}",
                 lr_now, rs.lr, reduced ? "true" : "false", best ? "true" : "false",
                 (long long)cx_adam_steps(t), train_s, total_s,
                 imgs_this_run / fmax(train_s, 1e-9), peak_rss_mb(), rs.lr_divisions,
                 rs.best_epoch + 1, d4, since, o->stop_decays, o->stop_patience,
                 met ? "true" : "false", stopped ? "true" : "false");
        snprintf(rs.last_log, sizeof rs.last_log, "%s", line);
        /* checkpoint at the start of the next epoch, then the log */
        run_state next = rs;
        next.epoch = rs.epoch + 1;
        next.next_batch = 0;
        next.loss_sum = 0;
        next.loss_count = 0;
        if (root && ((st = save_checkpoint(m, t, &next, last_path, err)) ||
                     (st = log_append(log_path, line, err))))
            goto done;
        if (o->on_epoch) {
            cx_epoch_report r = {rs.epoch, train_loss, val_loss, K, classes, auroc, mean_auc,
                                 lr_now, rs.lr, best, total_s, imgs_this_run / fmax(train_s, 1e-9),
                                 peak_rss_mb(), line, rs.lr_divisions, rs.best_epoch,
                                 rs.best_val, since, met, stopped};
            o->on_epoch(o->user, &r);
        }
        if (stop && !stopped && rs.epoch + 1 < o->epochs) {
            st = cx_seterr(err, CX_EINTERRUPTED,
                           "stopped at the end of epoch %d after %ld step%s; checkpoint %s "
                           "(resume with --resume)",
                           rs.epoch + 1, steps_this_run, steps_this_run == 1 ? "" : "s",
                           last_path);
            goto done;
        }
    }
    st = CX_OK;
done:
    if (steplog)
        fclose(steplog);
    cx_train_free(t);
    cx_ctx_free(ctx);
    free(x);
    free(y);
    free(logits);
    free(auroc);
    free(classes);
    return st;
}
