/* Gradient checks: every backward op of the reference kernels (double
 * precision) and the loss's gradient against central finite differences on
 * small shapes (the scalar checked is L = sum(r * f(inputs)) for a fixed
 * random r, or the loss itself); then the whole trainer on the CPU backend
 * against the reference backend. (Every other backend's ops are checked
 * against the reference by test_backend_ops.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chexnet.h"
#include "kernels/backend.h"
#include "kernels/ref/ref_f64.h"
#include "util/rng.h"
#include "cx_testutil.h"

#define EPS_BN 1e-5
static const double H_FD = 1e-6;

static double *drand(cx_rng *r, size_t n, double lo, double hi)
{
    double *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * cx_rng_uniform(r);
    return v;
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Compares an analytic gradient g of L w.r.t. v[0..n) with finite
 * differences of loss(); checks every element (n is small). */
typedef double (*loss_fn)(void *ctx);
static void fd_check(const char *what, double *v, size_t n, const double *g, loss_fn loss,
                     void *ctx, double tol)
{
    double worst = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double keep = v[i];
        v[i] = keep + H_FD;
        double lp = loss(ctx);
        v[i] = keep - H_FD;
        double lm = loss(ctx);
        v[i] = keep;
        double fd = (lp - lm) / (2 * H_FD);
        /* relative error, guarded for gradients near zero */
        double e = fabs(fd - g[i]) / (1e-3 + fabs(fd) + fabs(g[i]));
        if (e > worst) {
            worst = e;
            wi = i;
        }
    }
    if (worst > tol)
        fail_msg("%s: element %zu analytic %.9g vs finite difference, rel err %.3g", what, wi,
                 g[wi], worst);
    printf("  %-34s %4zu values, worst rel err %.2e\n", what, n, worst);
}

/* ---- convolution ---- */
typedef struct {
    int Cin, N, H, W, Cout, k, s, pad;
    double *x, *w, *r, *y;
} conv_case;

static double conv_loss(void *p)
{
    conv_case *c = p;
    cx_ops_ref64()->conv2d(c->x, c->Cin, c->N, c->H, c->W, c->w, c->Cout, c->k, c->s, c->pad,
                           c->y, NULL, 0);
    int Ho = cx_out_size(c->H, c->k, c->s, c->pad), Wo = cx_out_size(c->W, c->k, c->s, c->pad);
    return dot(c->r, c->y, (size_t)c->Cout * c->N * Ho * Wo);
}

static void check_conv(int Cin, int N, int H, int W, int Cout, int k, int s, int pad)
{
    cx_rng rng;
    cx_rng_seed(&rng, (uint64_t)(k * 100 + s * 10 + pad));
    conv_case c = {Cin, N, H, W, Cout, k, s, pad, 0};
    int Ho = cx_out_size(H, k, s, pad), Wo = cx_out_size(W, k, s, pad);
    size_t nx = (size_t)Cin * N * H * W, nw = (size_t)Cout * Cin * k * k,
           ny = (size_t)Cout * N * Ho * Wo;
    c.x = drand(&rng, nx, -1, 1);
    c.w = drand(&rng, nw, -1, 1);
    c.r = drand(&rng, ny, -1, 1);
    c.y = malloc(ny * sizeof(double));
    double *dw = calloc(nw, sizeof(double)), *dx = calloc(nx, sizeof(double));
    cx_ops_ref64()->conv2d_backward(c.x, Cin, N, H, W, c.w, Cout, k, s, pad, c.r, dw, dx, 0, NULL,
                                    0);
    char what[64];
    snprintf(what, sizeof what, "conv %dx%d/%d pad %d: dx", k, k, s, pad);
    fd_check(what, c.x, nx, dx, conv_loss, &c, 1e-6);
    snprintf(what, sizeof what, "conv %dx%d/%d pad %d: dw", k, k, s, pad);
    fd_check(what, c.w, nw, dw, conv_loss, &c, 1e-6);
    free(c.x), free(c.w), free(c.r), free(c.y), free(dw), free(dx);
}

static void test_fd_conv(void **state)
{
    check_conv(3, 2, 5, 6, 4, 1, 1, 0);
    check_conv(3, 2, 5, 5, 2, 3, 1, 1);
    check_conv(2, 1, 9, 8, 3, 7, 2, 3);
}

/* ---- training-mode BatchNorm + ReLU ---- */
typedef struct {
    int C;
    int64_t P;
    double *x, *g, *b, *r, *y;
} bn_case;

static double bn_forward(bn_case *c, double *mean, double *invstd)
{
    double var[8], sc[8], sh[8];
    cx_ops_ref64()->bn_stats(c->x, c->C, c->P, mean, var);
    for (int i = 0; i < c->C; i++) {
        invstd[i] = 1.0 / sqrt(var[i] + EPS_BN);
        sc[i] = c->g[i] * invstd[i];
        sh[i] = c->b[i] - mean[i] * sc[i];
    }
    cx_ops_ref64()->bn_relu(c->x, c->y, c->C, c->P, sc, sh);
    return dot(c->r, c->y, (size_t)(c->C * c->P));
}

static double bn_loss(void *p)
{
    double mean[8], invstd[8];
    return bn_forward(p, mean, invstd);
}

static void test_fd_bn_relu(void **state)
{
    cx_rng rng;
    cx_rng_seed(&rng, 5);
    bn_case c = {3, 2 * 4 * 5, 0};
    size_t n = (size_t)(c.C * c.P);
    c.x = drand(&rng, n, -2, 2);
    c.g = drand(&rng, c.C, 0.5, 1.5);
    c.b = drand(&rng, c.C, -0.3, 0.3);
    c.r = drand(&rng, n, -1, 1);
    c.y = malloc(n * sizeof(double));
    double mean[8], invstd[8], dg[8] = {0}, db[8] = {0};
    double *dx = malloc(n * sizeof(double));
    bn_forward(&c, mean, invstd);
    cx_ops_ref64()->bn_relu_backward(c.x, c.r, c.C, c.P, c.g, c.b, mean, invstd, dg, db, dx, 0);
    fd_check("batchnorm(train)+relu: dx", c.x, n, dx, bn_loss, &c, 1e-5);
    fd_check("batchnorm(train)+relu: dgamma", c.g, c.C, dg, bn_loss, &c, 1e-6);
    fd_check("batchnorm(train)+relu: dbeta", c.b, c.C, db, bn_loss, &c, 1e-6);
    /* accumulate = 1 adds */
    double *dx2 = malloc(n * sizeof(double));
    for (size_t i = 0; i < n; i++)
        dx2[i] = 1.0;
    cx_ops_ref64()->bn_relu_backward(c.x, c.r, c.C, c.P, c.g, c.b, mean, invstd, dg, db, dx2, 1);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(dx2[i] - 1.0 - dx[i]) < 1e-12);
    free(c.x), free(c.g), free(c.b), free(c.r), free(c.y), free(dx), free(dx2);
}

/* ---- pools, GAP, linear ---- */
typedef struct {
    int C, N, H, W, which;
    double *x, *r, *y;
} pool_case;

static double pool_loss(void *p)
{
    pool_case *c = p;
    size_t ny;
    if (c->which == 0) {
        cx_ops_ref64()->maxpool(c->x, c->C, c->N, c->H, c->W, 3, 2, 1, c->y);
        ny = (size_t)c->C * c->N * cx_out_size(c->H, 3, 2, 1) * cx_out_size(c->W, 3, 2, 1);
    } else if (c->which == 1) {
        cx_ops_ref64()->avgpool(c->x, c->C, c->N, c->H, c->W, 2, c->y);
        ny = (size_t)c->C * c->N * (c->H / 2) * (c->W / 2);
    } else {
        cx_ops_ref64()->gap(c->x, c->C, c->N, c->H * c->W, c->y);
        ny = (size_t)c->C * c->N;
    }
    return dot(c->r, c->y, ny);
}

static void test_fd_pools(void **state)
{
    cx_rng rng;
    cx_rng_seed(&rng, 11);
    static const char *names[] = {"maxpool 3x3/2 pad 1: dx", "avgpool 2x2/2 (odd size): dx",
                                  "global average pool: dx"};
    for (int which = 0; which < 3; which++) {
        pool_case c = {2, 2, 7, 5, which, 0};
        size_t n = (size_t)c.C * c.N * c.H * c.W;
        c.x = drand(&rng, n, -1, 1); /* distinct values: max is unique */
        c.r = drand(&rng, n, -1, 1);
        c.y = malloc(n * sizeof(double));
        double *dx = malloc(n * sizeof(double));
        if (which == 0)
            cx_ops_ref64()->maxpool_backward(c.x, c.C, c.N, c.H, c.W, 3, 2, 1, c.r, dx);
        else if (which == 1)
            cx_ops_ref64()->avgpool_backward(c.r, c.C, c.N, c.H, c.W, 2, dx);
        else
            cx_ops_ref64()->gap_backward(c.r, c.C, c.N, c.H * c.W, dx);
        fd_check(names[which], c.x, n, dx, pool_loss, &c, 1e-6);
        free(c.x), free(c.r), free(c.y), free(dx);
    }
}

typedef struct {
    int N, F, M;
    double *x, *w, *b, *r, *y;
} lin_case;

static double lin_loss(void *p)
{
    lin_case *c = p;
    cx_ops_ref64()->linear(c->x, c->N, c->F, c->w, c->b, c->M, c->y);
    return dot(c->r, c->y, (size_t)c->N * c->M);
}

static void test_fd_linear(void **state)
{
    cx_rng rng;
    cx_rng_seed(&rng, 13);
    lin_case c = {3, 6, 4, 0};
    c.x = drand(&rng, 18, -1, 1);
    c.w = drand(&rng, 24, -1, 1);
    c.b = drand(&rng, 4, -1, 1);
    c.r = drand(&rng, 12, -1, 1);
    c.y = malloc(12 * sizeof(double));
    double dw[24] = {0}, db[4] = {0}, dx[18];
    cx_ops_ref64()->linear_backward(c.x, 3, 6, c.w, 4, c.r, dw, db, dx);
    fd_check("linear: dx", c.x, 18, dx, lin_loss, &c, 1e-7);
    fd_check("linear: dw", c.w, 24, dw, lin_loss, &c, 1e-7);
    fd_check("linear: db", c.b, 4, db, lin_loss, &c, 1e-7);
    free(c.x), free(c.w), free(c.b), free(c.r), free(c.y);
}

/* ---- the loss ---- */
typedef struct {
    int n, K;
    double *z, *y, *wp, *wn;
} bce_case;

static double bce_loss_of(void *p)
{
    bce_case *c = p;
    double loss;
    cx_ops_ref64()->bce_loss(c->z, c->y, c->n, c->K, c->wp, c->wn, &loss, NULL);
    return loss;
}

static void test_fd_bce(void **state)
{
    cx_rng rng;
    cx_rng_seed(&rng, 15);
    bce_case c = {4, 3, 0};
    c.z = drand(&rng, 12, -6, 6);
    c.y = drand(&rng, 12, 0, 1); /* soft labels too */
    c.wp = drand(&rng, 3, 0.2, 2);
    c.wn = drand(&rng, 3, 0.2, 2);
    double dz[12], loss;
    cx_ops_ref64()->bce_loss(c.z, c.y, c.n, c.K, c.wp, c.wn, &loss, dz);
    fd_check("binary cross-entropy: dlogits", c.z, 12, dz, bce_loss_of, &c, 1e-7);
    free(c.z), free(c.y), free(c.wp), free(c.wn);
}

static float *frand(cx_rng *r, size_t n, float lo, float hi)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * (float)cx_rng_uniform(r);
    return v;
}

static double rel_l2(const float *a, const float *b, size_t n)
{
    double d = 0, nb = 0;
    for (size_t i = 0; i < n; i++) {
        d += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        nb += (double)b[i] * b[i];
    }
    return sqrt(d) / (sqrt(nb) + 1e-30);
}

/* The whole trainer on a small DenseNet-BC (growth 8, blocks 2-3-2): one
 * training step on the CPU backend against the reference backend (loss,
 * every tensor's gradient), Adam on both, and Adam's refusal of a NaN
 * gradient (no weight changes). */
static void test_train_step_backends(void **state)
{
    int N = 3, H = 64, W = 48, K = 5;
    cx_model *m[2] = {small_densenet(), small_densenet()};
    assert_true(m[0] && m[1]);
    cx_train *t[2];
    cx_err err = {0};
    cx_backend_id be[2] = {CX_BACKEND_REF, CX_BACKEND_CPU};
    cx_rng r;
    cx_rng_seed(&r, 45);
    float *in = frand(&r, (size_t)N * 3 * H * W, -2, 2), y[15];
    for (int i = 0; i < N * K; i++)
        y[i] = (float)(cx_rng_uniform(&r) < 0.4);
    double loss[2];
    for (int b = 0; b < 2; b++) {
        assert_int_equal(cx_train_new(m[b], N, H, W, be[b], NULL, &t[b], &err), CX_OK);
        assert_int_equal(cx_train_step(t[b], in, y, N, &loss[b], &err), CX_OK);
    }
    assert_true(fabs(loss[1] - loss[0]) < 1e-5 * fabs(loss[0]));
    /* Per tensor: relative L2 below 1e-4. The stem's norm0 is the exception:
     * every reader of its (pooled) output normalises it again with batch
     * statistics, so the loss hardly depends on its weight and bias; their
     * gradients are sums that cancel to 1e-5..1e-6 of their terms, where two
     * correct fp32 evaluations differ by 1e-4..1e-3 relative. Those two are
     * held to the scale of the whole gradient instead (1e-6 of its norm). */
    double se = 0, sr = 0, worst = 0;
    for (int i = 0; i < cx_model_num_tensors(m[0]); i++) {
        const float *g0 = cx_train_grad(t[0], i), *g1 = cx_train_grad(t[1], i);
        for (int64_t j = 0; g0 && j < cx_model_tensor(m[0], i)->numel; j++) {
            se += ((double)g1[j] - g0[j]) * ((double)g1[j] - g0[j]);
            sr += (double)g0[j] * g0[j];
        }
    }
    for (int i = 0; i < cx_model_num_tensors(m[0]); i++) {
        const float *g0 = cx_train_grad(t[0], i), *g1 = cx_train_grad(t[1], i);
        if (!g0)
            continue;
        const char *name = cx_model_tensor(m[0], i)->name;
        size_t n = (size_t)cx_model_tensor(m[0], i)->numel;
        if (!strncmp(name, "features.norm0.", 15)) {
            double d = 0;
            for (size_t j = 0; j < n; j++)
                d += ((double)g1[j] - g0[j]) * ((double)g1[j] - g0[j]);
            if (!(sqrt(d) < 1e-6 * sqrt(sr)))
                fail_msg("trainer gradient of %s: cpu vs ref differ by %g of the gradient's norm",
                         name, sqrt(d / sr));
            continue;
        }
        double e = rel_l2(g1, g0, n);
        if (e > worst)
            worst = e;
        if (!(e < 1e-4))
            fail_msg("trainer gradient of %s: cpu vs ref rel L2 %g", name, e);
    }
    printf("trainer: loss %.8f / %.8f, whole gradient rel L2 %.2e, worst tensor %.2e\n",
           loss[0], loss[1], sqrt(se / sr), worst);
    assert_true(sqrt(se / sr) < 1e-5);
    /* Adam from the same gradients (the first step is close to lr * sign(g),
     * which the noise in near-zero gradients flips): every trainable element
     * moves, the same on both, running statistics untouched by Adam */
    for (int i = 0; i < cx_model_num_tensors(m[0]); i++)
        if (cx_train_grad(t[0], i))
            memcpy(cx_train_grad(t[1], i), cx_train_grad(t[0], i),
                   sizeof(float) * (size_t)cx_model_tensor(m[0], i)->numel);
    size_t nst = 0;
    for (int i = 0; i < cx_model_num_tensors(m[1]); i++)
        nst += (size_t)cx_model_tensor(m[1], i)->numel;
    float *w1 = malloc(sizeof(float) * nst), *q = w1;
    for (int i = 0; i < cx_model_num_tensors(m[1]); i++) {
        memcpy(q, cx_model_tensor(m[1], i)->data, sizeof(float) * cx_model_tensor(m[1], i)->numel);
        q += cx_model_tensor(m[1], i)->numel;
    }
    for (int b = 0; b < 2; b++)
        assert_int_equal(cx_adam_step(t[b], 1e-3f, &err), CX_OK);
    q = w1;
    for (int i = 0; i < cx_model_num_tensors(m[0]); i++) {
        const cx_param *p0 = cx_model_tensor(m[0], i), *p1 = cx_model_tensor(m[1], i);
        const float *g = cx_train_grad(t[1], i);
        if (g) /* same gradients, same Adam */
            assert_memory_equal(p1->data, p0->data, sizeof(float) * (size_t)p0->numel);
        else /* running statistics, from each backend's batch statistics */
            assert_true(rel_l2(p1->data, p0->data, (size_t)p0->numel) < 1e-5);
        for (int64_t j = 0; j < p1->numel; j++)
            if (g ? g[j] != 0.0f && p1->data[j] == q[j] : p1->data[j] != q[j])
                fail_msg("Adam: element %lld of %s %s", (long long)j, p1->name,
                         g ? "did not move" : "(running statistic) moved");
        q += p1->numel;
    }
    free(w1);
    /* a NaN gradient: refused, no weight moves */
    int last = cx_model_num_tensors(m[1]) - 1;
    while (!cx_train_grad(t[1], last))
        last--;
    size_t bytes = sizeof(float) * (size_t)cx_model_tensor(m[1], 0)->numel;
    float *before = malloc(bytes);
    memcpy(before, cx_model_tensor(m[1], 0)->data, bytes);
    cx_train_grad(t[1], last)[0] = NAN;
    assert_int_equal(cx_adam_step(t[1], 1e-3f, &err), CX_ENUMERIC);
    assert_non_null(strstr(err.msg, cx_model_tensor(m[1], last)->name));
    assert_memory_equal(before, cx_model_tensor(m[1], 0)->data, bytes);
    free(before), free(in);
    for (int b = 0; b < 2; b++) {
        cx_train_free(t[b]);
        cx_model_free(m[b]);
    }
}

int main(void)
{
    cx_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fd_conv),  cmocka_unit_test(test_fd_bn_relu),
        cmocka_unit_test(test_fd_pools), cmocka_unit_test(test_fd_linear),
        cmocka_unit_test(test_fd_bce),   cmocka_unit_test(test_train_step_backends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
