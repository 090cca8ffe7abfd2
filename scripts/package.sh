#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the Debian packages (.deb) from debian/ into dist/ and checks them with lintian.
#
#   sh scripts/package.sh [--arch ARCH]   ARCH: a Debian architecture (default: this machine's);
#                                         another one cross-builds (-a ARCH, profiles cross,nocheck)
#
# Installs the build tools and the package's Build-Depends first (as root through apt-get,
# otherwise through sudo, like scripts/deps.sh). The build runs on a copy of the source in
# build-deb/ so the checkout stays clean. Environment: DEB_BUILD_OPTIONS (default: empty, so the
# unit tests run; nocheck skips them), SNAPSYNC_PACKAGE_BUILD_DIR (default ./build-deb).
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

build=${SNAPSYNC_PACKAGE_BUILD_DIR:-$top/build-deb}
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

say "installing build tools and Build-Depends"
tools="dpkg-dev debhelper lintian"
cross=""
if [ "$arch" != "$host_arch" ]; then
    tools="$tools crossbuild-essential-$arch"
    cross="-a$arch -Pcross,nocheck"
    dpkg --print-foreign-architectures | grep -qx "$arch" || $sudo dpkg --add-architecture "$arch"
fi
$sudo apt-get update -qq
# shellcheck disable=SC2086
apt_install $tools
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $sudo apt-get build-dep -y -qq $cross "$src"

say "building snapsync $version for $arch"
# shellcheck disable=SC2086
(cd "$src" && dpkg-buildpackage -us -uc -b $cross)

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
