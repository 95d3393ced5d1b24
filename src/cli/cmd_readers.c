/* chexnet readers: placeholder until its issue lands (replaced by the owner). */
#include "cli.h"

int cmd_readers(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("readers", "not implemented yet");
    return 2;
}
