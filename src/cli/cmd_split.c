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
            "                     [--seed S] [--out DIR] [--json]\n"
            "       chexnet split --train A [--val B] [--test C] [--labels FILE]\n"
            "       chexnet split --manifest manifest.csv [--patient-column patient_key]\n\n"
            "Splits a dataset by patient (no patient in two splits) and prints, per split,\n"
            "the patients, images and positive images per class. The random split deals\n"
            "shuffled patients (seeded) into train/val/test by the cumulative fractions of\n"
            "their images. With --train/--val/--test the lists define the split.\n"
            "--out DIR writes DIR/train.txt, val.txt, test.txt ('IMAGE L1 ... LK', the 14\n"
            "ChestX-ray14 labels for ChestX-ray14 sources), reusable with --train/--val/--test.\n\n"
            "%s"
            "output:\n"
            "  --out DIR            write the split files (atomically)\n"
            "  --json               print JSON instead of a table\n"
            "  --version            print the version\n\n"
            "%s",
            data_args_help(), cli_limits_help());
}

int cmd_split(int argc, char **argv)
{
    const char *cmd = "split";
    enum { O_JSON = CLI_OPT_FIRST_FREE, O_OUT };
    static const struct option opts[] = {
        DATA_ARGS_OPTIONS,
        {"json", no_argument, 0, O_JSON},
        {"out", required_argument, 0, O_OUT},
        {0, 0, 0, 0}};
    data_args a;
    data_args_init(&a);
    const char *out = NULL;
    int json = 0;
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
        } else if (opt == O_OUT || opt == 'o') {
            out = optarg;
        } else {
            data_args_free(&a);
            return 2;
        }
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
