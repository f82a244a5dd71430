#!/usr/bin/env bash
# gftp benchmark (issue 9 item 3): two release daemons on loopback, the second
# bootstrapped from the first. A `gftp publish` process on daemon A serves a
# SIZE_MIB (default 1024) file of random bytes; `gftp download` on daemon B
# fetches it over libp2p and checks its sha3. Then the other way: `gftp
# receive` on A opens an upload slot and `gftp upload` on B fills it (the
# receiver checks the sha3). Prints a table. SKIP_BUILD=1 reuses the binaries;
# GFTP_CHUNK_SIZE / GFTP_IN_FLIGHT tune the transfer.
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mib="${SIZE_MIB:-1024}"

echo "building release binaries..." >&2
[[ -n "${SKIP_BUILD:-}" ]] || cargo build --release --locked -p golem-daemon -p golem-gftp --bins >&2
target_dir="${CARGO_TARGET_DIR:-target}"
profile="${PROFILE:-release}" # PROFILE=debug with SKIP_BUILD=1 for a quick functional run
daemon="$target_dir/$profile/golem-daemon"
gftp="$target_dir/$profile/gftp"

work="$(mktemp -d -t golem-gftp-bench-XXXXXX)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; sleep 0.5; rm -rf "$work"; }
trap cleanup EXIT

start() { # name [extra args...]
    local name="$1"; shift
    "$daemon" run --data-dir "$work/$name" --api-addr 127.0.0.1:0 --p2p-listen /ip4/127.0.0.1/tcp/0 \
        --log-format json "$@" 2>"$work/$name.log" &
    pids+=("$!")
    for _ in $(seq 1 250); do grep -q 'REST API ready' "$work/$name.log" 2>/dev/null && return; sleep 0.02; done
    echo "$name did not start" >&2; cat "$work/$name.log" >&2; exit 1
}

now() { date +%s.%N; }
rate() { python3 -c "import sys; b=int(sys.argv[1]); s=float(sys.argv[2]); print(f'{s:.2f} s | {b/s/1e6:.0f} MB/s')" "$1" "$2"; }
wait_line() { # file -> first line, once written
    for _ in $(seq 1 3000); do [[ -s "$1" ]] && { head -n1 "$1"; return; }; sleep 0.02; done
    echo "no url in $1" >&2; exit 1
}

start a
bootstrap="$("$daemon" net status --json --data-dir "$work/a" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["listen_addrs"][0] + "/p2p/" + s["peer_id"])')"
start b --bootstrap "$bootstrap"
bytes=$((size_mib * 1024 * 1024))
echo "writing $size_mib MiB of random bytes..." >&2
head -c "$bytes" /dev/urandom >"$work/input.bin"

# Download: publish on A, download on B.
t0="$(now)"
"$gftp" --data-dir "$work/a" publish "$work/input.bin" >"$work/publish.out" &
pids+=("$!")
url="$(wait_line "$work/publish.out")"
t1="$(now)"
echo "published as $url" >&2
"$gftp" --data-dir "$work/b" download "$url" "$work/downloaded.bin"
t2="$(now)"
cmp -s "$work/input.bin" "$work/downloaded.bin" || { echo "downloaded file differs" >&2; exit 1; }
rm -f "$work/downloaded.bin"

# Upload: receive on A, upload from B.
"$gftp" --data-dir "$work/a" receive "$work/received.bin" >"$work/receive.out" &
receiver=$!
pids+=("$receiver")
slot="$(wait_line "$work/receive.out")"
t3="$(now)"
"$gftp" --data-dir "$work/b" upload "$work/input.bin" "$slot"
t4="$(now)"
wait "$receiver"
cmp -s "$work/input.bin" "$work/received.bin" || { echo "uploaded file differs" >&2; exit 1; }

publish_s="$(python3 -c "print(f'{$t1-$t0:.2f}')")"
printf '\n| Measure (%s MiB, two daemons on loopback) | Time | Throughput | Goal |\n|---|---|---|---|\n' "$size_mib"
printf '| Download: gftp publish on A -> gftp download on B (sha3 checked) | %s | >= 100 MB/s |\n' "$(rate "$bytes" "$(python3 -c "print($t2-$t1)")")"
printf '| Upload: gftp receive on A <- gftp upload from B (sha3 checked) | %s | >= 100 MB/s |\n' "$(rate "$bytes" "$(python3 -c "print($t4-$t3)")")"
printf '| Publish (hash the file, bind the address) | %s s | - | - |\n' "$publish_s"
