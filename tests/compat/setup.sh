#!/usr/bin/env bash
# Installs the unmodified clients the compat suite runs: yapapi 0.13.1 in a venv
# and @golem-sdk/golem-js 3.6 with npm, both in a cache dir outside the repo
# (default /var/tmp/golem-compat, override with GOLEM_COMPAT_CACHE).
# Idempotent: a second run only checks the stamps and returns at once.
# Prints nothing but errors unless VERBOSE=1; exits non-zero when an install fails.
set -euo pipefail

CACHE="${GOLEM_COMPAT_CACHE:-/var/tmp/golem-compat}"
YAPAPI_VERSION="0.13.1"
GOLEM_JS_SPEC="@golem-sdk/golem-js@3.6"
VENV="$CACHE/venv"
NODE_DIR="$CACHE/node"

log() { if [ "${VERBOSE:-0}" = 1 ]; then echo "setup.sh: $*" >&2; fi; }

mkdir -p "$CACHE"

# --- yapapi -----------------------------------------------------------------
if [ -f "$VENV/.yapapi-$YAPAPI_VERSION" ] && "$VENV/bin/python" -c 'import yapapi' 2>/dev/null; then
    log "yapapi $YAPAPI_VERSION already installed in $VENV"
else
    log "installing yapapi $YAPAPI_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "yapapi==$YAPAPI_VERSION"
    "$VENV/bin/python" -c "import yapapi, sys; v = yapapi.get_version(); sys.exit(0 if v == '$YAPAPI_VERSION' else 'yapapi version ' + v)"
    touch "$VENV/.yapapi-$YAPAPI_VERSION"
fi

# --- golem-js ---------------------------------------------------------------
if [ -f "$NODE_DIR/.golem-js-3.6" ] && [ -f "$NODE_DIR/node_modules/@golem-sdk/golem-js/package.json" ]; then
    log "golem-js already installed in $NODE_DIR"
else
    log "installing $GOLEM_JS_SPEC into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    [ -f "$NODE_DIR/package.json" ] || echo '{"name":"golem-compat-clients","private":true}' > "$NODE_DIR/package.json"
    (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error "$GOLEM_JS_SPEC" >/dev/null)
    node -e "const v=require('$NODE_DIR/node_modules/@golem-sdk/golem-js/package.json').version; if(!v.startsWith('3.6.')){console.error('golem-js version '+v);process.exit(1)}"
    touch "$NODE_DIR/.golem-js-3.6"
fi

echo "$CACHE"
