#!/usr/bin/env bash
# deploy/local/redis-sentinel.sh start|stop|status — throw-away Redis behind
# Sentinel: a master, one replica and three sentinels watching them, as a
# highly available deployment runs it (docs/operations.md, "Redis behind
# Sentinel").
#
# `start` runs, under ${AMO_LOCAL_DIR:-/tmp/amo-local}/redis-sentinel and on
# 127.0.0.1 from port ${AMO_LOCAL_REDIS_SENTINEL_PORT:-7800}: Debian's
# redis-server as the master (the base port) and its replica (base + 1),
# both `maxmemory-policy noeviction`, no persistence, and a random password
# (in the file `password`; the replica and the sentinels log in with it);
# then three redis-sentinels (base + 10, + 11, + 12) that watch the master
# under the name `amo` (quorum 2). It waits until every sentinel names that
# master, sees the replica and the other sentinels, and finds the quorum
# reachable (SENTINEL CKQUORUM). It writes the service's settings to `env`
# in that directory (source it after the local stack's env) and prints
# them: AMO_REDIS_SENTINELS, AMO_REDIS_SENTINEL_MASTER, the password file,
# and an AMO_REDIS_URL that gives only the scheme and database (its host,
# which never resolves, is the sentinels' to say). Installs redis-server
# (deploy/local/install.sh) and redis-sentinel (Debian) when missing.
# `start` is idempotent: when every process of the pid files is alive and
# the sentinels agree, they are left running. `stop` acts on the pid files
# only, so it also stops what a failed `start` left. `status` exits 0 when
# every process answers and the sentinels agree.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
DIR=$BASE_DIR/redis-sentinel
BASE_PORT=${AMO_LOCAL_REDIS_SENTINEL_PORT:-7800}
MASTER_PORT=$BASE_PORT
REPLICA_PORT=$((BASE_PORT + 1))
SENTINEL_PORTS="$((BASE_PORT + 10)) $((BASE_PORT + 11)) $((BASE_PORT + 12))"
MASTER_NAME=amo
START_TIMEOUT=${AMO_LOCAL_START_TIMEOUT:-30}
# Sentinels find the replica through the master's INFO (every 10 s) and each
# other through hello messages (every 2 s): allow more than one round.
AGREE_TIMEOUT=${AMO_LOCAL_SENTINEL_TIMEOUT:-60}

log() { echo "redis-sentinel.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# shellcheck source=deploy/local/proc.sh
. "$HERE/proc.sh"

# The pid of port $1's pid file, if it is a live redis-server or
# redis-sentinel; else empty.
live_pid() {
  local pid
  pid=$(live_redis_pid "$DIR/$1/redis.pid")
  if [ -z "$pid" ] && [ -r "$DIR/$1/redis.pid" ]; then
    pid=$(tr -dc '0-9' <"$DIR/$1/redis.pid")
    if [ -n "$pid" ] && is_alive "$pid" &&
      [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-sentinel ]; then
      echo "$pid"
    fi
    return 0
  fi
  echo "$pid"
}

# redis-cli on port $1 with the other arguments; the nodes with the
# password, the sentinels without (they ask for none).
cli() {
  local port=$1
  shift
  if [ "$port" = "$MASTER_PORT" ] || [ "$port" = "$REPLICA_PORT" ]; then
    REDISCLI_AUTH=$(cat "$DIR/password") timeout 10 redis-cli --no-auth-warning \
      -h 127.0.0.1 -p "$port" "$@"
  else
    timeout 10 redis-cli -h 127.0.0.1 -p "$port" "$@"
  fi
}

ping_ok() { [ "$(cli "$1" ping 2>/dev/null)" = PONG ]; }

install_missing() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 ||
    bash "$HERE/install.sh" >&2
  command -v redis-sentinel >/dev/null 2>&1 && return 0
  local sudo=() policy=/usr/sbin/policy-rc.d created=0
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  # As install.sh: the package must not start a system sentinel on 26379.
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    created=1
  fi
  local rc=0
  {
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q install -y \
        --no-install-recommends redis-sentinel
  } >&2 || rc=$?
  [ "$created" -eq 0 ] || "${sudo[@]}" rm -f "$policy"
  [ "$rc" -eq 0 ] || die "installing redis-sentinel failed"
  command -v redis-sentinel >/dev/null 2>&1 || die "no redis-sentinel after installing it"
}

# The password, made once per directory (a restart keeps it).
make_password() {
  [ -s "$DIR/password" ] && return 0
  (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$DIR/password")
}

write_env() {
  local list
  list=$(for p in $SENTINEL_PORTS; do printf '127.0.0.1:%s,' "$p"; done)
  {
    echo "# Written by deploy/local/redis-sentinel.sh; source it after /tmp/amo-local/env."
    echo "# With sentinels, AMO_REDIS_URL gives only the scheme and database: its host"
    echo "# (.invalid never resolves) is the sentinels' to say."
    echo "export AMO_REDIS_SENTINELS=${list%,}"
    echo "export AMO_REDIS_SENTINEL_MASTER=$MASTER_NAME"
    echo "export AMO_REDIS_URL=redis://sentinel-master.invalid/0"
    echo "export AMO_REDIS_PASSWORD_FILE=$DIR/password"
  } >"$DIR/env"
  cat "$DIR/env"
}

stop_port() {
  local pid
  pid=$(live_pid "$1")
  rm -f "$DIR/$1/redis.pid"
  [ -n "$pid" ] || return 0
  log "stopping $(cat "/proc/$pid/comm" 2>/dev/null) on $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do is_alive "$pid" || break; sleep 0.1; done
  if is_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
}

stop() {
  local p
  # The sentinels first: none promotes the replica while the master stops.
  for p in $SENTINEL_PORTS $REPLICA_PORT $MASTER_PORT; do stop_port "$p"; done
  log "stopped"
}

# Writes port $1's config (the common lines, then $2) and starts $3
# (redis-server or redis-sentinel) on it; waits for PING.
start_port() {
  local port=$1 extra=$2 program=$3
  stop_port "$port"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port is in use; set AMO_LOCAL_REDIS_SENTINEL_PORT"
  fi
  mkdir -p "$DIR/$port"
  : >"$DIR/$port/redis.log"
  # A fresh file each time: a sentinel rewrites its own with what it learnt.
  (
    umask 077
    cat >"$DIR/$port/redis.conf" <<EOF
bind 127.0.0.1
port $port
daemonize yes
pidfile $DIR/$port/redis.pid
logfile $DIR/$port/redis.log
dir $DIR/$port
$extra
EOF
  )
  "$program" "$DIR/$port/redis.conf" ||
    { tail -n 20 "$DIR/$port/redis.log" >&2; die "$program failed to start on $port"; }
  await_ping "$port" "$program"
}

# True when the replica is in sync, and every sentinel names the master,
# lists the replica as up, knows the two other sentinels and finds the
# quorum reachable.
agreed() {
  cli "$REPLICA_PORT" info replication 2>/dev/null | grep -q '^master_link_status:up' || return 1
  local p addr replicas
  for p in $SENTINEL_PORTS; do
    addr=$(cli "$p" sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | tr '\n' ' ')
    [ "$addr" = "127.0.0.1 $MASTER_PORT " ] || return 1
    replicas=$(cli "$p" sentinel replicas "$MASTER_NAME" 2>/dev/null) || return 1
    # The fields come one a line: name, then its value.
    echo "$replicas" | grep -qx "127.0.0.1:$REPLICA_PORT" || return 1
    echo "$replicas" | grep -A1 -x flags | grep -qx slave || return 1
    [ "$(cli "$p" sentinel sentinels "$MASTER_NAME" 2>/dev/null | grep -cx name)" -ge 2 ] ||
      return 1
    cli "$p" sentinel ckquorum "$MASTER_NAME" 2>/dev/null | grep -q '^OK' || return 1
  done
}

all_up() {
  local p
  for p in $MASTER_PORT $REPLICA_PORT $SENTINEL_PORTS; do
    [ -n "$(live_pid "$p")" ] && ping_ok "$p" || return 1
  done
  agreed
}

start() {
  install_missing
  mkdir -p "$DIR"
  make_password
  if all_up; then
    log "already running"
    write_env
    return 0
  fi
  # Whatever ran before (a half start, a failed-over pair): from scratch.
  stop
  local password node
  password=$(cat "$DIR/password")
  node="maxmemory-policy noeviction
save \"\"
appendonly no
repl-diskless-sync-delay 0
requirepass $password
masterauth $password"
  start_port "$MASTER_PORT" "$node" redis-server
  start_port "$REPLICA_PORT" "$node
replicaof 127.0.0.1 $MASTER_PORT" redis-server
  local p
  for p in $SENTINEL_PORTS; do
    start_port "$p" "sentinel monitor $MASTER_NAME 127.0.0.1 $MASTER_PORT 2
sentinel auth-pass $MASTER_NAME $password
sentinel down-after-milliseconds $MASTER_NAME 5000
sentinel failover-timeout $MASTER_NAME 60000
sentinel parallel-syncs $MASTER_NAME 1" redis-sentinel
  done
  local deadline=$((SECONDS + AGREE_TIMEOUT))
  until agreed; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      for p in $SENTINEL_PORTS; do tail -n 5 "$DIR/$p/redis.log" >&2; done
      die "the sentinels did not agree on the master and its replica within ${AGREE_TIMEOUT}s"
    fi
    sleep 0.2
  done
  log "started: master 127.0.0.1:$MASTER_PORT, replica :$REPLICA_PORT, sentinels on ${SENTINEL_PORTS// /, } (master name $MASTER_NAME)"
  write_env
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) all_up && log "running: master $MASTER_PORT, replica $REPLICA_PORT, sentinels $SENTINEL_PORTS" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
