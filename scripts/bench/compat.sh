#!/usr/bin/env bash
# Client compatibility benchmark (issue 10): wall time from start to exit of the
# unmodified yapapi 0.13.1 hello world (polling and stream_output) and the
# golem-js 3.6 basic flow against a local network of release binaries
# (tests/compat/run.sh: requestor + provider daemons, provider agent, image on
# loopback). RUNS=N repetitions (default 5); SKIP_BUILD=1 skips the build;
# GOLEM_COMPAT_PROFILE=debug measures the debug binaries instead.
# Prints a table (median / min / max seconds). Goal: ≤ 3 s each.
# VPN=1 also runs yapapi's http-proxy example (issue 19: two service
# instances in a network behind LocalHttpProxy; needs Docker) and prints its
# start → first proxied page and start → exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/golem-target}"
RUNS="${RUNS:-5}"
PROFILE="${GOLEM_COMPAT_PROFILE:-release}"
PACKAGES=(-p golem-daemon -p golem-gftp -p golem-provider -p exe-unit-vm)
PROGRAMS=(yapapi-hello yapapi-hello-stream golemjs-basic)
[[ -z "${VPN:-}" ]] || PROGRAMS+=(yapapi-http-proxy)
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --profile "$PROFILE" --locked "${PACKAGES[@]}" --bins >&2
RESULTS="$(mktemp)"
trap 'rm -f "$RESULTS" "$RESULTS.run"' EXIT
for _ in $(seq 1 "$RUNS"); do
    GOLEM_COMPAT_PROFILE="$PROFILE" SKIP_BUILD=1 GOLEM_COMPAT_RESULTS="$RESULTS.run" \
        tests/compat/run.sh "${PROGRAMS[@]}" >/dev/null 2>&1 ||
        { echo "bench: tests/compat/run.sh failed; run it by hand to see why" >&2; exit 1; }
    cat "$RESULTS.run" >>"$RESULTS"
done
python3 - "$RESULTS" "$RUNS" "$PROFILE" <<'PY'
import statistics, sys
rows, platforms, first_responses = {}, {}, {}
for line in open(sys.argv[1]):
    name, status, seconds, platform, _, _, first_response = (line.split() + ["?"] * 7)[:7]
    rows.setdefault(name, []).append(float(seconds))
    platforms[name] = platform
    if first_response not in ("-", "?"):
        first_responses.setdefault(name, []).append(float(first_response))
# Fixed sleeps inside the unmodified clients (docs/compat.md names the source lines).
labels = {
    "yapapi-hello": ("yapapi hello world (polling), start → exit", 2.0),
    "yapapi-hello-stream": ("yapapi hello world (stream_output=True), start → exit", 2.0),
    "golemjs-basic": ("golem-js basic flow (rent, run, upload + download, finalize, pay), start → exit", 3.0),
}
print("| Measure (%s runs, local network, %s binaries) | payment platform | median | min | max | client's own fixed sleeps | median minus those | Goal |" % (sys.argv[2], sys.argv[3]))
print("|---|---|---|---|---|---|---|---|")
for name, (label, fixed) in labels.items():
    values = rows.get(name, [])
    if values:
        median = statistics.median(values)
        print("| %s | %s | %.2f s | %.2f s | %.2f s | %.1f s | %.2f s | ≤ 3 s |" % (
            label, platforms[name], median, min(values), max(values), fixed, median - fixed))
proxy = first_responses.get("yapapi-http-proxy")
if proxy:
    total = rows["yapapi-http-proxy"]
    print()
    print("| yapapi http-proxy example (2 instances, VPN), %s runs | median | min | max |" % len(proxy))
    print("|---|---|---|---|")
    print("| start → first proxied page | %.2f s | %.2f s | %.2f s |" % (statistics.median(proxy), min(proxy), max(proxy)))
    print("| start → exit (pages, proxy stop, cluster stop, network removed, paid) | %.2f s | %.2f s | %.2f s |" % (
        statistics.median(total), min(total), max(total)))
PY
