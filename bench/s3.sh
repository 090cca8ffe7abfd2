#!/bin/sh
# SPDX-License-Identifier: MIT
# S3 benchmark (bench/s3.py): snapsync to S3, rclone copy, and snapsync through its rclone
# destination, all to the s3rver of the tests on loopback, in the same run. As root (to drop the
# page cache). Results in bench/out/s3/results.md.
#
#   sh bench/s3.sh                       # 40 videos of 24 MiB + 80 raws of 6 MiB, 3 rounds
#   BENCH_SCALE=0.1 BENCH_ROUNDS=1 sh bench/s3.sh   # quick
#   BENCH_CONCURRENT=4 BENCH_PART_SIZE=32 sh bench/s3.sh   # snapsync's concurrent_files, s3.part_size
# SNAPSYNC_BIN picks the binary (default build-bench/snapsync, built if missing).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/lib.sh"
need=""
command -v rclone >/dev/null 2>&1 || need="$need rclone"
command -v npm >/dev/null 2>&1 || need="$need npm"
bench_install "$need"
bench_bin
SNAPSYNC_BIN=$bin exec python3 "$here/s3.py"
