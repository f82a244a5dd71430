#!/usr/bin/env bash
# VM exe unit benchmark (issue 8), side by side with bare docker on this
# machine: activity create → first `run` result for a cached image vs
# `docker run --rm`; a further `run` vs `docker exec`; deploy (download +
# sha3 + load) of a 100 MiB image from loopback. Needs an engine (started by
# scripts/ensure-docker.sh). Release builds; prints a table.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-docker.sh >&2
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked --workspace --bins >&2
GOLEM_TEST_DOCKER=1 cargo test --release --locked -p golem-tests --test vm -- --ignored --nocapture bench_vm 2>&1 \
    | grep -E '^\|'
