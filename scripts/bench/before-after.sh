# Sourced by the before/after benchmark scripts (actors.sh,
# actors-interleaved.sh): where the two sides live. Sets after_dir (this
# checkout), before_rev ($1 or issue 18's 7f8cd70), before_dir and
# before_target (BEFORE_DIR, BEFORE_TARGET) and after_target
# (CARGO_TARGET_DIR), and makes the before worktree when it is missing.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
after_dir="$(pwd)"
before_rev="${1:-7f8cd70}"
before_dir="${BEFORE_DIR:-/var/tmp/golem-bench-before}"
before_target="${BEFORE_TARGET:-/var/tmp/golem-bench-before-target}"
after_target="${CARGO_TARGET_DIR:-$after_dir/target}"
if [[ ! -d "$before_dir" ]]; then
    echo "making a worktree of $before_rev at $before_dir" >&2
    git worktree add --detach "$before_dir" "$before_rev" >&2
fi
