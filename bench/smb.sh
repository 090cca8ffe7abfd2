#!/bin/sh
# SPDX-License-Identifier: MIT
# SMB benchmark (bench/smb.py): snapsync to a loopback smbd vs `smbclient mput` and `rclone copy`
# (and `rclone copy` + `rclone check --download`, a peer that verifies too),
# and SMB + local at once vs the slower alone. As root (smbd). Results in bench/out/smb/results.md.
#
#   sh bench/smb.sh                     # card of about 1.4 GiB, 3 rounds
#   BENCH_SCALE=0.1 sh bench/smb.sh     # quick
#   BENCH_LINK=1gbit sh bench/smb.sh    # smbd behind a 1 Gbit/s full-duplex link (netns + tc)
#   BENCH_COMPARE_BIN=old/snapsync sh bench/smb.sh   # also time another build, interleaved
#   BENCH_CONCURRENT=4 sh bench/smb.sh  # snapsync's backup.concurrent_files (default 2)
#   BENCH_LINK=1gbit BENCH_LINK_LATENCY=2ms sh bench/smb.sh   # a shallower queue on the link
#   BENCH_LINK=1gbit BENCH_LINK_QUEUE=flows sh bench/smb.sh   # a queue per TCP flow (fq_codel-like)
#   BENCH_ONLY="snapsync smb;rclone copy" sh bench/smb.sh     # only these runs (';' separates)
# SNAPSYNC_BIN picks the binary (default build-bench/snapsync, built if missing).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
. "$here/lib.sh"
bench_bin
SNAPSYNC_BIN=$bin exec python3 "$here/smb.py"
