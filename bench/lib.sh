# SPDX-License-Identifier: MIT
# Shared by the bench scripts, sourced after they set $root (the project's folder).

# bench_install "pkg ...": installs the Debian packages named, if any (apt-get as root, else
# through sudo).
bench_install() {
    [ -n "$1" ] || return 0
    echo "bench: installing $1" >&2
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $1 >/dev/null
}

# bench_bin: sets $bin to $SNAPSYNC_BIN, or else to build-bench/snapsync, built (Release) when
# missing.
bench_bin() {
    bin=${SNAPSYNC_BIN:-$root/build-bench/snapsync}
    if [ ! -x "$bin" ]; then
        bin=$root/build-bench/snapsync
        echo "bench: building $bin" >&2
        cmake -S "$root" -B "$root/build-bench" -DSNAPSYNC_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
        cmake --build "$root/build-bench" -j"$(nproc)" >/dev/null
    fi
}
