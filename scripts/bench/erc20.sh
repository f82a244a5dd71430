#!/usr/bin/env bash
# erc20 benchmark (issue 21): anvil mining a block every second
# (--block-time 1), ten provider daemons, ten agreements each; the requestor
# daemon accepts the 100 invoices at once. Prints a table: time until all are
# settled, blocks and transactions used. Goal: ≤ 5 s.
# PROFILE=debug measures the debug build (no release build); SKIP_BUILD=1
# skips building.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${PROFILE:-release}"
flags=(--locked)
[[ "$profile" == release ]] && flags+=(--release)
[[ -n "${SKIP_BUILD:-}" ]] || cargo build "${flags[@]}" -p golem-daemon --bins >&2
GOLEM_ANVIL_BIN="$(scripts/ensure-anvil.sh)"
export GOLEM_ANVIL_BIN GOLEM_TEST_ANVIL=1
cargo test "${flags[@]}" -p golem-tests --test payment_erc20 -- --ignored --nocapture \
    bench_erc20_hundred_invoices_to_ten_payees 2>&1 | grep -E '^\|'
