"""Compare ``overhead.py --json`` results of two trees, A/B pairs run alternating.

    python benchmarks/ab_compare.py before1.json before2.json -- after1.json after2.json

For each workload and system: the median of the runs' medians before and
after, and the ratio to raw Dask futures measured in the same run (which is
what cancels the machine's drift between runs).  Writes a markdown table.
"""

from __future__ import annotations

import json
import statistics
import sys


def load(paths: list[str]) -> dict:
    out: dict = {}
    for path in paths:
        with open(path) as f:
            for row in json.load(f)["rows"]:
                key = (row["workload"], row["n"], row["system"])
                out.setdefault(key, {"median": [], "ratio": []})
                out[key]["median"].append(row["median_s"])
                out[key]["ratio"].append(row["vs_futures"])
    return out


def main(argv: list[str]) -> int:
    split = argv.index("--")
    before, after = load(argv[:split]), load(argv[split + 1:])
    print("| workload | N | system | before s | after s | before vs futures | after vs futures |")
    print("|---|---|---|---|---|---|---|")
    for key in before:
        if key not in after:
            continue
        b, a = before[key], after[key]
        print(f"| {key[0].upper()} | {key[1]} | {key[2]} | {statistics.median(b['median']):.3f} | "
              f"{statistics.median(a['median']):.3f} | {statistics.median(b['ratio']):.2f}x | "
              f"{statistics.median(a['ratio']):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
