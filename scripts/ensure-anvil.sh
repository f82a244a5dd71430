#!/usr/bin/env bash
# Print the path of an anvil binary (local Ethereum dev chain for the erc20
# payment tests), installing npm's @foundry-rs/anvil into a cache directory
# outside the repo when it is missing. Tests find it through GOLEM_ANVIL_BIN or
# at this cache path.
set -euo pipefail
ANVIL_VERSION="${GOLEM_ANVIL_VERSION:-1.7.1}"
cache="${GOLEM_ANVIL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/golem-anvil}"
bin="$cache/node_modules/.bin/anvil"
if [ -n "${GOLEM_ANVIL_BIN:-}" ] && [ -x "$GOLEM_ANVIL_BIN" ]; then
    echo "$GOLEM_ANVIL_BIN"
    exit 0
fi
if ! [ -x "$bin" ] || ! "$bin" --version >/dev/null 2>&1; then
    command -v npm >/dev/null || { echo "ensure-anvil: npm is needed to install @foundry-rs/anvil" >&2; exit 1; }
    mkdir -p "$cache"
    (cd "$cache" && { [ -f package.json ] || npm init -y >/dev/null; } \
        && npm install --no-audit --no-fund "@foundry-rs/anvil@$ANVIL_VERSION" >&2)
fi
"$bin" --version >&2
echo "$bin"
