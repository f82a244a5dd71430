#!/usr/bin/env bash
# The scale lab: N golem daemons, each in a network namespace of its own, on
# shaped links, to see how the network behaves with real latency, loss and churn.
#
#   scripts/lab.sh up N [--latency MS] [--jitter MS] [--loss PCT] [--providers K]
#   scripts/lab.sh status [--json] [--no-peers]   # nodes, roles, pids, RSS, connected peers
#   scripts/lab.sh down              # no namespace, process or container left
#
# and, for scripts/bench/scale.sh and hands-on use:
#   scripts/lab.sh exec NODE CMD...  # CMD in NODE's namespace with YAGNA_API_URL,
#                                    # YAGNA_APPKEY, GOLEM_BUS_SOCKET of its daemon and
#                                    # GOLEM_REQUESTOR_FILES_ADDR on the node's address
#   scripts/lab.sh kill NODE...      # SIGKILL a node's daemon and agent (churn)
#   scripts/lab.sh start NODE...     # start them again on the same data dirs
#   scripts/lab.sh reoffer NODE...   # restart a provider's golem-provider: new offers
#   scripts/lab.sh partition | heal  # cut the lab in two halves / join them again
#
# Topology (scripts/lab-net.sh, shared with the `netns_` lab test): node i
# lives in namespace `glab-n<i>` with one veth into the hub namespace
# `glab-hub`, which routes between the nodes; addresses (10.77.0.0/16) exist only
# inside those namespaces. Every packet between two nodes is delayed MS ± jitter
# MS (normal distribution) and dropped with probability PCT once, in the hub:
# one-way delay MS, round trip 2×MS. `tc netem` would do that per veth, but this
# machine's kernel has no netem (nor fq), so golem-lab-links (tools/lab-links)
# shapes the links in user space on a TUN device the hub routes through.
# Roles: n1..nB are bootstrap nodes (B = 3, fewer in small labs; everyone
# bootstraps from them by address), K nodes spread evenly over the rest run
# `golem-provider` beside the daemon (WASM; the VM unit too when a Docker engine
# answers), the others are requestors (a daemon with an app-key; run
# golem-requestor there with `exec`); `status` shows who is what.
# The market subnet is `public`, which every daemon listens to from its start.
#
# State lives in $GOLEM_LAB_DIR (default /var/tmp/golem-lab): data dirs, logs,
# pids, node ids and `lab.env`. Two labs side by side: give the second its
# own GOLEM_LAB_DIR and GOLEM_LAB_PREFIX (its namespaces' name, default `glab`;
# letters and digits, e.g. `glabb`). `down` stops what the pid files name, then
# sweeps by name: every process left in a `<prefix>-*` namespace, the namespaces,
# and Docker containers labelled with a lab node's id, so it also cleans up
# after a crash or a lost state dir. Needs root, iproute2 (`ip`) and python3.
# Binaries: $CARGO_TARGET_DIR/$GOLEM_LAB_PROFILE (default debug), built by the
# caller (cargo build -p golem-daemon -p golem-provider -p exe-unit-wasm -p golem-requestor
# -p golem-lab-links).
set -euo pipefail
# `exec` runs its command where lab.sh was started; everything else from the repo root.
caller_dir="$PWD"
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/pidfiles.sh
source scripts/lib/pidfiles.sh

dir="${GOLEM_LAB_DIR:-/var/tmp/golem-lab}"
prefix="${GOLEM_LAB_PREFIX:-glab}"
[[ "$prefix" =~ ^[a-z][a-z0-9]*$ ]] || { echo "lab.sh: GOLEM_LAB_PREFIX must be lower-case letters and digits, got '$prefix'" >&2; exit 2; }
hub="$prefix-hub"
p2p_port=7464
bin="${CARGO_TARGET_DIR:-$PWD/target}/${GOLEM_LAB_PROFILE:-debug}"

log() { echo "==> $*" >&2; }
die() { echo "lab: $*" >&2; exit 1; }
usage() {
    cat >&2 <<USAGE
usage: scripts/lab.sh up N [--latency MS] [--jitter MS] [--loss PCT] [--providers K]
       scripts/lab.sh status [--json] [--no-peers] | down
       scripts/lab.sh exec NODE CMD... | kill NODE... | start NODE... | reoffer NODE...
       scripts/lab.sh partition | heal
USAGE
    exit 2
}

need_root_and_iproute2() {
    [[ "$(id -u)" == 0 ]] || die "needs root (network namespaces): run it as root, e.g. sudo scripts/lab.sh $*"
    command -v ip >/dev/null 2>&1 || die "needs iproute2 (ip): apt-get install -y iproute2"
    command -v python3 >/dev/null 2>&1 || die "needs python3 (status and roles): apt-get install -y python3"
}

# The link shaper of this build, for lab-net.sh.
need_link_shaper() {
    [[ -x "$bin/golem-lab-links" ]] || die "no link shaper in $bin: cargo build -p golem-lab-links (with --release for GOLEM_LAB_PROFILE=release)"
    export GOLEM_LAB_LINKS="$bin/golem-lab-links"
}

ns_of() { echo "$prefix-$1"; }
addr_of() { awk -v node="$1" '$1 == node { print $2 }' "$dir/addresses"; }
in_ns() { local node="$1"; shift; ip netns exec "$(ns_of "$node")" "$@"; }
# The lab's settings, written by `up`: nodes, providers, bootstraps, latency...
load_env() {
    [[ -f "$dir/lab.env" ]] || die "no lab in $dir (scripts/lab.sh up N first)"
    # shellcheck disable=SC1091
    source "$dir/lab.env"
}

# start_daemon NODE: golem-daemon in NODE's namespace; waits for its REST API.
start_daemon() {
    local node="$1" data="$dir/$1" logfile="$dir/$1.log"
    local args=(run --data-dir "$data" --api-addr 127.0.0.1:0
        --p2p-listen "/ip4/$(addr_of "$node")/tcp/$p2p_port" --log-format json)
    local boot
    for boot in $LAB_BOOTSTRAPS; do
        [[ "$boot" == "$node" ]] || args+=(--bootstrap "/ip4/$(addr_of "$boot")/tcp/$p2p_port")
    done
    # The market's "offer learnt" lines (debug) time offer propagation in scale.sh.
    GOLEM_AUTOCONF_APPKEY="$node-key" RUST_LOG="${RUST_LOG:-info,golem_daemon::market::matching=debug}" \
        setsid ip netns exec "$(ns_of "$node")" "$bin/golem-daemon" "${args[@]}" \
        </dev/null >/dev/null 2>>"$logfile" &
    echo "$!" >"$dir/$node.pid"
}

# wait_ready NODE: until the daemon's REST API line of this run; writes NODE.api.
wait_ready() {
    local node="$1" logfile="$dir/$1.log" runs
    runs="$(cat "$dir/$node.runs" 2>/dev/null || echo 0)"
    for _ in $(seq 1 1200); do
        local line
        # No line yet is no error (grep exits 1: without `|| true` set -e would end the script).
        line="$(grep '"REST API ready"' "$logfile" 2>/dev/null | sed -n "$((runs + 1))p" || true)"
        if [[ -n "$line" ]]; then
            echo "$line" | sed -E 's/.*"api_addr":"([^"]+)".*/http:\/\/\1/' >"$dir/$node.api"
            echo "$((runs + 1))" >"$dir/$node.runs"
            [[ -f "$dir/$node.id" ]] || "$bin/golem-daemon" id show --data-dir "$dir/$node" >"$dir/$node.id"
            return 0
        fi
        kill -0 "$(cat "$dir/$node.pid")" 2>/dev/null || { tail -5 "$logfile" >&2; die "golem-daemon $node exited early (log: $logfile)"; }
        sleep 0.1
    done
    die "golem-daemon $node not ready within 120 s (log: $logfile)"
}

# start_agent NODE: golem-provider beside NODE's daemon, in its namespace.
start_agent() {
    local node="$1" agent="$dir/$1-agent" logfile="$dir/$1-agent.log"
    mkdir -p "$agent"
    [[ -f "$agent/provider.toml" ]] || printf 'debit-note-interval-sec = 10\n' >"$agent/provider.toml"
    RUST_LOG="${RUST_LOG:-info}" PATH="$bin:$PATH" setsid ip netns exec "$(ns_of "$node")" \
        "$bin/golem-provider" --data-dir "$agent" --api-url "$(cat "$dir/$node.api")" \
        --app-key "$node-key" --log-format json \
        run --bus-socket "$dir/$node/bus.sock" --subnet public --node-name "lab-$node" \
        --allow-private-transfers --max-agreements "${GOLEM_LAB_MAX_AGREEMENTS:-2}" \
        </dev/null >/dev/null 2>>"$logfile" &
    echo "$!" >"$dir/$node-agent.pid"
}

wait_agent() {
    local node="$1" logfile="$dir/$1-agent.log"
    local before
    before="$(cat "$dir/$node-agent.runs" 2>/dev/null || echo 0)"
    for _ in $(seq 1 1200); do
        local ready
        ready="$(grep -c 'provider agent ready' "$logfile" 2>/dev/null || true)"
        if (( ${ready:-0} > before )); then
            echo "$((before + 1))" >"$dir/$node-agent.runs"
            return 0
        fi
        kill -0 "$(cat "$dir/$node-agent.pid")" 2>/dev/null || { tail -5 "$logfile" >&2; die "golem-provider $node exited early (log: $logfile)"; }
        sleep 0.1
    done
    die "golem-provider $node not ready within 120 s (log: $logfile)"
}

# role_of NODE: bootstrap (n1..nB), provider (K of them spread evenly over the
# rest, so both halves of a partition hold some) or requestor.
role_of() {
    local i="${1#n}"
    (( i <= LAB_BOOTSTRAP_COUNT )) && { echo bootstrap; return; }
    local j=$((i - LAB_BOOTSTRAP_COUNT - 1))
    local stride=$(( (LAB_NODES - LAB_BOOTSTRAP_COUNT) / LAB_PROVIDERS ))
    if (( LAB_PROVIDERS > 0 && j % stride == 0 && j / stride < LAB_PROVIDERS )); then echo provider
    else echo requestor; fi
}

# start_nodes NODE...: daemons in batches of 10 (2 cores), then the agents.
start_nodes() {
    local nodes=("$@") i
    for ((i = 0; i < ${#nodes[@]}; i += 10)); do
        local batch=("${nodes[@]:i:10}") node
        for node in "${batch[@]}"; do start_daemon "$node"; done
        for node in "${batch[@]}"; do wait_ready "$node"; done
    done
    local agents=()
    for node in "${nodes[@]}"; do
        [[ "$(role_of "$node")" == provider ]] && agents+=("$node")
    done
    for ((i = 0; i < ${#agents[@]}; i += 5)); do
        local batch=("${agents[@]:i:5}") node
        for node in "${batch[@]}"; do start_agent "$node"; done
        for node in "${batch[@]}"; do wait_agent "$node"; done
    done
}

up() {
    local count="${1:-}" latency=50 jitter=10 loss=0.5 providers=""
    [[ "$count" =~ ^[1-9][0-9]*$ ]] || die "up takes the number of nodes first, not '${count}' (e.g. scripts/lab.sh up 20 --providers 5)"
    shift
    while [[ $# -gt 0 ]]; do
        [[ $# -ge 2 ]] || die "$1 needs a value"
        case "$1" in
            --latency) latency="$2" ;;
            --jitter) jitter="$2" ;;
            --loss) loss="$2" ;;
            --providers) providers="$2" ;;
            *) die "unknown option $1 (--latency MS, --jitter MS, --loss PCT, --providers K)" ;;
        esac
        shift 2
    done
    [[ "$latency" =~ ^[0-9]+$ ]] || die "--latency takes whole milliseconds, not '$latency'"
    [[ "$jitter" =~ ^[0-9]+$ ]] || die "--jitter takes whole milliseconds, not '$jitter'"
    [[ "$loss" =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v l="$loss" 'BEGIN { exit !(l < 100) }' \
        || die "--loss takes a percentage below 100, not '$loss'"
    (( count <= 4000 )) || die "at most 4000 nodes (addresses 10.77.0.0/16), not $count"
    local bootstraps=3
    (( count < 8 )) && bootstraps=1
    [[ -n "$providers" ]] || providers=$(( (count - bootstraps) / 5 > 0 ? (count - bootstraps) / 5 : 1 ))
    [[ "$providers" =~ ^[0-9]+$ ]] || die "--providers takes a number, not '$providers'"
    (( providers >= 1 )) || die "--providers takes at least 1"
    (( bootstraps + providers < count )) || die "$count nodes hold $bootstraps bootstrap node(s), $providers provider(s) and at least one requestor: use --providers $((count - bootstraps - 1)) or fewer"
    need_root_and_iproute2 up
    need_link_shaper
    [[ ! -f "$dir/lab.env" ]] || die "a lab is already up in $dir (scripts/lab.sh down first)"
    ! ip netns list | grep -q "^$hub\b" || die "namespace $hub is left from an earlier lab: scripts/lab.sh down sweeps it"
    for binary in golem-daemon golem-provider golem-requestor exe-unit-wasm; do
        [[ -x "$bin/$binary" ]] || die "$bin/$binary is missing: cargo build -p golem-daemon -p golem-provider -p exe-unit-wasm -p golem-requestor (GOLEM_LAB_PROFILE=release for release binaries)"
    done
    mkdir -p "$dir"
    local boot_list="" i
    for i in $(seq 1 "$bootstraps"); do boot_list+="n$i "; done
    cat >"$dir/lab.env" <<ENV
LAB_NODES=$count
LAB_PROVIDERS=$providers
LAB_BOOTSTRAP_COUNT=$bootstraps
LAB_BOOTSTRAPS="${boot_list% }"
LAB_LATENCY_MS=$latency
LAB_JITTER_MS=$jitter
LAB_LOSS_PCT=$loss
LAB_BIN=$bin
ENV
    load_env
    log "making $count namespaces routed through the hub (links: ${latency} ms ± ${jitter} ms, ${loss} % loss)"
    scripts/lab-net.sh create "$prefix" "$count" "$latency" "$jitter" "$loss" "$dir" \
        || { scripts/lab-net.sh destroy "$prefix" "$dir"; rm -rf "$dir"; die "cannot make the lab's network (see above)"; }
    log "starting $count daemons ($bootstraps bootstrap, $providers providers with golem-provider, the rest requestors)"
    local nodes=()
    for i in $(seq 1 "$count"); do nodes+=("n$i"); done
    start_nodes "${nodes[@]}"
    log "lab up in $dir: scripts/lab.sh status; scripts/lab.sh exec n$count golem-requestor --subnet public offers"
}

# rss_kib PID: resident set of a running process, empty when it is gone.
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || true; }
alive_pid() { local pid; pid="$(cat "$1" 2>/dev/null)" && kill -0 "$pid" 2>/dev/null && echo "$pid"; }

status() {
    local json=0 peers=1
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --json) json=1 ;;
            --no-peers) peers=0 ;;
            *) die "status takes --json and --no-peers, not '$1'" ;;
        esac
        shift
    done
    load_env
    local i node rows=() peers_dir
    peers_dir="$(mktemp -d)"
    if (( peers )); then
        # Every daemon's peers (one `net status` each over its bus socket,
        # four at a time: a hundred at once, each a python besides, kept a
        # 2-core machine busy for minutes), counted by one python.
        for i in $(seq 1 "$LAB_NODES"); do
            [[ -n "$(alive_pid "$dir/n$i.pid" || true)" ]] && echo "$i"
        done | xargs -r -P 4 -I{} sh -c \
            '"$1" net status --json --data-dir "$2/n{}" >"$3/n{}.json" 2>/dev/null || true' \
            _ "$bin/golem-daemon" "$dir" "$peers_dir"
        python3 - "$peers_dir" <<'PY'
import json, os, sys
folder = sys.argv[1]
for name in os.listdir(folder):
    if not name.endswith(".json"):
        continue
    try:
        with open(os.path.join(folder, name)) as answer:
            count = len(json.load(answer)["connected"])
    except (OSError, ValueError, KeyError):
        continue
    with open(os.path.join(folder, name[: -len(".json")]), "w") as out:
        print(count, file=out)
PY
    fi
    for i in $(seq 1 "$LAB_NODES"); do
        node="n$i"
        local pid agent_pid="" rss="" agent_rss="" peers="" role
        role="$(role_of "$node")"
        pid="$(alive_pid "$dir/$node.pid" || true)"
        [[ -n "$pid" ]] && rss="$(rss_kib "$pid")"
        if [[ "$role" == provider ]]; then
            agent_pid="$(alive_pid "$dir/$node-agent.pid" || true)"
            [[ -n "$agent_pid" ]] && agent_rss="$(rss_kib "$agent_pid")"
        fi
        peers="$(cat "$peers_dir/$node" 2>/dev/null || true)"
        rows+=("$node|$role|$(addr_of "$node")|${pid:-DEAD}|${rss}|${agent_pid:-}|${agent_rss}|${peers}|$(cat "$dir/$node.id" 2>/dev/null || true)")
    done
    rm -rf "$peers_dir"
    if (( json )); then
        printf '%s\n' "${rows[@]}" | python3 -c '
import json, sys
def num(text): return int(text) if text else None
nodes = []
for line in sys.stdin:
    name, role, addr, pid, rss, agent_pid, agent_rss, peers, node_id = line.rstrip("\n").split("|")
    nodes.append({"node": name, "role": role, "address": addr, "node_id": node_id or None,
                  "daemon_pid": num(pid) if pid != "DEAD" else None, "daemon_rss_kib": num(rss),
                  "agent_pid": num(agent_pid), "agent_rss_kib": num(agent_rss), "peers": num(peers)})
print(json.dumps({"nodes": nodes}, indent=2))'
        return 0
    fi
    echo "lab in $dir: $LAB_NODES nodes, $LAB_PROVIDERS providers, links ${LAB_LATENCY_MS} ms ± ${LAB_JITTER_MS} ms, ${LAB_LOSS_PCT} % loss"
    printf '%-6s %-10s %-13s %-8s %10s %-8s %10s %6s\n' node role address pid "RSS MiB" agent "agent MiB" peers
    local row name role addr pid rss agent_pid agent_rss peers node_id
    for row in "${rows[@]}"; do
        IFS='|' read -r name role addr pid rss agent_pid agent_rss peers node_id <<<"$row"
        printf '%-6s %-10s %-13s %-8s %10s %-8s %10s %6s\n' "$name" "$role" "$addr" "$pid" \
            "$([[ -n "$rss" ]] && awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')" "${agent_pid:--}" \
            "$([[ -n "$agent_rss" ]] && awk -v k="$agent_rss" 'BEGIN { printf "%.1f", k / 1024 }')" "${peers:--}"
    done
}

down() {
    need_root_and_iproute2 down
    shopt -s nullglob
    if [[ -d "$dir" ]]; then
        # Agents first (they end their exe units), then all daemons together.
        stop_pidfiles "$dir"/*-agent.pid
        stop_pidfiles "$dir"/*.pid
    fi
    # The sweep by name: whatever still runs in a lab namespace (a crash, a lost
    # state dir), then the namespaces themselves.
    scripts/lab-net.sh destroy "$prefix" "$dir"
    # Containers of the VM unit, labelled with the provider's node id.
    if command -v docker >/dev/null 2>&1 && timeout 5 docker info >/dev/null 2>&1; then
        local id_file containers
        for id_file in "$dir"/n*.id; do
            containers="$(docker ps -aq --filter "label=golem.node-id=$(cat "$id_file")" 2>/dev/null || true)"
            # shellcheck disable=SC2086
            [[ -n "$containers" ]] && docker rm -f $containers >/dev/null 2>&1 || true
        done
    fi
    rm -rf "$dir"
    local left
    left="$(ip netns list | grep -c "^$prefix-" || true)"
    (( left == 0 )) || die "$left namespace(s) named $prefix-* are still there: ip netns list"
    log "lab down: no $prefix-* namespace, process or container left"
}

node_arg() {
    [[ "$1" =~ ^n[0-9]+$ ]] && (( ${1#n} >= 1 && ${1#n} <= LAB_NODES )) \
        || die "no node '$1' in this lab: nodes are n1..n$LAB_NODES"
}

exec_in() {
    load_env
    [[ $# -ge 2 ]] || die "exec takes a node and a command: scripts/lab.sh exec n5 golem-requestor --subnet public offers"
    local node="$1"
    shift
    node_arg "$node"
    cd "$caller_dir"
    # golem-requestor serves task packages over http on 127.0.0.1 unless told
    # otherwise: in the lab, providers reach it at the node's own address.
    GOLEM_REQUESTOR_FILES_ADDR="${GOLEM_REQUESTOR_FILES_ADDR:-$(addr_of "$node"):0}" \
        YAGNA_API_URL="$(cat "$dir/$node.api")" YAGNA_APPKEY="$node-key" \
        GOLEM_BUS_SOCKET="$dir/$node/bus.sock" PATH="$bin:$PATH" in_ns "$node" "$@"
}

kill_nodes() {
    load_env
    local node
    for node in "$@"; do
        node_arg "$node"
        local file
        for file in "$dir/$node-agent.pid" "$dir/$node.pid"; do
            [[ -f "$file" ]] && kill -KILL "$(cat "$file")" 2>/dev/null || true
        done
    done
}

start_again() {
    need_root_and_iproute2 start
    load_env
    local node
    for node in "$@"; do
        node_arg "$node"
        [[ -z "$(alive_pid "$dir/$node.pid" || true)" ]] || die "$node is running (scripts/lab.sh kill $node first)"
    done
    start_nodes "$@"
}

# reoffer NODE...: restart their agents; the agent replaces its offers by new ones.
reoffer() {
    need_root_and_iproute2 reoffer
    load_env
    local node
    for node in "$@"; do
        node_arg "$node"
        [[ "$(role_of "$node")" == provider ]] || die "$node is not a provider (scripts/lab.sh status)"
        stop_pidfiles "$dir/$node-agent.pid"
        start_agent "$node"
        wait_agent "$node"
    done
}

# partition: the lower and upper halves of the nodes stop reaching each other.
cut_or_join() {
    need_root_and_iproute2 "$1"
    load_env
    scripts/lab-net.sh "$1" "$prefix" "$dir"
}

case "${1:-}" in
    up) shift; up "$@" ;;
    status) shift; status "$@" ;;
    down) down ;;
    exec) shift; exec_in "$@" ;;
    kill) shift; kill_nodes "$@" ;;
    start) shift; start_again "$@" ;;
    reoffer) shift; reoffer "$@" ;;
    partition) cut_or_join cut; log "partitioned: n1..n$((LAB_NODES / 2)) | n$((LAB_NODES / 2 + 1))..n$LAB_NODES" ;;
    heal) cut_or_join join; log "healed" ;;
    *) usage ;;
esac
