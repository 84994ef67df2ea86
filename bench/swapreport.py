#!/usr/bin/env python3
"""The report of bench/swaps.sh and bench/swaps_peer.sh: reads bench/swapload.py's TSV
(start time, latency ms, status), splits it at the swap phase's start and end (Unix time),
and prints, for the steady and the swap phase: requests, failures, p50, p99, max and
requests over 250 ms, then the ratio p99(swaps) / p99(steady). With EVENTS (the activity
log as TSV: id, at_ms, message), it also counts the swap-phase requests slower than twice
the steady p99 by the deployment step they started in.

    swapreport.py LAT_TSV SWAP_START SWAP_END TITLE [EVENTS_TSV]"""
import bisect, collections, sys

path, s0, s1, title = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rows = [l.split("\t") for l in open(path) if l.strip()]
rows = [(float(t), float(lat), int(st)) for t, lat, st in rows]

def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))] if v else float("nan")

def phase(name, sel):
    lat = [l for _, l, _ in sel]
    fails = sum(1 for *_, st in sel if not 200 <= st < 300)
    slow = sum(1 for l in lat if l > 250)
    print(f"{name:8} requests {len(sel):6}  failures {fails:3}  p50 {pct(lat,50):7.2f} ms  p99 {pct(lat,99):7.2f} ms  max {max(lat) if lat else 0:8.2f} ms  over 250 ms {slow}")
    return pct(lat, 99)

steady = [r for r in rows if r[0] < s0]
swaps = [r for r in rows if s0 <= r[0] <= s1]
print(f"{title}, {s1 - s0:.1f} s; 200 req/s offered")
a = phase("steady", steady)
b = phase("swaps", swaps)
print(f"p99 swaps / steady: {b / a:.2f}x (goal <= 1.5x, no request over 250 ms)")
if len(sys.argv) > 5:
    # Where the slow ones fell: the deployment step (from the activity log) each slow
    # request of the swap phase started in; slow = over twice the steady p99.
    events = [l.rstrip("\n").split("\t") for l in open(sys.argv[5]) if l.strip()]
    events = [(int(at) / 1000, msg) for _, at, msg in events]
    times = [t for t, _ in events]
    steps = collections.Counter()
    for t, lat, _ in swaps:
        if lat > 2 * a:
            i = bisect.bisect_right(times, t) - 1
            msg = events[i][1] if i >= 0 else ""
            step = msg.split(": ")[1] if msg.startswith("deployment ") and ": " in msg else msg[:30]
            steps[step] += 1
    print(f"swap-phase requests over 2x steady p99 ({2 * a:.1f} ms), by the step they started in:",
          ", ".join(f"{k} {v}" for k, v in steps.most_common()) or "none")
