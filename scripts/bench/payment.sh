#!/usr/bin/env bash
# Payment benchmark (issue 7), two real daemons, release builds; prints tables.
# - dummy-local-tglm: 1,000 debit notes accepted across 100 agreements (rate)
#   and invoice accept → settled.
# - erc20 on a local anvil chain (auto-mine) with the GLM-like test token:
#   invoice accept → settled (token transfer signed, mined, recorded).
# SKIP_BUILD=1 skips the release build; SKIP_ANVIL=1 skips the erc20 part.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked --workspace --bins >&2
cargo test --release --locked -p golem-tests --test payment -- --ignored --nocapture bench_payment 2>&1 \
    | grep -E '^\|'
if [[ -z "${SKIP_ANVIL:-}" ]]; then
    GOLEM_ANVIL_BIN="$(scripts/ensure-anvil.sh)"
    export GOLEM_ANVIL_BIN GOLEM_TEST_ANVIL=1
    cargo test --release --locked -p golem-tests --test payment_erc20 -- --ignored --nocapture bench_payment_erc20 2>&1 \
        | grep -E '^\|'
fi
