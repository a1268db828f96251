#!/usr/bin/env bash
# tests/image/run.sh — build the container image from nothing and run it the
# way Kubernetes does (deploy/kubernetes/deployment.yaml), against the real
# Redis and Ceph RGW of deploy/local/up.sh.
#
# 1. deploy/image/build.sh builds the image with $AMO_IMAGE_BIN in it and
#    prints its digest and size.
# 2. The container runs with `podman run --read-only` (readOnlyRootFilesystem:
#    only a tmpfs /tmp is writable), as the image's user (10001, checked on
#    the host's /proc), every capability dropped, no-new-privileges, the S3
#    keys mounted read-only at /etc/amo/key.json. The image has no shell,
#    and has the /bin/sleep of the preStop hook.
# 3. Through it: the generated Python SDK flow (tests/sdk/run.sh) and a tus
#    upload with tuspy (tests/image/through.py tus).
# 4. SIGTERM (`podman kill --signal TERM`) with an upload in flight: /readyz
#    answers 503, the upload completes with 201, the container exits 0; a
#    second container then serves that parcel byte for byte.
#
#   AMO_IMAGE_BIN  the service binary to put in the image (default: the
#                  release build, see deploy/image/build.sh)
#   AMO_LOCAL_DIR  where the local settings and venvs live (/tmp/amo-local)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
local_dir=${AMO_LOCAL_DIR:-/tmp/amo-local}
# shellcheck source=../../deploy/image/podman.sh
. "$repo/deploy/image/podman.sh"
# shellcheck source=../tus/venv.sh
. "$repo/tests/tus/venv.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/amo-image.XXXXXX")
containers=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local status=$?
    for c in "${containers[@]}"; do
        if ((status != 0)); then
            echo "--- log of container $c" >&2
            pm logs "$c" >&2 2>&1 || true
        fi
        pm rm --force "$c" >/dev/null 2>&1 || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "image: FAIL: $*" >&2; exit 1; }

bash "$repo/deploy/image/build.sh" "${AMO_IMAGE_BIN:-}"
# shellcheck source=/dev/null
. "${AMO_IMAGE_OUT:-$repo/target/image}/image.env"

# The settings of the local stack, as the container sees them.
(
    set -a
    # shellcheck source=/dev/null
    . "$local_dir/env"
    set +a
    env | grep -E '^AMO_(REDIS_URL|S3_ENDPOINT|S3_BUCKET|S3_REGION|JWT_SECRET)='
    echo "AMO_KEY_FILE=/etc/amo/key.json"
    echo "AMO_S3_PREFIX=image-test/"
    echo "AMO_LOG_FORMAT=json"
) >"$work/container.env"
# The Secret's mode in the pod is 0440 with fsGroup 10001; here the file is
# the container user's own, read-only.
install -m 0400 -o 10001 -g 10001 \
    "$(set -a; . "$local_dir/env"; echo "$AMO_KEY_FILE")" "$work/key.json"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_container NAME: runs the image as NAME on a free loopback port,
# sets `endpoint`, and waits until /readyz answers 200.
start_container() {
    local port
    port=$(free_port)
    containers+=("$1")
    pm run --detach --name "$1" --read-only --tmpfs /tmp:rw,size=64m,mode=1777 \
        --network host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
        --cap-drop ALL --security-opt no-new-privileges \
        --env-file "$work/container.env" \
        --volume "$work/key.json:/etc/amo/key.json:ro" \
        "$AMO_IMAGE_REF" "127.0.0.1:$port" >/dev/null
    endpoint=http://127.0.0.1:$port
    local deadline=$((SECONDS + 60))
    until curl -fsS -o /dev/null --max-time 2 "$endpoint/readyz" 2>/dev/null; do
        [[ $(pm container inspect --format '{{.State.Running}}' "$1") == true ]] ||
            fail "container $1 exited before it was ready"
        ((SECONDS < deadline)) || fail "container $1: $endpoint/readyz not 200 within 60 s"
        sleep 0.2
    done
    echo "image: container $1 ready at $endpoint"
}

# Containers of an earlier run that did not reach its cleanup.
pm rm --force amo-image-a amo-image-b >/dev/null 2>&1 || true
start_container amo-image-a
pid=$(pm container inspect --format '{{.State.Pid}}' amo-image-a)
[[ $(stat -c %u "/proc/$pid") == 10001 ]] || fail "the service runs as uid $(stat -c %u "/proc/$pid"), not 10001"
if pm exec amo-image-a /usr/bin/touch /usr/local/bin/written 2>/dev/null; then
    fail "the root filesystem is writable"
fi
if pm exec amo-image-a /bin/sh -c true 2>/dev/null; then
    fail "the image has a shell"
fi
pm exec amo-image-a /bin/sleep 0 || fail "the image has no /bin/sleep for the preStop hook"
echo "image: runs as uid 10001 on a read-only root, no shell, /bin/sleep present"

echo "image: the generated Python SDK flow through the container"
env -u AMO_SERVICE_BIN AMO_ENDPOINT="$endpoint" bash "$repo/tests/sdk/run.sh"

ensure_tus_venv
"$tus_python" "$here/through.py" tus "$endpoint" "$work"

"$tus_python" "$here/through.py" drain "$endpoint" "$work/drained.json" -- \
    podman --runtime "${AMO_PODMAN_RUNTIME:-/usr/sbin/runc}" \
    --cgroup-manager "${AMO_PODMAN_CGROUP_MANAGER:-cgroupfs}" kill --signal TERM amo-image-a
code=$(pm wait amo-image-a)
[[ $code == 0 ]] || fail "the container exited $code after SIGTERM, not 0"
echo "image: the container exited 0 after its drain"

start_container amo-image-b
"$tus_python" "$here/through.py" readback "$endpoint" "$work/drained.json"
echo "image: OK: $AMO_IMAGE_REF ($AMO_IMAGE_DIGEST)"
