#!/usr/bin/env bash
# Installs schemathesis from PyPI into a venv outside the repo (GOLEM_FUZZ_CACHE,
# default /var/tmp/golem-fuzz) for tests/fuzz/run.sh. Idempotent; quiet unless
# an install fails.
set -euo pipefail
CACHE="${GOLEM_FUZZ_CACHE:-/var/tmp/golem-fuzz}"
VERSION="4.32.5"
if [ -f "$CACHE/venv/.schemathesis-$VERSION" ] && [ -x "$CACHE/venv/bin/schemathesis" ]; then
    exit 0
fi
mkdir -p "$CACHE"
python3 -m venv "$CACHE/venv"
"$CACHE/venv/bin/pip" install --quiet "schemathesis==$VERSION"
touch "$CACHE/venv/.schemathesis-$VERSION"
