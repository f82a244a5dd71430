#!/usr/bin/env python3
"""Idle RSS over time, one panel per measure, one line per run.

    scripts/bench/idle_rss_chart.py OUT.png LABEL=FILE.csv [LABEL=FILE.csv ...]

Each CSV is what `scripts/bench/idle-rss.sh --window SECS --csv FILE`
writes (lab,seconds,pid,rss_kib,connections). Panels: the p50 and the max
RSS over the idle daemons at each sample, and their p50 connections; a
dashed line marks the 30 MiB goal. Needs matplotlib (soak.sh installs it
into /tmp/golem-soak-venv when missing).
"""
import collections
import csv
import statistics
import sys


def series(path):
    by_time = collections.OrderedDict()
    with open(path) as rows:
        for row in csv.DictReader(rows):
            by_time.setdefault(int(row["seconds"]), []).append(
                (int(row["rss_kib"]) / 1024, int(row["connections"])))
    times = sorted(by_time)
    return {
        "seconds": times,
        "p50": [statistics.median(r for r, _ in by_time[t]) for t in times],
        "max": [max(r for r, _ in by_time[t]) for t in times],
        "connections": [statistics.median(c for _, c in by_time[t]) for t in times],
    }


def main():
    if len(sys.argv) < 3 or any("=" not in arg for arg in sys.argv[2:]):
        sys.exit(__doc__)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [(arg.split("=", 1)[0], series(arg.split("=", 1)[1])) for arg in sys.argv[2:]]
    figure, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    panels = [("p50", "RSS p50 over idle daemons (MiB)"), ("max", "RSS max over idle daemons (MiB)"),
              ("connections", "connections p50")]
    for axis, (key, label) in zip(axes, panels):
        for name, run in runs:
            axis.plot([t / 60 for t in run["seconds"]], run[key], label=name)
        if key != "connections":
            axis.axhline(30, linestyle="--", color="grey", linewidth=1)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].legend()
    axes[-1].set_xlabel("minutes into the window")
    figure.tight_layout()
    figure.savefig(sys.argv[1], dpi=90)


if __name__ == "__main__":
    main()
