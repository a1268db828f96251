#!/usr/bin/env bash
# deploy/local/redis-tls.sh start|stop|status — a throw-away Redis that speaks
# TLS only, with an ACL user whose password is in a file: Redis as a managed
# service or a hardened cluster runs it.
#
# `start` makes, under ${AMO_LOCAL_DIR:-/tmp/amo-local}/redis-tls, a throw-away
# CA, a server certificate for 127.0.0.1 and localhost, a client certificate
# (the server requires one: mutual TLS), and a random password for the ACL
# user `amo`, limited to the service's keys and commands (the `default` user
# is off); then runs Debian's redis-server
# with TLS only (no plain port) on 127.0.0.1:${AMO_LOCAL_REDIS_TLS_PORT:-7440},
# `maxmemory-policy noeviction`, no persistence. It writes the service's
# settings to `env` in that directory (source it) and prints them. Installs
# redis-server (deploy/local/install.sh) and openssl when they are missing.
# `start` is idempotent: a live server of the pid file that answers is left
# running. `stop` acts on the pid file only. `status` exits 0 when the server
# answers PING over TLS as `amo`.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
DIR=$BASE_DIR/redis-tls
PORT=${AMO_LOCAL_REDIS_TLS_PORT:-7440}
PIDFILE=$DIR/redis.pid
LOGFILE=$DIR/redis.log
START_TIMEOUT=${AMO_LOCAL_START_TIMEOUT:-30}
USER_NAME=amo
ACL_RULES='~amo:* resetchannels -@all +@read +@write +@scripting +@connection -@dangerous +info +config|get'

log() { echo "redis-tls.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

is_alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

# The pid of the pid file, if it is a live redis-server; empty otherwise.
live_pid() {
  local pid
  [ -r "$PIDFILE" ] || return 0
  pid=$(tr -dc '0-9' <"$PIDFILE")
  [ -n "$pid" ] && is_alive "$pid" || return 0
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = redis-server ]; then echo "$pid"; fi
}

cli() {
  REDISCLI_AUTH=$(cat "$DIR/password") timeout 5 redis-cli --tls \
    --cacert "$DIR/ca.pem" --cert "$DIR/client.pem" --key "$DIR/client.key" \
    -h 127.0.0.1 -p "$PORT" --user "$USER_NAME" --no-auth-warning "$@"
}

ping_ok() { [ "$(cli ping 2>/dev/null)" = PONG ]; }

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

# A CA, a server and a client certificate signed by it, and the password:
# made once per directory (a restart keeps them, so running services keep
# trusting the server).
make_material() {
  [ -s "$DIR/client.key" ] && [ -s "$DIR/password" ] && return 0
  log "making a throw-away CA, server and client certificates, and a password"
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
    # The ACL file holds the password's SHA-256 only. The user's rules are
    # those docs/operations.md ("What Redis must be") gives: the service's
    # keys, and the commands it sends, no more.
    printf 'user default off\nuser %s on #%s %s\n' "$USER_NAME" \
      "$(tr -d '\n' <password | sha256sum | cut -d' ' -f1)" "$ACL_RULES" >users.acl
  )
}

write_env() {
  cat >"$DIR/env" <<EOF
# Written by deploy/local/redis-tls.sh; source it after /tmp/amo-local/env.
export AMO_REDIS_URL=rediss://127.0.0.1:$PORT
export AMO_REDIS_USERNAME=$USER_NAME
export AMO_REDIS_PASSWORD_FILE=$DIR/password
export AMO_REDIS_CA_FILE=$DIR/ca.pem
export AMO_REDIS_CLIENT_CERT_FILE=$DIR/client.pem
export AMO_REDIS_CLIENT_KEY_FILE=$DIR/client.key
EOF
  cat "$DIR/env"
}

stop() {
  local pid
  pid=$(live_pid)
  if [ -z "$pid" ]; then
    rm -f "$PIDFILE"
    log "not running"
    return 0
  fi
  log "stopping redis-server (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do is_alive "$pid" || break; sleep 0.1; done
  if is_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$PIDFILE"
  log "stopped"
}

start() {
  install_missing
  mkdir -p "$DIR"
  make_material
  if [ -n "$(live_pid)" ] && ping_ok; then
    log "already running (pid $(live_pid))"
    write_env
    return 0
  fi
  stop
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "127.0.0.1:$PORT is already in use; set AMO_LOCAL_REDIS_TLS_PORT"
  fi
  : >"$LOGFILE"
  redis-server \
    --bind 127.0.0.1 \
    --port 0 \
    --tls-port "$PORT" \
    --tls-cert-file "$DIR/server.pem" \
    --tls-key-file "$DIR/server.key" \
    --tls-ca-cert-file "$DIR/ca.pem" \
    --tls-auth-clients yes \
    --aclfile "$DIR/users.acl" \
    --maxmemory-policy noeviction \
    --daemonize yes \
    --pidfile "$PIDFILE" \
    --logfile "$LOGFILE" \
    --dir "$DIR" \
    --save '' \
    --appendonly no ||
    { tail -n 20 "$LOGFILE" >&2; die "redis-server failed to start"; }
  local deadline=$((SECONDS + START_TIMEOUT))
  until ping_ok; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$LOGFILE" >&2
      die "redis did not answer PING over TLS on 127.0.0.1:$PORT within ${START_TIMEOUT}s"
    fi
    sleep 0.1
  done
  log "started (pid $(live_pid)), TLS only, on 127.0.0.1:$PORT"
  write_env
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) ping_ok && log "running on 127.0.0.1:$PORT" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
