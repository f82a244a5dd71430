#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info` (the VM exe unit's tests need
# one): as root, install Debian's docker.io, busybox-static (test images, the
# containers' keep-alive) and squashfs-tools-ng (sqfs2tar converts gvmkit-squash
# images; tar2sqfs builds one in tests), nftables (nft: the VM unit's outbound
# filter), runsc (gVisor, the VM unit's default
# sandbox) and jq when missing, registers runsc with the engine (see below) and
# start dockerd in the background (log in $GOLEM_DOCKERD_LOG) when no engine
# answers. Prints the engine version on success; fails with the log tail.
# VERBOSE=1 says what it changed.
#
# gVisor: the runtime `runsc` is entered in /etc/docker/daemon.json (merged
# into what is there) as {"path": "/usr/bin/runsc", "runtimeArgs":
# ["--network=none", "--overlay2=root:memory"]}: gVisor's own netstack cannot
# start in the engine's root network namespace here, and the container's root
# file system is an overlay in the sandbox's memory, so writes to it count
# against the activity's memory limit and never reach the image's layers.
# A second runtime, `runsc-net`, runs gVisor with its own network stack on the
# container's interface ("--network=sandbox"), for outbound activities: its
# path is scripts/runsc-net installed as /usr/local/lib/golem/runsc-net (a
# wrapper that gets Debian's runsc past its root-namespace check on recent
# kernels; RFC 004). A running dockerd is sent SIGHUP to reload the file;
# nothing is done when the entries are already there (the wrapper is
# reinstalled when it differs, which needs no reload).
# GOLEM_SKIP_GVISOR=1 skips all of it.
set -euo pipefail
log="${GOLEM_DOCKERD_LOG:-/var/tmp/golem-dockerd.log}"
wait_secs="${GOLEM_DOCKERD_WAIT:-60}"
daemon_json="${GOLEM_DOCKER_DAEMON_JSON:-/etc/docker/daemon.json}"
runsc_net_path=/usr/local/lib/golem/runsc-net
# The gVisor runtimes, name → entry, as wanted in daemon.json.
runtimes_wanted='{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--network=none","--overlay2=root:memory"]},
 "runsc-net":{"path":"'"$runsc_net_path"'","runtimeArgs":["--network=sandbox","--overlay2=root:memory"]}}'
script_dir="$(cd "$(dirname "$0")" && pwd)"
say() { if [ -n "${VERBOSE:-}" ]; then echo "ensure-docker: $*" >&2; fi; }
gvisor="${GOLEM_SKIP_GVISOR:-}"

need_install=()
command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || need_install+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx sh || need_install+=(busybox-static)
command -v sqfs2tar >/dev/null 2>&1 && command -v tar2sqfs >/dev/null 2>&1 || need_install+=(squashfs-tools-ng)
# nft: the VM unit's outbound filter (capabilities inet and manifest-support).
command -v nft >/dev/null 2>&1 || need_install+=(nftables)
if [ -z "$gvisor" ]; then
    [ -x /usr/bin/runsc ] || need_install+=(runsc)
    command -v jq >/dev/null 2>&1 || need_install+=(jq)
fi
if [ "${#need_install[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "ensure-docker: ${need_install[*]} missing; run as root to install" >&2
        exit 1
    fi
    echo "ensure-docker: installing ${need_install[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq "${need_install[@]}" >&2
fi

# Install the runsc-net wrapper unless it is there as in this checkout.
install_runsc_net() {
    if cmp -s "$script_dir/runsc-net" "$runsc_net_path"; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "ensure-docker: $runsc_net_path is missing or old; run as root to install it" >&2
        exit 1
    fi
    install -D -m 0755 "$script_dir/runsc-net" "$runsc_net_path"
    say "installed $runsc_net_path"
}

# Enter the gVisor runtimes in daemon.json unless they are there as wanted;
# prints "changed" when the file was written.
register_runsc() {
    local current wanted
    current='{}'
    if [ -s "$daemon_json" ]; then
        current="$(cat "$daemon_json")"
    fi
    if jq -e --argjson wanted "$runtimes_wanted" \
        '(.runtimes // {}) as $have | all($wanted | to_entries[]; $have[.key] == .value)' \
        <<<"$current" >/dev/null; then
        return 0
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "ensure-docker: $daemon_json lacks the runtimes runsc and runsc-net as wanted; run as root to add them" >&2
        exit 1
    fi
    wanted="$(jq --argjson wanted "$runtimes_wanted" '.runtimes = ((.runtimes // {}) + $wanted)' <<<"$current")"
    mkdir -p "$(dirname "$daemon_json")"
    printf '%s\n' "$wanted" >"$daemon_json.tmp"
    mv "$daemon_json.tmp" "$daemon_json"
    say "runtimes runsc and runsc-net entered in $daemon_json"
    echo changed
}
# Whether the running engine lists every gVisor runtime.
engine_has_runtimes() {
    docker info --format '{{json .Runtimes}}' \
        | jq -e --argjson wanted "$runtimes_wanted" '(($wanted | keys) - keys) == []' >/dev/null
}
registered=""
if [ -z "$gvisor" ]; then
    install_runsc_net
    registered="$(register_runsc)"
fi

if docker info >/dev/null 2>&1; then
    if [ -n "$registered" ] || ! engine_has_runtimes; then
        if [ -z "$gvisor" ]; then
            pid="$(cat /var/run/docker.pid 2>/dev/null || pidof dockerd || true)"
            if [ -z "$pid" ]; then
                echo "ensure-docker: cannot find dockerd's pid to reload $daemon_json" >&2
                exit 1
            fi
            say "reloading dockerd ($pid)"
            kill -HUP "$pid"
            for _ in $(seq 1 40); do
                if engine_has_runtimes; then
                    break
                fi
                sleep 0.25
            done
        fi
    fi
    docker version --format '{{.Server.Version}}'
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "ensure-docker: no engine answers and only root can start dockerd" >&2
    exit 1
fi
echo "ensure-docker: starting dockerd (log: $log)" >&2
# A stale pid file from a killed dockerd blocks the next start.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
fi
nohup dockerd >"$log" 2>&1 </dev/null &
for _ in $(seq 1 "$((wait_secs * 4))"); do
    if docker info >/dev/null 2>&1; then
        docker version --format '{{.Server.Version}}'
        exit 0
    fi
    sleep 0.25
done
echo "ensure-docker: dockerd did not answer within ${wait_secs}s; log tail:" >&2
tail -n 30 "$log" >&2
exit 1
