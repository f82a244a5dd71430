"""Summary and chart of a soak run (scripts/bench/soak.sh).

Reads the CSV of samples (one row per process per sample), prints a markdown
table of every process kind's RSS, threads, fds and sled size right after the
warm-up and at the end with the growth between them, and the same growth
between the means of the first and the last ten minutes after the warm-up
(half of what follows the warm-up when shorter): a daemon's RSS saws by
10-15 MiB within a minute as its heap is trimmed, so two single samples can
be a trough and a peak, the job rate of the
first and last ten minutes (the issue's windows; half the run when shorter),
the CPU time per job of every process kind in those two windows (to tell
which kind a falling rate comes from; the machine's busy time too), and
draws one panel per measure with one line per process kind (the mean over
the processes of that kind) into a PNG.

    python3 soak_report.py SOAK.csv SOAK.png WARMUP_MINUTES
"""

import csv
import sys
from collections import defaultdict

MEASURES = [
    ("rss_kib", "RSS (MiB)", 1024.0),
    ("threads", "threads", 1.0),
    ("fds", "open fds", 1.0),
    ("sled_kib", "sled on disk (MiB)", 1024.0),
]


def load(path):
    """{kind: {measure: {time: [values]}}}, [(time, jobs, failed)] and
    {kind: {time: CPU ms summed over the kind's processes}}."""
    series = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    progress = {}
    cpu_by_process = defaultdict(lambda: defaultdict(dict))
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            time = int(row["time_s"])
            progress[time] = (int(row["jobs"]), int(row["failed"]))
            if row.get("cpu_ms"):
                # Keyed by process: the last sample can repeat a time.
                cpu_by_process[row["kind"]][time][row["process"]] = int(row["cpu_ms"])
            for measure, _, scale in MEASURES:
                if row[measure]:
                    series[row["kind"]][measure][time].append(float(row[measure]) / scale)
    cpu = {
        kind: {time: sum(by_process.values()) for time, by_process in times.items()}
        for kind, times in cpu_by_process.items()
    }
    return series, sorted((time, *counts) for time, counts in progress.items()), cpu


def mean_at(points, time):
    values = points.get(time)
    return sum(values) / len(values) if values else None


def window_mean(points, start, end):
    """Mean over the samples in [START, END] of the kind's mean."""
    values = [mean_at(points, time) for time in points if start <= time <= end]
    return sum(values) / len(values) if values else None


def growth(before, after):
    return f"{(after - before) / before * 100:+.1f} %" if before else "-"


def nearest(times, wanted):
    return min(times, key=lambda time: abs(time - wanted))


def jobs_per_second(progress, start, end):
    first = min(progress, key=lambda row: abs(row[0] - start))
    last = min(progress, key=lambda row: abs(row[0] - end))
    return (last[1] - first[1]) / max(1, last[0] - first[0])


def cpu_per_job(points, jobs, start, end):
    """CPU ms per job of one kind between the samples nearest START and END
    (JOBS: jobs done by each sample's time)."""
    times = sorted(points)
    first, last = nearest(times, start), nearest(times, end)
    done = jobs[last] - jobs[first]
    return (points[last] - points[first]) / done if done else None


def print_cpu_per_job(cpu, progress, window, end):
    print()
    print(f"| process kind | CPU ms per job, first {window} s | last {window} s | change |")
    print("|---|---|---|---|")
    jobs = {time: done for time, done, _ in progress}
    for kind in sorted(cpu):
        first = cpu_per_job(cpu[kind], jobs, 0, window)
        last = cpu_per_job(cpu[kind], jobs, end - window, end)
        if first is None or last is None:
            continue
        print(f"| {kind} | {first:.0f} | {last:.0f} | {growth(first, last)} |")


def main():
    path, png, warmup_minutes = sys.argv[1], sys.argv[2], int(sys.argv[3])
    series, progress, cpu = load(path)
    end = progress[-1][0]
    warm = warmup_minutes * 60
    span = min(600, (end - warm) // 2)
    print(f"| process kind | measure | after warm-up ({warm} s) | end ({end} s) | growth "
          f"| mean {warm}-{warm + span} s | mean {end - span}-{end} s | growth of means |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in sorted(series):
        for measure, label, _ in MEASURES:
            points = series[kind].get(measure)
            if not points:
                continue
            times = sorted(points)
            at_warm = mean_at(points, nearest(times, warm))
            at_end = mean_at(points, times[-1])
            first = window_mean(points, warm, warm + span)
            last = window_mean(points, end - span, end)
            means = (f"{first:.1f} | {last:.1f} | {growth(first, last)}"
                     if first is not None and last is not None else "- | - | -")
            print(f"| {kind} | {label} | {at_warm:.1f} | {at_end:.1f} | "
                  f"{growth(at_warm, at_end)} | {means} |")
    window = min(600, end // 2)
    first_rate = jobs_per_second(progress, 0, window)
    last_rate = jobs_per_second(progress, end - window, end)
    jobs, failed = progress[-1][1], progress[-1][2]
    change = (last_rate - first_rate) / first_rate * 100 if first_rate else 0.0
    print()
    print(f"{jobs} jobs ({40 * jobs} tasks), {failed} failed, in {end} s; job rate "
          f"first {window} s {first_rate:.2f}/s, last {window} s {last_rate:.2f}/s ({change:+.1f} %)")
    if cpu:
        print_cpu_per_job(cpu, progress, window, end)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(MEASURES) + 1, 1, figsize=(9, 13), sharex=True)
    # One colour per process kind in every panel (a panel without a kind's
    # measure would otherwise shift the colours of the rest).
    colours = {kind: f"C{i}" for i, kind in enumerate(sorted(series))}
    for axis, (measure, label, _) in zip(axes, MEASURES):
        for kind in sorted(series):
            points = series[kind].get(measure)
            if not points:
                continue
            times = sorted(points)
            axis.plot([t / 60 for t in times], [mean_at(points, t) for t in times],
                      label=kind, color=colours[kind])
        axis.axvline(warm / 60, color="grey", linestyle=":", linewidth=1)
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="upper left", fontsize=8)
    rates = [
        (progress[i][0] / 60, (progress[i][1] - progress[i - 1][1]) / max(1, progress[i][0] - progress[i - 1][0]))
        for i in range(1, len(progress))
    ]
    axes[-1].plot([t for t, _ in rates], [r for _, r in rates], color="black")
    axes[-1].set_ylabel("jobs/s")
    axes[-1].set_ylim(bottom=0)
    axes[-1].grid(alpha=0.3)
    axes[-1].set_xlabel("minutes (dotted: end of warm-up)")
    figure.suptitle(f"soak: 40-task WASM jobs back to back, {jobs} jobs in {end // 60} min")
    figure.tight_layout()
    figure.savefig(png, dpi=80)
    print(f"chart: {png}")


if __name__ == "__main__":
    main()
