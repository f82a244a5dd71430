#!/usr/bin/env bash
# The main job: build the project, bring up a Golem network on loopback (one
# requestor daemon, three provider daemons each with golem-provider), run the
# demo job of examples/demo through `golem-requestor script` (six tasks spread
# over the providers, input files uploaded, results downloaded), pay with the
# dummy driver, print the results and the payment summary, and tear it all
# down, also on failure or Ctrl-C. Needs no Docker, chain or internet; when a
# Docker engine answers, a VM task runs too.
#
# PROVIDERS=N changes the number of providers; SKIP_BUILD=1 skips the build.
set -euo pipefail
cd "$(dirname "$0")/.."

providers="${PROVIDERS:-3}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target_dir/debug"
work="$(mktemp -d -t golem-demo-XXXXXX)"
export GOLEM_DEVNET_DIR="$work/net"
export GOLEM_DEVNET_SUBNET="demo-$$"
status=1

cleanup() {
    trap - EXIT INT TERM
    echo "==> tearing the network down"
    scripts/devnet.sh down >/dev/null 2>&1 || true
    if [[ "$status" -ne 0 && -d "$work/net" ]]; then
        echo "demo failed; logs were in $work/net" >&2
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; status=130; cleanup' INT TERM

if [[ -z "${SKIP_BUILD:-}" ]]; then
    echo "==> building (debug): cargo build --workspace --bins --locked"
    cargo build --workspace --bins --locked
fi

started_ns=$(date +%s%N)
echo "==> bringing up a loopback network: 1 requestor + $providers providers (subnet $GOLEM_DEVNET_SUBNET)"
SKIP_BUILD=1 CARGO_TARGET_DIR="$target_dir" scripts/devnet.sh up "$providers" 2>&1 \
    | grep -E '^==> (starting|devnet up)' | sed 's/^==>/   /'
# shellcheck disable=SC1091
source "$GOLEM_DEVNET_DIR/env"
requestor=("$bin/golem-requestor" --subnet "$GOLEM_DEVNET_SUBNET")

docker_note=""
if ! command -v docker >/dev/null 2>&1; then
    docker_note="no docker command on this machine"
elif ! docker_error="$(timeout 5 docker info --format '{{.ServerVersion}}' 2>&1)"; then
    docker_note="no Docker engine answers ($(echo "$docker_error" | tail -1 | cut -c1-80))"
fi
if [[ -n "$docker_note" ]]; then
    echo "    note: providers offer WASM only: $docker_note"
fi

echo "==> offers on the market"
"${requestor[@]}" offers --wait 1 | sed 's/^/    /'

echo "==> running examples/demo/job.toml with golem-requestor script (task files over gftp)"
"${requestor[@]}" script examples/demo/job.toml --output-dir "$work/out"

echo "==> results (downloaded from the providers into $work/out)"
for file in "$work"/out/*; do
    printf '    %-10s %s\n' "$(basename "$file"):" "$(head -c 100 "$file")"
done
count=$(ls "$work/out" | wc -l)
[[ "$count" -eq 6 ]] || { echo "expected 6 result files, got $count" >&2; exit 1; }
grep -q 'ALICE WAS BEGINNING' "$work/out/alice.txt" || { echo "alice.txt was not transformed" >&2; exit 1; }

if [[ -z "$docker_note" ]]; then
    echo "==> a VM task: golem-requestor run --runtime vm"
    if busybox="$(command -v busybox)" && file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
        mkdir -p "$work/image"
        cp "$busybox" "$work/image/busybox"
        printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$work/image/Dockerfile"
        docker build -q -t golem-demo-busybox "$work/image" >/dev/null 2>&1
        docker save golem-demo-busybox -o "$work/image.tar"
        "${requestor[@]}" run --runtime vm --image "$work/image.tar" -- /bin/sh -c 'echo hello from a container on $(hostname)' \
            | sed 's/^/    /'
    else
        echo "    note: skipped: no static busybox here to build a local image from (apt-get install busybox-static)"
    fi
fi

tenths=$(( ($(date +%s%N) - started_ns) / 100000000 ))
status=0
echo "==> done in $((tenths / 10)).$((tenths % 10)) s: the job ran on the providers, results came back, and they were paid"
