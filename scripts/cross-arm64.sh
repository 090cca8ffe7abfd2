#!/bin/sh
# SPDX-License-Identifier: MIT
# SnapSync for arm64 (a Raspberry Pi 4/5 under Raspberry Pi OS 64-bit, Debian 12 based), built
# on an amd64 Debian 12 machine with Debian's cross compiler, and run under qemu-user-static.
# The host's dpkg is never given a foreign architecture: everything arm64 lives in roots made by
# mmdebstrap under the build folder, kept there and reused while their package list is the same.
#
#   sh scripts/cross-arm64.sh root         make (or reuse) the build root: amd64 bookworm with
#                                          crossbuild-essential-arm64 and the arm64 -dev packages
#   sh scripts/cross-arm64.sh build        cross-compile into build-arm64/cmake/ (snapsync, tests)
#   sh scripts/cross-arm64.sh unit         build, then the unit tests (ctest -L unit) under qemu
#   sh scripts/cross-arm64.sh runroot      make (or reuse) an arm64 minbase root with the runtime
#                                          libraries only (build-arm64/run/), for a real run
#   sh scripts/cross-arm64.sh run CMD...   runs CMD in the build root, the checkout at /src
#   sh scripts/cross-arm64.sh runin CMD... runs CMD in the arm64 runtime root (the same way)
#   sh scripts/cross-arm64.sh in NAME CMD... runs CMD in the root build-arm64/NAME (the same way;
#                                          e.g. a copy of the runtime root a .deb is installed in)
#   sh scripts/cross-arm64.sh clean        removes build-arm64/
#
# Environment: SNAPSYNC_ARM64_DIR (default build-arm64 in the checkout; must be inside it, as
# the checkout is what the build root sees at /src), SNAPSYNC_ARM64_MIRROR (a Debian mirror;
# default mmdebstrap's, with bookworm-updates and security).
# Needs root, mmdebstrap, qemu-user-static and binfmt_misc (scripts/deps.sh --test installs them;
# the qemu-aarch64 handler is registered here when it is missing).
# shellcheck disable=SC2016  # the single-quoted scripts run in the roots, $ and all
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
dir=${SNAPSYNC_ARM64_DIR:-$top/build-arm64}
case "$dir" in
/*) ;;
*) dir=$top/$dir ;;
esac
case "$dir/" in
"$top"/*) ;;
*) echo "cross-arm64: SNAPSYNC_ARM64_DIR must be inside the checkout ($top)" >&2; exit 2 ;;
esac
rel=${dir#"$top"/}        # the same folder as the build root sees it under /src
suite=bookworm
triplet=aarch64-linux-gnu

die() { echo "cross-arm64: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap, chroot)"

# qemu-aarch64 registered with binfmt_misc, flag F (the kernel opens the interpreter once, so it
# also works inside the chroots). binfmt-support registers it when qemu-user-static is installed,
# but only where binfmt_misc was mounted then; systemd-binfmt does not run without systemd.
binfmt_ensure() {
    command -v qemu-aarch64-static >/dev/null 2>&1 || die "qemu-aarch64-static missing (scripts/deps.sh --test)"
    bm=/proc/sys/fs/binfmt_misc
    [ -e $bm/register ] || mount -t binfmt_misc binfmt_misc $bm || die "cannot mount binfmt_misc"
    if [ ! -e $bm/qemu-aarch64 ]; then
        if command -v update-binfmts >/dev/null 2>&1; then
            update-binfmts --enable qemu-aarch64 2>/dev/null || true
        fi
    fi
    if [ ! -e $bm/qemu-aarch64 ]; then
        # the ELF header of an aarch64 executable (e_machine 0xb7), as Debian's qemu-user-static
        printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
            >$bm/register || die "cannot register qemu-aarch64 with binfmt_misc"
    fi
    grep -q '^enabled' $bm/qemu-aarch64 || die "binfmt_misc: qemu-aarch64 is disabled"
    grep -q '^flags:.*F' $bm/qemu-aarch64 || die "binfmt_misc: qemu-aarch64 lacks the F flag (needed in chroots)"
}

# Makes root $1 with mmdebstrap args $3..., unless $1/.snapsync-stamp already holds $2 (a text
# naming everything that went in). A half-made root is never reused: the stamp comes last.
root_ensure() {
    target=$1 stamp=$2
    shift 2
    if [ -f "$target/.snapsync-stamp" ] && [ "$(cat "$target/.snapsync-stamp")" = "$stamp" ]; then
        return 0
    fi
    binfmt_ensure
    rm -rf "$target"
    mkdir -p "$(dirname "$target")"
    echo "cross-arm64: making $target (minutes; kept for the next run)"
    # shellcheck disable=SC2086
    mmdebstrap --mode=root --quiet "$@" "$suite" "$target" ${SNAPSYNC_ARM64_MIRROR:-}
    printf '%s' "$stamp" >"$target/.snapsync-stamp"
}

build_pkgs() {
    # the arm64 -dev packages of the native build (scripts/deps.sh is the one list); Debian's
    # libcurl4-openssl-dev, libssl-dev and the rest are Multi-Arch: same, so they install next
    # to amd64 build tools; build-essential and pkg-config are replaced by their cross forms
    devs=$(sh scripts/deps.sh --list | sed -n 's/-dev$/-dev:arm64/p')
    # shellcheck disable=SC2086  # one word per package
    # python3: tests/CMakeLists.txt looks for it; ffmpeg and exiftool make test_media's samples
    # pkg-config:arm64 gives aarch64-linux-gnu-pkg-config, which dpkg-buildpackage --host-arch
    # arm64 (scripts/package.sh --arch arm64) uses and debian/control's pkg-config names
    echo crossbuild-essential-arm64 cmake pkgconf pkg-config:arm64 ninja-build python3 debhelper \
        libcmocka-dev:arm64 qemu-user-static file ffmpeg libimage-exiftool-perl $devs
}

cmd_root() {
    pkgs=$(build_pkgs | tr ' ' ',')
    root_ensure "$dir/root" "build $suite amd64,arm64 $pkgs" \
        --variant=buildd --architectures=amd64,arm64 --include="$pkgs"
}

# Runs "$@" in root $1 with the checkout bind-mounted at /src, /proc and /dev; the mounts live in
# a private mount namespace, so they go away with the command, whatever happens.
chroot_run() {
    unshare --mount --propagation private -- sh -eu -c '
        r=$1 top=$2
        shift 2
        mkdir -p "$r/src"
        mount --bind "$r" "$r"    # / a mount point, as tests that make their mounts private need
        mount --bind "$top" "$r/src"
        mount -t proc proc "$r/proc"
        mount --rbind /dev "$r/dev"
        exec chroot "$r" env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            LANG=C.UTF-8 SNAPSYNC_KEEP_TMP="${SNAPSYNC_KEEP_TMP:-}" sh -c "cd /src && \"\$@\"" sh "$@"
    ' sh "$@"
}

cmd_run() {
    cmd_root
    chroot_run "$dir/root" "$top" "$@"
}

cmd_build() {
    binfmt_ensure
    cmd_run sh -eu -c '
        b=$1
        cmake -S . -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
            -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake >/dev/null
        cmake --build "$b"
        file -L "$b/snapsync"
    ' sh "$rel/cmake"
}

cmd_unit() {
    cmd_build
    cmd_run sh -c 'cd "$1" && ctest --output-on-failure -L unit -j"$2" --timeout 600' sh \
        "$rel/cmake" "$(nproc)"
}

# The arm64 root a Raspberry Pi OS machine resembles: minbase, and the runtime libraries the
# arm64 binary needs: each NEEDED library's package in the build root, plus libsmbclient, which
# dest_smb.c loads at run time (dlopen of its soname, found on the arm64 multiarch path).
cmd_runroot() {
    [ -x "$dir/cmake/snapsync" ] || cmd_build
    libs=$(cmd_run sh -eu -c '
        for so in $('"$triplet"'-objdump -p "$1" | sed -n "s/^ *NEEDED *//p") libsmbclient.so.0; do
            dpkg -S "/usr/lib/'"$triplet"'/$so" 2>/dev/null || dpkg -S "/lib/'"$triplet"'/$so"
        done | sed "s/:arm64: .*//; s/: .*//" | sort -u | tr "\n" " "
    ' sh "$rel/cmake/snapsync")
    [ -n "$libs" ] || die "cannot find the runtime packages of $dir/cmake/snapsync"
    pkgs=$(echo "$libs" | xargs | tr ' ' ',')
    root_ensure "$dir/run" "run $suite arm64 $pkgs" \
        --variant=minbase --architectures=arm64 --include="$pkgs"
}

case "${1:-build}" in
root) cmd_root ;;
build) cmd_build ;;
unit) cmd_unit ;;
runroot) cmd_runroot ;;
run) shift; cmd_run "$@" ;;
runin) shift; cmd_runroot; binfmt_ensure; chroot_run "$dir/run" "$top" "$@" ;;
in)
    [ $# -ge 3 ] || die "usage: $0 in NAME CMD..."
    case $2 in */* | .* | root | run | cmake) die "in: NAME is a folder of $dir other than root, run, cmake" ;; esac
    [ -x "$dir/$2/bin/sh" ] || die "in: $dir/$2 is not a root"
    r=$dir/$2
    shift 2
    binfmt_ensure
    chroot_run "$r" "$top" "$@"
    ;;
clean) rm -rf "$dir" ;;
*) echo "usage: $0 root|build|unit|runroot|run CMD...|runin CMD...|in NAME CMD...|clean" >&2; exit 2 ;;
esac
