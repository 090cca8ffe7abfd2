#!/bin/sh
# SPDX-License-Identifier: MIT
# The checks run before each release that the test command (sh scripts/test.sh) leaves out, and
# the release artefacts:
#   1. the arm64 (Raspberry Pi OS 64-bit) check, tests/package/test_arm64.py: the cross build,
#      its unit tests under qemu-user-static, a backup by the arm64 binary in an arm64 root, the
#      arm64 .deb (scripts/package.sh --arch arm64, lintian) installed there with apt-get
#   2. the amd64 .deb (scripts/package.sh: unit tests, lintian) and the container image
#      (scripts/container.sh), built again from this checkout so all artefacts are of one source
# then prints where they are. Run sh scripts/test.sh first (it tests the amd64 .deb in a bare
# Debian 12, the image, the add-on and the template). Root (mmdebstrap, chroot, podman).
# Warm 3.7 min here; cold (no build-arm64/ yet) about 20 min (docs/testing.md, "Release check").
#
#   sh scripts/release-check.sh
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
[ "$(id -u)" -eq 0 ] || { echo "release-check: needs root (mmdebstrap, chroot, podman)" >&2; exit 1; }
start=$(date +%s)
say() { echo "release-check: $* ($(($(date +%s) - start)) s)"; }
version=$(sed -n 's/^project(snapsync VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
logs=$top/build-release
mkdir -p "$logs"

say "arm64: cross build, unit tests under qemu, backup, .deb build and install (log: $logs/arm64.log)"
python3 tests/package/test_arm64.py -v >"$logs/arm64.log" 2>&1 ||
    { tail -n 40 "$logs/arm64.log"; echo "release-check: FAIL: arm64 (log: $logs/arm64.log)" >&2; exit 1; }

say "amd64 .deb (log: $logs/deb.log)"
sh scripts/package.sh >"$logs/deb.log" 2>&1 ||
    { tail -n 40 "$logs/deb.log"; echo "release-check: FAIL: amd64 .deb (log: $logs/deb.log)" >&2; exit 1; }

say "container image (log: $logs/container.log)"
# REFRESH: the runtime packages' layer is reused across source changes (Dockerfile); a release
# takes them, security updates included, from the mirror again
sh scripts/container.sh --build-arg "REFRESH=$(date +%s)" >"$logs/container.log" 2>&1 ||
    { tail -n 40 "$logs/container.log"; echo "release-check: FAIL: container image (log: $logs/container.log)" >&2; exit 1; }
tag=$(tail -n 1 "$logs/container.log")

say "PASS: snapsync $version"
for arch in amd64 arm64; do
    deb=dist/snapsync_${version}_$arch.deb
    [ -f "$deb" ] || { echo "release-check: FAIL: no $deb" >&2; exit 1; }
    echo "  $top/$deb"
done
echo "  container image: $tag (podman image save $tag | docker load)"
