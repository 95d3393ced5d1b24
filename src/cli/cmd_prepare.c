/* chexnet prepare: decode and resize a dataset once into a packed file. */
#define _GNU_SOURCE
#include "cli.h"
#include "data_args.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet prepare --labels FILE --image-dir DIR [--task pneumonia|all14]\n"
            "                       [--size 224] [--channels auto|1|3] [--threads N]\n"
            "                       [--only LIST]... -o FILE.cxpack\n"
            "       chexnet prepare --manifest manifest.csv -o FILE.cxpack\n\n"
            "Decodes every image of a dataset once, resizes it to SIZE x SIZE (PIL-exact\n"
            "bilinear; the identity when already that size) and writes one packed file\n"
            "(uint8 pixels with names, labels and patients) that 'chexnet train' and the\n"
            "loader read by memory mapping, so epochs do not decode images again.\n"
            "Written atomically. Decoding runs on --threads threads (default: all cores).\n\n"
            "channels:\n"
            "  auto  (default) one channel for grey images (including RGB files whose\n"
            "        pixels all have R = G = B), else RGB: exact for 3- and 1-channel\n"
            "        models on grey X-rays, and 3x smaller\n"
            "  1     luma (PIL convert(\"L\") before resizing): exact for 1-channel models\n"
            "  3     RGB for every image\n\n"
            "%s"
            "  --only LIST          pack only the images named in LIST (a split list or\n"
            "                       plain names; repeatable, e.g. train.txt and val.txt);\n"
            "                       with --labels, --train/--val/--test lists act the same\n"
            "  --version            print the version\n\n"
            "%s",
            data_args_help(), cli_limits_help());
}

typedef struct {
    cli_progress bar;
} prog_state;

static void on_progress(void *user, long done, long total)
{
    prog_state *p = user;
    (void)total;
    cli_progress_update(&p->bar, done);
}

int cmd_prepare(int argc, char **argv)
{
    const char *cmd = "prepare";
    enum { O_OUT = CLI_OPT_FIRST_FREE, O_SIZE, O_CHANNELS, O_THREADS, O_ONLY };
    static const struct option opts[] = {
        DATA_ARGS_OPTIONS,
        {"out", required_argument, 0, O_OUT},
        {"output", required_argument, 0, O_OUT},
        {"size", required_argument, 0, O_SIZE},
        {"channels", required_argument, 0, O_CHANNELS},
        {"threads", required_argument, 0, O_THREADS},
        {"only", required_argument, 0, O_ONLY},
        {0, 0, 0, 0}};
    data_args a;
    data_args_init(&a);
    cx_pack_opts po;
    cx_pack_opts_default(&po);
    const char *out = NULL;
    const char *only[8];
    int n_only = 0;
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
        const char *val = optarg;
        long v;
        if (opt == 'o' || opt == O_OUT) {
            out = val;
        } else if (opt == O_SIZE) {
            if (cli_parse_int(val, 1, 4096, &v)) {
                cli_error(cmd, "--size wants 1..4096, got '%s'", val);
                data_args_free(&a);
                return 2;
            }
            po.size = (int)v;
        } else if (opt == O_CHANNELS) {
            if (!strcmp(val, "auto"))
                po.channels = 0;
            else if (!strcmp(val, "1") || !strcmp(val, "3"))
                po.channels = atoi(val);
            else {
                cli_error(cmd, "--channels wants auto, 1 or 3, got '%s'", val);
                data_args_free(&a);
                return 2;
            }
        } else if (opt == O_THREADS) {
            if (cli_parse_int(val, 1, 1024, &v)) {
                cli_error(cmd, "--threads wants 1..1024, got '%s'", val);
                data_args_free(&a);
                return 2;
            }
            po.threads = (int)v;
        } else if (opt == O_ONLY) {
            if (n_only == 8) {
                cli_error(cmd, "at most 8 --only lists");
                data_args_free(&a);
                return 2;
            }
            only[n_only++] = val;
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
    if (!out) {
        cli_error(cmd, "no output: give -o FILE.cxpack");
        data_args_free(&a);
        return 2;
    }
    /* with --labels, split lists choose the images to pack (without it they
     * are the dataset itself) */
    if (a.labels)
        for (int p = 0; p < 3; p++)
            if (a.lists[p] && n_only < 8)
                only[n_only++] = a.lists[p];
    cx_dataset *ds = NULL;
    if (data_args_load(cmd, &a, &ds)) {
        data_args_free(&a);
        return 1;
    }
    int rc = 0;
    cx_err err = {0};
    int *idx = NULL, n = cx_dataset_size(ds);
    if (n_only) {
        /* the images of the --only lists, via a split whose train part they are */
        idx = malloc((size_t)n * sizeof *idx);
        char *mark = calloc((size_t)n, 1);
        if (!idx || !mark) {
            cli_error(cmd, "out of memory");
            free(mark);
            rc = 1;
            goto done;
        }
        for (int l = 0; l < n_only; l++) {
            cx_split sp;
            if (cx_split_from_lists(ds, only[l], NULL, NULL, 0, 0, &sp, &err)) {
                free(mark);
                rc = cli_fail(cmd, &err);
                goto done;
            }
            for (int j = 0; j < sp.count[0]; j++)
                mark[sp.index[0][j]] = 1;
            cx_split_free(&sp);
        }
        n = 0;
        for (int i = 0; i < cx_dataset_size(ds); i++)
            if (mark[i])
                idx[n++] = i;
        free(mark);
    }
    data_print_warnings(cmd, ds, NULL);
    if (cx_dataset_check_images(ds, idx, n, &err)) {
        rc = cli_fail(cmd, &err);
        goto done;
    }
    prog_state ps;
    cli_progress_start(&ps.bar, "prepare", "img", n);
    double t0 = cli_now();
    cx_status st = cx_pack_write(ds, idx, n, &po, out, on_progress, &ps, &err);
    cli_progress_end(&ps.bar);
    if (st) {
        rc = cli_fail(cmd, &err);
        goto done;
    }
    double dt = cli_now() - t0;
    struct stat sb;
    long long bytes = stat(out, &sb) == 0 ? (long long)sb.st_size : -1;
    printf("wrote %s: %s, %dx%d, channels %s, %s, %.1f MB in %.1f s "
           "(%.1f images/s)\n",
           out, cli_plural(n, "image", "images"), po.size, po.size,
           po.channels == 0 ? "auto" : po.channels == 1 ? "1" : "3",
           cli_plural(cx_dataset_num_classes(ds), "class", "classes"),
           bytes / 1e6, dt, dt > 0 ? n / dt : 0.0);
done:
    free(idx);
    cx_dataset_free(ds);
    data_args_free(&a);
    return rc;
}
