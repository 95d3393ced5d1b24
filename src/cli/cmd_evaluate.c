/* chexnet evaluate: per-class AUROC with bootstrap CIs, operating points,
 * ROC curves and a report, from a predictions CSV or by predicting first.
 *
 *   chexnet evaluate --pred PRED.csv --labels LABELS [--bootstrap N] [--seed S]
 *                    [--val-pred V.csv] [--json OUT.json] [--report DIR] [...]
 *   chexnet evaluate --model FILE --labels LABELS --images DIR
 *                    [--save-pred P.csv] [...]
 */
#define _GNU_SOURCE
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define CMD "evaluate"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet evaluate --pred PRED.csv --labels LABELS [options]\n"
            "       chexnet evaluate --model FILE --labels LABELS --images DIR\n"
            "                        [--save-pred P.csv] [--ten-crop] [--batch N]\n"
            "                        [--precision fp32|bf16] [options]\n\n"
            "Per-class AUROC (exact, ties as scikit-learn), mean AUROC, operating points\n"
            "(sensitivity, specificity, PPV, NPV, F1) and percentile-bootstrap 95%% CIs on\n"
            "every figure.\n\n"
            "  --pred PRED.csv     header: image column, then one score column per class\n"
            "                      (named by class); one row per image evaluated\n"
            "  --labels LABELS     ChestX-ray14 Data_Entry_2017*.csv, a split list\n"
            "                      (IMAGE L1 ... L14), or a CSV with 0/1 columns named by\n"
            "                      class; plain or gzip. Images are matched by id, else by\n"
            "                      file name; every predicted image needs a label\n"
            "  --bootstrap N       resamples of the images (default 10000; 0: no CIs)\n"
            "  --seed S            bootstrap seed (default 0); results do not depend on\n"
            "                      the thread count\n"
            "  --val-pred V.csv    validation predictions (same labels file) on which the\n"
            "                      operating point is chosen (default rule: maxf1)\n"
            "  --operating-point R maxf1 | youden (needs --val-pred) | threshold\n"
            "  --threshold T       fixed threshold: positive when score >= T (default 0.5\n"
            "                      without --val-pred)\n"
            "  --classes A,B,...   evaluate only these classes (names as in PRED)\n"
            "  --json OUT.json     write all figures, ROC points, calibration and warnings\n"
            "                      as JSON\n"
            "  --report DIR        write DIR/report.html (tables, ROC curves with bootstrap\n"
            "                      bands and reliability diagrams as SVG), DIR/roc.svg,\n"
            "                      DIR/roc_panels.svg and DIR/reliability.svg\n"
            "  --roc-bands         also write the ROC bands (TPR and its 95%% band on the FPR\n"
            "                      grid) into the JSON\n"
            "  --band-points G     ROC band grid: FPR 0, 1/(G-1), ..., 1 (default 101)\n"
            "  --calibration-bins B  equal-width bins of the reliability diagram and the\n"
            "                      expected calibration error (default 10)\n"
            "  --title TEXT        report title\n"
            "  --threads T         threads (default: all cores)\n"
            "  --dump-resamples F  write the first --dump-count (default 10) bootstrap\n"
            "                      resamples' image indices to F (for checking)\n"
            "  --model FILE        predict first with this model (safetensors) ...\n"
            "  --images DIR        ... on every PNG/JPEG/DICOM (*.dcm) under DIR (recursively)\n"
            "  --save-pred P.csv   ... and save those predictions\n"
            "  --ten-crop          ... averaging 10 crops (arnoweng/CheXNet)\n"
            "  --batch N           ... images per forward pass (default 16)\n"
            "  --precision P       ... in fp32 (default) or bf16 (see chexnet predict)\n"
            "  --version           print the version\n\n"
            "%s\n"
            "An undefined AUROC (a class without positives or negatives) is reported as\n"
            "undefined (null in JSON), never as a number. The JSON and the report record\n"
            "their provenance: chexnet's version, the time (UTC), the command line and\n"
            "every input file with its SHA-256. Exit status: 0 ok, 1 error, 2 usage.\n",
            cli_limits_help());
}

/* ----------------------------------------------------------- prediction */

/* The scores of a batch into the prediction table. */
typedef struct {
    cx_pred_table *p;
    char *const *files;
    cx_err err;
} store_ctx;

static int store_scores(void *user, const cli_batch *b)
{
    store_ctx *sc = user;
    const int nc = sc->p->n_classes;
    for (int j = 0; j < b->n; j++) {
        size_t i = b->index[j];
        for (int k = 0; k < nc; k++)
            sc->p->scores[i * nc + k] = b->prob[(size_t)j * nc + k];
        if (cx_pred_set_image(sc->p, (int)i, sc->files[i], &sc->err))
            return 1;
    }
    return 0;
}

static int predict_dir(const char *model_path, const char *dir, int ten_crop, int batch,
                       cx_precision prec, cx_pred_table **out, cx_provenance *prov)
{
    cx_err err = {0};
    cx_model *m = NULL;
    if (cx_model_load(model_path, &m, &err))
        return cli_fail(CMD, &err);
    if (ten_crop)
        cli_ten_crop_warn(CMD, m);
    cli_strvec files = {0};
    int nerr = 0;
    if (cli_add_input(CMD, dir, 0, &files, &nerr) || nerr) {
        cx_model_free(m);
        cli_strvec_free(&files);
        return 1;
    }
    if (!files.n) {
        cli_error(CMD, "%s: no PNG, JPEG or DICOM images found", dir);
        cx_model_free(m);
        cli_strvec_free(&files);
        return 1;
    }
    int nc = cx_model_num_classes(m), S = cx_model_input_size(m);
    if (nc < 1 || nc > 1024) {
        cli_error(CMD, "%s: %d classes (1..1024 supported)", model_path, nc);
        cx_model_free(m);
        cli_strvec_free(&files);
        return 1;
    }
    const char *names[1024];
    for (int k = 0; k < nc && k < 1024; k++)
        names[k] = cx_model_class_name(m, k);
    cx_pred_table *p = NULL;
    cx_ctx *ctx = NULL;
    int crops = ten_crop ? 10 : 1;
    int rc = 1;
    if (cx_precision_effective(CX_BACKEND_CPU, prec) != prec)
        cli_error(CMD, "warning: this CPU has neither AMX nor AVX512-BF16, where bf16 would be "
                       "slower than fp32: running fp32");
    if (cx_pred_new((int)files.n, nc, names, &p, &err) ||
        cx_ctx_new(m, batch * crops, S, S, CX_BACKEND_CPU, &ctx, &err) ||
        cx_ctx_set_precision(ctx, prec, &err)) {
        rc = cli_fail(CMD, &err);
        goto out;
    }
    cli_progress pr;
    cli_progress_start(&pr, "predicting", "img", (long)files.n);
    store_ctx sc = {p, files.v, {0}};
    long done = 0;
    cli_infer in = {0};
    in.m = m;
    in.ctx = ctx;
    in.per_pass = batch;
    in.ten_crop = ten_crop;
    in.files = files.v;
    in.n_files = files.n;
    in.stop_on_bad = 1;
    in.on_batch = store_scores;
    in.user = &sc;
    in.done = &done;
    in.progress = &pr;
    cli_infer_status is = cli_infer_run(&in, &err);
    if (is == CLI_INFER_STOPPED)
        err = sc.err;
    if (is) {
        rc = cli_fail(CMD, &err);
        goto out;
    }
    cli_progress_end(&pr);
    /* provenance: the model and every image read */
    if (prov) {
        if (cx_provenance_add_input(prov, "model", model_path, &err)) {
            rc = cli_fail(CMD, &err);
            goto out;
        }
        for (size_t i = 0; i < files.n; i++)
            if (cx_provenance_add_input(prov, "image", files.v[i], &err)) {
                rc = cli_fail(CMD, &err);
                goto out;
            }
    }
    *out = p;
    p = NULL;
    rc = 0;
out:
    cx_ctx_free(ctx);
    cx_pred_free(p);
    cx_model_free(m);
    cli_strvec_free(&files);
    return rc;
}

/* Keeps only the listed classes (comma separated) of p. */
static int select_classes(cx_pred_table **pp, const char *list)
{
    cx_pred_table *p = *pp;
    char *dup = strdup(list);
    if (!dup)
        return 1;
    int idx[1024], n = 0;
    for (char *save = NULL, *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int f = -1;
        for (int k = 0; k < p->n_classes; k++)
            if (cx_class_name_eq(p->classes[k], t))
                f = k;
        if (f < 0) {
            cli_error(CMD, "--classes: '%s' is not a column of the predictions", t);
            free(dup);
            return 1;
        }
        if (n < 1024)
            idx[n++] = f;
    }
    free(dup);
    if (!n) {
        cli_error(CMD, "--classes: empty list");
        return 1;
    }
    const char *names[1024];
    for (int k = 0; k < n; k++)
        names[k] = p->classes[idx[k]];
    cx_pred_table *q;
    cx_err err = {0};
    if (cx_pred_new(p->n_images, n, names, &q, &err))
        return cli_fail(CMD, &err);
    for (int i = 0; i < p->n_images; i++) {
        if (cx_pred_set_image(q, i, p->images[i], &err)) {
            cx_pred_free(q);
            return cli_fail(CMD, &err);
        }
        for (int k = 0; k < n; k++)
            q->scores[(size_t)i * n + k] = p->scores[(size_t)i * p->n_classes + idx[k]];
    }
    q->warnings = p->warnings;
    q->n_warnings = p->n_warnings;
    p->warnings = NULL;
    p->n_warnings = 0;
    cx_pred_free(p);
    *pp = q;
    return 0;
}

static void fmt_stat(char *buf, size_t n, const cx_stat *s, int digits)
{
    if (!isfinite(s->value))
        snprintf(buf, n, "undefined");
    else if (isfinite(s->lo))
        snprintf(buf, n, "%.*f [%.*f, %.*f]", digits, s->value, digits, s->lo, digits, s->hi);
    else
        snprintf(buf, n, "%.*f", digits, s->value);
}

static int evaluate_main(int argc, char **argv, cx_provenance *prov);

/* The provenance's command line is taken before the options are parsed. */
int cmd_evaluate(int argc, char **argv)
{
    cx_provenance prov;
    cx_err err = {0};
    if (cx_provenance_init(&prov, "chexnet", argc, argv, &err))
        return cli_fail(CMD, &err);
    int rc = evaluate_main(argc, argv, &prov);
    cx_provenance_free(&prov);
    return rc;
}

static int evaluate_main(int argc, char **argv, cx_provenance *prov)
{
    enum { O_PRED = CLI_OPT_FIRST_FREE, O_LABELS, O_VALPRED, O_JSON, O_REPORT, O_CLASSES,
           O_MODEL, O_IMAGES, O_SAVEPRED, O_TITLE, O_DUMP, O_OP, O_BOOT, O_SEED, O_THREADS,
           O_BATCH, O_DUMPCOUNT, O_THRESHOLD, O_TENCROP, O_PRECISION, O_ROCBANDS, O_BANDPOINTS,
           O_CALIBBINS };
    static const struct option opts[] = {
        {"pred", required_argument, 0, O_PRED},
        {"labels", required_argument, 0, O_LABELS},
        {"val-pred", required_argument, 0, O_VALPRED},
        {"json", required_argument, 0, O_JSON},
        {"report", required_argument, 0, O_REPORT},
        {"classes", required_argument, 0, O_CLASSES},
        {"model", required_argument, 0, O_MODEL},
        {"images", required_argument, 0, O_IMAGES},
        {"save-pred", required_argument, 0, O_SAVEPRED},
        {"title", required_argument, 0, O_TITLE},
        {"dump-resamples", required_argument, 0, O_DUMP},
        {"operating-point", required_argument, 0, O_OP},
        {"bootstrap", required_argument, 0, O_BOOT},
        {"seed", required_argument, 0, O_SEED},
        {"threads", required_argument, 0, O_THREADS},
        {"batch", required_argument, 0, O_BATCH},
        {"dump-count", required_argument, 0, O_DUMPCOUNT},
        {"threshold", required_argument, 0, O_THRESHOLD},
        {"ten-crop", no_argument, 0, O_TENCROP},
        {"precision", required_argument, 0, O_PRECISION},
        {"roc-bands", no_argument, 0, O_ROCBANDS},
        {"band-points", required_argument, 0, O_BANDPOINTS},
        {"calibration-bins", required_argument, 0, O_CALIBBINS},
        {0, 0, 0, 0}};
    const char *pred_path = NULL, *labels_path = NULL, *val_path = NULL, *json_path = NULL,
               *report_dir = NULL, *classes = NULL, *model_path = NULL, *images_dir = NULL,
               *save_pred = NULL, *title = NULL, *dump_path = NULL, *op = NULL;
    long boot = 10000, seed = 0, threads = 0, batch = 16, dump_count = 10, band_points = 101,
         calib_bins = 10;
    int roc_bands = 0;
    double threshold = 0.5;
    int threshold_given = 0, ten_crop = 0, prec = CX_PRECISION_F32, precision_given = 0;
    cli_getopt g;
    int opt;
    cli_getopt_init(&g, CMD, argc, argv, "", opts, CLI_LIMITS, usage);
    while ((opt = cli_getopt_next(&g)) != -1) {
#define INT_OPT(var, lo, hi)        \
    if (cli_opt_int(&g, lo, hi, &var)) \
        return 2;                      \
    break;
        switch (opt) {
        case CLI_OPT_EXIT: return g.exit_code;
        case O_PRED: pred_path = optarg; break;
        case O_LABELS: labels_path = optarg; break;
        case O_VALPRED: val_path = optarg; break;
        case O_JSON: json_path = optarg; break;
        case O_REPORT: report_dir = optarg; break;
        case O_CLASSES: classes = optarg; break;
        case O_MODEL: model_path = optarg; break;
        case O_IMAGES: images_dir = optarg; break;
        case O_SAVEPRED: save_pred = optarg; break;
        case O_TITLE: title = optarg; break;
        case O_DUMP: dump_path = optarg; break;
        case O_OP: op = optarg; break;
        case O_BOOT: INT_OPT(boot, 0, 10000000)
        case O_SEED: INT_OPT(seed, 0, LONG_MAX)
        case O_THREADS: INT_OPT(threads, 0, 4096)
        case O_BATCH: INT_OPT(batch, 1, 4096)
        case O_DUMPCOUNT: INT_OPT(dump_count, 0, 1000000)
        case O_BANDPOINTS: INT_OPT(band_points, 2, 10001)
        case O_CALIBBINS: INT_OPT(calib_bins, 1, 1000)
        case O_ROCBANDS: roc_bands = 1; break;
        case O_THRESHOLD:
            if (cli_parse_double(optarg, &threshold)) {
                cli_error(CMD, "--threshold: '%s' is not a number", optarg);
                return 2;
            }
            threshold_given = 1;
            break;
        case O_TENCROP: ten_crop = 1; break;
        case O_PRECISION:
            if ((prec = cx_precision_parse(optarg)) < 0) {
                cli_error(CMD, "unknown --precision '%s' (fp32 or bf16)", optarg);
                return 2;
            }
            precision_given = 1;
            break;
        default: return 2;
        }
#undef INT_OPT
    }
    if (optind < argc) {
        cli_error(CMD, "unexpected argument '%s' (see --help)", argv[optind]);
        return 2;
    }
    if (!labels_path) {
        cli_error(CMD, "--labels is required (see --help)");
        return 2;
    }
    if (!pred_path && !model_path) {
        cli_error(CMD, "give --pred PRED.csv, or --model FILE with --images DIR (see --help)");
        return 2;
    }
    if (pred_path && model_path) {
        cli_error(CMD, "--pred and --model exclude each other");
        return 2;
    }
    if (model_path && !images_dir) {
        cli_error(CMD, "--model needs --images DIR");
        return 2;
    }
    if (!model_path && (images_dir || save_pred || ten_crop || precision_given)) {
        cli_error(CMD, "--images, --save-pred, --ten-crop and --precision go with --model");
        return 2;
    }
    cx_eval_opts o;
    cx_eval_opts_default(&o);
    o.n_bootstrap = (int)boot;
    o.seed = (uint64_t)seed;
    o.threshold = threshold;
    o.band_points = (int)band_points;
    o.calib_bins = (int)calib_bins;
    o.roc_bands = report_dir || roc_bands; /* the bands' bootstrap where they are shown */
    if (op) {
        if (!strcmp(op, "maxf1"))
            o.rule = CX_OP_MAXF1;
        else if (!strcmp(op, "youden"))
            o.rule = CX_OP_YOUDEN;
        else if (!strcmp(op, "threshold"))
            o.rule = CX_OP_THRESHOLD;
        else {
            cli_error(CMD, "--operating-point: '%s' is not maxf1, youden or threshold", op);
            return 2;
        }
        if (o.rule != CX_OP_THRESHOLD && threshold_given) {
            cli_error(CMD, "--threshold goes with --operating-point threshold");
            return 2;
        }
    } else if (val_path && !threshold_given) {
        o.rule = CX_OP_MAXF1;
    }
    if (o.rule != CX_OP_THRESHOLD && !val_path) {
        cli_error(CMD, "--operating-point %s needs --val-pred (choosing the threshold on the "
                       "test set itself would be optimistic)",
                  op);
        return 2;
    }
    if (val_path && o.rule == CX_OP_THRESHOLD)
        cli_error(CMD, "warning: --val-pred is not used with a fixed threshold");
    cx_set_threads(threads > 0 ? (int)threads : 0);

    cx_err err = {0};
    int rc = 1;
    cx_pred_table *pred = NULL, *val = NULL;
    cx_labels *labels = NULL;
    cx_eval_result *res = NULL;
    /* provenance of the JSON and the report: the inputs */
    cx_provenance *pv = NULL;
    if (json_path || report_dir) {
        pv = prov;
        if ((pred_path && cx_provenance_add_input(pv, "predictions", pred_path, &err)) ||
            cx_provenance_add_input(pv, "labels", labels_path, &err) ||
            (val_path && o.rule != CX_OP_THRESHOLD &&
             cx_provenance_add_input(pv, "validation predictions", val_path, &err))) {
            cli_fail(CMD, &err);
            goto out;
        }
    }
    if (model_path) {
        rc = predict_dir(model_path, images_dir, ten_crop, (int)batch, (cx_precision)prec,
                         &pred, pv);
        if (rc)
            goto out;
        rc = 1;
        if (save_pred && cx_pred_save(pred, save_pred, &err)) {
            cli_fail(CMD, &err);
            goto out;
        }
    } else if (cx_pred_load(pred_path, &pred, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }
    if (classes && select_classes(&pred, classes))
        goto out;
    for (int i = 0; i < pred->n_warnings; i++)
        cli_error(CMD, "warning: %s", pred->warnings[i]);
    if (val_path) {
        if (cx_pred_load(val_path, &val, &err)) {
            cli_fail(CMD, &err);
            goto out;
        }
        for (int i = 0; i < val->n_warnings; i++)
            cli_error(CMD, "warning: %s", val->warnings[i]);
    }
    if (cx_labels_load(labels_path, pred->n_classes, (const char *const *)pred->classes, &labels,
                       &err)) {
        cli_fail(CMD, &err);
        goto out;
    }
    for (int i = 0; i < cx_labels_num_warnings(labels); i++)
        cli_error(CMD, "warning: %s", cx_labels_warning(labels, i));
    if (dump_path) {
        if (cx_bootstrap_dump(o.seed, (uint32_t)pred->n_images, (int)dump_count, dump_path, &err)) {
            cli_fail(CMD, &err);
            goto out;
        }
    }
    if (cx_evaluate(pred, labels, val, &o, &res, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }
    for (int i = 0; i < res->n_warnings; i++)
        cli_error(CMD, "warning: %s", res->warnings[i]);
    res->provenance = pv;
    res->json_roc_bands = roc_bands;

    /* the table */
    printf("%s, %s, labels: %s (%s)\n", cli_plural(res->n_images, "image", "images"),
           cli_plural(res->n_classes, "class", "classes"), labels_path, cx_labels_format(labels));
    if (res->n_bootstrap)
        printf("bootstrap: %d resamples, seed %llu, %.2f s on %d threads; 95%% CIs in brackets\n",
               res->n_bootstrap, (unsigned long long)res->seed, res->boot_seconds, res->threads);
    printf("operating point: %s\n\n",
           o.rule == CX_OP_THRESHOLD ? "fixed threshold"
           : o.rule == CX_OP_MAXF1   ? "max F1 on the validation predictions"
                                     : "max Youden's J on the validation predictions");
    printf("%-20s %6s %6s  %-26s %8s  %-22s %-22s %-22s\n", "class", "pos", "neg",
           "AUROC", "thresh", "sensitivity", "specificity", "F1");
    for (int k = 0; k < res->n_classes; k++) {
        const cx_class_eval *c = &res->cls[k];
        char a[64], s1[64], s2[64], s3[64];
        fmt_stat(a, sizeof a, &c->auroc, 4);
        fmt_stat(s1, sizeof s1, &c->sens, 3);
        fmt_stat(s2, sizeof s2, &c->spec, 3);
        fmt_stat(s3, sizeof s3, &c->f1, 3);
        printf("%-20s %6d %6d  %-26s %8.4g  %-22s %-22s %-22s\n", c->name, c->n_pos, c->n_neg, a,
               c->threshold, s1, s2, s3);
    }
    char mbuf[64];
    fmt_stat(mbuf, sizeof mbuf, &res->mean_auroc, 4);
    printf("%-20s %13s  %-26s\n", "mean AUROC", "", mbuf);
    if (res->n_mean_classes < res->n_classes)
        printf("(mean over the %s with a defined AUROC)\n",
               cli_plural(res->n_mean_classes, "class", "classes"));
    fflush(stdout);

    if (json_path && cx_eval_write_json(res, json_path, &err)) {
        cli_fail(CMD, &err);
        goto out;
    }
    if (report_dir) {
        if (cx_eval_write_report(res, report_dir, title, &err)) {
            cli_fail(CMD, &err);
            goto out;
        }
        fprintf(stderr, "chexnet evaluate: report written to %s\n",
                cli_path_in(report_dir, "report.html"));
    }
    rc = 0;
out:
    cx_eval_free(res);
    cx_labels_free(labels);
    cx_pred_free(pred);
    cx_pred_free(val);
    return rc;
}
