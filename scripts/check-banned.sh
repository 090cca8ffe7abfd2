#!/bin/sh
# SPDX-License-Identifier: MIT
# Fails when src/ or tests/ call a function our style bans (see docs/style.md).
top=${1:-.}
hits=$(grep -nE '\b(strcpy|strcat|sprintf|vsprintf|strtok|atoi|atol|atof|gets|system)[[:space:]]*\(' \
    "$top"/src/*.c "$top"/src/*.h "$top"/tests/unit/*.c "$top"/tests/fuzz/*.c 2>/dev/null)
if [ -n "$hits" ]; then
    echo "banned functions used:"
    echo "$hits"
    exit 1
fi
echo "no banned functions"
