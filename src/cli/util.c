/* Shared helpers of the CLI: errors, number parsing, progress bar. */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "chexnet %s: ", cmd ? cmd : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_fail(const char *cmd, const cx_err *err)
{
    cli_error(cmd, "%s", err && err->msg[0] ? err->msg : "error");
    return 1;
}

int cli_parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_double(const char *s, double *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || !isfinite(v))
        return -1;
    *out = v;
    return 0;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void cli_progress_start(cli_progress *p, const char *label, const char *unit, long total)
{
    memset(p, 0, sizeof *p);
    p->label = label;
    p->unit = unit;
    p->total = total;
    p->t0 = cli_now();
    const char *env = getenv("CHEXNET_PROGRESS");
    if (env && *env)
        p->enabled = atoi(env) != 0;
    else
        p->enabled = isatty(STDERR_FILENO);
}

static void fmt_time(double s, char *buf, size_t n)
{
    if (!isfinite(s) || s < 0)
        s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else
        snprintf(buf, n, "%02ld:%02ld", t / 60, t % 60);
}

static void progress_draw(cli_progress *p, int final)
{
    double now = cli_now(), el = now - p->t0;
    double rate = el > 0 ? p->done / el : 0;
    double eta = rate > 0 ? (p->total - p->done) / rate : 0;
    char e1[32], e2[32];
    fmt_time(el, e1, sizeof e1);
    fmt_time(eta, e2, sizeof e2);
    int width = 30, fill = p->total > 0 ? (int)((double)p->done / p->total * width) : 0;
    if (fill > width)
        fill = width;
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = 0;
    fprintf(stderr, "\r%s [%s] %ld/%ld %.1f %s/s elapsed %s ETA %s%s", p->label, bar,
            p->done, p->total, rate, p->unit, e1, final ? "00:00" : e2, final ? "\n" : "  ");
    fflush(stderr);
    p->last_draw = now;
    p->drawn = 1;
}

void cli_progress_update(cli_progress *p, long done)
{
    p->done = done;
    if (!p->enabled)
        return;
    double now = cli_now();
    if (now - p->t0 < 1.0 || now - p->last_draw < 0.2)
        return;
    progress_draw(p, 0);
}

void cli_progress_end(cli_progress *p)
{
    if (p->enabled && p->drawn)
        progress_draw(p, 1);
}

static int file_exists(const char *p)
{
    return access(p, R_OK) == 0;
}

const char *cli_default_model(void)
{
    static char buf[PATH_MAX + 64];
    const char *env = getenv("CHEXNET_MODEL");
    if (env && *env)
        return env;
    const char *name = "chexnet-pneumonia.safetensors";
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            /* installed: PREFIX/bin/chexnet -> PREFIX/share/chexnet/models */
            snprintf(buf, sizeof buf, "%s/../share/chexnet/models/%s", exe, name);
            if (file_exists(buf))
                return buf;
            /* build tree: SRC/build/chexnet -> SRC/models */
            snprintf(buf, sizeof buf, "%s/../models/%s", exe, name);
            if (file_exists(buf))
                return buf;
        }
    }
#ifdef CX_INSTALL_DATADIR
    snprintf(buf, sizeof buf, "%s/models/%s", CX_INSTALL_DATADIR, name);
    if (file_exists(buf))
        return buf;
#endif
#ifdef CX_SOURCE_DIR
    snprintf(buf, sizeof buf, "%s/models/%s", CX_SOURCE_DIR, name);
    if (file_exists(buf))
        return buf;
#endif
    return NULL;
}

const char *cli_plural(long n, const char *one, const char *many)
{
    static __thread char buf[4][160];
    static __thread int k;
    char *b = buf[k++ % 4];
    snprintf(b, sizeof buf[0], "%ld %s", n, n == 1 ? one : many);
    return b;
}

const char *cli_path_in(const char *dir, const char *name)
{
    static __thread char buf[4][4200];
    static __thread int k;
    char *b = buf[k++ % 4];
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    if (n == 1 && dir[0] == '/')
        snprintf(b, sizeof buf[0], "/%s", name);
    else
        snprintf(b, sizeof buf[0], "%.*s/%s", (int)n, dir, name);
    return b;
}

void cli_print_version(void)
{
    printf("chexnet %s\n", CX_VERSION);
    printf("kernels: cpu variant %s (built: %s), fp32 GEMM %s, bf16 %s%s\n",
           cx_cpu_variant_name(), cx_cpu_variants_built(), cx_gemm_kernel(CX_BACKEND_CPU),
           cx_bf16_kernel(CX_BACKEND_CPU),
           cx_precision_effective(CX_BACKEND_CPU, CX_PRECISION_BF16) == CX_PRECISION_BF16
               ? ""
               : " (slower than fp32 here: --precision bf16 runs fp32)");
    printf("3x3 convolutions (fp32): %s\n", cx_conv3x3_method(CX_BACKEND_CPU));
}

void cli_ten_crop_warn(const char *cmd, const cx_model *m)
{
    const char *aug = cx_model_meta(m, "augmentation");
    if (!aug || strstr(aug, "\"crop_scale\""))
        return;
    fprintf(stderr,
            "chexnet %s: warning: --ten-crop: this model was trained without random crops "
            "(augmentation %s); its 10 crops of a 256 px resize show the X-ray at a scale it "
            "never saw, which can move its scores and its thresholds: compare with single-crop "
            "on validation images\n",
            cmd, aug);
}
