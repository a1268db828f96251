#!/usr/bin/env bash
# deploy/kubernetes/monitoring/check.sh — check the monitoring manifests
# offline.
#
# 1. check.mjs: the ServiceMonitor and the PrometheusRule validate against
#    the Prometheus Operator's schemas (npm @kubernetes-models/
#    prometheus-operator); the ServiceMonitor selects the base's Service
#    and port; the rules name only metrics src/metrics.rs declares, label
#    values src/ emits, routes of openapi/openapi.json, settings of
#    docs/configuration.md and the Service's job; every alert has a test
#    that shows it firing and one that shows it quiet.
#    Every query of the rules and of dashboard.json (Grafana) parses with
#    the PromQL grammar and names only metrics and labels src/metrics.rs
#    registers (or the process collector's, kube-state-metrics' and those
#    being added, allow-listed in check.mjs), and selects this service;
#    every alert's runbook_url is an anchor of docs/operations.md.
# 2. promtool check rules: the rules and their annotation templates parse,
#    and so does each dashboard query (as a recording rule).
# 3. promtool test rules rules.test.yaml: each alert fires, with its labels,
#    where it must, and stays quiet where it must.
#
# Installs what is missing: promtool (Debian's prometheus package, with its
# service kept from starting), Node.js, and the npm packages exactly as
# package-lock.json pins them (node_modules here). Prints one summary line
# on success; exits non-zero on any failure.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
# shellcheck source=../../../tests/lib/service.sh
. "$REPO/tests/lib/service.sh"
log() { echo "check.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_promtool() {
  command -v promtool >/dev/null 2>&1 && return 0
  log "promtool missing, installing Debian's prometheus package with apt"
  local policy=/usr/sbin/policy-rc.d created=0
  if [ ! -e "$policy" ] && [ -w "$(dirname "$policy")" ]; then
    # exit 101: the package's scripts must not start a Prometheus server.
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && created=1
  fi
  apt_install prometheus >/dev/null || die "apt could not install prometheus"
  if [ "$created" -eq 1 ]; then rm -f "$policy"; fi
  command -v promtool >/dev/null 2>&1 || die "promtool still missing after install"
}

ensure_promtool
ensure_node >/dev/null
npm_ci "$HERE" >/dev/null || die "npm ci failed"
mkdir -p "$BASE_DIR"
work=$(mktemp -d "$BASE_DIR/monitoring-check.XXXXXX")
trap 'rm -rf "$work"' EXIT

summary=$(node "$HERE/check.mjs" "$REPO" "$work") || die "the manifests are not valid (above)"

promtool check rules "$work/rules-full.yaml" >"$work/check.log" 2>&1 || { cat "$work/check.log" >&2; die "promtool check rules failed"; }
promtool check rules "$work/dashboard-rules.yaml" >"$work/check-dashboard.log" 2>&1 || { cat "$work/check-dashboard.log" >&2; die "promtool check rules failed on the dashboard's queries"; }
cp "$HERE/rules.test.yaml" "$work/"
promtool test rules "$work/rules.test.yaml" >"$work/test.log" 2>&1 || { cat "$work/test.log" >&2; die "promtool test rules failed"; }
tests=$(grep -c '^  - name:' "$HERE/rules.test.yaml")

if command -v kubectl >/dev/null 2>&1; then
  objects=$(kubectl kustomize "$HERE" | grep -c '^kind:') || die "kubectl kustomize failed"
  summary+="; kubectl kustomize rendered $objects objects"
fi
echo "check.sh: OK: $summary; promtool ($(promtool --version 2>&1 | head -1 | awk '{print $3}')) checked the rules and the dashboard's queries and passed $tests unit tests"
