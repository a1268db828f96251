#!/usr/bin/env bash
# deploy/local/redis-cluster.sh start|stop|status — a throw-away Redis Cluster.
#
# Three masters, no replicas, on 127.0.0.1 ports
# ${AMO_LOCAL_CLUSTER_PORTS:-7001 7002 7003} (and their cluster bus ports,
# each + 10000), without persistence (appendonly no, save ""). Each node runs
# redis-server daemonized with its pid file, log and nodes.conf in
# ${AMO_LOCAL_DIR:-/tmp/amo-local}/redis-cluster/PORT. `start` installs Redis
# through deploy/local/install.sh when redis-server is missing, starts the
# nodes, joins them with `redis-cli --cluster create --cluster-replicas 0`, and
# polls until every node reports cluster_state:ok. It is idempotent: a healthy
# cluster is only reported again; a broken one (a node missing or restarted,
# slots not all assigned) is stopped, wiped and created anew (the data is
# throw-away). `stop` acts on the pid files only. `status` exits 0 when every
# node answers and reports cluster_state:ok, 1 otherwise.
#
# Prints, on success, the seed nodes for the service on a line
#   AMO_REDIS_URL=redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
CLUSTER_DIR=$BASE_DIR/redis-cluster
read -r -a PORTS <<<"${AMO_LOCAL_CLUSTER_PORTS:-7001 7002 7003}"
START_TIMEOUT=${AMO_LOCAL_START_TIMEOUT:-30}
STOP_TIMEOUT=10

log() { echo "redis-cluster.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "${#PORTS[@]}" -ge 3 ] || die "a cluster needs at least 3 masters; AMO_LOCAL_CLUSTER_PORTS has ${#PORTS[@]}"
for p in "${PORTS[@]}"; do
  if ! [[ $p =~ ^[0-9]+$ ]] || [ "$p" -lt 1 ] || [ "$p" -gt 55535 ]; then
    die "bad port '$p' (the bus port is port + 10000)"
  fi
done

node_dir() { echo "$CLUSTER_DIR/$1"; }
pidfile() { echo "$CLUSTER_DIR/$1/redis.pid"; }
logfile() { echo "$CLUSTER_DIR/$1/redis.log"; }

# True if the process exists and is not a zombie.
is_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# The pid in PORT's pid file if that process is a live redis-server; empty
# otherwise (guards against a pid reused after a reboot).
live_pid() {
  local pid comm f
  f=$(pidfile "$1")
  [ -r "$f" ] || return 0
  pid=$(tr -dc '0-9' <"$f")
  [ -n "$pid" ] || return 0
  is_alive "$pid" || return 0
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [ "$comm" = redis-server ]; then echo "$pid"; fi
}

cli() { timeout 5 redis-cli -h 127.0.0.1 -p "$@"; }
ping_ok() { [ "$(cli "$1" ping 2>/dev/null)" = PONG ]; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A field of CLUSTER INFO on PORT (empty when the node does not answer).
cluster_field() {
  cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

# True when every node answers, knows all nodes, and says cluster_state:ok
# with all 16384 slots assigned.
cluster_ok() {
  local p
  for p in "${PORTS[@]}"; do
    [ "$(cluster_field "$p" cluster_state)" = ok ] || return 1
    [ "$(cluster_field "$p" cluster_slots_assigned)" = 16384 ] || return 1
    [ "$(cluster_field "$p" cluster_known_nodes)" = "${#PORTS[@]}" ] || return 1
  done
}

# True when every node is fresh: knows only itself and holds no slot.
all_fresh() {
  local p
  for p in "${PORTS[@]}"; do
    [ "$(cluster_field "$p" cluster_known_nodes)" = 1 ] || return 1
    [ "$(cluster_field "$p" cluster_slots_assigned)" = 0 ] || return 1
  done
}

print_info() {
  local urls=() p
  for p in "${PORTS[@]}"; do urls+=("redis://127.0.0.1:$p"); done
  local IFS=,
  echo "AMO_REDIS_URL=${urls[*]}"
}

show_log_tail() {
  local f
  f=$(logfile "$1")
  if [ -r "$f" ]; then
    log "last lines of $f:"
    tail -n 20 "$f" >&2
  fi
}

stop_node() {
  local port=$1 pid deadline
  pid=$(live_pid "$port")
  if [ -z "$pid" ]; then
    rm -f "$(pidfile "$port")"
    return 0
  fi
  log "stopping node $port (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while is_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  if is_alive "$pid"; then
    log "pid $pid still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while is_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if is_alive "$pid"; then die "pid $pid survived SIGKILL"; fi
  fi
  rm -f "$(pidfile "$port")"
}

# Stops every node of ours and forgets the cluster (nodes.conf), so that the
# next start creates it anew.
stop_all() {
  local p
  for p in "${PORTS[@]}"; do
    stop_node "$p"
    rm -f "$(node_dir "$p")/nodes.conf"
  done
}

start_node() {
  local port=$1 dir
  dir=$(node_dir "$port")
  mkdir -p "$dir"
  if port_in_use "$port"; then
    die "127.0.0.1:$port is in use by another process; set AMO_LOCAL_CLUSTER_PORTS"
  fi
  if port_in_use $((port + 10000)); then
    die "cluster bus port 127.0.0.1:$((port + 10000)) is in use; set AMO_LOCAL_CLUSTER_PORTS"
  fi
  # A node started anew joins the cluster afresh: no stale membership.
  rm -f "$dir/nodes.conf" "$(pidfile "$port")"
  : >"$(logfile "$port")"
  redis-server \
    --bind 127.0.0.1 \
    --port "$port" \
    --cluster-enabled yes \
    --cluster-config-file "$dir/nodes.conf" \
    --cluster-node-timeout 5000 \
    --daemonize yes \
    --pidfile "$(pidfile "$port")" \
    --logfile "$(logfile "$port")" \
    --dir "$dir" \
    --save '' \
    --appendonly no ||
    { show_log_tail "$port"; die "redis-server failed to start on port $port"; }
}

wait_until() {
  local what=$1 deadline
  shift
  deadline=$((SECONDS + START_TIMEOUT))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
  log "$what"
}

nodes_answer() {
  local p
  for p in "${PORTS[@]}"; do ping_ok "$p" || return 1; done
}

start() {
  local p pid started=0
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    bash "$HERE/install.sh" >&2
  fi
  mkdir -p "$CLUSTER_DIR"

  if nodes_answer && cluster_ok; then
    for p in "${PORTS[@]}"; do
      [ -n "$(live_pid "$p")" ] || die "port $p answers but is not our redis-server (no live pid in $(pidfile "$p"))"
    done
    log "already running, cluster_state:ok"
    print_info
    return 0
  fi

  for p in "${PORTS[@]}"; do
    pid=$(live_pid "$p")
    if [ -n "$pid" ] && ping_ok "$p"; then continue; fi
    if [ -n "$pid" ]; then stop_node "$p"; fi
    start_node "$p"
    started=$((started + 1))
  done
  wait_until "all ${#PORTS[@]} nodes answer PING" nodes_answer ||
    { for p in "${PORTS[@]}"; do show_log_tail "$p"; done; die "nodes did not answer within ${START_TIMEOUT}s"; }

  if ! cluster_ok; then
    if ! all_fresh; then
      log "cluster in a broken state (a node restarted or slots unassigned): recreating it"
      stop_all
      for p in "${PORTS[@]}"; do start_node "$p"; done
      wait_until "all ${#PORTS[@]} nodes answer PING" nodes_answer || die "nodes did not answer within ${START_TIMEOUT}s"
    fi
    local addrs=()
    for p in "${PORTS[@]}"; do addrs+=("127.0.0.1:$p"); done
    local out
    if ! out=$(timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes 2>&1); then
      echo "$out" >&2
      die "redis-cli --cluster create failed"
    fi
    wait_until "cluster_state:ok on every node" cluster_ok ||
      { redis-cli -p "${PORTS[0]}" cluster info >&2 || true; die "cluster_state not ok within ${START_TIMEOUT}s"; }
  fi
  for p in "${PORTS[@]}"; do
    [ -n "$(live_pid "$p")" ] || { show_log_tail "$p"; die "node $p answers but $(pidfile "$p") names no live redis-server"; }
  done
  log "started ($started node(s) started, ${#PORTS[@]} masters)"
  print_info
}

stop() {
  local p any=0
  for p in "${PORTS[@]}"; do
    [ -n "$(live_pid "$p")" ] && any=1
  done
  stop_all
  if [ "$any" -eq 1 ]; then log "stopped"; else log "not running"; fi
}

status() {
  local p pids=()
  for p in "${PORTS[@]}"; do pids+=("$p:$(live_pid "$p")"); done
  if nodes_answer && cluster_ok; then
    log "running, cluster_state:ok (port:pid ${pids[*]})"
    print_info
    return 0
  fi
  log "not healthy (port:pid ${pids[*]}; cluster_state on ${PORTS[0]}: $(cluster_field "${PORTS[0]}" cluster_state || true))"
  return 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
