/* chexnet prepare: placeholder until its issue lands (replaced by the owner). */
#include "cli.h"

int cmd_prepare(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("prepare", "not implemented yet");
    return 2;
}
