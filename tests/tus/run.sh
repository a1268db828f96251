#!/usr/bin/env bash
# tests/tus/run.sh — a real tus client against the service (issue 14).
#
# Installs tuspy (the tus project's Python client, from PyPI) in a venv, then
# runs tests/tus/workload.py in the harness of tests/lb/run.sh: three
# replicas of amo-storage behind nginx, on the real Redis and Ceph RGW of
# deploy/local/up.sh. A 256 MiB parcel goes up in 8 MiB PATCHes; one PATCH's
# connection is cut mid-way and the replica receiving a later one is killed
# with SIGKILL; the parcel then downloads byte for byte and nothing staged is
# left (see workload.py's docstring).
#
# Environment: AMO_LB_BIN (a built amo-storage; default: cargo build),
# AMO_LOCAL_DIR (where the venv lives, /tmp/amo-local).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
local_dir=${AMO_LOCAL_DIR:-/tmp/amo-local}
# shellcheck source=venv.sh
. "$here/venv.sh"
ensure_tus_venv

# A short lease: the lock of the PATCH whose replica is killed lapses in 6 s
# (not 30), and tuspy, retrying every second, goes on sooner.
AMO_LEASE_SECS=6 AMO_LB_WORKLOAD=$here/workload.py AMO_LB_PYTHON=$tus_python \
    bash "$here/../lb/run.sh"
