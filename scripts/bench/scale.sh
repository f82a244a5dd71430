#!/usr/bin/env bash
# Scale scenarios on the lab (scripts/lab.sh): N daemons in network namespaces
# on links shaped by tc netem, K of them providers. Each scenario prints a table:
#
#   idle       RSS and CPU of every daemon once the lab has settled (goal ≤ 30 MiB
#              each), CPU averaged over IDLE s (default 30), and where the
#              machine's CPU went meanwhile (scripts/bench/cpu_by_kind.py)
#   reach      a provider's new offers (its agent restarted): time until each
#              other node has learnt them, p50 / max (goal ≤ 2 s / 5 s)
#   negotiate  from the requestor farthest from the providers (the last node):
#              demand → first proposal (goal ≤ 1 s) and → agreement (≤ 2 s)
#   job        TASKS tiny WASM tasks (examples/demo's transform) over the K
#              providers, A agreements per provider (parallelism K × A; the
#              lab's providers take 2): tasks/s (goal ≥ 50), and where the
#              machine's CPU went meanwhile (scripts/bench/cpu_by_kind.py)
#   churn      the same job; 10 % of the nodes (providers included) SIGKILLed
#              once it runs, started again 30 s later: every task done, no
#              agreement invoiced twice, the restarted nodes answer pings and
#              their new offers reach the requestor
#   partition  the lab cut in two for PARTITION s (lab.sh partition): a job in
#              each half; healed: time until the halves reach each other again
#
#   scripts/bench/scale.sh [--nodes N] [--providers K] [--tasks T] [--latency MS]
#       [--jitter MS] [--loss PCT] [--partition-secs S] [--churn-restart-secs S]
#       [--agreements-per-provider A] [--settle-secs S] [--idle-secs IDLE]
#       [--scenarios idle,reach,negotiate,job,churn,partition] [--keep]
#
# The scenarios start once the lab has settled for S s (default 20: the
# daemons' start-up walks are over, so a job does not share the CPU with them).
#
# Defaults are the issue's: 100 nodes, 20 providers, 500 tasks, 50 ms ± 10 ms,
# 0.5 % loss; 2 agreements per provider. Binaries as lab.sh takes them (GOLEM_LAB_PROFILE=release for
# release ones). Needs root and iproute2. The lab is taken down at the end
# unless --keep. Logs of a run stay in $GOLEM_LAB_DIR until the next `down`.
set -euo pipefail
cd "$(dirname "$0")/../.."

nodes=100 providers=20 tasks=500 latency=50 jitter=10 loss=0.5 partition_secs=60
churn_restart_secs=30 scenarios=idle,reach,negotiate,job,churn,partition keep=0 per_provider=2 settle_secs=20
idle_window=30
while [[ $# -gt 0 ]]; do
    case "$1" in
        --nodes) nodes="$2"; shift 2 ;;
        --providers) providers="$2"; shift 2 ;;
        --tasks) tasks="$2"; shift 2 ;;
        --latency) latency="$2"; shift 2 ;;
        --jitter) jitter="$2"; shift 2 ;;
        --loss) loss="$2"; shift 2 ;;
        --partition-secs) partition_secs="$2"; shift 2 ;;
        --churn-restart-secs) churn_restart_secs="$2"; shift 2 ;;
        --agreements-per-provider) per_provider="$2"; shift 2 ;;
        --settle-secs) settle_secs="$2"; shift 2 ;;
        --idle-secs) idle_window="$2"; shift 2 ;;
        --scenarios) scenarios="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        *) sed -n '2,34p' "$0" >&2; exit 2 ;;
    esac
done
for value in "$nodes" "$providers" "$tasks" "$partition_secs" "$churn_restart_secs" "$per_provider"; do
    [[ "$value" =~ ^[1-9][0-9]*$ ]] || { echo "scale: '$value' is not a positive whole number (nodes, providers, tasks, seconds)" >&2; exit 2; }
done
[[ "$idle_window" =~ ^[1-9][0-9]*$ ]] || { echo "scale: --idle-secs '$idle_window' is not a positive whole number of seconds" >&2; exit 2; }
[[ "$settle_secs" =~ ^[0-9]+$ ]] || { echo "scale: --settle-secs '$settle_secs' is not a whole number of seconds" >&2; exit 2; }
wanted() { [[ ",$scenarios," == *",$1,"* ]]; }

lab=scripts/lab.sh
dir="${GOLEM_LAB_DIR:-/var/tmp/golem-lab}"
export GOLEM_LAB_DIR="$dir"
work=$(mktemp -d -t golem-scale-XXXXXX)
cleanup() {
    # GOLEM_SCALE_KEEP=DIR keeps the jobs' files (job.toml, timed events) there.
    [[ -z "${GOLEM_SCALE_KEEP:-}" ]] || { mkdir -p "$GOLEM_SCALE_KEEP"; cp -r "$work"/. "$GOLEM_SCALE_KEEP"/; }
    [[ "$keep" == 1 ]] || "$lab" down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
log() { echo "==> $*" >&2; }

"$lab" down >/dev/null 2>&1 || true
up_started=$SECONDS
"$lab" up "$nodes" --latency "$latency" --jitter "$jitter" --loss "$loss" --providers "$providers"
log "lab of $nodes nodes up in $((SECONDS - up_started)) s"
"$lab" status --json --no-peers >"$work/status.json"
# Roles from the lab: the requestor farthest from the providers is the last
# requestor node; in the partition's lower half the last node that is no
# provider (a bootstrap node in a small lab) requests too.
read -r far_requestor near_requestor < <(python3 - "$work/status.json" <<'PY'
import json, sys
nodes = json.load(open(sys.argv[1]))["nodes"]
requestors = [n["node"] for n in nodes if n["role"] == "requestor"]
half = len(nodes) // 2
lower = [n["node"] for n in nodes if n["role"] != "provider" and int(n["node"][1:]) <= half]
print(requestors[-1], lower[-1])
PY
)
providers_list=$(python3 -c 'import json,sys; print(" ".join(n["node"] for n in json.load(open(sys.argv[1]))["nodes"] if n["role"] == "provider"))' "$work/status.json")
bin=$(. "$dir/lab.env"; echo "$LAB_BIN")
build=$(basename "$bin")
echo
echo "lab: $nodes nodes ($providers providers), links ${latency} ms ± ${jitter} ms, ${loss} % loss, $build build, $(nproc) cores"

# A job file of COUNT tasks of examples/demo's transform in DIR, parallelism P,
# at most PER (default 1) agreements with one provider.
make_job() {
    local job_dir="$1" count="$2" parallelism="$3" per="${4:-1}" n
    mkdir -p "$job_dir/inputs"
    cp examples/demo/transform.wat "$job_dir/"
    {
        printf '[demand]\nruntime = "wasm"\npackage = "transform.wat"\nmin_mem_gib = 0.1\n\n'
        printf '[job]\nbudget = "5"\nparallelism = %s\noutput_dir = "out"\ncommand = ["transform"]\n' "$parallelism"
        printf 'task_timeout_secs = 60\noffer_timeout_secs = 60\nagreements_per_provider = %s\n\n' "$per"
        printf '[[inputs]]\nfrom = "inputs/{id}.txt"\nto = "/golem/input/{id}.txt"\n\n'
        printf '[[outputs]]\nfrom = "/golem/output/{id}.txt"\nto = "{id}.txt"\n'
        for n in $(seq 1 "$count"); do
            echo "scale task $n" >"$job_dir/inputs/t$n.txt"
            printf '\n[[task]]\nid = "t%s"\nargs = ["{id}.txt", "{id}.txt"]\n' "$n"
        done
    } >"$job_dir/job.toml"
}

# run_job NODE JOB_DIR EVENTS: `golem-requestor script --json` in NODE's
# namespace, each event line prefixed with the epoch time it arrived (bash's
# $EPOCHREALTIME: a `date` per line took 7 % of the machine in a 500-task job;
# a python stamper would be cheaper but stamps what arrives while it starts
# late, which skews demand → agreement).
# A failed job is reported (its table says NOT OK), it does not end the run.
run_job() {
    local node="$1" job_dir="$2" events="$3"
    if ! (cd "$job_dir" && "$OLDPWD/$lab" exec "$node" golem-requestor --subnet public script job.toml --json \
        2>"$events.stderr") | while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done >"$events"; then
        echo "  the job from $node failed: $(tail -1 "$events.stderr")"
    fi
}

# job_report EVENTS TASKS: a table row set from the timed events (python).
job_report() {
    python3 - "$1" "$2" <<'PY'
import collections, json, sys
path, tasks = sys.argv[1], int(sys.argv[2])
events = []
for line in open(path):
    stamp, _, text = line.partition(" ")
    try:
        events.append((float(stamp), json.loads(text)))
    except ValueError:
        pass
def first(kind):
    return next((t for t, e in events if e.get("event") == kind), None)
start = first("session_started") or (events[0][0] if events else 0)
demand = first("demand_published")
proposal = first("offer_received")
agreement = first("agreement_signed")
finished = [e["task_id"] for _, e in events if e.get("event") == "task_finished"]
failed = [e for _, e in events if e.get("event") == "task_failed"]
invoices = collections.Counter(e["agreement_id"] for _, e in events if e.get("event") == "invoice_accepted")
first_task = next((t for t, e in events if e.get("event") == "task_started"), None)
last_done = max((t for t, e in events if e.get("event") == "task_finished"), default=None)
def ms(a, b):
    return f"{(b - a) * 1000:.0f}" if a is not None and b is not None else "-"
rows = [
    ("demand → first proposal (ms)", ms(demand, proposal)),
    ("demand → first agreement (ms)", ms(demand, agreement)),
    ("agreements signed", sum(1 for _, e in events if e.get("event") == "agreement_signed")),
    ("tasks done (distinct) / asked", f"{len(set(finished))} / {tasks}"),
    ("task failures reported", len(failed)),
    ("agreements invoiced twice", sum(1 for c in invoices.values() if c > 1)),
    ("job wall time (s)", f"{(events[-1][0] - start):.1f}" if events else "-"),
]
if first_task is not None and last_done is not None and last_done > first_task:
    rows.append(("tasks/s (first start → last done)", f"{len(set(finished)) / (last_done - first_task):.1f}"))
for name, value in rows:
    print(f"  {name:<40} {value}")
summary = next((e for _, e in events if e.get("event") == "summary"), None)
ok = len(set(finished)) == tasks and all(c <= 1 for c in invoices.values())
print(f"  {'result':<40} {'ok' if ok else 'NOT OK'}")
PY
}

# reach_report SINCE NODE...: for each offer NODE's daemon subscribed after
# epoch SINCE, when every other daemon logged learning it.
reach_report() {
    python3 - "$dir" "$nodes" "$@" <<'PY'
import datetime, json, statistics, sys
lab, count, since, owners = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
def lines(node):
    try:
        for line in open(f"{lab}/{node}.log"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            stamp = datetime.datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
            yield stamp, entry.get("fields", entry)
    except FileNotFoundError:
        return
offers = {}
for owner in owners:
    for stamp, fields in lines(owner):
        if fields.get("message") == "offer subscribed" and stamp >= since:
            offers[fields["offer_id"]] = (owner, stamp)
delays = []
missing = 0
learnt = {}
for i in range(1, count + 1):
    node = f"n{i}"
    for stamp, fields in lines(node):
        if fields.get("message") == "offer learnt" and fields.get("offer_id") in offers:
            learnt.setdefault((node, fields["offer_id"]), stamp)
for offer_id, (owner, subscribed) in offers.items():
    per_offer = []
    for i in range(1, count + 1):
        node = f"n{i}"
        if node == owner:
            continue
        if (node, offer_id) in learnt:
            per_offer.append(learnt[(node, offer_id)] - subscribed)
        else:
            missing += 1
    if per_offer:
        delays.append(max(per_offer))
        all_delays = per_offer
print(f"  {'new offers':<40} {len(offers)}")
every = [learnt[k] - offers[k[1]][1] for k in learnt]
if every:
    print(f"  {'node learnt an offer after, p50 (ms)':<40} {statistics.median(every) * 1000:.0f}")
    print(f"  {'node learnt an offer after, max (ms)':<40} {max(every) * 1000:.0f}")
    print(f"  {'offer reached every node, max (ms)':<40} {max(delays) * 1000:.0f}" if delays and not missing else f"  {'(node, offer) pairs never learnt':<40} {missing}")
else:
    print("  no node learnt the new offers (see the daemons' logs in the lab dir)")
PY
}

log "letting the lab settle for $settle_secs s"
sleep "$settle_secs"

if wanted idle; then
    # CPU of the idle daemons over 10 s (utime + stime clock ticks from /proc).
    daemon_ticks() {
        local file total=0
        for file in "$dir"/n*.pid; do
            [[ "$file" == *-agent.pid ]] && continue
            total=$((total + $(awk '{ print $14 + $15 }' "/proc/$(cat "$file")/stat" 2>/dev/null || echo 0)))
        done
        echo "$total"
    }
    ticks_before=$(daemon_ticks)
    scripts/bench/cpu_by_kind.py snapshot "$work/idle.cpu-before"
    sleep "$idle_window"
    scripts/bench/cpu_by_kind.py snapshot "$work/idle.cpu-after"
    idle_cpu=$(awk -v t="$(( $(daemon_ticks) - ticks_before ))" -v hz="$(getconf CLK_TCK)" -v n="$nodes" \
        -v w="$idle_window" 'BEGIN { printf "%.2f", t / hz / w / n * 100 }')
    "$lab" status --json >"$work/status.json"
    echo
    echo "idle daemons after the lab settled ($settle_secs s):"
    printf '  %-40s %s\n' "CPU % per idle daemon (${idle_window} s average)" "$idle_cpu"
    printf '  %-40s %s\n' "load average" "$(cut -d' ' -f1-3 /proc/loadavg)"
    python3 - "$work/status.json" <<'PY'
import json, statistics, sys
nodes = json.load(open(sys.argv[1]))["nodes"]
def row(name, values):
    values = [v / 1024 for v in values if v]
    if values:
        print(f"  {name:<40} p50 {statistics.median(values):6.1f}  max {max(values):6.1f}  (n={len(values)})")
row("daemon RSS MiB, requestor/bootstrap nodes", [n["daemon_rss_kib"] for n in nodes if n["role"] != "provider"])
row("daemon RSS MiB, provider nodes", [n["daemon_rss_kib"] for n in nodes if n["role"] == "provider"])
row("golem-provider RSS MiB", [n["agent_rss_kib"] for n in nodes if n["role"] == "provider"])
row("connected peers per daemon", [n["peers"] * 1024 for n in nodes if n["peers"] is not None])
PY
    echo "  where the CPU went while the lab idled:"
    scripts/bench/cpu_by_kind.py report "$work/idle.cpu-before" "$work/idle.cpu-after"
fi

if wanted reach; then
    owner=$(echo "$providers_list" | awk '{ print $NF }')
    since=$(date +%s.%N)
    "$lab" reoffer "$owner"
    sleep $((15 + latency / 10))
    echo
    echo "reach: new offers of $owner (agent restarted) learnt by the other $((nodes - 1)) nodes:"
    reach_report "$since" "$owner"
fi

if wanted negotiate; then
    make_job "$work/one" 1 1
    run_job "$far_requestor" "$work/one" "$work/one.events"
    echo
    echo "negotiate: one task from $far_requestor (the last node; providers are $providers_list):"
    job_report "$work/one.events" 1
fi

if wanted job; then
    make_job "$work/job" "$tasks" "$((providers * per_provider))" "$per_provider"
    scripts/bench/cpu_by_kind.py snapshot "$work/job.cpu-before"
    run_job "$far_requestor" "$work/job" "$work/job.events"
    scripts/bench/cpu_by_kind.py snapshot "$work/job.cpu-after"
    echo
    echo "job: $tasks tasks from $far_requestor over $providers providers ($per_provider agreements each, parallelism $((providers * per_provider))):"
    job_report "$work/job.events" "$tasks"
    echo "  where the CPU went during the job:"
    scripts/bench/cpu_by_kind.py report "$work/job.cpu-before" "$work/job.cpu-after"
fi

if wanted churn; then
    make_job "$work/churn" "$tasks" "$((providers * per_provider))" "$per_provider"
    run_job "$far_requestor" "$work/churn" "$work/churn.events" &
    job_pid=$!
    # Wait until the job runs (a tenth of its tasks done, at most 60 s).
    for _ in $(seq 1 600); do
        (( $(grep -c '"task_finished"' "$work/churn.events" 2>/dev/null || true) >= tasks / 10 )) && break
        kill -0 "$job_pid" 2>/dev/null || break
        sleep 0.1
    done
    victims=$(python3 - "$work/status.json" "$far_requestor" <<'PY'
import json, math, sys
nodes = json.load(open(sys.argv[1]))["nodes"]
keep = {sys.argv[2], "n1"}
count = max(1, math.ceil(len(nodes) / 10))
providers = [n["node"] for n in nodes if n["role"] == "provider"]
others = [n["node"] for n in nodes if n["role"] != "provider" and n["node"] not in keep]
chosen = providers[: max(1, count // 2)]
chosen += others[: count - len(chosen)]
print(" ".join(chosen))
PY
)
    killed_at=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$lab" kill $victims
    log "SIGKILLed $victims; starting them again in $churn_restart_secs s"
    sleep "$churn_restart_secs"
    restarted_at=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$lab" start $victims
    wait "$job_pid" || true
    echo
    echo "churn: $tasks tasks from $far_requestor; SIGKILLed $(echo $victims | wc -w) nodes ($victims), restarted after $churn_restart_secs s:"
    job_report "$work/churn.events" "$tasks"
    found=0 total=0
    for victim in $victims; do
        total=$((total + 1))
        victim_id=$(cat "$dir/$victim.id")
        for _ in $(seq 1 30); do
            if "$bin/golem-daemon" net ping "$victim_id" --data-dir "$dir/$far_requestor" >/dev/null 2>&1; then
                found=$((found + 1)); break
            fi
            sleep 2
        done
    done
    printf '  %-40s %s\n' "restarted nodes answering a ping" "$found / $total"
    restarted_providers=$(for victim in $victims; do [[ " $providers_list " != *" $victim "* ]] || echo "$victim"; done | xargs)
    if [[ -n "$restarted_providers" ]]; then
        sleep 10
        # shellcheck disable=SC2086
        echo "  new offers of the restarted providers ($restarted_providers):"
        reach_report "$restarted_at" $restarted_providers
    fi
    : "$killed_at"
fi

if wanted partition; then
    make_job "$work/lower" 2 1
    make_job "$work/upper" 2 1
    "$lab" partition
    cut_at=$SECONDS
    run_job "$near_requestor" "$work/lower" "$work/lower.events" &
    lower_pid=$!
    run_job "$far_requestor" "$work/upper" "$work/upper.events" &
    upper_pid=$!
    wait "$lower_pid" || true
    wait "$upper_pid" || true
    sleep $(( partition_secs - (SECONDS - cut_at) > 0 ? partition_secs - (SECONDS - cut_at) : 0 ))
    "$lab" heal
    healed=$(date +%s.%N)
    across_ms=-
    far_id=$(cat "$dir/$far_requestor.id")
    for _ in $(seq 1 120); do
        if "$bin/golem-daemon" net ping "$far_id" --data-dir "$dir/n1" >/dev/null 2>&1; then
            across_ms=$(python3 -c "import time; print(f'{(time.time() - $healed) * 1000:.0f}')")
            break
        fi
        sleep 0.5
    done
    echo
    echo "partition: n1..n$((nodes / 2)) | n$((nodes / 2 + 1))..n$nodes for $partition_secs s:"
    echo "  a 2-task job inside the lower half (from $near_requestor):"
    job_report "$work/lower.events" 2 | sed 's/^/  /'
    echo "  a 2-task job inside the upper half (from $far_requestor):"
    job_report "$work/upper.events" 2 | sed 's/^/  /'
    printf '  %-40s %s\n' "healed → n1 pings $far_requestor (ms)" "$across_ms"
fi
