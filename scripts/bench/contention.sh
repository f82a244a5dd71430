#!/usr/bin/env bash
# Contention benchmark (issue 22, item 4): 4 requestor daemons each running a
# 150-task WASM job (`golem-requestor script`, parallelism 3) against 3
# providers started together, and the same 600 tasks from one requestor. Real
# daemons over libp2p on loopback, real golem-provider agents (WASM exe unit,
# the default capacity: as many agreements as the demands' threads fit).
# Goal: every task of every job done, total ≤ 2× the single requestor's time.
# Release builds (PROFILE=debug for a quick look without one); prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
release=--release
[[ "${PROFILE:-release}" == debug ]] && release=
[[ -n "${SKIP_BUILD:-}" ]] ||
    cargo build $release --locked -p golem-daemon -p golem-provider -p golem-requestor -p exe-unit-wasm --bins >&2
cargo test $release --locked -p golem-tests --test contention -- --ignored --nocapture --test-threads 1 bench_contention 2>&1 \
    | grep -E '^\|'
