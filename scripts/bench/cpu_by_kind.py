#!/usr/bin/env python3
"""Where the machine's CPU time went while something ran, by process kind.

    cpu_by_kind.py snapshot FILE     write a snapshot of /proc to FILE (JSON)
    cpu_by_kind.py report BEFORE AFTER
        print a table: each process kind's CPU seconds between the two
        snapshots, its share of the machine's busy time, and how busy the
        machine was (busy / (busy + idle) over every core)

A kind is a process's command name (`golem-daemon`, `exe-unit-wasm`,
`python3`, ...). A process's time is its own (utime + stime) plus what its
waited-for children left it (cutime + cstime), so exe units that ended in
between are counted with the agent that started them ("golem-provider").
Processes that started and ended in between without a live parent are
counted only in the machine's total ("other"); kinds under 1 % are left out.
"""
import json
import os
import sys

TICK = os.sysconf("SC_CLK_TCK")


def snapshot():
    processes = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state); utime..cstime are fields 14..17.
        ticks = sum(int(value) for value in fields[11:15])
        start = int(fields[19])
        try:
            with open(f"/proc/{name}/cmdline", "rb") as cmdline:
                args = cmdline.read().split(b"\0")
            where = next((args[i + 1].decode(errors="replace") for i, arg in enumerate(args[:-1]) if arg == b"--data-dir"), "")
        except OSError:
            where = ""
        processes[f"{name}:{start}"] = {"kind": comm, "ticks": ticks, "ppid": fields[1], "data_dir": where}
    with open("/proc/stat") as stat:
        cpu = stat.readline().split()[1:]
    values = [int(value) for value in cpu]
    idle = values[3] + values[4]
    return {"processes": processes, "busy": sum(values[:8]) - idle, "idle": idle}


def report(before, after):
    kinds = {}
    single = []
    # A child that ended in between left its whole life's time to its parent:
    # what it had used before the first snapshot is taken off the parent.
    already_counted = {}
    live_pids = {key.split(":")[0]: key for key in after["processes"]}
    for key, process in before["processes"].items():
        if key not in after["processes"] and process["ppid"] in live_pids:
            parent = live_pids[process["ppid"]]
            already_counted[parent] = already_counted.get(parent, 0) + process["ticks"]
    for key, process in after["processes"].items():
        earlier = before["processes"].get(key, {"ticks": 0})
        used = process["ticks"] - earlier["ticks"] - already_counted.get(key, 0)
        if used > 0:
            kinds[process["kind"]] = kinds.get(process["kind"], 0) + used
            single.append((used, process["kind"], process.get("data_dir", ""), key.split(":")[0]))
    busy = after["busy"] - before["busy"]
    idle = after["idle"] - before["idle"]
    counted = sum(kinds.values())
    kinds["other"] = max(0, busy - counted)
    print(f"  {'process kind':<22} {'CPU s':>8} {'share':>7}")
    for kind, ticks in sorted(kinds.items(), key=lambda item: -item[1]):
        if ticks * 100 < max(busy, 1):  # under 1 %: left out
            continue
        share = 100 * ticks / max(busy, 1)
        print(f"  {kind:<22} {ticks / TICK:>8.1f} {share:>6.1f}%")
    print("  busiest processes:")
    for used, kind, data_dir, pid in sorted(single, reverse=True)[:5]:
        where = f" ({os.path.basename(data_dir.rstrip('/'))})" if data_dir else ""
        print(f"    {kind + where + ' pid ' + pid:<32} {used / TICK:>6.1f} s")
    total = busy + idle
    print(f"  {'machine busy':<22} {busy / TICK:>8.1f} {100 * busy / max(total, 1):>6.1f}% of {total / TICK:.1f} core-s")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "snapshot":
        with open(sys.argv[2], "w") as out:
            json.dump(snapshot(), out)
    elif len(sys.argv) == 4 and sys.argv[1] == "report":
        with open(sys.argv[2]) as first, open(sys.argv[3]) as second:
            report(json.load(first), json.load(second))
    else:
        sys.exit(__doc__)
