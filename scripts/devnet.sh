#!/usr/bin/env bash
# A local Golem network on loopback for trying commands by hand:
#
#   scripts/devnet.sh up [PROVIDERS]   # requestor daemon + PROVIDERS (default 2) provider
#                                      # daemons, each with golem-provider; prints how to use it
#   scripts/devnet.sh status           # processes, peers and the offers on the market
#   scripts/devnet.sh down             # stop everything and remove the network's directory
#
# State lives in $GOLEM_DEVNET_DIR (default /tmp/golem-devnet): data dirs, logs,
# pids and `env` (source it for YAGNA_API_URL / YAGNA_APPKEY, and GOLEM_BUS_SOCKET
# so golem-requestor moves task files with gftp). Ports are picked
# by the kernel (port 0) and read back from the daemons, so nothing collides.
# The subnet is $GOLEM_DEVNET_SUBNET (default `devnet`). Builds the debug
# binaries first unless SKIP_BUILD=1; honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib/pidfiles.sh
source scripts/lib/pidfiles.sh

dir="${GOLEM_DEVNET_DIR:-/tmp/golem-devnet}"
subnet="${GOLEM_DEVNET_SUBNET:-devnet}"
# GOLEM_DEVNET_PROFILE=release runs release binaries (built by the caller; with SKIP_BUILD=1).
bin="${CARGO_TARGET_DIR:-$PWD/target}/${GOLEM_DEVNET_PROFILE:-debug}"

log() { echo "==> $*" >&2; }
die() { echo "devnet: $*" >&2; exit 1; }

build() {
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        log "building the binaries (debug): cargo build --workspace --bins --locked"
        cargo build --workspace --bins --locked
    fi
    for binary in golem-daemon golem-provider golem-requestor exe-unit-wasm; do
        [[ -x "$bin/$binary" ]] || die "$bin/$binary is missing: build with cargo build --workspace --bins"
    done
}

# start_daemon NAME [BOOTSTRAP]: start golem-daemon with an app-key; prints its API URL.
start_daemon() {
    local name="$1" bootstrap="${2:-}"
    local data="$dir/$name" logfile="$dir/$name.log"
    local args=(run --data-dir "$data" --api-addr 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 --log-format json)
    [[ -n "$bootstrap" ]] && args+=(--bootstrap "$bootstrap")
    GOLEM_AUTOCONF_APPKEY="$name-key" RUST_LOG="${RUST_LOG:-info}" \
        setsid "$bin/golem-daemon" "${args[@]}" </dev/null >/dev/null 2>"$logfile" &
    echo "$!" >"$dir/$name.pid"
    local pid=$!
    for _ in $(seq 1 600); do
        if grep -q '"REST API ready"' "$logfile" 2>/dev/null; then
            grep '"REST API ready"' "$logfile" | head -1 | sed -E 's/.*"api_addr":"([^"]+)".*/http:\/\/\1/'
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { cat "$logfile" >&2; die "golem-daemon $name exited early"; }
        sleep 0.05
    done
    die "golem-daemon $name not ready within 30 s (log: $logfile)"
}

# start_provider NAME API_URL: golem-provider beside daemon NAME. The whole
# network is on loopback and the requestor serves task files on 127.0.0.1, so
# the providers explicitly allow transfers to private addresses.
start_provider() {
    local name="$1" api_url="$2"
    local agent="$dir/$name-agent" logfile="$dir/$name-agent.log"
    mkdir -p "$agent"
    printf 'debit-note-interval-sec = %s\n' "${GOLEM_DEVNET_DEBIT_NOTE_INTERVAL:-2}" >"$agent/provider.toml"
    local exe_units=()
    [[ -n "${GOLEM_DEVNET_EXE_UNITS:-}" ]] && exe_units=(--exe-units "$GOLEM_DEVNET_EXE_UNITS")
    RUST_LOG="${RUST_LOG:-info}" PATH="$bin:$PATH" setsid "$bin/golem-provider" \
        --data-dir "$agent" --api-url "$api_url" --app-key "$name-key" --log-format json \
        run --bus-socket "$dir/$name/bus.sock" --subnet "$subnet" --node-name "$name" \
        --allow-private-transfers \
        --max-agreements "${GOLEM_DEVNET_MAX_AGREEMENTS:-4}" "${exe_units[@]}" \
        </dev/null >/dev/null 2>"$logfile" &
    echo "$!" >"$dir/$name-agent.pid"
    local pid=$!
    for _ in $(seq 1 600); do
        grep -q 'provider agent ready' "$logfile" 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$logfile" >&2; die "golem-provider $name exited early"; }
        sleep 0.05
    done
    die "golem-provider $name not ready within 30 s (log: $logfile)"
}

up() {
    local providers="${1:-2}"
    [[ "$providers" =~ ^[1-9][0-9]*$ ]] || die "up takes a number of providers, not $providers"
    if [[ -f "$dir/env" ]]; then die "a devnet is already up in $dir (scripts/devnet.sh down first)"; fi
    build
    mkdir -p "$dir"
    log "starting the requestor daemon"
    local api_url
    api_url="$(start_daemon requestor)"
    # Bootstrap from the requestor's listen address (a NodeId is looked up by the net).
    local bootstrap
    bootstrap="$("$bin/golem-daemon" net status --json --data-dir "$dir/requestor" | tr -d ' \n' \
        | sed -E 's/.*"listen_addrs":\["([^"]+)".*/\1/')"
    [[ "$bootstrap" == /ip4/* ]] || die "cannot read the requestor daemon's listen address"
    for i in $(seq 1 "$providers"); do
        log "starting provider-$i (daemon + golem-provider)"
        local provider_url
        provider_url="$(start_daemon "provider-$i" "$bootstrap")"
        start_provider "provider-$i" "$provider_url"
    done
    cat >"$dir/env" <<ENV
export YAGNA_API_URL=$api_url
export YAGNA_APPKEY=requestor-key
export GOLEM_DEVNET_SUBNET=$subnet
export GOLEM_DEVNET_BIN=$bin
# golem-requestor moves task files with gftp over the requestor daemon's bus.
export GOLEM_BUS_SOCKET=$dir/requestor/bus.sock
ENV
    log "devnet up in $dir: requestor at $api_url, $providers provider(s) on subnet $subnet"
    cat >&2 <<HELP
    source $dir/env
    $bin/golem-requestor --subnet $subnet offers
    $bin/golem-requestor --subnet $subnet run --runtime wasm --package examples/demo/transform.wat -- transform
    $bin/golem-requestor --subnet $subnet script examples/demo/job.toml
    scripts/devnet.sh down
HELP
}

down() {
    [[ -d "$dir" ]] || { log "no devnet in $dir"; return 0; }
    # Agents first (they end their exe units and bill), then all daemons together.
    shopt -s nullglob
    stop_pidfiles "$dir"/*-agent.pid
    stop_pidfiles "$dir"/*.pid
    rm -rf "$dir"
    log "devnet down"
}

status() {
    [[ -f "$dir/env" ]] || { echo "no devnet in $dir (scripts/devnet.sh up)"; return 1; }
    # shellcheck disable=SC1091
    source "$dir/env"
    bin="${GOLEM_DEVNET_BIN:-$bin}"
    local file name state
    for file in "$dir"/*.pid; do
        name="$(basename "$file" .pid)"
        if kill -0 "$(cat "$file")" 2>/dev/null; then state=running; else state=DEAD; fi
        printf '%-22s pid %-8s %s\n' "$name" "$(cat "$file")" "$state"
    done
    echo "requestor API: $YAGNA_API_URL (app-key $YAGNA_APPKEY)"
    "$bin/golem-daemon" net status --data-dir "$dir/requestor" || true
    "$bin/golem-requestor" --subnet "$subnet" offers --wait 1 || true
}

case "${1:-}" in
    up) shift; up "$@" ;;
    down) down ;;
    status) status ;;
    *) echo "usage: scripts/devnet.sh up [PROVIDERS] | down | status" >&2; exit 2 ;;
esac
