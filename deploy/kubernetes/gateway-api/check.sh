#!/usr/bin/env bash
# deploy/kubernetes/gateway-api/check.sh — check deploy/kubernetes/gateway.yaml
# offline: check.mjs validates the Gateway and HTTPRoutes against the
# Gateway API's published schemas (npm @kubernetes-models/gateway-api,
# generated from the project's CRDs), and checks the routing against the
# API's spec (see check.mjs).
#
#   bash deploy/kubernetes/gateway-api/check.sh [RENDERED]
#
# RENDERED: a kustomize render of deploy/kubernetes, whose Gateway API
# objects are validated too (validate.sh passes it). Installs Node.js from
# Debian when missing, and the npm packages exactly as package-lock.json
# pins them (node_modules here).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
# shellcheck source=../../../tests/lib/service.sh
. "$REPO/tests/lib/service.sh"

ensure_node >/dev/null
npm_ci "$HERE"
node "$HERE/check.mjs" "$REPO" "$@"
