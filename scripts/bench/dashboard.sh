#!/usr/bin/env bash
# Provider dashboard benchmark (issue 23): page load to first complete render
# in headless Chromium on loopback (goal ≤ 300 ms), the API's whole document,
# and the agent's RSS with the page open and updating (goal ≤ 25 MiB), beside
# its RSS without the dashboard. Needs chromium and chromium-driver (Debian).
# Release builds; prints a table. SKIP_BUILD=1 skips the build.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked -p golem-daemon -p exe-unit-wasm -p golem-provider -p golem-requestor >&2
GOLEM_TEST_BROWSER=1 cargo test --release --locked -p golem-tests --test dashboard -- --ignored --nocapture bench_dashboard 2>&1 \
    | grep -E '^\|'
