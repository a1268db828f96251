# Sourced by .ci/run and by the scripts it runs that may leave a part of
# themselves out (.ci/deny.sh, deploy/nginx/check.sh). `ci_skip WHAT` prints
# "SKIPPED: WHAT" on stderr and, under .ci/run (which exports AMO_CI_SKIPS,
# a file), appends WHAT to that file: .ci/run's closing summary repeats
# every line of it, so no part of CI is left out in silence.
ci_skip() {
    echo "SKIPPED: $*" >&2
    if [ -n "${AMO_CI_SKIPS:-}" ]; then
        printf '%s\n' "$*" >>"$AMO_CI_SKIPS"
    fi
}
