"""Worst and p99 write latency, and seconds without a committed write, from
pgbench per-transaction logs, restricted to a time window [t0, t1] (epoch s).
Prints: worst p99 seconds_without_writes transactions p99.9"""
import glob, sys

prefix, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
lat, ends = [], []
for path in glob.glob(prefix + "*"):
    for line in open(path):
        f = line.split()
        if len(f) < 6 or not f[4].isdigit():
            continue  # a line cut short when pgbench was interrupted
        # client_id transaction_no time script_no time_epoch time_us [schedule_lag]
        end = int(f[4]) + int(f[5]) / 1e6
        total = int(f[2]) + (int(f[6]) if len(f) > 6 else 0)
        start = end - int(f[2]) / 1e6
        if end >= t0 and start <= t1:
            lat.append(total / 1000.0)
            ends.append(end)
lat.sort()
p99 = lat[int(len(lat) * 0.99)] if lat else 0
p999 = lat[int(len(lat) * 0.999)] if lat else 0
secs = set(int(e) for e in ends)
stalls = sum(1 for s in range(int(t0), int(t1) + 1) if s not in secs)
print(f"{max(lat) if lat else 0:.1f} {p99:.1f} {stalls} {len(lat)} {p999:.1f}")
