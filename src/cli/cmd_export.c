/* chexnet export: rewrite a model file (another dtype, extra metadata,
 * modern torchvision names; a training checkpoint's optimiser state is
 * dropped). */
#include "cli.h"

#include <getopt.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: chexnet export MODEL.safetensors -o OUT.safetensors [--dtype f32|f16|bf16]\n"
            "                      [--meta KEY=VALUE]... [--classes A,B,...]\n\n"
            "Writes the model again with torchvision's modern names (loads in PyTorch\n"
            "with strict=True): to change the storage dtype, add or replace metadata\n"
            "(e.g. licence, validation figures), rename the classes, or strip a\n"
            "training checkpoint's optimiser state. Written atomically.\n");
}

int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"meta", required_argument, 0, 'm'},
                                         {"classes", required_argument, 0, 'c'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *classes = NULL;
    const char *metas[64];
    int n_meta = 0, c;
    cx_dtype dt = CX_DT_F32;
    cli_getopt g;
    cli_getopt_init(&g, "export", argc, argv, "o:h", opts, 0, usage);
    while ((c = cli_getopt_next(&g)) != -1) {
        if (c == CLI_OPT_EXIT)
            return g.exit_code;
        switch (c) {
        case 'o': out = optarg; break;
        case 'd':
            if (!strcmp(optarg, "f32")) dt = CX_DT_F32;
            else if (!strcmp(optarg, "f16")) dt = CX_DT_F16;
            else if (!strcmp(optarg, "bf16")) dt = CX_DT_BF16;
            else {
                cli_error("export", "--dtype wants f32, f16 or bf16, got '%s'", optarg);
                return 2;
            }
            break;
        case 'm':
            if (n_meta == 64 || !strchr(optarg, '=') || optarg[0] == '=') {
                cli_error("export", "--meta wants KEY=VALUE (at most 64), got '%s'", optarg);
                return 2;
            }
            metas[n_meta++] = optarg;
            break;
        case 'c': classes = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!out || optind != argc - 1) {
        usage(stderr);
        return 2;
    }
    cx_err err = {0};
    cx_model *m = NULL;
    if (cx_model_load(argv[optind], &m, &err))
        return cli_fail("export", &err);
    int rc = 0;
    for (int i = 0; i < n_meta && !rc; i++) {
        char key[256];
        const char *eq = strchr(metas[i], '=');
        size_t kl = (size_t)(eq - metas[i]);
        if (kl >= sizeof key)
            kl = sizeof key - 1;
        memcpy(key, metas[i], kl);
        key[kl] = 0;
        if (cx_model_set_meta(m, key, eq + 1, &err))
            rc = cli_fail("export", &err);
    }
    if (!rc && classes) {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", classes);
        const char *names[1024];
        int n = 0;
        for (char *tok = strtok(buf, ","); tok && n < 1024; tok = strtok(NULL, ","))
            names[n++] = tok;
        if (cx_model_set_class_names(m, n, names, &err))
            rc = cli_fail("export", &err);
    }
    if (!rc && cx_model_save(m, out, dt, &err))
        rc = cli_fail("export", &err);
    cx_model_free(m);
    return rc;
}
