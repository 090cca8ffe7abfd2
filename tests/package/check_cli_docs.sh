#!/bin/sh
# SPDX-License-Identifier: MIT
# The man page and the bash completion name every command and every long option of src/cli.c.
#   sh tests/package/check_cli_docs.sh SOURCE_DIR
set -eu
top=${1:-.}
cli="$top/src/cli.c"
man="$top/man/snapsync.1"
comp="$top/completions/snapsync.bash"
bad=0

commands=$(sed -n 's/^ *{"\([a-z-]*\)", cmd_[a-z_]*,.*/\1/p' "$cli")
options=$(sed -n 's/^ *{"\([a-z-]*\)", \(no\|required\)_argument,.*/\1/p' "$cli" | sort -u)
[ -n "$commands" ] && [ -n "$options" ] || { echo "no commands or options found in $cli" >&2; exit 1; }

# shellcheck disable=SC2016
comp_commands=$(sed -n 's/^ *local commands="\(.*\)"$/\1/p' "$comp")
for c in $commands; do
    echo " $comp_commands " | grep -q " $c " || { echo "completion lacks command $c"; bad=1; }
    grep -q "^\.BR\{0,1\} $(echo "$c" | sed 's/-/\\\\-/g')\( \|$\)" "$man" ||
        { echo "man page lacks command $c"; bad=1; }
done
for o in $options; do
    grep -q -- "--$o\b" "$comp" || { echo "completion lacks --$o"; bad=1; }
    grep -q -- "\\\\-\\\\-$(echo "$o" | sed 's/-/\\\\-/g')\b" "$man" || { echo "man page lacks --$o"; bad=1; }
done
[ "$bad" = 0 ] && echo "check_cli_docs: $(echo $commands | wc -w) commands, $(echo $options | wc -w) options documented"
exit "$bad"
