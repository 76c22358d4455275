"""The cost of a flow body's waits (``ref.result()``), side by side with raw Dask.

One process, one LocalCluster (2 workers x 1 thread), warm; runs alternate
between the systems so that drift hits all of them alike.

- ONE WAIT: one ``inc(x).result()`` inside a running flow body, timed in
  the body, against ``client.submit(inc, x).result()`` (the goal: <= 1.3x).
- 20 WAITS: a flow whose body waits 20 times in a row (``v = inc(v);
  v.result()``), against 20 ``client.submit(...).result()`` in a row and
  against the same chain of 20 as a static flow (no wait).
- MAP + WAIT: a 5000-element map, its sum, then a second map over the first
  and its sum; once with the body waiting for the first sum in the middle,
  once without.

    python benchmarks/waits.py [--reps N] [--json results/waits.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import inc, inc_t, total_t  # noqa: E402

import daskflow as df  # noqa: E402


@df.flow
def one_wait(reps: int):
    """The time of each of ``reps`` single waits, measured in the body."""
    times = []
    for i in range(reps):
        start = time.perf_counter()
        inc_t(i).result()
        times.append(time.perf_counter() - start)
    return times


@df.flow
def twenty_waits(n: int = 20):
    v = inc_t(0)
    for _ in range(n - 1):
        v.result()
        v = inc_t(v)
    return v


@df.flow
def twenty_static(n: int = 20):
    v = inc_t(0)
    for _ in range(n - 1):
        v = inc_t(v)
    return v


@df.flow
def map_wait(n: int, wait: bool):
    first = inc_t.map(range(n))
    s = total_t(first)
    if wait:
        s.result()
    return s, total_t(inc_t.map(first))


def raw_twenty(client, n=20):
    v = 0
    for _ in range(n):
        v = client.submit(inc, v, pure=False).result()
    return v


def measure(client, reps: int) -> list[dict]:
    rows = []
    # ONE WAIT: the waits of one run, against as many raw round trips
    one_wait(3, cluster=client, progress=False)  # warm-up
    flow_times, raw_times = [], []
    for _ in range(reps):
        flow_times += one_wait(20, cluster=client, progress=False)
        for i in range(20):
            start = time.perf_counter()
            client.submit(inc, i, pure=False).result()
            raw_times.append(time.perf_counter() - start)
    rows.append(_row("one wait", "daskflow ref.result()", flow_times, raw_times))
    rows.append(_row("one wait", "client.submit().result()", raw_times, raw_times))
    # 20 WAITS
    systems = {"daskflow, 20 waits": lambda: twenty_waits(20, cluster=client, progress=False),
               "daskflow static chain": lambda: twenty_static(20, cluster=client,
                                                              progress=False),
               "raw: 20 submit().result()": lambda: raw_twenty(client)}
    rows += _alternate("20 waits", systems, reps, "raw: 20 submit().result()", 20)
    # MAP + WAIT
    n = 5000
    systems = {"daskflow, wait in the middle": lambda: map_wait(n, True, cluster=client,
                                                                 progress=False),
               "daskflow, no wait": lambda: map_wait(n, False, cluster=client, progress=False)}
    rows += _alternate(f"map {n} + wait", systems, reps, "daskflow, no wait",
                       (sum(range(1, n + 1)), sum(range(2, n + 2))))
    return rows


def _alternate(workload: str, systems: dict, reps: int, base: str, expected) -> list[dict]:
    times: dict[str, list[float]] = {name: [] for name in systems}
    for fn in systems.values():  # warm-up, untimed
        fn()
    for _ in range(reps):
        for name, fn in systems.items():
            start = time.perf_counter()
            value = fn()
            times[name].append(time.perf_counter() - start)
            assert value == expected, (name, value)
    return [_row(workload, name, ts, times[base]) for name, ts in times.items()]


def _row(workload: str, system: str, ts: list[float], base: list[float]) -> dict:
    med = statistics.median(ts)
    return {"workload": workload, "system": system, "median_ms": 1000 * med,
            "min_ms": 1000 * min(ts), "max_ms": 1000 * max(ts), "runs": len(ts),
            "vs_base": med / statistics.median(base)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    logging.getLogger("daskflow").setLevel(logging.WARNING)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        rows = measure(client, args.reps)
    for r in rows:
        print(f"{r['workload']:>16}  {r['system']:<32} {r['median_ms']:8.1f} ms "
              f"({r['min_ms']:.1f}-{r['max_ms']:.1f})  {r['vs_base']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "when": time.strftime("%Y-%m-%d %H:%M"),
                       "cluster": "LocalCluster, 2 workers x 1 thread"}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
