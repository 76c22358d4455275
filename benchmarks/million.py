"""A map over 1,000,000 elements of a trivial function, then a sum: daskflow
(its default chunks) against ``dask.bag``, on one LocalCluster of 2 workers x
1 thread; the driver's build and compile time and its peak memory.

``python benchmarks/million.py`` writes ``benchmarks/results/million.json``
(``tools/figures.py`` puts it in docs/tour/mapping.md).
"""

from __future__ import annotations

import json
import os
import resource
import time

import dask.bag as db
from distributed import Client, LocalCluster

import daskflow as df
from daskflow.compile.graph import Compiler
from daskflow.define.build import Builder
from daskflow.wire import RunInfo


def same(x: int) -> int:
    return x


same_t = df.task(same, name="same")
total_t = df.task(sum, name="total")


@df.flow
def million(n: int):
    return total_t(same_t.map(range(n)))


def build_and_compile(n: int) -> tuple[float, float, int]:
    """Seconds to build the flow's nodes and to compile them (chunked as a
    remembered measurement says), and the Dask tasks they make."""
    t = time.perf_counter()
    with Builder("million") as b:
        total_t(same_t.map(range(n)))
    built = time.perf_counter()
    c = Compiler(b.nodes, RunInfo("million", "r", {}))
    c.fuse, c.threads = True, 2
    dsk = c.stage()
    return built - t, time.perf_counter() - built, len(dsk)


def main() -> None:
    n = 1_000_000
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        t = time.perf_counter()
        assert million(n, cluster=client) == sum(range(n))
        first = time.perf_counter() - t
        build, compile_s, tasks = build_and_compile(n)  # the pilot's figure is remembered
        t = time.perf_counter()
        assert million(n, cluster=client) == sum(range(n))
        second = time.perf_counter() - t
        t = time.perf_counter()
        assert db.from_sequence(range(n), npartitions=40).map(same).sum().compute() == sum(range(n))
        bag = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {"n": n, "first_run_s": first, "second_run_s": second, "bag_s": bag,
           "build_s": build, "compile_s": compile_s, "dask_tasks": tasks,
           "driver_peak_rss_bytes": peak, "machine": f"{os.cpu_count()} cores"}
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "results", "million.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
