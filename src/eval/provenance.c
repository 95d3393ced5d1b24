/* Provenance of reports: version, time, command line, and the SHA-256 of
 * every input file (OpenSSL's libcrypto EVP interface). */
#define _GNU_SOURCE
#include "chexnet.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

cx_status cx_sha256_file(const char *path, char hex[65], long long *size, cx_err *err)
{
    hex[0] = 0;
    if (size)
        *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return cx_seterr(err, CX_EIO, "%s: %s", path, strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        fclose(f);
        return cx_seterr(err, CX_ENOMEM, "%s: cannot start a SHA-256 digest", path);
    }
    unsigned char buf[1 << 16];
    long long total = 0;
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        if (EVP_DigestUpdate(ctx, buf, got) != 1) {
            EVP_MD_CTX_free(ctx);
            fclose(f);
            return cx_seterr(err, CX_EIO, "%s: SHA-256 update failed", path);
        }
        total += (long long)got;
    }
    int bad = ferror(f);
    int e = errno;
    fclose(f);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (bad) {
        EVP_MD_CTX_free(ctx);
        return cx_seterr(err, CX_EIO, "%s: read error: %s", path, strerror(e));
    }
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32) {
        EVP_MD_CTX_free(ctx);
        return cx_seterr(err, CX_EIO, "%s: SHA-256 failed", path);
    }
    EVP_MD_CTX_free(ctx);
    static const char *X = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = X[md[i] >> 4];
        hex[2 * i + 1] = X[md[i] & 15];
    }
    hex[64] = 0;
    if (size)
        *size = total;
    return CX_OK;
}

/* Appends arg to s (at *n of cap), quoted for a POSIX shell when needed. */
static int needs_quotes(const char *a)
{
    if (!*a)
        return 1;
    for (const char *c = a; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("-_./=:,+@%", *c)))
            return 1;
    return 0;
}

static void put_arg(char *s, size_t *pn, const char *a)
{
    size_t n = *pn;
    if (!needs_quotes(a)) {
        size_t l = strlen(a);
        memcpy(s + n, a, l);
        *pn = n + l;
        return;
    }
    /* '...' with each ' written as '\'' */
    s[n++] = '\'';
    for (const char *c = a; *c; c++) {
        if (*c == '\'') {
            memcpy(s + n, "'\\''", 4);
            n += 4;
        } else
            s[n++] = *c;
    }
    s[n++] = '\'';
    *pn = n;
}

cx_status cx_provenance_init(cx_provenance *p, const char *program, int argc,
                             char *const *argv, cx_err *err)
{
    memset(p, 0, sizeof *p);
    snprintf(p->version, sizeof p->version, "%s", CX_VERSION);
    time_t now = time(NULL);
    struct tm tmv;
    if (gmtime_r(&now, &tmv))
        strftime(p->created, sizeof p->created, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    size_t cap = 1 + (program ? 4 * strlen(program) + 3 : 0);
    for (int i = 0; i < argc; i++)
        cap += 4 * strlen(argv[i]) + 3;
    char *s = malloc(cap);
    if (!s)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    size_t n = 0;
    if (program)
        put_arg(s, &n, program);
    for (int i = 0; i < argc; i++) {
        if (n)
            s[n++] = ' ';
        put_arg(s, &n, argv[i]);
    }
    s[n] = 0;
    p->command_line = s;
    return CX_OK;
}

cx_status cx_provenance_add_input(cx_provenance *p, const char *role, const char *path,
                                  cx_err *err)
{
    cx_prov_input *v = realloc(p->inputs, (size_t)(p->n_inputs + 1) * sizeof *v);
    if (!v)
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    p->inputs = v;
    cx_prov_input *x = &v[p->n_inputs];
    memset(x, 0, sizeof *x);
    cx_status st = cx_sha256_file(path, x->sha256, &x->size, err);
    if (st)
        return st;
    x->role = strdup(role ? role : "input");
    x->path = strdup(path);
    if (!x->role || !x->path) {
        free(x->role);
        free(x->path);
        return cx_seterr(err, CX_ENOMEM, "out of memory");
    }
    p->n_inputs++;
    return CX_OK;
}

void cx_provenance_free(cx_provenance *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_inputs; i++) {
        free(p->inputs[i].role);
        free(p->inputs[i].path);
    }
    free(p->inputs);
    free(p->command_line);
    memset(p, 0, sizeof *p);
}
