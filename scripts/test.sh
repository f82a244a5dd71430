#!/usr/bin/env bash
# Run every test of the workspace: build the binaries the end-to-end tests
# start, then run all tests with cargo-nextest (cargo test if it is missing).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins --locked
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast "$@"
else
    echo "cargo-nextest not found; falling back to cargo test" >&2
    cargo test --workspace --locked --no-fail-fast "$@"
fi
