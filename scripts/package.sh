#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the Debian packages (.deb) from debian/ into dist/ and checks them with lintian.
#
#   sh scripts/package.sh                 this machine's architecture (amd64 on a PC)
#   sh scripts/package.sh --arch arm64    Raspberry Pi OS 64-bit: cross-built (--host-arch arm64,
#                                         profiles cross,nocheck) in scripts/cross-arm64.sh's cached
#                                         build root (root; minutes the first time)
#
# Native: installs the build tools and the package's Build-Depends first (as root through
# apt-get, otherwise through sudo, like scripts/deps.sh). The build runs on a copy of the source in
# build-deb/ so the checkout stays clean. Environment: DEB_BUILD_OPTIONS (default: empty, so the
# unit tests run; nocheck skips them), SNAPSYNC_PACKAGE_BUILD_DIR (default ./build-deb, ./build-deb-ARCH when cross).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

host_arch=$(dpkg --print-architecture)
arch=$host_arch
while [ $# -gt 0 ]; do
    case $1 in
    --arch)
        [ $# -ge 2 ] || { echo "usage: sh scripts/package.sh [--arch ARCH]" >&2; exit 2; }
        arch=$2
        shift 2
        ;;
    *)
        echo "usage: sh scripts/package.sh [--arch ARCH]" >&2
        exit 2
        ;;
    esac
done

say() { echo "package.sh: $*"; }

# the package carries the version of CMakeLists.txt's project(): debian/changelog must agree
version=$(sed -n 's/^project(snapsync VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
deb_version=$(dpkg-parsechangelog -S Version 2>/dev/null || head -n 1 debian/changelog | sed 's/.*(\(.*\)).*/\1/')
if [ "$version" != "$deb_version" ]; then
    echo "package.sh: CMakeLists.txt says $version, debian/changelog $deb_version: add a changelog entry" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
apt_install() {
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}

if [ "$arch" = "$host_arch" ]; then build_default=$top/build-deb; else build_default=$top/build-deb-$arch; fi
build=${SNAPSYNC_PACKAGE_BUILD_DIR:-$build_default}
src="$build/snapsync-$version"
rm -rf "$build"
mkdir -p "$build"
# the source as git has it (tracked and new files, nothing ignored), else everything but builds
if [ -d .git ] || [ -f .git ]; then
    mkdir -p "$src"
    # --ignore-failed-read: a tracked file deleted in the checkout is left out
    git ls-files -z --cached --others --exclude-standard |
        tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$src"
else
    mkdir -p "$src"
    tar --exclude='./build*' --exclude=./dist -cf - . | tar -xf - -C "$src"
fi

if [ "$arch" = "$host_arch" ]; then
    say "installing build tools and Build-Depends"
    $sudo apt-get update -qq
    apt_install dpkg-dev debhelper lintian
    DEBIAN_FRONTEND=noninteractive $sudo apt-get build-dep -y -qq "$src"
    say "building snapsync $version for $arch"
    (cd "$src" && dpkg-buildpackage -us -uc -b)
else
    # cross: inside the cached amd64+arm64 build root of scripts/cross-arm64.sh (it holds
    # crossbuild-essential-arm64, debhelper and the arm64 -dev packages), so this machine's dpkg
    # is never given a foreign architecture. shlibs resolve against the root's arm64 libraries.
    [ "$arch" = arm64 ] || { echo "package.sh: cross builds: arm64 only (scripts/cross-arm64.sh)" >&2; exit 2; }
    case "$src/" in
    "$top"/*) ;;
    *) echo "package.sh: SNAPSYNC_PACKAGE_BUILD_DIR must be inside the checkout for --arch $arch" >&2; exit 2 ;;
    esac
    command -v lintian >/dev/null 2>&1 || { $sudo apt-get update -qq; apt_install lintian; }
    say "building snapsync $version for $arch in the cross build root (scripts/cross-arm64.sh)"
    # shellcheck disable=SC2016  # runs in the root
    sh scripts/cross-arm64.sh run sh -eu -c 'cd "$1" && dpkg-buildpackage --host-arch arm64 -Pcross,nocheck -b -us -uc' \
        sh "/src/${src#"$top"/}"
fi

mkdir -p dist
rm -f dist/snapsync_*_"$arch".deb dist/snapsync-dbgsym_*_"$arch".deb dist/snapsync_*_"$arch".changes
mv "$build"/*.deb "$build"/*.changes "$build"/*.buildinfo dist/
mv "$build"/*.ddeb dist/ 2>/dev/null || true
changes="dist/snapsync_${version}_$arch.changes"

say "lintian"
# errors fail the build; warnings are shown (fix them, or override in debian/snapsync.lintian-overrides)
lintian --fail-on error --info "$changes"
say "built:"
ls -l dist/*_"$arch".deb
