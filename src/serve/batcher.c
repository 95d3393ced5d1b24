/* batcher.c - dynamic batching: concurrent requests share one forward pass.
 *
 * Request threads decode and preprocess their image, queue a job and wait.
 * One thread owns the inference context: it takes the first queued job,
 * waits until max_batch jobs are queued or max_wait_ms have passed since
 * that job arrived, runs cx_forward on up to max_batch of them, computes
 * the class activation maps asked for (they need the batch's feature maps,
 * so before the next forward), and wakes each job's thread. With
 * max_batch 1 every request runs alone.
 */
#define _GNU_SOURCE
#include "serve/serve.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct serve_batcher {
    const cx_model *m;
    cx_ctx *ctx;
    int max_batch, max_wait_ms, nc;
    size_t in_floats;
    int cam_h, cam_w;
    float *x, *logits;
    serve_job **jobs;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* queue changed or stop */
    serve_job *head, *tail;
    int qlen, stop, started;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void deadline(struct timespec *ts, double t_mono)
{
    /* the queue's condition variable runs on CLOCK_MONOTONIC */
    ts->tv_sec = (time_t)t_mono;
    ts->tv_nsec = (long)((t_mono - (double)ts->tv_sec) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *batcher_main(void *arg)
{
    serve_batcher *b = arg;
    serve_job **jobs = b->jobs;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        while (!b->head && !b->stop)
            pthread_cond_wait(&b->cv, &b->mu);
        if (!b->head)
            break; /* stopping with an empty queue */
        double until = b->head->t_enqueue + b->max_wait_ms * 1e-3;
        while (b->qlen < b->max_batch && !b->stop) {
            struct timespec ts;
            deadline(&ts, until);
            if (pthread_cond_timedwait(&b->cv, &b->mu, &ts) == ETIMEDOUT)
                break;
        }
        int n = 0;
        while (b->head && n < b->max_batch) {
            jobs[n++] = b->head;
            b->head = b->head->next;
            b->qlen--;
        }
        if (!b->head)
            b->tail = NULL;
        pthread_mutex_unlock(&b->mu);

        cx_err err = {0};
        double t0 = now_s();
        for (int i = 0; i < n; i++)
            memcpy(b->x + (size_t)i * b->in_floats, jobs[i]->input,
                   sizeof(float) * b->in_floats);
        cx_status st = cx_forward(b->ctx, b->x, n, b->logits, &err);
        double t1 = now_s();
        for (int i = 0; i < n && !st; i++) {
            serve_job *j = jobs[i];
            memcpy(j->logits, b->logits + (size_t)i * b->nc, sizeof(float) * b->nc);
            j->status = CX_OK;
            if (j->cam_class != -1) {
                int c = j->cam_class;
                if (c == -2) {
                    c = 0;
                    for (int k = 1; k < b->nc; k++)
                        if (j->logits[k] > j->logits[c])
                            c = k;
                }
                j->cam_used = c;
                int h, w;
                cx_err e2 = {0};
                j->status = cx_cam_compute(b->ctx, b->m, i, c, j->cam, &h, &w, &e2);
                if (j->status)
                    snprintf(j->err, sizeof j->err, "%s", e2.msg);
            }
        }
        if (!st)
            serve_metrics_batch(n, t1 - t0);
        pthread_mutex_lock(&b->mu);
        for (int i = 0; i < n; i++) {
            if (st) {
                jobs[i]->status = st;
                snprintf(jobs[i]->err, sizeof jobs[i]->err, "%s", err.msg);
            }
            jobs[i]->done = 1;
            pthread_cond_signal(&jobs[i]->cv);
        }
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

cx_status serve_batcher_new(const cx_model *m, int max_batch, int max_wait_ms, int precision,
                            serve_batcher **out, cx_err *err)
{
    *out = NULL;
    serve_batcher *b = calloc(1, sizeof *b);
    if (!b)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    b->m = m;
    b->max_batch = max_batch;
    b->max_wait_ms = max_wait_ms;
    b->nc = cx_model_num_classes(m);
    b->in_floats = cx_image_input_floats(m, 0);
    int S = cx_model_input_size(m);
    cx_status st = cx_ctx_new(m, max_batch, S, S, CX_BACKEND_CPU, &b->ctx, err);
    if (!st)
        st = cx_ctx_set_precision(b->ctx, (cx_precision)precision, err);
    if (!st)
        st = cx_cam_compute(b->ctx, m, 0, 0, NULL, &b->cam_h, &b->cam_w, err);
    if (st) {
        cx_ctx_free(b->ctx);
        free(b);
        return st;
    }
    b->x = malloc(sizeof(float) * b->in_floats * (size_t)max_batch);
    b->logits = malloc(sizeof(float) * (size_t)b->nc * (size_t)max_batch);
    b->jobs = malloc(sizeof *b->jobs * (size_t)max_batch);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!b->x || !b->logits || !b->jobs || pthread_create(&b->thread, NULL, batcher_main, b)) {
        b->started = 0;
        serve_batcher_free(b);
        return cx_seterr(err, CX_ENOMEM, "cannot start the batching thread");
    }
    b->started = 1;
    *out = b;
    return CX_OK;
}

void serve_batcher_free(serve_batcher *b)
{
    if (!b)
        return;
    if (b->started) {
        pthread_mutex_lock(&b->mu);
        b->stop = 1;
        pthread_cond_broadcast(&b->cv);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->thread, NULL);
    }
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->cv);
    cx_ctx_free(b->ctx);
    free(b->x);
    free(b->logits);
    free(b->jobs);
    free(b);
}

cx_status serve_batcher_run(serve_batcher *b, serve_job *job)
{
    pthread_cond_init(&job->cv, NULL);
    job->done = 0;
    job->next = NULL;
    job->status = CX_OK;
    job->err[0] = 0;
    job->t_enqueue = now_s();
    pthread_mutex_lock(&b->mu);
    if (b->tail)
        b->tail->next = job;
    else
        b->head = job;
    b->tail = job;
    b->qlen++;
    pthread_cond_signal(&b->cv);
    while (!job->done)
        pthread_cond_wait(&job->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    pthread_cond_destroy(&job->cv);
    return job->status;
}

void serve_batcher_cam_size(const serve_batcher *b, int *h, int *w)
{
    *h = b->cam_h;
    *w = b->cam_w;
}

int serve_batcher_queue_length(serve_batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->qlen;
    pthread_mutex_unlock(&b->mu);
    return n;
}
