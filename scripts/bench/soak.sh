#!/usr/bin/env bash
# Soak: does anything grow while jobs run back to back? A loopback devnet
# (requestor daemon + PROVIDERS provider daemons with golem-provider, release
# binaries) runs 40-task WASM jobs (`golem-requestor script`, parallelism 2)
# one after another for MINUTES. Every 10 s it samples, for every process,
# RSS, threads, open fds and CPU time (its own plus its reaped children's,
# so an agent's count holds its exe units), and the sled size of every daemon, into
# $OUT/soak.csv (one row per process and sample; each daemon's RSS by kind,
# scripts/bench/smaps_classify.py, in $OUT/smaps.csv); at the end it prints, per
# process kind, the growth after the warm-up and the job rate of the first
# and last 10 minutes (half the run when shorter), and draws $OUT/soak.png
# (time on x, one line per kind; python3 with matplotlib, installed from PyPI
# into a venv if missing).
# After the run it stops the devnet and writes $OUT/census.md: the records
# of every daemon's database by tree and key kind (daemon/examples/store_census.rs),
# to show which kind of record, if any, grows with the jobs.
#
#   scripts/bench/soak.sh [--minutes M] [--providers K] [--warmup-minutes W] [--out DIR]
#
# SKIP_BUILD=1 reuses the release binaries. Daemons get the environment, so
# GOLEM_RETENTION_* (see `golem-daemon run --help`) tunes their retention.
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=15 providers=2 warmup=3 out=/tmp/golem-soak-out
while [[ $# -gt 0 ]]; do
    case "$1" in
        --minutes) minutes="$2"; shift 2 ;;
        --providers) providers="$2"; shift 2 ;;
        --warmup-minutes) warmup="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "usage: scripts/bench/soak.sh [--minutes M] [--providers K] [--warmup-minutes W] [--out DIR]" >&2; exit 2 ;;
    esac
done
for value in "$minutes" "$providers" "$warmup"; do
    [[ "$value" =~ ^[0-9]+$ ]] || { echo "soak: $value is not a whole number (minutes, providers, warm-up)" >&2; exit 2; }
done
(( warmup < minutes )) || { echo "soak: the warm-up ($warmup min) must be shorter than the run ($minutes min)" >&2; exit 2; }

export GOLEM_DEVNET_DIR="${GOLEM_DEVNET_DIR:-/tmp/golem-soak}"
export GOLEM_DEVNET_SUBNET=soak GOLEM_DEVNET_PROFILE="${GOLEM_DEVNET_PROFILE:-release}"
export GOLEM_DEVNET_DEBIT_NOTE_INTERVAL="${GOLEM_DEVNET_DEBIT_NOTE_INTERVAL:-60}"
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked -p golem-daemon -p golem-provider \
    -p golem-requestor -p exe-unit-wasm --bins >&2
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked -p golem-daemon --example store_census >&2
scripts/devnet.sh down >/dev/null 2>&1 || true
SKIP_BUILD=1 scripts/devnet.sh up "$providers" 2>/dev/null
trap 'scripts/devnet.sh down >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
source "$GOLEM_DEVNET_DIR/env"
mkdir -p "$out"
csv="$out/soak.csv"
smaps="$out/smaps.csv"
: >"$smaps"

# The job: 40 tasks of the demo's upper-casing module, two at a time.
work=$(mktemp -d)
cp examples/demo/transform.wat "$work/"
mkdir -p "$work/inputs"
{
    printf '[demand]\nruntime = "wasm"\npackage = "transform.wat"\nmin_mem_gib = 0.1\n\n'
    printf '[job]\nbudget = "1"\nparallelism = 2\noutput_dir = "out"\ncommand = ["transform"]\n'
    printf 'task_timeout_secs = 30\noffer_timeout_secs = 30\n\n'
    printf '[[inputs]]\nfrom = "inputs/{id}.txt"\nto = "/golem/input/{id}.txt"\n\n'
    printf '[[outputs]]\nfrom = "/golem/output/{id}.txt"\nto = "{id}.txt"\n'
    for n in $(seq -w 1 40); do
        echo "soak task $n" >"$work/inputs/t$n.txt"
        printf '\n[[task]]\nid = "t%s"\nargs = ["{id}.txt", "{id}.txt"]\n' "$n"
    done
} >"$work/job.toml"

# sample T JOBS FAILED: one CSV row per process of the devnet.
sample() {
    local d=$GOLEM_DEVNET_DIR file name kind pid rss threads fds sled cpu
    for file in "$d"/*.pid; do
        name=$(basename "$file" .pid)
        pid=$(cat "$file" 2>/dev/null) || continue
        [[ -r "/proc/$pid/status" ]] || continue
        case "$name" in
            requestor) kind="requestor daemon" ;;
            *-agent) kind="provider agent" ;;
            *) kind="provider daemon" ;;
        esac
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
        threads=$(awk '/^Threads:/ { print $2 }' "/proc/$pid/status")
        fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        # utime + stime + cutime + cstime (fields 14-17; the name in field 2
        # has no spaces here), in ms.
        cpu=$(awk -v tick="$clock_ticks" '{ print int(($14 + $15 + $16 + $17) * 1000 / tick) }' "/proc/$pid/stat")
        sled=""
        [[ -d "$d/$name/db" ]] && sled=$(du -sk "$d/$name/db" | cut -f1)
        echo "$1,$2,$3,$name,$kind,$pid,$rss,$threads,$fds,$sled,$cpu" >>"$csv"
        # Where a daemon's RSS is (heap, arenas, stacks, ...), to tell a step
        # in the allocator from one in a mapping of its own.
        [[ "$kind" == *daemon ]] && scripts/bench/smaps_classify.py "$pid" | sed "s/^/$1,$name,/" >>"$smaps"
    done
    # Exe units: how many run now (a leak shows as a count that climbs).
    local units
    units=$(pgrep -c -f "^$GOLEM_DEVNET_BIN/exe-unit-wasm" || true)
    echo "$1,$2,$3,exe-units,exe units,,,$units,,," >>"$csv"
    # The machine: busy CPU time of every core (everything but idle and
    # iowait), in ms, to tell a slower machine from a costlier job.
    local busy
    busy=$(awk -v tick="$clock_ticks" '/^cpu / { print int(($2 + $3 + $4 + $7 + $8 + $9) * 1000 / tick) }' /proc/stat)
    echo "$1,$2,$3,machine,machine,,,,,,$busy" >>"$csv"
}

clock_ticks=$(getconf CLK_TCK)
echo "time_s,jobs,failed,process,kind,pid,rss_kib,threads,fds,sled_kib,cpu_ms" >"$csv"
start=$SECONDS jobs=0 failed=0 next=10
sample 0 0 0
while (( SECONDS - start < minutes * 60 )); do
    if (cd "$work" && "$GOLEM_DEVNET_BIN/golem-requestor" --subnet soak script job.toml >/dev/null 2>>"$out/failures.log"); then
        jobs=$((jobs + 1))
    else
        failed=$((failed + 1))
    fi
    while (( SECONDS - start >= next )); do
        sample "$next" "$jobs" "$failed"
        next=$((next + 10))
    done
done
sample "$((SECONDS - start))" "$jobs" "$failed"
echo "$jobs jobs done, $failed failed, in $((SECONDS - start)) s; samples in $csv" >&2
rm -rf "$work"

# The census needs the daemons stopped (sled opens a database once): agents
# first, then the daemons, each given 20 s.
for file in "$GOLEM_DEVNET_DIR"/*-agent.pid "$GOLEM_DEVNET_DIR"/*.pid; do
    pid=$(cat "$file" 2>/dev/null) || continue
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
census_bin="$GOLEM_DEVNET_BIN/examples/store_census"
if [[ -x "$census_bin" ]]; then
    daemon_dirs=()
    for db in "$GOLEM_DEVNET_DIR"/*/db; do daemon_dirs+=("$(dirname "$db")"); done
    "$census_bin" "${daemon_dirs[@]}" >"$out/census.md" || echo "soak: the census failed" >&2
    echo "records per database: $out/census.md" >&2
else
    echo "soak: $census_bin is missing (cargo build --release -p golem-daemon --example store_census); no census" >&2
fi

python=python3
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    [[ -x /tmp/golem-soak-venv/bin/python ]] || {
        python3 -m venv /tmp/golem-soak-venv && /tmp/golem-soak-venv/bin/pip install -q matplotlib >&2
    }
    python=/tmp/golem-soak-venv/bin/python
fi
"$python" scripts/bench/soak_report.py "$csv" "$out/soak.png" "$warmup"
