# Sourced by the scripts that test a running service from outside cargo
# (tests/sdk/run.sh, tests/sdk-ts/run.sh, tests/browser/run.sh,
# tests/fuzz/schemathesis.sh): installs what they need from Debian when it is
# missing, and starts the service under test.
#
#   AMO_ENDPOINT     the running service (default http://127.0.0.1:8080)
#   AMO_SERVICE_BIN  optional: a service binary to start instead, on a free
#                    loopback port, with the settings of $AMO_LOCAL_DIR/env
#                    (see deploy/local/up.sh); stopped at exit
#   AMO_LOCAL_DIR    where the local settings live (/tmp/amo-local)
#
# The caller sets `work` (a scratch directory it removes) before
# start_service, and calls stop_service from its EXIT trap.

local_dir=${AMO_LOCAL_DIR:-/tmp/amo-local}
service_pid=

# Installs the Debian packages "$@" (apt-get, as root or with sudo).
apt_install() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "need root or sudo to install $*" >&2; return 1; }
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "$@"
}

# Node.js and npm, from Debian when the machine has none.
ensure_node() {
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_install nodejs npm
    fi
    echo "node $(node --version), npm $(npm --version)"
}

# Installs the npm packages of directory $1 exactly as its package-lock.json
# pins them (no browser or other download outside the registry).
npm_ci() {
    (cd "$1" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
}

# Polls $1/readyz until 200, for up to $2 seconds; fails early if the service
# started here has exited.
wait_ready() {
    local url=$1 deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null --max-time 2 "$url/readyz" 2>/dev/null; do
        if [[ -n $service_pid ]] && ! kill -0 "$service_pid" 2>/dev/null; then
            echo "the service exited before it was ready; its log:" >&2
            cat "$work/service.log" >&2
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "$url/readyz did not answer 200 within $2 s" >&2
            return 1
        fi
        sleep 0.2
    done
}

# Starts $AMO_SERVICE_BIN when set (objects under the S3 prefix $1), exports
# AMO_ENDPOINT and waits until the service is ready.
start_service() {
    AMO_ENDPOINT=${AMO_ENDPOINT:-http://127.0.0.1:8080}
    if [[ -n ${AMO_SERVICE_BIN:-} ]]; then
        local port
        port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        (
            set -a
            # shellcheck source=/dev/null
            . "$local_dir/env"
            set +a
            export AMO_S3_PREFIX=${AMO_S3_PREFIX:-$1}
            exec "$AMO_SERVICE_BIN" "127.0.0.1:$port"
        ) >"$work/service.log" 2>&1 &
        service_pid=$!
        AMO_ENDPOINT=http://127.0.0.1:$port
        echo "started $AMO_SERVICE_BIN (pid $service_pid) at $AMO_ENDPOINT"
    fi
    export AMO_ENDPOINT
    wait_ready "$AMO_ENDPOINT" 60
}

stop_service() {
    if [[ -n $service_pid ]]; then
        kill "$service_pid" 2>/dev/null || true
        wait "$service_pid" 2>/dev/null || true
    fi
}
