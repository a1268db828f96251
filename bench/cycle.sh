#!/usr/bin/env bash
# bench/cycle.sh — the small-parcel cycle against direct RGW, and the calls
# it costs (see bench/README.md; issue 20).
#
# In one run, AMO_BENCH_CYCLE_ROUNDS (3) rounds, alternating (the order
# swaps every round), each AMO_BENCH_SECS (15) seconds:
#   - the service: benches/load.rs --mode cycle, AMO_BENCH_CYCLE_CONCURRENCY
#     (16) workers, 4 KiB: upload token, v2 upload of fresh random bytes,
#     download token, download (checked), remove token, remove;
#   - direct to RGW: wrk with as many connections, a Lua script doing a PUT,
#     a GET and a DELETE of 4 KiB per cycle, on a bucket of its own
#     (amo-bench-anon, created here) whose policy allows anonymous PUT, GET
#     and DELETE: RGW at its cheapest, no signature to check.
# Prints cycles/s and p50/p99 of every sample, the medians, the ratio
# service ÷ direct, and the CPU per cycle of each process involved (the
# service, radosgw, ceph-osd, redis-server, and the client: wrk or load.rs,
# from /usr/bin/time). AMO_BENCH_S3_ENDPOINT points both paths at another
# RGW of the same cluster.
#
# Then it counts the calls of AMO_BENCH_COUNT_CYCLES (20) cycles of one
# worker, on a replica of its own with a fresh S3 prefix: RGW calls from
# RGW's own log (the request lines under that prefix), Redis calls from
# `redis-cli monitor` (the commands from the replica's own connections).
#
# Targets: ratio >= 0.75; at most 4 RGW calls per cycle. Prints MET/MISSED;
# exit 0 either way, 1 on a failed run or an error answer.
set -euo pipefail

BENCH_NAME=cycle
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

SECS=${AMO_BENCH_SECS:-15}
ROUNDS=${AMO_BENCH_CYCLE_ROUNDS:-3}
CONC=${AMO_BENCH_CYCLE_CONCURRENCY:-16}
COUNT_CYCLES=${AMO_BENCH_COUNT_CYCLES:-20}
ANON_BUCKET=${AMO_BENCH_ANON_BUCKET:-amo-bench-anon}
SIZE=4096
RUN_PREFIX=cycle-$$-$(date +%s)

cleanup() {
  # The objects wrk left (the last cycles' PUTs and GETs not yet deleted).
  # (curl 7.88's SigV4 signs the query as written: parameters sorted, the
  # prefix's "/" encoded.)
  if [ -n "${RGW:-}" ]; then
    local key keys
    for _ in 1 2 3 4 5; do
      keys=$(curl -s "${SIGV4[@]}" "http://$RGW/$ANON_BUCKET?max-keys=1000&prefix=$RUN_PREFIX%2F" |
        grep -o '<Key>[^<]*</Key>' | sed 's/<[^>]*>//g' || true)
      [ -n "$keys" ] || break
      while read -r key; do
        curl -s -o /dev/null -X DELETE "http://$RGW/$ANON_BUCKET/$key"
      done <<<"$keys"
    done
  fi
  [ -n "${MONITOR_PID:-}" ] && kill "$MONITOR_PID" 2>/dev/null
  bench_cleanup
}
trap cleanup EXIT

bench_need wrk wrk
bench_need redis-cli redis-tools
bench_backends
# AMO_BENCH_S3_ENDPOINT: another RGW of the same cluster (e.g. one started
# with beast's tcp_nodelay=1) for every path of this run; then also
# AMO_BENCH_RGW_PID (its pid, for CPU) and AMO_BENCH_RGW_LOG (its log).
export AMO_S3_ENDPOINT=${AMO_BENCH_S3_ENDPOINT:-$AMO_S3_ENDPOINT}
bench_build
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

read -r ACCESS_KEY SECRET_KEY < <(python3 -c 'import json, sys
k = json.load(open(sys.argv[1])); print(k["access_key"], k["secret_key"])' "$AMO_KEY_FILE")
SIGV4=(--aws-sigv4 "aws:amz:$AMO_S3_REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY"
  -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD')
RGW=${AMO_S3_ENDPOINT#http://}
RGW=${RGW%%/*}
LOCAL=${AMO_LOCAL_DIR:-/tmp/amo-local}
RGW_PID=${AMO_BENCH_RGW_PID:-$(cat "$LOCAL/ceph/run/client.rgw.pid")}
OSD_PID=$(cat "$LOCAL/ceph/run/osd.0.pid")
REDIS_PID=$(cat "$LOCAL/redis/redis.pid")
RGW_LOG=${AMO_BENCH_RGW_LOG:-$LOCAL/ceph/log/client.rgw.log}

# The anonymous bucket (idempotent: 200 new, 409 exists).
code=$(curl -s -o /dev/null -w '%{http_code}' "${SIGV4[@]}" -X PUT "http://$RGW/$ANON_BUCKET")
case $code in 200 | 409) ;; *) bench_die "creating bucket $ANON_BUCKET: HTTP $code" ;; esac
cat >"$BENCH_WORK/policy.json" <<EOF
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*",
  "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"],
  "Resource": ["arn:aws:s3:::$ANON_BUCKET/*"]}]}
EOF
# "?policy=": curl's SigV4 signs a bare "?policy" differently from RGW.
code=$(curl -s -o /dev/null -w '%{http_code}' "${SIGV4[@]}" -X PUT -T "$BENCH_WORK/policy.json" \
  "http://$RGW/$ANON_BUCKET?policy=")
[ "$code" = 204 ] || [ "$code" = 200 ] || bench_die "bucket policy: HTTP $code"

# wrk: cycle i is PUT key i, GET key i-LAG, DELETE key i-2*LAG (requests in
# that order), so a GET never overtakes its PUT with CONC connections in
# flight; keys -2*LAG..0 are put before the run.
LAG=$((CONC * 4))
head -c "$SIZE" /dev/urandom >"$BENCH_WORK/body.bin"
cat >"$BENCH_WORK/cycle.lua" <<EOF
local f = io.open("$BENCH_WORK/body.bin", "rb")
local body = f:read("*a")
f:close()
local prefix = "/$ANON_BUCKET/$RUN_PREFIX/" .. tostring(math.random(1, 1e9)) .. "-"
local lag = $LAG
local n = 0
init = function(args)
  prefix = args[1] and ("/$ANON_BUCKET/$RUN_PREFIX/" .. args[1] .. "-") or prefix
end
request = function()
  local op, i = n % 3, math.floor(n / 3)
  n = n + 1
  if op == 0 then
    return wrk.format("PUT", prefix .. i, {["Content-Type"] = "application/octet-stream"}, body)
  elseif op == 1 then
    return wrk.format("GET", prefix .. (i - lag))
  else
    return wrk.format("DELETE", prefix .. (i - 2 * lag))
  end
end
EOF

TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU of the given pids: "name=ticks ..." (a snapshot).
cpu_snapshot() {
  local pair out=""
  for pair in "$@"; do out+="${pair%%=*}=$(cpu_ticks "${pair#*=}") "; done
  echo "$out"
}
# cpu_per_cycle BEFORE AFTER CYCLES: "name N µs, ..." per cycle.
cpu_per_cycle() {
  awk -v a="$1" -v b="$2" -v c="$3" -v t="$TICK" 'BEGIN {
    n = split(a, x, " "); split(b, y, " ")
    for (i = 1; i <= n; i++) {
      split(x[i], p, "="); split(y[i], q, "=")
      printf "%s%s %.0f", (i > 1 ? ", " : ""), p[1], (q[2] - p[2]) * 1e6 / t / (c > 0 ? c : 1)
    }
  }'
}

# The client's own CPU per cycle (user + system, /usr/bin/time).
client_cpu() { awk -v c="$1" '{ printf "%.0f", ($1 + $2) * 1e6 / (c > 0 ? c : 1) }' "$BENCH_WORK/client-cpu.txt"; }

bench_start_replica
SVC=$REPLICA_ADDR SVC_PID=$REPLICA_PID

ROWS=() DIRECT=() SERVICE=() FAILED=0
ms() { # wrk latency to ms
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000; exit }
    if (v ~ /ms$/) { sub(/ms$/, "", v); print v + 0; exit }
    if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000; exit } print v }'
}

run_direct() {
  local round=$1 out=$BENCH_WORK/wrk-$1.txt before after i
  # Key 0 too: wrk calls request() once before the run for nothing, so
  # the first PUT (key 0) is never sent.
  for i in $(seq $((-2 * LAG)) 0); do
    curl -s -o /dev/null -T "$BENCH_WORK/body.bin" "http://$RGW/$ANON_BUCKET/$RUN_PREFIX/r$round-$i"
  done
  before=$(cpu_snapshot rgw="$RGW_PID" osd="$OSD_PID")
  timeout $((SECS + 60)) /usr/bin/time -f '%U %S' -o "$BENCH_WORK/client-cpu.txt" wrk -t1 -c"$CONC" -d"${SECS}s" --latency -s "$BENCH_WORK/cycle.lua" \
    "http://$RGW" -- "r$round" >"$out" 2>&1 || { cat "$out" >&2; bench_die "wrk failed"; }
  after=$(cpu_snapshot rgw="$RGW_PID" osd="$OSD_PID")
  sed 's/^/    /' "$out" >&2
  local rate p50 p99 bad total
  rate=$(awk '/^Requests\/sec:/ { print $2 }' "$out")
  p50=$(ms "$(awk '$1 == "50%" { print $2 }' "$out")")
  p99=$(ms "$(awk '$1 == "99%" { print $2 }' "$out")")
  total=$(awk '/ requests in / { print $1 }' "$out")
  bad=$(awk '/Non-2xx or 3xx responses:/ { b += $NF } /Socket errors:/ { gsub(",", ""); b += $4 + $6 + $8 + $10 } END { print b + 0 }' "$out")
  local cycles
  cycles=$(awk -v r="$rate" 'BEGIN { printf "%.0f", r / 3 }')
  DIRECT+=("$cycles")
  ROWS+=("$round|direct to RGW (wrk -c$CONC, PUT + GET + DELETE)|$cycles|$p50|$p99|$bad|$(cpu_per_cycle "$before" "$after" $((total / 3))), wrk $(client_cpu $((total / 3)))")
  [ "$bad" -eq 0 ] || { bench_log "ERROR: $bad error answers from RGW"; FAILED=1; }
}

run_service() {
  local round=$1 out=$BENCH_WORK/load-$1.txt before after rc=0
  before=$(cpu_snapshot service="$SVC_PID" rgw="$RGW_PID" osd="$OSD_PID" redis="$REDIS_PID")
  timeout $((SECS + 120)) /usr/bin/time -f '%U %S' -o "$BENCH_WORK/client-cpu.txt" "$BENCH_LOAD" --url "http://$SVC" --mode cycle --concurrency "$CONC" \
    --size "$SIZE" --duration "$SECS" --report-every 0 --label "cycle-$round" >"$out" 2>&1 || rc=$?
  after=$(cpu_snapshot service="$SVC_PID" rgw="$RGW_PID" osd="$OSD_PID" redis="$REDIS_PID")
  sed 's/^/    /' "$out" >&2
  local line field cycles p50 p99 unexpected requests
  line=$(grep '^RESULT ' "$out" || true)
  [ -n "$line" ] || bench_die "the load generator printed no RESULT (exit $rc)"
  for field in $line; do
    case $field in
      requests=*) requests=${field#*=} ;;
      cycles_per_s=*) cycles=${field#*=} ;;
      p50_ms=*) p50=${field#*=} ;;
      p99_ms=*) p99=${field#*=} ;;
      unexpected=*) unexpected=${field#*=} ;;
    esac
  done
  # The cycle's own latency (all six requests), from the per-operation table.
  local cycle_lat
  cycle_lat=$(awk -F'|' '$2 ~ /whole cycles/ { gsub(/ /, ""); print $5 "|" $6 }' "$out")
  [ -n "$cycle_lat" ] && { p50=${cycle_lat%|*}; p99=${cycle_lat#*|}; }
  SERVICE+=("$cycles")
  ROWS+=("$round|the service (load.rs --mode cycle, $CONC workers, 6 requests)|$cycles|$p50|$p99|$unexpected|$(cpu_per_cycle "$before" "$after" $((requests / 6))), load.rs $(client_cpu $((requests / 6)))")
  [ "$rc" -eq 0 ] && [ "$unexpected" = 0 ] || { bench_log "ERROR: load generator exit $rc, $unexpected unexpected"; FAILED=1; }
}

# Warm-up, not counted.
timeout 60 "$BENCH_LOAD" --url "http://$SVC" --mode cycle --concurrency "$CONC" --size "$SIZE" \
  --duration 3 --report-every 0 >/dev/null 2>&1 || true

for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then
    bench_log "round $round: direct, then service"
    run_direct "$round"
    run_service "$round"
  else
    bench_log "round $round: service, then direct"
    run_service "$round"
    run_direct "$round"
  fi
done

# Counting: one worker, COUNT_CYCLES cycles, on a replica with a prefix of
# its own; RGW's log and Redis's monitor.
COUNT_PREFIX=bench-count-$$-$(date +%s)/
AMO_S3_PREFIX=$COUNT_PREFIX bench_start_replica
COUNT_PID=$REPLICA_PID COUNT_ADDR=$REPLICA_ADDR
redis_hostport=${AMO_REDIS_URL#redis://}
redis_hostport=${redis_hostport%%/*}
MONITOR_OUT=$BENCH_WORK/monitor.txt
timeout 120 redis-cli -h "${redis_hostport%:*}" -p "${redis_hostport##*:}" monitor >"$MONITOR_OUT" 2>&1 &
MONITOR_PID=$!
sleep 0.5
rgw_lines_before=$(wc -l <"$RGW_LOG")
timeout 120 "$BENCH_LOAD" --url "http://$COUNT_ADDR" --mode cycle --concurrency 1 --size "$SIZE" \
  --requests $((COUNT_CYCLES * 6)) --duration 60 --report-every 0 >"$BENCH_WORK/count.txt" 2>&1 ||
  { cat "$BENCH_WORK/count.txt" >&2; bench_die "the counting run failed"; }
sed 's/^/    /' "$BENCH_WORK/count.txt" >&2
sleep 1
# The replica's own connections to Redis (local ports), then stop watching.
PORTS=$(ss -tnpH state established "( dport = :${redis_hostport##*:} )" 2>/dev/null |
  awk -v pid="pid=$COUNT_PID," 'index($0, pid) { n = split($3, a, ":"); print a[n] }' | sort -u | tr '\n' ' ')
kill "$MONITOR_PID" 2>/dev/null || true
wait "$MONITOR_PID" 2>/dev/null || true
MONITOR_PID=""
grep -q '^RESULT .*unexpected=0$' "$BENCH_WORK/count.txt" || bench_die "the counting run had unexpected answers (see above)"
counted=$(grep '^RESULT' "$BENCH_WORK/count.txt" | sed 's/.*requests=\([0-9]*\).*/\1/')
count_cycles=$((counted / 6))
tail -n +"$((rgw_lines_before + 1))" "$RGW_LOG" | grep 'beast:' |
  grep -E "\"(GET|PUT|HEAD|DELETE|POST) /$AMO_S3_BUCKET/${COUNT_PREFIX%/}" >"$BENCH_WORK/rgw-calls.txt" || true
rgw_calls=$(wc -l <"$BENCH_WORK/rgw-calls.txt")
rgw_breakdown=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^"(GET|PUT|HEAD|DELETE|POST)$/) { n[substr($i, 2) " " $(i + 3)]++ } }
  END { for (k in n) printf "%s×%d ", k, n[k] }' "$BENCH_WORK/rgw-calls.txt")
redis_calls=0 redis_breakdown=""
if [ -n "$PORTS" ]; then
  awk -v ports="$PORTS" 'BEGIN { n = split(ports, p, " "); for (i = 1; i <= n; i++) want[p[i]] = 1 }
    { addr = $3; sub(/\]$/, "", addr); m = split(addr, a, ":"); if (a[m] in want) print }' "$MONITOR_OUT" >"$BENCH_WORK/redis-calls.txt"
  redis_calls=$(wc -l <"$BENCH_WORK/redis-calls.txt")
  redis_breakdown=$(awk '{ c = toupper($4); gsub(/"/, "", c); n[c]++ } END { for (k in n) printf "%s×%d ", k, n[k] }' "$BENCH_WORK/redis-calls.txt")
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
per() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }

echo
echo "small-parcel cycle benchmark: RGW $AMO_S3_ENDPOINT, $(nproc) cores, 4 KiB, $CONC workers/connections, $ROUNDS rounds × $SECS s, commit $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "load average (1, 5, 15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER"
echo
echo "| round | path | cycles/s | p50 ms | p99 ms | errors | CPU µs per cycle |"
echo "|---|---|---|---|---|---|---|"
for row in "${ROWS[@]}"; do echo "| ${row//|/ | } |"; done
echo
ms_=$(median "${SERVICE[@]}") md=$(median "${DIRECT[@]}")
r=$(ratio "$ms_" "$md")
echo "medians: service $ms_ cycles/s, direct $md cycles/s; service ÷ direct = $r (target ≥ 0.75: $(awk -v r="$r" 'BEGIN { print (r >= 0.75 ? "MET" : "MISSED") }'))"
echo "per-round ratios: $(for i in $(seq 0 $((ROUNDS - 1))); do printf '%s ' "$(ratio "${SERVICE[$i]}" "${DIRECT[$i]}")"; done)"
echo
echo "calls per cycle ($count_cycles cycles, one worker, prefix $COUNT_PREFIX):"
echo "| backend | calls | per cycle | by method / command |"
echo "|---|---|---|---|"
echo "| RGW (its log) | $rgw_calls | $(per "$rgw_calls" "$count_cycles") | $rgw_breakdown|"
echo "| Redis (monitor, the replica's connections: ${PORTS:-none found}) | $redis_calls | $(per "$redis_calls" "$count_cycles") | $redis_breakdown|"
echo "target ≤ 4 RGW calls per cycle: $(awk -v c="$(per "$rgw_calls" "$count_cycles")" 'BEGIN { print (c <= 4 ? "MET" : "MISSED") }')"
[ "$FAILED" -eq 0 ] || { echo "FAIL: error answers or a failed run (see above)"; exit 1; }
