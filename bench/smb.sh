#!/bin/sh
# SMB benchmark (bench/smb.py): snapsync to a loopback smbd vs `smbclient mput`, and SMB + local
# at once vs the slower alone. As root (smbd). Results in bench/out/smb/results.md.
#
#   sh bench/smb.sh                     # card of about 1.4 GiB, 3 rounds
#   BENCH_SCALE=0.1 sh bench/smb.sh     # quick
# SNAPSYNC_BIN picks the binary (default build-bench/snapsync, built if missing).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
bin=${SNAPSYNC_BIN:-$root/build-bench/snapsync}
if [ ! -x "$bin" ]; then
    cmake -S "$root" -B "$root/build-bench" -DCMAKE_BUILD_TYPE=Release -DSNAPSYNC_TESTS=OFF >/dev/null
    cmake --build "$root/build-bench" -j"$(nproc)" >/dev/null
fi
SNAPSYNC_BIN=$bin exec python3 "$here/smb.py"
