#!/usr/bin/env bash
# The scale lab's network, without any daemon: used by scripts/lab.sh and by the
# `netns_` lab test (tests/src/lab.rs), so both build the same thing.
#
#   scripts/lab-net.sh create PREFIX N LATENCY_MS JITTER_MS LOSS_PCT STATE_DIR
#   scripts/lab-net.sh cut|join PREFIX STATE_DIR   # partition the halves / heal
#   scripts/lab-net.sh destroy PREFIX [STATE_DIR]  # also sweeps by PREFIX after a crash
#
# Namespace PREFIX-hub routes between the nodes; node i (1..N) lives in
# namespace PREFIX-n<i>, its only link a veth (`eth0`) whose peer `v<i>` is in
# the hub. Addresses exist only inside those namespaces: the lower half of the
# nodes in 10.77.0.0/17, the upper half in 10.77.128.0/17 (STATE_DIR/addresses
# lists `n<i> <address>`). Links are shaped in the hub: every packet from one
# node to another is routed through the TUN device `glt0`, where
# golem-lab-links (tools/lab-links) delays it LATENCY ± JITTER ms and drops
# LOSS % (this machine's kernel has no `tc netem`). A packet crosses the shaper
# once, so the one-way delay between two nodes is LATENCY and a round trip
# 2 × LATENCY. The shaper binary is $GOLEM_LAB_LINKS, else golem-lab-links in
# the workspace's target dir (release, then debug). Needs root and iproute2.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

die() { echo "lab-net: $*" >&2; exit 1; }
[[ "$(id -u)" == 0 ]] || die "needs root (network namespaces): run it as root"
command -v ip >/dev/null 2>&1 || die "needs iproute2 (ip): apt-get install -y iproute2"

# The shaper's binary: $GOLEM_LAB_LINKS, else the newest build in the target dir.
links_binary() {
    local target="${CARGO_TARGET_DIR:-$here/../target}" candidate
    for candidate in "${GOLEM_LAB_LINKS:-}" "$target/release/golem-lab-links" "$target/debug/golem-lab-links"; do
        [[ -n "$candidate" && -x "$candidate" ]] && { echo "$candidate"; return 0; }
    done
    die "no link shaper: build it with 'cargo build --release -p golem-lab-links' or set GOLEM_LAB_LINKS"
}

# address_of I N: lower half 10.77.<i/200>.<i%200+1>, upper half the same + 128.
address_of() {
    local i="$1" count="$2" base=0
    (( i > count / 2 )) && base=128
    echo "10.77.$((base + i / 200)).$((i % 200 + 1))"
}

create() {
    local prefix="$1" count="$2" latency="$3" jitter="$4" loss="$5" state="$6"
    local hub="$prefix-hub" i links
    links="$(links_binary)"
    # Every node reaches the others through the hub as its router ($gateway,
    # the same link-local address on each of the hub's veths), so a node holds
    # one neighbour entry, not one per peer: the kernel's ARP table is shared
    # by all namespaces and overflows at 1,024 entries (gc_thresh3) — with an
    # on-link /16, 60 nodes already dropped packets ("neighbor table overflow").
    local gateway=169.254.77.1
    mkdir -p "$state"
    ip netns add "$hub"
    ip -n "$hub" link set lo up
    ip netns exec "$hub" sh -c 'sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0'
    ip -n "$hub" tuntap add dev glt0 mode tun
    ip -n "$hub" link set glt0 up
    ip -n "$hub" route add default dev glt0 table 100
    # Back from the shaper: the main table (a /32 per node); anything else for the lab: the shaper.
    ip -n "$hub" rule add pref 100 iif glt0 lookup main
    ip -n "$hub" rule add pref 200 to 10.77.0.0/16 lookup 100
    rm -f "$state/cut"
    # The shaper runs under SCHED_FIFO where chrt is present: on a busy machine a
    # link must not wait for a CPU (a late packet is latency the lab did not ask for).
    local realtime=()
    chrt -f 10 true 2>/dev/null && realtime=(chrt -f 10)
    setsid ip netns exec "$hub" "${realtime[@]}" "$links" --dev glt0 --latency "$latency" \
        --jitter "$jitter" --loss "$loss" --cut-file "$state/cut" </dev/null >/dev/null 2>"$state/links.log" &
    echo "$!" >"$state/links.pid"
    : >"$state/addresses"
    for i in $(seq 1 "$count"); do
        local ns="$prefix-n$i" address
        address="$(address_of "$i" "$count")"
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$hub" link add "v$i" type veth peer name eth0 netns "$ns"
        ip -n "$hub" addr add "$gateway/32" dev "v$i"
        ip -n "$hub" link set "v$i" up
        ip -n "$hub" route add "$address/32" dev "v$i"
        ip -n "$ns" addr add "$address/32" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" route add "$gateway/32" dev eth0 scope link
        ip -n "$ns" route add 10.77.0.0/16 via "$gateway" dev eth0 src "$address"
        echo "n$i $address" >>"$state/addresses"
    done
    kill -0 "$(cat "$state/links.pid")" 2>/dev/null || die "the link shaper did not start: $(cat "$state/links.log")"
}

destroy() {
    local prefix="$1" state="${2:-}" ns pids
    if [[ -n "$state" && -f "$state/links.pid" ]]; then
        kill "$(cat "$state/links.pid")" 2>/dev/null || true
        rm -f "$state/links.pid"
    fi
    for ns in $(ip netns list | awk '{ print $1 }' | grep "^$prefix-" || true); do
        pids="$(ip netns pids "$ns" 2>/dev/null || true)"
        # shellcheck disable=SC2086
        [[ -z "$pids" ]] || kill -KILL $pids 2>/dev/null || true
    done
    for ns in $(ip netns list | awk '{ print $1 }' | grep "^$prefix-" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
}

case "${1:-}" in
    create) [[ $# -eq 7 ]] || die "create PREFIX N LATENCY_MS JITTER_MS LOSS_PCT STATE_DIR"; shift; create "$@" ;;
    cut) [[ $# -eq 3 ]] || die "cut PREFIX STATE_DIR"; touch "$3/cut" ;;
    join) [[ $# -eq 3 ]] || die "join PREFIX STATE_DIR"; rm -f "$3/cut" ;;
    destroy) [[ $# -ge 2 ]] || die "destroy PREFIX [STATE_DIR]"; shift; destroy "$@" ;;
    *) die "usage: create PREFIX N LATENCY_MS JITTER_MS LOSS_PCT STATE_DIR | cut|join PREFIX STATE_DIR | destroy PREFIX [STATE_DIR]" ;;
esac
