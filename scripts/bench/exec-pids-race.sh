#!/usr/bin/env bash
# How often the engine's runc cannot start a `docker exec` while a container's
# pids are all taken (session 20, the VM exe unit's "could not be started by
# the container runtime" message). A busybox container with the VM unit's pids
# limit (128) runs the hardened VM test's fork bomb (`sh` gives up at its first
# failed fork and leaves the `sleep 5`s it started), then `exec`s `echo` at
# once, EXECS times per round: first on the idle machine, then with three
# busy loops on the 2 cores, as during a test run. Prints a table row per setting.
#   usage: scripts/bench/exec-pids-race.sh [ROUNDS] [EXECS]   (defaults 5 8)
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-5}
execs=${2:-8}
scripts/ensure-docker.sh >&2
tests/images/build.sh busybox golem-bench-pids:latest >&2
name=golem-bench-pids-$$
hogs=()
cleanup() {
    docker rm -f "$name" >/dev/null 2>&1 || true
    for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

measure() { # $1: label
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker run -d --name "$name" --pids-limit 128 --entrypoint /bin/sleep golem-bench-pids:latest 3600 >/dev/null
    local failed=0 total=0
    for _ in $(seq "$rounds"); do
        docker exec "$name" /bin/sh -c 'for i in $(seq 300); do sleep 5 & done; wait' >/dev/null 2>&1 || true
        for _ in $(seq "$execs"); do
            total=$((total + 1))
            if ! docker exec "$name" /bin/echo alive 2>&1 | grep -qx alive; then
                failed=$((failed + 1))
            fi
        done
        sleep 5.5
    done
    echo "| $1 | $total | $failed |"
}

echo "| setting | execs right after the fork bomb | refused by runc (read init-p) |"
echo "|---|---|---|"
measure "idle machine"
for _ in 1 2 3; do yes >/dev/null & hogs+=($!); done
measure "3 busy loops on the 2 cores"
