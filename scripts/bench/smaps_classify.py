#!/usr/bin/env python3
"""Where a process's resident memory is: /proc/PID/smaps split by kind.

    scripts/bench/smaps_classify.py PID [PID...]      # one JSON object per line

Kinds (KiB of Rss each): `file` (the binary and libraries), `heap` (glibc's
main arena, [heap]), `arenas` (glibc's per-thread arenas: anonymous mappings
starting at a 64 MiB boundary, where glibc puts every non-main arena heap),
`stacks` (anonymous mappings right above a 4 KiB guard page: thread stacks,
plus [stack]), `other_anon` (the rest: large blocks malloc mmaps on its own,
libraries' own mmaps). Also `threads`, `arena_count` (arena heaps with any
resident page), `rss` (the sum of the kinds), and from smaps_rollup `anon`
(every anonymous page) and `pss` (RSS with each shared page divided among
the processes that map it: the binary's code is shared by every daemon of a
host).
Used by scripts/bench/idle-rss.sh; glibc only (other allocators' regions
land in `other_anon`).
"""
import json
import sys

ARENA_ALIGN = 64 * 1024 * 1024  # glibc's HEAP_MAX_SIZE on 64-bit


def mappings(pid):
    current = None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                if current:
                    yield current
                start, end = (int(part, 16) for part in head[0].split("-"))
                current = {"start": start, "end": end, "perms": head[1],
                           "path": head[5] if len(head) > 5 else "", "rss": 0}
            elif head[0] == "Rss:":
                current["rss"] = int(head[1])
    if current:
        yield current


def classify(pid):
    kinds = {"file": 0, "heap": 0, "arenas": 0, "stacks": 0, "other_anon": 0}
    arena_count = 0
    previous = None
    for mapping in mappings(pid):
        path, rss = mapping["path"], mapping["rss"]
        if path.startswith("/"):
            kind = "file"
        elif path == "[heap]":
            kind = "heap"
        elif path == "[stack]":
            kind = "stacks"
        elif path.startswith("["):
            kind = "file"  # [vdso], [vvar]: shared, tiny
        elif mapping["start"] % ARENA_ALIGN == 0 and mapping["perms"].startswith("rw"):
            kind = "arenas"
            arena_count += rss > 0
        elif (previous is not None and previous["end"] == mapping["start"]
              and previous["perms"].startswith("---") and previous["end"] - previous["start"] == 4096):
            kind = "stacks"
        else:
            kind = "other_anon"
        kinds[kind] += rss
        previous = mapping
    with open(f"/proc/{pid}/status") as status:
        threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        totals = {line.split()[0].rstrip(":"): int(line.split()[1]) for line in rollup if line.split()[0].endswith(":")}
    return {"pid": pid, "rss": sum(kinds.values()), "anon": totals.get("Anonymous", 0), "pss": totals.get("Pss", 0),
            **kinds, "arena_count": arena_count, "threads": threads}


if __name__ == "__main__":
    for pid in sys.argv[1:]:
        try:
            print(json.dumps(classify(int(pid))))
        except (FileNotFoundError, ProcessLookupError):
            print(json.dumps({"pid": int(pid), "gone": True}))
