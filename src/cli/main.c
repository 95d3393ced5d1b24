/* chexnet: one binary, subcommands. */
#include "cli.h"

#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} command;

static const command COMMANDS[] = {
    {"predict", cmd_predict, "probabilities (and CAM heatmaps) for X-ray images"},
    {"evaluate", cmd_evaluate, "AUROC with bootstrap CIs, operating points, ROC report"},
    {"calibrate", cmd_calibrate, "fit temperature, thresholds and CAM range on validation images"},
    {"readers", cmd_readers, "reader study: model F1 vs radiologists (paper's Table 1)"},
    {"localize", cmd_localize, "heat maps against radiologists' boxes (pointing game, IoU)"},
    {"train", cmd_train, "train a DenseNet on ChestX-ray14 or a manifest"},
    {"split", cmd_split, "patient-level train/val/test split and its counts"},
    {"prepare", cmd_prepare, "decode and resize a dataset once into a packed file"},
    {"info", cmd_info, "describe a model file"},
    {"init", cmd_init, "write a freshly initialised model"},
    {"export", cmd_export, "rewrite a model: dtype, metadata, class names"},
    {"bench", cmd_bench, "time the forward pass"},
    {"serve", cmd_serve, "HTTP service with a viewer; results back into a PACS"},
};
#define N_COMMANDS (int)(sizeof COMMANDS / sizeof COMMANDS[0])

static void usage(FILE *f)
{
    fprintf(f,
            "chexnet %s - CheXNet chest X-ray classifier in C\n\n"
            "usage: chexnet COMMAND [OPTIONS] [ARGS]\n\n"
            "commands:\n",
            CX_VERSION);
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", COMMANDS[i].name, COMMANDS[i].summary);
    fprintf(f, "\nRun 'chexnet COMMAND --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        cli_print_version();
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], COMMANDS[i].name))
            return COMMANDS[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "chexnet: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
