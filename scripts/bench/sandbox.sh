#!/usr/bin/env bash
# VM exe unit sandboxes (issue 20): activity create → first `run` result and a
# further `run`, under gVisor (runsc) and under runc, side by side with bare
# `docker run --rm --runtime=runsc` / `docker run --rm` and `docker exec` on
# this machine. Needs an engine with runsc registered (scripts/ensure-docker.sh
# does both). Release builds; prints table rows.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-docker.sh >&2
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked --workspace --bins >&2
GOLEM_TEST_DOCKER=1 cargo test --release --locked -p golem-tests --test vm -- --ignored --nocapture --exact bench_sandbox 2>&1 \
    | grep -E '^\|'
