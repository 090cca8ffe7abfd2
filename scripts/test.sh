#!/bin/sh
# SPDX-License-Identifier: MIT
# The whole test suite, from a bare Debian 12 machine: installs what it needs, then builds and
# runs every test in a normal build (with the Debian package, the container image, the add-on and
# the Unraid template), under valgrind (unit tests and a small backup), under AddressSanitizer +
# UndefinedBehaviorSanitizer, the threaded parts under ThreadSanitizer, and fuzzes each parser
# briefly with libFuzzer. The arm64 build under qemu is a release check (docs/testing.md).
# Integration tests that mount filesystems need root (CI runs as root).
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
jobs=$(nproc)

sh scripts/deps.sh --test

echo "== normal build"
cmake -S . -B build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-test -j"$jobs"
# not the arm64 build under qemu (label arm64): a cold run takes longer than CI allows; it runs
# before each release (docs/testing.md, "arm64")
(cd build-test && ctest --output-on-failure -j"$jobs" --timeout 600 -LE arm64)

echo "== Release build (the optimiser finds warnings -O2 does not: -Werror fails a user's build)"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DSNAPSYNC_TESTS=OFF >/dev/null
cmake --build build-release -j"$jobs" >/dev/null

echo "== valgrind (unit tests)"
# side by side, one per core: test_db alone takes over a minute under valgrind
ls build-test/tests/test_* | grep -v '[.]' | xargs -P "$jobs" -I{} sh -c '
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
        "$1" >/dev/null 2>"$1.valgrind.log" || { cat "$1.valgrind.log"; echo "valgrind: $1 failed"; exit 255; }
    echo "valgrind clean: ${1##*/}"' sh {}

echo "== valgrind (snapsync backup, status, sessions, report, verify on a small card)"
vg=$(mktemp -d)
mkdir -p "$vg/card/DCIM"
for i in 1 2 3; do head -c $((300000 + i)) /dev/urandom >"$vg/card/DCIM/IMG_000$i.JPG"; done
printf 'service:\n  database_path: %s/db.sqlite\nunraid:\n  enabled: true\n  protocol: local\n  mount_point: %s/dest\n' \
    "$vg" "$vg" >"$vg/config.yaml"
for args in "backup $vg/card" "backup $vg/card" "status" "sessions --json" "report last --format html" "verify" "config"; do
    # shellcheck disable=SC2086
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
        build-test/snapsync --config "$vg/config.yaml" $args >/dev/null 2>"$vg/valgrind.log" ||
        { cat "$vg/valgrind.log"; echo "valgrind: snapsync $args failed"; exit 1; }
    echo "valgrind clean: snapsync $args" | sed "s|$vg|CARD|"
done
rm -rf "$vg"

# the Debian package is built from the source, not from this build: tested once, above; the
# browser test drives the same web server that integration.test_web checks under the sanitizers
echo "== AddressSanitizer + UndefinedBehaviorSanitizer build"
cmake -S . -B build-asan -DSNAPSYNC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
# SNAPSYNC_TEST_SKIP_SLOW: the tests that wait a minute for a clock run in the normal pass only
(cd build-asan && SNAPSYNC_TEST_SKIP_SLOW=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --output-on-failure -j"$jobs" --timeout 900 -LE "package|browser")

echo "== ThreadSanitizer build (engine, service, web, MQTT, database)"
# The SMB lanes have their race check under DRD (integration.test_smb): libsmbclient is not
# instrumented for ThreadSanitizer.
cmake -S . -B build-tsan -DSNAPSYNC_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-tsan -j"$jobs" --target snapsync test_db test_health test_status test_log
(cd build-tsan && SNAPSYNC_TEST_SKIP_SLOW=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --output-on-failure -j"$jobs" --timeout 900 \
    -R '^(unit[.]test_(db|health|status|log)|integration[.]test_(backup|service|web|mqtt|status))$')

echo "== libFuzzer (clang)"
CC=clang cmake -S . -B build-fuzz -DSNAPSYNC_FUZZ=ON -DSNAPSYNC_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-fuzz -j"$jobs"
# each target fuzzes on one core for 30 s: run them side by side
(cd build-fuzz && ctest --output-on-failure -j"$jobs" -L fuzz --timeout 600)

echo "all test suites passed ($top)"
