#!/bin/sh
# SPDX-License-Identifier: MIT
# Runs the README's test command where a new user would: a bare Debian 12 root (mmdebstrap
# minbase, only Debian's own apt sources), the checkout at /root/snapsync (where root's git clone
# puts it; /root is 0700), `scripts/deps.sh --test`, a build, then the tests named by a ctest
# regular expression (default: the browser and SMB tests, which once failed there: Debian 12's
# Node 18 against a playwright-core that needed Node 20, and an smbd share the share user could
# not reach under /root).
#   sh scripts/bare-debian.sh ROOT_DIR [CTEST_REGEX]
# ROOT_DIR is made once (kept, reused while it exists; delete it for a fresh root). Needs root,
# mmdebstrap and the Debian mirror. The committed tree (git archive HEAD) is what is tested.
# Behind a TLS-intercepting proxy, BARE_DEBIAN_CA=FILE names its CA certificate (PEM), trusted
# in the root by the system and by Node (npm fetches playwright-core over HTTPS).
set -eu

die() {
    echo "bare-debian: $*" >&2
    exit 1
}
[ "$#" -ge 1 ] || die "usage: sh scripts/bare-debian.sh ROOT_DIR [CTEST_REGEX]"
[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap, chroot, mounts)"
root=$(realpath -m "$1")
regex=${2:-browser|smb}
top=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -f "$root/.snapsync-bare" ]; then
    rm -rf "$root"
    mmdebstrap --variant=minbase --quiet bookworm "$root"
    # packages' services are not started in the root
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    touch "$root/.snapsync-bare"
fi

mounted=""
cleanup() {
    for m in $mounted; do umount "$root/$m" 2>/dev/null || umount -l "$root/$m" || true; done
}
trap cleanup EXIT INT TERM
for m in proc sys dev dev/pts; do
    mount --bind "/$m" "$root/$m"
    mounted="$m $mounted"
done
mount -t tmpfs tmpfs "$root/dev/shm" # Chromium's shared memory
mounted="dev/shm $mounted"
cp /etc/resolv.conf "$root/etc/resolv.conf"
extra_ca=""
if [ -n "${BARE_DEBIAN_CA:-}" ]; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp "$BARE_DEBIAN_CA" "$root/usr/local/share/ca-certificates/bare-debian-proxy.crt"
    extra_ca=/usr/local/share/ca-certificates/bare-debian-proxy.crt
fi

rm -rf "$root/root/snapsync"
mkdir -p "$root/root/snapsync"
chmod 0700 "$root/root"
git -C "$top" archive HEAD | tar -x -C "$root/root/snapsync"

# shellcheck disable=SC2016 # expanded inside the root
chroot "$root" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 REGEX="$regex" EXTRA_CA="$extra_ca" sh -ec '
    cd /root/snapsync
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates
    if [ -n "$EXTRA_CA" ]; then
        update-ca-certificates >/dev/null
        export NODE_EXTRA_CA_CERTS="$EXTRA_CA"
    fi
    sh scripts/deps.sh --test
    echo "node $(node --version), npm $(npm --version)"
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j2 >/dev/null
    cd build
    ctest --output-on-failure -R "$REGEX"
'
