/* chexnet bench: time the forward pass (and the training step). */
#define _GNU_SOURCE
#include "cli.h"

#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet bench [--model FILE | --arch densenet121] [--batch N] [--size S]\n"
            "                     [--repeat R] [--warmup W] [--threads T] [--backend cpu|ref]\n"
            "                     [--precision fp32|bf16] [--train] [--json]\n\n"
            "Times cx_forward (or, with --train, a training step: forward, backward and\n"
            "Adam) on random normalised input and reports the median over R repeats\n"
            "(default 10, after W = 2 warm-up runs), images/s, GFLOP/s (5.67 GFLOP per\n"
            "224x224 image forward for DenseNet-121, 3x that for a training step) and peak\n"
            "RSS. Without --model a freshly initialised model is used. --precision bf16\n"
            "times bf16 inference (see chexnet predict --help); the kernel used is printed.\n");
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Multiply-accumulates x 2 of the convolutions and the classifier. */
static double model_flops(cx_model *m, int S)
{
    const cx_config *c = cx_model_config(m);
    double fl = 0;
    int h = (S + 6 - 7) / 2 + 1;
    fl += 2.0 * c->num_init_features * c->in_channels * 49 * h * h;
    h = (h + 2 - 3) / 2 + 1;
    int ch = c->num_init_features, inner = c->bn_size * c->growth_rate;
    for (int b = 0; b < c->n_blocks; b++) {
        for (int l = 0; l < c->block_config[b]; l++) {
            int cin = ch + l * c->growth_rate;
            fl += 2.0 * inner * cin * h * h + 2.0 * c->growth_rate * inner * 9 * h * h;
        }
        ch += c->block_config[b] * c->growth_rate;
        if (b != c->n_blocks - 1) {
            fl += 2.0 * (ch / 2) * ch * h * h;
            ch /= 2;
            h /= 2;
        }
    }
    fl += 2.0 * ch * c->num_classes;
    return fl;
}

int cmd_bench(int argc, char **argv)
{
    enum { O_MODEL = 256, O_ARCH, O_BATCH, O_SIZE, O_REPEAT, O_WARMUP, O_THREADS, O_BACKEND,
           O_TRAIN, O_JSON, O_PRECISION };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL}, {"arch", required_argument, 0, O_ARCH},
        {"batch", required_argument, 0, O_BATCH}, {"size", required_argument, 0, O_SIZE},
        {"repeat", required_argument, 0, O_REPEAT}, {"warmup", required_argument, 0, O_WARMUP},
        {"threads", required_argument, 0, O_THREADS},
        {"backend", required_argument, 0, O_BACKEND}, {"train", no_argument, 0, O_TRAIN},
        {"json", no_argument, 0, O_JSON}, {"precision", required_argument, 0, O_PRECISION},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *model = NULL, *arch = "densenet121";
    long batch = 1, size = 224, repeat = 10, warmup = 2, threads = 0;
    int train = 0, json = 0, c, prec = CX_PRECISION_F32;
    cx_backend_id be = CX_BACKEND_CPU;
    cli_getopt g;
    cli_getopt_init(&g, "bench", argc, argv, "h", opts, 0, usage);
    while ((c = cli_getopt_next(&g)) != -1) {
        if (c == CLI_OPT_EXIT)
            return g.exit_code;
        int bad = 0;
        switch (c) {
        case O_MODEL: model = optarg; break;
        case O_ARCH: arch = optarg; break;
        case O_BATCH: bad = cli_opt_int(&g, 1, 4096, &batch) ? -1 : 0; break;
        case O_SIZE: bad = cli_opt_int(&g, 32, 4096, &size) ? -1 : 0; break;
        case O_REPEAT: bad = cli_opt_int(&g, 1, 100000, &repeat) ? -1 : 0; break;
        case O_WARMUP: bad = cli_opt_int(&g, 0, 100000, &warmup) ? -1 : 0; break;
        case O_THREADS: bad = cli_opt_int(&g, 0, 1024, &threads) ? -1 : 0; break;
        case O_BACKEND:
            if (!strcmp(optarg, "ref")) be = CX_BACKEND_REF;
            else if (!strcmp(optarg, "cpu")) be = CX_BACKEND_CPU;
            else bad = 1;
            break;
        case O_TRAIN: train = 1; break;
        case O_JSON: json = 1; break;
        case O_PRECISION: bad = (prec = cx_precision_parse(optarg)) < 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (bad) { /* < 0: cli_opt_int has said why */
            if (bad > 0)
                cli_opt_bad(&g, NULL);
            return 2;
        }
    }
    if (train && prec != CX_PRECISION_F32) {
        cli_error("bench", "--precision bf16 is for inference only (not with --train)");
        return 2;
    }
    if (train && batch < 2) {
        cli_error("bench", "--train needs --batch >= 2");
        return 2;
    }
    if (cx_precision_effective(be, (cx_precision)prec) != (cx_precision)prec) {
        cli_error("bench", "warning: this CPU has neither AMX nor AVX512-BF16, where bf16 would "
                           "be slower than fp32: timing fp32");
        prec = CX_PRECISION_F32;
    }
    cx_set_threads((int)threads);
    cx_err err = {0};
    cx_model *m = NULL;
    if (model) {
        if (cx_model_load(model, &m, &err))
            return cli_fail("bench", &err);
    } else {
        cx_config cfg;
        if (cx_config_preset(arch, 14, 3, &cfg, &err) || cx_model_new(&cfg, &m, &err))
            return cli_fail("bench", &err);
        cx_model_init(m, 0);
    }
    int C = cx_model_config(m)->in_channels, K = cx_model_num_classes(m);
    size_t nin = (size_t)batch * C * size * size;
    float *x = malloc(nin * sizeof *x), *y = calloc((size_t)batch * K, sizeof *y),
          *logits = malloc((size_t)batch * K * sizeof *logits);
    unsigned s = 1;
    for (size_t i = 0; i < nin; i++) {
        s = s * 1103515245u + 12345u;
        x[i] = ((s >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    for (long i = 0; i < batch * K; i += 3)
        y[i] = 1.0f;
    cx_ctx *ctx = NULL;
    cx_train *t = NULL;
    size_t arena;
    if (train) {
        if (cx_train_new(m, (int)batch, (int)size, (int)size, be, NULL, &t, &err))
            return cli_fail("bench", &err);
        arena = cx_train_arena_bytes(t);
    } else {
        if (cx_ctx_new(m, (int)batch, (int)size, (int)size, be, &ctx, &err) ||
            cx_ctx_set_precision(ctx, (cx_precision)prec, &err))
            return cli_fail("bench", &err);
        arena = cx_ctx_arena_bytes(ctx);
    }
    double *times = malloc(sizeof(double) * repeat);
    for (long r = -warmup; r < repeat; r++) {
        double t0 = cli_now();
        cx_status st;
        if (train) {
            double loss;
            st = cx_train_step(t, x, y, (int)batch, &loss, &err);
            if (!st)
                st = cx_adam_step(t, 1e-6f, &err);
        } else {
            st = cx_forward(ctx, x, (int)batch, logits, &err);
        }
        if (st)
            return cli_fail("bench", &err);
        if (r >= 0)
            times[r] = cli_now() - t0;
    }
    qsort(times, repeat, sizeof(double), cmp_d);
    double med = repeat % 2 ? times[repeat / 2] : 0.5 * (times[repeat / 2 - 1] + times[repeat / 2]);
    double fl = model_flops(m, (int)size) * batch * (train ? 3.0 : 1.0);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    if (json)
        printf("{\"what\": \"%s\", \"backend\": \"%s\", \"precision\": \"%s\", "
               "\"kernel\": \"%s\", \"conv3x3\": \"%s\", \"batch\": %ld, \"size\": %ld, "
               "\"threads\": %d, \"median_s\": %.6f, \"min_s\": %.6f, \"images_per_s\": %.3f, "
               "\"gflops\": %.2f, \"arena_mb\": %.1f, \"peak_rss_mb\": %.1f}\n",
               train ? "train_step" : "forward", cx_backend_name(be),
               cx_precision_name((cx_precision)prec),
               prec == CX_PRECISION_BF16 ? cx_bf16_kernel(be) : cx_gemm_kernel(be),
               prec == CX_PRECISION_BF16 ? "bf16 grid" : cx_conv3x3_method(be), batch, size,
               cx_get_threads(), med, times[0], batch / med, fl / med * 1e-9,
               arena / 1048576.0, ru.ru_maxrss / 1024.0);
    else
        printf("%s batch %ld %ldx%ld (%s, %s%s, %d threads): median %.2f ms (min %.2f), %.2f img/s, "
               "%.1f GFLOP/s, arena %.0f MiB, peak RSS %.0f MB\n",
               train ? "training step" : "forward", batch, size, size, cx_backend_name(be),
               prec == CX_PRECISION_BF16 ? "bf16 " : "fp32 ",
               prec == CX_PRECISION_BF16 ? cx_bf16_kernel(be) : cx_gemm_kernel(be), cx_get_threads(), med * 1e3, times[0] * 1e3, batch / med, fl / med * 1e-9,
               arena / 1048576.0, ru.ru_maxrss / 1024.0);
    free(times);
    free(x);
    free(y);
    free(logits);
    cx_ctx_free(ctx);
    cx_train_free(t);
    cx_model_free(m);
    return 0;
}
