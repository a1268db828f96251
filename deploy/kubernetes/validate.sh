#!/usr/bin/env bash
# deploy/kubernetes/validate.sh — validate the Kubernetes manifests offline.
#
# Every *.yaml here (secret.example.yaml included) is checked, in strict mode
# (unknown fields are errors), against the Kubernetes OpenAPI JSON schemas
# bundled in the PyPI package kubernetes-validate: no cluster and no network
# are needed once the package is installed. kustomization.yaml is checked by
# validate.py: every listed resource exists and validates, no object names a
# namespace, and the objects agree with each other (selectors, names, ports,
# ConfigMap/Secret keys, the drain within the grace period, the upload caps
# within the memory limit). When `kustomize` or `kubectl` is on PATH the
# kustomization is also rendered (offline) and its output validated.
#
# The tool lives in a venv under ${AMO_LOCAL_DIR:-/tmp/amo-local}/venv-k8s,
# made on first use with `python3 -m venv` (Debian's python3-venv is
# installed with apt when the venv module is missing). Idempotent; quiet on
# success but for one summary line; exits non-zero on any invalid manifest.
#
# AMO_K8S_VERSIONS: the Kubernetes versions to check against
# (default "1.30.0 1.37.0", oldest and newest supported).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BASE_DIR=${AMO_LOCAL_DIR:-/tmp/amo-local}
VENV=$BASE_DIR/venv-k8s
PKG_VERSION=1.37.0
export AMO_K8S_VERSIONS=${AMO_K8S_VERSIONS:-1.30.0 1.37.0}

log() { echo "validate.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

PYTHON=$(command -v python3) || die "python3 not found"

ensure_venv_module() {
  if "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then return 0; fi
  log "python3 has no venv/ensurepip module, installing python3-venv with apt"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install python3-venv"
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update >/dev/null
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends python3-venv >/dev/null
}

ensure_tool() {
  local have
  have=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null || true)
  [ "$have" = "$PKG_VERSION" ] && return 0
  ensure_venv_module
  mkdir -p "$BASE_DIR"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV" || { rm -rf "$VENV"; die "python3 -m venv $VENV failed"; }
  fi
  local pip_log=$BASE_DIR/venv-k8s.pip.log
  if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    "kubernetes-validate==$PKG_VERSION" >"$pip_log" 2>&1; then
    cat "$pip_log" >&2
    die "pip install kubernetes-validate==$PKG_VERSION failed"
  fi
}

ensure_tool

# An offline render of the kustomization, when a kustomize is at hand.
render_args=()
render_out=$(mktemp)
trap 'rm -f "$render_out"' EXIT
if command -v kustomize >/dev/null 2>&1; then
  kustomize build "$HERE" >"$render_out" || die "kustomize build $HERE failed"
  render_args=(--rendered "$render_out" --renderer kustomize)
elif command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize "$HERE" >"$render_out" || die "kubectl kustomize $HERE failed"
  render_args=(--rendered "$render_out" --renderer "kubectl kustomize")
fi

# The image this Deployment runs: the Dockerfile and deploy/image/build.sh
# build the same layout, which the Deployment's user, port and preStop agree
# with (deploy/image/check.py).
"$VENV/bin/python" "$HERE/../image/check.py"

exec "$VENV/bin/python" "$HERE/validate.py" "$HERE" "${render_args[@]}"
