#!/bin/sh
# SPDX-License-Identifier: MIT
# Dead-destination benchmark (bench/deadsmb.py): how long the local copies take when an SMB
# destination next to them is dead or hangs, against the local destination alone. As root (smbd).
# Results in bench/out/deadsmb/results.md. The target (issue 13): the local copies finish within
# 1.2 x the local destination alone plus one connect timeout (unraid.timeout).
#
#   sh bench/deadsmb.sh                         # card of about 1 GiB, 3 rounds, unraid.timeout 30
#   BENCH_SCALE=0.25 BENCH_SMB_TIMEOUT=5 sh bench/deadsmb.sh   # quick
#   BENCH_ONLY="+ smbd stopped mid-session" BENCH_LOG_LEVEL=debug sh bench/deadsmb.sh
#                                   # one case (and the reference), with each run's log in debug
# SNAPSYNC_BIN picks the binary (default build-bench/snapsync, built if missing).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/lib.sh"
bench_bin
SNAPSYNC_BIN=$bin exec python3 "$here/deadsmb.py"
