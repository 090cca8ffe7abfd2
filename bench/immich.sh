#!/bin/sh
# SPDX-License-Identifier: MIT
# Immich benchmark (bench/immich.py): snapsync against the official Immich CLI, both uploading the
# benchmark card to tests/immich/server.py, and snapsync to Immich + a local folder at once.
# As root (to drop the page cache). Results in bench/out/immich/results.md.
#
#   sh bench/immich.sh                     # the card of bench/run.sh (about 3 GiB), 3 rounds
#   BENCH_SCALE=0.05 sh bench/immich.sh    # quick
# SNAPSYNC_BIN picks the binary (default build-bench/snapsync, built if missing); BENCH_ROUNDS
# the rounds; IMMICH_UPLOAD_CONCURRENCY the CLI's concurrency (default: CPUs - 1). The CLI and Node
# come from npm, pinned by bench/immich-cli/package-lock.json, installed into bench/out/immich-cli.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/lib.sh"
need=""
command -v npm >/dev/null 2>&1 || need="$need npm"
[ -x /usr/bin/time ] || need="$need time"
bench_install "$need"
bench_bin
SNAPSYNC_BIN=$bin exec python3 "$here/immich.py"
