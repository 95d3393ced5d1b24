/* The registry of backends (kernels/backend.h): every kind of backend this
 * build has, found by id or by name, and the backend objects made from it.
 * A backend is added here with one line. */
#include "kernels/backend.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const cx_backend_entry cx_backend_ref_entry; /* kernels/ref/ref.c */
extern const cx_backend_entry cx_backend_cpu_entry; /* kernels/cpu/backend_cpu.c */

static const cx_backend_entry *const REGISTRY[] = {
    &cx_backend_ref_entry,
    &cx_backend_cpu_entry,
};
#define NREG ((int)(sizeof REGISTRY / sizeof *REGISTRY))

int cx_backend_count(void) { return NREG; }

const cx_backend_entry *cx_backend_at(int i) { return i >= 0 && i < NREG ? REGISTRY[i] : NULL; }

const cx_backend_entry *cx_backend_find(cx_backend_id id)
{
    for (int i = 0; i < NREG; i++)
        if (REGISTRY[i]->id == id)
            return REGISTRY[i];
    return NULL;
}

const cx_backend_entry *cx_backend_find_name(const char *name)
{
    for (int i = 0; name && i < NREG; i++)
        if (!strcmp(REGISTRY[i]->name, name))
            return REGISTRY[i];
    return NULL;
}

static char g_names[256];
static pthread_once_t g_names_once = PTHREAD_ONCE_INIT;

static void make_names(void)
{
    size_t k = 0;
    for (int i = 0; i < NREG && k < sizeof g_names; i++)
        k += (size_t)snprintf(g_names + k, sizeof g_names - k, "%s%s", i ? " " : "",
                              REGISTRY[i]->name);
}

const char *cx_backend_names(void)
{
    pthread_once(&g_names_once, make_names);
    return g_names;
}

const char *cx_backend_name(cx_backend_id id)
{
    const cx_backend_entry *e = cx_backend_find(id);
    return e ? e->name : NULL;
}

int cx_backend_parse(const char *name)
{
    const cx_backend_entry *e = cx_backend_find_name(name);
    return e ? (int)e->id : -1;
}

cx_status cx_backend_new_variant(const cx_backend_entry *e, int variant, cx_backend **out,
                                 cx_err *err)
{
    *out = NULL;
    if (variant < 0 || variant >= e->variants())
        return cx_seterr(err, CX_EARG, "backend %s has no variant %d on this machine", e->name,
                         variant);
    cx_backend *be = calloc(1, sizeof *be);
    if (!be)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    be->entry = e;
    be->variant = variant;
    cx_status st = e->create(be, variant, err);
    if (st) {
        free(be);
        return st;
    }
    *out = be;
    return CX_OK;
}

cx_status cx_backend_new(cx_backend_id id, cx_backend **out, cx_err *err)
{
    *out = NULL;
    const cx_backend_entry *e = cx_backend_find(id);
    if (!e)
        return cx_seterr(err, CX_EARG, "unknown backend %d (known: %s)", (int)id,
                         cx_backend_names());
    return cx_backend_new_variant(e, 0, out, err);
}

void cx_backend_free(cx_backend *be)
{
    if (!be)
        return;
    if (be->entry->destroy)
        be->entry->destroy(be);
    free(be);
}

const char *cx_backend_describe(const cx_backend *be, char *buf, size_t n)
{
    snprintf(buf, n, "%s (%s)", be->entry->name, be->entry->variant_name(be->variant));
    return buf;
}

cx_status cx_be_fail(const cx_backend *be, cx_status st, const char *op, const char *where,
                     cx_err *err)
{
    return cx_seterr(err, st, "backend %s: %s%s%s%s: %s", be->entry->name, op, where ? " (" : "",
                     where ? where : "", where ? ")" : "",
                     be->err.msg[0] ? be->err.msg : cx_status_name(st));
}

/* ---- what a backend runs here (public, by id) ---- */

static const char *ask(cx_backend_id id, int bf16)
{
    cx_backend *be = NULL;
    if (cx_backend_new(id, &be, NULL))
        return NULL;
    const char *s = bf16 ? be->ops->bf16_kernel(be) : be->ops->gemm_kernel(be);
    cx_backend_free(be);
    return s; /* static strings */
}

const char *cx_gemm_kernel(cx_backend_id backend) { return ask(backend, 0); }

const char *cx_bf16_kernel(cx_backend_id backend) { return ask(backend, 1); }

const char *cx_conv3x3_method(cx_backend_id backend)
{
    cx_backend *be = NULL;
    if (cx_backend_new(backend, &be, NULL))
        return NULL;
    /* DenseNet-121's first dense block, one image */
    int w = be->ops->conv_winograd && be->ops->conv_winograd(be, 128, 1, 56, 56, 32, 3);
    cx_backend_free(be);
    return w ? "winograd F(2x2,3x3)" : "direct";
}

cx_precision cx_precision_effective(cx_backend_id backend, cx_precision p)
{
    const char *k = cx_bf16_kernel(backend);
    if (p != CX_PRECISION_BF16 || !k || strcmp(k, "portable"))
        return p;
    const char *e = getenv("CHEXNET_BF16_KERNEL"); /* asked for by name: tests, comparisons */
    return e && !strcmp(e, "portable") ? p : CX_PRECISION_F32;
}
