#!/usr/bin/env bash
# A real tus-js-client (the tus project's JavaScript client, from npm) against
# the service: upload.mjs uploads 4 MiB in 512 KiB PATCHes, each request
# signed in onBeforeRequest, aborts half-way and resumes, replays a captured
# PATCH (refused), then downloads the parcel through the API and compares it
# byte for byte. The npm version is pinned by package.json and
# package-lock.json; Node.js comes from Debian when the machine has none.
#
#   AMO_ENDPOINT, AMO_SERVICE_BIN, AMO_LOCAL_DIR   see tests/lib/service.sh
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../../lib/service.sh
. "$here/../../lib/service.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/amo-tus-js.XXXXXX")
cleanup() {
    stop_service
    rm -rf "$work"
}
trap cleanup EXIT

ensure_node
npm_ci "$here"
start_service tus-js-test/
node "$here/upload.mjs"
