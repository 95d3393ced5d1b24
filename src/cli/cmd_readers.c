/* chexnet readers: the reader study of CheXNet's Table 1 for one finding.
 *
 *   chexnet readers --class NAME --reader NAME=FILE --reader NAME=FILE ...
 *                   --model NAME=FILE [--model NAME=FILE ...] [--truth FILE]
 *                   [--threshold T] [--bootstrap N] [--seed S] [--json OUT]
 *                   [--report DIR] [--threads T]
 */
#define _GNU_SOURCE
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CMD "readers"
#define MAXR 24

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet readers --class NAME --reader NAME=FILE --reader NAME=FILE ...\n"
            "                       --model NAME=FILE [--model NAME=FILE ...] [--truth FILE]\n"
            "                       [--threshold T] [--bootstrap N] [--seed S]\n"
            "                       [--json OUT.json] [--report DIR] [--threads T]\n\n"
            "Reader study for one finding, the protocol of CheXNet's Table 1 (Rajpurkar\n"
            "et al. 2017): the F1 of each reader against each of the other readers taken\n"
            "as ground truth, averaged over those K-1; the F1 of each model against each\n"
            "of the K readers, averaged over K; the readers' average; and per model the\n"
            "difference model - reader average. 95%% CIs: percentile bootstrap over\n"
            "resamples of the images (the same resamples for every figure). The model is\n"
            "significantly better (worse) when the CI of the difference excludes 0.\n\n"
            "  --class NAME        the finding, matched to the files' column names\n"
            "                      (case-insensitive, '_' = ' ')\n"
            "  --reader NAME=FILE  a reader's labels (0/1), K >= 2 readers\n"
            "  --model NAME=FILE   a model's decisions (0/1) or scores (thresholded)\n"
            "  --truth FILE        optional: also report every F1 against this file\n"
            "                      (e.g. a majority-vote ground truth), and draw the\n"
            "                      models' ROC curves with each reader's operating point\n"
            "                      and the readers' mean against it\n"
            "  --threshold T       model scores >= T are positive (default: 0/1\n"
            "                      decisions are used as they are; scores get 0.5 with a\n"
            "                      warning)\n"
            "  --bootstrap N       resamples (default 10000; 0: no CIs)\n"
            "  --seed S            bootstrap seed (default 0)\n"
            "  --json OUT.json     write every figure as JSON\n"
            "  --report DIR        write DIR/report.html (the Table 1 equivalent; with\n"
            "                      --truth the ROC figure, also DIR/roc_readers.svg)\n"
            "  --threads T         threads (default: all cores)\n"
            "  --version           print the version\n\n"
            "%s\n"
            "Files are CSVs with an id column (Study, Image Index, Image, Path, ... else\n"
            "the first column): rows are matched by id and columns by class name, never\n"
            "by position. Every file must cover the first reader's ids; a reader must\n"
            "give 0/1 for every image. The JSON and the report record their provenance:\n"
            "chexnet's version, the time (UTC), the command line and every input file\n"
            "with its SHA-256.\n",
            cli_limits_help());
}

static int parse_rater(const char *opt, char *arg, cx_rater *r)
{
    char *eq = strchr(arg, '=');
    if (!eq || eq == arg || !eq[1]) {
        cli_error(CMD, "%s expects NAME=FILE, got '%s'", opt, arg);
        return -1;
    }
    *eq = 0;
    r->name = arg;
    r->path = eq + 1;
    return 0;
}

static void fmt_stat(char *buf, size_t n, const cx_stat *s)
{
    if (!isfinite(s->value))
        snprintf(buf, n, "undefined");
    else if (isfinite(s->lo))
        snprintf(buf, n, "%.3f (%.3f, %.3f)", s->value, s->lo, s->hi);
    else
        snprintf(buf, n, "%.3f", s->value);
}

static int readers_main(int argc, char **argv, cx_provenance *prov);

/* The provenance's command line is taken before the options are parsed. */
int cmd_readers(int argc, char **argv)
{
    cx_provenance prov;
    cx_err err = {0};
    if (cx_provenance_init(&prov, "chexnet", argc, argv, &err))
        return cli_fail(CMD, &err);
    int rc = readers_main(argc, argv, &prov);
    cx_provenance_free(&prov);
    return rc;
}

static int readers_main(int argc, char **argv, cx_provenance *prov)
{
    enum { O_CLASS = CLI_OPT_FIRST_FREE, O_READER, O_MODEL, O_TRUTH, O_THRESHOLD, O_BOOT, O_SEED,
           O_THREADS, O_JSON, O_REPORT };
    static const struct option opts[] = {
        {"class", required_argument, 0, O_CLASS},
        {"reader", required_argument, 0, O_READER},
        {"model", required_argument, 0, O_MODEL},
        {"truth", required_argument, 0, O_TRUTH},
        {"threshold", required_argument, 0, O_THRESHOLD},
        {"bootstrap", required_argument, 0, O_BOOT},
        {"seed", required_argument, 0, O_SEED},
        {"threads", required_argument, 0, O_THREADS},
        {"json", required_argument, 0, O_JSON},
        {"report", required_argument, 0, O_REPORT},
        {0, 0, 0, 0}};
    cx_rater readers[MAXR], models[MAXR];
    cx_readers_opts o;
    memset(&o, 0, sizeof o);
    o.n_bootstrap = 10000;
    const char *json_path = NULL, *report_dir = NULL;
    long boot = 10000, seed = 0, threads = 0;
    cli_getopt g;
    int opt;
    cli_getopt_init(&g, CMD, argc, argv, "", opts, CLI_LIMITS, usage);
    while ((opt = cli_getopt_next(&g)) != -1) {
        switch (opt) {
        case CLI_OPT_EXIT:
            return g.exit_code;
        case O_CLASS:
            o.class_name = optarg;
            break;
        case O_READER:
        case O_MODEL: {
            int is_model = opt == O_MODEL;
            int *cnt = is_model ? &o.n_models : &o.n_readers;
            if (*cnt >= MAXR) {
                cli_error(CMD, "too many %ss", is_model ? "model" : "reader");
                return 2;
            }
            if (parse_rater(is_model ? "--model" : "--reader", optarg,
                            is_model ? &models[*cnt] : &readers[*cnt]))
                return 2;
            (*cnt)++;
            break;
        }
        case O_TRUTH:
            o.truth_path = optarg;
            break;
        case O_THRESHOLD:
            if (cli_parse_double(optarg, &o.threshold)) {
                cli_error(CMD, "--threshold: '%s' is not a number", optarg);
                return 2;
            }
            o.threshold_given = 1;
            break;
        case O_BOOT:
            if (cli_opt_int(&g, 0, 10000000, &boot))
                return 2;
            break;
        case O_SEED:
            if (cli_opt_int(&g, 0, LONG_MAX, &seed))
                return 2;
            break;
        case O_THREADS:
            if (cli_opt_int(&g, 0, 4096, &threads))
                return 2;
            break;
        case O_JSON:
            json_path = optarg;
            break;
        case O_REPORT:
            report_dir = optarg;
            break;
        default:
            return 2;
        }
    }
    if (optind < argc) {
        cli_error(CMD, "unexpected argument '%s' (see --help)", argv[optind]);
        return 2;
    }
    if (!o.class_name) {
        cli_error(CMD, "--class is required (see --help)");
        return 2;
    }
    if (o.n_readers < 2) {
        cli_error(CMD, "give at least 2 --reader NAME=FILE (got %d)", o.n_readers);
        return 2;
    }
    if (o.n_models < 1) {
        cli_error(CMD, "give at least one --model NAME=FILE");
        return 2;
    }
    o.readers = readers;
    o.models = models;
    o.n_bootstrap = (int)boot;
    o.seed = (uint64_t)seed;
    cx_set_threads(threads > 0 ? (int)threads : 0);

    cx_err err = {0};
    cx_readers_result *r = NULL;
    if (cx_readers_run(&o, &r, &err))
        return cli_fail(CMD, &err);
    /* provenance of the JSON and the report: the inputs */
    if (json_path || report_dir) {
        int bad = 0;
        char role[96];
        for (int a = 0; !bad && a < o.n_readers + o.n_models; a++) {
            const cx_rater *x = a < o.n_readers ? &readers[a] : &models[a - o.n_readers];
            snprintf(role, sizeof role, "%s %s", a < o.n_readers ? "reader" : "model", x->name);
            bad = cx_provenance_add_input(prov, role, x->path, &err) != CX_OK;
        }
        if (!bad && o.truth_path)
            bad = cx_provenance_add_input(prov, "truth", o.truth_path, &err) != CX_OK;
        if (bad) {
            cx_readers_free(r);
            return cli_fail(CMD, &err);
        }
        r->provenance = prov;
    }
    for (int i = 0; i < r->n_warnings; i++)
        cli_error(CMD, "warning: %s", r->warnings[i]);
    int K = r->n_readers, M = r->n_models;
    printf("reader study: %s, %s, %s, %s", r->class_name,
           cli_plural(r->n_images, "image", "images"), cli_plural(K, "reader", "readers"),
           cli_plural(M, "model", "models"));
    if (r->n_bootstrap)
        printf(", %d bootstrap resamples (seed %llu)", r->n_bootstrap,
               (unsigned long long)r->seed);
    printf("\n\n%-24s %-24s%s\n", "", "F1 (95% CI)", r->has_truth ? "  F1 vs truth (95% CI)" : "");
    char b1[96], b2[96];
    for (int a = 0; a < K + M; a++) {
        if (a == K) {
            fmt_stat(b1, sizeof b1, &r->reader_avg);
            fmt_stat(b2, sizeof b2, &r->reader_avg_truth);
            printf("%-24s %-24s%s%s\n", "reader average", b1, r->has_truth ? "  " : "",
                   r->has_truth ? b2 : "");
        }
        const cx_rater_result *x = &r->raters[a];
        char name[96];
        snprintf(name, sizeof name, "%s%s", x->is_model ? "model " : "", x->name);
        fmt_stat(b1, sizeof b1, &x->f1);
        fmt_stat(b2, sizeof b2, &x->f1_truth);
        printf("%-24s %-24s%s%s\n", name, b1, r->has_truth ? "  " : "", r->has_truth ? b2 : "");
    }
    printf("\n");
    for (int m = 0; m < M; m++) {
        fmt_stat(b1, sizeof b1, &r->diff[m]);
        printf("difference %s - reader average: %s: %s\n", r->raters[K + m].name, b1,
               !r->n_bootstrap ? "no bootstrap, no conclusion"
               : r->significant[m]
                   ? (r->diff[m].value > 0 ? "significantly higher (CI excludes 0)"
                                           : "significantly lower (CI excludes 0)")
                   : "no significant difference (CI contains 0)");
    }
    fflush(stdout);
    int rc = 0;
    if (json_path && cx_readers_write_json(r, json_path, &err))
        rc = cli_fail(CMD, &err);
    if (!rc && report_dir) {
        if (cx_readers_write_report(r, report_dir, &err))
            rc = cli_fail(CMD, &err);
        else
            fprintf(stderr, "chexnet readers: report written to %s\n",
                    cli_path_in(report_dir, "report.html"));
    }
    cx_readers_free(r);
    return rc;
}
