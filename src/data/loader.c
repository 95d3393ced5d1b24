/* The threaded training loader: worker threads fill a ring of batch slots
 * ahead of the consumer (see chexnet.h, data section).
 *
 * Batch b of the epoch lives in slot b % prefetch. Workers claim single
 * images of the lowest pending batch, so the batch the trainer needs next
 * is always finished first. Every image's result depends only on (seed,
 * epoch, dataset index): never on the thread that made it. */
#define _GNU_SOURCE
#include "data/augment.h"
#include "data/data_internal.h"
#include "io/image_internal.h"
#include "util/rng.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    float *x, *y;
    int *ids;
    int batch;      /* batch number held, -1: free */
    int n_items;
    int first;      /* position in the epoch's order of its first item */
    int claimed, done, inflight;
    cx_status st;
    int err_item;   /* item of the recorded error (smallest) */
    cx_err err;
} slot;

struct cx_loader {
    const cx_dataset *ds;
    cx_loader_opts o;
    int *idx, n, K, nb;
    size_t img_floats;
    int *order;
    int epoch, next_batch, started;
    int nslots;
    slot *slots;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    int stop;
    int nth;
    pthread_t *th;
    double wait_s;
};

void cx_loader_opts_default(cx_loader_opts *o)
{
    memset(o, 0, sizeof *o);
    cx_input_spec in;
    cx_input_spec_default(&in);
    o->batch = 16;
    o->size = in.size;
    o->channels = in.channels;
    memcpy(o->mean, in.mean, sizeof o->mean);
    memcpy(o->std, in.std, sizeof o->std);
    o->shuffle = 1;
    o->augment = 0;
    o->drop_last = 0;
    o->seed = 0;
    o->threads = 0;
    o->prefetch = 2;
}

int cx_loader_flips(const cx_loader_opts *o, int epoch, int image)
{
    if (!o->augment)
        return 0;
    return (int)(cx_data_hash(o->seed ^ 0x464C4950ULL, (uint64_t)(uint32_t)epoch,
                              (uint64_t)(uint32_t)image) >> 63);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The crop box of a file's image, drawn once its size is known. */
typedef struct {
    const cx_loader *l;
    int image;
    cx_augment_params *p;
} box_draw;

static void draw_for_size(void *user, int width, int height, int box[4])
{
    box_draw *d = user;
    cx_augment_draw(&d->l->o, d->l->epoch, d->image, width, height, d->p);
    if (d->p->crop)
        box[0] = d->p->crop_x, box[1] = d->p->crop_y, box[2] = d->p->crop_w,
        box[3] = d->p->crop_h;
}

/* One image with the augmentations besides the flip (cx_augment): the same
 * result as cx_augment_apply on its pixels with cx_augment_draw's
 * parameters. From a file, the crop box is cut from the rows as they are
 * decoded, so the decoded image is never held. */
static cx_status make_augmented(const cx_loader *l, int image, float *dst, cx_err *err)
{
    const cx_dataset *ds = l->ds;
    int S = l->o.size, C = l->o.channels;
    cx_augment_params p;
    cx_image im = {0}, box = {0}, sized = {0};
    cx_status st;
    if (ds->map) {
        cx_pack_view(ds, image, &im);
        cx_augment_draw(&l->o, l->epoch, image, im.width, im.height, &p);
        const cx_image *from = &im;
        if (p.crop) {
            if ((st = cx_image_crop(&im, p.crop_x, p.crop_y, p.crop_w, p.crop_h, &box, err)))
                return st;
            from = &box;
        }
        st = cx_image_resize(from, S, S, &sized, err);
        cx_image_free(&box);
    } else {
        if (!ds->paths || !ds->paths[image])
            return cx_seterr(err, CX_EMISSING, "image '%s' has no file", ds->names[image]);
        box_draw d = {l, image, &p};
        st = cx_image_load_box_resized(ds->paths[image], C == 1 ? 1 : 0, S, S, draw_for_size, &d,
                                       &sized, err);
    }
    if (st)
        return st;
    st = cx_aug_finish(&sized, &p, C, l->o.mean, l->o.std, dst, err);
    cx_image_free(&sized);
    return st;
}

/* Makes one image: dst layout CHW [C][S][S]. */
static cx_status make_item(const cx_loader *l, int image, float *dst, cx_err *err)
{
    const cx_dataset *ds = l->ds;
    if (cx_augment_active(&l->o.aug))
        return make_augmented(l, image, dst, err);
    int S = l->o.size, C = l->o.channels;
    cx_image im = {0}, tmp = {0};
    cx_status st;
    if (ds->map) {
        cx_pack_view(ds, image, &im);
        if (im.width != S || im.height != S) {
            if ((st = cx_image_resize(&im, S, S, &tmp, err)))
                return st;
            st = cx_image_to_tensor(&tmp, C, l->o.mean, l->o.std, dst, err);
            cx_image_free(&tmp);
        } else {
            st = cx_image_to_tensor(&im, C, l->o.mean, l->o.std, dst, err);
        }
    } else {
        if (!ds->paths || !ds->paths[image])
            return cx_seterr(err, CX_EMISSING, "image '%s' has no file", ds->names[image]);
        /* decoded row by row into the resize: the full-size image is never held */
        if ((st = cx_image_load_resized(ds->paths[image], C == 1 ? 1 : 0, S, S, &im, err)))
            return st;
        st = cx_image_to_tensor(&im, C, l->o.mean, l->o.std, dst, err);
        cx_image_free(&im);
    }
    if (st)
        return st;
    if (cx_loader_flips(&l->o, l->epoch, image)) {
        for (int r = 0; r < C * S; r++) {
            float *row = dst + (size_t)r * S;
            for (int a = 0, b = S - 1; a < b; a++, b--) {
                float t = row[a];
                row[a] = row[b];
                row[b] = t;
            }
        }
    }
    return CX_OK;
}

static slot *pending_slot(cx_loader *l)
{
    slot *best = NULL;
    for (int s = 0; s < l->nslots; s++) {
        slot *p = &l->slots[s];
        if (p->batch >= 0 && p->claimed < p->n_items && (!best || p->batch < best->batch))
            best = p;
    }
    return best;
}

static void *worker(void *arg)
{
    cx_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        slot *p = pending_slot(l);
        if (!p) {
            pthread_cond_wait(&l->work_cv, &l->mu);
            continue;
        }
        int j = p->claimed++;
        p->inflight++;
        int pos = p->first + j;
        int image = l->order[pos];
        pthread_mutex_unlock(&l->mu);

        cx_err e;
        e.code = CX_OK;
        e.msg[0] = 0;
        cx_status st = make_item(l, image, p->x + (size_t)j * l->img_floats, &e);
        const uint8_t *y = l->ds->y + (size_t)image * l->K;
        for (int k = 0; k < l->K; k++)
            p->y[(size_t)j * l->K + k] = (float)y[k];
        p->ids[j] = image;

        pthread_mutex_lock(&l->mu);
        p->inflight--;
        p->done++;
        if (st && (p->st == CX_OK || j < p->err_item)) {
            p->st = st;
            p->err_item = j;
            p->err = e;
        }
        if (p->done == p->n_items || p->inflight == 0)
            pthread_cond_broadcast(&l->done_cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static int batch_items(const cx_loader *l, int b)
{
    int left = l->n - b * l->o.batch;
    return left < l->o.batch ? left : l->o.batch;
}

/* Gives slot b % nslots batch b (caller holds mu; the slot is idle). */
static void assign(cx_loader *l, int b)
{
    slot *p = &l->slots[b % l->nslots];
    if (b >= l->nb) {
        p->batch = -1;
        p->n_items = p->claimed = p->done = 0;
        return;
    }
    p->batch = b;
    int items = batch_items(l, b), k = l->o.shards > 1 ? l->o.shards : 1;
    int sh = k > 1 ? l->o.shard : 0;
    int lo = (int)((int64_t)items * sh / k), hi = (int)((int64_t)items * (sh + 1) / k);
    p->n_items = hi - lo;
    p->first = b * l->o.batch + lo;
    p->claimed = p->done = 0;
    p->st = CX_OK;
    p->err_item = 0;
    p->err.code = CX_OK;
    p->err.msg[0] = 0;
}

void cx_loader_free(cx_loader *l)
{
    if (!l)
        return;
    if (l->th) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->work_cv);
        pthread_mutex_unlock(&l->mu);
        for (int t = 0; t < l->nth; t++)
            pthread_join(l->th[t], NULL);
        free(l->th);
    }
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->done_cv);
    if (l->slots)
        for (int s = 0; s < l->nslots; s++) {
            free(l->slots[s].x);
            free(l->slots[s].y);
            free(l->slots[s].ids);
        }
    free(l->slots);
    free(l->idx);
    free(l->order);
    free(l);
}

cx_status cx_loader_new(const cx_dataset *ds, const int *idx, int n, const cx_loader_opts *o,
                        cx_loader **out, cx_err *err)
{
    *out = NULL;
    cx_loader_opts def;
    if (!o) {
        cx_loader_opts_default(&def);
        o = &def;
    }
    if (!ds || !idx || n <= 0)
        return cx_seterr(err, CX_EARG, "loader: no images");
    if (o->batch < 1 || o->batch > 65536)
        return cx_seterr(err, CX_EARG, "loader: batch %d out of range", o->batch);
    if (o->size < 1 || o->size > 4096)
        return cx_seterr(err, CX_EARG, "loader: size %d out of range", o->size);
    if (o->channels != 1 && o->channels != 3)
        return cx_seterr(err, CX_EARG, "loader: channels must be 1 or 3");
    for (int c = 0; c < 3; c++)
        if (!(o->std[c] > 0) || o->mean[c] != o->mean[c])
            return cx_seterr(err, CX_EARG, "loader: bad mean/std");
    if (o->shards > 1 && (o->shard < 0 || o->shard >= o->shards))
        return cx_seterr(err, CX_EARG, "loader: shard %d not in 0..%d", o->shard, o->shards - 1);
    if (o->prefetch < 1 || o->prefetch > 16)
        return cx_seterr(err, CX_EARG, "loader: prefetch %d out of range (1..16)", o->prefetch);
    cx_status st = cx_augment_check(&o->aug, err);
    if (st)
        return st;
    st = cx_dataset_check_images(ds, idx, n, err);
    if (st)
        return st;
    cx_loader *l = calloc(1, sizeof *l);
    if (!l)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->done_cv, NULL);
    l->ds = ds;
    l->o = *o;
    l->n = n;
    l->K = ds->K;
    l->nb = o->drop_last ? n / o->batch : (n + o->batch - 1) / o->batch;
    l->img_floats = (size_t)o->channels * o->size * o->size;
    l->idx = malloc((size_t)n * sizeof *l->idx);
    l->order = malloc((size_t)n * sizeof *l->order);
    l->nslots = o->prefetch;
    l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
    if (!l->idx || !l->order || !l->slots) {
        cx_loader_free(l);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    memcpy(l->idx, idx, (size_t)n * sizeof *idx);
    for (int s = 0; s < l->nslots; s++) {
        slot *p = &l->slots[s];
        p->batch = -1;
        p->x = malloc((size_t)o->batch * l->img_floats * sizeof(float));
        p->y = malloc((size_t)o->batch * (l->K ? l->K : 1) * sizeof(float));
        p->ids = malloc((size_t)o->batch * sizeof(int));
        if (!p->x || !p->y || !p->ids) {
            cx_loader_free(l);
            return cx_seterr(err, CX_ENOMEM, "out of memory (loader buffers)");
        }
    }
    int nth = o->threads > 0 ? o->threads : cx_get_threads();
    if (nth < 1)
        nth = 1;
    if (nth > 256)
        nth = 256;
    l->th = calloc((size_t)nth, sizeof *l->th);
    if (!l->th) {
        cx_loader_free(l);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    for (int t = 0; t < nth; t++) {
        if (pthread_create(&l->th[t], NULL, worker, l) != 0) {
            cx_loader_free(l);
            return cx_seterr(err, CX_ENOMEM, "loader: cannot start thread %d", t);
        }
        l->nth++;
    }
    *out = l;
    return CX_OK;
}

int cx_loader_num_batches(const cx_loader *l) { return l->nb; }
const cx_loader_opts *cx_loader_options(const cx_loader *l) { return &l->o; }
double cx_loader_wait_seconds(const cx_loader *l) { return l->wait_s; }

cx_status cx_loader_start_epoch(cx_loader *l, int epoch, int start_batch, cx_err *err)
{
    if (epoch < 0)
        return cx_seterr(err, CX_EARG, "loader: epoch %d < 0", epoch);
    if (start_batch < 0 || start_batch > l->nb)
        return cx_seterr(err, CX_EARG, "loader: start batch %d not in 0..%d", start_batch, l->nb);
    pthread_mutex_lock(&l->mu);
    /* stop handing out work and wait for items in flight */
    for (int s = 0; s < l->nslots; s++)
        l->slots[s].claimed = l->slots[s].n_items;
    for (;;) {
        int busy = 0;
        for (int s = 0; s < l->nslots; s++)
            busy += l->slots[s].inflight;
        if (!busy)
            break;
        pthread_cond_wait(&l->done_cv, &l->mu);
    }
    l->epoch = epoch;
    memcpy(l->order, l->idx, (size_t)l->n * sizeof *l->order);
    if (l->o.shuffle) {
        cx_rng r;
        cx_rng_seed(&r, cx_data_hash(l->o.seed, (uint64_t)(uint32_t)epoch, 0x53485546ULL));
        for (int i = l->n - 1; i > 0; i--) {
            int j = (int)cx_rng_below(&r, (uint64_t)i + 1);
            int t = l->order[i];
            l->order[i] = l->order[j];
            l->order[j] = t;
        }
    }
    for (int s = 0; s < l->nslots; s++)
        l->slots[s].batch = -1;
    for (int k = 0; k < l->nslots; k++)
        assign(l, start_batch + k);
    l->next_batch = start_batch;
    l->started = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    return CX_OK;
}

cx_status cx_loader_next(cx_loader *l, float *x, float *y, int *ids, int *n, cx_err *err)
{
    *n = 0;
    if (!l->started) {
        cx_status st = cx_loader_start_epoch(l, 0, 0, err);
        if (st)
            return st;
    }
    if (l->next_batch >= l->nb)
        return CX_OK;
    int b = l->next_batch;
    slot *p = &l->slots[b % l->nslots];
    pthread_mutex_lock(&l->mu);
    double t0 = now_s();
    int waited = 0;
    while (p->done < p->n_items) {
        waited = 1;
        pthread_cond_wait(&l->done_cv, &l->mu);
    }
    if (waited)
        l->wait_s += now_s() - t0;
    pthread_mutex_unlock(&l->mu);
    /* the slot is complete: no worker touches it until it is reassigned */
    cx_status st = p->st;
    if (st) {
        if (err)
            *err = p->err;
    } else {
        int m = p->n_items;
        memcpy(x, p->x, (size_t)m * l->img_floats * sizeof(float));
        if (y && l->K)
            memcpy(y, p->y, (size_t)m * l->K * sizeof(float));
        if (ids)
            memcpy(ids, p->ids, (size_t)m * sizeof(int));
        *n = m;
    }
    pthread_mutex_lock(&l->mu);
    assign(l, b + l->nslots);
    l->next_batch = b + 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    return st;
}
