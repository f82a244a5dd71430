#!/usr/bin/env bash
# Idle RSS of a daemon and where it goes (issue 22: goal ≤ 30 MiB per idle
# daemon in the 100-node lab). Measures, for each of --rows, one daemon alone
# on loopback (`alone`) or a lab of that many nodes (scripts/lab.sh, network
# namespaces, shaped links, one provider), and prints one table: per row the p50 over the lab's requestor
# nodes (idle daemons that are neither bootstrap nor provider) of RSS split
# by kind (scripts/bench/smaps_classify.py: all anonymous memory, PSS, the
# binary and libraries, glibc's main heap, its per-thread arenas, thread
# stacks, other anonymous memory), threads and connected peers. With --trim-probe it then calls
# `malloc_trim(0)` in one of those daemons through gdb and prints what that
# gave back: memory the allocator held free, not memory in use.
# With --window SECS a lab row is also watched after the settle, every
# --every SECS (default 10) for that long: each idle requestor daemon's RSS
# and established TCP connections (its namespace's, from /proc/PID/net/tcp:
# about one per peer), printed as a table over time (p50, p90 and max over
# the daemons at each sample) and summed up as the highest p50 of any sample
# and each daemon's own peak. One moment can fall on a DHT walk or between
# two: the window shows both. --csv FILE keeps the raw samples
# (seconds,node,rss_kib,connections).
#
#   scripts/bench/idle-rss.sh [--rows "alone 3 11 41"] [--settle SECS] [--trim-probe]
#       [--window SECS] [--every SECS] [--csv FILE]
#       [--latency MS] [--jitter MS] [--loss PCT]
#
# Binaries: $CARGO_TARGET_DIR/$GOLEM_LAB_PROFILE (default release), built by
# the caller. The daemons inherit the environment, so e.g. MALLOC_ARENA_MAX=8
# or GOLEM_NET_TARGET_PEERS=0 compare variants side by side. Each lab is
# taken down after its row. Needs root and iproute2 (the lab); gdb only for
# --trim-probe. A second lab beside another one: GOLEM_LAB_PREFIX and
# GOLEM_LAB_DIR (see scripts/lab.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

rows="alone 3 11 41" settle=90 trim_probe=0 latency=50 jitter=10 loss=0.5
window=0 every=10 csv=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rows) rows="$2"; shift 2 ;;
        --settle) settle="$2"; shift 2 ;;
        --trim-probe) trim_probe=1; shift ;;
        --window) window="$2"; shift 2 ;;
        --every) every="$2"; shift 2 ;;
        --csv) csv="$2"; shift 2 ;;
        --latency) latency="$2"; shift 2 ;;
        --jitter) jitter="$2"; shift 2 ;;
        --loss) loss="$2"; shift 2 ;;
        *) sed -n '2,32p' "$0" >&2; exit 2 ;;
    esac
done
[[ "$settle" =~ ^[0-9]+$ ]] || { echo "idle-rss: --settle takes whole seconds, not '$settle'" >&2; exit 2; }
[[ "$window" =~ ^[0-9]+$ ]] || { echo "idle-rss: --window takes whole seconds, not '$window'" >&2; exit 2; }
[[ "$every" =~ ^[0-9]+$ ]] && (( every > 0 )) || { echo "idle-rss: --every takes whole seconds above 0, not '$every'" >&2; exit 2; }
for row in $rows; do
    [[ "$row" == alone ]] || { [[ "$row" =~ ^[0-9]+$ ]] && (( row >= 3 )); } \
        || { echo "idle-rss: a row is 'alone' or a lab size of at least 3 nodes (a bootstrap node, a provider, a requestor), not '$row'" >&2; exit 2; }
done
if [[ "$trim_probe" == 1 ]] && ! command -v gdb >/dev/null 2>&1; then
    echo "idle-rss: --trim-probe needs gdb (apt-get install -y gdb)" >&2
    exit 2
fi

export GOLEM_LAB_PROFILE="${GOLEM_LAB_PROFILE:-release}"
bin="${CARGO_TARGET_DIR:-$PWD/target}/$GOLEM_LAB_PROFILE"
[[ -x "$bin/golem-daemon" ]] || { echo "idle-rss: $bin/golem-daemon is missing: cargo build --release -p golem-daemon -p golem-provider -p exe-unit-wasm -p golem-requestor" >&2; exit 2; }
lab=scripts/lab.sh
work=$(mktemp -d -t golem-idle-rss-XXXXXX)
alone_pid=""
cleanup() {
    [[ -z "$alone_pid" ]] || kill "$alone_pid" 2>/dev/null || true
    "$lab" down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
log() { echo "==> $*" >&2; }

# trim_probe PID LABEL: RSS before and after malloc_trim(0) called in PID.
trim_probe() {
    local pid="$1" label="$2" before after
    before=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    gdb -p "$pid" -batch -ex 'call (int) malloc_trim(0)' >/dev/null 2>&1 || true
    after=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
    echo "$label|$pid|$before|$after" >>"$work/trims"
}

# measure_alone: one daemon on loopback, no bootstrap, no peer.
measure_alone() {
    log "one daemon alone (settling ${settle} s)"
    GOLEM_AUTOCONF_APPKEY=alone-key "$bin/golem-daemon" run --data-dir "$work/alone" \
        --api-addr 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 --log-format json \
        </dev/null >/dev/null 2>"$work/alone.log" &
    alone_pid=$!
    sleep "$settle"
    scripts/bench/smaps_classify.py "$alone_pid" | sed 's/^/alone|0|/' >>"$work/rows"
    [[ "$trim_probe" == 0 ]] || trim_probe "$alone_pid" alone
    kill "$alone_pid"
    wait "$alone_pid" 2>/dev/null || true
    alone_pid=""
}

# measure_lab SIZE: every idle requestor daemon of a lab of SIZE nodes.
measure_lab() {
    local size="$1"
    "$lab" down >/dev/null 2>&1 || true
    log "lab of $size nodes (settling ${settle} s)"
    "$lab" up "$size" --latency "$latency" --jitter "$jitter" --loss "$loss" --providers 1 >/dev/null
    sleep "$settle"
    "$lab" status --json >"$work/status.json"
    python3 - "$work/status.json" <<'PY' >"$work/requestors"
import json, sys
for node in json.load(open(sys.argv[1]))["nodes"]:
    if node["role"] == "requestor" and node["daemon_pid"]:
        print(node["daemon_pid"], node["peers"] if node["peers"] is not None else -1)
PY
    while read -r pid peers; do
        scripts/bench/smaps_classify.py "$pid" | sed "s/^/lab $size|$peers|/" >>"$work/rows"
    done <"$work/requestors"
    if [[ "$trim_probe" == 1 ]]; then
        trim_probe "$(awk 'NR == 1 { print $1 }' "$work/requestors")" "lab $size"
    fi
    (( window == 0 )) || watch_lab "$size"
    "$lab" down >/dev/null
}

# watch_lab SIZE: the idle requestor daemons' RSS and connections every
# $every s for $window s (appended to $work/window as "lab SIZE|secs|pid|kib|conns").
watch_lab() {
    local size="$1" start now pid rss conns
    log "watching the lab of $size nodes for ${window} s, every ${every} s"
    start=$(date +%s)
    while now=$(date +%s); (( now - start < window )); do
        while read -r pid _; do
            rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
            conns=$(awk 'FNR > 1 && $4 == "01"' "/proc/$pid/net/tcp" "/proc/$pid/net/tcp6" 2>/dev/null | wc -l)
            echo "lab $size|$((now - start))|$pid|$rss|$conns" >>"$work/window"
        done <"$work/requestors"
        sleep "$every"
    done
}

for row in $rows; do
    if [[ "$row" == alone ]]; then measure_alone; else measure_lab "$row"; fi
done

echo
echo "idle daemon RSS, $GOLEM_LAB_PROFILE build, settled ${settle} s; labs at ${latency} ms ± ${jitter} ms, ${loss} % loss; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-unset} GOLEM_NET_TARGET_PEERS=${GOLEM_NET_TARGET_PEERS:-default}; p50 over the idle requestor daemons of each lab, KiB"
python3 - "$work/rows" <<'PY'
import collections, json, statistics, sys
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    label, peers, sample = line.rstrip("\n").split("|", 2)
    sample = json.loads(sample)
    if not sample.get("gone"):
        rows.setdefault(label, []).append((int(peers), sample))
columns = ["rss", "anon", "pss", "file", "heap", "arenas", "arena_count", "stacks", "other_anon", "threads"]
print("| daemons | n | peers | RSS MiB | " + " | ".join(columns[1:]) + " |")
print("|---" * (len(columns) + 3) + "|")
for label, samples in rows.items():
    p50 = lambda values: statistics.median(values)
    peers = p50([peers for peers, _ in samples])
    cells = [f"{p50([s['rss'] for _, s in samples]) / 1024:.1f}"]
    cells += [f"{p50([s[c] for _, s in samples]):,.0f}" for c in columns[1:]]
    print(f"| {label} | {len(samples)} | {peers:g} | " + " | ".join(cells) + " |")
PY
if [[ -s "$work/window" ]]; then
    [[ -z "$csv" ]] || { echo "lab,seconds,pid,rss_kib,connections"; tr '|' ',' <"$work/window"; } >"$csv"
    echo
    echo "over the ${window} s window after the settle, every ${every} s (RSS MiB over the idle requestor daemons at each sample; connections: established TCP, about one per peer):"
    python3 - "$work/window" <<'PY'
import collections, statistics, sys
labs = collections.OrderedDict()
for line in open(sys.argv[1]):
    label, secs, pid, rss, conns = line.rstrip("\n").split("|")
    labs.setdefault(label, collections.OrderedDict()).setdefault(int(secs), []).append((pid, int(rss), int(conns)))
def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]
for label, samples in labs.items():
    print(f"\n{label}:")
    print("| s | daemons | RSS p50 | p90 | max | connections p50 | max |")
    print("|---|---|---|---|---|---|---|")
    peaks = collections.defaultdict(int)
    p50s = []
    for secs, rows in samples.items():
        rss = [r / 1024 for _, r, _ in rows]
        conns = [c for _, _, c in rows]
        for pid, r, _ in rows:
            peaks[pid] = max(peaks[pid], r)
        p50s.append((statistics.median(rss), secs))
        print(f"| {secs} | {len(rows)} | {statistics.median(rss):.1f} | {pct(rss, 0.9):.1f} | {max(rss):.1f} | {statistics.median(conns):g} | {max(conns)} |")
    worst, at = max(p50s)
    peak = [p / 1024 for p in peaks.values()]
    over = sum(1 for p, _ in p50s if p > 30)
    print(f"\n{label}: highest p50 of a sample {worst:.1f} MiB (at {at} s); samples whose p50 is above 30 MiB: {over} of {len(p50s)}; "
          f"each daemon's own peak: p50 {statistics.median(peak):.1f}, max {max(peak):.1f} MiB")
PY
fi
if [[ -s "$work/trims" ]]; then
    echo
    echo "malloc_trim(0) in one daemon of each row (what glibc held free):"
    echo "| daemons | pid | RSS before KiB | after KiB | given back KiB |"
    echo "|---|---|---|---|---|"
    awk -F'|' '{ printf "| %s | %s | %s | %s | %d |\n", $1, $2, $3, $4, $3 - $4 }' "$work/trims"
fi
