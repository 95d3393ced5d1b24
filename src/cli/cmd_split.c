/* chexnet split: a patient-level train/val/test split and its counts. */
#define _GNU_SOURCE
#include "cli.h"
#include "data_args.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet split --labels FILE [--task pneumonia|all14] [--fractions 0.7,0.1,0.2]\n"
            "                     [--seed S] [--out DIR] [--json | --tsv]\n"
            "       chexnet split --train A [--val B] [--test C] [--labels FILE]\n"
            "       chexnet split --manifest manifest.csv [--patient-column patient_key]\n\n"
            "Splits a dataset by patient (no patient in two splits) and prints, per split,\n"
            "the patients, images and positive images per class. The random split deals\n"
            "shuffled patients (seeded) into train/val/test by the cumulative fractions of\n"
            "their images. With --train/--val/--test the lists define the split.\n"
            "--out DIR writes DIR/train.txt, val.txt, test.txt ('IMAGE L1 ... LK', the 14\n"
            "ChestX-ray14 labels for ChestX-ray14 sources), reusable with --train/--val/--test.\n"
            "Each class's weights for 'chexnet train --loss weighted' come from the train\n"
            "part: w+ = |N|/(|P|+|N|), w- = |P|/(|P|+|N|) (shown in the table for one class;\n"
            "always in --json and --tsv).\n\n"
            "%s"
            "output:\n"
            "  --out DIR            write the split files (atomically)\n"
            "  --json               print JSON instead of a table\n"
            "  --tsv                print tab-separated lines 'WHAT PART CLASS VALUE' (a\n"
            "                       header line first; empty fields where they do not\n"
            "                       apply), for shell scripts: patients, images,\n"
            "                       positives, w_pos, w_neg (train), unassigned_images,\n"
            "                       crossing_patients\n"
            "  --version            print the version\n\n"
            "%s",
            data_args_help(), cli_limits_help());
}

/* The weighted loss's weights of class k, as 'chexnet train' computes them
 * from the train part: w+ = |N|/(|P|+|N|), w- = |P|/(|P|+|N|). 0 when the
 * train part is empty. */
static int loss_weights(const cx_split *sp, int K, int k, double *wpos, double *wneg)
{
    double P = sp->positives[CX_SPLIT_TRAIN * K + k], N = sp->count[CX_SPLIT_TRAIN] - P;
    if (P + N <= 0)
        return 0;
    *wpos = N / (P + N);
    *wneg = P / (P + N);
    return 1;
}

/* A TSV field: tabs and line breaks (which a manifest's column name could
 * hold) become spaces. */
static void tsv_field(const char *s)
{
    for (; *s; s++)
        putchar(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s);
}

static void tsv_line(const char *what, const char *part, const char *cls, const char *fmt,
                     double v)
{
    printf("%s\t%s\t", what, part ? part : "");
    if (cls)
        tsv_field(cls);
    putchar('\t');
    printf(fmt, v);
    putchar('\n');
}

int cmd_split(int argc, char **argv)
{
    const char *cmd = "split";
    enum { O_JSON = CLI_OPT_FIRST_FREE, O_OUT, O_TSV };
    static const struct option opts[] = {
        DATA_ARGS_OPTIONS,
        {"json", no_argument, 0, O_JSON},
        {"out", required_argument, 0, O_OUT},
        {"tsv", no_argument, 0, O_TSV},
        {0, 0, 0, 0}};
    data_args a;
    data_args_init(&a);
    const char *out = NULL;
    int json = 0, tsv = 0;
    cli_getopt g;
    int opt;
    cli_getopt_init(&g, cmd, argc, argv, "o:", opts, CLI_LIMITS, usage);
    while ((opt = cli_getopt_next(&g)) != -1) {
        int r = data_args_option(cmd, opt, optarg, &a);
        if (r < 0 || opt == CLI_OPT_EXIT) {
            data_args_free(&a);
            return r < 0 ? 2 : g.exit_code;
        }
        if (r)
            continue;
        if (opt == O_JSON) {
            json = 1;
        } else if (opt == O_TSV) {
            tsv = 1;
        } else if (opt == O_OUT || opt == 'o') {
            out = optarg;
        } else {
            data_args_free(&a);
            return 2;
        }
    }
    if (json && tsv) {
        cli_error(cmd, "give --json or --tsv, not both");
        data_args_free(&a);
        return 2;
    }
    if (optind < argc) {
        cli_error(cmd, "unexpected argument '%s' (see --help)", argv[optind]);
        data_args_free(&a);
        return 2;
    }
    cx_dataset *ds = NULL;
    if (data_args_load(cmd, &a, &ds)) {
        data_args_free(&a);
        return 1;
    }
    cx_split sp;
    if (data_args_split(cmd, &a, ds, &sp)) {
        cx_dataset_free(ds);
        data_args_free(&a);
        return 1;
    }
    cx_err err = {0};
    int rc = 0;
    if (out && cx_split_write(ds, &sp, out, &err)) {
        rc = cli_fail(cmd, &err);
        goto done;
    }
    data_print_warnings(cmd, ds, &sp);
    int K = cx_dataset_num_classes(ds), N = cx_dataset_size(ds);
    int used = sp.count[0] + sp.count[1] + sp.count[2];
    if (json) {
        printf("{\"source\":");
        cx_json_escape(stdout, cx_dataset_source(ds));
        printf(",\"file\":");
        cx_json_escape(stdout, a.pack ? a.pack : a.labels ? a.labels : a.lists[0]);
        printf(",\"method\":\"%s\",\"seed\":%ld", a.lists[0] ? "lists" : "random", a.seed);
        if (!a.lists[0])
            printf(",\"fractions\":[%.17g,%.17g,%.17g]", a.fractions[0], a.fractions[1],
                   a.fractions[2]);
        printf(",\"n_images\":%d,\"n_patients\":%d,\"classes\":[", N,
               cx_dataset_num_patients(ds));
        for (int k = 0; k < K; k++) {
            if (k)
                putchar(',');
            cx_json_escape(stdout, cx_dataset_class(ds, k));
        }
        printf("],\"splits\":{");
        for (int p = 0; p < 3; p++) {
            printf("%s\"%s\":{\"patients\":%d,\"images\":%d,\"fraction\":%.17g,\"positives\":{",
                   p ? "," : "", CX_SPLIT_NAMES[p], sp.patients[p], sp.count[p],
                   used ? (double)sp.count[p] / used : 0.0);
            for (int k = 0; k < K; k++) {
                if (k)
                    putchar(',');
                cx_json_escape(stdout, cx_dataset_class(ds, k));
                printf(":%d", sp.positives[p * K + k]);
            }
            printf("}}");
        }
        printf("},\"loss_weights\":{");
        for (int k = 0; k < K; k++) {
            double wp, wn;
            if (k)
                putchar(',');
            cx_json_escape(stdout, cx_dataset_class(ds, k));
            if (loss_weights(&sp, K, k, &wp, &wn))
                printf(":{\"w_pos\":%.17g,\"w_neg\":%.17g}", wp, wn);
            else
                printf(":null");
        }
        printf("},\"unassigned_images\":%d,\"crossing_patients\":%d,\"warnings\":[",
               N - used, sp.crossing_patients);
        for (int i = 0; i < sp.n_warnings; i++) {
            if (i)
                putchar(',');
            cx_json_escape(stdout, sp.warnings[i]);
        }
        printf("],\"out\":");
        if (out)
            cx_json_escape(stdout, out);
        else
            printf("null");
        printf("}\n");
    } else if (tsv) {
        printf("what\tpart\tclass\tvalue\n");
        for (int p = 0; p < 3; p++) {
            tsv_line("patients", CX_SPLIT_NAMES[p], NULL, "%.0f", sp.patients[p]);
            tsv_line("images", CX_SPLIT_NAMES[p], NULL, "%.0f", sp.count[p]);
            for (int k = 0; k < K; k++)
                tsv_line("positives", CX_SPLIT_NAMES[p], cx_dataset_class(ds, k), "%.0f",
                         sp.positives[p * K + k]);
        }
        for (int k = 0; k < K; k++) {
            double wp, wn;
            if (!loss_weights(&sp, K, k, &wp, &wn))
                continue;
            tsv_line("w_pos", "train", cx_dataset_class(ds, k), "%.17g", wp);
            tsv_line("w_neg", "train", cx_dataset_class(ds, k), "%.17g", wn);
        }
        tsv_line("unassigned_images", NULL, NULL, "%.0f", N - used);
        tsv_line("crossing_patients", NULL, NULL, "%.0f", sp.crossing_patients);
    } else {
        printf("dataset: %s (%s), %s, %s, %s\n",
               a.pack ? a.pack : a.labels ? a.labels : a.lists[0], cx_dataset_source(ds),
               cli_plural(N, "image", "images"),
               cli_plural(cx_dataset_num_patients(ds), "patient", "patients"),
               cli_plural(K, "class", "classes"));
        if (a.lists[0])
            printf("split: from lists%s\n",
                   a.lists[1] ? "" : " (val carved from train by patient)");
        else
            printf("split: random by patient, fractions %g/%g/%g, seed %ld\n", a.fractions[0],
                   a.fractions[1], a.fractions[2], a.seed);
        int w = 20;
        for (int k = 0; k < K; k++) {
            int l = (int)strlen(cx_dataset_class(ds, k)) + 2;
            if (l > w)
                w = l;
        }
        printf("%-*s %10s %10s %10s\n", w, "", "train", "val", "test");
        printf("%-*s %10d %10d %10d\n", w, "patients", sp.patients[0], sp.patients[1],
               sp.patients[2]);
        printf("%-*s %10d %10d %10d\n", w, "images", sp.count[0], sp.count[1], sp.count[2]);
        printf("%-*s %10.4f %10.4f %10.4f\n", w, "fraction", used ? (double)sp.count[0] / used : 0,
               used ? (double)sp.count[1] / used : 0, used ? (double)sp.count[2] / used : 0);
        printf("positives:\n");
        for (int k = 0; k < K; k++) {
            char name[128];
            snprintf(name, sizeof name, "  %s", cx_dataset_class(ds, k));
            printf("%-*s %10d %10d %10d\n", w, name, sp.positives[k], sp.positives[K + k],
                   sp.positives[2 * K + k]);
        }
        double wp, wn;
        if (K == 1 && loss_weights(&sp, K, 0, &wp, &wn))
            printf("weighted loss (train): w+ = %.4f, w- = %.4f\n", wp, wn);
        if (N - used)
            printf("images in no split: %d\n", N - used);
        printf("patients in more than one split: %d\n", sp.crossing_patients);
        if (out)
            printf("wrote %s\n", cli_path_in(out, "{train,val,test}.txt"));
    }
done:
    cx_split_free(&sp);
    cx_dataset_free(ds);
    data_args_free(&a);
    return rc;
}
