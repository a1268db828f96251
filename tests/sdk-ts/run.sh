#!/usr/bin/env bash
# The TypeScript SDK check: generates a typed client from the committed spec
# (openapi/openapi.json) with openapi-typescript, compiles the flow with
# `tsc --strict` and runs it in Node with openapi-fetch: auth, v2 upload,
# inspect, v1 views, whole and ranged download, remove (flow.ts; the same
# steps as tests/sdk/flow.py). The npm versions are pinned by package.json and
# package-lock.json; Node.js comes from Debian when the machine has none.
#
# Fails when the generator says anything about our spec (a defect of the
# spec, to fix in src/api/*.rs, not here), when tsc finds an error, or when a
# step of the flow fails.
#
#   AMO_ENDPOINT, AMO_SERVICE_BIN, AMO_LOCAL_DIR   see tests/lib/service.sh
#   AMO_SPEC         the spec to generate from (default: the committed one)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib/service.sh
. "$here/../lib/service.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/amo-sdk-ts.XXXXXX")
cleanup() {
    stop_service
    rm -rf "$work"
}
trap cleanup EXIT

ensure_node
npm_ci "$here"
start_service sdk-ts-test/

cd "$here"
rm -rf generated dist
node generate.mjs
echo "compiling with tsc --strict"
npx --no-install tsc -p tsconfig.json --strict
echo "running the flow against $AMO_ENDPOINT"
node dist/flow.js
