"""Write latency by phase of a halo_migrate migration: each transaction of
the pgbench per-transaction logs counts in the phase the migration was in
when the transaction began (phases sampled from migrate.status() every
0.25 s into a file of "epoch phase" lines). Prints one line per phase, in
the order the phases came: phase seconds transactions p99 p99.9 worst (ms)."""
import glob, sys

prefix, phases_file = sys.argv[1], sys.argv[2]
timeline = []
for line in open(phases_file):
    f = line.split()
    if len(f) == 2:
        timeline.append((float(f[0]), f[1]))
if not timeline:
    sys.exit(0)
order, spans = [], {}
for (t, ph), nxt in zip(timeline, timeline[1:] + [(timeline[-1][0], None)]):
    if ph not in spans:
        order.append(ph)
        spans[ph] = 0.0
    spans[ph] += nxt[0] - t

def phase_at(t):
    # the last sample at or before t
    lo, hi = 0, len(timeline) - 1
    if t < timeline[0][0] or t > timeline[-1][0] + 0.5:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if timeline[mid][0] <= t:
            lo = mid
        else:
            hi = mid - 1
    return timeline[lo][1]

lat = {ph: [] for ph in order}
for path in glob.glob(prefix + "*"):
    for line in open(path):
        f = line.split()
        if len(f) < 6 or not f[4].isdigit():
            continue
        end = int(f[4]) + int(f[5]) / 1e6
        start = end - int(f[2]) / 1e6
        ph = phase_at(start)
        if ph is not None:
            lat[ph].append((int(f[2]) + (int(f[6]) if len(f) > 6 else 0)) / 1000.0)
for ph in order:
    xs = sorted(lat[ph])
    if not xs:
        print(f"{ph} {spans[ph]:.1f} 0 - - -")
        continue
    q = lambda p: xs[min(len(xs) - 1, int(len(xs) * p))]
    print(f"{ph} {spans[ph]:.1f} {len(xs)} {q(0.99):.1f} {q(0.999):.1f} {xs[-1]:.1f}")
