#!/usr/bin/env bash
# Market benchmarks (issue 4). Starts real release daemons through the e2e
# Sandbox and prints a table of latencies measured with the typed REST client:
#   - demand subscribed -> first proposal event (POST /demands + first events
#     call), provider and requestor on one node
#   - the same with the offer's provider on a second daemon, offer already known
#   - offer subscribed on P -> visible as a proposal on R (gossip broadcast)
#   - counter-proposal -> provider's Draft -> agreement created, confirmed and
#     Approved (provider agent answering at once)
#   - a market scan over 10,000 known offers: the first page (500) and all of
#     them, filtered by a two-clause constraint (in process, no HTTP)
# MARKET_BENCH_ROUNDS (default 30) sets the samples per row.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "building release binaries..." >&2
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release -p golem-daemon --bins >&2
cargo test --release -p golem-tests --test market --no-run >&2
cargo test --release -p golem-tests --test market -- --ignored --nocapture --exact bench_market_latencies 2>/dev/null \
  | grep '^|'
cargo test --release -p golem-daemon --lib -- --ignored --nocapture --exact \
  market::scan_iterators::tests::bench_scan_of_ten_thousand_offers 2>/dev/null | grep '^|'
