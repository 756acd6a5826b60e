#!/usr/bin/env python3
"""Per-round figures of a bench/compare.sh run (compare.sh's table shows medians only): for each
server, the paced and burst rows of every round, in round order, then their median, and each
server's per-round ratio to the others on the CPU rows (noise on this VM moves whole rounds, so a
ratio taken within a round is steadier than a ratio of medians).

    python3 bench/rounds.py bench/results/2026-12-02-final-r7
"""
import glob
import json
import os
import re
import statistics
import sys

ROWS = [
    ("paced p50 ms", lambda ph: ph["paced"]["latency"]["p50_us"] / 1000),
    ("paced p99 ms", lambda ph: ph["paced"]["latency"]["p99_us"] / 1000),
    ("paced p99.9 ms", lambda ph: ph["paced"]["latency"]["p999_us"] / 1000),
    ("paced cpu µs", lambda ph: ph["paced"]["server_cpu_us_per_delivery"]),
    ("burst cpu µs", lambda ph: ph["burst"]["server_cpu_us_per_delivery"]),
    ("burst p99 ms", lambda ph: ph["burst"]["latency"]["p99_us"] / 1000),
]


def rounds(d, server):
    files = glob.glob(f"{d}/r*-{server}-fanout.json")
    by_round = {int(re.match(r"r(\d+)-", os.path.basename(f)).group(1)): f for f in files}
    out = []
    for r in sorted(by_round):
        phases = {p["phase"]: p for p in json.load(open(by_round[r]))["results"]["phases"]}
        out.append({name: get(phases) for name, get in ROWS})
    return out


def main(d):
    # chatd first and the bare server last, so ratios read "chatd/...", ".../bare"
    order = {"chatd": 0, "bare": 9, "barewl": 8}
    names = sorted({re.match(r"r\d+-(.+)-fanout\.json", os.path.basename(f)).group(1)
                    for f in glob.glob(f"{d}/r*-fanout.json")}, key=lambda s: (order.get(s, 5), s))
    data = {s: rounds(d, s) for s in names}
    for s in names:
        for row, _ in ROWS:
            v = [r[row] for r in data[s]]
            print(f"{s:9} {row:15} median {statistics.median(v):8.2f}   " + " ".join(f"{x:.2f}" for x in v))
    for row in ("paced cpu µs", "burst cpu µs", "paced p99.9 ms"):
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if len(data[a]) != len(data[b]):
                    continue
                ratios = [x[row] / y[row] for x, y in zip(data[a], data[b])]
                print(f"{a}/{b} {row}: median of per-round ratios {statistics.median(ratios):.2f}x   "
                      + " ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main(sys.argv[1])
