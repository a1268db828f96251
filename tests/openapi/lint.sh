#!/usr/bin/env bash
# The spec under Redocly's recommended ruleset: `redocly lint
# --extends=recommended` over the committed spec (openapi/openapi.json, which
# tests/api/openapi.rs keeps equal to the code's). Fails on any error or
# warning. Redocly CLI is pinned by package.json and package-lock.json here
# and installed with `npm ci` under target/redocly (reinstalled only when the
# lock file changes); Node.js comes from Debian when the machine has none.
#
#   AMO_SPEC   the spec to lint (default: the committed one)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
spec=${AMO_SPEC:-$repo/openapi/openapi.json}
# No usage reports, no update notice: CI talks to the npm registry only.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
tools=${CARGO_TARGET_DIR:-$repo/target}/redocly
# shellcheck source=../lib/service.sh
. "$here/../lib/service.sh"

ensure_node
mkdir -p "$tools"
if ! cmp -s "$here/package-lock.json" "$tools/package-lock.json" || [[ ! -x $tools/node_modules/.bin/redocly ]]; then
    cp "$here/package.json" "$here/package-lock.json" "$tools/"
    npm_ci "$tools"
fi

status=0
(cd "$tools" && npx --no-install redocly lint --extends=recommended --max-problems=200 "$spec") || status=$?
if ((status != 0)); then
    echo "FAIL: Redocly's recommended ruleset finds problems in $spec (above)" >&2
    exit 1
fi
# redocly exits 0 on warnings: they count here too.
summary=$(cd "$tools" && npx --no-install redocly lint --extends=recommended --format=summary "$spec" 2>&1)
if grep -qE '^(error|warning) ' <<<"$summary"; then
    echo "$summary" >&2
    echo "FAIL: Redocly's recommended ruleset warns about $spec (above)" >&2
    exit 1
fi
echo "redocly lint (recommended, @redocly/cli $(cd "$tools" && npx --no-install redocly --version)): 0 errors, 0 warnings in $spec"
