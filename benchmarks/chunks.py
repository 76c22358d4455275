"""Chunked maps against what a Dask expert writes by hand (issue: maps at chunk cost).

One LocalCluster (2 workers x 1 thread), one process, systems alternating,
medians of ``--reps`` runs:

* W5: 20,000 elements of a 50 us function, then a sum: daskflow's default
  (its pilot in the first run, remembered afterwards), hand-chunked
  ``client.map`` (chunks of 500), ``dask.bag`` (40 partitions), and raw
  ``client.map`` with one future per element (on 2,000 elements: per
  element, it would take ~40 s at 20,000).
* W4: three chained maps of ``inc`` over 5,000, then a sum: daskflow vs raw
  futures (one per element and map).
* Heavy: 100 elements of 0.2 s: daskflow's default vs ``chunk=1``.

``python benchmarks/chunks.py`` writes ``benchmarks/results/chunks.json``
and ``chunks.png`` (the medians as bars, on a log scale) and prints a
markdown table (``docs/tour/mapping.md`` shows both).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time

import dask.bag as db
from distributed import Client, LocalCluster

import daskflow as df


def spin(x: int) -> int:
    """About 50 us of CPU."""
    end = time.perf_counter() + 50e-6
    while time.perf_counter() < end:
        pass
    return x


def inc(x: int) -> int:
    return x + 1


def heavy(x: int) -> int:
    time.sleep(0.2)
    return x


spin_t = df.task(spin, name="spin")
inc_t = df.task(inc, name="inc")
heavy_t = df.task(heavy, name="heavy")
total_t = df.task(sum, name="total")


@df.flow
def w5(n: int, chunk: int | None = None):
    return total_t(spin_t.map(range(n), chunk=chunk))


@df.flow
def w4(n: int):
    return total_t(inc_t.map(inc_t.map(inc_t.map(range(n)))))


@df.flow
def heavy_flow(n: int, chunk: int | None = None):
    return total_t(heavy_t.map(range(n), chunk=chunk))


def _chunk(xs):
    return [spin(x) for x in xs]


def hand_chunked(client, n, size=500):
    parts = client.map(_chunk, [range(i, min(i + size, n)) for i in range(0, n, size)])
    return client.submit(lambda ps: sum(sum(p) for p in ps), parts).result()


def bag(client, n):
    return db.from_sequence(range(n), npartitions=40).map(spin).sum().compute()


def raw_futures(client, n):
    return client.submit(sum, client.map(spin, range(n), pure=False)).result()


def raw_w4(client, n):
    a = client.map(inc, range(n), pure=False)
    b = client.map(inc, a, pure=False)
    c = client.map(inc, b, pure=False)
    return client.submit(sum, c).result()


def timed(fn):
    """Seconds ``fn`` takes, after a garbage collection (every system starts
    alike: the raw-futures cases leave the driver's and the in-process
    scheduler's collector with a lot to go through, which the next case
    would otherwise pay)."""
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def plot(med: dict[str, float], path: str) -> None:
    """The medians as horizontal bars, one colour per system, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(med)
    colours = ["#1f77b4" if "daskflow" in k else "#ff7f0e" if "raw" in k
               else "#7f7f7f" if "chunk=1" in k else "#2ca02c" for k in names]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bars = ax.barh(range(len(names)), [med[k] for k in names], color=colours)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("seconds (median, log scale)")
    ax.bar_label(bars, labels=[f"{med[k]:.2f} s" for k in names], fontsize=7, padding=2)
    ax.set_title("Chunked maps: daskflow (blue), an expert's chunks (green), "
                 "raw futures (orange)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--n", type=int, default=20000)
    args = p.parse_args(argv)
    n = args.n
    rows: dict[str, list[float]] = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        first = timed(lambda: w5(n, cluster=client))  # with its pilot
        cases = {
            "W5 daskflow (default)": lambda: w5(n, cluster=client),
            "W5 hand-chunked client.map (500)": lambda: hand_chunked(client, n),
            "W5 dask.bag (40 partitions)": lambda: bag(client, n),
            "W5 raw client.map, per element (from 2,000)": lambda: raw_futures(client, 2000),
            "W4 daskflow (default)": lambda: w4(5000, cluster=client),
            "W4 raw futures": lambda: raw_w4(client, 5000),
        }
        for _ in range(args.reps):
            for name, fn in cases.items():  # alternating
                rows.setdefault(name, []).append(timed(fn))
        heavy_rows = {}
        for _ in range(max(1, args.reps - 1)):
            for name, chunk in (("Heavy daskflow (default)", None), ("Heavy chunk=1", 1)):
                heavy_rows.setdefault(name, []).append(
                    timed(lambda c=chunk: heavy_flow(100, c, cluster=client)))
        rows.update(heavy_rows)
    med = {k: statistics.median(v) for k, v in rows.items()}
    med["W5 raw client.map, per element (from 2,000)"] *= n / 2000  # scaled to n elements
    out = {"n": n, "reps": args.reps, "w5_first_run_with_pilot": first, "median_seconds": med,
           "machine": f"{os.cpu_count()} cores"}
    fast = min(med["W5 hand-chunked client.map (500)"], med["W5 dask.bag (40 partitions)"])
    out["w5_ratio_to_faster_expert"] = med["W5 daskflow (default)"] / fast
    out["w4_ratio_to_raw"] = med["W4 daskflow (default)"] / med["W4 raw futures"]
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "results", "chunks.json"), "w") as f:
        json.dump(out, f, indent=1)
    plot(med, os.path.join(here, "results", "chunks.png"))
    print("| case | median s |\n|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} |")
    print(f"W5 first run (pilot): {first:.3f} s; W5 / faster expert: "
          f"{out['w5_ratio_to_faster_expert']:.2f}x; W4 / raw: {out['w4_ratio_to_raw']:.2f}x")


if __name__ == "__main__":
    main()
