#!/usr/bin/env bash
# Issue 18's latency figures, before and after, run alternately (before, after,
# after, before, ...) so that the machine's drift cancels out: single runs on a
# shared 2-core machine differ by up to 2x. Prints, per measure, the median of
# each side's run medians and the median of the paired after/before ratios.
#   - demand -> first proposal (one node, two daemons), counter -> Approved
#     (bench_market_latencies, MARKET_BENCH_ROUNDS rounds per run)
#   - GET /me req/s and p99 (wrk -t2 -c32 -d8s)
# Usage: scripts/bench/actors-interleaved.sh [BEFORE_REV]   (default 7f8cd70)
# Env: REPS (pairs, default 6), ROUNDS (default 100), BEFORE_DIR, BEFORE_TARGET
# (as in actors.sh), SKIP_BUILD=1 to reuse both release builds, PAUSE_BUILDS=1
# to SIGSTOP other compilers (rustc, cc, ld) during each run (resumed after it,
# also on exit).
set -euo pipefail
source "$(dirname "$0")/before-after.sh"
reps="${REPS:-6}"
rounds="${ROUNDS:-100}"
command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }

build() { # dir target
    echo "building release binaries in $1..." >&2
    (cd "$1" && CARGO_TARGET_DIR="$2" cargo build --release --locked -p golem-daemon --bins >&2 \
        && CARGO_TARGET_DIR="$2" cargo test --release --locked -p golem-tests --test market --no-run >&2)
}
[[ -n "${SKIP_BUILD:-}" ]] || { build "$before_dir" "$before_target"; build "$after_dir" "$after_target"; }

compilers=(rustc cc cc1 ld ld.lld lld collect2 clippy-driver)
pause() { [[ -z "${PAUSE_BUILDS:-}" ]] || for p in "${compilers[@]}"; do pkill -STOP -x "$p" 2>/dev/null || true; done; }
resume() { [[ -z "${PAUSE_BUILDS:-}" ]] || for p in "${compilers[@]}"; do pkill -CONT -x "$p" 2>/dev/null || true; done; }
results="$(mktemp -t golem-interleaved-XXXXXX)"
trap 'resume; rm -f "$results"' EXIT

market() { # side dir target pair
    (cd "$2" && CARGO_TARGET_DIR="$3" MARKET_BENCH_ROUNDS="$rounds" cargo test --release --locked \
        -p golem-tests --test market -- --ignored --nocapture --exact bench_market_latencies 2>/dev/null) \
        | awk -F'|' -v side="$1" -v pair="$4" '/^\| (demand|counter)/ {gsub(/^ +| +$/, "", $2); gsub(/ /, "", $4); print side "\t" pair "\t" $2 "\t" $4}'
}
me() { # side daemon pair
    local work pid addr
    work="$(mktemp -d -t golem-me-XXXXXX)"
    GOLEM_AUTOCONF_APPKEY=bench "$2" run --data-dir "$work/n" --api-addr 127.0.0.1:0 \
        --p2p-listen /ip4/127.0.0.1/tcp/0 --log-format json 2>"$work/log" &
    pid=$!
    for _ in $(seq 1 300); do grep -q 'REST API ready' "$work/log" && break; sleep 0.02; done
    addr="$(grep 'REST API ready' "$work/log" | sed -E 's/.*"api_addr":"([^"]+)".*/\1/')"
    wrk -t2 -c32 -d8s --latency -H "Authorization: Bearer bench" "http://$addr/me" >"$work/wrk" 2>&1
    awk -v side="$1" -v pair="$3" '/Requests\/sec/ {print side "\t" pair "\tGET /me req/s\t" $2}
        $1 == "99%" {v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else if (v ~ /s$/) v = v * 1000; print side "\t" pair "\tGET /me p99 ms\t" v}' "$work/wrk"
    kill "$pid"; wait "$pid" 2>/dev/null || true; rm -rf "$work"
}
run() { # side pair
    local dir target
    if [[ "$1" == before ]]; then dir="$before_dir"; target="$before_target"; else dir="$after_dir"; target="$after_target"; fi
    pause; sleep 1
    echo "pair $2: $1 (load average $(cut -d' ' -f1 /proc/loadavg))" >&2
    market "$1" "$dir" "$target" "$2" >>"$results"
    me "$1" "$target/release/golem-daemon" "$2" >>"$results"
    resume
}
for pair in $(seq 1 "$reps"); do
    if (( pair % 2 )); then run before "$pair"; run after "$pair"; else run after "$pair"; run before "$pair"; fi
    sleep 5
done

echo "# Issue 18, interleaved: before $before_rev, after $(git rev-parse --short HEAD), $reps pairs, $rounds rounds"
python3 - "$results" <<'PY'
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    side, pair, measure, value = line.rstrip("\n").split("\t")
    rows.setdefault(measure, {}).setdefault(pair, {})[side] = float(value)
print("| measure | pairs | before (median) | after (median) | paired after/before (median) |")
print("|---|---|---|---|---|")
for measure, pairs in rows.items():
    both = [p for p in pairs.values() if "before" in p and "after" in p]
    if not both:
        continue
    before = st.median(p["before"] for p in both)
    after = st.median(p["after"] for p in both)
    paired = st.median(p["after"] / p["before"] for p in both)
    print(f"| {measure} | {len(both)} | {before:.3f} | {after:.3f} | {paired:.3f} ({(paired - 1) * 100:+.1f} %) |")
PY
