#!/usr/bin/env bash
# deploy/nginx/check.sh [UPSTREAM...] — check the nginx configuration.
#
# Always: installs nginx (Debian nginx-light) when missing, checks that
# amo-storage.conf is the current rendering of nginx.conf.template, and runs
# `nginx -t` on a rendering under a temporary prefix (unprivileged paths).
# With UPSTREAM arguments (HOST:PORT of running replicas; a dead one may be
# among them to show failover), it also starts nginx on a free loopback port
# in front of them, sends GET /healthz, /readyz and /api/openapi.json
# through it, checks that X-Request-Id passes through (the client's own, or
# one nginx generates) and is logged, then stops that nginx by its pid.
# Prints one summary line on success; non-zero exit on any failure.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
log() { echo "check.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_nginx() {
  command -v nginx >/dev/null 2>&1 && return 0
  log "nginx missing, installing nginx-light with apt"
  [ "$(id -u)" -eq 0 ] || die "need root to install nginx-light"
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ]; then
    # exit 101: package scripts must not start a system nginx on port 80.
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -q update >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends nginx-light >/dev/null
  if [ "$created" -eq 1 ]; then rm -f "$policy"; fi
  command -v nginx >/dev/null 2>&1 || die "nginx still missing after install"
}

ensure_nginx
mkdir -p "$BASE_DIR"
work=$(mktemp -d "$BASE_DIR/nginx-check.XXXXXX")
nginx_pid=""
cleanup() {
  if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
    kill -QUIT "$nginx_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. amo-storage.conf is the rendering it claims to be.
"$HERE/render.sh" /tmp/amo-nginx 127.0.0.1:8080 127.0.0.1:8081 127.0.0.1:8082 127.0.0.1:8083 >"$work/expected.conf"
if ! diff -u "$HERE/amo-storage.conf" "$work/expected.conf" >"$work/diff" 2>&1; then
  cat "$work/diff" >&2
  die "amo-storage.conf is not the rendering of nginx.conf.template; regenerate it (see the template's header)"
fi

# 2. nginx -t on a rendering under the temporary prefix.
prefix=$work/prefix
upstreams=("$@")
[ "${#upstreams[@]}" -gt 0 ] || upstreams=(127.0.0.1:8081 127.0.0.1:8082 127.0.0.1:8083)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$HERE/render.sh" "$prefix" "127.0.0.1:$port" "${upstreams[@]}" >"$work/nginx.conf"
if ! nginx -t -q -p "$prefix" -e "$prefix/error.log" -c "$work/nginx.conf" >"$work/t.log" 2>&1; then
  cat "$work/t.log" >&2
  die "nginx -t failed"
fi
if [ "$#" -eq 0 ]; then
  echo "check.sh: OK: amo-storage.conf up to date; nginx -t passed ($(nginx -v 2>&1 | sed 's/.*: //'))"
  exit 0
fi

# 3. A live proxy in front of the given replicas.
nginx -p "$prefix" -e "$prefix/error.log" -c "$work/nginx.conf" || die "nginx did not start"
for _ in $(seq 100); do
  [ -s "$prefix/nginx.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
nginx_pid=$(cat "$prefix/nginx.pid" 2>/dev/null || true)
[ -n "$nginx_pid" ] || { cat "$prefix/error.log" >&2; die "nginx wrote no pid file"; }

base=http://127.0.0.1:$port
rid="check-$$-$RANDOM"
for path in /healthz /readyz /api/openapi.json; do
  code=$(curl -sS -o "$work/body" -D "$work/headers" -w '%{http_code}' -H "X-Request-Id: $rid$path" "$base$path") ||
    die "curl $base$path failed"
  [ "$code" = 200 ] || { cat "$work/body" >&2; die "GET $path through nginx answered $code"; }
  grep -qi "^x-request-id: $rid$path" "$work/headers" || die "GET $path: X-Request-Id not passed through"
  echo "check.sh: GET $path via nginx -> $code ($(wc -c <"$work/body") bytes, X-Request-Id $rid$path)" >&2
done
generated=$(curl -sS -o /dev/null -D - "$base/healthz" | tr -d '\r' | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p')
[[ $generated =~ ^[0-9a-f]{32}$ ]] || die "no generated X-Request-Id (got '$generated')"
# The access log is written when each request ends.
for _ in $(seq 50); do grep -q "req_id=$generated" "$prefix/access.log" && break; sleep 0.1; done
grep -q "req_id=$rid/healthz" "$prefix/access.log" || die "client request id missing from the access log"
grep -q "req_id=$generated" "$prefix/access.log" || die "generated request id missing from the access log"
if [ -n "${AMO_CHECK_SHOW_LOG:-}" ]; then cat "$prefix/access.log" >&2; fi
echo "check.sh: OK: amo-storage.conf up to date; nginx -t passed; proxied /healthz /readyz /api/openapi.json to ${upstreams[*]} with X-Request-Id passed through and logged"
