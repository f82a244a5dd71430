#!/usr/bin/env bash
# Foundation benchmarks (issue: foundation). Prints a table of:
#   - GET /me throughput and latency with wrk -t2 -c32 -d15s
#   - bus request/reply round trip between two processes (bus_rtt example)
#   - daemon idle RSS and threads after start
#   - cold start to REST ready on a fresh data dir (median of 7)
# Needs: wrk (apt-get install wrk), python3, curl. Uses release builds.
set -euo pipefail
cd "$(dirname "$0")/../.."
duration="${WRK_DURATION:-15s}"

command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }
echo "building release binaries..." >&2
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked -p golem-daemon -p golem-bus --bins --example bus_rtt >&2
target_dir="${CARGO_TARGET_DIR:-target}"
daemon="$target_dir/release/golem-daemon"
bus_rtt="$target_dir/release/examples/bus_rtt"

work="$(mktemp -d -t golem-bench-XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Cold start: spawn → first 200 from GET /me, fresh data dir each time.
cold_ms="$(python3 - "$daemon" "$work" <<'PY'
import os, socket, subprocess, sys, time, statistics
daemon, work = sys.argv[1], sys.argv[2]
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
samples = []
for i in range(7):
    port = free_port()
    env = dict(os.environ, GOLEM_AUTOCONF_APPKEY="bench")
    start = time.perf_counter()
    proc = subprocess.Popen([daemon, "run", "--data-dir", f"{work}/cold{i}", "--api-addr", f"127.0.0.1:{port}",
                             "--p2p-listen", "/ip4/127.0.0.1/tcp/0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    request = b"GET /me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bench\r\nConnection: close\r\n\r\n"
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(request)
                if conn.recv(16).startswith(b"HTTP/1.1 200"):
                    break
        except OSError:
            pass
        time.sleep(0.001)
    samples.append((time.perf_counter() - start) * 1000)
    proc.terminate(); proc.wait()
print(f"{statistics.median(samples):.0f}")
PY
)"

# A node for the steady-state measurements.
data_dir="$work/node"
GOLEM_AUTOCONF_APPKEY=bench "$daemon" run --data-dir "$data_dir" --api-addr 127.0.0.1:0 \
    --p2p-listen /ip4/127.0.0.1/tcp/0 --log-format json 2>"$work/daemon.log" &
pid=$!; pids+=("$pid")
for _ in $(seq 1 200); do grep -q 'REST API ready' "$work/daemon.log" && break; sleep 0.02; done
api_addr="$(grep 'REST API ready' "$work/daemon.log" | sed -E 's/.*"api_addr":"([^"]+)".*/\1/')"
sleep 2
rss_kib="$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")"
threads="$(awk '/Threads/ {print $2}' "/proc/$pid/status")"

wrk_out="$(wrk -t2 -c32 -d"$duration" --latency -H 'Authorization: Bearer bench' "http://$api_addr/me")"
rps="$(echo "$wrk_out" | awk '/Requests\/sec/ {print $2}')"
p50="$(echo "$wrk_out" | awk '$1=="50%" {print $2}')"
p99="$(echo "$wrk_out" | awk '$1=="99%" {print $2}')"

rtt="$("$bus_rtt" "$data_dir/bus.sock" 50000)"
rtt_p50="$(echo "$rtt" | sed -E 's/.*p50_us=([0-9.]+).*/\1/')"
rtt_p99="$(echo "$rtt" | sed -E 's/.*p99_us=([0-9.]+).*/\1/')"

printf '\n| Measure | Result | Goal | Original (yagna) |\n|---|---|---|---|\n'
printf '| GET /me, wrk -t2 -c32 -d%s | %s req/s, p50 %s, p99 %s | >= 65,000 req/s, p99 <= 2 ms | 43,500 req/s, p50 0.54 ms, p99 5.7 ms |\n' "$duration" "$rps" "$p50" "$p99"
printf '| Bus round trip, two processes | p50 %s us, p99 %s us | p50 <= 50 us | - |\n' "$rtt_p50" "$rtt_p99"
printf '| Idle RSS after start | %s MiB, %s threads | <= 30 MiB | 70 MB, 27 threads |\n' "$(awk "BEGIN {printf \"%.1f\", $rss_kib/1024}")" "$threads"
printf '| Cold start to REST ready (fresh data dir, median of 7) | %s ms | <= 200 ms | 3.7 s (0.7 s without relay wait) |\n' "$cold_ms"
