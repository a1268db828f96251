#!/usr/bin/env bash
# deploy/local/run.sh [ADDR] — start the local Redis and Ceph RGW (up.sh), then
# run the service against them in the foreground (default 127.0.0.1:8080).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$HERE/up.sh"
# shellcheck disable=SC1091
. "${AMO_LOCAL_DIR:-/tmp/amo-local}/env"
cd "$HERE/../.."
exec cargo run --release -- "${@:-127.0.0.1:8080}"
