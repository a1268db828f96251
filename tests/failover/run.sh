#!/usr/bin/env bash
# tests/failover/run.sh — exactly once across Redis failovers (issue 26).
#
# Starts, on loopback: a Redis master (:7451) and its replica (:7452), each
# behind tests/failover/lagproxy.py (:27451, :27452: the address each node
# announces, so the replication link runs through it and lags by
# AMO_FAILOVER_LAG_MS, default 500); three Sentinels (:27461-27463,
# down-after 1 s); two replicas of the service (:7471, :7472) that find the
# master through the Sentinels, on the real Ceph RGW of deploy/local/up.sh
# under a fresh AMO_S3_PREFIX. Then tests/failover/driver.py runs clients
# while it SIGKILLs the master AMO_FAILOVER_COUNT times (default 20) and
# checks the effects against the tokens (see its docstring). It runs the
# checker's self-test first. Prints the counts; exits non-zero on a
# violation. Stops everything it started and deletes its objects on exit.
#
#   --gate-off   runs the services with AMO_TOKEN_MARKERS=false and reports
#                the double effects instead of failing on them
#
# Needs: deploy/local/up.sh has run (its env and key file); python3 with
# cryptography (installed from Debian when missing), redis-server and
# redis-sentinel (installed from Debian when missing). Environment:
# AMO_FAILOVER_BIN (a built amo-storage; default: cargo build, debug),
# AMO_FAILOVER_COUNT, AMO_FAILOVER_LAG_MS, AMO_FAILOVER_CLIENTS,
# AMO_FAILOVER_KEEP=1 keeps the work directory (logs).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
log() { echo "failover: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

gate=true
case "${1:-}" in
  --gate-off) gate=false ;;
  "") ;;
  *) die "usage: $0 [--gate-off]" ;;
esac

[ -r "$BASE_DIR/env" ] || die "no $BASE_DIR/env: run deploy/local/up.sh first"
# shellcheck source=/dev/null
. "$BASE_DIR/env"
[ -n "${AMO_S3_ENDPOINT:-}" ] || die "$BASE_DIR/env names no S3 endpoint"

# shellcheck source=../lib/service.sh
. "$ROOT/tests/lib/service.sh"
command -v redis-sentinel >/dev/null || apt_install redis-sentinel
command -v redis-server >/dev/null || apt_install redis-server
python3 -c 'import cryptography' 2>/dev/null || apt_install python3-cryptography

bin=${AMO_FAILOVER_BIN:-} count=${AMO_FAILOVER_COUNT:-20} lag=${AMO_FAILOVER_LAG_MS:-500}
clients=${AMO_FAILOVER_CLIENTS:-8} keep=${AMO_FAILOVER_KEEP:-}
unset AMO_FAILOVER_BIN AMO_FAILOVER_COUNT AMO_FAILOVER_LAG_MS AMO_FAILOVER_CLIENTS AMO_FAILOVER_KEEP
if [ -z "$bin" ]; then
  (cd "$ROOT" && cargo build --locked --quiet --bin amo-storage)
  bin=${CARGO_TARGET_DIR:-$ROOT/target}/debug/amo-storage
fi
[ -x "$bin" ] || die "no executable $bin"

NODES=(7451 7452) SENTINELS=(27461 27462 27463) SERVICES=(7471 7472)
proxy_of() { echo $((20000 + $1)); }
for port in "${NODES[@]}" "${SENTINELS[@]}" "${SERVICES[@]}" 27451 27452; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is in use: is another failover run going on?"
  fi
done

mkdir -p "$BASE_DIR"
work=$(mktemp -d "$BASE_DIR/failover.XXXXXX")
prefix="failover-test-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')/"
pids=()

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$? pid file
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for file in "$work"/*.pid; do
    [ -r "$file" ] && kill -9 "$(cat "$file")" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  AMO_S3_PREFIX=$prefix python3 - "$AMO_KEY_FILE" <<'PY' || true
import json, os, sys
sys.path.insert(0, os.path.join(os.environ["ROOT"], "tests", "lb"))
import s3
keys = json.load(open(sys.argv[1]))
store = s3.S3(os.environ["AMO_S3_ENDPOINT"], os.environ.get("AMO_S3_BUCKET", "amo"), "us-east-1",
              keys["access_key"], keys["secret_key"])
prefix = os.environ["AMO_S3_PREFIX"]
for key in store.list_objects(prefix):
    store.delete(key)
for key, upload_id, _ in store.list_uploads(prefix):
    store.abort_upload(key, upload_id)
PY
  if [ -n "$keep" ] || [ "$rc" -ne 0 ]; then
    log "logs kept in $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
export ROOT
trap cleanup EXIT

python3 "$HERE/driver.py" --self-test

# The nodes: no persistence (a killed master comes back empty, the worst
# case), each announcing its proxy's port.
for port in "${NODES[@]}"; do
  mkdir -p "$work/redis-$port"
  cat >"$work/redis-$port.conf" <<EOF
port $port
bind 127.0.0.1
daemonize yes
pidfile $work/redis-$port.pid
logfile $work/redis-$port.log
dir $work/redis-$port
save ""
appendonly no
repl-diskless-sync-delay 0
maxmemory-policy noeviction
replica-announce-ip 127.0.0.1
replica-announce-port $(proxy_of "$port")
EOF
  python3 "$HERE/lagproxy.py" "$(proxy_of "$port")" "$port" "$lag" &
  pids+=($!)
done
redis-server "$work/redis-${NODES[0]}.conf"
redis-server "$work/redis-${NODES[1]}.conf" --replicaof 127.0.0.1 "$(proxy_of "${NODES[0]}")"
for port in "${SENTINELS[@]}"; do
  mkdir -p "$work/sentinel-$port"
  cat >"$work/sentinel-$port.conf" <<EOF
port $port
bind 127.0.0.1
daemonize yes
pidfile $work/sentinel-$port.pid
logfile $work/sentinel-$port.log
dir $work/sentinel-$port
sentinel monitor amo 127.0.0.1 $(proxy_of "${NODES[0]}") 2
sentinel down-after-milliseconds amo 1000
sentinel failover-timeout amo 4000
sentinel parallel-syncs amo 1
EOF
  redis-sentinel "$work/sentinel-$port.conf"
done

wait_until() { # what, seconds, command…
  local what=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what: not within the time allowed"
    sleep 0.1
  done
}
synced() { redis-cli -p "${NODES[1]}" INFO replication | grep -q 'master_link_status:up'; }
wait_until "the replica's first sync" 30 synced
sentinels_agree() {
  local port
  for port in "${SENTINELS[@]}"; do
    redis-cli -p "$port" SENTINEL replicas amo | grep -q "$(proxy_of "${NODES[1]}")" || return 1
    [ "$(redis-cli -p "$port" SENTINEL sentinels amo | grep -c '^name$')" -ge 2 ] || return 1
  done
}
wait_until "the sentinels finding the replica and each other" 60 sentinels_agree

sentinel_list=$(printf '127.0.0.1:%s,' "${SENTINELS[@]}")
for port in "${SERVICES[@]}"; do
  (
    unset AMO_REDIS_URL
    export AMO_REDIS_SENTINELS=${sentinel_list%,} AMO_REDIS_SENTINEL_MASTER=amo
    export AMO_S3_PREFIX=$prefix AMO_TOKEN_MARKERS=$gate AMO_CLIENT_SHARE_PERCENT=100
    exec "$bin" "127.0.0.1:$port"
  ) >"$work/service-$port.log" 2>&1 &
  pids+=($!)
done
for port in "${SERVICES[@]}"; do
  service_pid='' wait_ready "http://127.0.0.1:$port" 60
done

log "gate ${gate}: $count failovers, replication lag ${lag} ms, $clients clients"
set +e
python3 "$HERE/driver.py" \
  --replicas "http://127.0.0.1:${SERVICES[0]},http://127.0.0.1:${SERVICES[1]}" \
  --nodes "${NODES[0]}:$(proxy_of "${NODES[0]}"),${NODES[1]}:$(proxy_of "${NODES[1]}")" \
  --sentinels "$(IFS=,; echo "${SENTINELS[*]}")" --work "$work" \
  --failovers "$count" --clients "$clients" --storage-id "${AMO_STORAGE_ID:-00000001}" \
  --s3-endpoint "$AMO_S3_ENDPOINT" --bucket "${AMO_S3_BUCKET:-amo}" --key-file "$AMO_KEY_FILE" \
  --prefix "$prefix" $([ "$gate" = false ] && echo --expect-doubles)
rc=$?
set -e
exit "$rc"
