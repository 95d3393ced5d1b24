/* chexnet calibrate: fit a model's calibration on labelled images (a
 * validation split) and write it into a new model file: per-class
 * temperature (NLL), per-class operating thresholds by a stated rule, and
 * the range of the raw class activation maps.
 *
 *   chexnet calibrate --model FILE --labels FILE [--images DIR]
 *                     [--list FILE | --split-dir DIR] -o OUT [options]
 */
#define _GNU_SOURCE
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CMD "calibrate"
#define MAX_CLASSES 1024

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet calibrate [--model FILE] --labels FILE [--images DIR]\n"
            "                         [--list FILE | --split-dir DIR] -o OUT [options]\n\n"
            "Runs the model on labelled calibration images (a validation split: never\n"
            "the images the model will be judged on) and writes the model again to OUT\n"
            "(atomically; OUT may be the model file itself) with this metadata:\n"
            "  temperature       per class, the T minimising the mean binary cross-\n"
            "                    entropy (NLL) of sigmoid(logit / T) on these images\n"
            "                    (T in [0.01, 100]); predict, evaluate --model and serve\n"
            "                    then give sigmoid(logit / T)\n"
            "  thresholds        per class, the operating threshold chosen on the\n"
            "                    (temperature-scaled) probabilities: positive when\n"
            "                    p >= threshold\n"
            "  threshold_method  how the thresholds were chosen\n"
            "  cam_range         per class, [1st, 99th] percentile of the raw class\n"
            "                    activation map values pooled over these images\n"
            "                    (predict --cam-scale model)\n\n"
            "images (the model's classes are looked up among the label columns):\n"
            "  --labels FILE       a manifest CSV (path + 0/1 class columns), ChestX-ray14\n"
            "                      Data_Entry_2017*.csv[.gz], a split list (IMAGE L1 ...),\n"
            "                      or a pack from chexnet prepare\n"
            "  --manifest FILE     the same as --labels\n"
            "  --images DIR        image folder (manifest paths are relative to it,\n"
            "                      default: the manifest's folder; ChestX-ray14 names are\n"
            "                      searched for in it recursively); also --image-dir\n"
            "  --patient-column C  the manifest's patient column\n"
            "  --list FILE         only the images of this list (one name per line,\n"
            "                      optionally followed by labels)\n"
            "  --split-dir DIR     only DIR/val.txt: the validation split that chexnet\n"
            "                      train (OUT/split/) and chexnet split write\n"
            "                      (neither: every image of --labels)\n"
            "options:\n"
            "  --model FILE        the model (default: the bundled model, or\n"
            "                      $CHEXNET_MODEL)\n"
            "  -o, --out FILE      the calibrated model (required)\n"
            "  --threshold RULE    how each class's threshold is chosen:\n"
            "                        youden         max sensitivity + specificity - 1\n"
            "                                       (default)\n"
            "                        sensitivity=X  the highest threshold with\n"
            "                                       sensitivity >= X (0..1)\n"
            "                        specificity=X  the lowest threshold with\n"
            "                                       specificity >= X (0..1)\n"
            "                        f1             max F1\n"
            "                        fixed=X        X (0..1) for every class\n"
            "                      The candidates are the probabilities of the images;\n"
            "                      where several reach the same best youden or f1 value\n"
            "                      the highest wins (fewest positives).\n"
            "  --no-temperature    fit no temperature (the model's own, if any, stays)\n"
            "  --no-cam-range      compute no cam_range (the model's own, if any, stays)\n"
            "  --ece-bins N        equal-width bins of the expected calibration error\n"
            "                      (default 15)\n"
            "  --batch N           images per forward pass (default 16)\n"
            "  --threads T         threads (default: all cores)\n"
            "  --json              print the summary as one JSON object\n"
            "  --version           print the version\n\n"
            "%s\n"
            "The summary gives, per class: positives and negatives, T, the NLL and the\n"
            "expected calibration error (ECE) before (the model's probabilities as\n"
            "given) and after, the threshold with the sensitivity and specificity it\n"
            "has on these images, and the CAM range. Single-crop inference (a\n"
            "temperature fitted here also applies to predict --ten-crop's crops).\n"
            "Exit status: 0 written, 1 error, 2 usage.\n",
            cli_limits_help());
}

/* ------------------------------------------------------------ inference */

typedef struct {
    const cx_model *m;
    cx_ctx *ctx;
    int nc;
    int files_mode;      /* batch indices are positions; else dataset indices */
    const int *pos_of;   /* dataset index -> position (loader mode) */
    float *logits;       /* [n][nc] by position */
    float **cams;        /* [nc] -> [n][h*w] by position, or NULL */
    int cam_hw;
    cx_err err;
    int failed;
} collect_ctx;

static int collect(void *user, const cli_batch *b)
{
    collect_ctx *cc = user;
    for (int j = 0; j < b->n; j++) {
        size_t pos = cc->files_mode ? b->index[j] : (size_t)cc->pos_of[b->index[j]];
        memcpy(cc->logits + pos * cc->nc, b->logits + (size_t)j * cc->nc,
               sizeof(float) * (size_t)cc->nc);
        for (int c = 0; cc->cams && c < cc->nc; c++) {
            int h, w;
            if (cx_cam_compute(cc->ctx, cc->m, j, c, cc->cams[c] + pos * cc->cam_hw, &h, &w,
                               &cc->err)) {
                cc->failed = 1;
                return 1;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------ output */

static void json_num(FILE *f, double v, int digits)
{
    if (isfinite(v))
        fprintf(f, "%.*g", digits, v);
    else
        fputs("null", f);
}

/* shortest float text that reads back exactly */
static void fmt_float(char *buf, size_t n, float v)
{
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtof(buf, NULL) == v)
            return;
    }
}

typedef struct {
    int pos, neg;
    double T_before, T, nll_before, nll_after, ece_before, ece_after, sens, spec;
    int T_at_bound;
    float thr;
    float cam_lo, cam_hi;
} class_result;

/* parses --threshold */
static int parse_rule(const char *s, cx_threshold_rule *rule, double *x)
{
    static const struct {
        const char *name;
        cx_threshold_rule rule;
        int arg;
    } R[] = {{"youden", CX_THRESHOLD_YOUDEN, 0},
             {"f1", CX_THRESHOLD_F1, 0},
             {"sensitivity", CX_THRESHOLD_SENSITIVITY, 1},
             {"specificity", CX_THRESHOLD_SPECIFICITY, 1},
             {"fixed", CX_THRESHOLD_FIXED, 1}};
    for (size_t i = 0; i < sizeof R / sizeof R[0]; i++) {
        size_t l = strlen(R[i].name);
        if (strncmp(s, R[i].name, l))
            continue;
        if (!R[i].arg)
            return s[l] ? -1 : (*rule = R[i].rule, 0);
        if (s[l] != '=' || cli_parse_double(s + l + 1, x))
            return -1;
        if (R[i].rule == CX_THRESHOLD_FIXED ? !(*x > 0 && *x < 1) : !(*x >= 0 && *x <= 1))
            return -1;
        *rule = R[i].rule;
        return 0;
    }
    return -1;
}

static void describe_rule(char *buf, size_t n, cx_threshold_rule rule, double x, int images,
                          int temperature)
{
    const char *on = temperature ? "temperature-scaled probabilities" : "probabilities";
    switch (rule) {
    case CX_THRESHOLD_YOUDEN:
        snprintf(buf, n, "Youden's J (max sensitivity + specificity - 1) on the %s of %d "
                         "calibration images",
                 on, images);
        break;
    case CX_THRESHOLD_F1:
        snprintf(buf, n, "max F1 on the %s of %d calibration images", on, images);
        break;
    case CX_THRESHOLD_SENSITIVITY:
        snprintf(buf, n, "the highest threshold with sensitivity >= %g on the %s of %d "
                         "calibration images",
                 x, on, images);
        break;
    case CX_THRESHOLD_SPECIFICITY:
        snprintf(buf, n, "the lowest threshold with specificity >= %g on the %s of %d "
                         "calibration images",
                 x, on, images);
        break;
    case CX_THRESHOLD_FIXED:
        snprintf(buf, n, "fixed at %g", x);
        break;
    }
}

/* ------------------------------------------------------------ main */

int cmd_calibrate(int argc, char **argv)
{
    enum { O_MODEL = CLI_OPT_FIRST_FREE, O_LABELS, O_PACK, O_IMAGES, O_PATIENT, O_LIST,
           O_SPLITDIR, O_THRESHOLD, O_NOTEMP, O_NOCAM, O_BINS, O_BATCH, O_THREADS, O_JSON };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"labels", required_argument, 0, O_LABELS},
        {"manifest", required_argument, 0, O_LABELS},
        {"images", required_argument, 0, O_IMAGES},
        {"image-dir", required_argument, 0, O_IMAGES},
        {"patient-column", required_argument, 0, O_PATIENT},
        {"list", required_argument, 0, O_LIST},
        {"split-dir", required_argument, 0, O_SPLITDIR},
        {"out", required_argument, 0, 'o'},
        {"threshold", required_argument, 0, O_THRESHOLD},
        {"no-temperature", no_argument, 0, O_NOTEMP},
        {"no-cam-range", no_argument, 0, O_NOCAM},
        {"ece-bins", required_argument, 0, O_BINS},
        {"batch", required_argument, 0, O_BATCH},
        {"threads", required_argument, 0, O_THREADS},
        {"json", no_argument, 0, O_JSON},
        {0, 0, 0, 0}};
    const char *model_path = NULL, *labels = NULL, *images = NULL, *patient = NULL,
               *list = NULL, *split_dir = NULL, *out = NULL, *rule_arg = "youden";
    int no_temp = 0, no_cam = 0, json = 0;
    long bins = 15, batch = 16, threads = 0;
    cx_threshold_rule rule = CX_THRESHOLD_YOUDEN;
    double rule_x = 0;
    cli_getopt g;
    int opt;
    cli_getopt_init(&g, CMD, argc, argv, "o:", opts, CLI_LIMITS, usage);
    while ((opt = cli_getopt_next(&g)) != -1) {
        switch (opt) {
        case CLI_OPT_EXIT: return g.exit_code;
        case O_MODEL: model_path = optarg; break;
        case O_LABELS: labels = optarg; break;
        case O_IMAGES: images = optarg; break;
        case O_PATIENT: patient = optarg; break;
        case O_LIST: list = optarg; break;
        case O_SPLITDIR: split_dir = optarg; break;
        case 'o': out = optarg; break;
        case O_THRESHOLD:
            if (parse_rule(optarg, &rule, &rule_x)) {
                cli_error(CMD, "--threshold wants youden, f1, sensitivity=X, specificity=X "
                               "(X in [0, 1]) or fixed=X (X in (0, 1)), not '%s'",
                          optarg);
                return 2;
            }
            rule_arg = optarg;
            break;
        case O_NOTEMP: no_temp = 1; break;
        case O_NOCAM: no_cam = 1; break;
        case O_BINS:
            if (cli_opt_int(&g, 1, 1000, &bins))
                return 2;
            break;
        case O_BATCH:
            if (cli_opt_int(&g, 1, 1024, &batch))
                return 2;
            break;
        case O_THREADS:
            if (cli_opt_int(&g, 0, 4096, &threads))
                return 2;
            break;
        case O_JSON: json = 1; break;
        default: return 2;
        }
    }
    if (optind < argc) {
        cli_error(CMD, "unexpected argument '%s' (see --help)", argv[optind]);
        return 2;
    }
    if (!labels) {
        cli_error(CMD, "--labels FILE is required: the calibration images' labels (see --help)");
        return 2;
    }
    if (!out) {
        cli_error(CMD, "-o/--out FILE is required: where the calibrated model goes");
        return 2;
    }
    if (list && split_dir) {
        cli_error(CMD, "give --list or --split-dir, not both");
        return 2;
    }
    if (!model_path && !(model_path = cli_default_model())) {
        cli_error(CMD, "no --model given and no default model found (set CHEXNET_MODEL or "
                       "install chexnet's models)");
        return 2;
    }
    cx_set_threads((int)threads);

    cx_err err = {0};
    int rc = 1;
    cx_model *m = NULL;
    cx_dataset *ds = NULL;
    cx_split sp;
    memset(&sp, 0, sizeof sp);
    cx_ctx *ctx = NULL;
    cx_loader *ld = NULL;
    int *idx = NULL, *pos_of = NULL;
    char **files = NULL;
    float *logits = NULL, **cams = NULL, *z = NULL, *p = NULL;
    uint8_t *y = NULL;
    class_result *res = NULL;
    char split_path[4096];

    if (cx_model_load(model_path, &m, &err))
        return cli_fail(CMD, &err);
    const int nc = cx_model_num_classes(m), S = cx_model_input_size(m);
    if (nc < 1 || nc > MAX_CLASSES) {
        cli_error(CMD, "%s: %d classes (1..%d supported)", model_path, nc, MAX_CLASSES);
        goto out;
    }

    /* the images and their labels, in the model's classes */
    const char *names[MAX_CLASSES];
    for (int c = 0; c < nc; c++)
        names[c] = cx_model_class_name(m, c);
    cx_dataset_opts dopt;
    cx_dataset_opts_default(&dopt);
    dopt.labels = labels;
    dopt.image_dir = images;
    dopt.n_classes = nc;
    dopt.classes = names;
    dopt.patient_column = patient;
    if (cx_dataset_load(&dopt, &ds, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }
    for (int i = 0; i < cx_dataset_num_warnings(ds); i++)
        cli_error(CMD, "warning: %s", cx_dataset_warning(ds, i));
    if (split_dir) {
        snprintf(split_path, sizeof split_path, "%s", cli_path_in(split_dir, "val.txt"));
        list = split_path;
    }
    int n = 0;
    if (list) {
        if (cx_split_from_lists(ds, list, NULL, NULL, 0.0, 0, &sp, &err)) {
            cli_fail(CMD, &err);
            goto out;
        }
        n = sp.count[CX_SPLIT_TRAIN];
        for (int i = 0; i < sp.n_warnings; i++)
            cli_error(CMD, "warning: %s", sp.warnings[i]);
    } else {
        n = cx_dataset_size(ds);
    }
    if (n < 1) {
        cli_error(CMD, "no calibration images (%s)", list ? list : labels);
        goto out;
    }
    idx = malloc(sizeof(int) * (size_t)n);
    pos_of = malloc(sizeof(int) * (size_t)cx_dataset_size(ds));
    files = calloc((size_t)n, sizeof *files);
    logits = malloc(sizeof(float) * (size_t)n * nc);
    z = malloc(sizeof(float) * (size_t)n);
    p = malloc(sizeof(float) * (size_t)n);
    y = malloc((size_t)n);
    res = calloc((size_t)nc, sizeof *res);
    if (!idx || !pos_of || !files || !logits || !z || !p || !y || !res) {
        cli_error(CMD, "out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        idx[i] = list ? sp.index[CX_SPLIT_TRAIN][i] : i;
        pos_of[idx[i]] = i;
    }
    if (cx_dataset_check_images(ds, idx, n, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }
    /* image files go through predict's own decoding; a pack's pixels
     * through the loader */
    int files_mode = 1;
    for (int i = 0; i < n && files_mode; i++)
        files_mode = (files[i] = (char *)cx_dataset_path(ds, idx[i])) != NULL;

    const int per_pass = (int)(batch < n ? batch : n);
    if (cx_ctx_new(m, per_pass, S, S, CX_BACKEND_CPU, &ctx, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }
    int hw = 0;
    if (!no_cam) {
        int h = 0, w = 0;
        cx_cam_compute(ctx, m, 0, 0, NULL, &h, &w, NULL);
        hw = h * w;
        cams = calloc((size_t)nc, sizeof *cams);
        for (int c = 0; cams && c < nc; c++)
            if (!(cams[c] = malloc(sizeof(float) * (size_t)n * (size_t)(hw > 0 ? hw : 1)))) {
                cli_error(CMD, "out of memory for the maps of %d images", n);
                goto out;
            }
        if (!cams || hw < 1) {
            cli_error(CMD, "out of memory");
            goto out;
        }
    }
    if (!files_mode) {
        cx_loader_opts lo;
        cx_loader_opts_default(&lo);
        lo.batch = per_pass;
        lo.size = S;
        lo.channels = cx_model_config(m)->in_channels;
        cx_model_normalization(m, lo.mean, lo.std);
        lo.shuffle = 0;
        lo.augment = 0;
        lo.drop_last = 0;
        if (cx_loader_new(ds, idx, n, &lo, &ld, &err)) {
            cli_fail(CMD, &err);
            goto out;
        }
    }
    collect_ctx cc = {m, ctx, nc, files_mode, pos_of, logits, cams, hw, {0}, 0};
    cli_progress pr;
    cli_progress_start(&pr, "calibrate", "img", n);
    long done = 0;
    cli_infer in = {0};
    in.m = m;
    in.ctx = ctx;
    in.per_pass = per_pass;
    in.files = files_mode ? files : NULL;
    in.n_files = files_mode ? (size_t)n : 0;
    in.loader = ld;
    in.stop_on_bad = 1;
    in.on_batch = collect;
    in.user = &cc;
    in.done = &done;
    in.progress = &pr;
    cli_infer_status is = cli_infer_run(&in, &err);
    cli_progress_end(&pr);
    if (is == CLI_INFER_STOPPED && cc.failed)
        err = cc.err;
    if (is) {
        cli_fail(CMD, &err);
        goto out;
    }

    /* per class: temperature, then the threshold on the scaled
     * probabilities, then the map range */
    const uint8_t *lab = cx_dataset_labels(ds);
    const int K = cx_dataset_num_classes(ds);
    float T_old[MAX_CLASSES], T_new[MAX_CLASSES], thr[MAX_CLASSES];
    int had_temp = cx_model_temperature(m, T_old);
    for (int c = 0; c < nc; c++) {
        class_result *r = &res[c];
        for (int i = 0; i < n; i++) {
            z[i] = logits[(size_t)i * nc + c];
            y[i] = lab[(size_t)idx[i] * K + c] ? 1 : 0;
            r->pos += y[i];
            p[i] = cx_model_probability(m, c, z[i]);
        }
        r->neg = n - r->pos;
        r->T_before = T_old[c];
        r->nll_before = cx_calib_nll(z, y, (size_t)n, T_old[c]);
        r->ece_before = cx_calib_ece(p, y, (size_t)n, (int)bins);
        T_new[c] = T_old[c];
        if (!no_temp) {
            if (!r->pos || !r->neg) {
                cli_error(CMD, "class '%s': the calibration images have %d positives and %d "
                               "negatives; a temperature needs both (or --no-temperature)",
                          names[c], r->pos, r->neg);
                goto out;
            }
            double T;
            if (cx_calib_fit_temperature(z, y, (size_t)n, &T, &r->T_at_bound, &err)) {
                cli_error(CMD, "class '%s': %s", names[c], err.msg);
                goto out;
            }
            T_new[c] = (float)T;
            if (r->T_at_bound)
                cli_error(CMD, "warning: class '%s': the best temperature lies at or beyond "
                               "the bound %g (the images are separated by the model or "
                               "anti-correlated with it): T = %g",
                          names[c], T, T);
        }
        r->T = T_new[c];
    }
    if (!no_temp && cx_model_set_temperature(m, T_new, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }
    for (int c = 0; c < nc; c++) {
        class_result *r = &res[c];
        for (int i = 0; i < n; i++) {
            z[i] = logits[(size_t)i * nc + c];
            y[i] = lab[(size_t)idx[i] * K + c] ? 1 : 0;
            p[i] = cx_model_probability(m, c, z[i]); /* as predict gives it */
        }
        r->nll_after = cx_calib_nll(z, y, (size_t)n, T_new[c]);
        r->ece_after = cx_calib_ece(p, y, (size_t)n, (int)bins);
        if (cx_calib_threshold(p, y, (size_t)n, rule, rule_x, &thr[c], &err)) {
            cli_error(CMD, "class '%s': --threshold %s: %s", names[c], rule_arg, err.msg);
            goto out;
        }
        r->thr = thr[c];
        cx_calib_rates(p, y, (size_t)n, thr[c], &r->sens, &r->spec);
        if (cams) {
            r->cam_lo = (float)cx_calib_percentile(cams[c], (size_t)n * hw, 1.0);
            r->cam_hi = (float)cx_calib_percentile(cams[c], (size_t)n * hw, 99.0);
        }
    }
    char method[512];
    describe_rule(method, sizeof method, rule, rule_x, n, !no_temp || had_temp);
    if (cx_model_set_thresholds(m, thr, &err) ||
        cx_model_set_meta(m, "threshold_method", method, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }
    if (cams) {
        int flat = 0;
        size_t cap = 4 + (size_t)nc * 72, k = 0;
        char *s = malloc(cap);
        if (!s) {
            cli_error(CMD, "out of memory");
            goto out;
        }
        s[k++] = '[';
        for (int c = 0; c < nc; c++) {
            char a[32], b[32];
            flat |= !(res[c].cam_hi > res[c].cam_lo);
            fmt_float(a, sizeof a, res[c].cam_lo);
            fmt_float(b, sizeof b, res[c].cam_hi);
            k += (size_t)snprintf(s + k, cap - k, "%s[%s, %s]", c ? ", " : "", a, b);
        }
        s[k++] = ']';
        s[k] = 0;
        if (flat)
            cli_error(CMD, "warning: a class's maps are constant over these images: no "
                           "cam_range written");
        else if (cx_model_set_meta(m, "cam_range", s, &err)) {
            free(s);
            cli_fail(CMD, &err);
            goto out;
        }
        free(s);
    }
    cx_dtype dt = cx_model_file_dtype(m);
    if (dt != CX_DT_F16 && dt != CX_DT_BF16)
        dt = CX_DT_F32;
    if (cx_model_save(m, out, dt, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }

    /* the summary */
    if (json) {
        printf("{\"model\": ");
        cx_json_escape(stdout, model_path);
        printf(", \"out\": ");
        cx_json_escape(stdout, out);
        printf(", \"labels\": ");
        cx_json_escape(stdout, labels);
        printf(", \"list\": ");
        if (list)
            cx_json_escape(stdout, list);
        else
            fputs("null", stdout);
        printf(", \"images\": %d, \"threshold_rule\": ", n);
        cx_json_escape(stdout, rule_arg);
        printf(", \"threshold_method\": ");
        cx_json_escape(stdout, method);
        printf(", \"temperature_fitted\": %s, \"ece_bins\": %ld, \"classes\": [",
               no_temp ? "false" : "true", bins);
        for (int c = 0; c < nc; c++) {
            const class_result *r = &res[c];
            printf("%s{\"name\": ", c ? ", " : "");
            cx_json_escape(stdout, names[c]);
            printf(", \"positives\": %d, \"negatives\": %d, \"temperature_before\": ", r->pos,
                   r->neg);
            json_num(stdout, r->T_before, 9);
            printf(", \"temperature\": ");
            json_num(stdout, r->T, 9);
            printf(", \"temperature_at_bound\": %s, \"nll_before\": ",
                   r->T_at_bound ? "true" : "false");
            json_num(stdout, r->nll_before, 17);
            printf(", \"nll_after\": ");
            json_num(stdout, r->nll_after, 17);
            printf(", \"ece_before\": ");
            json_num(stdout, r->ece_before, 17);
            printf(", \"ece_after\": ");
            json_num(stdout, r->ece_after, 17);
            printf(", \"threshold\": ");
            json_num(stdout, r->thr, 9);
            printf(", \"sensitivity\": ");
            json_num(stdout, r->sens, 17);
            printf(", \"specificity\": ");
            json_num(stdout, r->spec, 17);
            printf(", \"cam_range\": ");
            if (cams) {
                printf("[");
                json_num(stdout, r->cam_lo, 9);
                printf(", ");
                json_num(stdout, r->cam_hi, 9);
                printf("]");
            } else {
                printf("null");
            }
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("calibrated on %s (%s%s%s); written to %s\n", cli_plural(n, "image", "images"),
               labels, list ? ", " : "", list ? list : "", out);
        printf("thresholds: %s\n", method);
        printf("temperature: %s; ECE over %ld equal-width bins\n\n",
               no_temp ? "not fitted (--no-temperature)" : "fitted by NLL", bins);
        int wn = 5;
        for (int c = 0; c < nc; c++)
            if ((int)strlen(names[c]) > wn)
                wn = (int)strlen(names[c]);
        printf("%-*s %6s %6s  %9s  %8s %8s  %8s %8s  %9s %6s %6s", wn, "class", "pos", "neg",
               "T", "NLL", "(before)", "ECE", "(before)", "threshold", "sens", "spec");
        printf(cams ? "  %s\n" : "\n", "CAM range");
        for (int c = 0; c < nc; c++) {
            const class_result *r = &res[c];
            printf("%-*s %6d %6d  %9.4g  %8.4f %8.4f  %8.4f %8.4f  %9.4g %6.3f %6.3f", wn,
                   names[c], r->pos, r->neg, r->T, r->nll_after, r->nll_before, r->ece_after,
                   r->ece_before, (double)r->thr, r->sens, r->spec);
            if (cams)
                printf("  [%.4g, %.4g]", (double)r->cam_lo, (double)r->cam_hi);
            printf("\n");
        }
    }
    fflush(stdout);
    rc = 0;
out:
    if (cams)
        for (int c = 0; c < nc; c++)
            free(cams[c]);
    free(cams);
    cx_loader_free(ld);
    cx_ctx_free(ctx);
    cx_split_free(&sp);
    cx_dataset_free(ds);
    cx_model_free(m);
    free(idx);
    free(pos_of);
    free(files);
    free(logits);
    free(z);
    free(p);
    free(y);
    free(res);
    return rc;
}
