#!/bin/sh
# SPDX-License-Identifier: MIT
# The container's entrypoint: makes /config/config.yaml from the image's defaults and an empty,
# private /config/.env when they are missing, then runs snapsync with the container's
# arguments (default: start, the service, in the foreground).
set -eu
cfg=${SNAPSYNC_CONFIG:-/config/config.yaml}
dir=$(dirname "$cfg")
if [ ! -e "$cfg" ]; then
    mkdir -p "$dir"
    cp /usr/local/share/snapsync/config.yaml "$cfg"
    echo "snapsync-entrypoint: wrote the default configuration to $cfg" >&2
fi
if [ ! -e "$dir/.env" ] && [ -w "$dir" ]; then
    (umask 077 && printf '# SnapSync secrets, KEY=value (see .env.example in /usr/local/share/doc/snapsync)\n' >"$dir/.env")
fi
exec /usr/local/bin/snapsync "$@"
