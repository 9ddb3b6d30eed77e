"""The benchmark's report: tables of medians and ratios from bench/run.sh's
result lines, and two PNG plots (wall time against rows per method; write
latency over time during each migration).

Usage: report.py RESULTS ROWS RATE REPEAT PLOT_LOG_DIR OUT_DIR
"""
import glob
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results, main_rows, rate, repeat, plot_dir, out_dir = sys.argv[1:7]
main_rows = int(main_rows)
lines = [l.split() for l in open(results) if l.strip()]
METHODS = [m for m in ("plain", "pg_tat", "pg_repack", "halo", "halo_nosnap", "halo_verify", "halo_revertible", "halo_revert") if any(r[0] == m for r in lines)]
runs = lambda m, size: [r for r in lines if r[0] == m and int(r[1]) == size]
med = lambda rs, col: statistics.median(float(r[col]) for r in rs)
worst = lambda rs, col: max(float(r[col]) for r in rs)

print(f"\nhalo_migrate benchmark: {main_rows:,} rows, ALTER COLUMN amount TYPE bigint "
      f"(pg_repack: same-shape rewrite), pgbench write load at {rate} tx/s, median of {repeat} runs\n")
print(f"{'method':<12}{'wall s':>8}{'worst ms':>10}{'p99 ms':>9}{'p99.9 ms':>10}{'s w/o writes':>14}"
      f"{'rows differing':>16}{'WAL MB':>9}{'extra disk MB':>15}{'worker MB':>11}")
for m in METHODS:
    rs = runs(m, main_rows)
    mem = f"{med(rs, 9) / 1024:.1f}" if m == "halo" else "-"
    p999 = f"{med(rs, 10):.1f}" if all(len(r) > 10 for r in rs) else "-"
    print(f"{m:<12}{med(rs, 2):>8.2f}{med(rs, 3):>10.1f}{med(rs, 4):>9.1f}{p999:>10}{med(rs, 5):>14.0f}"
          f"{worst(rs, 6):>16.0f}{med(rs, 7) / 2**20:>9.0f}{med(rs, 8) / 2**20:>15.0f}{mem:>11}")
print("(rows differing: the largest count over the runs; everything else: medians)")
# Write latency by phase of the halo methods (bench/phases.py): per phase,
# the medians over runs of its p99 and worst write, and the worst of all.
phase_lines = [l.split() for l in open(os.path.join(os.path.dirname(results), "phases.txt"))
               if l.strip()] if os.path.exists(os.path.join(os.path.dirname(results), "phases.txt")) else []
for m in sorted({p[0] for p in phase_lines}):
    rows = [p for p in phase_lines if p[0] == m and int(p[1]) == main_rows and p[4] != "0"]
    if not rows:
        continue
    print(f"\n{m}: write latency by phase at {main_rows:,} rows (medians over runs; worst: of all runs)")
    print(f"{'phase':<12}{'s':>7}{'p99 ms':>9}{'p99.9 ms':>10}{'worst ms':>10}{'worst of all':>14}")
    for ph in dict.fromkeys(p[2] for p in rows):
        rp = [p for p in rows if p[2] == ph]
        mp = lambda i: statistics.median(float(p[i]) for p in rp)
        print(f"{ph:<12}{mp(3):>7.1f}{mp(5):>9.1f}{mp(6):>10.1f}{mp(7):>10.1f}{max(float(p[7]) for p in rp):>14.1f}")
if "halo" in METHODS:
    h = med(runs("halo", main_rows), 2)
    print("\n" + ", ".join(f"halo / {m} wall time {h / med(runs(m, main_rows), 2):.2f}x"
                           for m in METHODS if m != "halo"))
tps = [r for r in lines if r[0] == "tps"]
if tps:
    tp, tt = med(tps, 1), med(tps, 2)
    print(f"write throughput at saturation: {tp:.0f} tps without the capture trigger, {tt:.0f} with "
          f"({100 * tt / tp:.0f}%; runs: {', '.join(f'{100 * float(r[2]) / float(r[1]):.0f}%' for r in tps)})")
copy = {r[0]: float(r[1]) for r in lines if r[0].startswith("copy_")}
if copy:
    print(f"batched copy, 20000-row batches: heap TID ranges {copy['copy_tid']:.2f} s, key ranges "
          f"{copy['copy_key']:.2f} s (key / TID {copy['copy_key'] / copy['copy_tid']:.2f}x)")

sizes = sorted({int(r[1]) for r in lines if r[0] in METHODS})
secs = {m: {s: med(runs(m, s), 2) for s in sizes if runs(m, s)} for m in METHODS}
if len(sizes) > 1:
    counts = sorted({len(runs(m, s)) for m in METHODS for s in sizes if runs(m, s)})
    print(f"\nscaling, medians of {'-'.join(map(str, counts))} runs per method and size:")
    print(f"{'rows':>12}" + "".join(f"{m + ' s':>12}" for m in METHODS)
          + (f"{'halo/plain':>12}{'halo/pg_tat':>13}{'worker MB':>11}" if "halo" in METHODS else ""))
    for s in sizes:
        row = f"{s:>12,}" + "".join(f"{secs[m].get(s, float('nan')):>12.2f}" for m in METHODS)
        if "halo" in METHODS:
            h = secs["halo"][s]
            ratio = lambda m: f"{h / secs[m][s]:.2f}" if m in secs and s in secs[m] else "-"
            row += f"{ratio('plain'):>12}{ratio('pg_tat'):>13}{med(runs('halo', s), 9) / 1024:>11.1f}"
        print(row)

os.makedirs(out_dir, exist_ok=True)
if len(sizes) > 1:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in METHODS:
        xs = [s for s in sizes if s in secs[m]]
        ax.plot([x / 1e6 for x in xs], [secs[m][x] for x in xs], marker="o", label=m)
    ax.set_xlabel("rows (millions)")
    ax.set_ylabel("wall time (s)")
    ax.set_title("ALTER COLUMN amount TYPE bigint under a write load")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "scaling.png"), dpi=110)

plotted = [m for m in METHODS if os.path.exists(os.path.join(plot_dir, m, "window"))]
if plotted:
    fig, axes = plt.subplots(len(plotted), 1, figsize=(8, 2.2 * len(plotted)), sharex=True)
    axes = axes if len(plotted) > 1 else [axes]
    for ax, m in zip(axes, plotted):
        t0, t1 = (float(x) for x in open(os.path.join(plot_dir, m, "window")).read().split())
        xs, ys = [], []
        for path in glob.glob(os.path.join(plot_dir, m, f"{m}.*")):
            for line in open(path):
                f = line.split()
                if len(f) < 6 or not f[4].isdigit():
                    continue
                end = int(f[4]) + int(f[5]) / 1e6
                xs.append(end - t0)
                ys.append((int(f[2]) + (int(f[6]) if len(f) > 6 else 0)) / 1000.0)
        ax.scatter(xs, ys, s=2)
        ax.axvspan(0, t1 - t0, color="orange", alpha=0.15, label="migration")
        ax.set_yscale("log")
        ax.set_ylabel("write ms")
        ax.set_title(m, loc="left", fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("seconds since the migration started")
    axes[0].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "latency.png"), dpi=110)
print(f"\nplots: {out_dir}/scaling.png, {out_dir}/latency.png")
