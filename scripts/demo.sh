#!/usr/bin/env bash
# The main job: build the node and bring it up on embedded defaults (a fresh
# data dir, sled files, no external services), show its identity through the
# REST API with an app-key, then stop it cleanly.
#
# The local network demo (providers running a requestor's job) grows here as the
# net, market, activity, provider and requestor issues land.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> building golem-daemon (release)"
cargo build --release --locked -p golem-daemon
target_dir="${CARGO_TARGET_DIR:-target}"
daemon="$target_dir/release/golem-daemon"

work_dir="$(mktemp -d -t golem-demo-XXXXXX)"
data_dir="$work_dir/node"
log="$work_dir/daemon.log"
cleanup() {
    if [[ -n "${daemon_pid:-}" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -TERM "$daemon_pid" && wait "$daemon_pid" || true
    fi
    rm -rf "$work_dir"
}
trap cleanup EXIT

echo "==> creating an app-key in $data_dir (no daemon running yet: the CLI opens the store)"
app_key="$("$daemon" app-key create demo --data-dir "$data_dir")"

echo "==> starting golem-daemon on embedded defaults"
"$daemon" run --data-dir "$data_dir" --api-addr 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 \
    --log-format json 2>"$log" &
daemon_pid=$!
for _ in $(seq 1 200); do
    grep -q '"REST API ready"' "$log" 2>/dev/null && break
    kill -0 "$daemon_pid" 2>/dev/null || { cat "$log"; echo "daemon exited early" >&2; exit 1; }
    sleep 0.05
done
api_addr="$(grep '"REST API ready"' "$log" | head -1 | sed -E 's/.*"api_addr":"([^"]+)".*/\1/')"
startup_ms="$(grep '"REST API ready"' "$log" | head -1 | sed -E 's/.*"startup_ms":([0-9]+).*/\1/')"
echo "    REST API at http://$api_addr (ready in ${startup_ms} ms)"

echo "==> GET /me with the app-key"
me="$(curl -sf -H "Authorization: Bearer $app_key" "http://$api_addr/me")"
echo "    $me"
echo "==> golem-daemon id show (over the running daemon's bus socket)"
echo "    $("$daemon" id show --data-dir "$data_dir")"
echo "==> GET /me without an app-key is refused"
echo "    HTTP $(curl -s -o /dev/null -w '%{http_code}' "http://$api_addr/me")"

echo "==> stopping the daemon (SIGTERM)"
kill -TERM "$daemon_pid"
wait "$daemon_pid"
daemon_pid=""
echo "done: the node started, served its identity, and stopped cleanly"
