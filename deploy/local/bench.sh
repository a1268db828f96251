#!/usr/bin/env bash
# deploy/local/bench.sh — start the local Redis and Ceph RGW (up.sh), then run
# the streaming benchmark (benches/streaming.rs) against them. It prints
# throughput through the service and directly to RGW, their ratios, and the
# service's peak RSS growth. AMO_BENCH_SIZE_MIB and AMO_BENCH_ROUNDS tune it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$HERE/up.sh" >/dev/null
# shellcheck disable=SC1091
. "${AMO_LOCAL_DIR:-/tmp/amo-local}/env"
cd "$HERE/../.."
exec cargo bench --bench streaming
