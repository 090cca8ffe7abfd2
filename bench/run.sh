#!/bin/sh
# SPDX-License-Identifier: MIT
# SnapSync benchmark: throughput, peak RSS and CPU of `snapsync backup` against cp, rsync and
# rclone on a synthetic card, plus the re-run time of an already backed-up 10,000-file card.
#
#   sh bench/run.sh                    # full size: a card of about 3 GiB, 5 rounds
#   BENCH_SCALE=0.05 sh bench/run.sh   # quick run (card about 150 MiB)
#
# Environment:
#   BENCH_SCALE    card size factor (default 1 = about 3 GiB)
#   BENCH_ROUNDS   interleaved rounds (default 5, at least 5 for the report)
#   BENCH_SMALL    files on the small-file card (default 10000)
#   SNAPSYNC_BIN   binary to measure (default: build-bench/snapsync, built if missing)
#   BENCH_NO_APT=1 skip apt-get (the tools must already be installed)
#   BENCH_CARD     image (default as root): the card as a read-only ext4 image on a loop device,
#                  a filesystem of its own as a real card is; folder: the generated folder,
#                  on the destination's filesystem
#
# Everything it writes goes to bench/out/ (gitignored); results in bench/out/results.md.
# Exit status: 0 when the measurements ran (targets missed or not), non-zero on errors.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

. "$here/lib.sh"

need=""
command -v rsync >/dev/null 2>&1 || need="$need rsync"
command -v rclone >/dev/null 2>&1 || need="$need rclone"
[ -x /usr/bin/time ] || need="$need time"
command -v python3 >/dev/null 2>&1 || need="$need python3"
[ "${BENCH_NO_APT:-0}" = 1 ] || bench_install "$need"
for t in rsync rclone python3 cp sync; do
    command -v "$t" >/dev/null 2>&1 || { echo "bench: $t is missing" >&2; exit 2; }
done
[ -x /usr/bin/time ] || { echo "bench: GNU time (/usr/bin/time) is missing" >&2; exit 2; }

bench_bin

exec python3 "$here/bench.py" --bin "$bin" --out "$here/out" "$@"
