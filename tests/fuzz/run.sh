#!/usr/bin/env bash
# Fuzz the REST API of a live golem-daemon over ya-client's OpenAPI specs
# (tests/fuzz/specs, see their NOTICE) with schemathesis, failing on any 5xx
# other than the documented 501s, or a dropped or stalled connection.
#
#   tests/fuzz/run.sh [DAEMON-BINARY]
#
# DAEMON-BINARY defaults to $CARGO_TARGET_DIR/debug/golem-daemon (or
# target/debug). Schemathesis comes from the venv of tests/fuzz/setup.sh
# (GOLEM_FUZZ_CACHE, default /var/tmp/golem-fuzz). Bounded for CI:
# GOLEM_FUZZ_EXAMPLES cases per operation (default 20) and
# a time budget per spec (its share of about 2.5 minutes, scaled by
# GOLEM_FUZZ_TIME_SCALE, default 1), about 3 minutes in all with loading.
# GOLEM_FUZZ_SEED (default 21) picks the examples. The daemon's log and
# schemathesis' reports stay in GOLEM_FUZZ_OUT
# (default: a temp dir, printed at the end).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${GOLEM_FUZZ_CACHE:-/var/tmp/golem-fuzz}"
ST="$CACHE/venv/bin/schemathesis"
DAEMON="${1:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/golem-daemon}"
EXAMPLES="${GOLEM_FUZZ_EXAMPLES:-20}"
TIME_SCALE="${GOLEM_FUZZ_TIME_SCALE:-1}"
OUT="${GOLEM_FUZZ_OUT:-$(mktemp -d /tmp/golem-fuzz.XXXXXX)}"
mkdir -p "$OUT"
KEY="fuzz-$(date +%s)-$$"

[ -x "$ST" ] || { echo "run.sh: no schemathesis in $CACHE/venv: run tests/fuzz/setup.sh" >&2; exit 2; }
[ -x "$DAEMON" ] || { echo "run.sh: no daemon binary at $DAEMON: cargo build -p golem-daemon" >&2; exit 2; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
GOLEM_AUTOCONF_APPKEY="$KEY" RUST_LOG=info "$DAEMON" run --data-dir "$OUT/daemon" \
    --api-addr "127.0.0.1:$PORT" --p2p-listen /ip4/127.0.0.1/tcp/0 --log-format json \
    >"$OUT/daemon.log" 2>&1 &
DAEMON_PID=$!
cleanup() { kill "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 1 100); do
    grep -q "REST API ready" "$OUT/daemon.log" 2>/dev/null && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$OUT/daemon.log" >&2; exit 1; }
    sleep 0.2
done
grep -q "REST API ready" "$OUT/daemon.log" || { echo "run.sh: the daemon did not start" >&2; exit 1; }

export SCHEMATHESIS_HOOKS=hooks GOLEM_FUZZ_API="http://127.0.0.1:$PORT" GOLEM_FUZZ_APPKEY="$KEY"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
status=0
cd "$OUT"  # schemathesis keeps its example database in the working directory
# spec file : the base path its operations live under : seconds of budget
for spec in market-api:/market-api/v1:40 activity-api:/activity-api/v1:20 payment-api:/payment-api/v1:40 \
            net-api:/net-api/v1:15 net-api-v2:/net-api/v2:15 gsb-api:/gsb-api/v1:5 \
            identity-api::5 version-api::5; do
    IFS=: read -r name base seconds <<<"$spec"
    MAX_TIME=$(python3 -c "print(max(1, round($seconds * $TIME_SCALE)))")
    echo "== $name ($(date -u +%H:%M:%S))"
    "$ST" run "$HERE/specs/$name.yaml" --url "http://127.0.0.1:$PORT$base" \
        -H "Authorization: Bearer $KEY" \
        --checks golem_no_server_error \
        --phases examples,coverage,fuzzing \
        --max-examples "$EXAMPLES" --max-time "$MAX_TIME" --seed "${GOLEM_FUZZ_SEED:-21}" \
        --request-timeout 10 --workers 1 --no-shrink \
        --suppress-health-check all --warnings off \
        --report junit --report-dir "$OUT/$name" || status=1
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        echo "run.sh: the daemon died during $name" >&2
        tail -20 "$OUT/daemon.log" >&2
        exit 1
    fi
done
if grep -q '"level":"ERROR"' "$OUT/daemon.log"; then
    echo "run.sh: the daemon logged errors (see $OUT/daemon.log):" >&2
    grep '"level":"ERROR"' "$OUT/daemon.log" | head -5 >&2
fi
echo "fuzz: $([ $status = 0 ] && echo passed || echo FAILED); daemon log and reports in $OUT"
exit "$status"
