#!/usr/bin/env bash
# Activity benchmark (issue: activity + WASM): exec round trip of a trivial WASM
# `run` through the requestor's REST API with the provider on another daemon,
# and activity create → Initialized. Release builds; prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked --workspace --bins >&2
cargo test --release --locked -p golem-tests --test activity -- --ignored --nocapture bench_exec_round_trip 2>&1 \
    | grep -E '^\|'
# Exe-unit loss → activity Terminated (issue 18): a unit-level bench of the provider actor.
cargo test --release --locked -p golem-daemon --lib -- --nocapture bench_exe_unit_loss_to_terminated 2>&1 \
    | grep -E '^\|'
