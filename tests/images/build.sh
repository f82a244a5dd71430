#!/usr/bin/env bash
# Build a test image from tests/images/<name>/Dockerfile with the host's static
# busybox copied into its context, and optionally `docker save` it.
#   tests/images/build.sh <name> <tag> [<output.tar>]
set -euo pipefail
name="$1"; tag="$2"; out="${3:-}"
here="$(cd "$(dirname "$0")" && pwd)"
busybox="${GOLEM_BUSYBOX:-/bin/busybox}"
[ -x "$busybox" ] || { echo "build.sh: $busybox missing: install busybox-static" >&2; exit 1; }
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$here/$name/Dockerfile" "$context/"
cp "$busybox" "$context/busybox"
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$context" >/dev/null
if [ -n "$out" ]; then docker save -o "$out" "$tag"; fi
echo "$tag"
