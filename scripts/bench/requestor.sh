#!/usr/bin/env bash
# Requestor benchmark (issue 9): hello-world time to result with
# `golem-requestor run` (WASM, network already up, one provider) and 1,000 tiny
# WASM tasks over 4 providers with `golem-requestor script` (tasks/s); and
# `golem-requestor run --runtime vm` vs bare `docker run --rm` of the same image
# (when a Docker engine answers; scripts/ensure-docker.sh starts one). Real
# daemons and golem-provider agents on loopback. Release builds; prints tables.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -n "${SKIP_BUILD:-}" ]] ||
    cargo build --release --locked -p golem-daemon -p golem-provider -p golem-requestor -p exe-unit-wasm -p exe-unit-vm --bins >&2
cargo test --release --locked -p golem-tests --test requestor -- --ignored --nocapture --test-threads 1 bench_requestor 2>&1 \
    | grep -E '^\|'
