/* Placeholder until the CLI lands in this same series of commits. */
#include "cli.h"

#include <stdio.h>

int cli_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fputs("snapsync: not built yet\n", stderr);
    return 2;
}
