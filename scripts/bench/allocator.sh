#!/usr/bin/env bash
# The global allocator's cost and gain (docs/rfcs/006-allocator-that-returns-memory.md):
# the same measures on two sets of release binaries, BEFORE (e.g. built with
# `--no-default-features`, glibc's malloc, or main's) and AFTER (this branch,
# mimalloc). For each side, alternating so a busy machine hurts both alike:
#   - idle RSS of a daemon 2 s after start, and after the `GET /me` run
#   - `GET /me` req/s, p50, p99 (wrk -t2 -c32 -d$WRK_DURATION, default 10s)
#   - 1,000 tiny WASM tasks over 4 providers (`golem-requestor script`, the
#     job of `bench_requestor`: hello.wat, parallelism 4) on a loopback devnet
#   - abandoned long-polls (scripts/bench/longpoll.sh, $ROUNDS rounds)
# Prints tables; asserts nothing.
#
#   scripts/bench/allocator.sh BEFORE_RELEASE_DIR AFTER_RELEASE_DIR
#   RUNS=3 BENCHES="me tasks longpoll" scripts/bench/allocator.sh /var/tmp/base/release target/release
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $# -eq 2 ]] || { echo "usage: scripts/bench/allocator.sh BEFORE_RELEASE_DIR AFTER_RELEASE_DIR" >&2; exit 2; }
before=$(realpath "$1") after=$(realpath "$2")
for side in "$before" "$after"; do
    for binary in golem-daemon golem-provider golem-requestor exe-unit-wasm; do
        [[ -x "$side/$binary" ]] || { echo "allocator: $side/$binary is missing (build it with cargo build --release)" >&2; exit 2; }
    done
done
runs=${RUNS:-2}
benches=${BENCHES:-me tasks longpoll}
command -v wrk >/dev/null || { echo "allocator: wrk is missing: apt-get install -y wrk" >&2; exit 2; }
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# me SIDE_DIR LABEL: one daemon, idle RSS, wrk on GET /me, RSS after.
me() {
    local work pid api out
    work=$(mktemp -d)
    GOLEM_AUTOCONF_APPKEY=bench "$1/golem-daemon" run --data-dir "$work/node" --api-addr 127.0.0.1:0 \
        --p2p-listen /ip4/127.0.0.1/tcp/0 --log-format json 2>"$work/daemon.log" &
    pid=$!
    for _ in $(seq 1 300); do grep -q 'REST API ready' "$work/daemon.log" && break; sleep 0.05; done
    api=$(grep 'REST API ready' "$work/daemon.log" | sed -E 's/.*"api_addr":"([^"]+)".*/\1/')
    sleep 2
    local idle
    idle=$(rss_mib "$pid")
    out=$(wrk -t2 -c32 -d"${WRK_DURATION:-10s}" --latency -H 'Authorization: Bearer bench' "http://$api/me")
    printf '| %s | %s MiB | %s | %s | %s | %s MiB | %s |\n' "$2" "$idle" \
        "$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
        "$(echo "$out" | awk '$1=="50%" {print $2}')" "$(echo "$out" | awk '$1=="99%" {print $2}')" \
        "$(rss_mib "$pid")" "$(cut -d' ' -f1 /proc/loadavg)"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}

# tasks SIDE_DIR LABEL: 1,000 tiny tasks over 4 providers on a devnet of SIDE_DIR's binaries.
tasks() {
    local work devnet_dir report
    work=$(mktemp -d) devnet_dir=$(mktemp -d -u /tmp/golem-alloc-devnet-XXXX)
    cp exe-unit-wasm/tests/modules/hello.wat "$work/"
    {
        printf '[demand]\nruntime = "wasm"\npackage = "hello.wat"\n[job]\nbudget = "5"\nparallelism = 4\ncommand = ["hello"]\n'
        for index in $(seq 0 999); do printf '[[task]]\nid = "t%s"\nargs = ["%s"]\n' "$index" "$index"; done
    } >"$work/tiny.toml"
    GOLEM_DEVNET_DIR=$devnet_dir GOLEM_DEVNET_SUBNET=alloc GOLEM_DEVNET_PROFILE=$(basename "$1") \
        CARGO_TARGET_DIR=$(dirname "$1") SKIP_BUILD=1 scripts/devnet.sh up 4 2>/dev/null
    # shellcheck disable=SC1091
    source "$devnet_dir/env"
    sleep 3 # offers reach the requestor
    report=$(cd "$work" && "$1/golem-requestor" --subnet alloc script tiny.toml --json 2>/dev/null | grep '"event":"summary"' | tail -1)
    local daemons=() agents=() file
    for file in "$devnet_dir"/provider-*.pid; do
        case "$file" in *-agent.pid) agents+=("$(rss_mib "$(cat "$file")")") ;; *) daemons+=("$(rss_mib "$(cat "$file")")") ;; esac
    done
    local seconds
    seconds=$(echo "$report" | python3 -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["report"]["seconds"])') || seconds=failed
    printf '| %s | %s tasks/s (%s s) | %s | %s | %s | %s |\n' "$2" \
        "$(python3 -c "import sys; print('%.0f' % (1000 / float(sys.argv[1])))" "$seconds" 2>/dev/null || echo -)" "$seconds" \
        "${daemons[*]}" "${agents[*]}" "$(rss_mib "$(cat "$devnet_dir/requestor.pid")")" "$(cut -d' ' -f1 /proc/loadavg)"
    GOLEM_DEVNET_DIR=$devnet_dir scripts/devnet.sh down 2>/dev/null
    rm -rf "$work"
}

# longpoll SIDE_DIR LABEL: scripts/bench/longpoll.sh on SIDE_DIR's daemon.
longpoll() {
    echo "$2:"
    SKIP_BUILD=1 CARGO_TARGET_DIR=$(dirname "$1") PROFILE=$(basename "$1") ROUNDS=${ROUNDS:-2} \
        scripts/bench/longpoll.sh || true
}

for bench in $benches; do
    case "$bench" in
        me) printf '\n| binaries | idle RSS | GET /me req/s | p50 | p99 | RSS after wrk | load |\n|---|---|---|---|---|---|---|\n' ;;
        tasks) printf '\n| binaries | 1,000 tiny tasks, 4 providers | provider daemons RSS after (MiB) | agents RSS after (MiB) | requestor daemon RSS after (MiB) | load |\n|---|---|---|---|---|---|\n' ;;
        longpoll) echo ;;
        *) echo "allocator: unknown bench $bench (me, tasks, longpoll)" >&2; exit 2 ;;
    esac
    for run in $(seq "$runs"); do
        "$bench" "$before" "before #$run"
        "$bench" "$after" "after #$run"
    done
done
