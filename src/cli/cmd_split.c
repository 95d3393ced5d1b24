/* chexnet split: placeholder until its issue lands (replaced by the owner). */
#include "cli.h"

int cmd_split(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("split", "not implemented yet");
    return 2;
}
