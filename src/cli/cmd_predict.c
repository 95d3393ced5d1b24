/* chexnet predict: placeholder until its issue lands (replaced by the owner). */
#include "cli.h"

int cmd_predict(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("predict", "not implemented yet");
    return 2;
}
