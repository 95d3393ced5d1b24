/* chexnet evaluate: placeholder until its issue lands (replaced by the owner). */
#include "cli.h"

int cmd_evaluate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("evaluate", "not implemented yet");
    return 2;
}
