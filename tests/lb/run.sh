#!/usr/bin/env bash
# tests/lb/run.sh — the service behind a load balancer (issue 5).
#
# Starts Debian's nginx with deploy/nginx's configuration (rendered by
# deploy/nginx/render.sh) in front of three replicas of amo-storage on free
# loopback ports, on the real Redis and Ceph RGW of deploy/local/up.sh
# (/tmp/amo-local/env) under a fresh AMO_S3_PREFIX=lb-test-<random>/. Then
# tests/lb/workload.py runs several clients through nginx (the amo-storage
# CLI: uploads of 1 KiB to 64 MiB, inspects, downloads, removes), kills one
# replica with SIGKILL while an upload streams into it, and checks what the
# kill left behind (see workload.py's docstring). Prints a summary line;
# exits non-zero on any violation. Stops every process it started and
# deletes its objects on exit; bounded to a few minutes.
#
# Needs: deploy/local/up.sh has run; python3 (stdlib only); nginx-light
# (installed by deploy/nginx/check.sh when missing, as root).
# Environment: AMO_LB_BIN (a built amo-storage; default: cargo build --bin
# amo-storage, debug profile), AMO_LB_CLIENTS (default 4), AMO_LB_SEED,
# AMO_LB_KEEP=1 keeps the work directory (logs) for inspection.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
REPLICAS=3
log() { echo "lb: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -r "$BASE_DIR/env" ] || die "no $BASE_DIR/env: run deploy/local/up.sh first"
# shellcheck source=/dev/null
. "$BASE_DIR/env"
if [ -z "${AMO_REDIS_URL:-}" ] || [ -z "${AMO_S3_ENDPOINT:-}" ]; then
  die "$BASE_DIR/env names no Redis or S3"
fi

bin=${AMO_LB_BIN:-} clients=${AMO_LB_CLIENTS:-4} seed=${AMO_LB_SEED:-} keep=${AMO_LB_KEEP:-}
# Another workload (tests/tus/run.sh: a tus client) and its Python.
workload=${AMO_LB_WORKLOAD:-$HERE/workload.py} python=${AMO_LB_PYTHON:-python3}
# Not passed on: the replicas would warn about unknown AMO_ variables.
unset AMO_LB_BIN AMO_LB_CLIENTS AMO_LB_SEED AMO_LB_KEEP AMO_LB_WORKLOAD AMO_LB_PYTHON
if [ -z "$bin" ]; then
  (cd "$ROOT" && cargo build --locked --quiet --bin amo-storage)
  bin=${CARGO_TARGET_DIR:-$ROOT/target}/debug/amo-storage
fi
[ -x "$bin" ] || die "no executable $bin"

# nginx-light installed if missing, the committed config checked, and the
# live proxy in front of one replica of $bin.
AMO_SERVICE_BIN=$bin bash "$ROOT/deploy/nginx/check.sh" >&2

mkdir -p "$BASE_DIR"
work=$(mktemp -d "$BASE_DIR/lb.XXXXXX")
prefix="lb-test-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')/"
export AMO_S3_PREFIX=$prefix
# The uploads of a killed replica are swept once S3 saw no part of them for
# this long (default 1 h): within the workload's wait for the sweep.
export AMO_SWEEP_GRACE_SECS=${AMO_SWEEP_GRACE_SECS:-10}
replica_pids=()
nginx_pid=""
finished=0

# shellcheck disable=SC2317  # only called by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
    kill -QUIT "$nginx_pid" 2>/dev/null || true
  fi
  local pid
  for pid in "${replica_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 100); do
    local alive=0
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then alive=1; fi
    for pid in "${replica_pids[@]}"; do
      # A dead child stays a zombie until waited for: reap it.
      if ! kill -0 "$pid" 2>/dev/null || [ "$(ps -o stat= -p "$pid" 2>/dev/null)" = Z ]; then
        wait "$pid" 2>/dev/null || true
      else
        alive=1
      fi
    done
    [ "$alive" -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${replica_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ -n "$nginx_pid" ]; then kill -KILL "$nginx_pid" 2>/dev/null || true; fi
  # The workload deletes its objects itself; this covers an interrupted one.
  if [ "$finished" -eq 0 ]; then
    "$python" -B "$workload" --cleanup-only --endpoint unused --bin "$bin" \
      --work "$work" --access-log unused --error-log unused >&2 || log "WARNING: could not clean up $prefix"
  fi
  if [ -n "$keep" ]; then
    log "work directory kept: $work"
  elif [ "$rc" -ne 0 ]; then
    rm -f "$work"/*.bin "$work"/dl-*
    log "logs kept in $work"
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Three replicas. Each binds port 0 and logs (JSON) the address it got.
replica_addrs=()
for i in $(seq 1 "$REPLICAS"); do
  AMO_LOG_FORMAT=json AMO_LOG=info "$bin" 127.0.0.1:0 >"$work/replica-$i.log" 2>&1 &
  replica_pids+=("$!")
done
for i in $(seq 1 "$REPLICAS"); do
  pid=${replica_pids[$((i - 1))]} addr=""
  for _ in $(seq 300); do
    addr=$(grep 'amo-storage listening' "$work/replica-$i.log" | grep -o '127\.0\.0\.1:[0-9]*' | head -n 1 || true)
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/replica-$i.log" >&2; die "replica $i exited at start"; }
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$work/replica-$i.log" >&2; die "replica $i did not listen within 30 s"; }
  replica_addrs+=("$addr")
done
for addr in "${replica_addrs[@]}"; do
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/readyz" || true)" = 200 ] && break
    sleep 0.1
  done
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$addr/readyz" || true)" = 200 ] ||
    die "replica $addr not ready within 30 s: $(curl -s "http://$addr/readyz" || true)"
done
log "replicas ${replica_addrs[*]} (pids ${replica_pids[*]}), prefix $prefix"

# nginx with the project's configuration in front of them (a port taken
# between free_port and nginx's bind: try another).
ngx=$work/nginx
for _ in 1 2 3; do
  port=$(free_port)
  "$ROOT/deploy/nginx/render.sh" "$ngx" "127.0.0.1:$port" "${replica_addrs[@]}" >"$work/nginx.conf"
  if nginx -p "$ngx" -e "$ngx/error.log" -c "$work/nginx.conf" 2>"$work/nginx-start.log"; then
    for _ in $(seq 100); do
      [ -s "$ngx/nginx.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
      sleep 0.1
    done
    nginx_pid=$(cat "$ngx/nginx.pid" 2>/dev/null || true)
    break
  fi
  grep -q 'Address already in use' "$work/nginx-start.log" || { cat "$work/nginx-start.log" >&2; die "nginx did not start"; }
done
[ -n "$nginx_pid" ] || die "nginx did not start: $(cat "$work/nginx-start.log")"
log "nginx $(nginx -v 2>&1 | sed 's/.*: //') on 127.0.0.1:$port (master pid $nginx_pid)"

# The workload; it kills the replica that carries a chosen upload.
args=(--endpoint "http://127.0.0.1:$port" --bin "$bin" --work "$work"
  --access-log "$ngx/access.log" --error-log "$ngx/error.log")
for i in $(seq 0 $((REPLICAS - 1))); do
  args+=(--replica-addr "${replica_addrs[$i]}" --replica-pid "${replica_pids[$i]}"
    --replica-log "$work/replica-$((i + 1)).log")
done
args+=(--clients "$clients")
if [ -n "$seed" ]; then args+=(--seed "$seed"); fi
status=0
timeout -s INT -k 20 360 "$python" -B "$workload" "${args[@]}" || status=$?
finished=1
if [ "$status" -eq 0 ]; then
  log "OK"
else
  log "FAILED (status $status); nginx errors: $(grep -c '\[error\]' "$ngx/error.log" || true)"
fi
exit "$status"
