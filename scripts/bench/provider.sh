#!/usr/bin/env bash
# Provider-agent benchmark (issue 6): time from a requestor's proposal to the
# agent's Draft counter, activity-create event → exe unit Initialized, and the
# agent's idle RSS, over 30 agreements between two daemons. Release builds;
# prints a table. SKIP_BUILD=1 skips the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked -p golem-daemon -p exe-unit-wasm -p golem-provider >&2
cargo test --release --locked -p golem-tests --test provider -- --ignored --nocapture bench_provider 2>&1 \
    | grep -E '^\|'
