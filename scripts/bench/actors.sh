#!/usr/bin/env bash
# Issue 18 (the daemon as actors): the issue's measures before and after, in
# one run on one machine. For each benchmark it runs the BEFORE checkout, then
# this one, and prints both tables one after the other:
#   - GET /me req/s and p99 (foundation.sh)
#   - demand → first proposal, counter → Approved (market.sh)
#   - exec round trip on a Ready WASM activity (activity.sh)
#   - 1,000 debit notes accepted/s (payment.sh, dummy driver)
#   - 1,000 tiny tasks over 4 providers (requestor.sh)
# Usage: scripts/bench/actors.sh [BEFORE_REV]   (default: the commit before issue 18, 7f8cd70)
# BEFORE_DIR (a worktree of BEFORE_REV, made if missing) and BEFORE_TARGET (its
# cargo target dir) can be given to reuse a build. Release builds; slow the
# first time (both sides build). BENCHES limits the list, e.g. BENCHES="foundation market".
set -euo pipefail
source "$(dirname "$0")/before-after.sh"
benches="${BENCHES:-foundation market activity payment requestor}"

build() { # dir target
    echo "building release binaries and test binaries in $1..." >&2
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo build --release --locked --workspace --bins --examples >&2 \
        && CARGO_TARGET_DIR="$2" cargo test --release --locked -p golem-tests --no-run >&2 \
        && CARGO_TARGET_DIR="$2" cargo test --release --locked -p golem-daemon --lib --no-run >&2)
}
[[ -n "${SKIP_BUILD:-}" ]] || { build "$before_dir" "$before_target"; build "$after_dir" "$after_target"; }

run() { # label dir target bench
    echo
    echo "### $4 — $1 ($(git -C "$2" rev-parse --short HEAD))"
    (cd "$2" && CARGO_TARGET_DIR="$3" SKIP_BUILD=1 SKIP_ANVIL=1 bash "scripts/bench/$4.sh" 2>/dev/null) \
        || echo "($4 failed on the $1 side)"
}

echo "# Issue 18 benchmarks: before $before_rev, after $(git rev-parse --short HEAD); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for bench in $benches; do
    run before "$before_dir" "$before_target" "$bench"
    run after "$after_dir" "$after_target" "$bench"
done
