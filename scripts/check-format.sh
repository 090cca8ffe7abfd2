#!/bin/sh
# SPDX-License-Identifier: MIT
# Fails when a C file of the project is not formatted as .clang-format says (clang-format 14, as
# Debian 12 ships it). Fix with: sh scripts/check-format.sh --fix
set -eu
fix=false
if [ "${1:-}" = "--fix" ]; then
    fix=true
    shift
fi
cd "${1:-$(dirname "$0")/..}"
files=$(find src tests/unit tests/fuzz -name '*.[ch]' | sort)
if $fix; then
    # shellcheck disable=SC2086
    clang-format -i $files
    exit 0
fi
# shellcheck disable=SC2086
clang-format --dry-run --Werror $files
