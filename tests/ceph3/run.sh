#!/usr/bin/env bash
# tests/ceph3/run.sh — the fault tests on a three-OSD Ceph (tests/ceph3):
# starts the cluster with deploy/local/ceph3.sh beside the one-OSD default
# (its own ports and directory), runs `cargo test --test ceph3` one test at a
# time, and stops the cluster, whatever the outcome. Redis is the one of
# deploy/local/up.sh, which must be running.
#
#   bash tests/ceph3/run.sh            # extra arguments go to cargo test
#
# Exit status: that of cargo test (or of the start, if it fails).
set -euo pipefail
cd "$(dirname "$0")/../.."

started=$(date +%s)
stamp() { echo "[ceph3 +$(($(date +%s) - started))s] $*"; }

if [ ! -r "${AMO_LOCAL_DIR:-/tmp/amo-local}/env" ] && [ -z "${AMO_REDIS_URL:-}" ]; then
  echo "tests/ceph3/run.sh: no Redis: run deploy/local/up.sh first" >&2
  exit 1
fi

stop() {
  stamp "stopping the three-OSD Ceph"
  bash deploy/local/ceph3.sh stop || true
}
trap stop EXIT

stamp "starting the three-OSD Ceph (deploy/local/ceph3.sh)"
bash deploy/local/ceph3.sh start

stamp "cargo test --test ceph3"
status=0
cargo test --locked --test ceph3 "$@" -- --test-threads=1 --nocapture || status=$?
stamp "cargo test --test ceph3 exited $status"
exit "$status"
