/* BatchNorm across ranks (model/pass.h): the forward's batch statistics and
 * the backward's per-channel sums of a pass reduced over the ranks of a
 * data-parallel run, so that K ranks with a global batch B compute the step
 * of one process with batch B.
 *
 * Statistics travel as sums: a rank with P values per channel, mean m and
 * biased variance v sends P m and P (v + m^2) in double, and the global
 * variance is S2 / P_g - (S1 / P_g)^2. In double the cancellation costs
 * about 1e-16 * mean^2 / var relative to the variance, far below fp32; what
 * differs from one process is the order of the fp32 sums inside each rank's
 * bn_stats (and the same for the backward's sums). The values go through
 * the host (download, reduce, upload): on a host-memory backend these are
 * copies of a few kilobytes; a device backend would reduce its device
 * buffers directly instead. */
#include "model/pass.h"

#include <math.h>

int cx_pass_max_channels(const cx_pass *p)
{
    int c = 1;
    for (int i = 0; i < p->n_bn; i++)
        if (p->bn[i].bn->C > c)
            c = p->bn[i].bn->C;
    return c;
}

static cx_status down(cx_pass *p, void *dst, const void *src, size_t n, const char *where,
                      cx_err *err)
{
    cx_status st = p->be->ops->download(p->be, dst, src, n);
    return st ? cx_be_fail(p->be, st, "download", where, err) : CX_OK;
}

static cx_status up(cx_pass *p, void *dst, const void *src, size_t n, const char *where,
                    cx_err *err)
{
    cx_status st = p->be->ops->upload(p->be, dst, src, n);
    return st ? cx_be_fail(p->be, st, "upload", where, err) : CX_OK;
}

#define TRY(call)                                                                                  \
    do {                                                                                           \
        cx_status st_ = (call);                                                                    \
        if (st_ != CX_OK)                                                                          \
            return st_;                                                                            \
    } while (0)

cx_status cx_pass_sync_stats(cx_pass *p, const char *where, int C, int64_t P, float *mean,
                             float *var, cx_err *err)
{
    const cx_pass_dist *d = p->dist;
    float *hm = d->host_f, *hv = d->host_f + C;
    double *v = d->host;
    size_t bytes = sizeof(float) * (size_t)C;
    TRY(down(p, hm, mean, bytes, where, err));
    TRY(down(p, hv, var, bytes, where, err));
    for (int c = 0; c < C; c++) {
        double m = hm[c];
        v[c] = (double)P * m;
        v[C + c] = (double)P * ((double)hv[c] + m * m);
    }
    v[2 * C] = (double)P;
    TRY(d->sum(d->user, v, 2 * (size_t)C + 1, err));
    double Pg = v[2 * C];
    for (int c = 0; c < C; c++) {
        double m = v[c] / Pg, s2 = v[C + c] / Pg - m * m;
        hm[c] = (float)m;
        hv[c] = (float)(s2 > 0 ? s2 : 0.0);
    }
    TRY(up(p, mean, hm, bytes, where, err));
    return up(p, var, hv, bytes, where, err);
}

cx_status cx_pass_sync_bn_backward(cx_pass *p, const cx_bn_slot *s, const float *x, int64_t P,
                                   float *dx, cx_err *err)
{
    const cx_pass_dist *d = p->dist;
    const cx_bn *bn = s->bn;
    const char *where = cx_pass_name(p, bn->idx);
    int C = bn->C;
    size_t bytes = sizeof(float) * (size_t)C;
    float *sd = d->host_f, *sdx = sd + C, *g = sdx + C, *is = g + C;
    double *v = d->host;
    /* this rank's sums: sum d (the bias gradient), sum d * xhat (the weight's) */
    TRY(down(p, sd, cx_pass_grad(p, bn->bias), bytes, where, err));
    TRY(down(p, sdx, cx_pass_grad(p, bn->weight), bytes, where, err));
    TRY(down(p, g, s->weight, bytes, where, err));
    TRY(down(p, is, s->invstd, bytes, where, err));
    for (int c = 0; c < C; c++) {
        v[c] = sd[c];
        v[C + c] = sdx[c];
    }
    v[2 * C] = (double)P;
    TRY(d->sum(d->user, v, 2 * (size_t)C + 1, err));
    double Pg = v[2 * C];
    /* dx = k (d - (S + xhat T) / P), k = gamma invstd: from this rank's
     * (S, T, P) to the global ones, dx += a + b xhat */
    for (int c = 0; c < C; c++) {
        double k = (double)g[c] * is[c];
        double a = k * (sd[c] / (double)P - v[c] / Pg);
        double b = k * (sdx[c] / (double)P - v[C + c] / Pg);
        sd[c] = (float)a;
        sdx[c] = (float)b;
    }
    TRY(up(p, d->dev_a, sd, bytes, where, err));
    TRY(up(p, d->dev_b, sdx, bytes, where, err));
    CX_OP(p->be, err, where, bn_backward_finish, x, C, P, s->mean, s->invstd, d->dev_a, d->dev_b,
          dx);
    return CX_OK;
}

cx_status cx_pass_sync_deferred_terms(cx_pass *p, const cx_bn_slot *s, int C, int64_t P,
                                      float *pa, float *pb, cx_err *err)
{
    const cx_pass_dist *d = p->dist;
    const cx_bn *bn = s->bn;
    const char *where = cx_pass_name(p, bn->idx);
    size_t bytes = sizeof(float) * (size_t)C;
    float *sd = d->host_f, *sdx = sd + C;
    double *v = d->host;
    TRY(down(p, sd, cx_pass_grad(p, bn->bias), bytes, where, err));
    TRY(down(p, sdx, cx_pass_grad(p, bn->weight), bytes, where, err));
    for (int c = 0; c < C; c++) {
        v[c] = sd[c];
        v[C + c] = sdx[c];
    }
    v[2 * C] = (double)P;
    TRY(d->sum(d->user, v, 2 * (size_t)C + 1, err));
    int64_t Pg = (int64_t)llround(v[2 * C]);
    for (int c = 0; c < C; c++) {
        sd[c] = (float)v[c];
        sdx[c] = (float)v[C + c];
    }
    TRY(up(p, d->dev_a, sdx, bytes, where, err));
    TRY(up(p, d->dev_b, sd, bytes, where, err));
    CX_OP(p->be, err, where, bn_deferred_terms, C, Pg, s->scale, d->dev_a, d->dev_b, pa, pb);
    return CX_OK;
}
