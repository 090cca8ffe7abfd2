/* SPDX-License-Identifier: MIT */
/* The binary: hands argv to the CLI. */
#include "cli.h"

int main(int argc, char **argv)
{
    return cli_main(argc, argv);
}
