#!/usr/bin/env bash
# deploy/local/redis.sh start|stop|status — a throw-away Redis for local runs.
#
# Runs redis-server daemonized on 127.0.0.1:${AMO_LOCAL_REDIS_PORT:-6379},
# without persistence, with its pid file and log in
# ${AMO_LOCAL_DIR:-/tmp/amo-local}/redis. `start` is idempotent: when the Redis
# of the pid file is alive and answers PING it only prints the URL again; a
# stale pid file (dead process, e.g. after a reboot) is removed and Redis is
# started fresh. `stop` acts on the pid file only. `status` exits 0 when Redis
# answers PING, 1 otherwise.
#
# Prints AMO_REDIS_URL=redis://127.0.0.1:PORT on success.
set -euo pipefail

BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
REDIS_DIR=$BASE_DIR/redis
PORT=${AMO_LOCAL_REDIS_PORT:-6379}
PIDFILE=$REDIS_DIR/redis.pid
LOGFILE=$REDIS_DIR/redis.log
START_TIMEOUT=${AMO_LOCAL_START_TIMEOUT:-30}
STOP_TIMEOUT=10

log() { echo "redis.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# True if the process exists and is not a zombie (a killed daemon whose
# parent has not reaped it yet still answers kill -0).
is_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# The pid in the pid file, if that process is alive and is a redis-server
# (guards against a pid reused after a reboot); empty otherwise. Checks the
# process name, not /proc/PID/exe: Debian's redis-server is a symlink to
# redis-check-rdb.
live_pid() {
  local pid comm
  [ -r "$PIDFILE" ] || return 0
  pid=$(tr -dc '0-9' <"$PIDFILE")
  [ -n "$pid" ] || return 0
  is_alive "$pid" || return 0
  comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
  if [ "$comm" = redis-server ]; then echo "$pid"; fi
}

ping_ok() {
  [ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = PONG ]
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

print_info() {
  echo "AMO_REDIS_URL=redis://127.0.0.1:$PORT"
}

show_log_tail() {
  if [ -r "$LOGFILE" ]; then
    log "last lines of $LOGFILE:"
    tail -n 20 "$LOGFILE" >&2
  fi
}

stop() {
  local pid deadline
  pid=$(live_pid)
  if [ -z "$pid" ]; then
    rm -f "$PIDFILE"
    log "not running"
    return 0
  fi
  log "stopping redis-server (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while is_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.1
  done
  if is_alive "$pid"; then
    log "pid $pid still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while is_alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if is_alive "$pid"; then die "pid $pid survived SIGKILL"; fi
  fi
  rm -f "$PIDFILE"
  log "stopped"
}

start() {
  local pid deadline
  mkdir -p "$REDIS_DIR"
  pid=$(live_pid)
  if [ -n "$pid" ]; then
    if ping_ok; then
      log "already running (pid $pid)"
      print_info
      return 0
    fi
    # Alive but not answering on this port (other port, or wedged): restart.
    log "pid $pid does not answer PING on port $PORT, restarting it"
    stop
  elif [ -e "$PIDFILE" ]; then
    log "removing stale pid file $PIDFILE"
    rm -f "$PIDFILE"
  fi

  if port_in_use "$PORT"; then
    die "127.0.0.1:$PORT is already in use by another process; set AMO_LOCAL_REDIS_PORT"
  fi

  : >"$LOGFILE"
  redis-server \
    --bind 127.0.0.1 \
    --port "$PORT" \
    --daemonize yes \
    --pidfile "$PIDFILE" \
    --logfile "$LOGFILE" \
    --dir "$REDIS_DIR" \
    --save '' \
    --appendonly no ||
    { show_log_tail; die "redis-server failed to start"; }

  deadline=$((SECONDS + START_TIMEOUT))
  until ping_ok; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      show_log_tail
      die "redis did not answer PING on 127.0.0.1:$PORT within ${START_TIMEOUT}s"
    fi
    sleep 0.1
  done
  pid=$(live_pid)
  [ -n "$pid" ] || { show_log_tail; die "redis answers but $PIDFILE names no live redis-server"; }
  log "started (pid $pid)"
  print_info
}

status() {
  local pid
  pid=$(live_pid)
  if ping_ok; then
    log "running (pid ${pid:-unknown, not ours}) on 127.0.0.1:$PORT"
    print_info
    return 0
  fi
  log "not answering on 127.0.0.1:$PORT${pid:+ (pid $pid alive)}"
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
