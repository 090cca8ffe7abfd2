#!/bin/sh
# SPDX-License-Identifier: MIT
# Builds the SnapSync container image (Dockerfile at the repository root) with podman, without
# any image registry: the Debian base images the Dockerfile names are made here with mmdebstrap
# (cached) and imported into podman under those names.
#   sh scripts/container.sh [--tag NAME] [PODMAN BUILD OPTIONS]
#       default tag: localhost/snapsync:VERSION and :latest; e.g. --build-arg SMB=no
# Environment:
#   SNAPSYNC_IMAGE_CACHE   where the base root tarball is kept (default ~/.cache/snapsync)
#   SNAPSYNC_PODMAN_OPTS   global podman options (default: what works in a nested sandbox)
# Prints the tag of the built image on its last line.
set -eu
cd "$(dirname "$0")/.."

version=$(sed -n 's/^project(snapsync VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
tag="localhost/snapsync:$version"
tags="-t $tag -t localhost/snapsync:latest"
if [ "${1:-}" = "--tag" ] && [ -n "${2:-}" ]; then
    tag=$2
    tags="-t $tag"
    shift 2
fi
cache=${SNAPSYNC_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/snapsync}
# cgroupfs and a file for events: podman's systemd and journald defaults need a systemd session
# this sandbox (and most CI runners) lack
podman_opts=${SNAPSYNC_PODMAN_OPTS:---cgroup-manager=cgroupfs --events-backend=file}
# shellcheck disable=SC2086
pm() { podman $podman_opts "$@"; }

for t in podman mmdebstrap; do
    command -v "$t" >/dev/null 2>&1 || { echo "container.sh: $t is missing (scripts/deps.sh --test)" >&2; exit 1; }
done

# The base: Debian 12 minbase with the same documentation excluded as the official -slim images,
# security updates included, tagged as both names the Dockerfile uses (the build stage installs
# its compiler on top). Cached: a tarball and the imported images, both keyed by the options
# below; remove the tarball to take newer Debian packages.
# Merged /usr is made by mmdebstrap's hook, as the official images do: the usrmerge package would
# pull in perl (45 MB).
base_opts="--variant=minbase --format=tar --quiet
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt=path-exclude=/usr/share/man/* --dpkgopt=path-exclude=/usr/share/locale/*
    --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-include=/usr/share/doc/*/copyright
    --aptopt=APT::Install-Recommends=false"
key=$(printf '%s' "$base_opts" | md5sum | cut -c1-12)
bases="docker.io/library/debian:bookworm docker.io/library/debian:bookworm-slim"
need_base=""
for b in $bases; do
    [ "$(pm image inspect --format '{{index .Labels "snapsync.base"}}' "$b" 2>/dev/null)" = "$key" ] ||
        need_base=1
done
if [ -n "$need_base" ]; then
    mkdir -p "$cache"
    tarball="$cache/debian-bookworm-minbase-$key.tar"
    if [ ! -s "$tarball" ]; then
        echo "== mmdebstrap: Debian bookworm minbase -> $tarball"
        set -f  # the options hold * for dpkg, not for the shell
        # shellcheck disable=SC2086
        mmdebstrap $base_opts bookworm "$tarball.part" \
            "deb http://deb.debian.org/debian bookworm main" \
            "deb http://deb.debian.org/debian bookworm-updates main" \
            "deb http://deb.debian.org/debian-security bookworm-security main"
        set +f
        mv "$tarball.part" "$tarball"
    fi
    for b in $bases; do
        echo "== podman import $b"
        pm import --change 'CMD ["bash"]' --change "LABEL snapsync.base=$key" "$tarball" "$b" >/dev/null
    done
fi

echo "== podman build $tag"
# --format=docker: OCI images have no HEALTHCHECK. --pull=never: only the local base images;
# chroot isolation and the host's network: what a container-in-a-container (CI runner, this
# sandbox) allows
# shellcheck disable=SC2086
pm build --pull=never --isolation=chroot --network=host --format=docker \
    --build-arg "VERSION=$version" $tags "$@" .
echo "image size: $(pm image inspect --format '{{.Size}}' "$tag") bytes"
echo "$tag"
