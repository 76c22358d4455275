"""What the run store costs: the same runs with records on and off.

One process, one LocalCluster (2 workers x 1 thread), warm; runs alternate
between records on and off.  W1 (a map of ``inc`` over N elements, then a
sum) at N = 20,000 and the one-task run; then the time to write the final
record of a 100k-element run (on ``cluster="sync"``, where the run itself is
cheapest) and its size.

    python benchmarks/records.py [--reps N] [--json results/records.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time

import dask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402

from daskflow.driver.history import RunStore, settle  # noqa: E402


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(client, reps: int, store: str) -> list[dict]:
    rows = []
    cases = [("one", lambda: workloads.one_flow(cluster=client, progress=False)),
             ("w1 20000", lambda: workloads.w1_flow(20_000, cluster=client, progress=False))]
    for name, fn in cases:
        times: dict[bool, list[float]] = {True: [], False: []}
        for on in (True, False):  # warm-up
            with dask.config.set({"daskflow.runs.enabled": on, "daskflow.runs.store": store}):
                fn()
        for _ in range(reps if name == "w1 20000" else 20 * reps):
            for on in (True, False):
                with dask.config.set({"daskflow.runs.enabled": on,
                                      "daskflow.runs.store": store}):
                    times[on].append(_timed(fn))
        on, off = statistics.median(times[True]), statistics.median(times[False])
        rows.append({"workload": name, "records_on_s": on, "records_off_s": off,
                     "overhead": on / off - 1, "runs": len(times[True])})
    return rows


def big_record(store: str) -> dict:
    """The final record of a 100k-element run: the time to write it, its size."""
    with dask.config.set({"daskflow.runs.store": store}):
        run = workloads.w1_flow.run(100_000, cluster="sync", progress=False)
        record = run.record()
        settle()  # the run's own end record, written behind it, is not part of the timing
        start = time.perf_counter()
        RunStore().write({**record, "created": time.time(), "run_id": "big"})
        took = time.perf_counter() - start
    size = max(os.path.getsize(os.path.join(store, f)) for f in os.listdir(store))
    return {"workload": "record of a 100k-element run", "write_s": took, "bytes": size,
            "run_s": (run.state.end or 0) - (run.state.start or 0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    from distributed import Client, LocalCluster

    logging.getLogger("daskflow").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as store:
        with LocalCluster(n_workers=2, threads_per_worker=1,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            rows = measure(client, args.reps, store)
        rows.append(big_record(store))
    for r in rows:
        print(json.dumps(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "when": time.strftime("%Y-%m-%d %H:%M"),
                       "cluster": "LocalCluster, 2 workers x 1 thread"}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
