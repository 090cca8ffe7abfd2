#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs what SnapSync needs from Debian (12 "bookworm" or Raspberry Pi OS).
#   scripts/deps.sh          build and run dependencies
#   scripts/deps.sh --test   also what the test suite and benchmarks use
#   scripts/deps.sh --list   prints the build and run dependencies (one a line), installs nothing
#                            (scripts/cross-arm64.sh takes the arm64 -dev packages from it)
# As root it calls apt-get directly, otherwise through sudo.
set -eu

pkgs="build-essential cmake pkg-config libyaml-dev libsqlite3-dev libssl-dev libjson-c-dev
      libmount-dev libblkid-dev libsmbclient-dev libcurl4-openssl-dev libudev-dev libsystemd-dev libmosquitto-dev
      libmicrohttpd-dev libxml2-dev libxxhash-dev"
if [ "${1:-}" = "--list" ]; then
    # shellcheck disable=SC2086
    printf '%s\n' $pkgs
    exit 0
fi
# Cards are FAT32 or exFAT. Debian's and Raspberry Pi OS's kernels have both drivers; where the
# running kernel lacks one, SnapSync mounts such cards through a FUSE program (docs/design.md,
# "Filesystems"), installed here.
kernel_has() {
    grep -q "[[:space:]]$1\$" /proc/filesystems 2>/dev/null ||
        [ -n "$(find "/lib/modules/$(uname -r)" -name "$1.ko*" 2>/dev/null | head -n 1)" ]
}
fuse_pkgs=""
kernel_has exfat || fuse_pkgs="$fuse_pkgs exfat-fuse"
kernel_has vfat || fuse_pkgs="$fuse_pkgs fusefat"
[ -z "$fuse_pkgs" ] || pkgs="$pkgs fuse3$fuse_pkgs"
if [ "${1:-}" = "--test" ]; then
    pkgs="$pkgs libcmocka-dev python3 libimage-exiftool-perl ffmpeg clang clang-format valgrind
          util-linux e2fsprogs squashfs-tools sqlite3 samba smbclient samba-vfs-modules rclone
          iproute2 mosquitto mosquitto-clients
          fdisk systemd nghttp2-proxy"
    # HEIC and AVIF samples with EXIF for the metadata parser's comparison with exiftool
    # (tests/integration/test_media_exiftool.py): heif-enc
    pkgs="$pkgs libheif-examples"
    # the SMTP server the notification tests send to (tests/integration/smtpserver.py)
    pkgs="$pkgs python3-aiosmtpd"
    # exFAT and FAT32 card images (tests/integration/test_fuse_cards.py): made with exfatprogs
    # and dosfstools, filled through exfat-fuse and with mtools, mounted through FUSE where the
    # kernel lacks the driver
    pkgs="$pkgs exfatprogs dosfstools mtools fuse3 exfat-fuse fusefat ntfs-3g"
    # the Debian package (scripts/package.sh, tests/package/test_deb.sh): debhelper, lintian,
    # a bare Debian 12 root from mmdebstrap, the man page checked with groff and man-db
    pkgs="$pkgs dpkg-dev debhelper lintian mmdebstrap groff man-db bash-completion"
    # the dashboard's browser tests: Debian's Chromium driven by playwright-core from npm; the S3
    # destination's tests (tests/integration/test_s3.py): the S3 server s3rver from npm (pinned in
    # tests/s3, installed by the test with `npm ci`), objects cross-checked with rclone
    pkgs="$pkgs chromium nodejs rclone"
    # the rclone destination's sftp remote (tests/integration/test_rclone.py): a private sshd on
    # loopback
    pkgs="$pkgs openssh-server"
    # faketime: an S3 server whose clock is an hour ahead (tests/integration/test_s3.py)
    pkgs="$pkgs faketime"
    # xxhsum: the XXH3-128 of a file, as verification compares copies by it (tests/integration)
    pkgs="$pkgs xxhash"
    command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm"
    # the container image (scripts/container.sh: Debian base images made with mmdebstrap, built
    # with podman), the Home Assistant add-on's run script (jq) and its YAML (python3-yaml), the
    # Unraid template (xmllint)
    pkgs="$pkgs podman mmdebstrap uidmap jq python3-yaml libxml2-utils curl"
    # the arm64 (Raspberry Pi OS) cross build and its tests under qemu: scripts/cross-arm64.sh
    pkgs="$pkgs qemu-user-static binfmt-support arch-test"
fi

if [ "$(id -u)" -eq 0 ]; then
    sudo=""
else
    sudo="sudo"
fi

missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing
fi
