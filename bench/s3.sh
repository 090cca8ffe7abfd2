#!/bin/sh
# SPDX-License-Identifier: MIT
# S3 benchmark (bench/s3.py): snapsync to a loopback S3 server (s3rver from npm, pinned in
# tests/s3/) against `rclone copy` to the same server, same card, interleaved rounds: wall time,
# client CPU and peak RSS. Results in bench/out/s3/results.md.
#
#   sh bench/s3.sh                    # card of about 720 MiB, 3 rounds
#   BENCH_SCALE=0.2 sh bench/s3.sh    # quick
#   BENCH_ROUNDS=5 sh bench/s3.sh
# SNAPSYNC_BIN picks the binary (default build-bench/snapsync, built if missing). Needs node and
# npm (scripts/deps.sh --test) and rclone.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/lib.sh"
missing=""
command -v rclone >/dev/null || missing="$missing rclone"
command -v node >/dev/null || missing="$missing nodejs npm"
bench_install "${missing# }"
bench_bin
SNAPSYNC_BIN=$bin exec python3 "$here/s3.py"
