"""Async tasks side by side with raw Dask: 200 coroutines of 0.1 s on 2 worker threads.

One process, one LocalCluster (2 workers x 1 thread), warm; runs alternate
between the systems so that drift hits all of them alike.

- daskflow: ``nap.map(range(200))`` of an ``async def`` task awaiting
  ``asyncio.sleep(0.1)``: the coroutines share one event loop per worker
  process, their Dask tasks seceded (see ``daskflow/worker/coroutines.py``).
- raw Dask: ``client.map`` of the same coroutine function; distributed runs
  it on the worker's event loop but counts it as one of the worker's
  ``nthreads`` executing tasks, so 2 run at a time.
- daskflow, sync: the same map of a sync task sleeping 0.1 s (``time.sleep``).

Serial on 2 threads would take 200 x 0.1 s / 2 = 10 s.

    python benchmarks/async_tasks.py [--reps N] [--n 200] [--json results/async_tasks.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time

import daskflow as df

SECONDS = 0.1


@df.task
async def nap(i: int) -> int:
    await asyncio.sleep(SECONDS)
    return i


@df.task
def sleep(i: int) -> int:
    time.sleep(SECONDS)
    return i


async def raw_nap(i: int) -> int:
    await asyncio.sleep(SECONDS)
    return i


@df.flow
def async_map(n: int):
    return nap.map(range(n))


@df.flow
def sync_map(n: int):
    return sleep.map(range(n))


def measure(client, n: int, reps: int) -> list[dict]:
    systems = {
        "daskflow, async task": lambda: async_map(n, cluster=client, progress=False),
        "raw Dask, client.map(async fn)": lambda: client.gather(client.map(
            raw_nap, range(n), pure=False)),
        "daskflow, sync task (time.sleep)": lambda: sync_map(n, cluster=client,
                                                            progress=False),
    }
    times: dict[str, list[float]] = {name: [] for name in systems}
    for fn in systems.values():  # warm-up, untimed (smaller)
        fn()
    for _ in range(reps):
        for name, fn in systems.items():
            start = time.perf_counter()
            value = fn()
            times[name].append(time.perf_counter() - start)
            assert list(value) == list(range(n)), name
    base = statistics.median(times["raw Dask, client.map(async fn)"])
    return [{"system": name, "median_s": statistics.median(ts), "min_s": min(ts),
             "max_s": max(ts), "runs": len(ts), "vs_raw": statistics.median(ts) / base}
            for name, ts in times.items()]


def table(rows: list[dict], n: int) -> str:
    lines = [f"| {n} x {SECONDS:g} s sleeps, 2 workers x 1 thread | median | min-max | vs raw |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['median_s']:.2f} s | {r['min_s']:.2f}-"
                     f"{r['max_s']:.2f} s | {r['vs_raw']:.2f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    logging.getLogger("daskflow").setLevel(logging.WARNING)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        rows = measure(client, args.n, args.reps)
    print(table(rows, args.n))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "n": args.n, "seconds": SECONDS,
                       "when": time.strftime("%Y-%m-%d %H:%M"),
                       "cluster": "LocalCluster, 2 workers x 1 thread"}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
