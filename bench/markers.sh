#!/usr/bin/env bash
# bench/markers.sh — what the marks of used tokens cost (AMO_TOKEN_MARKERS,
# docs/reliability.md "Exactly once across a failover"; issue 26).
#
# Starts two replicas of the same binary on the local Redis and Ceph RGW
# (deploy/local/up.sh), one with AMO_TOKEN_MARKERS=true and one with false,
# then in one run, AMO_BENCH_MARKER_ROUNDS (3) rounds, the order of the two
# swapped every round, each measurement AMO_BENCH_SECS (10) seconds:
#   - tokens/s: wrk POST /api/v1/auth (AMO_BENCH_CONNECTIONS, 32);
#   - the small-parcel cycle: benches/load.rs --mode cycle,
#     AMO_BENCH_CYCLE_CONCURRENCY (8) workers, 4 KiB (upload token, v2
#     upload, download token, download, remove token, remove).
# Prints every sample, the medians of each side and the ratio on ÷ off.
# The binaries: bench/lib.sh's (release) unless AMO_BENCH_BIN names the
# service and AMO_BENCH_LOAD the load generator (e.g. debug builds, for a
# quick comparison on a busy machine: the ratio is what matters).
# Exit 0; 1 on a failed run or an error answer.
set -euo pipefail

BENCH_NAME=markers
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

SECS=${AMO_BENCH_SECS:-10}
ROUNDS=${AMO_BENCH_MARKER_ROUNDS:-3}
CONNS=${AMO_BENCH_CONNECTIONS:-32}
CONC=${AMO_BENCH_CYCLE_CONCURRENCY:-8}
trap bench_cleanup EXIT

bench_need wrk wrk
bench_backends
if [ -n "${AMO_BENCH_LOAD:-}" ]; then
  bench_build_service
  BENCH_LOAD=$AMO_BENCH_LOAD
else
  bench_build
fi

USER_ADDR=$(printf 'amo-bench-markers' | sha256sum | cut -c1-40 | tr 'a-f' 'A-F')
cat >"$BENCH_WORK/auth.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"user":"$USER_ADDR","operation":"upload"}'
EOF

declare -A ADDR
AMO_S3_PREFIX=bench-markers/ AMO_TOKEN_MARKERS=true bench_start_replica
ADDR[on]=$REPLICA_ADDR
AMO_S3_PREFIX=bench-markers/ AMO_TOKEN_MARKERS=false bench_start_replica
ADDR[off]=$REPLICA_ADDR

declare -A TOKENS CYCLES CYCLE_P50
FAILED=0

measure() { # round side
  local round=$1 side=$2 url="http://${ADDR[$2]}" out line field rate cycles p50 unexpected
  out=$BENCH_WORK/wrk-$round-$side.txt
  wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$BENCH_WORK/auth.lua" "$url/api/v1/auth" >"$out" 2>&1 ||
    bench_die "wrk failed: $(cat "$out")"
  if grep -q 'Non-2xx' "$out"; then bench_log "ERROR: wrk saw error answers: $(grep Non-2xx "$out")"; FAILED=1; fi
  rate=$(awk '/Requests\/sec/ { print $2 }' "$out")
  out=$BENCH_WORK/load-$round-$side.txt
  "$BENCH_LOAD" --url "$url" --mode cycle --concurrency "$CONC" --size 4096 --duration "$SECS" \
    --report-every 0 --label "markers-$side-$round" >"$out" 2>&1 || FAILED=1
  line=$(grep '^RESULT ' "$out" || true)
  [ -n "$line" ] || bench_die "the load generator printed no RESULT: $(tail -5 "$out")"
  for field in $line; do
    case $field in
      cycles_per_s=*) cycles=${field#*=} ;;
      unexpected=*) unexpected=${field#*=} ;;
    esac
  done
  p50=$(awk -F'|' '$2 ~ /whole cycles/ { gsub(/ /, ""); print $5 }' "$out")
  [ "$unexpected" = 0 ] || { bench_log "ERROR: $unexpected unexpected answers ($side)"; FAILED=1; }
  TOKENS[$side]+="$rate " CYCLES[$side]+="$cycles " CYCLE_P50[$side]+="$p50 "
  printf '%-6s %-4s tokens/s %8s   cycles/s %6s   cycle p50 %s ms\n' "$round" "$side" "$rate" "$cycles" "$p50"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "round  side  (markers on: AMO_TOKEN_MARKERS=true; off: false; ${SECS} s each)"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then order="on off"; else order="off on"; fi
  for side in $order; do measure "$round" "$side"; done
done

echo
for what in TOKENS CYCLES CYCLE_P50; do
  declare -n samples=$what
  on=$(echo "${samples[on]}" | median) off=$(echo "${samples[off]}" | median)
  ratio=$(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }')
  printf '%-10s median on %10s   off %10s   on/off %s\n' "$what" "$on" "$off" "$ratio"
  unset -n samples
done
exit "$FAILED"
