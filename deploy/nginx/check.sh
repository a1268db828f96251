#!/usr/bin/env bash
# deploy/nginx/check.sh [UPSTREAM...] — check the nginx configuration.
#
# Always: installs nginx (Debian nginx-light) when missing, checks that
# amo-storage.conf is the current rendering of nginx.conf.template, and runs
# `nginx -t` on a rendering under a temporary prefix (unprivileged paths).
# Then it proves the proxy policy on a live nginx in front of three stand-in
# replicas (stub_upstream.py, loopback ports) that answer the way the
# service does in the cases that matter:
#   - a replica's own 502 and 503 (chain, Redis or S3 unavailable) reach the
#     client as the service's JSON, with Retry-After, are not retried, and
#     leave every replica in rotation;
#   - a DELETE, a POST and a PATCH that reached a replica which then died
#     are not sent again; a GET is (once);
#   - a DELETE or a PATCH that nginx could not deliver (the replica's port
#     refuses connections) goes to a live replica instead, body whole;
#   - an X-Parcel-Metadata header of 8 KiB passes through whole;
#   - a browser's CORS preflight (OPTIONS with Origin and
#     Access-Control-Request-*) reaches a replica once, and the replica's
#     Access-Control-* answer headers reach the client unchanged, as do an
#     actual request's;
#   - nginx's own errors (a header too large, no replica answering) are
#     JSON with a code, like the service's.
# Then the live proxy: nginx on a free loopback port in front of real
# replicas, GET /healthz, /readyz and /api/openapi.json through it, checking
# that X-Request-Id passes through (the client's own, or one nginx
# generates) and is logged; then that nginx is stopped by its pid. The
# replicas are the UPSTREAM arguments (HOST:PORT of running replicas; a dead
# one may be among them to show failover) or, without arguments, one
# started here from AMO_SERVICE_BIN on the local Redis and Ceph RGW
# ($AMO_LOCAL_DIR/env, deploy/local/up.sh) beside a dead port, stopped at
# exit. With neither, the live proxy is not checked, and a SKIPPED line
# says so (.ci/skip.sh; .ci/run's summary repeats it).
# Prints one summary line on success; non-zero exit on any failure.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
# shellcheck source=../../.ci/skip.sh
. "$HERE/../../.ci/skip.sh"
# start_service/stop_service: a replica from AMO_SERVICE_BIN, for step 4.
# shellcheck source=../../tests/lib/service.sh
. "$HERE/../../tests/lib/service.sh"
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
nginx_pid="" stub_pid=""
stop_nginx() {
  if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
    kill -QUIT "$nginx_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  nginx_pid=""
}
cleanup() {
  stop_nginx
  stop_service
  if [ -n "$stub_pid" ]; then kill "$stub_pid" 2>/dev/null || true; wait "$stub_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. amo-storage.conf is the rendering it claims to be.
"$HERE/render.sh" /tmp/amo-nginx 127.0.0.1:8080 127.0.0.1:8081 127.0.0.1:8082 127.0.0.1:8083 >"$work/expected.conf"
if ! diff -u "$HERE/amo-storage.conf" "$work/expected.conf" >"$work/diff" 2>&1; then
  cat "$work/diff" >&2
  die "amo-storage.conf is not the rendering of nginx.conf.template; regenerate it (see the template's header)"
fi

# 1b. Every error code nginx itself answers is in the protocol's error table.
while read -r code; do
  grep -q "^| [0-9, ]* | .*\`$code\`" "$HERE/../../docs/protocol.md" ||
    die "nginx answers code $code, which docs/protocol.md's error table does not list"
done < <(grep -o '"code":"[a-z_]*"' "$HERE/nginx.conf.template" | sed 's/"code":"\(.*\)"/\1/' | sort -u)

# Renders the template for UPSTREAM... under a fresh prefix on a free
# port, runs nginx -t on it; with `start`, also starts it and waits until it
# accepts connections. Sets prefix, port, base and (started) nginx_pid.
render_and_test() {
  local start=$1
  shift
  prefix=$work/prefix-$RANDOM
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  base=http://127.0.0.1:$port
  "$HERE/render.sh" "$prefix" "127.0.0.1:$port" "$@" >"$work/nginx.conf"
  # read_timeout=Ns: a shorter proxy_read_timeout, for the 504 check.
  [ -z "${read_timeout:-}" ] || sed -i "s/proxy_read_timeout [0-9]*s;/proxy_read_timeout $read_timeout;/" "$work/nginx.conf"
  if ! nginx -t -q -p "$prefix" -e "$prefix/error.log" -c "$work/nginx.conf" >"$work/t.log" 2>&1; then
    cat "$work/t.log" >&2
    die "nginx -t failed"
  fi
  [ "$start" = start ] || return 0
  nginx -p "$prefix" -e "$prefix/error.log" -c "$work/nginx.conf" || die "nginx did not start"
  for _ in $(seq 100); do
    [ -s "$prefix/nginx.pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  nginx_pid=$(cat "$prefix/nginx.pid" 2>/dev/null || true)
  [ -n "$nginx_pid" ] || { cat "$prefix/error.log" >&2; die "nginx wrote no pid file"; }
}

# 2. nginx -t on a rendering under the temporary prefix.
upstreams=("$@")
[ "${#upstreams[@]}" -gt 0 ] || upstreams=(127.0.0.1:8081 127.0.0.1:8082 127.0.0.1:8083)
render_and_test test "${upstreams[@]}"

# 3. The retry policy and header sizes, against stand-in replicas.
coproc STUB { exec python3 -u "$HERE/stub_upstream.py" 3; }
stub_pid=$STUB_PID
read -r -t 10 -u "${STUB[0]}" s1 s2 s3 || die "stub_upstream.py did not start"
stubs=("127.0.0.1:$s1" "127.0.0.1:$s2" "127.0.0.1:$s3")
render_and_test start "${stubs[@]}"
# request METHOD PATH [curl args...]: prints the status; body in $work/body.
request() {
  local method=$1 path=$2
  shift 2
  curl -sS --max-time 30 -o "$work/body" -D "$work/headers" -w '%{http_code}' -X "$method" "$@" "$base$path" ||
    die "curl $method $path failed"
}
hits() { curl -sS "http://${stubs[0]}/hits"; }
# nginx_json CODE WHAT: the last answer is nginx's own error as JSON with
# this code, and with an X-Request-Id.
nginx_json() {
  python3 -c 'import json, sys; assert json.load(open(sys.argv[1]))["code"] == sys.argv[2]' "$work/body" "$1" 2>/dev/null ||
    die "$2: not nginx's JSON error with code $1: $(head -c 300 "$work/body")"
  grep -qi '^content-type: application/json' "$work/headers" || die "$2: answered without Content-Type: application/json"
  grep -qi '^x-request-id: ' "$work/headers" || die "$2: answered without X-Request-Id"
}
# hits_of METHOD PATH: how many times the stand-ins received it, in all.
hits_of() {
  hits | python3 -c 'import json, sys; m, p = sys.argv[1:]; print(sum(n for k, n in json.load(sys.stdin).items() if k.split(" ", 1)[1] == f"{m} {p}"))' "$1" "$2"
}
# Each replica answers its own 502 and 503 to two requests in a row
# (what a chain or Redis outage looks like: every replica answers so).
for code in 502 503 502 503 502 503; do
  got=$(request GET "/status/$code")
  [ "$got" = "$code" ] || die "GET /status/$code via nginx answered $got"
  expected='"code": "unavailable"'
  [ "$code" = 502 ] && expected='"code": "chain_unavailable"'
  grep -qF "$expected" "$work/body" || die "the $code reached the client without the service's JSON: $(head -c 200 "$work/body")"
done
grep -qi '^retry-after: ' "$work/headers" || die "the service's 503 lost its Retry-After through nginx"
got=$(request DELETE /status/503)
[ "$got" = 503 ] || die "DELETE /status/503 via nginx answered $got"
n=$(hits_of GET /status/502); [ "$n" = 3 ] || die "3 GETs answered 502 reached the replicas $n times: nginx retried them"
n=$(hits_of GET /status/503); [ "$n" = 3 ] || die "3 GETs answered 503 reached the replicas $n times: nginx retried them"
n=$(hits_of DELETE /status/503); [ "$n" = 1 ] || die "a DELETE answered 503 reached the replicas $n times"
# Every replica is still in rotation: each of the next six requests is
# answered, and all three replicas answer some.
before=$(hits)
for _ in 1 2 3 4 5 6; do
  got=$(request GET /healthz)
  [ "$got" = 200 ] || die "GET /healthz after the replicas' own 502/503s answered $got: $(head -c 200 "$work/body")"
done
served=$(hits | python3 -c 'import json, sys; print(sum(1 for k in json.load(sys.stdin) if k.endswith(" GET /healthz")))')
[ "$served" = 3 ] || die "after the replicas' own 502/503s only $served of 3 replicas got requests (hits before: $before)"
echo "check.sh: the replicas' own 502/503 passed through as JSON, not retried; all 3 replicas stayed in rotation" >&2
# 8 KiB of metadata, and then some, in one header.
metadata=$(python3 -c 'print("{\"note\":\"" + "m" * 8180 + "\"}")')
got=$(request GET /metadata-length -H "X-Parcel-Metadata: $metadata")
[ "$got" = 200 ] || die "an X-Parcel-Metadata of ${#metadata} bytes answered $got through nginx"
grep -q "\"length\": ${#metadata}}" "$work/body" || die "X-Parcel-Metadata arrived cut: $(cat "$work/body")"
echo "check.sh: an X-Parcel-Metadata of ${#metadata} bytes passed through whole" >&2
# A browser's preflight and actual request: the replica answers CORS, nginx
# passes both ways untouched.
page=http://127.0.0.1:8000
asked="content-type,tus-resumable,upload-offset,x-auth-token,x-public-key,x-signature,x-upload-sequence"
got=$(request OPTIONS /cors -H "Origin: $page" -H "Access-Control-Request-Method: PATCH" -H "Access-Control-Request-Headers: $asked")
[ "$got" = 204 ] || die "a CORS preflight through nginx answered $got: $(head -c 200 "$work/body")"
n=$(hits_of OPTIONS /cors); [ "$n" = 1 ] || die "a CORS preflight reached the replicas $n times, not once"
for expected in "access-control-allow-origin: $page" "access-control-allow-methods: HEAD, PATCH, DELETE" \
  "access-control-allow-headers: $asked" "access-control-max-age: 600" "vary: origin"; do
  tr -d '\r' <"$work/headers" | grep -qix "$expected" || die "a CORS preflight's answer lost '$expected' through nginx: $(cat "$work/headers")"
done
got=$(request GET /cors -H "Origin: $page")
[ "$got" = 200 ] || die "a cross-origin GET through nginx answered $got"
for expected in "access-control-allow-origin: $page" "access-control-expose-headers: Location, Upload-Offset, X-Upload-Sequence"; do
  tr -d '\r' <"$work/headers" | grep -qix "$expected" || die "a cross-origin answer lost '$expected' through nginx: $(cat "$work/headers")"
done
echo "check.sh: a CORS preflight reached a replica once, and its Access-Control-* answer passed through whole" >&2
# A header line nginx's buffers cannot hold: nginx's own 431, as JSON.
got=$(request GET /metadata-length -H "X-Parcel-Metadata: $(head -c 40000 /dev/zero | tr '\0' m)")
[ "$got" = 431 ] || die "a 40000-byte header answered $got through nginx"
nginx_json headers_too_large "a 40000-byte header"
got=$(request GET "/$(head -c 40000 /dev/zero | tr '\0' u)")
[ "$got" = 414 ] || die "a 40000-byte URI answered $got through nginx"
nginx_json uri_too_long "a 40000-byte URI"
got=$(request GET /.nginx-error/502)
[ "$got" = 404 ] || die "nginx's internal error page, asked for from outside, answered $got"
nginx_json not_found "nginx's internal error page, asked for from outside"
# A replica's own 404 is the replica's, not nginx's.
got=$(request GET /no-such-path)
[ "$got" = 404 ] && grep -qF "no such stub path" "$work/body" || die "a replica's own 404 did not pass through: $got $(head -c 200 "$work/body")"
# A replica that dies after it received the request: the request is not
# sent again, unless it is a GET. Each /drop takes the replica that got it
# out of rotation for fail_timeout, so the GET, which takes two, goes last.
for probe in "DELETE" "POST --data-binary x" "PATCH --data-binary x"; do
  read -r -a args <<<"$probe"
  got=$(request "${args[@]:0:1}" /drop "${args[@]:1}")
  [ "$got" = 502 ] || die "$probe /drop answered $got"
  nginx_json upstream_unavailable "$probe /drop"
done
n=$(hits_of DELETE /drop); [ "$n" = 1 ] || die "a DELETE that reached a replica was sent $n times"
n=$(hits_of POST /drop); [ "$n" = 1 ] || die "a POST that reached a replica was sent $n times"
n=$(hits_of PATCH /drop); [ "$n" = 1 ] || die "a PATCH that reached a replica was sent $n times"
stop_nginx
echo "check.sh: a DELETE, a POST and a PATCH whose replica died after receiving them were each sent once" >&2
# A GET is retried on the next replica (a fresh nginx: every replica in
# rotation).
render_and_test start "${stubs[@]}"
request GET /drop >/dev/null
n=$(hits_of GET /drop); [ "$n" = 2 ] || die "a GET whose replica died was sent $n times, not 2 (one retry)"
stop_nginx
# A replica that is down (its port refuses connections): a DELETE, or a
# PATCH with 1 MiB of body, that nginx sends there first never reached it,
# so nginx passes it on to a live replica, body whole. Four of each, each
# method on a fresh nginx (the first failure takes the dead replica out of
# rotation for fail_timeout): least_conn breaks ties round robin, so the
# dead replica is picked within the first two.
dead=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
head -c 1048576 /dev/urandom >"$work/mib"
for probe in "DELETE 0" "PATCH 1048576 --data-binary @$work/mib"; do
  read -r -a args <<<"$probe"
  render_and_test start "127.0.0.1:$dead" "${stubs[0]}"
  for i in 1 2 3 4; do
    got=$(request "${args[0]}" "/undelivered/$i" "${args[@]:2}")
    [ "$got" = 200 ] || die "${args[0]} /undelivered/$i with one replica down answered $got: $(head -c 200 "$work/body")"
    grep -q "\"received\": ${args[1]}}" "$work/body" || die "${args[0]} /undelivered/$i arrived with a cut body: $(cat "$work/body")"
    n=$(hits_of "${args[0]}" "/undelivered/$i"); [ "$n" = 1 ] || die "${args[0]} /undelivered/$i reached the live replica $n times"
  done
  grep -q "connect() failed (111: Connection refused).*\"${args[0]} /undelivered/.*127.0.0.1:$dead" "$prefix/error.log" ||
    die "nginx never sent a ${args[0]} to the dead replica 127.0.0.1:$dead, so the check proved nothing: $(tail -n 5 "$prefix/error.log")"
  stop_nginx
done
echo "check.sh: a DELETE and a 1 MiB PATCH sent first to a replica that was down reached a live one, once each, whole" >&2
# Every replica down: nginx's own 502, as JSON, whatever the method.
render_and_test start "127.0.0.1:$dead"
for method in GET DELETE; do
  got=$(request "$method" /healthz)
  [ "$got" = 502 ] || die "$method with every replica down answered $got"
  nginx_json upstream_unavailable "$method with every replica down"
done
stop_nginx
# A replica that received a request and fell silent: nginx's own 504
# upstream_timeout, as JSON, once proxy_read_timeout (1 s on this rendering,
# 300 s shipped) passes; a POST and a DELETE each reached one replica once.
read_timeout=1s render_and_test start "${stubs[@]}"
grep -q 'proxy_read_timeout 1s;' "$work/nginx.conf" || die "the 504 check's rendering kept the shipped read timeout"
for probe in "POST --data-binary x" "DELETE"; do
  read -r -a args <<<"$probe"
  got=$(request "${args[@]:0:1}" /silent "${args[@]:1}")
  [ "$got" = 504 ] || die "$probe /silent answered $got through nginx"
  nginx_json upstream_timeout "$probe /silent"
  n=$(hits_of "${args[0]}" /silent); [ "$n" = 1 ] || die "a $probe that timed out was sent $n times"
done
stop_nginx
echo "check.sh: nginx's own 404, 414, 431, 502 and 504 answer JSON with a code and an X-Request-Id; a replica's own 404 passes through" >&2
policy="replicas' own 502/503 not retried and not counted; DELETE, POST and PATCH not resent once sent, passed on when never delivered; 8 KiB metadata passes; CORS preflights pass through; nginx's own errors are JSON"
if [ "$#" -eq 0 ] && [ -z "${AMO_SERVICE_BIN:-}" ]; then
  echo "check.sh: OK: amo-storage.conf up to date; nginx -t passed ($(nginx -v 2>&1 | sed 's/.*: //')); $policy"
  ci_skip "deploy/nginx/check.sh: the live proxy in front of real replicas (step 4):" \
    "no UPSTREAM argument and no AMO_SERVICE_BIN"
  exit 0
fi

# 4. A live proxy in front of the given replicas, or of one started here
# beside a dead port (nginx passes each GET on to the live one).
if [ "$#" -eq 0 ]; then
  start_service nginx-check/ >&2
  upstreams=("127.0.0.1:$dead" "${AMO_ENDPOINT#http://}")
fi
render_and_test start "${upstreams[@]}"
rid="check-$$-$RANDOM"
for path in /healthz /readyz /api/openapi.json; do
  code=$(curl -sS -o "$work/body" -D "$work/headers" -w '%{http_code}' -H "X-Request-Id: $rid$path" "$base$path") ||
    die "curl $base$path failed"
  [ "$code" = 200 ] || { cat "$work/body" >&2; die "GET $path through nginx answered $code"; }
  grep -qi "^x-request-id: $rid$path" "$work/headers" || die "GET $path: X-Request-Id not passed through"
  n=$(grep -ci '^x-request-id:' "$work/headers" || true)
  [ "$n" = 1 ] || die "GET $path: $n X-Request-Id headers in the answer, not 1"
  echo "check.sh: GET $path via nginx -> $code ($(wc -c <"$work/body") bytes, X-Request-Id $rid$path)" >&2
done
generated=$(curl -sS -o /dev/null -D - "$base/healthz" | tr -d '\r' | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p')
[[ $generated =~ ^[0-9a-f]{32}$ ]] || die "no generated X-Request-Id (got '$generated')"
# The access log is written when each request ends.
for _ in $(seq 50); do grep -q "req_id=$generated" "$prefix/access.log" && break; sleep 0.1; done
grep -q "req_id=$rid/healthz" "$prefix/access.log" || die "client request id missing from the access log"
grep -q "req_id=$generated" "$prefix/access.log" || die "generated request id missing from the access log"
if [ -n "${AMO_CHECK_SHOW_LOG:-}" ]; then cat "$prefix/access.log" >&2; fi
echo "check.sh: OK: amo-storage.conf up to date; nginx -t passed; $policy; proxied /healthz /readyz /api/openapi.json to ${upstreams[*]} with X-Request-Id passed through and logged"
