#!/bin/sh
# SPDX-License-Identifier: MIT
# Fresh machine to first backup: installs dependencies, builds, and backs up CARD (default: a
# small demo card it creates) with the built-in default configuration: copies go to
# ./snapsync-backup/YYYY/MM/DD, the database is ./snapsync.db. No Immich, SMB or MQTT needed.
#   scripts/quickstart.sh [CARD]
set -eu
cd "$(dirname "$0")/.."

sh scripts/deps.sh
cmake -S . -B build -DSNAPSYNC_TESTS=OFF >/dev/null
cmake --build build -j"$(nproc)"

card=${1:-}
if [ -z "$card" ]; then
    card=demo-card
    if [ ! -d "$card" ]; then
        echo "no CARD given: creating a demo card in ./$card"
        mkdir -p "$card/DCIM/100DEMO"
        i=1
        while [ $i -le 5 ]; do
            head -c $((200000 + i * 1000)) /dev/urandom >"$card/DCIM/100DEMO/IMG_000$i.JPG"
            i=$((i + 1))
        done
    fi
fi
./build/snapsync backup "$card"
./build/snapsync status
