#!/usr/bin/env bash
# The SDK check: generates a Python client from the committed spec
# (openapi/openapi.json) with openapi-python-client, installs it in a venv and
# runs tests/sdk/flow.py, the v2 round trip through that generated client.
#
# Fails when the generator says anything about our spec (a warning or an
# error: a defect of the spec, to fix in src/api/*.rs, not here) or when a
# step of the flow fails.
#
#   AMO_ENDPOINT     the running service (default http://127.0.0.1:8080); this
#                    script does not start it, CI does
#   AMO_SERVICE_BIN  optional: a service binary to start here instead, on a free
#                    loopback port, with the settings of $AMO_LOCAL_DIR/env;
#                    stopped at exit
#   AMO_LOCAL_DIR    where the venv and the local settings live (/tmp/amo-local)
#   AMO_SPEC         the spec to generate from (default: the committed one)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
local_dir=${AMO_LOCAL_DIR:-/tmp/amo-local}
venv=$local_dir/venv-sdk
spec=${AMO_SPEC:-$repo/openapi/openapi.json}
AMO_ENDPOINT=${AMO_ENDPOINT:-http://127.0.0.1:8080}
# The versions this check was written against; bump them deliberately.
opc_version=0.29.1
cryptography_version=50.0.2

work=$(mktemp -d "${TMPDIR:-/tmp}/amo-sdk.XXXXXX")
# shellcheck source=../lib/service.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/service.sh"
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    stop_service
    rm -rf "$work"
}
trap cleanup EXIT
start_service sdk-test/

# The venv: the generator and the signing library.
if [[ ! -x $venv/bin/python ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "openapi-python-client==$opc_version" "cryptography==$cryptography_version"

# Generate. No post hooks: they only format the output (ruff) and would warn
# about a missing formatter, which says nothing about the spec.
# The tus PATCH body is `application/offset+octet-stream` (tus 1.0.0), a
# type the generator does not know: it is bytes, as it is generated.
printf 'post_hooks: []\ncontent_type_overrides:\n  application/offset+octet-stream: application/octet-stream\n' >"$work/config.yml"
echo "generating a client from $spec"
status=0
(cd "$work" && "$venv/bin/openapi-python-client" generate --path "$spec" \
    --config "$work/config.yml" --meta setup --output-path "$work/client") \
    >"$work/generate.log" 2>&1 || status=$?
cat "$work/generate.log"
if ((status != 0)); then
    echo "FAIL: openapi-python-client exited $status on our spec" >&2
    exit 1
fi
# openapi-python-client exits 0 with "Warning(s) encountered" when it skipped
# parts of the spec it could not understand: that is a defect of the spec.
if grep -qiE 'warning|error|unable to|cannot|could not|skipping' "$work/generate.log"; then
    echo "FAIL: openapi-python-client reported problems with our spec (above)" >&2
    exit 1
fi

# A local directory is always reinstalled; its dependencies (httpx, attrs,
# python-dateutil) are already there with the generator.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$work/client"

echo "running the flow against $AMO_ENDPOINT"
"$venv/bin/python" "$here/flow.py"
