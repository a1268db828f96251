# deploy/local/proc.sh — sourced by deploy/local scripts: process checks.

# True if process $1 exists and is not a zombie (a killed daemon whose
# parent has not reaped it yet still answers kill -0).
is_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# The pid in pid file $1, if that process is alive and is a redis-server
# (guards against a pid reused after a reboot); empty otherwise.
live_redis_pid() {
  local pid
  [ -r "$1" ] || return 0
  pid=$(tr -dc '0-9' <"$1")
  [ -n "$pid" ] && is_alive "$pid" || return 0
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ]; then echo "$pid"; fi
}

# await_ping PORT WHAT: waits up to $START_TIMEOUT seconds until the
# calling script's ping_ok PORT succeeds; on time-out prints the tail of
# $DIR/PORT/redis.log and dies naming WHAT.
await_ping() {
  local port=$1 what=$2 deadline=$((SECONDS + START_TIMEOUT))
  until ping_ok "$port"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$DIR/$port/redis.log" >&2
      die "$what did not answer PING on 127.0.0.1:$port within ${START_TIMEOUT}s"
    fi
    sleep 0.1
  done
}
