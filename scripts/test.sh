#!/usr/bin/env bash
# Run every test of the workspace: build the binaries the end-to-end tests
# start, then run all tests with cargo-nextest.
#
# Tests that need something beyond Rust are in tiers, named by a prefix and
# `#[ignore]`d so that a plain `cargo nextest run` reports them as skipped:
#   docker_*  a Docker engine                 (GOLEM_TEST_DOCKER=1)
#   anvil_*   a local anvil chain             (GOLEM_TEST_ANVIL=1, GOLEM_ANVIL_BIN)
#   netns_*   root and iproute2               (GOLEM_TEST_NETNS=1)
#   compat_*  yapapi and golem-js installed   (GOLEM_TEST_COMPAT=1)
#   browser_* Chromium and chromedriver       (GOLEM_TEST_BROWSER=1)
#   systemd_* systemd-analyze (Debian: systemd) (GOLEM_TEST_SYSTEMD=1)
#   fuzz_*    schemathesis installed          (GOLEM_TEST_FUZZ=1)
# This script turns a tier on when what it needs answers here (or when its
# variable is already 1, as CI sets it: then a missing piece fails the tier's
# tests), runs the ignored tests of the tiers that are on (benchmarks `bench_*`
# stay out), and ends with one line naming the tiers run and skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -a ran=() skipped=()
filter='not test(/(^|::)bench_/)'

tier() { # tier NAME VARIABLE PROBE-FUNCTION WHY-SKIPPED
    local name=$1 variable=$2 probe=$3 why=$4
    if [ "${!variable:-}" = 1 ] || $probe; then
        export "$variable=1"
        ran+=("$name")
    else
        skipped+=("$name ($why)")
        filter="$filter and not test(/(^|::)${name}_/)"
    fi
}

docker_answers() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }
anvil_installed() {
    # The same places tests/src/anvil.rs looks.
    local cache=${GOLEM_ANVIL_CACHE:-}
    [ -n "$cache" ] || cache=${XDG_CACHE_HOME:+$XDG_CACHE_HOME/golem-anvil}
    [ -n "$cache" ] || cache=${HOME:-/root}/.cache/golem-anvil
    local bin=${GOLEM_ANVIL_BIN:-$cache/node_modules/.bin/anvil}
    if [ -x "$bin" ]; then export GOLEM_ANVIL_BIN=$bin; return 0; fi
    return 1
}
netns_possible() { [ "$(id -u)" = 0 ] && command -v ip >/dev/null 2>&1; }
compat_installed() {
    local cache=${GOLEM_COMPAT_CACHE:-/var/tmp/golem-compat}
    [ -x "$cache/venv/bin/python" ] && [ -d "$cache/node/node_modules/@golem-sdk/golem-js" ]
}

browser_installed() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
systemd_analyze_installed() { command -v systemd-analyze >/dev/null 2>&1; }
schemathesis_installed() { [ -x "${GOLEM_FUZZ_CACHE:-/var/tmp/golem-fuzz}/venv/bin/schemathesis" ]; }

tier docker GOLEM_TEST_DOCKER docker_answers "no Docker engine answers: scripts/ensure-docker.sh"
tier anvil GOLEM_TEST_ANVIL anvil_installed "no anvil: scripts/ensure-anvil.sh"
tier netns GOLEM_TEST_NETNS netns_possible "needs root and iproute2"
tier compat GOLEM_TEST_COMPAT compat_installed "clients not installed: tests/compat/setup.sh"
tier browser GOLEM_TEST_BROWSER browser_installed "no chromium: apt-get install -y chromium chromium-driver"
tier systemd GOLEM_TEST_SYSTEMD systemd_analyze_installed "no systemd-analyze: apt-get install systemd"
tier fuzz GOLEM_TEST_FUZZ schemathesis_installed "no schemathesis: tests/fuzz/setup.sh"

summary() {
    local ran_text="${ran[*]:-none}" skipped_text
    skipped_text=$(IFS=';'; echo "${skipped[*]:-none}")
    echo "tiers run: ${ran_text// /, }; tiers skipped: ${skipped_text//;/, }"
}

cargo build --workspace --bins --locked
status=0
cargo nextest run --workspace --locked --no-fail-fast --run-ignored all -E "$filter" "$@" || status=$?
summary
exit "$status"
