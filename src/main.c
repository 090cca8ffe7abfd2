/* SPDX-License-Identifier: MIT */
/* The binary: hands argv to the CLI. */
#include "cli.h"

#include <time.h>

int main(int argc, char **argv)
{
    /* Reads the time zone once, before any thread starts: glibc's localtime_r loads it on first
     * use under a lock of its own, which race checkers (DRD) cannot see, and the workers all call
     * it (media_floating_time). */
    tzset();
    return cli_main(argc, argv);
}
