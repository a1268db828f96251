#!/usr/bin/env bash
# deploy/local/redis-tls.sh start|stop|status — throw-away Redis that speaks
# TLS only, with an ACL user whose password is in a file: Redis as a managed
# service or a hardened deployment runs it. One server, and a 3-master Redis
# Cluster beside it.
#
# `start` makes, under ${AMO_LOCAL_DIR:-/tmp/amo-local}/redis-tls, a throw-away
# CA, a server certificate for 127.0.0.1 and localhost, a client certificate
# (the servers require one: mutual TLS; the cluster's nodes present it to
# each other), a random password for the ACL user `amo`, limited to the
# service's keys and commands, and one for `admin` (which makes the
# cluster); the `default` user is off. Then it runs Debian's redis-server,
# TLS only (no plain port), `maxmemory-policy noeviction`, no persistence:
# one server on 127.0.0.1:${AMO_LOCAL_REDIS_TLS_PORT:-7440}, and a cluster on
# the three ports from ${AMO_LOCAL_REDIS_TLS_CLUSTER_PORT:-7444}. It writes
# the service's settings to `env` in that directory (source it; the
# cluster's URLs are AMO_TEST_REDIS_CLUSTER_URL, which the cluster suite
# reads) and prints them. Installs redis-server (deploy/local/install.sh)
# and openssl when they are missing. `start` is idempotent: when every
# server of the pid files answers, they are left running. `stop` acts on
# the pid files only. `status` exits 0 when every server answers over TLS.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
DIR=$BASE_DIR/redis-tls
PORT=${AMO_LOCAL_REDIS_TLS_PORT:-7440}
CLUSTER_PORT=${AMO_LOCAL_REDIS_TLS_CLUSTER_PORT:-7444}
CLUSTER_PORTS="$CLUSTER_PORT $((CLUSTER_PORT + 1)) $((CLUSTER_PORT + 2))"
START_TIMEOUT=${AMO_LOCAL_START_TIMEOUT:-30}
USER_NAME=amo
# The least the service needs (docs/operations.md, "What Redis must be").
ACL_RULES='~amo:* resetchannels -@all +@read +@write +@scripting +@connection -@dangerous +info +config|get +cluster|slots +cluster|shards'

log() { echo "redis-tls.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=deploy/local/proc.sh
. "$HERE/proc.sh"

# The pid of port $1's pid file, if it is a live redis-server; else empty.
live_pid() { live_redis_pid "$DIR/$1/redis.pid"; }

# redis-cli over TLS as user $1 (`amo` or `admin`), with the other arguments.
cli_as() {
  local user=$1 file=password
  shift
  [ "$user" = admin ] && file=admin-password
  REDISCLI_AUTH=$(cat "$DIR/$file") timeout 60 redis-cli --tls --cacert "$DIR/ca.pem" \
    --cert "$DIR/client.pem" --key "$DIR/client.key" --user "$user" --no-auth-warning "$@"
}

ping_ok() { [ "$(cli_as "$USER_NAME" -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

cluster_ok() {
  cli_as admin -h 127.0.0.1 -p "$CLUSTER_PORT" cluster info 2>/dev/null | grep -q 'cluster_state:ok'
}

install_missing() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 ||
    bash "$HERE/install.sh" >&2
  if ! command -v openssl >/dev/null 2>&1; then
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq openssl >&2
  fi
}

# A CA, a server and a client certificate signed by it, and the passwords:
# made once per directory (a restart keeps them, so running services keep
# trusting the servers).
make_material() {
  [ -s "$DIR/client.key" ] && [ -s "$DIR/admin-password" ] && return 0
  log "making a throw-away CA, server and client certificates, and passwords"
  (
    cd "$DIR"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=amo-local test CA" \
      -keyout ca.key -out ca.pem 2>/dev/null
    for who in server client; do
      openssl req -newkey rsa:2048 -nodes -subj "/CN=amo-local redis $who" \
        -keyout "$who.key" -out "$who.csr" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=%s\n' \
        "$([ "$who" = server ] && echo serverAuth || echo clientAuth)" >"$who.ext"
      openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 30 -extfile "$who.ext" -out "$who.pem" 2>/dev/null
      rm -f "$who.csr" "$who.ext"
    done
    openssl rand -hex 24 | tr -d '\n' >password
    openssl rand -hex 24 | tr -d '\n' >admin-password
    # The ACL file holds the passwords' SHA-256 only.
    printf 'user default off\nuser %s on #%s %s\nuser admin on #%s ~* &* +@all\n' \
      "$USER_NAME" "$(sha256sum <password | cut -d' ' -f1)" "$ACL_RULES" \
      "$(sha256sum <admin-password | cut -d' ' -f1)" >users.acl
  )
}

write_env() {
  local nodes
  nodes=$(for p in $CLUSTER_PORTS; do printf 'rediss://127.0.0.1:%s,' "$p"; done)
  {
    echo "# Written by deploy/local/redis-tls.sh; source it after /tmp/amo-local/env."
    echo "export AMO_REDIS_URL=rediss://127.0.0.1:$PORT"
    echo "export AMO_TEST_REDIS_CLUSTER_URL=${nodes%,}"
    echo "export AMO_REDIS_USERNAME=$USER_NAME"
    echo "export AMO_REDIS_PASSWORD_FILE=$DIR/password"
    echo "export AMO_REDIS_CA_FILE=$DIR/ca.pem"
    echo "export AMO_REDIS_CLIENT_CERT_FILE=$DIR/client.pem"
    echo "export AMO_REDIS_CLIENT_KEY_FILE=$DIR/client.key"
  } >"$DIR/env"
  cat "$DIR/env"
}

stop_port() {
  local pid
  pid=$(live_pid "$1")
  rm -f "$DIR/$1/redis.pid"
  [ -n "$pid" ] || return 0
  log "stopping redis-server on $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do is_alive "$pid" || break; sleep 0.1; done
  if is_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
}

stop() {
  local p
  for p in $PORT $CLUSTER_PORTS; do stop_port "$p"; done
  log "stopped"
}

# Starts redis-server on port $1, TLS only, with the other arguments.
start_port() {
  local port=$1
  shift
  stop_port "$port"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is in use; set AMO_LOCAL_REDIS_TLS_PORT or AMO_LOCAL_REDIS_TLS_CLUSTER_PORT"
  fi
  mkdir -p "$DIR/$port"
  rm -f "$DIR/$port/nodes.conf"
  : >"$DIR/$port/redis.log"
  redis-server \
    --bind 127.0.0.1 \
    --port 0 \
    --tls-port "$port" \
    --tls-cert-file "$DIR/server.pem" \
    --tls-key-file "$DIR/server.key" \
    --tls-client-cert-file "$DIR/client.pem" \
    --tls-client-key-file "$DIR/client.key" \
    --tls-ca-cert-file "$DIR/ca.pem" \
    --tls-auth-clients yes \
    --aclfile "$DIR/users.acl" \
    --maxmemory-policy noeviction \
    --daemonize yes \
    --pidfile "$DIR/$port/redis.pid" \
    --logfile "$DIR/$port/redis.log" \
    --dir "$DIR/$port" \
    --save '' \
    --appendonly no \
    "$@" ||
    { tail -n 20 "$DIR/$port/redis.log" >&2; die "redis-server failed to start on $port"; }
  await_ping "$port" "redis (TLS)"
}

all_up() {
  local p
  for p in $PORT $CLUSTER_PORTS; do
    [ -n "$(live_pid "$p")" ] && ping_ok "$p" || return 1
  done
  cluster_ok
}

start() {
  install_missing
  mkdir -p "$DIR"
  make_material
  if all_up; then
    log "already running"
    write_env
    return 0
  fi
  start_port "$PORT"
  local p nodes=()
  for p in $CLUSTER_PORTS; do
    start_port "$p" --cluster-enabled yes --tls-cluster yes --cluster-config-file "$DIR/$p/nodes.conf"
    nodes+=("127.0.0.1:$p")
  done
  cli_as admin --cluster create "${nodes[@]}" --cluster-yes >"$DIR/cluster-create.log" 2>&1 ||
    { cat "$DIR/cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
  local deadline=$((SECONDS + START_TIMEOUT))
  until cluster_ok; do
    [ "$SECONDS" -lt "$deadline" ] || die "the TLS cluster is not ok within ${START_TIMEOUT}s"
    sleep 0.1
  done
  log "started, TLS only: one server on 127.0.0.1:$PORT, a cluster on ${nodes[*]}"
  write_env
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) all_up && log "running: 127.0.0.1:$PORT, and the cluster from $CLUSTER_PORT" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
