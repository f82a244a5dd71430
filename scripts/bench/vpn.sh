#!/usr/bin/env bash
# VPN benchmark (issue 19): a requestor daemon and two provider daemons, each
# with the real provider agent and the VM runtime, one network between them
# (tests/tests/vpn_stack.rs, `bench_vpn_stack`). Prints a table of:
#   - one TCP stream requestor -> container over the Net API's WebSocket
#     (64 MiB in 64 KiB messages into a sink), MB/s; and an echo both ways
#   - WebSocket open -> first byte of a container's HTTP answer (p50/p90 of 30)
#   - TCP round trip requestor <-> container over an open WebSocket (p50/p90)
#   - TCP round trip container A <-> container B across the two providers
#     (mean of 1000 ping-pongs on one connection, timed inside A with builtins)
# Needs an engine (started by scripts/ensure-docker.sh) and root (the VM unit
# makes TUN interfaces). Release builds; SKIP_BUILD=1 reuses the binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-docker.sh >&2
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked -p golem-daemon -p exe-unit-vm -p golem-provider --bins >&2
GOLEM_TEST_DOCKER=1 cargo test --release --locked -p golem-tests --test vpn_stack -- --ignored --nocapture bench_vpn_stack 2>&1 \
    | grep -E '^\|'
