/* chexnet predict: probabilities per finding (and CAM heat maps) for X-rays.
 *
 *   chexnet predict [--model FILE] [--format json|csv|table] [--ten-crop]
 *                   [--batch N] [--threads T] [--cam DIR]
 *                   [--cam-class NAME|all] [--cam-alpha A]
 *                   [--cam-scale image|model] [--no-cam-legend]
 *                   [--backend cpu|ref] INPUT...
 *
 * INPUT: an image file (PNG/JPEG/DICOM, format from its content), a directory
 * (recursed; files named *.png, *.jpg, *.jpeg, *.dcm, hidden files skipped; sorted
 * by path), or @LIST (one input per line; empty lines and # comments
 * skipped). Outputs are in input order, one per image:
 *   json:  {"image": "<path as given>", "probabilities": {"<class>": p, ...},
 *           "warnings": ["...", ...]}   (e.g. a lateral DICOM view; else [])
 *   csv:   header image,<class>,...  then one row per image (RFC 4180)
 *   table: per image, the findings sorted by probability with a bar (for
 *          models with up to 3 classes: one row per image)
 * With operating thresholds (the model's "thresholds" metadata, or
 * --threshold X for every class) each format gains a flag per class,
 * positive when p >= the class's threshold: json a last member "positive":
 * {"<class>": true|false, ...}; csv one more column per class after the
 * probabilities, "<class>:positive", 1 or 0; table "positive" by the class.
 * Without thresholds the output is as above, byte for byte.
 * Default: table when stdout is a terminal, json otherwise. Probabilities are
 * printed with 9 significant digits (float round trip).
 * A file that cannot be read or decoded gives one line on stderr naming it and
 * why; the others still run; the exit status is then 1 (2: usage errors).
 */
#define _GNU_SOURCE
#include "cli.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define CMD "predict"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet predict [--model FILE] [--format json|csv|table] [--ten-crop]\n"
            "                       [--batch N] [--threads T] [--cam DIR] [--threshold X]\n"
            "                       [--cam-class NAME|all] [--cam-alpha A]\n"
            "                       [--cam-scale image|model] [--no-cam-legend]\n"
            "                       [--backend cpu|ref] [--precision fp32|bf16] INPUT...\n\n"
            "Probabilities of each finding for chest X-ray images (PNG, JPEG or DICOM).\n\n"
            "  INPUT             an image, a directory (recursed: *.png, *.jpg, *.jpeg,\n"
            "                    *.dcm), @LIST (a text file with one input per line), or\n"
            "                    packs made by chexnet prepare (FILE.cxpack; rows are\n"
            "                    named by the pack's image names; no --cam, --ten-crop)\n"
            "  --model FILE      safetensors model (default: the bundled model, or\n"
            "                    $CHEXNET_MODEL)\n"
            "  --format F        json (one object per line), csv, or table\n"
            "                    (default: table on a terminal, json otherwise)\n"
            "  --ten-crop        resize to 256, average over 10 crops of 224\n"
            "                    (arnoweng/CheXNet's test-time augmentation; for\n"
            "                    models trained with random crops: a warning when\n"
            "                    the model's metadata says it was trained without)\n"
            "  --batch N         network batch (default 16; with --ten-crop each\n"
            "                    image takes 10 slots, at least one image per pass)\n"
            "  --threads T       threads for decoding and the network (default: all)\n"
            "  --cam DIR         write class activation map overlays to\n"
            "                    DIR/<image-stem>.<class>.png\n"
            "  --cam-class C     class for the maps: a class name, or 'all'\n"
            "                    (default: the most probable class of each image)\n"
            "  --cam-alpha A     overlay opacity in [0, 1] (default 0.5)\n"
            "  --cam-scale S     the maps' colour scale: 'model', one fixed range per\n"
            "                    class from the model's cam_range metadata, so colours\n"
            "                    compare between images and a confident negative looks\n"
            "                    cold; or 'image', each map's own min-max (it always has\n"
            "                    a hot spot). Default: model, or image (with a warning)\n"
            "                    when the model has no cam_range\n"
            "  --no-cam-legend   the overlay alone, at the X-ray's size (default: a band\n"
            "                    below the X-ray with the colour bar and its scale, the\n"
            "                    class, the probability and a research-use notice)\n"
            "  --backend B       cpu (BLAS + OpenMP, default) or ref (plain C)\n"
            "  --precision P     fp32 (default, matches PyTorch) or bf16: the dense\n"
            "                    blocks' convolutions in bfloat16 with fp32 sums,\n"
            "                    fast on CPUs with AMX or AVX512-BF16 (probabilities\n"
            "                    differ from fp32 by up to about 1e-2)\n"
            "  --threshold X     operating threshold in (0, 1) for every class, instead\n"
            "                    of the model's own (its \"thresholds\" metadata, from\n"
            "                    chexnet calibrate)\n\n"
            "Probabilities use the model's temperature when it has one. With thresholds\n"
            "(the model's or --threshold) each class also gets a positive flag\n"
            "(probability >= threshold): json \"positive\": {\"<class>\": true|false},\n"
            "csv columns \"<class>:positive\" (1/0) after the probabilities, table\n"
            "\"positive\" by the class.\n"
            "  --version         print the version\n\n"
            "%s\n"
            "A file that cannot be read is reported on stderr and skipped; the exit\n"
            "status is then 1.\n",
            cli_limits_help());
}

/* ------------------------------------------------------------ inputs */

/* ------------------------------------------------------------ output */

enum { FMT_JSON, FMT_CSV, FMT_TABLE };

/* CSV header: image, then one column per class (and with thresholds one
 * "<class>:positive" column per class) */
static void print_csv_header(const cx_model *m, const float *thr)
{
    fputs("image", stdout);
    for (int c = 0; c < cx_model_num_classes(m); c++) {
        fputc(',', stdout);
        cx_csv_field(stdout, cx_model_class_name(m, c));
    }
    for (int c = 0; thr && c < cx_model_num_classes(m); c++) {
        char *name = NULL;
        fputc(',', stdout);
        if (asprintf(&name, "%s:positive", cx_model_class_name(m, c)) >= 0) {
            cx_csv_field(stdout, name);
            free(name);
        }
    }
    fputc('\n', stdout);
}

/* info: what the loader reported (warnings: a lateral or non-chest DICOM...);
 * NULL for packs. thr: the operating thresholds, or NULL (no flags). */
static void print_result(int fmt, const cx_model *m, const char *path, const float *prob,
                         const cx_image_info *info, const float *thr)
{
    int nc = cx_model_num_classes(m);
    if (fmt != FMT_JSON && info)
        for (int w = 0; w < info->n_warnings; w++) {
            fflush(stdout);
            fprintf(stderr, "chexnet predict: warning: %s: %s\n", path, info->warnings[w]);
        }
    if (fmt == FMT_JSON) {
        fputs("{\"image\": ", stdout);
        cx_json_escape(stdout, path);
        fputs(", \"probabilities\": {", stdout);
        for (int c = 0; c < nc; c++) {
            if (c)
                fputs(", ", stdout);
            cx_json_escape(stdout, cx_model_class_name(m, c));
            printf(": %.9g", prob[c]);
        }
        fputs("}, \"warnings\": [", stdout);
        for (int w = 0; info && w < info->n_warnings; w++) {
            if (w)
                fputs(", ", stdout);
            cx_json_escape(stdout, info->warnings[w]);
        }
        fputs("]", stdout);
        if (thr) {
            fputs(", \"positive\": {", stdout);
            for (int c = 0; c < nc; c++) {
                if (c)
                    fputs(", ", stdout);
                cx_json_escape(stdout, cx_model_class_name(m, c));
                fputs(prob[c] >= thr[c] ? ": true" : ": false", stdout);
            }
            fputs("}", stdout);
        }
        fputs("}\n", stdout);
    } else if (fmt == FMT_CSV) {
        cx_csv_field(stdout, path);
        for (int c = 0; c < nc; c++)
            printf(",%.9g", prob[c]);
        for (int c = 0; thr && c < nc; c++)
            printf(",%d", prob[c] >= thr[c]);
        fputc('\n', stdout);
    } else if (nc <= 3) {
        /* few classes: one row per image under a header */
        static int header_done = 0;
        if (!header_done) {
            for (int c = 0; c < nc; c++)
                printf(thr ? "%12.12s  %-20s  %-8s  " : "%12.12s  %-20s  ",
                       cx_model_class_name(m, c), "", "");
            printf("image\n");
            header_done = 1;
        }
        for (int c = 0; c < nc; c++) {
            int bar = (int)lrintf(prob[c] * 20);
            printf("%12.4f  ", prob[c]);
            for (int b = 0; b < 20; b++)
                fputc(b < bar ? '#' : '.', stdout);
            printf("  ");
            if (thr)
                printf("%-8s  ", prob[c] >= thr[c] ? "positive" : "");
        }
        printf("%s\n", path);
    } else {
        int order[1024];
        int n = nc < 1024 ? nc : 1024;
        for (int c = 0; c < n; c++)
            order[c] = c;
        for (int i = 1; i < n; i++) /* insertion sort, descending */
            for (int j = i; j > 0 && prob[order[j]] > prob[order[j - 1]]; j--) {
                int t = order[j];
                order[j] = order[j - 1];
                order[j - 1] = t;
            }
        int wname = 8;
        for (int c = 0; c < n; c++) {
            int l = (int)strlen(cx_model_class_name(m, c));
            if (l > wname)
                wname = l;
        }
        printf("%s\n", path);
        for (int i = 0; i < n; i++) {
            float p = prob[order[i]];
            int bar = (int)lrintf(p * 30);
            printf("  %-*s %6.4f  ", wname, cx_model_class_name(m, order[i]), p);
            for (int b = 0; b < bar; b++)
                fputc('#', stdout);
            if (thr && p >= thr[order[i]])
                printf("%*s  positive", 30 - bar, "");
            fputc('\n', stdout);
        }
    }
}

/* ------------------------------------------------------------ CAM output */


/* DIR/<stem>.<class>.png with the class name made file-name safe. */
static char *cam_path(const char *dir, const char *image, const char *cls)
{
    const char *base = strrchr(image, '/');
    base = base ? base + 1 : image;
    char *stem = strdup(base);
    char *c2 = strdup(cls);
    char *out = NULL;
    if (stem && c2) {
        char *dot = strrchr(stem, '.');
        if (dot && dot != stem)
            *dot = 0;
        for (char *s = c2; *s; s++)
            if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-' || *s == '.'))
                *s = '_';
        char *name = NULL;
        if (asprintf(&name, "%s.%s.png", stem, c2) >= 0) {
            out = cli_path_join(dir, name);
            free(name);
        }
    }
    free(stem);
    free(c2);
    return out;
}

/* ------------------------------------------------------------ packs */

static int is_pack_arg(const char *a)
{
    size_t n = strlen(a);
    return n > 7 && !strcmp(a + n - 7, ".cxpack");
}

/* Printing the results of a batch of pack images. */
typedef struct {
    const cx_model *m;
    const cx_dataset *ds;
    int fmt;
    float *prob; /* [classes] */
    const float *thr; /* operating thresholds or NULL */
} pack_out;

static int print_pack_batch(void *user, const cli_batch *b)
{
    pack_out *po = user;
    const int nc = cx_model_num_classes(po->m);
    for (int j = 0; j < b->n; j++) {
        for (int c = 0; c < nc; c++)
            po->prob[c] = (float)b->prob[(size_t)j * nc + c];
        print_result(po->fmt, po->m, cx_dataset_name(po->ds, (int)b->index[j]), po->prob, NULL,
                     po->thr);
    }
    fflush(stdout);
    return 0;
}

/* Every image of a pack made by 'chexnet prepare': the threaded loader
 * (prefetching, no decoding) feeds the network; rows are named by the
 * pack's image names. */
static int predict_pack(const char *path, const cx_dataset *ds, cx_model *m, cx_ctx *ctx,
                        int batch, int fmt, const float *thr, long *done, cli_progress *prog)
{
    cx_err err = {0};
    cx_loader *ld = NULL;
    int *all = NULL, rc = 1;
    float *prob = NULL;
    cx_loader_opts lo;
    cx_loader_opts_default(&lo);
    lo.batch = batch;
    lo.size = cx_model_input_size(m);
    lo.channels = cx_model_config(m)->in_channels;
    cx_model_normalization(m, lo.mean, lo.std);
    lo.shuffle = 0;
    lo.augment = 0;
    lo.drop_last = 0;
    int nimg = cx_dataset_size(ds);
    all = malloc(sizeof(int) * (size_t)(nimg > 0 ? nimg : 1));
    prob = malloc(sizeof(float) * (size_t)cx_model_num_classes(m));
    if (!all || !prob) {
        cli_error(CMD, "out of memory");
        goto out;
    }
    for (int i = 0; i < nimg; i++)
        all[i] = i;
    if (cx_loader_new(ds, all, nimg, &lo, &ld, &err)) {
        cli_error(CMD, "%s: %s", path, err.msg);
        goto out;
    }
    pack_out po = {m, ds, fmt, prob, thr};
    cli_infer in = {0};
    in.m = m;
    in.ctx = ctx;
    in.per_pass = batch;
    in.loader = ld;
    in.on_batch = print_pack_batch;
    in.user = &po;
    in.done = done;
    in.progress = prog;
    switch (cli_infer_run(&in, &err)) {
    case CLI_INFER_OK:
        rc = 0;
        break;
    case CLI_INFER_SOURCE:
        cli_error(CMD, "%s: %s", path, err.msg);
        break;
    default:
        cli_error(CMD, "%s", err.msg);
    }
out:
    cx_loader_free(ld);
    free(all);
    free(prob);
    return rc;
}

static int predict_packs(cli_strvec *packs, cx_model *m, int batch, int fmt, const float *thr,
                         cx_backend_id backend, int prec)
{
    cx_err err = {0};
    long total = 0, done = 0;
    int rc = 1;
    cx_ctx *ctx = NULL;
    cx_dataset **ds = calloc(packs->n, sizeof *ds);
    if (!ds) {
        cli_error(CMD, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < packs->n; i++) {
        if (cx_pack_open(packs->v[i], &ds[i], &err)) {
            cli_error(CMD, "%s", err.msg);
            goto out;
        }
        total += cx_dataset_size(ds[i]);
    }
    int S = cx_model_input_size(m);
    if (batch > total && total > 0)
        batch = (int)total;
    if (cx_ctx_new(m, batch, S, S, backend, &ctx, &err) ||
        cx_ctx_set_precision(ctx, (cx_precision)prec, &err)) {
        rc = cli_fail(CMD, &err);
        goto out;
    }
    if (fmt == FMT_CSV)
        print_csv_header(m, thr);
    cli_progress prog;
    cli_progress_start(&prog, "predict", "img", total);
    rc = 0;
    for (size_t i = 0; i < packs->n && !rc; i++)
        rc = predict_pack(packs->v[i], ds[i], m, ctx, batch, fmt, thr, &done, &prog);
    cli_progress_end(&prog);
out:
    cx_ctx_free(ctx);
    for (size_t i = 0; i < packs->n; i++)
        cx_dataset_free(ds[i]);
    free(ds);
    return rc;
}

/* ------------------------------------------------------------ files */

/* Printing (and CAM maps of) a batch of image files. */
typedef struct {
    const cx_model *m;
    const cli_strvec *files;
    int fmt;
    cx_ctx *ctx, *cam_ctx; /* cam_ctx: single-crop pass for CAM after ten crops */
    const char *cam_dir;
    int cam_cls;           /* -1: most probable; -2: all */
    double alpha;
    cx_cam_scale cam_scale;
    const float *cam_lo, *cam_hi; /* [classes]: the model's cam_range */
    int cam_legend;
    float *cam;
    int cam_h, cam_w;
    float *prob;           /* [per_pass][classes] */
    float *cam_logits;     /* [per_pass][classes] (cam_ctx's pass) */
    int rc;
    const float *thr;      /* operating thresholds or NULL */
} files_out;

static void report_bad(void *user, size_t i, const cx_err *e)
{
    files_out *fo = user;
    fflush(stdout);
    cli_error(CMD, "%s", e->msg[0] ? e->msg : fo->files->v[i]);
    fo->rc = 1;
}

static int print_files_batch(void *user, const cli_batch *b)
{
    files_out *fo = user;
    const cx_model *m = fo->m;
    const int nc = cx_model_num_classes(m);
    float *prob = fo->prob;
    for (size_t k = 0; k < (size_t)b->n * nc; k++)
        prob[k] = (float)b->prob[k];
    for (int j = 0; j < b->n; j++)
        print_result(fo->fmt, m, fo->files->v[b->index[j]], prob + (size_t)j * nc, &b->info[j],
                     fo->thr);
    fflush(stdout);
    if (!fo->cam_dir)
        return 0;
    cx_err err = {0};
    if (fo->cam_ctx && cx_forward(fo->cam_ctx, b->plain, b->n, fo->cam_logits, &err)) {
        fo->rc = cli_fail(CMD, &err);
        return 1;
    }
    for (int j = 0; j < b->n; j++) {
        const char *path = fo->files->v[b->index[j]];
        int c0 = fo->cam_cls, c1 = fo->cam_cls + 1;
        if (fo->cam_cls == -2) {
            c0 = 0;
            c1 = nc;
        } else if (fo->cam_cls == -1) {
            c0 = 0;
            for (int c = 1; c < nc; c++)
                if (prob[(size_t)j * nc + c] > prob[(size_t)j * nc + c0])
                    c0 = c;
            c1 = c0 + 1;
        }
        for (int c = c0; c < c1; c++) {
            cx_image ov = {0};
            char *out = cam_path(fo->cam_dir, path, cx_model_class_name(m, c));
            cx_status st = out ? CX_OK : CX_ENOMEM;
            /* image j of the single-crop pass (with ten crops, cam_ctx's) */
            if (!st)
                st = cx_cam_compute(fo->cam_ctx ? fo->cam_ctx : fo->ctx, m, j, c, fo->cam,
                                    &fo->cam_h, &fo->cam_w, &err);
            cx_cam_style sty;
            cx_cam_style_default(&sty);
            sty.alpha = (float)fo->alpha;
            sty.scale = fo->cam_scale;
            if (fo->cam_scale == CX_CAM_SCALE_MODEL) {
                sty.lo = fo->cam_lo[c];
                sty.hi = fo->cam_hi[c];
            }
            sty.class_name = cx_model_class_name(m, c);
            sty.probability = prob[(size_t)j * nc + c];
            sty.legend = fo->cam_legend;
            if (!st)
                st = cx_cam_overlay_ex(&b->keep[j], fo->cam, fo->cam_h, fo->cam_w, &sty, &ov,
                                       NULL, &err);
            if (!st)
                st = cx_image_save_png(&ov, out, &err);
            if (st) {
                cli_error(CMD, "%s: CAM: %s", path,
                          st == CX_ENOMEM && !out ? "out of memory" : err.msg);
                fo->rc = 1;
            }
            cx_image_free(&ov);
            free(out);
        }
    }
    return 0;
}

/* ------------------------------------------------------------ main */

/* The operating thresholds of the output: --threshold for every class, else
 * the model's "thresholds", else none (NULL, and the output has no flags).
 * *oom set when out of memory. */
static float *output_thresholds(const cx_model *m, int given, double x, int *oom)
{
    const int nc = cx_model_num_classes(m);
    *oom = 0;
    if (!given && !cx_model_thresholds(m, NULL))
        return NULL;
    float *t = malloc(sizeof(float) * (size_t)(nc > 0 ? nc : 1));
    if (!t) {
        *oom = 1;
        return NULL;
    }
    if (!given)
        cx_model_thresholds(m, t);
    else
        for (int c = 0; c < nc; c++)
            t[c] = (float)x;
    return t;
}

int cmd_predict(int argc, char **argv)
{
    enum { O_MODEL = CLI_OPT_FIRST_FREE, O_FORMAT, O_TENCROP, O_BATCH, O_THREADS, O_CAM,
           O_CAMCLASS, O_CAMALPHA, O_BACKEND, O_PRECISION, O_CAMSCALE, O_NOCAMLEGEND,
           O_THRESHOLD };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"format", required_argument, 0, O_FORMAT},
        {"ten-crop", no_argument, 0, O_TENCROP},
        {"batch", required_argument, 0, O_BATCH},
        {"threads", required_argument, 0, O_THREADS},
        {"cam", required_argument, 0, O_CAM},
        {"cam-class", required_argument, 0, O_CAMCLASS},
        {"cam-alpha", required_argument, 0, O_CAMALPHA},
        {"cam-scale", required_argument, 0, O_CAMSCALE},
        {"no-cam-legend", no_argument, 0, O_NOCAMLEGEND},
        {"backend", required_argument, 0, O_BACKEND},
        {"precision", required_argument, 0, O_PRECISION},
        {"threshold", required_argument, 0, O_THRESHOLD},
        {0, 0, 0, 0}};
    const char *model_path = NULL, *cam_dir = NULL, *cam_class = NULL;
    double threshold = 0;
    int threshold_given = 0, thr_oom = 0;
    int fmt = isatty(STDOUT_FILENO) ? FMT_TABLE : FMT_JSON;
    int ten_crop = 0;
    long batch = 16, threads = 0;
    double alpha = 0.5;
    int cam_scale = -1; /* -1: model when the model has a cam_range, else image */
    int cam_legend = 1;
    cx_backend_id backend = CX_BACKEND_CPU;
    int prec = CX_PRECISION_F32;
    cli_getopt g;
    int opt;
    cli_getopt_init(&g, CMD, argc, argv, "", opts, CLI_LIMITS, usage);
    while ((opt = cli_getopt_next(&g)) != -1) {
        switch (opt) {
        case CLI_OPT_EXIT:
            return g.exit_code;
        case O_MODEL:
            model_path = optarg;
            break;
        case O_FORMAT:
            if (!strcmp(optarg, "json"))
                fmt = FMT_JSON;
            else if (!strcmp(optarg, "csv"))
                fmt = FMT_CSV;
            else if (!strcmp(optarg, "table"))
                fmt = FMT_TABLE;
            else {
                cli_error(CMD, "unknown --format '%s' (json, csv or table)", optarg);
                return 2;
            }
            break;
        case O_TENCROP:
            ten_crop = 1;
            break;
        case O_BATCH:
            if (cli_opt_int(&g, 1, 1024, &batch))
                return 2;
            break;
        case O_THREADS:
            if (cli_opt_int(&g, 0, 4096, &threads))
                return 2;
            break;
        case O_CAM:
            cam_dir = optarg;
            break;
        case O_CAMCLASS:
            cam_class = optarg;
            break;
        case O_CAMALPHA:
            if (cli_parse_double(optarg, &alpha) || alpha < 0 || alpha > 1) {
                cli_error(CMD, "--cam-alpha must be a number in [0, 1], not '%s'", optarg);
                return 2;
            }
            break;
        case O_CAMSCALE: {
            cx_cam_scale sc;
            if (cx_cam_scale_parse(optarg, &sc)) {
                cli_error(CMD, "unknown --cam-scale '%s' (image or model)", optarg);
                return 2;
            }
            cam_scale = (int)sc;
            break;
        }
        case O_NOCAMLEGEND:
            cam_legend = 0;
            break;
        case O_BACKEND:
            if (!strcmp(optarg, "cpu"))
                backend = CX_BACKEND_CPU;
            else if (!strcmp(optarg, "ref"))
                backend = CX_BACKEND_REF;
            else {
                cli_error(CMD, "unknown --backend '%s' (cpu or ref)", optarg);
                return 2;
            }
            break;
        case O_PRECISION:
            if ((prec = cx_precision_parse(optarg)) < 0) {
                cli_error(CMD, "unknown --precision '%s' (fp32 or bf16)", optarg);
                return 2;
            }
            break;
        case O_THRESHOLD:
            if (cli_parse_double(optarg, &threshold) || !(threshold > 0 && threshold < 1)) {
                cli_error(CMD, "--threshold must be a number in (0, 1), not '%s'", optarg);
                return 2;
            }
            threshold_given = 1;
            break;
        default:
            return 2;
        }
    }
    /* the inputs: borrowed from argv */
    cli_strvec args = {0};
    for (int i = optind; i < argc; i++) {
        if (args.n == args.cap) {
            size_t cap = args.cap ? args.cap * 2 : 16;
            char **q = realloc(args.v, cap * sizeof *q);
            if (!q) {
                cli_error(CMD, "out of memory");
                free(args.v);
                return 1;
            }
            args.v = q;
            args.cap = cap;
        }
        args.v[args.n++] = argv[i]; /* borrowed; freed with free(args.v) */
    }
    if (args.n == 0) {
        usage(stderr);
        free(args.v);
        return 2;
    }
    if ((cam_class || cam_scale >= 0 || !cam_legend) && !cam_dir) {
        cli_error(CMD, "--cam-class, --cam-scale and --no-cam-legend need --cam DIR");
        free(args.v);
        return 2;
    }
    if (!model_path) {
        model_path = cli_default_model();
        if (!model_path) {
            cli_error(CMD, "no --model given and no default model found (set "
                           "CHEXNET_MODEL or install chexnet's models)");
            free(args.v);
            return 2;
        }
    }
    if (cx_precision_effective(backend, (cx_precision)prec) != (cx_precision)prec)
        cli_error(CMD, "warning: this CPU has neither AMX nor AVX512-BF16, where bf16 would be "
                       "slower than fp32: running fp32");
    cx_set_threads((int)threads); /* 0: all cores */

    /* packs made by 'chexnet prepare': all inputs, or none */
    size_t npack = 0;
    for (size_t i = 0; i < args.n; i++)
        npack += is_pack_arg(args.v[i]);
    if (npack) {
        if (npack != args.n || cam_dir || ten_crop) {
            cli_error(CMD, "a .cxpack input goes alone (other packs only), without --cam or "
                           "--ten-crop");
            free(args.v);
            return 2;
        }
        cli_strvec packs = {args.v, args.n, args.cap};
        cx_err perr = {0};
        cx_model *pm = NULL;
        if (cx_model_load(model_path, &pm, &perr)) {
            free(args.v);
            return cli_fail(CMD, &perr);
        }
        float *pthr = output_thresholds(pm, threshold_given, threshold, &thr_oom);
        int prc = 1;
        if (thr_oom)
            cli_error(CMD, "out of memory");
        else
            prc = predict_packs(&packs, pm, (int)batch, fmt, pthr, backend, prec);
        free(pthr);
        cx_model_free(pm);
        free(args.v);
        return prc;
    }

    /* inputs */
    int nerr = 0;
    cli_strvec files = {0};
    for (size_t i = 0; i < args.n; i++)
        if (cli_add_input(CMD, args.v[i], 1, &files, &nerr)) {
            cli_error(CMD, "out of memory while listing inputs");
            cli_strvec_free(&files);
            free(args.v);
            return 1;
        }
    free(args.v);

    cx_err err = {0};
    cx_model *m = NULL;
    if (cx_model_load(model_path, &m, &err)) {
        cli_fail(CMD, &err);
        cli_strvec_free(&files);
        return 1;
    }
    if (ten_crop)
        cli_ten_crop_warn(CMD, m);
    const int nc = cx_model_num_classes(m);
    float *thr = output_thresholds(m, threshold_given, threshold, &thr_oom);
    if (thr_oom) {
        cli_error(CMD, "out of memory");
        cx_model_free(m);
        cli_strvec_free(&files);
        return 1;
    }
    int cam_cls = -1; /* -1: most probable; -2: all */
    if (cam_class) {
        if (!strcasecmp(cam_class, "all"))
            cam_cls = -2;
        else {
            for (int c = 0; c < nc; c++)
                if (!strcasecmp(cam_class, cx_model_class_name(m, c)))
                    cam_cls = c;
            if (cam_cls == -1) {
                fprintf(stderr, "chexnet predict: unknown --cam-class '%s'; the model's classes:",
                        cam_class);
                for (int c = 0; c < nc; c++)
                    fprintf(stderr, " %s", cx_model_class_name(m, c));
                fputc('\n', stderr);
                free(thr);
                cx_model_free(m);
                cli_strvec_free(&files);
                return 2;
            }
        }
    }
    /* the colour scale: the model's cam_range, when it has one */
    float *cam_lo = NULL, *cam_hi = NULL;
    if (cam_dir) {
        int found = 0;
        cam_lo = malloc(sizeof(float) * (size_t)nc);
        cam_hi = malloc(sizeof(float) * (size_t)nc);
        if (!cam_lo || !cam_hi || cx_model_cam_range(m, model_path, cam_lo, cam_hi, &found, &err)) {
            if (!cam_lo || !cam_hi)
                cli_error(CMD, "out of memory");
            else
                cli_fail(CMD, &err);
            free(cam_lo);
            free(cam_hi);
            free(thr);
            cx_model_free(m);
            cli_strvec_free(&files);
            return 1;
        }
        if (!found && cam_scale == CX_CAM_SCALE_MODEL) {
            cli_error(CMD, "--cam-scale model: %s has no \"cam_range\" metadata (the fixed "
                           "range of each class's maps; chexnet calibrate adds it); use "
                           "--cam-scale image",
                      model_path);
            free(cam_lo);
            free(cam_hi);
            free(thr);
            cx_model_free(m);
            cli_strvec_free(&files);
            return 1;
        }
        if (cam_scale < 0) {
            cam_scale = found ? CX_CAM_SCALE_MODEL : CX_CAM_SCALE_IMAGE;
            if (!found)
                cli_error(CMD, "warning: %s has no \"cam_range\" metadata: the heat maps use "
                               "each image's own min-max (--cam-scale image), so every map "
                               "has a hot spot; chexnet calibrate adds the range",
                          model_path);
        }
    }
    if (cam_dir && cx_mkdir_p(cam_dir, &err)) {
        cli_error(CMD, "the CAM folder: %s", err.msg);
        free(cam_lo);
        free(cam_hi);
        free(thr);
        cx_model_free(m);
        cli_strvec_free(&files);
        return 1;
    }

    if (cam_dir && files.n > 1) {
        /* maps are named by the image's stem: warn when two images share one */
        char **stems = malloc(files.n * sizeof *stems);
        if (stems) {
            size_t k = 0;
            for (size_t i = 0; i < files.n; i++) {
                char *p = cam_path("", files.v[i], "");
                if (p)
                    stems[k++] = p;
            }
            qsort(stems, k, sizeof *stems, cli_cmp_str);
            for (size_t i = 1; i < k; i++)
                if (!strcmp(stems[i], stems[i - 1]) && (i < 2 || strcmp(stems[i], stems[i - 2])))
                    fprintf(stderr,
                            "chexnet predict: warning: several images are named '%.*s': their "
                            "CAM files overwrite each other\n",
                            (int)(strlen(stems[i]) > 6 ? strlen(stems[i]) - 6 : 0),
                            stems[i] + 1);
            for (size_t i = 0; i < k; i++)
                free(stems[i]);
            free(stems);
        }
    }

    const int S = cx_model_input_size(m);
    const int crops = ten_crop ? 10 : 1;
    int per_pass = ten_crop ? (int)(batch / 10 > 0 ? batch / 10 : 1) : (int)batch;
    if ((size_t)per_pass > files.n && files.n > 0)
        per_pass = (int)files.n;
    if (per_pass < 1)
        per_pass = 1;
    int rc = nerr ? 1 : 0;

    if (fmt == FMT_CSV) {
        print_csv_header(m, thr);
        fflush(stdout);
    }
    if (files.n == 0) {
        if (!nerr)
            cli_error(CMD, "no input images");
        free(cam_lo);
        free(cam_hi);
        free(thr);
        cx_model_free(m);
        cli_strvec_free(&files);
        return 1;
    }

    cx_ctx *ctx = NULL, *cam_ctx = NULL;
    float *cam = NULL;
    int cam_h = 0, cam_w = 0;
    if (cx_ctx_new(m, per_pass * crops, S, S, backend, &ctx, &err) ||
        cx_ctx_set_precision(ctx, (cx_precision)prec, &err)) {
        rc = cli_fail(CMD, &err);
        goto done;
    }
    if (cam_dir && ten_crop &&
        (cx_ctx_new(m, per_pass, S, S, backend, &cam_ctx, &err) ||
         cx_ctx_set_precision(cam_ctx, (cx_precision)prec, &err))) {
        rc = cli_fail(CMD, &err);
        goto done;
    }
    float *prob = malloc(sizeof(float) * (size_t)nc * per_pass);
    float *cam_logits = malloc(sizeof(float) * (size_t)nc * per_pass);
    if (!prob || !cam_logits) {
        free(prob);
        free(cam_logits);
        cli_error(CMD, "out of memory for a batch of %d", per_pass);
        rc = 1;
        goto done;
    }
    if (cam_dir) {
        cx_cam_compute(cam_ctx ? cam_ctx : ctx, m, 0, 0, NULL, &cam_h, &cam_w, NULL);
        cam = malloc(sizeof(float) * (size_t)(cam_h > 0 ? cam_h : 1) * (cam_w > 0 ? cam_w : 1));
        if (!cam) {
            cli_error(CMD, "out of memory");
            free(prob);
            free(cam_logits);
            rc = 1;
            goto done;
        }
    }

    cli_progress prog;
    cli_progress_start(&prog, "predict", "img", (long)files.n);
    files_out fo = {m, &files, fmt, ctx, cam_ctx, cam_dir, cam_cls, alpha,
                    (cx_cam_scale)(cam_scale < 0 ? 0 : cam_scale), cam_lo, cam_hi, cam_legend,
                    cam, cam_h, cam_w, prob, cam_logits, rc, thr};
    long done_n = 0;
    cli_infer in = {0};
    in.m = m;
    in.ctx = ctx;
    in.per_pass = per_pass;
    in.ten_crop = ten_crop;
    in.files = files.v;
    in.n_files = files.n;
    in.keep_images = cam_dir != NULL;
    in.want_info = 1;
    in.plain_too = cam_dir != NULL;
    in.on_bad = report_bad;
    in.on_batch = print_files_batch;
    in.user = &fo;
    in.done = &done_n;
    in.progress = &prog;
    cli_infer_status is = cli_infer_run(&in, &err);
    rc = fo.rc;
    if (is != CLI_INFER_OK && is != CLI_INFER_STOPPED)
        rc = cli_fail(CMD, &err);
    cli_progress_end(&prog);
    free(prob);
    free(cam_logits);
done:
    free(thr);
    free(cam);
    free(cam_lo);
    free(cam_hi);
    cx_ctx_free(cam_ctx);
    cx_ctx_free(ctx);
    cx_model_free(m);
    cli_strvec_free(&files);
    return rc;
}
