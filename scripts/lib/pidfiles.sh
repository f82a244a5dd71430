# Sourced by scripts/devnet.sh and scripts/lab.sh: processes named by pid files.

# stop_pidfiles PIDFILE...: SIGTERM them all at once (removing the files), wait
# up to 5 s, then SIGKILL what is left.
stop_pidfiles() {
    local file pid pids=()
    for file in "$@"; do
        [[ -f "$file" ]] || continue
        pid="$(cat "$file")"
        rm -f "$file"
        [[ -n "$pid" ]] && pids+=("$pid")
    done
    [[ ${#pids[@]} -gt 0 ]] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 1 100); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ "$alive" -eq 0 ]] && return 0
        sleep 0.05
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
}
