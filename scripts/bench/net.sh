#!/usr/bin/env bash
# Net benchmarks (issue: net). Starts N (default 20) release daemons on
# loopback that know one bootstrap node, then prints a table of:
#   - remote request/reply round trip between two daemons (p50/p99)
#   - broadcast reach: one daemon's message seen by all others (p50/max of 20)
#   - RSS per daemon with the network connected (mean/max)
set -euo pipefail
cd "$(dirname "$0")/../.."
count="${NODES:-20}"

echo "building release binaries..." >&2
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked -p golem-daemon --bins --example net_bench >&2
target_dir="${CARGO_TARGET_DIR:-target}"
daemon="$target_dir/release/golem-daemon"
bench="$target_dir/release/examples/net_bench"

work="$(mktemp -d -t golem-net-bench-XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; sleep 0.5; rm -rf "$work"; }
trap cleanup EXIT

start() { # name [extra args...]
    local name="$1"; shift
    "$daemon" run --data-dir "$work/$name" --api-addr 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 \
        --log-format json "$@" 2>"$work/$name.log" &
    pids+=("$!")
    for _ in $(seq 1 200); do grep -q 'REST API ready' "$work/$name.log" 2>/dev/null && return; sleep 0.02; done
    echo "$name did not start" >&2; cat "$work/$name.log" >&2; exit 1
}

start n1
bootstrap="$("$daemon" net status --json --data-dir "$work/n1" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["listen_addrs"][0] + "/p2p/" + s["peer_id"])')"
dirs=("$work/n1")
for i in $(seq 2 "$count"); do
    start "n$i" --bootstrap "$bootstrap"
    dirs+=("$work/n$i")
done
echo "waiting for the $count daemons to connect..." >&2
sleep 5

out="$("$bench" "${dirs[@]}")"
echo "$out" >&2
rss="$(for pid in "${pids[@]}"; do awk '/VmRSS/ {print $2}' "/proc/$pid/status"; done | awk '{s+=$1; if ($1>m) m=$1} END {printf "%.1f MiB mean, %.1f MiB max", s/NR/1024, m/1024}')"
peers="$("$daemon" net status --json --data-dir "$work/n1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["connected"]))')"
rtt_p50="$(echo "$out" | sed -nE 's/^rtt_ms p50=([0-9.]+).*/\1/p')"
rtt_p99="$(echo "$out" | sed -nE 's/^rtt_ms .*p99=([0-9.]+).*/\1/p')"
reach_p50="$(echo "$out" | sed -nE 's/^reach_ms .*p50=([0-9.]+).*/\1/p')"
reach_max="$(echo "$out" | sed -nE 's/^reach_ms .*max=([0-9.]+).*/\1/p')"

printf '\n| Measure | Result | Goal |\n|---|---|---|\n'
printf '| Remote request/reply round trip, two daemons on loopback | p50 %s ms, p99 %s ms | p50 <= 1 ms |\n' "$rtt_p50" "$rtt_p99"
printf '| Broadcast reach, 1 -> all of %s daemons | p50 %s ms, max %s ms (20 rounds) | <= 500 ms |\n' "$count" "$reach_p50" "$reach_max"
printf '| RSS per daemon, %s daemons (bootstrap has %s peers) | %s | <= 40 MiB |\n' "$count" "$peers" "$rss"
