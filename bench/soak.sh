#!/usr/bin/env bash
# bench/soak.sh — the soak test (see bench/README.md).
#
# Builds the release binary and the load generator (benches/load.rs), starts
# the local Redis and Ceph RGW if needed (deploy/local/up.sh) and TWO
# replicas on free loopback ports (the settings of /tmp/amo-local/env,
# AMO_S3_PREFIX=bench/, AMO_LOG=warn, abuse limits off, AMO_TOKEN_TTL_SECS=60),
# then runs mixed load against both for AMO_SOAK_SECS: tokens, uploads of
# 1 KiB–1 MiB (log-uniform), downloads (bytes checked), inspects, removes, and
# deliberate errors (a replayed token must get 401 token_used, an unknown id
# 404). Each worker alternates between the replicas, so tokens issued by one
# are used on the other. At the end every parcel it stored is removed.
#
# Prints progress and each replica's RSS every minute, then throughput,
# latency, errors, and each replica's RSS at 1 min and at the end with the
# ratio. Exits non-zero if any answer was unexpected (exit 1) or a replica's
# RSS at the end exceeds AMO_SOAK_MAX_RSS_GROWTH (1.10) × its RSS at 1 min
# (exit 2).
#
# Bounded: AMO_SOAK_SECS (600) seconds or AMO_SOAK_MAX_REQUESTS
# (AMO_SOAK_SECS × 10000) requests, whichever comes first; the load
# generator is killed if it overruns by 2 minutes. Knobs:
# AMO_SOAK_CONCURRENCY (8 workers), AMO_SOAK_MAX_SIZE (1048576 bytes).
set -euo pipefail

BENCH_NAME=soak
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

SECS=${AMO_SOAK_SECS:-600}
MAX_REQUESTS=${AMO_SOAK_MAX_REQUESTS:-$((SECS * 10000))}
CONCURRENCY=${AMO_SOAK_CONCURRENCY:-8}
MAX_SIZE=${AMO_SOAK_MAX_SIZE:-1048576}
MAX_RSS_GROWTH=${AMO_SOAK_MAX_RSS_GROWTH:-1.10}
trap bench_cleanup EXIT

bench_backends
bench_build
bench_start_replica
A=$REPLICA_ADDR A_PID=$REPLICA_PID
bench_start_replica
B=$REPLICA_ADDR B_PID=$REPLICA_PID

echo "load average (1, 5, 15 min) at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "soak: $SECS s or $MAX_REQUESTS requests, $CONCURRENCY workers, uploads 1 KiB–$((MAX_SIZE / 1024)) KiB, replicas pid $A_PID on $A and pid $B_PID on $B ($(nproc) cores, $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
rc=0
timeout --signal=INT --kill-after=10 $((SECS + 120)) "$BENCH_LOAD" \
  --url "http://$A" --url "http://$B" --mode mixed \
  --concurrency "$CONCURRENCY" --duration "$SECS" --requests "$MAX_REQUESTS" \
  --min-size 1024 --max-size "$MAX_SIZE" \
  --pid "$A_PID" --pid "$B_PID" --report-every 60 \
  --max-rss-growth "$MAX_RSS_GROWTH" --label soak || rc=$?

# Both replicas must have lived through it.
for pid in "$A_PID" "$B_PID"; do
  kill -0 "$pid" 2>/dev/null || { echo "FAIL: replica pid $pid died"; rc=1; }
done
for log in "$BENCH_WORK"/replica-*.log; do
  if grep -qiE 'panic|ERROR' "$log"; then
    echo "replica log $log has errors:"
    grep -iE 'panic|ERROR' "$log" | head -20
    rc=1
  fi
done
echo "load average (1, 5, 15 min) at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
case $rc in
  0) echo "soak: OK" ;;
  1) echo "soak: FAILED: unexpected answers (or a replica died / logged errors)" ;;
  2) echo "soak: FAILED: RSS grew by more than the allowed factor $MAX_RSS_GROWTH" ;;
  124) echo "soak: FAILED: the load generator overran its time bound" ;;
  *) echo "soak: FAILED (exit $rc)" ;;
esac
exit "$rc"
