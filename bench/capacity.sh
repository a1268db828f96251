#!/usr/bin/env bash
# bench/capacity.sh — what one operation of each kind costs (docs/capacity.md):
# Redis commands (INFO commandstats of a Redis started for the run alone),
# RGW requests (the local RGW's access log, filtered by the run's S3
# prefix), the service's CPU per operation and peak RSS, the sweeper's cost
# per pass, and the Redis bytes of each key kind. bench/capacity.py does the
# measuring; this script brings up the local stack, builds the release
# binary (or runs AMO_BENCH_BIN) and the venv with the signing library.
#
# Usage: bench/capacity.sh [N]   (N operations of each kind, default 200)
set -euo pipefail
BENCH_NAME=capacity
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT
bench_backends
bench_need redis-cli redis-tools
bench_build_service
local_dir=$BENCH_BASE_DIR
# shellcheck source=tests/tus/venv.sh
. "$BENCH_ROOT/tests/tus/venv.sh"
ensure_tus_venv
rgw_log=$BENCH_BASE_DIR/ceph/log/client.rgw.log
[ -f "$rgw_log" ] || bench_die "no RGW log at $rgw_log (deploy/local/ceph.sh writes it)"
"$tus_python" "$BENCH_ROOT/bench/capacity.py" "$BENCH_BIN" "$rgw_log" "${1:-200}"
