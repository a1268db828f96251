#!/usr/bin/env bash
# deploy/image/build.sh — build the amo-storage container image without a
# Docker engine, and write it as an OCI archive.
#
#   bash deploy/image/build.sh [BINARY]
#
# 1. mmdebstrap makes a Debian bookworm root filesystem (variant minbase,
#    with ca-certificates, bookworm-updates and bookworm-security, no
#    documentation), adds the user amo (10001:10001) and its working
#    directory /var/lib/amo-storage, and removes the shells: nothing in the
#    image runs one (the entrypoint is exec form; the Kubernetes preStop hook
#    runs /bin/sleep, which stays).
# 2. `podman import` makes it a base image; `podman build` adds the binary
#    on top (deploy/image/Containerfile: no RUN, so no runtime is needed).
# 3. `podman save --format oci-archive` writes the archive a registry push
#    can take (`skopeo copy oci-archive:FILE docker://REGISTRY/amo-storage:TAG`).
#
# Prints the image's id, digest and size. Writes to $AMO_IMAGE_OUT (default
# target/image): amo-storage.oci.tar, and image.env (AMO_IMAGE_REF,
# AMO_IMAGE_ID, AMO_IMAGE_DIGEST) for tests/image/run.sh.
#
#   BINARY / AMO_IMAGE_BIN  the service binary to put in (default
#                  target/release/amo-storage, built with `cargo build
#                  --release` when missing; CI passes its dev build)
#   AMO_IMAGE_NAME  the image name (default localhost/amo-storage)
#   AMO_IMAGE_TAG   its tag (default: the version in Cargo.toml)
#   AMO_DEBIAN_MIRROR  the Debian mirror (default http://deb.debian.org)
#
# The runtime layout is the Dockerfile's (same user, paths, entrypoint and
# port); deploy/image/check.py keeps them in step. Runs as root (or with
# sudo for the packages): podman, runc, mmdebstrap and uidmap are installed
# from Debian when missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=podman.sh
. "$here/podman.sh"

# The runtime layout, as in the Dockerfile (check.py compares them).
uid=10001
user=amo
home=/var/lib/amo-storage
# /bin is /usr/bin in bookworm (merged /usr); the path holds either way.
shells=(/bin/sh /bin/dash /bin/bash /bin/rbash)

bin=${1:-${AMO_IMAGE_BIN:-$repo/target/release/amo-storage}}
name=${AMO_IMAGE_NAME:-localhost/amo-storage}
tag=${AMO_IMAGE_TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n 1)}
out=${AMO_IMAGE_OUT:-$repo/target/image}
mirror=${AMO_DEBIAN_MIRROR:-http://deb.debian.org}
ref=$name:$tag

log() { echo "image: $*"; }

if [[ ! -x $bin ]]; then
    if [[ $bin == "$repo/target/release/amo-storage" ]]; then
        log "building the release binary"
        (cd "$repo" && cargo build --release --locked --bin amo-storage)
    else
        echo "image: no executable binary at $bin" >&2
        exit 1
    fi
fi

ensure_image_tools
mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# The hook runs on the host, after the packages are installed; $1 is the root.
hook="echo '$user:x:$uid:' >>\"\$1/etc/group\""
hook+=" && echo '$user:x:$uid:$uid:amo-storage:$home:/usr/sbin/nologin' >>\"\$1/etc/passwd\""
hook+=" && install -d -o $uid -g $uid -m 0750 \"\$1$home\""
hook+=" && rm -f$(printf ' "$1%s"' "${shells[@]}")"
log "Debian bookworm root filesystem (mmdebstrap)"
mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="$hook" \
    bookworm "$work/rootfs.tar" \
    "deb $mirror/debian bookworm main" \
    "deb $mirror/debian bookworm-updates main" \
    "deb $mirror/debian-security bookworm-security main"
base_seconds=$((SECONDS - started))

base=localhost/amo-storage-base:$tag
pm import --quiet "$work/rootfs.tar" "$base" >/dev/null
install -m 0755 "$bin" "$work/amo-storage"
cp "$here/Containerfile" "$work/Containerfile"
log "podman build $ref"
previous=$(pm image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)
pm build --quiet --file "$work/Containerfile" --build-arg "BASE=$base" --tag "$ref" "$work" >/dev/null
pm rmi --force "$base" >/dev/null 2>&1 || true
# The image this tag named before, now untagged, is not kept.
id=$(pm image inspect --format '{{.Id}}' "$ref")
if [[ -n $previous && $previous != "$id" ]]; then
    pm rmi "$previous" >/dev/null 2>&1 || true
fi

archive=$out/amo-storage.oci.tar
rm -f "$archive"
pm save --quiet --format oci-archive --output "$archive" "$ref"

digest=$(pm image inspect --format '{{.Digest}}' "$ref")
size=$(pm image inspect --format '{{.Size}}' "$ref")
archive_size=$(stat -c %s "$archive")
cat >"$out/image.env" <<ENV
AMO_IMAGE_REF=$ref
AMO_IMAGE_ID=sha256:$id
AMO_IMAGE_DIGEST=$digest
ENV
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
log "$ref id sha256:$id"
log "digest $digest"
log "size $(mib "$size") unpacked, OCI archive $(mib "$archive_size") at $archive"
log "built in $((SECONDS - started)) s (root filesystem $base_seconds s)"
