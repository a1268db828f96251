#!/usr/bin/env bash
# The API explorer check: uploads a parcel with the service's own CLI, then
# opens Swagger UI at /docs in Debian's headless Chromium (explorer.mjs,
# puppeteer-core pinned by package-lock.json; no browser download) and checks
# that every operation renders and that "Try it out" on the inspect of that
# parcel shows its JSON. Chromium and Node.js come from Debian when the
# machine has none.
#
# The screenshot goes to $AMO_BROWSER_ARTIFACTS/explorer.png (default
# target/browser/explorer.png), kept whether the check passes or fails.
#
#   AMO_ENDPOINT, AMO_SERVICE_BIN, AMO_LOCAL_DIR   see tests/lib/service.sh
#   AMO_CLI_BIN      the amo-storage binary used as the client (default:
#                    $AMO_SERVICE_BIN, else target/debug/amo-storage)
#   AMO_CHROMIUM     the browser (default /usr/bin/chromium)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../lib/service.sh
. "$here/../lib/service.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/amo-browser.XXXXXX")
cleanup() {
    stop_service
    rm -rf "$work"
}
trap cleanup EXIT

export AMO_CHROMIUM=${AMO_CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $AMO_CHROMIUM ]]; then
    # fonts-liberation: without a font the page's text would not render.
    apt_install chromium fonts-liberation
fi
"$AMO_CHROMIUM" --version
ensure_node
npm_ci "$here"
start_service browser-test/

cli=${AMO_CLI_BIN:-${AMO_SERVICE_BIN:-$repo/target/debug/amo-storage}}
"$cli" key new --out "$work/explorer.key" >/dev/null
head -c 70000 /dev/urandom >"$work/parcel.bin"
export AMO_PARCEL_ID AMO_PARCEL_OWNER AMO_PARCEL_SIZE
AMO_PARCEL_ID=$("$cli" parcel upload "$work/parcel.bin" --key "$work/explorer.key" \
    --endpoint "$AMO_ENDPOINT" --metadata '{"name":"explorer-check"}' | tail -n 1)
AMO_PARCEL_OWNER=$("$cli" key show --key "$work/explorer.key" | sed -n 's/^address: //p')
AMO_PARCEL_SIZE=70000
echo "uploaded parcel $AMO_PARCEL_ID for $AMO_PARCEL_OWNER"

export AMO_BROWSER_ARTIFACTS=${AMO_BROWSER_ARTIFACTS:-$repo/target/browser}
status=0
node "$here/explorer.mjs" || status=$?

"$cli" parcel remove "$AMO_PARCEL_ID" --key "$work/explorer.key" --endpoint "$AMO_ENDPOINT" >/dev/null ||
    echo "warning: could not remove parcel $AMO_PARCEL_ID" >&2
exit "$status"
