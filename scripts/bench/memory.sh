#!/usr/bin/env bash
# Memory over many jobs: does any process grow with every agreement? A devnet
# (requestor daemon + 2 provider daemons with golem-provider, loopback, release
# binaries) runs the demo job (`golem-requestor script examples/demo/job.toml`,
# 6 WASM tasks, new allocation, demand and agreements each time) back to back
# for MINUTES (default 5). Every 30 s it prints jobs done, the RSS of each
# daemon and agent, and the size of the requestor's sled database.
#
#   scripts/bench/memory.sh [MINUTES]      # SKIP_BUILD=1 reuses the release binaries
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes="${1:-5}"
export GOLEM_DEVNET_DIR="${GOLEM_DEVNET_DIR:-/tmp/golem-memory}"
export GOLEM_DEVNET_SUBNET=memory GOLEM_DEVNET_PROFILE=release GOLEM_DEVNET_DEBIT_NOTE_INTERVAL=60
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked --workspace --bins >&2
scripts/devnet.sh down >/dev/null 2>&1 || true
SKIP_BUILD=1 scripts/devnet.sh up 2 2>/dev/null
trap 'scripts/devnet.sh down >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "$GOLEM_DEVNET_DIR/env"
work=$(mktemp -d)
cp -r examples/demo/. "$work/"

rss() { # rss PIDFILE -> MiB
    local pid; pid=$(cat "$1" 2>/dev/null) || { echo "-"; return; }
    awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status" 2>/dev/null || echo "-"
}
sample() {
    local d=$GOLEM_DEVNET_DIR
    printf '| %5s | %4d | %8s | %8s | %8s | %8s | %8s | %8s |\n' "$1" "$2" \
        "$(rss "$d/requestor.pid")" "$(rss "$d/provider-1.pid")" "$(rss "$d/provider-2.pid")" \
        "$(rss "$d/provider-1-agent.pid")" "$(rss "$d/provider-2-agent.pid")" \
        "$(du -sm "$d/requestor/db" | cut -f1)"
}
echo "| time s | jobs | requestor daemon MiB | provider-1 daemon MiB | provider-2 daemon MiB | agent-1 MiB | agent-2 MiB | requestor sled MiB |"
echo "|---|---|---|---|---|---|---|---|"
start=$SECONDS jobs=0 failed=0 next=0
sample 0 0
while (( SECONDS - start < minutes * 60 )); do
    if (cd "$work" && "$GOLEM_DEVNET_BIN/golem-requestor" --subnet memory script job.toml >/dev/null 2>&1); then
        jobs=$((jobs + 1))
    else
        failed=$((failed + 1))
    fi
    if (( SECONDS - start >= next + 30 )); then
        next=$((SECONDS - start)); sample "$next" "$jobs"
    fi
done
sample "$((SECONDS - start))" "$jobs"
echo "$jobs jobs done, $failed failed, in $((SECONDS - start)) s" >&2
