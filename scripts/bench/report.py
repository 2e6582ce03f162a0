#!/usr/bin/env python3
"""Markdown report for scripts/bench-embeddings.sh.

Input: a TSV with a header line and one row per (round, target):
    round target requests duration_us p50_us p99_us errors cpu_ticks clk_tck
Output (stdout): per-round table, medians per target, and infergate/nginx ratios.
Standard library only.
"""

from __future__ import annotations

import csv
import statistics
import sys


def fmt_us(us: float) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def main(path: str, base: str = "nginx", subject: str = "infergate") -> int:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows:
        print("no results", file=sys.stderr)
        return 1

    for r in rows:
        req = int(r["requests"])
        r["rps"] = req / (int(r["duration_us"]) / 1e6)
        # CPU time the target process (and its workers) spent, per request served.
        r["cpu_us"] = int(r["cpu_ticks"]) / int(r["clk_tck"]) * 1e6 / req if req else float("nan")

    print("| round | target | req/s | p50 | p99 | CPU/request | errors |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['round']} | {r['target']} | {r['rps']:,.0f} | {fmt_us(int(r['p50_us']))} "
            f"| {fmt_us(int(r['p99_us']))} | {r['cpu_us']:.1f} µs | {r['errors']} |"
        )

    targets = list(dict.fromkeys(r["target"] for r in rows))
    med = {}
    for t in targets:
        rs = [r for r in rows if r["target"] == t]
        med[t] = {
            "rps": statistics.median(r["rps"] for r in rs),
            "p50": statistics.median(int(r["p50_us"]) for r in rs),
            "p99": statistics.median(int(r["p99_us"]) for r in rs),
            "cpu": statistics.median(r["cpu_us"] for r in rs),
            "n": len(rs),
        }
    print()
    print("Medians over rounds:")
    print()
    print("| target | rounds | req/s | p50 | p99 | CPU/request |")
    print("|---|---:|---:|---:|---:|---:|")
    for t in targets:
        m = med[t]
        print(f"| {t} | {m['n']} | {m['rps']:,.0f} | {fmt_us(m['p50'])} | {fmt_us(m['p99'])} | {m['cpu']:.1f} µs |")

    if base in med and subject in med:
        s, b = med[subject], med[base]
        print()
        print(f"- throughput {subject}/{base}: **{s['rps'] / b['rps']:.2f}**")
        print(f"- CPU per request {subject}/{base}: **{s['cpu'] / b['cpu']:.1f}×** "
              f"({s['cpu']:.1f} µs vs {b['cpu']:.1f} µs; this ratio carries across machines)")
        print(f"- p50 added over the floor: {fmt_us(max(0.0, s['p50'] - b['p50']))}")

    bad = sum(int(r["errors"]) for r in rows)
    if bad:
        print(f"\nWARNING: {bad} failed requests (non-2xx/3xx, socket errors or timeouts); numbers are suspect.")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
