# bench/lib.sh — helpers shared by bench/token-path.sh and bench/soak.sh.
# Sourced, not run. Everything it starts listens on 127.0.0.1 only and is
# stopped by bench_cleanup (the scripts call it from their EXIT trap).
# shellcheck shell=bash

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
BENCH_PIDS=()
BENCH_NGINX_PID=""
BENCH_WORK=""
BENCH_LOAD=""
BENCH_BIN=""

bench_log() { echo "${BENCH_NAME:-bench}: $*" >&2; }
bench_die() { bench_log "ERROR: $*"; exit 1; }

# Starts the local Redis and Ceph RGW if they are not up (idempotent), and
# loads their settings.
bench_backends() {
  bash "$BENCH_ROOT/deploy/local/up.sh" >/dev/null
  # shellcheck disable=SC1091
  . "$BENCH_BASE_DIR/env"
  mkdir -p "$BENCH_BASE_DIR"
  BENCH_WORK=$(mktemp -d "$BENCH_BASE_DIR/${BENCH_NAME:-bench}.XXXXXX")
}

# Installs a Debian package when COMMAND is missing.
bench_need() {
  local command=$1 package=$2
  command -v "$command" >/dev/null 2>&1 && return 0
  bench_log "$command missing, installing $package with apt"
  [ "$(id -u)" -eq 0 ] || bench_die "need root to install $package"
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    # exit 101: package scripts must not start system services (nginx on :80).
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -q update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "$package" >/dev/null
  if [ "$created" -eq 1 ]; then rm -f "$policy"; fi
  command -v "$command" >/dev/null 2>&1 || bench_die "$command still missing after installing $package"
}

# Builds the release service binary (unless AMO_BENCH_BIN names another
# one to run); sets BENCH_BIN.
bench_build_service() {
  BENCH_BIN=${AMO_BENCH_BIN:-$BENCH_ROOT/target/release/amo-storage}
  if [ -z "${AMO_BENCH_BIN:-}" ]; then
    (cd "$BENCH_ROOT" && cargo build -q --release --bin amo-storage) || bench_die "release build failed"
  fi
  [ -x "$BENCH_BIN" ] || bench_die "no service binary at $BENCH_BIN"
}

# Builds benches/NAME.rs; prints its executable's path.
bench_build_bench() {
  local name=$1 path
  path=$(cd "$BENCH_ROOT" && cargo bench -q --bench "$name" --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$name")
  [ -x "$path" ] || bench_die "could not build benches/$name.rs"
  echo "$path"
}

# Builds the service binary (bench_build_service) and the load generator
# (benches/load.rs); sets BENCH_BIN and BENCH_LOAD to their executables.
bench_build() {
  bench_build_service
  BENCH_LOAD=$(bench_build_bench load)
}

# bench_proof BASE_URL OPERATION_JSON FILE: a token for OPERATION_JSON from
# BASE_URL, signed by bench/proof.py's account, as a curl config in FILE.
bench_proof() {
  python3 "$BENCH_ROOT/bench/proof.py" "$1" "$2" >"$3" || bench_die "no token for $2"
}

bench_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Polls URL until it answers 200, for at most 30 s.
bench_wait_200() {
  local url=$1
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# Starts one replica of the release binary on a free loopback port with the
# local backends' settings, abuse limits off, AMO_LOG=warn and the S3 prefix
# AMO_S3_PREFIX (default bench/). Sets REPLICA_PID and REPLICA_ADDR.
bench_start_replica() {
  local port log
  port=$(bench_free_port)
  log="$BENCH_WORK/replica-$port.log"
  AMO_S3_PREFIX=${AMO_S3_PREFIX:-bench/} \
    AMO_LOG=warn \
    AMO_AUTH_RATE_PER_IP=0 \
    AMO_MAX_OUTSTANDING_TOKENS=0 \
    AMO_TOKEN_TTL_SECS=${AMO_BENCH_TOKEN_TTL_SECS:-60} \
    "$BENCH_BIN" "127.0.0.1:$port" >"$log" 2>&1 &
  REPLICA_PID=$!
  BENCH_PIDS+=("$REPLICA_PID")
  REPLICA_ADDR=127.0.0.1:$port
  if ! bench_wait_200 "http://$REPLICA_ADDR/readyz"; then
    cat "$log" >&2
    bench_die "replica on $REPLICA_ADDR did not become ready"
  fi
  bench_log "replica pid $REPLICA_PID on $REPLICA_ADDR ready"
}

# Starts nginx with deploy/nginx's template in front of the given replicas
# (HOST:PORT...) on a free loopback port. Sets NGINX_ADDR.
bench_start_nginx() {
  bench_need nginx nginx-light
  local prefix=$BENCH_WORK/nginx port
  port=$(bench_free_port)
  "$BENCH_ROOT/deploy/nginx/render.sh" "$prefix" "127.0.0.1:$port" "$@" >"$BENCH_WORK/nginx.conf"
  nginx -q -p "$prefix" -e "$prefix/error.log" -c "$BENCH_WORK/nginx.conf" || bench_die "nginx did not start"
  for _ in $(seq 100); do
    [ -s "$prefix/nginx.pid" ] && break
    sleep 0.1
  done
  BENCH_NGINX_PID=$(cat "$prefix/nginx.pid" 2>/dev/null || true)
  [ -n "$BENCH_NGINX_PID" ] || bench_die "nginx wrote no pid file"
  NGINX_ADDR=127.0.0.1:$port
  bench_wait_200 "http://$NGINX_ADDR/readyz" || bench_die "nginx on $NGINX_ADDR does not proxy /readyz"
  bench_log "nginx pid $BENCH_NGINX_PID on $NGINX_ADDR in front of $*"
}

# Stops what the script started (by pid) and removes its work directory.
bench_cleanup() {
  if [ -n "$BENCH_NGINX_PID" ] && kill -0 "$BENCH_NGINX_PID" 2>/dev/null; then
    kill -QUIT "$BENCH_NGINX_PID" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$BENCH_NGINX_PID" 2>/dev/null || break; sleep 0.1; done
  fi
  local pid
  for pid in "${BENCH_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${BENCH_PIDS[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$BENCH_WORK" ] && [ -z "${AMO_BENCH_KEEP:-}" ]; then rm -rf "$BENCH_WORK"; fi
}
