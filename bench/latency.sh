#!/usr/bin/env bash
# bench/latency.sh — latency at concurrency 1 (see bench/README.md; issue 30).
#
# One client, one request at a time, 4 KiB parcels (AMO_BENCH_LATENCY_SIZE):
# bench/latency.py times auth and the v2 upload, download and remove through
# one replica, beside the same calls made directly (signed S3 PUT, GET, HEAD,
# DELETE at RGW; Redis SET NX PX), and counts the Redis and RGW calls of
# every service operation from its /metrics. Two runs:
#   0:      the replica talks to Redis and RGW directly;
#   +DELAY: the replica and the direct calls go through bench/delay_proxy.py,
#           which adds AMO_BENCH_DELAY_MS (0.5) ms each way to Redis and to
#           RGW (tc netem is not available here).
# Each service operation's extra p50 over the 0 run, divided by the extra
# p50 of one direct Redis round trip through the same proxy (the delay as
# it was, the proxy's own cost included), is the number of round trips it
# waits for one after the other.
# AMO_BENCH_LATENCY_ITERATIONS (300) iterations a run. Ports: free loopback
# ports (the proxies' too). Prints the table and the load before and after.
set -euo pipefail

BENCH_NAME=latency
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
trap bench_cleanup EXIT

ITERATIONS=${AMO_BENCH_LATENCY_ITERATIONS:-300}
SIZE=${AMO_BENCH_LATENCY_SIZE:-4096}
DELAY_MS=${AMO_BENCH_DELAY_MS:-0.5}

bench_backends
bench_build_service
python3 -c 'import cryptography' 2>/dev/null || bench_die "python3-cryptography is missing (apt-get install python3-cryptography)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

REDIS_HOSTPORT=${AMO_REDIS_URL#redis://}
REDIS_HOSTPORT=${REDIS_HOSTPORT%%/*}
S3_HOSTPORT=${AMO_S3_ENDPOINT#http://}
S3_HOSTPORT=${S3_HOSTPORT%%/*}

# start_proxy TARGET: a delay proxy to TARGET on a free port; sets PROXY_PORT.
start_proxy() {
  PROXY_PORT=$(bench_free_port)
  python3 "$BENCH_ROOT/bench/delay_proxy.py" "$PROXY_PORT" "$1" "$DELAY_MS" &
  BENCH_PIDS+=("$!")
  for _ in $(seq 100); do
    python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' "$PROXY_PORT" 2>/dev/null && return 0
    sleep 0.1
  done
  bench_die "the delay proxy to $1 did not start"
}

# run LABEL REDIS_HOSTPORT S3_HOSTPORT: one replica on those backends, then
# latency.py; its lines go to $BENCH_WORK/LABEL.txt.
run() {
  local label=$1 redis=$2 s3=$3
  AMO_REDIS_URL=redis://$redis AMO_S3_ENDPOINT=http://$s3 AMO_S3_PREFIX=bench-latency/ bench_start_replica
  bench_log "$label: $ITERATIONS iterations of $SIZE bytes (replica $REPLICA_ADDR, Redis $redis, RGW $s3)"
  python3 "$BENCH_ROOT/bench/latency.py" "http://$REPLICA_ADDR" "http://$s3" "$redis" "$ITERATIONS" "$SIZE" \
    >"$BENCH_WORK/$label.txt" || bench_die "latency.py failed ($label)"
  kill -TERM "$REPLICA_PID"
  wait "$REPLICA_PID" 2>/dev/null || true
}

run base "$REDIS_HOSTPORT" "$S3_HOSTPORT"
start_proxy "$REDIS_HOSTPORT"
REDIS_PROXY=127.0.0.1:$PROXY_PORT
start_proxy "$S3_HOSTPORT"
S3_PROXY=127.0.0.1:$PROXY_PORT
run delayed "$REDIS_PROXY" "$S3_PROXY"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

field() { sed -n "s/.*\\b$2=\\([^ ]*\\).*/\\1/p" <<<"$1"; }
echo
echo "latency benchmark: concurrency 1, $SIZE-byte parcels, $ITERATIONS iterations a run, +$DELAY_MS ms each way to Redis and RGW in the second run; $(nproc) cores, commit $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "load average (1, 5, 15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER"
echo
# One round trip through a proxy: what it added to the direct Redis SET.
one_trip() { field "$(grep "^op=$1 " "$BENCH_WORK/$2.txt")" p50_ms; }
TRIP=$(awk -v a="$(one_trip Redis_SET_NX_PX base)" -v b="$(one_trip Redis_SET_NX_PX delayed)" 'BEGIN { printf "%.3f", b - a }')
echo "one round trip through a delay proxy added $TRIP ms at p50 (direct Redis SET; nominal $(awk -v d="$DELAY_MS" 'BEGIN { print 2 * d }') ms)"
echo
echo "| operation | p50 ms | p99 ms | p50 ms, +$DELAY_MS ms | p99 ms, +$DELAY_MS ms | Redis calls | RGW calls | round trips in sequence (p50 added ÷ $TRIP ms) |"
echo "|---|---|---|---|---|---|---|---|"
while read -r line; do
  op=$(field "$line" op)
  delayed=$(grep "^op=$op " "$BENCH_WORK/delayed.txt" || true)
  p50=$(field "$line" p50_ms) p99=$(field "$line" p99_ms)
  dp50=$(field "$delayed" p50_ms) dp99=$(field "$delayed" p99_ms)
  redis=$(field "$line" redis) s3=$(field "$line" s3)
  trips=$(awk -v a="$p50" -v b="$dp50" -v t="$TRIP" 'BEGIN { if (b == "" || t <= 0) print "-"; else printf "%.1f", (b - a) / t }')
  echo "| ${op//_/ } | $p50 | $p99 | ${dp50:--} | ${dp99:--} | ${redis:--} | ${s3:--} | $trips |"
done <"$BENCH_WORK/base.txt"
