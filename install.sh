#!/bin/sh
# SPDX-License-Identifier: MIT
# Installs SnapSync as a service on Debian 12 / Raspberry Pi OS. Run it again at any time: it
# changes only what is missing or out of date, and never overwrites a configuration.
#
#   sh install.sh               dependencies, build, /usr/local/bin/snapsync,
#                               /etc/snapsync/config.yaml and .env (mode 0600) if missing,
#                               the systemd unit, enabled and started when systemd runs
#   sh install.sh --uninstall   removes the binary and the unit; keeps /etc/snapsync (your
#                               configuration and secrets), the database and the backups
#
# Environment: PREFIX (default /usr/local), SNAPSYNC_ROOT (default "": install into another root
# folder, for packaging and tests; skips dependencies and systemctl), SNAPSYNC_SKIP_DEPS=1,
# SNAPSYNC_BUILD_DIR (default ./build-install).
set -eu
cd "$(dirname "$0")"
top=$(pwd)

prefix=${PREFIX:-/usr/local}
root=${SNAPSYNC_ROOT:-}
etc="$root/etc/snapsync"
unit="$root/etc/systemd/system/snapsync.service"
bin="$root$prefix/bin/snapsync"
docs="$root$prefix/share/doc/snapsync"
state=/var/lib/snapsync
build=${SNAPSYNC_BUILD_DIR:-$top/build-install}

say() { echo "install.sh: $*"; }

systemd_running() {
    [ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

if [ "$(id -u)" -ne 0 ] && [ -z "$root" ]; then
    echo "install.sh: run as root (sudo sh install.sh)" >&2
    exit 2
fi

if [ "${1:-}" = "--uninstall" ]; then
    if systemd_running; then
        systemctl disable --now snapsync.service 2>/dev/null || true
    fi
    rm -f "$unit"
    if systemd_running; then
        systemctl daemon-reload
    fi
    rm -f "$bin" "$root$prefix/share/man/man1/snapsync.1" "$root$prefix/share/man/man5/snapsync.yaml.5" \
        "$root$prefix/share/bash-completion/completions/snapsync"
    rm -rf "$docs" "$root$prefix/share/snapsync"
    say "removed $prefix/bin/snapsync and the systemd unit"
    say "kept $etc (configuration, .env), $state (database) and every backup;"
    say "delete them yourself if you no longer want them"
    exit 0
elif [ $# -gt 0 ]; then
    echo "usage: sh install.sh [--uninstall]" >&2
    exit 2
fi

# Build and run-time packages. FUSE mounters for FAT and exFAT cards (exfat-fuse, fusefat) come
# only where the running kernel lacks the vfat or exfat driver: Debian's and Raspberry Pi OS's
# kernels have both, so a Pi gets neither.
if [ -z "$root" ] && [ "${SNAPSYNC_SKIP_DEPS:-}" != 1 ]; then
    sh scripts/deps.sh
fi

say "building"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSNAPSYNC_TESTS=OFF \
    -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
DESTDIR="$root" cmake --install "$build" >/dev/null
say "installed $prefix/bin/snapsync"

install -d -m 0750 "$etc"
if [ -e "$etc/config.yaml" ]; then
    say "kept the existing $etc/config.yaml"
else
    # the template, with the database and the backups where the unit lets the service write
    "$bin" config --template | sed -f packaging/service-config.sed >"$etc/config.yaml.new"
    chmod 0640 "$etc/config.yaml.new"
    mv "$etc/config.yaml.new" "$etc/config.yaml"
    say "created $etc/config.yaml: edit it to choose your destinations"
fi
if [ -e "$etc/.env" ]; then
    say "kept the existing $etc/.env"
else
    (umask 077 && cp .env.example "$etc/.env.new")
    chmod 0600 "$etc/.env.new"
    mv "$etc/.env.new" "$etc/.env"
    say "created $etc/.env (mode 0600) for secrets"
fi
install -d -m 0750 "$root$state"

install -d "$(dirname "$unit")"
sed "s#/usr/local/bin/snapsync#$prefix/bin/snapsync#" packaging/snapsync.service >"$unit.new"
chmod 0644 "$unit.new"
mv "$unit.new" "$unit"
if systemd_running; then
    systemctl daemon-reload
    systemctl enable snapsync.service
    systemctl restart snapsync.service
    say "snapsync.service enabled and running: journalctl -u snapsync -f"
else
    say "systemd is not running here (a container?): the unit is installed but not enabled."
    say "On a systemd host: systemctl enable --now snapsync. Here, run it in the foreground:"
    say "  $prefix/bin/snapsync --config /etc/snapsync/config.yaml start"
fi
