#!/usr/bin/env bash
# Outbound access under payload manifests (issue 20): HTTP throughput from a
# server in a network namespace (created by the test) into containers on the
# engine's bridge, under runc and under gVisor with its own netstack (the
# engine's runsc-net), each unfiltered and with the VM unit's outbound filter
# (the nftables table exe_unit_vm::outbound loads into an activity's
# container: inet hooks under runc, the interface's netdev egress hook under
# gVisor).
# Goal: the filtered throughput is at least 90 % of the unfiltered one. Needs
# root, iproute2, nft and an engine (scripts/ensure-docker.sh). Release build;
# prints table rows.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/ensure-docker.sh >&2
GOLEM_TEST_DOCKER=1 cargo test --release --locked -p golem-tests --test outbound -- --ignored --nocapture --exact bench_outbound 2>&1 \
    | grep -E '^\|'
