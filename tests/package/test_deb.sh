#!/bin/sh
# SPDX-License-Identifier: MIT
# The amd64 .deb in a bare Debian 12: builds it (scripts/package.sh, or takes SNAPSYNC_DEB),
# makes a minbase bookworm root with mmdebstrap (cached as a tarball in the build folder), installs
# the package there with apt-get and checks: --version, the man page, .env mode 0600, a backup of
# a sample card with the packaged configuration, remove keeps configuration and database, purge
# removes them and keeps the backups. Needs root (chroot, mount) and the Debian mirror.
#
# Environment: SNAPSYNC_SOURCE_DIR (the checkout), SNAPSYNC_TEST_TMP (scratch, in the build
# folder), SNAPSYNC_PACKAGE_CACHE (where the root tarball is kept), SNAPSYNC_DEB (a prebuilt .deb).
set -eu

src=${SNAPSYNC_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
tmp=${SNAPSYNC_TEST_TMP:-$src/build/test-tmp}
cache=${SNAPSYNC_PACKAGE_CACHE:-$tmp/../package-cache}
arch=$(dpkg --print-architecture)
start=$(date +%s)

fail() { echo "test_deb: FAIL: $*" >&2; exit 1; }
note() { echo "test_deb: $* ($(($(date +%s) - start)) s)"; }

[ "$(id -u)" -eq 0 ] || fail "needs root (chroot and mounts)"
mkdir -p "$tmp"

# 1. the package
if [ -n "${SNAPSYNC_DEB:-}" ]; then
    deb=$SNAPSYNC_DEB
else
    # nocheck: the unit tests run in ctest already
    DEB_BUILD_OPTIONS=nocheck SNAPSYNC_PACKAGE_BUILD_DIR="$tmp/package-build" \
        sh "$src/scripts/package.sh" >"$tmp/package.log" 2>&1 ||
        { tail -n 40 "$tmp/package.log"; fail "scripts/package.sh failed (log: $tmp/package.log)"; }
    version=$(sed -n 's/^project(snapsync VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
    deb="$src/dist/snapsync_${version}_$arch.deb"
fi
[ -f "$deb" ] || fail "no package $deb"
# runtime libraries only (shlibs): nothing from a -dev package, nor a compiler
for field in Pre-Depends Depends Recommends; do
    if dpkg-deb -f "$deb" "$field" | tr ',|' '\n' | sed 's/^ *//; s/[( ].*//' |
        grep -E -e '-dev(:[a-z0-9]+)?$' -e '^(gcc|cpp|cmake|make)$'; then
        fail "$field names build packages: $(dpkg-deb -f "$deb" "$field")"
    fi
done
note "package $deb"

# 2. a bare Debian 12 root, from the cached tarball; the mirror and suites are this machine's
mkdir -p "$cache"
base="$cache/bookworm-minbase-$arch.tar"
if [ ! -s "$base" ]; then
    python3 - >"$cache/sources.list" <<'PY'
import glob, re
want = re.compile(r"^bookworm(-updates|-security)?$")
out = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        f = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith((" ", "#")):
                k, v = line.split(":", 1)
                f[k.strip().lower()] = v.split()
        if "deb" not in f.get("types", []):
            continue
        for uri in f.get("uris", []):
            for suite in f.get("suites", []):
                if want.match(suite):
                    out.append("deb %s %s %s" % (uri, suite, " ".join(f.get("components", ["main"]))))
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        w = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(w) >= 4 and w[0] == "deb" and want.match(w[2]):
            out.append(" ".join(w))
if not any(" bookworm " in l for l in out):
    out.append("deb http://deb.debian.org/debian bookworm main")
print("\n".join(dict.fromkeys(out)))
PY
    note "mmdebstrap bookworm from: $(tr '\n' ';' <"$cache/sources.list")"
    mmdebstrap --quiet --variant=minbase --include=man-db bookworm "$cache/new.tar" - \
        <"$cache/sources.list" || fail "mmdebstrap"
    mv "$cache/new.tar" "$base"
fi
root="$tmp/deb-root"
cleanup() {
    umount "$root/var/cache/apt/archives" 2>/dev/null || true
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$root"
}
cleanup
trap cleanup EXIT
mkdir -p "$root"
tar -xf "$base" -C "$root"
mount -t proc proc "$root/proc"
# the packages apt downloads are kept for the next run
mkdir -p "$cache/archives/partial"
mount --bind "$cache/archives" "$root/var/cache/apt/archives"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# no service starts in the chroot (and there is no systemd running there anyway)
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
cp "$deb" "$root/tmp/"
note "root ready"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

# 3. install
in_root apt-get update -qq >/dev/null || fail "apt-get update in the root"
DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -qq "/tmp/$(basename "$deb")" \
    >"$tmp/deb-install.log" 2>&1 || { cat "$tmp/deb-install.log"; fail "apt-get install ./deb"; }
note "installed"

# 4. checks
v=$(in_root snapsync --version) || fail "snapsync --version"
expected=$(dpkg-deb -f "$deb" Version)
[ "$v" = "snapsync $expected" ] || fail "--version says '$v', the package is $expected"
page=$(in_root sh -c 'MANWIDTH=80 man snapsync 2>&1 | col -b') || fail "man snapsync"
echo "$page" | grep -q "test-connection" || fail "man snapsync lacks the commands: $page"
echo "$page" | grep -q "EXIT STATUS" || fail "man snapsync lacks EXIT STATUS"
page=$(in_root sh -c 'MANWIDTH=80 man 5 snapsync.yaml 2>&1 | col -b') || fail "man 5 snapsync.yaml"
echo "$page" | grep -q "database_path" || fail "man 5 snapsync.yaml lacks the keys: $page"
mode=$(stat -c %a "$root/etc/snapsync/.env") || fail "no /etc/snapsync/.env"
[ "$mode" = 600 ] || fail "/etc/snapsync/.env is mode $mode"
grep -q IMMICH_API_KEY "$root/etc/snapsync/.env" || fail ".env is not the template"
[ -d "$root/var/lib/snapsync" ] || fail "no /var/lib/snapsync"
[ -e "$root/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/snapsync.service" ] ||
    fail "snapsync.service is not enabled"
[ -f "$root/usr/share/bash-completion/completions/snapsync" ] || fail "no bash completion"
note "version, man page, .env, unit: ok"

# a sample card, backed up with the packaged configuration: /var/lib/snapsync/backup and the db
mkdir -p "$root/tmp/card/DCIM/100CANON"
for i in 1 2 3; do
    head -c $((i * 70000)) /dev/urandom >"$root/tmp/card/DCIM/100CANON/IMG_000$i.JPG"
done
in_root snapsync --config /etc/snapsync/config.yaml backup /tmp/card >"$tmp/deb-backup.log" 2>&1 ||
    { cat "$tmp/deb-backup.log"; fail "backup in the root"; }
n=$(find "$root/var/lib/snapsync/backup" -type f -name 'IMG_000*.JPG' | wc -l)
[ "$n" = 3 ] || { cat "$tmp/deb-backup.log"; fail "$n of 3 files in /var/lib/snapsync/backup"; }
for i in 1 2 3; do
    f=$(find "$root/var/lib/snapsync/backup" -name "IMG_000$i.JPG")
    cmp "$f" "$root/tmp/card/DCIM/100CANON/IMG_000$i.JPG" || fail "IMG_000$i.JPG differs"
done
[ -f "$root/var/lib/snapsync/snapsync.db" ] || fail "no database /var/lib/snapsync/snapsync.db"
note "backup: ok"

# 5. remove keeps everything; purge deletes configuration and database, never the backups
echo "# mine" >>"$root/etc/snapsync/config.yaml"
DEBIAN_FRONTEND=noninteractive in_root apt-get remove -y -qq snapsync >/dev/null || fail "remove"
[ ! -e "$root/usr/bin/snapsync" ] || fail "remove left the binary"
grep -q "# mine" "$root/etc/snapsync/config.yaml" || fail "remove lost the edited config.yaml"
[ -f "$root/etc/snapsync/.env" ] || fail "remove deleted .env"
[ -f "$root/var/lib/snapsync/snapsync.db" ] || fail "remove deleted the database"
DEBIAN_FRONTEND=noninteractive in_root apt-get purge -y -qq snapsync >"$tmp/deb-purge.log" 2>&1 ||
    { cat "$tmp/deb-purge.log"; fail "purge"; }
[ ! -e "$root/etc/snapsync" ] || fail "purge left /etc/snapsync: $(ls -A "$root/etc/snapsync")"
[ -z "$(find "$root/var/lib/snapsync" -maxdepth 1 -name 'snapsync.db*')" ] || fail "purge left the database"
n=$(find "$root/var/lib/snapsync/backup" -type f -name 'IMG_000*.JPG' | wc -l)
[ "$n" = 3 ] || fail "purge deleted backups: $n of 3 left"
grep -q "kept /var/lib/snapsync" "$tmp/deb-purge.log" || fail "purge did not say it kept the backups"
note "remove and purge: ok"
echo "test_deb: PASS in $(($(date +%s) - start)) s"
