#!/usr/bin/env python3
"""Summarises bench/autoscale.py's rounds and draws the instance count over time.

Usage: autoscale_report.py OUT.png LABEL:PER_INSTANCE=round.json...

For each round: the demand's lag, i.e. for every moment the client count rose, how long
until the ready instances reached ceil(clients / PER_INSTANCE), the service's
max_concurrency (what serves them without queueing); the worst lag of the round is its
figure. Prints one line per round and the
median per label; draws, for the first round of each label, clients / PER_INSTANCE
(needed) and ready instances against time, into OUT.png (matplotlib, Agg).
"""
import json
import math
import statistics
import sys


# Both configurations aim at 70% of max_concurrency.
TARGET = 0.7


def worst_lag(run, per):
    ready = run["ready"]
    worst = 0.0
    for t, n in run["clients"]:
        need = math.ceil(n / per)
        # The first reading at or after t with enough instances.
        met = next((rt for rt, rn in ready if rt >= t and rn >= need), None)
        if met is None:
            return float("inf")
        worst = max(worst, met - t)
    return worst


def secs(lag):
    return "not within the run" if lag == float("inf") else f"{lag:.2f} s"


def main():
    png = sys.argv[1]
    runs, pers = {}, {}
    for arg in sys.argv[2:]:
        key, path = arg.split("=", 1)
        label, per = key.split(":")
        pers[label] = int(per)
        with open(path) as f:
            runs.setdefault(label, []).append(json.load(f))
    for label, rs in runs.items():
        per_label = pers[label]
        lags = [worst_lag(r, per_label) for r in rs]
        # The count the scaler aims at: utilization at TARGET of max_concurrency.
        tlags = [worst_lag(r, per_label * TARGET) for r in rs]
        for i, (r, lag, tlag) in enumerate(zip(rs, lags, tlags)):
            peak = max((n for _, n in r["ready"]), default=0)
            print(f"{label} round {i + 1}: worst lag {secs(lag)} (to the {TARGET:.0%} target's count "
                  f"{secs(tlag)}), peak {peak} instances, "
                  f"{r['requests']} requests, {r['failed']} failed {r['errors'][:2]}")
        print(f"{label}: median worst lag {secs(statistics.median(lags))} "
              f"(to the target's count {secs(statistics.median(tlags))}) over {len(rs)} rounds, "
              f"failed requests {sum(r['failed'] for r in rs)} of {sum(r['requests'] for r in rs)}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(runs), 1, figsize=(8, 3.2 * len(runs)), squeeze=False)
    for ax, (label, rs) in zip(axes[:, 0], runs.items()):
        per_label = pers[label]
        r = rs[0]
        ct = [t for t, _ in r["clients"]]
        need = [math.ceil(n / per_label) for _, n in r["clients"]]
        # Held to the end of the run.
        end = max((t for t, _ in r["ready"]), default=ct[-1])
        ct.append(end)
        need.append(need[-1])
        ax.step(ct, need, where="post", label=f"needed: ceil(clients / {per_label})", color="#9a6700")
        ax.step([t for t, _ in r["ready"]], [n for _, n in r["ready"]], where="post",
                label="ready instances", color="#1f6feb", linewidth=2)
        ax.set_title(f"{label}: 0 to {r['clients'][-1][1]} clients, worst lag {secs(worst_lag(r, per_label))}")
        ax.set_xlabel("seconds since the first request")
        ax.set_ylabel("instances")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    print(f"chart: {png}")


main()
