#!/usr/bin/env bash
# The example page (examples/browser) in Debian's headless Chromium, across
# origins, on the real Redis and Ceph RGW: the page is served by a static
# server on one loopback port (origin http://127.0.0.1:PAGE), the service
# behind deploy/nginx on another; the service allows the page's origin only
# (AMO_CORS_ALLOWED_ORIGINS). page.mjs then uploads a 24 MiB file with a
# pause and a resume, checks the stored bytes through the API, downloads and
# removes it, and opens the same page from http://localhost:PAGE, an origin
# the service does not allow, whose upload the browser refuses. Screenshots
# and page-metrics.json (rates, Chromium's CPU and memory) go to
# $AMO_BROWSER_ARTIFACTS (default target/browser).
#
#   AMO_ENDPOINT is ignored: the service is started here ($AMO_SERVICE_BIN,
#   default target/debug/amo-storage) with the settings of $AMO_LOCAL_DIR/env
#   (see tests/lib/service.sh); nginx-light is installed by
#   deploy/nginx/check.sh when missing; Chromium as tests/browser/run.sh.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../lib/service.sh
. "$here/../lib/service.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/amo-page.XXXXXX")
static_pid="" nginx_pid=""
cleanup() {
    if [[ -n $nginx_pid ]]; then kill -QUIT "$nginx_pid" 2>/dev/null || true; fi
    if [[ -n $static_pid ]]; then kill "$static_pid" 2>/dev/null || true; wait "$static_pid" 2>/dev/null || true; fi
    stop_service
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Waits until 127.0.0.1:$1 accepts connections (at most 10 s).
wait_port() {
    local deadline=$((SECONDS + 10))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "nothing listens on 127.0.0.1:$1" >&2; return 1; }
        sleep 0.1
    done
}

export AMO_CHROMIUM=${AMO_CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $AMO_CHROMIUM ]]; then
    apt_install chromium fonts-liberation
fi
"$AMO_CHROMIUM" --version
command -v nginx >/dev/null || bash "$repo/deploy/nginx/check.sh" >&2
ensure_node
npm_ci "$here"
npm_ci "$repo/examples/browser"

# The page's origin.
page_port=$(free_port)
python3 -m http.server "$page_port" --bind 127.0.0.1 --directory "$repo/examples/browser" \
    >"$work/static.log" 2>&1 &
static_pid=$!
wait_port "$page_port"

# The service, allowing that origin only, behind nginx.
AMO_SERVICE_BIN=${AMO_SERVICE_BIN:-$repo/target/debug/amo-storage}
unset AMO_ENDPOINT
export AMO_CORS_ALLOWED_ORIGINS=http://127.0.0.1:$page_port
start_service browser-page-test/
nginx_port=$(free_port)
"$repo/deploy/nginx/render.sh" "$work/nginx" "127.0.0.1:$nginx_port" "${AMO_ENDPOINT#http://}" >"$work/nginx.conf"
nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx.conf"
wait_port "$nginx_port"
nginx_pid=$(cat "$work/nginx/nginx.pid")

head -c $((24 * 1024 * 1024)) /dev/urandom >"$work/parcel-24MiB.bin"
export AMO_PAGE_URL=http://127.0.0.1:$page_port/
export AMO_FOREIGN_PAGE_URL=http://localhost:$page_port/
export AMO_ENDPOINT=http://127.0.0.1:$nginx_port
export AMO_PAGE_FILE=$work/parcel-24MiB.bin
export AMO_BROWSER_ARTIFACTS=${AMO_BROWSER_ARTIFACTS:-$repo/target/browser}
echo "page at $AMO_PAGE_URL (allowed) and $AMO_FOREIGN_PAGE_URL (not), service at $AMO_ENDPOINT through nginx"
node "$here/page.mjs"
