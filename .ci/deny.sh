#!/usr/bin/env bash
# cargo deny with the repository's deny.toml, as CI runs it (.ci/run): bans,
# licenses and sources always; advisories only when the RustSec advisory
# database (a git repository on GitHub) can be fetched, and a loud line
# saying they were not checked when it cannot (ci_skip: .ci/run's summary
# repeats it). Installs cargo-deny (from
# crates.io, built with the lock file it ships) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=skip.sh
. .ci/skip.sh

# The version deny.toml was written for; `cargo install` builds it from
# crates.io in about 4 minutes on 2 cores.
deny_version=0.20.2
if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "cargo-deny is missing: cargo install --locked cargo-deny@$deny_version"
    cargo install --locked "cargo-deny@$deny_version"
fi

cargo deny --locked check bans licenses sources

if cargo deny fetch db; then
    cargo deny --locked check advisories
else
    ci_skip "cargo deny advisories: the RustSec advisory database could not be" \
        "fetched, so security advisories were NOT checked (bans, licenses and sources were)"
fi
