# Sourced by tests/tus/run.sh and tests/image/run.sh: the venv with tuspy
# (the tus project's Python client, from PyPI) and the signing library, at
# $local_dir/venv-tus. Sets `tus_python` to its interpreter.

# The versions these checks were written against; bump them deliberately.
tuspy_version=1.1.0
tus_cryptography_version=50.0.2

ensure_tus_venv() {
    local venv=${local_dir:-${AMO_LOCAL_DIR:-/tmp/amo-local}}/venv-tus
    if [[ ! -x $venv/bin/python ]]; then
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "tuspy==$tuspy_version" "cryptography==$tus_cryptography_version"
    tus_python=$venv/bin/python
}
