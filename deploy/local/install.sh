#!/usr/bin/env bash
# deploy/local/install.sh — install what the local dev stack needs (Debian 12).
#
# Installs Redis, a single-node Ceph (mon, OSD, RADOS Gateway, CLI tools),
# curl, uuidgen and the CA certificates with apt. Does nothing, and never
# touches apt, when every binary the other deploy/local scripts use is already
# on PATH and the CA store is there (the service's blockchain client and the
# tests' HTTP client, reqwest with rustls, load it when they start).
#
# No service is started by the install: when this script has to write
# /usr/sbin/policy-rc.d to keep the redis-server package from starting a
# system Redis on port 6379, it removes it again afterwards.
set -euo pipefail

# binary -> Debian package that provides it
declare -A PKG_OF=(
  [redis-server]=redis-server
  [redis-cli]=redis-tools
  [ceph-mon]=ceph-mon
  [monmaptool]=ceph-base
  [ceph-osd]=ceph-osd
  [radosgw]=radosgw
  [ceph]=ceph-common
  [radosgw-admin]=ceph-common
  [curl]=curl
  [uuidgen]=uuid-runtime
  [timeout]=coreutils
)

missing=()
for bin in "${!PKG_OF[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
ca_store=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_store" ] || missing+=("$ca_store")

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install.sh: all binaries present, nothing to install"
  exit 0
fi
echo "install.sh: missing: ${missing[*]}"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install.sh: need root (or sudo) to install packages" >&2
    exit 1
  fi
fi

# The full set, always: apt skips what is already installed.
packages=(redis-server redis-tools ceph-mon ceph-osd radosgw ceph-common curl uuid-runtime ca-certificates)

policy=/usr/sbin/policy-rc.d
created_policy=0
cleanup() {
  if [ "$created_policy" -eq 1 ]; then
    "${SUDO[@]}" rm -f "$policy"
  fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
  # exit 101 = "action forbidden": package scripts must not start services.
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  created_policy=1
fi

apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q)
"${apt[@]}" update
"${apt[@]}" install -y --no-install-recommends "${packages[@]}"

still_missing=()
for bin in "${!PKG_OF[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || still_missing+=("$bin")
done
[ -s "$ca_store" ] || still_missing+=("$ca_store")
if [ "${#still_missing[@]}" -ne 0 ]; then
  echo "install.sh: still missing after install: ${still_missing[*]}" >&2
  exit 1
fi
echo "install.sh: done"
