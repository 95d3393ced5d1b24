/* chexnet train: placeholder until its issue lands (replaced by the owner). */
#include "cli.h"

int cmd_train(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("train", "not implemented yet");
    return 2;
}
