#!/usr/bin/env bash
# The abuse run (issue 16): plays each attack of docs/security.md against real
# daemons, exe units and agents — the exploit tests of tests/tests/security.rs —
# and prints a table: attack, the refusal expected, what was seen, and whether
# the node held (the test's assertions passed). Docker attacks run when an
# engine answers (as in scripts/test.sh); otherwise their rows are missing and
# the summary says so.
#
#   scripts/bench/abuse.sh            # build (debug), run, print the table
#   SKIP_BUILD=1 scripts/bench/abuse.sh
#   FORMAT=tsv scripts/bench/abuse.sh # tab-separated rows for scripts
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${GOLEM_TEST_DOCKER:-}" ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    export GOLEM_TEST_DOCKER=1
fi
filter='binary(security)'
[ "${GOLEM_TEST_DOCKER:-}" = 1 ] || filter="$filter and not test(/(^|::)docker_/)"

if [ -z "${SKIP_BUILD:-}" ]; then
    echo "building the binaries and the security tests..." >&2
    cargo build --workspace --bins --locked >&2
    cargo nextest run -p golem-tests --test security --locked --no-run >&2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# --no-capture runs the tests one at a time and prints each test's output
# before its PASS/FAIL line, so every row belongs to the verdict that follows.
cargo nextest run -p golem-tests --test security --locked --no-fail-fast --no-capture \
    --run-ignored all -E "$filter" >"$log" 2>&1 || status=$?

awk -v format="${FORMAT:-table}" -F'\t' '
    /^ABUSE-ROW\t/ { pending[++n] = $2 "\t" $3 "\t" $4; next }
    # nextest repeats the failures under its Summary line: count each test once.
    /^[[:space:]]*Summary \[/ { done = 1 }
    !done && /^[[:space:]]*(TRY [0-9]+ )?(PASS|LEAK|FAIL|LEAK-FAIL|SIG[A-Z]+|TIMEOUT|ABORT) \[/ {
        passed = ($0 ~ /^[[:space:]]*(TRY [0-9]+ )?(PASS|LEAK) \[/)
        verdict = passed ? "held" : "NOT HELD (test failed)"
        tests++
        if (!passed) failed++
        for (i = first + 1; i <= n; i++) rows[i] = pending[i] "\t" verdict
        first = n
        next
    }
    END {
        if (format == "tsv") {
            for (i = 1; i <= n; i++) print rows[i]
        } else {
            print "| attack | expected refusal | seen | held |"
            print "|---|---|---|---|"
            for (i = 1; i <= n; i++) {
                split(rows[i], f, "\t")
                gsub(/\|/, "\\|", f[3])
                if (length(f[3]) > 160) f[3] = substr(f[3], 1, 157) "..."
                print "| " f[1] " | " f[2] " | " f[3] " | " f[4] " |"
            }
        }
        printf "%d attacks in %d tests, %d tests failed\n", n, tests, failed > "/dev/stderr"
    }
' "$log"

if [ "${GOLEM_TEST_DOCKER:-}" != 1 ]; then
    echo "docker attacks not played: no Docker engine answers (scripts/ensure-docker.sh)" >&2
fi
if [ "$status" -ne 0 ]; then
    echo "some exploit tests failed; their output:" >&2
    grep -E '^\s*(FAIL|panicked|thread .* panicked)' "$log" >&2 || true
fi
exit "$status"
