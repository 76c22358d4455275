"""What caching costs and saves: a map of a trivial task plus a sum, on one
LocalCluster (2 workers x 1 thread), results in a local folder.

Variants, alternating over repetitions, medians reported:
  no cache             the flow without cache=
  cache, 1st run       cache=True on an empty store (every result is written)
  cache, rerun         the same run again (the sum's result read; the map not run)
  map cached, rerun    only the map cached, run again: every element's result
                       read (in chunks), the sum computed

    python benchmarks/cache.py [--n 20000] [--reps 3]

writes ``benchmarks/results/cache.json`` (``tools/figures.py`` puts it in
docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time

import daskflow as df


@df.task
def inc(x: int) -> int:
    return x + 1


@df.task
def total(xs: list) -> int:
    return sum(xs)


def flow_for(cached: bool, store: str, sum_cached: bool | None = None):
    step = inc.with_options(cache=cached)
    add = total.with_options(cache=cached if sum_cached is None else sum_cached)

    @df.flow(name="cachebench", result_storage=store)
    def bench(n: int):
        return add(step.map(range(n)))

    return bench


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    logging.getLogger("daskflow").setLevel(logging.WARNING)
    from distributed import Client, LocalCluster

    times: dict[str, list[float]] = {"no cache": [], "cache, 1st run": [], "cache, rerun": [],
                                     "map cached, rerun": []}
    expected = sum(range(1, args.n + 1))
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        flow_for(False, "").run(10, cluster=client)  # warm up
        for _ in range(args.reps):
            store = tempfile.mkdtemp(prefix="daskflow-cachebench-")
            try:
                for name, cached in (("no cache", False), ("cache, 1st run", True),
                                     ("cache, rerun", True), ("map cached, rerun", True)):
                    flow = flow_for(cached, store, False if name.startswith("map") else None)
                    start = time.perf_counter()
                    run = flow.run(args.n, cluster=client)
                    times[name].append(time.perf_counter() - start)
                    assert run.result() == expected, run.summary()
                    if name == "cache, rerun":
                        assert run.states["total"].name == "Cached", run.summary()
                    if name == "map cached, rerun":
                        assert run.states["inc[0]"].name == "Cached", run.summary()
                        chunks = len(run.chunked.get("inc", []))
            finally:
                shutil.rmtree(store, ignore_errors=True)
    base = statistics.median(times["no cache"])
    print(f"| N={args.n} map + sum | median s | vs no cache |")
    print("|---|---|---|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.3f} | {med / base:.2f}x |")
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "results", "cache.json"), "w") as f:
        json.dump({"n": args.n, "reps": args.reps, "seconds": times, "loaded_in_chunks": chunks,
                   "median_seconds": {k: statistics.median(v) for k, v in times.items()},
                   "cluster": "LocalCluster 2 workers x 1 thread",
                   "when": time.strftime("%Y-%m-%d %H:%M")}, f, indent=2)


if __name__ == "__main__":
    main()
