# syntax=docker/dockerfile:1
# amo-storage image: `docker build -t amo-storage:0.1.0 .` (BuildKit, the
# default builder since Docker 23, for the cache mounts).
#
# Without Docker: `bash deploy/image/build.sh` builds the same runtime layout
# (user, paths, entrypoint, port, no shell) with mmdebstrap and podman, and
# CI runs that image (tests/image/run.sh). deploy/image/check.py keeps this
# file and deploy/image/Containerfile in step.
#
# Runtime base: debian:bookworm-slim rather than distroless, because
#  - the binary links glibc (libc, libm, libgcc_s) and is built on bookworm,
#    so the same glibc is guaranteed;
#  - the Kubernetes preStop hook runs /bin/sleep 10 (coreutils) before SIGTERM;
#  - ca-certificates comes from Debian (the blockchain client loads the system
#    CA store when AMO_CHAIN_RPC is set and refuses to start without it).

FROM rust:1-bookworm AS builder
WORKDIR /src
# Cargo.toml names benches/streaming.rs; tests/ holds vectors some unit tests
# include. Everything else (target/, .git, deploy/) is left out by
# .dockerignore or not copied.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin amo-storage \
 && install -D -m 0755 target/release/amo-storage /out/amo-storage

FROM debian:bookworm-slim AS runtime
# ca-certificates is not version-pinned: the Debian security updates of the
# stable release are wanted on every rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 amo \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/amo-storage --shell /usr/sbin/nologin amo \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/amo-storage \
 && rm -f /bin/sh /bin/dash /bin/bash /bin/rbash
# No shell from here on: nothing in the image runs one (exec-form
# entrypoint; the preStop hook execs /bin/sleep).
COPY --from=builder /out/amo-storage /usr/local/bin/amo-storage
# A relative AMO_KEY_FILE (default key.json) and AMO_DATA_DIR resolve here;
# in Kubernetes the key is mounted at /etc/amo/key.json instead.
WORKDIR /var/lib/amo-storage
USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: the image has no HTTP client; orchestrators probe
# GET /healthz (liveness) and GET /readyz (readiness) on port 8080.
ENTRYPOINT ["/usr/local/bin/amo-storage"]
CMD ["0.0.0.0:8080"]
