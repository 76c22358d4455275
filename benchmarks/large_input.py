"""A 200 MB array given to 8 tasks: raw Dask with scatter, raw Dask with the
array in the graph, and daskflow; each run in a fresh process of its own.

Every process starts a LocalCluster (2 workers x 1 thread) before timing,
then times making the array and computing the 8 column sums plus their
total.  Reported: wall time, the client's peak RSS (ru_maxrss) and how many
warnings were emitted.  Variants alternate over repetitions.

    python benchmarks/large_input.py [--reps 3] [--mb 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))


def child(variant: str, mb: int) -> dict:
    sys.path.insert(0, HERE)
    import logging

    import numpy as np
    import workloads
    from distributed import Client, LocalCluster

    logging.getLogger("daskflow").setLevel(logging.WARNING)
    rows = mb * 1_000_000 // (8 * 1000)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            arr = np.ones((rows, 1000))
            value = workloads.W3[variant](client, arr)
            elapsed = time.perf_counter() - start
        assert value == 8 * rows, value
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "seconds": elapsed, "peak_rss_mb": peak / 1024,
            "rss_before_mb": rss_before / 1024, "warnings": len(caught)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.mb)))
        return
    variants = ["dask scatter", "dask in-graph", "daskflow"]
    results = {v: [] for v in variants}
    for _ in range(args.reps):
        for v in variants:
            out = subprocess.run([sys.executable, __file__, "--child", v, "--mb", str(args.mb)],
                                 capture_output=True, text=True, check=True)
            results[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
    base_t = statistics.median(r["seconds"] for r in results["dask scatter"])
    base_m = statistics.median(r["peak_rss_mb"] for r in results["dask scatter"])
    print(f"| {args.mb} MB array to 8 tasks | median s (min-max) | vs scatter | "
          "client peak RSS MB | vs scatter | warnings |")
    print("|---|---|---|---|---|---|")
    summary = []
    for v in variants:
        ts = [r["seconds"] for r in results[v]]
        ms = [r["peak_rss_mb"] for r in results[v]]
        t, m = statistics.median(ts), statistics.median(ms)
        w = max(r["warnings"] for r in results[v])
        print(f"| {v} | {t:.2f} ({min(ts):.2f}-{max(ts):.2f}) | {t / base_t:.2f}x | "
              f"{m:.0f} | {m / base_m:.2f}x | {w} |")
        summary.append({"variant": v, "median_s": t, "min_s": min(ts), "max_s": max(ts),
                        "peak_rss_mb": m, "warnings": w, "vs_scatter_time": t / base_t,
                        "vs_scatter_rss": m / base_m})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mb": args.mb, "rows": summary, "raw": results}, f, indent=2)


if __name__ == "__main__":
    main()
