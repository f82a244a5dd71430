#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info` (the VM exe unit's tests need
# one): as root, install Debian's docker.io, busybox-static (test images, the
# containers' keep-alive) and squashfs-tools-ng (sqfs2tar converts gvmkit-squash
# images; tar2sqfs builds one in tests) when missing and
# start dockerd in the background (log in $GOLEM_DOCKERD_LOG) when no engine
# answers. Prints the engine version on success; fails with the log tail.
set -euo pipefail
log="${GOLEM_DOCKERD_LOG:-/var/tmp/golem-dockerd.log}"
wait_secs="${GOLEM_DOCKERD_WAIT:-60}"

need_install=()
command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 || need_install+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx sh || need_install+=(busybox-static)
command -v sqfs2tar >/dev/null 2>&1 && command -v tar2sqfs >/dev/null 2>&1 || need_install+=(squashfs-tools-ng)
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

if docker info >/dev/null 2>&1; then
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
