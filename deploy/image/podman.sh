# deploy/image/podman.sh — sourced by deploy/image/build.sh and
# tests/image/run.sh: installs the daemonless image tools from Debian when
# they are missing, and wraps podman in the options that work on the CI
# machines.
#
# podman's default runtime (crun) fails on hosts whose cgroups are in hybrid
# mode ("cgroups in hybrid mode"); runc with the cgroupfs manager works on
# both. Override with AMO_PODMAN_RUNTIME and AMO_PODMAN_CGROUP_MANAGER.

# Installs the Debian packages "$@" (apt-get, as root or with sudo).
image_apt_install() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "need root or sudo to install $*" >&2; return 1; }
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update >/dev/null
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends "$@" >/dev/null
}

# podman, runc, mmdebstrap and uidmap (newuidmap, for a rootless podman),
# from Debian, unless all are already on PATH.
ensure_image_tools() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    [[ -x ${AMO_PODMAN_RUNTIME:-/usr/sbin/runc} ]] || missing+=(runc)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    command -v newuidmap >/dev/null || missing+=(uidmap)
    if ((${#missing[@]})); then
        echo "installing ${missing[*]} from Debian"
        image_apt_install "${missing[@]}"
    fi
}

# podman with the runtime and cgroup manager that work here.
pm() {
    podman --runtime "${AMO_PODMAN_RUNTIME:-/usr/sbin/runc}" \
        --cgroup-manager "${AMO_PODMAN_CGROUP_MANAGER:-cgroupfs}" "$@"
}
