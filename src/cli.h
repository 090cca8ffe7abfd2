/* SPDX-License-Identifier: MIT */
/*
 * Command line: `snapsync [--config FILE] COMMAND [ARGS]`. Parses arguments, runs the command,
 * maps errors to exit codes (0 success, 1 some file failed, 2 usage or configuration error).
 */
#pragma once

/* Runs the command line; returns the process exit code. Main thread only. */
int cli_main(int argc, char **argv);
