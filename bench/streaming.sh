#!/usr/bin/env bash
# bench/streaming.sh — large-parcel throughput and memory (see bench/README.md).
#
# One run measures three paths in alternation, with the same curl client and
# the same file (AMO_BENCH_SIZE_MIB, 1024 MiB of random bytes):
#   (a) the service, v2: POST /api/v2/parcels, GET /api/v2/parcels/{id};
#   (b) directly to RGW: one PUT and one GET (curl --aws-sigv4, payload
#       UNSIGNED-PAYLOAD, as the service sends it);
#   (c) Debian's nginx as a pass-through proxy to the same RGW, request and
#       response buffering off (started here, loopback only), the same
#       signed PUT and GET.
# Every upload sends curl's default `Expect: 100-continue` (an empty
# `Expect:` breaks curl 7.88's SigV4 signature: it signs the header it then
# drops), so each path pays the same extra round trip.
# AMO_BENCH_ROUNDS (3) rounds, the order rotating each round; prints every
# sample, the medians and the ratios. Then the service's peak RSS growth
# (VmHWM, reset through /proc/PID/clear_refs, over the RSS just before) for
# one parcel of that size (upload + download, each round) and for 8
# concurrent uploads of AMO_BENCH_CONCURRENT_MIB (128) MiB each.
#
# AMO_BENCH_BASE_BIN: another build of the service (e.g. main's, before a
# change) run as a fourth path, "baseline", in the same rotation, so that a
# change is compared with what it replaces in one run (issue 30).
#
# Targets (issue 12): upload >= 0.95 x nginx and >= 0.75 x direct; download
# >= 0.9 x direct; RSS growth <= 16 MiB (one 1 GiB parcel) and <= 48 MiB
# (8 x 128 MiB). It prints MET/MISSED for each and exits 0 either way; 1 on
# any failed request.
set -euo pipefail

BENCH_NAME=streaming
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

SIZE_MIB=${AMO_BENCH_SIZE_MIB:-1024}
ROUNDS=${AMO_BENCH_ROUNDS:-3}
CONCURRENT=8
CONCURRENT_MIB=${AMO_BENCH_CONCURRENT_MIB:-128}
RUN_ID=bench-streaming-$$-$(date +%s)
DIRECT_KEYS=()

cleanup() {
  # Best effort: the objects this run put straight into the bucket.
  local key
  for key in "${DIRECT_KEYS[@]}"; do
    curl -s -o /dev/null -X DELETE "${SIGV4[@]}" "$AMO_S3_ENDPOINT/$AMO_S3_BUCKET/$key" || true
  done
  bench_cleanup
}
trap cleanup EXIT

bench_need nginx nginx-light
bench_need curl curl
bench_backends
# AMO_BENCH_S3_ENDPOINT: another RGW of the same cluster (e.g. one started
# with beast's tcp_nodelay=1) for every path of this run; then also
# AMO_BENCH_RGW_PID (its pid, for CPU) and AMO_BENCH_RGW_LOG (its log).
export AMO_S3_ENDPOINT=${AMO_BENCH_S3_ENDPOINT:-$AMO_S3_ENDPOINT}
bench_build_service
# The upload CPU floor's hash: a plain SHA-256 pass with the service's sha2.
SHA_PASS=$(bench_build_bench sha256_pass)
python3 -c 'import cryptography' 2>/dev/null || bench_die "python3-cryptography is missing (apt-get install python3-cryptography)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

read -r ACCESS_KEY SECRET_KEY < <(python3 -c 'import json, sys
k = json.load(open(sys.argv[1])); print(k["access_key"], k["secret_key"])' "$AMO_KEY_FILE")
SIGV4=(--aws-sigv4 "aws:amz:$AMO_S3_REGION:s3" --user "$ACCESS_KEY:$SECRET_KEY"
  -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD')
CURL=(curl -sS --max-time 600)

# The files: one of SIZE_MIB, and CONCURRENT of CONCURRENT_MIB (in the page
# cache: every path reads the same bytes from memory).
FILE=$BENCH_WORK/parcel.bin
head -c $((SIZE_MIB << 20)) /dev/urandom >"$FILE"
SIZE=$(stat -c %s "$FILE")
HASH=$(sha256sum "$FILE" | cut -c1-64 | tr 'a-f' 'A-F')
SMALL=()
SMALL_HASH=()
for i in $(seq "$CONCURRENT"); do
  head -c $((CONCURRENT_MIB << 20)) /dev/urandom >"$BENCH_WORK/small-$i.bin"
  SMALL+=("$BENCH_WORK/small-$i.bin")
  SMALL_HASH+=("$(sha256sum "$BENCH_WORK/small-$i.bin" | cut -c1-64 | tr 'a-f' 'A-F')")
done

# The service.
bench_start_replica
SVC=$REPLICA_ADDR SVC_PID=$REPLICA_PID
MAIN_SVC=$SVC MAIN_PID=$SVC_PID
PATHS=(service direct nginx)
if [ -n "${AMO_BENCH_BASE_BIN:-}" ]; then
  [ -x "$AMO_BENCH_BASE_BIN" ] || bench_die "no baseline binary at $AMO_BENCH_BASE_BIN"
  BENCH_BIN=$AMO_BENCH_BASE_BIN bench_start_replica
  BASE_SVC=$REPLICA_ADDR BASE_PID=$REPLICA_PID
  PATHS+=(baseline)
fi

# nginx: pass-through to RGW, no buffering either way, loopback only.
NGINX_PREFIX=$BENCH_WORK/nginx-pass
mkdir -p "$NGINX_PREFIX"
NGINX_PORT=$(bench_free_port)
RGW_HOSTPORT=${AMO_S3_ENDPOINT#http://}
RGW_HOSTPORT=${RGW_HOSTPORT%%/*}
cat >"$NGINX_PREFIX/nginx.conf" <<EOF
worker_processes auto;
pid $NGINX_PREFIX/nginx.pid;
error_log $NGINX_PREFIX/error.log warn;
events { worker_connections 256; }
http {
    sendfile off;
    tcp_nodelay on;
    access_log off;
    client_body_temp_path $NGINX_PREFIX/client_body_temp;
    proxy_temp_path $NGINX_PREFIX/proxy_temp;
    fastcgi_temp_path $NGINX_PREFIX/fastcgi_temp;
    uwsgi_temp_path $NGINX_PREFIX/uwsgi_temp;
    scgi_temp_path $NGINX_PREFIX/scgi_temp;
    upstream rgw {
        server $RGW_HOSTPORT;
        keepalive 8;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        client_max_body_size 0;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_read_timeout 600s;
        proxy_send_timeout 600s;
        # The client's Host, which its SigV4 signature covers.
        proxy_set_header Host \$http_host;
        proxy_set_header Connection "";
        location / {
            proxy_pass http://rgw;
        }
    }
}
EOF
nginx -q -p "$NGINX_PREFIX" -e "$NGINX_PREFIX/error.log" -c "$NGINX_PREFIX/nginx.conf" || bench_die "nginx did not start"
for _ in $(seq 100); do
  [ -s "$NGINX_PREFIX/nginx.pid" ] && break
  sleep 0.1
done
BENCH_NGINX_PID=$(cat "$NGINX_PREFIX/nginx.pid" 2>/dev/null || true)
[ -n "$BENCH_NGINX_PID" ] || bench_die "nginx wrote no pid file"
NGINX=127.0.0.1:$NGINX_PORT
read -ra NGINX_PIDS <<<"$BENCH_NGINX_PID $(pgrep -P "$BENCH_NGINX_PID" | tr '\n' ' ')"
bench_log "nginx pass-through pid $BENCH_NGINX_PID on $NGINX -> $RGW_HOSTPORT"

# The local OSD is a memstore: every object lives in its RAM (about 2 bytes
# of RSS per byte stored), and a deleted object's data goes only when RGW's
# garbage collector gets to it (30 s at the earliest). Without help, a run
# piles up ~2 GiB of OSD RSS per GiB written (22 GiB was seen). So after
# every delete the collector runs at once (it removes only what was
# deleted), and before every transfer MemAvailable must leave room for it.
rgw_gc() {
  timeout 120 radosgw-admin -c "$LOCAL/ceph/ceph.conf" gc process --include-all >/dev/null 2>&1 ||
    bench_log "radosgw-admin gc process failed (continuing)"
}
MIN_AVAIL_MIB=${AMO_BENCH_MIN_AVAIL_MIB:-$((3 * SIZE_MIB + 2048))}
mem_guard() {
  local avail
  for _ in $(seq 30); do
    avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
    [ "$avail" -ge "$MIN_AVAIL_MIB" ] && return 0
    rgw_gc
    sleep 2
  done
  bench_die "only $avail MiB available (< $MIN_AVAIL_MIB, AMO_BENCH_MIN_AVAIL_MIB): the memstore OSD keeps objects in RAM; stopping"
}

status_kib() { awk -v f="$2" '$1 == f { print $2 }' "/proc/$1/status"; }
# Resets the service's peak RSS; prints its RSS now (KiB).
reset_peak() {
  echo 5 >"/proc/$SVC_PID/clear_refs"
  status_kib "$SVC_PID" VmRSS:
}
# Peak growth since reset_peak IDLE_KIB, in MiB.
peak_growth() { awk -v hwm="$(status_kib "$SVC_PID" VmHWM:)" -v idle="$1" 'BEGIN { printf "%.1f", (hwm - idle) / 1024 }'; }
mib_s() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.0f", b / 1048576 / t }'; }

# CPU seconds per GiB moved, of each process on the path: the service,
# nginx (master and workers), radosgw, ceph-osd. cpu_mark sets CPU_MARK;
# cpu_since prints "service=S nginx=S rgw=S osd=S" (s/GiB) since then.
LOCAL=${AMO_LOCAL_DIR:-/tmp/amo-local}
RGW_PID=${AMO_BENCH_RGW_PID:-$(cat "$LOCAL/ceph/run/client.rgw.pid")}
OSD_PID=$(cat "$LOCAL/ceph/run/osd.0.pid")
TICK=$(getconf CLK_TCK)
ticks() {
  local pid total=0
  for pid in "$@"; do total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0))); done
  echo "$total"
}
cpu_now() { echo "$(ticks "$SVC_PID") $(ticks "${NGINX_PIDS[@]}") $(ticks "$RGW_PID") $(ticks "$OSD_PID")"; }
cpu_mark() { CPU_MARK=$(cpu_now); }
cpu_since() {
  awk -v a="$CPU_MARK" -v b="$(cpu_now)" -v t="$TICK" -v gib="$(awk -v s="$SIZE" 'BEGIN { print s / 1073741824 }')" 'BEGIN {
    split(a, x, " "); split(b, y, " "); split("service nginx rgw osd", n, " ")
    for (i = 1; i <= 4; i++) printf "%s%s=%.2f", (i > 1 ? " " : ""), n[i], (y[i] - x[i]) / t / gib
  }'
}
# curl under /usr/bin/time: its own CPU (user + system) goes to CURL_CPU_FILE.
CURL_CPU_FILE=$BENCH_WORK/curl-cpu.txt
timed_curl() { /usr/bin/time -f '%U %S' -o "$CURL_CPU_FILE" "$@"; }
curl_cpu() { awk -v gib="$(awk -v s="$SIZE" 'BEGIN { print s / 1073741824 }')" '{ printf "curl=%.2f", ($1 + $2) / gib }' "$CURL_CPU_FILE"; }

# check CODE EXPECTED... WHAT: dies unless CODE is one of EXPECTED.
check() {
  local code=$1 what=${*: -1} want
  for want in "${@:2:$#-2}"; do [ "$code" = "$want" ] && return 0; done
  bench_die "$what answered HTTP $code"
}

# proof OPERATION_JSON FILE: a signed v2 token's headers, as a curl config.
proof() { bench_proof "http://$SVC" "$1" "$2"; }

UP_S=() DOWN_S=() UP_D=() DOWN_D=() UP_N=() DOWN_N=() UP_B=() DOWN_B=() RSS_LARGE=() RSS_UP=() RSS_DOWN=() SAMPLES=()
CPU_ROWS=() # "path|direction|service nginx rgw osd curl (s/GiB)"

# One upload + download of FILE through the service at SVC (pid SVC_PID),
# as path LABEL (service, or baseline); removes it after.
run_service() {
  local round=$1 label=$2 out code time idle up down
  proof "{\"name\":\"upload\",\"hash\":\"$HASH\"}" "$BENCH_WORK/up.cfg"
  idle=$(reset_peak)
  cpu_mark
  out=$(timed_curl "${CURL[@]}" -K "$BENCH_WORK/up.cfg" -H 'Content-Type: application/octet-stream' \
    -X POST -T "$FILE" -o "$BENCH_WORK/up.json" -w '%{http_code} %{time_total}' "http://$SVC/api/v2/parcels")
  read -r code time <<<"$out"
  check "$code" 200 201 "service upload"
  CPU_ROWS+=("$label|upload|$(cpu_since) $(curl_cpu)")
  up=$(mib_s "$SIZE" "$time")
  local rss_up
  rss_up=$(peak_growth "$idle")
  local idle_down
  idle_down=$(reset_peak)
  local id
  id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$BENCH_WORK/up.json")
  proof "{\"name\":\"download\",\"id\":\"$id\"}" "$BENCH_WORK/down.cfg"
  cpu_mark
  out=$(timed_curl "${CURL[@]}" -K "$BENCH_WORK/down.cfg" -o /dev/null -w '%{http_code} %{time_total} %{size_download}' \
    "http://$SVC/api/v2/parcels/$id")
  local size
  read -r code time size <<<"$out"
  check "$code" 200 "service download"
  [ "$size" = "$SIZE" ] || bench_die "service download: $size bytes, not $SIZE"
  CPU_ROWS+=("$label|download|$(cpu_since) $(curl_cpu)")
  down=$(mib_s "$SIZE" "$time")
  local rss_down rss_large
  rss_down=$(peak_growth "$idle_down")
  # Both peaks are measured from the same idle RSS of the upload's start.
  rss_large=$(awk -v u="$rss_up" -v d="$(peak_growth "$idle")" 'BEGIN { print (u > d ? u : d) }')
  proof "{\"name\":\"remove\",\"id\":\"$id\"}" "$BENCH_WORK/rm.cfg"
  code=$("${CURL[@]}" -K "$BENCH_WORK/rm.cfg" -X DELETE -o /dev/null -w '%{http_code}' "http://$SVC/api/v2/parcels/$id")
  check "$code" 200 204 "service remove"
  rgw_gc
  if [ "$label" = service ]; then
    UP_S+=("$up") DOWN_S+=("$down") RSS_UP+=("$rss_up") RSS_DOWN+=("$rss_down") RSS_LARGE+=("$rss_large")
  else
    UP_B+=("$up") DOWN_B+=("$down")
  fi
  SAMPLES+=("round $round $label: upload $up MiB/s, download $down MiB/s, peak RSS +$rss_large MiB (upload +$rss_up, download +$rss_down)")
}

# run_s3 NAME HOSTPORT: one signed PUT + GET of FILE at HOSTPORT; DELETE after.
run_s3() {
  local name=$1 base=http://$2 round=$3 key out code time size
  key=$RUN_ID/$name-$round
  DIRECT_KEYS+=("$key")
  cpu_mark
  out=$(timed_curl "${CURL[@]}" "${SIGV4[@]}" -T "$FILE" -o /dev/null -w '%{http_code} %{time_total}' \
    "$base/$AMO_S3_BUCKET/$key")
  read -r code time <<<"$out"
  check "$code" 200 "$name PUT"
  CPU_ROWS+=("$name|upload|$(cpu_since) $(curl_cpu)")
  local up down
  up=$(mib_s "$SIZE" "$time")
  cpu_mark
  out=$(timed_curl "${CURL[@]}" "${SIGV4[@]}" -o /dev/null -w '%{http_code} %{time_total} %{size_download}' \
    "$base/$AMO_S3_BUCKET/$key")
  read -r code time size <<<"$out"
  check "$code" 200 "$name GET"
  CPU_ROWS+=("$name|download|$(cpu_since) $(curl_cpu)")
  [ "$size" = "$SIZE" ] || bench_die "$name GET: $size bytes, not $SIZE"
  down=$(mib_s "$SIZE" "$time")
  code=$("${CURL[@]}" "${SIGV4[@]}" -X DELETE -o /dev/null -w '%{http_code}' "$base/$AMO_S3_BUCKET/$key")
  check "$code" 204 "$name DELETE"
  rgw_gc
  if [ "$name" = direct ]; then UP_D+=("$up") DOWN_D+=("$down"); else UP_N+=("$up") DOWN_N+=("$down"); fi
  SAMPLES+=("round $round $name: upload $up MiB/s, download $down MiB/s")
}

# A plain SHA-256 pass over FILE (benches/sha256_pass.rs): its CPU-s per
# GiB, user and user + system (the system part is reading the page cache).
SHA_USER=() SHA_ALL=()
run_sha() {
  local digest user sys
  digest=$(timed_curl "$SHA_PASS" "$FILE" | tr 'a-f' 'A-F')
  [ "$digest" = "$HASH" ] || bench_die "sha256_pass answered $digest, not $HASH"
  read -r user sys <"$CURL_CPU_FILE"
  SHA_USER+=("$(awk -v u="$user" -v s="$SIZE" 'BEGIN { printf "%.2f", u / (s / 1073741824) }')")
  SHA_ALL+=("$(awk -v u="$user" -v y="$sys" -v s="$SIZE" 'BEGIN { printf "%.2f", (u + y) / (s / 1073741824) }')")
}

# CONCURRENT uploads of CONCURRENT_MIB at once through the service.
RSS_MANY=() RATE_MANY=()
run_concurrent() {
  local i idle start pids=() out
  for i in $(seq 0 $((CONCURRENT - 1))); do
    proof "{\"name\":\"upload\",\"hash\":\"${SMALL_HASH[$i]}\"}" "$BENCH_WORK/up-$i.cfg"
  done
  idle=$(reset_peak)
  start=$(date +%s.%N)
  for i in $(seq 0 $((CONCURRENT - 1))); do
    "${CURL[@]}" -K "$BENCH_WORK/up-$i.cfg" -H 'Content-Type: application/octet-stream' -X POST \
      -T "${SMALL[$i]}" -o "$BENCH_WORK/up-$i.json" -w '%{http_code}' "http://$SVC/api/v2/parcels" \
      >"$BENCH_WORK/up-$i.code" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || bench_die "a concurrent upload failed"; done
  local elapsed
  elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
  RSS_MANY+=("$(peak_growth "$idle")")
  RATE_MANY+=("$(mib_s $((CONCURRENT * CONCURRENT_MIB << 20)) "$elapsed")")
  for i in $(seq 0 $((CONCURRENT - 1))); do
    check "$(cat "$BENCH_WORK/up-$i.code")" 200 201 "concurrent upload $i"
    local id
    id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$BENCH_WORK/up-$i.json")
    proof "{\"name\":\"remove\",\"id\":\"$id\"}" "$BENCH_WORK/rm.cfg"
    check "$("${CURL[@]}" -K "$BENCH_WORK/rm.cfg" -X DELETE -o /dev/null -w '%{http_code}' \
      "http://$SVC/api/v2/parcels/$id")" 200 204 "remove after concurrent upload"
  done
  rgw_gc
  SAMPLES+=("$CONCURRENT x $CONCURRENT_MIB MiB concurrent uploads: ${RATE_MANY[-1]} MiB/s together, peak RSS +${RSS_MANY[-1]} MiB")
}

# Warm-up (connections, page cache, allocator), not counted.
small_up=$(mktemp "$BENCH_WORK/warm.XXXX")
head -c 1048576 /dev/urandom >"$small_up"
check "$("${CURL[@]}" "${SIGV4[@]}" -T "$small_up" -o /dev/null -w '%{http_code}' \
  "http://$NGINX/$AMO_S3_BUCKET/$RUN_ID/warm")" 200 "nginx warm-up PUT"
check "$("${CURL[@]}" "${SIGV4[@]}" -X DELETE -o /dev/null -w '%{http_code}' \
  "http://$RGW_HOSTPORT/$AMO_S3_BUCKET/$RUN_ID/warm")" 204 "warm-up DELETE"
cat "$FILE" "${SMALL[@]}" >/dev/null

for round in $(seq 1 "$ROUNDS"); do
  for k in $(seq 0 $((${#PATHS[@]} - 1))); do
    path=${PATHS[$(((round - 1 + k) % ${#PATHS[@]}))]}
    bench_log "round $round: $path"
    mem_guard
    case $path in
      service) run_service "$round" service ;;
      baseline) SVC=$BASE_SVC SVC_PID=$BASE_PID run_service "$round" baseline ;;
      direct) run_s3 direct "$RGW_HOSTPORT" "$round" ;;
      nginx) run_s3 nginx "$NGINX" "$round" ;;
    esac
  done
  run_sha
  mem_guard
  run_concurrent
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { ok = (op == ">=" ? v >= t : v <= t); print (ok ? "MET" : "MISSED") }'; }

us=$(median "${UP_S[@]}") ud=$(median "${UP_D[@]}") un=$(median "${UP_N[@]}")
ds=$(median "${DOWN_S[@]}") dd=$(median "${DOWN_D[@]}") dn=$(median "${DOWN_N[@]}")
rss_large=$(printf '%s\n' "${RSS_LARGE[@]}" | sort -n | tail -1)
rss_many=$(printf '%s\n' "${RSS_MANY[@]}" | sort -n | tail -1)

echo
printf '%s\n' "${SAMPLES[@]}"
echo
echo "streaming benchmark: $(nproc) cores, $SIZE_MIB MiB file, $ROUNDS rounds (order rotating), curl $(curl --version | awk 'NR == 1 { print $2 }'), nginx $(nginx -v 2>&1 | sed 's/.*nginx\///'), commit $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo "load average (1, 5, 15 min) before: $LOAD_BEFORE, after: $LOAD_AFTER"
echo
echo "| path | upload MiB/s (median) | download MiB/s (median) | upload samples | download samples |"
echo "|---|---|---|---|---|"
echo "| (b) direct to RGW, one PUT / GET | $ud | $dd | ${UP_D[*]} | ${DOWN_D[*]} |"
echo "| (c) nginx pass-through, buffering off | $un | $dn | ${UP_N[*]} | ${DOWN_N[*]} |"
echo "| (a) the service, v2 | $us | $ds | ${UP_S[*]} | ${DOWN_S[*]} |"
if [ "${#UP_B[@]}" -gt 0 ]; then
  echo "| (a0) the baseline service (AMO_BENCH_BASE_BIN) | $(median "${UP_B[@]}") | $(median "${DOWN_B[@]}") | ${UP_B[*]} | ${DOWN_B[*]} |"
fi
echo
up_nginx=$(ratio "$us" "$un") up_direct=$(ratio "$us" "$ud") down_direct=$(ratio "$ds" "$dd")
echo "| ratio (medians) | value | target | |"
echo "|---|---|---|---|"
echo "| service ÷ nginx, upload | $up_nginx | ≥ 0.95 | $(verdict "$up_nginx" '>=' 0.95) |"
echo "| service ÷ direct, upload | $up_direct | ≥ 0.75 | $(verdict "$up_direct" '>=' 0.75) |"
echo "| service ÷ direct, download | $down_direct | ≥ 0.90 | $(verdict "$down_direct" '>=' 0.90) |"
echo "| service ÷ nginx, download | $(ratio "$ds" "$dn") | ≥ 0.90 | $(verdict "$(ratio "$ds" "$dn")" '>=' 0.90) |"
echo "| nginx ÷ direct, upload / download | $(ratio "$un" "$ud") / $(ratio "$dn" "$dd") | | |"
if [ "${#UP_B[@]}" -gt 0 ]; then
  echo "| service ÷ baseline, upload / download | $(ratio "$us" "$(median "${UP_B[@]}")") / $(ratio "$ds" "$(median "${DOWN_B[@]}")") | | |"
fi
echo
echo "CPU seconds per GiB moved, median of $ROUNDS (user + system, from /proc/PID/stat; curl from /usr/bin/time):"
echo "| path | direction | service | nginx | radosgw | ceph-osd | curl | sum |"
echo "|---|---|---|---|---|---|---|---|"
for path in direct nginx service ${UP_B[0]:+baseline}; do
  for dir in upload download; do
    line="| $path | $dir |" sum=0
    for field in service nginx rgw osd curl; do
      m=$(median $(printf '%s\n' "${CPU_ROWS[@]}" | awk -F'|' -v p="$path" -v d="$dir" '$1 == p && $2 == d { print $3 }' |
        tr ' ' '\n' | awk -F= -v f="$field" '$1 == f { print $2 }'))
      line+=" $m |"
      sum=$(awk -v a="$sum" -v b="$m" 'BEGIN { printf "%.2f", a + b }')
    done
    echo "$line $sum |"
  done
done
echo
echo "| service peak RSS growth (VmHWM over RSS before) | MiB, max of $ROUNDS | samples | target | |"
echo "|---|---|---|---|---|"
echo "| one $SIZE_MIB MiB parcel, upload + download | $rss_large | ${RSS_LARGE[*]} | ≤ 16 | $(verdict "$rss_large" '<=' 16) |"
echo "| (its upload alone / its download alone) | $(printf '%s\n' "${RSS_UP[@]}" | sort -n | tail -1) / $(printf '%s\n' "${RSS_DOWN[@]}" | sort -n | tail -1) | ${RSS_UP[*]} / ${RSS_DOWN[*]} | | |"
echo "| $CONCURRENT concurrent $CONCURRENT_MIB MiB uploads ($(median "${RATE_MANY[@]}") MiB/s together, median) | $rss_many | ${RSS_MANY[*]} | ≤ 48 | $(verdict "$rss_many" '<=' 48) |"
# Upload CPU floor (issue 30): what a proxy's copies cost (nginx's own
# CPU on its upload path) plus the SHA-256 the protocol requires (the
# plain pass's user CPU; its system CPU is reading the file, which the
# proxy's copies already count).
cpu_median() { median $(printf '%s\n' "${CPU_ROWS[@]}" | awk -F'|' -v p="$1" -v d="$2" '$1 == p && $2 == d { print $3 }' | tr ' ' '\n' | awk -F= -v f="$3" '$1 == f { print $2 }'); }
nginx_up=$(cpu_median nginx upload nginx) service_up=$(cpu_median service upload service)
sha_user=$(median "${SHA_USER[@]}") sha_all=$(median "${SHA_ALL[@]}")
floor=$(awk -v a="$nginx_up" -v b="$sha_user" 'BEGIN { printf "%.2f", a + b }')
over_floor=$(ratio "$service_up" "$floor")
echo
echo "Upload CPU floor, CPU-s per GiB, medians of $ROUNDS:"
echo "| nginx's upload | SHA-256 pass, user (user + system) | floor | the service's upload | service ÷ floor | target | |"
echo "|---|---|---|---|---|---|---|"
echo "| $nginx_up | $sha_user ($sha_all) | $floor | $service_up | $over_floor | ≤ 1.10 | $(verdict "$over_floor" '<=' 1.10) |"
if [ "${#UP_B[@]}" -gt 0 ]; then
  base_up=$(cpu_median baseline upload service)
  echo "| (baseline) | | | $base_up | $(ratio "$base_up" "$floor") | | |"
fi
echo "(SHA-256 pass samples, user: ${SHA_USER[*]})"
