/* chexnet info MODEL|PACK: describe a model file or a packed dataset. */
#include "cli.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A pack: starts with the pack's magic. */
static int is_pack(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char m[8];
    int r = fread(m, 1, 8, f) == 8 && !memcmp(m, "CXPACK\r\n", 8);
    fclose(f);
    return r;
}

static int info_pack(const char *path, int json)
{
    cx_err err = {0};
    cx_dataset *ds = NULL;
    if (cx_pack_open(path, &ds, &err))
        return cli_fail("info", &err);
    struct stat st;
    long long bytes = stat(path, &st) == 0 ? (long long)st.st_size : -1;
    int n = cx_dataset_size(ds), K = cx_dataset_num_classes(ds);
    const uint8_t *lab = cx_dataset_labels(ds);
    long *pos = calloc((size_t)K + 1, sizeof *pos);
    if (!pos) {
        cx_dataset_free(ds);
        cli_error("info", "out of memory");
        return 1;
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < K; k++)
            pos[k] += lab[(size_t)i * K + k] != 0;
    double per = n ? (double)bytes / n : 0;
    if (json) {
        printf("{\"file\": ");
        cx_json_escape(stdout, path);
        printf(", \"format\": \"cxpack\", \"images\": %d, \"patients\": %d, \"size\": %d, "
               "\"bytes\": %lld, \"bytes_per_image\": %.17g, \"classes\": [",
               n, cx_dataset_num_patients(ds), cx_dataset_pack_size(ds), bytes, per);
        for (int k = 0; k < K; k++) {
            if (k)
                printf(", ");
            cx_json_escape(stdout, cx_dataset_class(ds, k));
        }
        printf("], \"positives\": {");
        for (int k = 0; k < K; k++) {
            if (k)
                printf(", ");
            cx_json_escape(stdout, cx_dataset_class(ds, k));
            printf(": %ld", pos[k]);
        }
        printf("}}\n");
    } else {
        printf("file          %s (pack made by chexnet prepare)\n", path);
        printf("images        %s, %s, %dx%d\n", cli_plural(n, "image", "images"),
               cli_plural(cx_dataset_num_patients(ds), "patient", "patients"),
               cx_dataset_pack_size(ds), cx_dataset_pack_size(ds));
        printf("size          %lld bytes, %.0f per image\n", bytes, per);
        printf("classes       %d, positive images:", K);
        for (int k = 0; k < K; k++)
            printf(" %s %ld%s", cx_dataset_class(ds, k), pos[k], k + 1 < K ? "," : "");
        printf("\n");
    }
    free(pos);
    cx_dataset_free(ds);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: chexnet info [--json] [MODEL.safetensors | PACK.cxpack]\n\n"
               "Prints the architecture, classes, parameter count, input channels and size,\n"
               "normalisation, storage dtype and metadata of a model file (default: the\n"
               "shipped model that 'chexnet predict' uses without --model).\n"
               "Of a pack made by 'chexnet prepare': its images, patients, image side,\n"
               "classes with their positive images, and its size on disk in all and per\n"
               "image.\n\n"
               "  --json      machine-readable output\n"
               "  -h, --help  this help\n");
}

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int json = 0, c;
    cli_getopt g;
    cli_getopt_init(&g, "info", argc, argv, "h", opts, 0, usage);
    while ((c = cli_getopt_next(&g)) != -1) {
        if (c == CLI_OPT_EXIT)
            return g.exit_code;
        if (c == 'j')
            json = 1;
        else if (c == 'h') {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc - 1) {
        usage(stderr);
        return 2;
    }
    const char *path = optind == argc - 1 ? argv[optind] : cli_default_model();
    if (!path) {
        cli_error("info", "no model given and no shipped model found (set CHEXNET_MODEL)");
        return 1;
    }
    if (is_pack(path))
        return info_pack(path, json);
    cx_err err = {0};
    cx_model *m = NULL;
    if (cx_model_load(path, &m, &err))
        return cli_fail("info", &err);
    const cx_config *cfg = cx_model_config(m);
    float mean[3], sd[3];
    cx_model_normalization(m, mean, sd);
    int nc = cx_model_num_classes(m);
    if (json) {
        printf("{\"file\": ");
        cx_json_escape(stdout, path);
        printf(", \"arch\": ");
        cx_json_escape(stdout, cfg->arch);
        printf(", \"growth_rate\": %d, \"block_config\": [", cfg->growth_rate);
        for (int b = 0; b < cfg->n_blocks; b++)
            printf("%s%d", b ? ", " : "", cfg->block_config[b]);
        printf("], \"num_init_features\": %d, \"bn_size\": %d, \"num_features\": %d, "
               "\"in_channels\": %d, \"input_size\": %d, \"parameters\": %lld, \"dtype\": \"%s\", "
               "\"mean\": [%g, %g, %g], \"std\": [%g, %g, %g], \"classes\": [",
               cfg->num_init_features, cfg->bn_size, cx_config_num_features(cfg), cfg->in_channels,
               cx_model_input_size(m), (long long)cx_model_num_params(m),
               cx_dtype_name(cx_model_file_dtype(m)), mean[0], mean[1], mean[2], sd[0], sd[1],
               sd[2]);
        for (int i = 0; i < nc; i++) {
            if (i)
                printf(", ");
            cx_json_escape(stdout, cx_model_class_name(m, i));
        }
        printf("], \"metadata\": {");
        for (int i = 0; i < cx_model_num_meta(m); i++) {
            const cx_kv *kv = cx_model_meta_at(m, i);
            if (i)
                printf(", ");
            cx_json_escape(stdout, kv->key);
            printf(": ");
            cx_json_escape(stdout, kv->value);
        }
        printf("}}\n");
    } else {
        printf("file          %s\n", path);
        printf("architecture  %s (DenseNet-BC, growth %d, blocks", cfg->arch, cfg->growth_rate);
        for (int b = 0; b < cfg->n_blocks; b++)
            printf("%s%d", b ? "-" : " ", cfg->block_config[b]);
        printf(", %d initial features, bottleneck %dx)\n", cfg->num_init_features, cfg->bn_size);
        printf("parameters    %lld\n", (long long)cx_model_num_params(m));
        printf("input         %d channel%s, %dx%d, mean %g,%g,%g std %g,%g,%g\n", cfg->in_channels,
               cfg->in_channels == 1 ? "" : "s", cx_model_input_size(m), cx_model_input_size(m),
               mean[0], mean[1], mean[2], sd[0], sd[1], sd[2]);
        printf("features      %d\n", cx_config_num_features(cfg));
        printf("dtype         %s\n", cx_dtype_name(cx_model_file_dtype(m)));
        printf("classes       %d:", nc);
        for (int i = 0; i < nc; i++)
            printf(" %s", cx_model_class_name(m, i));
        printf("\n");
        static const char *shown[] = {"arch", "classes", "input_size", "mean", "std", "format"};
        for (int i = 0; i < cx_model_num_meta(m); i++) {
            const cx_kv *kv = cx_model_meta_at(m, i);
            int skip = 0;
            for (size_t j = 0; j < sizeof shown / sizeof shown[0]; j++)
                skip |= !strcmp(kv->key, shown[j]);
            if (!skip)
                printf("%-13s %s\n", kv->key, kv->value);
        }
    }
    cx_model_free(m);
    return 0;
}
