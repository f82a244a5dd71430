#!/usr/bin/env bash
# Payment benchmark (issue 7): 1,000 debit notes accepted across 100 agreements
# (rate) and invoice accept → settled on dummy-local-tglm, two real daemons.
# Release builds; prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked --workspace --bins >&2
cargo test --release --locked -p golem-tests --test payment -- --ignored --nocapture bench_payment 2>&1 \
    | grep -E '^\|'
