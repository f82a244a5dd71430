#!/usr/bin/env bash
# Abandoned long-polls (issue 21): a release golem-daemon gets N long-polls
# (default 1,000: debitNoteEvents, invoiceEvents and agreementEvents with
# timeout=60) from raw TCP clients, which then all close their sockets. One
# second after they left, the daemon should hold no connection (ESTABLISHED or
# CLOSE-WAIT on its API port), count no open long-poll
# (`GET /local-api/v1/long-polls`), and its RSS should be back within 1 MiB of
# what it was before the clients came (the daemon copies request headers out
# of the connections' read buffers and trims glibc's free pages when a burst
# of polls ends; what remains is in docs/benchmarks.md "Abandoned
# long-polls"). Two rounds by default: the script also reports whether a
# second round grows the daemon again (it must not: nothing is kept per
# abandoned poll). Exit status 0 when no connection is left and the second
# round did not grow RSS by more than 1 MiB. Prints a table.
#
#   scripts/bench/longpoll.sh                 # build (release), run, print
#   SKIP_BUILD=1 POLLS=5000 scripts/bench/longpoll.sh
#   CLOSE=rst scripts/bench/longpoll.sh       # clients reset instead of FIN
#   PROFILE=debug scripts/bench/longpoll.sh   # a quick check of the script itself
#   ROUNDS=5 scripts/bench/longpoll.sh        # more rounds (default 2)
#   PATHS="/market-api/v1/agreementEvents?timeout=60" scripts/bench/longpoll.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

polls=${POLLS:-1000}
close=${CLOSE:-fin}
profile=${PROFILE:-release}
if [ -z "${SKIP_BUILD:-}" ]; then
    echo "building golem-daemon ($profile)..." >&2
    if [ "$profile" = release ]; then
        cargo build --release --locked -p golem-daemon --bin golem-daemon >&2
    else
        cargo build --locked -p golem-daemon --bin golem-daemon >&2
    fi
fi
target=${CARGO_TARGET_DIR:-target}
daemon="$target/$profile/golem-daemon"
[ -x "$daemon" ] || { echo "no $daemon: build it or unset SKIP_BUILD" >&2; exit 1; }

# The daemon and the clients each hold one socket per poll.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
key=bench-longpoll-key
GOLEM_AUTOCONF_APPKEY=$key RUST_LOG=warn "$daemon" --data-dir "$work/data" run \
    --api-addr "127.0.0.1:$port" --p2p-listen /ip4/127.0.0.1/tcp/0 \
    --api-max-long-polls-per-key $((polls + 10)) >"$work/daemon.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 100); do
    curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$port/me" >/dev/null && break
    sleep 0.1
done

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"; }
conns() { ss -tnH state "$1" "( sport = :$port )" | wc -l; }
open_polls() {
    curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$port/local-api/v1/long-polls" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["open"])'
}
row() { printf '| %s | %s | %s | %s | %s |\n' "$1" "$(conns established)" "$(conns close-wait)" "$(open_polls)" "$(rss_kib)"; }

# Warm up: one round of polls that are answered, so allocator pools exist.
for path in debitNoteEvents invoiceEvents; do
    curl -sf -H "Authorization: Bearer $key" "http://127.0.0.1:$port/payment-api/v1/$path?timeout=0" >/dev/null
done
sleep 1
before_rss=$(rss_kib)

echo "| phase | ESTABLISHED | CLOSE-WAIT | open long-polls | daemon RSS (KiB) |"
echo "|---|---|---|---|---|"
row "before"
run_round() {
    local round=$1
    python3 - "$port" "$key" "$polls" "$close" "$pid" <<'PY' &
import socket, struct, sys, time
port, key, count, close, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
import os
paths = os.environ.get("PATHS", "/payment-api/v1/debitNoteEvents?timeout=60 /payment-api/v1/invoiceEvents?timeout=60 /market-api/v1/agreementEvents?timeout=60").split()
socks = []
for i in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    req = f"GET {paths[i % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n"
    s.sendall(req.encode())
    socks.append(s)
open("/tmp/longpoll-bench-%s.ready" % pid, "w").close()
time.sleep(3)
for s in socks:
    if close == "rst":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
open("/tmp/longpoll-bench-%s.left" % pid, "w").close()
PY
    local clients=$!
    while [ ! -e "/tmp/longpoll-bench-$pid.ready" ]; do sleep 0.1; done
    sleep 2
    row "round $round: $polls polls open"
    while [ ! -e "/tmp/longpoll-bench-$pid.left" ]; do sleep 0.05; done
    sleep 1
    row "round $round: 1 s after the clients left"
    wait "$clients"
    rm -f "/tmp/longpoll-bench-$pid.ready" "/tmp/longpoll-bench-$pid.left"
}
rounds=${ROUNDS:-2}
left=0
for round in $(seq "$rounds"); do
    run_round "$round"
    [ "$round" -eq 1 ] && after_first=$(rss_kib)
    left=$(( left + $(conns established) + $(conns close-wait) ))
done
after_last=$(rss_kib)
growth=$(( after_last - before_rss ))
again=$(( after_last - after_first ))
echo
echo "connections left after the clients: $left (goal 0)"
echo "RSS after - before: ${growth} KiB (goal <= 1024)"
echo "RSS after round $rounds - after round 1: ${again} KiB (nothing kept per abandoned poll: <= 1024)"
[ "$left" -eq 0 ] && [ "$again" -le 1024 ]
