# SPDX-License-Identifier: MIT
# SnapSync container image: the service (`snapsync start`) in the foreground.
#   sh scripts/container.sh          builds it with podman, without any registry
#   docker build -t snapsync .       where Docker Hub is reachable
# Volumes:  /config  config.yaml and .env (made from the defaults below when missing)
#           /data    the database (snapsync.db)
#           /backup  the default local destination (unraid.protocol local)
# Port:     8080     dashboard and JSON API (service.web_ui_port)
# Cards: see docs/container.md: a folder card works with no privileges
# (`docker run ... snapsync backup /card`); the service noticing and mounting cards needs the
# block devices, udev's database, the host's network namespace and CAP_SYS_ADMIN.

# ---- build: the compiler and the -dev packages of scripts/deps.sh
FROM docker.io/library/debian:bookworm AS build
COPY scripts/deps.sh /src/scripts/deps.sh
RUN sh /src/scripts/deps.sh && rm -rf /var/lib/apt/lists/*
# only what the build reads: documentation changes keep the compiled layer cached
COPY CMakeLists.txt config.yaml.example .env.example LICENSE /src/
COPY cmake /src/cmake
COPY src /src/src
COPY web /src/web
COPY packaging /src/packaging
COPY man /src/man
COPY completions /src/completions
RUN cmake -S /src -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSNAPSYNC_TESTS=OFF \
        -DCMAKE_INSTALL_PREFIX=/usr/local >/dev/null \
    && cmake --build /build -j"$(nproc)"
# the documentation the install puts in /usr/local/share/doc/snapsync
COPY README.md /src/
COPY docs /src/docs
RUN DESTDIR=/out cmake --install /build --strip >/dev/null \
    && install -D -m 0644 /src/packaging/container/config.yaml /out/usr/local/share/snapsync/config.yaml \
    && install -D -m 0755 /src/packaging/container/entrypoint.sh /out/usr/local/bin/snapsync-entrypoint
# The runtime packages, derived from what the binary links (its shared libraries' owners), plus
# libsmbclient, which it loads only for an SMB destination (src/dest_smb.c): 35 MB of the image
# (samba-libs); --build-arg SMB=no leaves it out where shares are mounted by the host
# (Unraid's /mnt/user, Home Assistant's network storage) and copied to as folders
ARG SMB=yes
RUN set -e; \
    for lib in $(ldd /out/usr/local/bin/snapsync | awk '$2 == "=>" && $3 ~ /^\// {print $3}'); do \
        dpkg-query -S "*/$(basename "$lib")" | cut -d: -f1; \
    done | sort -u >/out/usr/local/share/snapsync/runtime-packages; \
    if [ "$SMB" = yes ]; then echo libsmbclient >>/out/usr/local/share/snapsync/runtime-packages; fi; \
    if grep -- '-dev$' /out/usr/local/share/snapsync/runtime-packages; then \
        echo "a -dev package among the runtime packages" >&2; exit 1; fi; \
    cat /out/usr/local/share/snapsync/runtime-packages

# ---- runtime: libraries only
FROM docker.io/library/debian:bookworm-slim
ARG VERSION=0.1.0
# where the source lives; set it to your fork when you publish an image
ARG SOURCE=https://github.com/snapsync/snapsync
LABEL org.opencontainers.image.title="SnapSync" \
      org.opencontainers.image.description="Backs up SD cards to a NAS, Immich and local folders as they are inserted" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"
# The package list first, the program after it: a source change that links the same libraries
# leaves this list, and so the installing layer, as it was (cached: no mirror, no apt-get)
COPY --from=build /out/usr/local/share/snapsync/runtime-packages /usr/local/share/snapsync/
# a new value (scripts/release-check.sh: the date) installs them anew from the mirror, security
# updates included; left alone, the layer keeps the versions of its first build
ARG REFRESH=
# curl: the HEALTHCHECK; ca-certificates: https (Immich) and MQTT over TLS; tzdata: TZ
RUN apt-get update -qq \
    && xargs -a /usr/local/share/snapsync/runtime-packages \
        apt-get install -y -qq --no-install-recommends ca-certificates curl tzdata >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && mkdir -p /config /data /backup /media /run/snapsync
COPY --from=build /out/ /
RUN ! ldd /usr/local/bin/snapsync | grep 'not found'
ENV SNAPSYNC_CONFIG=/config/config.yaml
VOLUME ["/config", "/data", "/backup"]
EXPOSE 8080/tcp
HEALTHCHECK --interval=60s --timeout=10s --start-period=30s --retries=3 \
    CMD curl -fsS --max-time 8 -o /dev/null http://127.0.0.1:8080/api/health || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/snapsync-entrypoint"]
CMD ["start"]
