/* chexnet init: write a freshly initialised model. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet init [--arch densenet121|densenet169|densenet201] [--classes N]\n"
            "                    [--class-names A,B,...] [--in-channels 3|1] [--seed S]\n"
            "                    [--dtype f32|f16|bf16] -o FILE.safetensors\n\n"
            "Writes a model initialised as torchvision does (Kaiming-normal convolutions,\n"
            "BatchNorm weight 1 / bias 0, Linear default init with bias 0).\n"
            "Defaults: densenet121, 14 classes (ChestX-ray14 order), 3 input channels,\n"
            "seed 0, f32. With 1 class the class is Pneumonia.\n");
}

int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {{"arch", required_argument, 0, 'a'},
                                         {"classes", required_argument, 0, 'c'},
                                         {"class-names", required_argument, 0, 'n'},
                                         {"in-channels", required_argument, 0, 'i'},
                                         {"seed", required_argument, 0, 's'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"output", required_argument, 0, 'o'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *arch = "densenet121", *outp = NULL, *names = NULL;
    long classes = 14, inch = 3, seed = 0;
    cx_dtype dt = CX_DT_F32;
    int c;
    cli_getopt g;
    cli_getopt_init(&g, "init", argc, argv, "o:h", opts, 0, usage);
    while ((c = cli_getopt_next(&g)) != -1) {
        if (c == CLI_OPT_EXIT)
            return g.exit_code;
        switch (c) {
        case 'a': arch = optarg; break;
        case 'c':
            if (cli_opt_int(&g, 1, 100000, &classes))
                return 2;
            break;
        case 'n': names = optarg; break;
        case 'i':
            if (cli_opt_int(&g, 1, 4, &inch))
                return 2;
            break;
        case 's':
            if (cli_opt_int(&g, 0, LONG_MAX, &seed))
                return 2;
            break;
        case 'd':
            if (!strcmp(optarg, "f32")) dt = CX_DT_F32;
            else if (!strcmp(optarg, "f16")) dt = CX_DT_F16;
            else if (!strcmp(optarg, "bf16")) dt = CX_DT_BF16;
            else {
                cli_error("init", "--dtype wants f32, f16 or bf16, got '%s'", optarg);
                return 2;
            }
            break;
        case 'o': outp = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!outp || optind != argc) {
        usage(stderr);
        return 2;
    }
    cx_err err = {0};
    cx_config cfg;
    if (cx_config_preset(arch, (int)classes, (int)inch, &cfg, &err))
        return cli_fail("init", &err);
    cx_model *m = NULL;
    if (cx_model_new(&cfg, &m, &err))
        return cli_fail("init", &err);
    cx_model_init(m, (uint64_t)seed);
    if (names) {
        char *copy = strdup(names);
        const char **v = calloc((size_t)classes + 1, sizeof *v);
        int n = 0;
        for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ","))
            if (n <= classes)
                v[n++] = tok;
        cx_status st = cx_model_set_class_names(m, n, v, &err);
        free(v);
        free(copy);
        if (st) {
            cx_model_free(m);
            return cli_fail("init", &err);
        }
    }
    char seedbuf[32];
    snprintf(seedbuf, sizeof seedbuf, "%ld", seed);
    cx_model_set_meta(m, "init_seed", seedbuf, NULL);
    cx_model_set_meta(m, "created_by", "chexnet init " CX_VERSION, NULL);
    if (cx_model_save(m, outp, dt, &err)) {
        cx_model_free(m);
        return cli_fail("init", &err);
    }
    fprintf(stderr, "wrote %s: %s, %s, %lld parameters\n", outp, cfg.arch,
            cli_plural(cfg.num_classes, "class", "classes"), (long long)cx_model_num_params(m));
    cx_model_free(m);
    return 0;
}
