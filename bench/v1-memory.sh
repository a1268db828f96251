#!/usr/bin/env bash
# bench/v1-memory.sh — one replica's peak memory under v1 (JSON-and-hex)
# traffic, with v2 as the baseline (see bench/README.md).
#
# One replica (the release build, or AMO_BENCH_BIN) on the local backends.
# AMO_BENCH_PARALLEL (4) curl clients at once, each with its own parcel of
# AMO_BENCH_V1_MIB (64) MiB of random bytes:
#   uploads    PARALLEL v1 uploads at once (JSON with the data as hex, with
#              Content-Length), then PARALLEL v2 uploads of other bodies of
#              the same size;
#   downloads  PARALLEL v1 downloads at once of one stored parcel, then
#              PARALLEL v2 downloads of it.
# For each phase: the answers' statuses, and the replica's peak RSS growth
# (VmHWM reset through /proc/PID/clear_refs, over the RSS just before).
# v1 uploads hold their bodies whole (1.5 x the JSON, which is twice the
# data), at most AMO_V1_UPLOAD_MEMORY_BYTES together: past it they answer
# 503 busy. Every download streams, v1 as hex. Prints the figures and the
# v1/v2 ratios; exits 1 on any other answer than 200, 201 or 503 busy.
set -euo pipefail

BENCH_NAME=v1-memory
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

SIZE_MIB=${AMO_BENCH_V1_MIB:-64}
PARALLEL=${AMO_BENCH_PARALLEL:-4}
trap bench_cleanup EXIT

bench_need curl curl
bench_backends
bench_build_service
python3 -c 'import cryptography' 2>/dev/null || bench_die "python3-cryptography is missing (apt-get install python3-cryptography)"
export AMO_S3_PREFIX=bench-v1-memory-$$/
bench_start_replica
SVC=http://$REPLICA_ADDR
proof() { bench_proof "$SVC" "$1" "$2"; }
ADDRESS=$(python3 "$BENCH_ROOT/bench/proof.py" "$SVC" address)

# The bodies: PARALLEL for v1 (and their JSON), PARALLEL for v2.
for i in $(seq "$PARALLEL"); do
  head -c "$((SIZE_MIB << 20))" /dev/urandom >"$BENCH_WORK/v1-$i.bin"
  head -c "$((SIZE_MIB << 20))" /dev/urandom >"$BENCH_WORK/v2-$i.bin"
  python3 -c 'import json, sys
data = open(sys.argv[1], "rb").read()
json.dump({"owner": sys.argv[2], "metadata": {}, "data": data.hex()}, open(sys.argv[3], "w"))' \
    "$BENCH_WORK/v1-$i.bin" "$ADDRESS" "$BENCH_WORK/v1-$i.json"
done

rss_kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$REPLICA_PID/status"; }
# phase NAME: runs the PARALLEL curl commands of $BENCH_WORK/NAME-*.cmd at
# once; prints the statuses and the peak RSS growth in MiB; sets GROWTH.
phase() {
  local name=$1 before statuses i clients=()
  echo 5 >"/proc/$REPLICA_PID/clear_refs"
  before=$(rss_kib VmRSS)
  for i in $(seq "$PARALLEL"); do
    bash "$BENCH_WORK/$name-$i.cmd" >"$BENCH_WORK/$name-$i.status" &
    clients+=("$!")
  done
  # The clients only: the replica runs in the background too.
  wait "${clients[@]}"
  statuses=$(cat "$BENCH_WORK/$name"-*.status | sort | uniq -c | awk '{printf "%s x %s, ", $1, $2}')
  GROWTH=$((($(rss_kib VmHWM) - before) / 1024))
  printf '%-14s %s MiB peak RSS growth; answers: %s\n' "$name" "$GROWTH" "${statuses%, }"
  if grep -qvE '^(200|201|503)$' "$BENCH_WORK/$name"-*.status; then
    bench_die "$name: a request failed (statuses above; bodies in $BENCH_WORK)"
  fi
}

for i in $(seq "$PARALLEL"); do
  proof '"upload"' "$BENCH_WORK/v1-up-$i.proof"
  echo "curl -s -o $BENCH_WORK/v1-up-$i.out -w '%{http_code}\n' -K $BENCH_WORK/v1-up-$i.proof -H 'Content-Type: application/json' --data-binary @$BENCH_WORK/v1-$i.json $SVC/api/v1/parcels" >"$BENCH_WORK/v1-upload-$i.cmd"
  hash=$(sha256sum "$BENCH_WORK/v2-$i.bin" | cut -d' ' -f1)
  proof "{\"name\": \"upload\", \"hash\": \"$hash\"}" "$BENCH_WORK/v2-up-$i.proof"
  echo "curl -s -o $BENCH_WORK/v2-up-$i.out -w '%{http_code}\n' -K $BENCH_WORK/v2-up-$i.proof -H 'Content-Type: application/octet-stream' --data-binary @$BENCH_WORK/v2-$i.bin $SVC/api/v2/parcels" >"$BENCH_WORK/v2-upload-$i.cmd"
done
echo "$PARALLEL clients at once, parcels of $SIZE_MIB MiB; replica pid $REPLICA_PID"
phase v1-upload
v1_up=$GROWTH
phase v2-upload
v2_up=$GROWTH

# Downloads of one stored parcel: the first v2 body.
id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$BENCH_WORK/v2-up-1.out")
for i in $(seq "$PARALLEL"); do
  for version in v1 v2; do
    proof "{\"name\": \"download\", \"id\": \"$id\"}" "$BENCH_WORK/$version-down-$i.proof"
    echo "curl -s -o /dev/null -w '%{http_code}\n' -K $BENCH_WORK/$version-down-$i.proof $SVC/api/$version/parcels/$id" >"$BENCH_WORK/$version-download-$i.cmd"
  done
done
phase v1-download
v1_down=$GROWTH
phase v2-download
v2_down=$GROWTH

ratio() { python3 -c 'import sys; a, b = map(int, sys.argv[1:]); print(f"{a / max(b, 1):.1f}")' "$1" "$2"; }
echo "v1/v2 peak RSS growth: uploads $(ratio "$v1_up" "$v2_up") x ($v1_up vs $v2_up MiB), downloads $(ratio "$v1_down" "$v2_down") x ($v1_down vs $v2_down MiB)"
