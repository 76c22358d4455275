"""Per-task overhead: daskflow vs raw Dask futures vs dask.delayed, side by side.

W1: a map of a trivial task over N inputs, then a sum.  W2: a chain of 200
trivial tasks.  W4: three maps chained element-wise over N inputs, then a sum
(raw futures: three ``client.map`` calls and a ``submit``).  "daskflow
unfused" is daskflow with ``fuse=False``.  ONE: a one-task flow against ``client.submit(f).result()``;
EMPTY: a flow with no task against a no-op ``submit().result()``.  Every system runs in this one process against the same
LocalCluster (2 workers x 1 thread), started before timing; runs alternate
between systems so that drift on a noisy machine hits all of them alike.
Medians, min-max and the ratio to raw futures are printed, then the time to
build and compile 100k-task flows without any cluster (best of 5, fused and
unfused).

    python benchmarks/overhead.py [--quick] [--compile-only] [--json out.json]
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

import workloads  # noqa: E402

CASES = [("one", 1, 200), ("empty", 1, 200), ("w1", 1000, 5), ("w1", 5000, 3),
         ("w1", 20000, 3), ("w2", 200, 5), ("w4", 5000, 3)]
QUICK = [("one", 1, 50), ("empty", 1, 50), ("w1", 1000, 3), ("w1", 5000, 2), ("w2", 200, 3),
         ("w4", 1000, 3)]


def measure(client, cases):
    rows = []
    for workload, n, reps in cases:
        times = {name: [] for name in workloads.SYSTEMS}
        for fns in workloads.SYSTEMS.values():  # warm-up, untimed
            fns[workload](client, min(n, 100))
        for _ in range(reps):
            for name, fns in workloads.SYSTEMS.items():
                start = time.perf_counter()
                value = fns[workload](client, n)
                times[name].append(time.perf_counter() - start)
                assert value == workloads.EXPECTED[workload](n), (name, value)
        base = statistics.median(times["dask futures"])
        tasks = n + 1 if workload == "w1" else 3 * n + 1 if workload == "w4" else max(n, 1)
        for name, ts in times.items():
            med = statistics.median(ts)
            rows.append({"workload": workload, "n": n, "system": name, "median_s": med,
                         "min_s": min(ts), "max_s": max(ts), "ms_per_task": 1000 * med / tasks,
                         "vs_futures": med / base, "reps": reps})
    return rows


def compile_times(reps=5):
    """Build and compile 100k-task flows with no cluster, fused (the default)
    and unfused; best of ``reps``."""
    from daskflow.compile.graph import Compiler
    from daskflow.wire import RunInfo

    out = {}
    for label, flow, n in (("map-reduce 100k", workloads.w1_flow, 100_000),
                           ("chain 100k", workloads.w2_flow, 100_000),
                           ("W4, 3 maps of 33,333", workloads.w4_flow, 33_333)):
        for fuse in (True, False):
            best = (float("inf"), float("inf"), 0)
            for _ in range(reps):
                start = time.perf_counter()
                builder, _ = flow.build(flow.bind(n))
                built = time.perf_counter()
                compiler = Compiler(builder.nodes, RunInfo(flow.name, "bench"))
                compiler.fuse = fuse
                dsk = compiler.stage()
                done = time.perf_counter()
                if (built - start) + (done - built) < sum(best[:2]):
                    best = (built - start, done - built, len(dsk))
            out[f"{label}{'' if fuse else ' unfused'}"] = {
                "build_s": best[0], "compile_s": best[1], "dask_tasks": best[2]}
    return out


def table(rows):
    lines = ["| workload | N | system | median s (min-max) | ms/task | vs futures |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload'].upper()} | {r['n']} | {r['system']} | "
                     f"{r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}) | "
                     f"{r['ms_per_task']:.3f} | {r['vs_futures']:.2f}x |")
    return "\n".join(lines)


def print_compile_times(compiled):
    print("| flow | build s | compile s | Dask tasks |\n|---|---|---|---|")
    for label, t in compiled.items():
        print(f"| {label} | {t['build_s']:.3f} | {t['compile_s']:.3f} | {t['dask_tasks']:,} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer cases and repetitions")
    parser.add_argument("--json", help="also write the raw figures here")
    parser.add_argument("--compile-only", action="store_true",
                        help="only the build and compile times (no cluster)")
    args = parser.parse_args(argv)
    if args.compile_only:
        compiled = compile_times()
        print_compile_times(compiled)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"compile": compiled}, f, indent=2)
        return

    from distributed import Client, LocalCluster

    logging.getLogger("daskflow").setLevel(logging.WARNING)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        load_before = os.getloadavg()
        rows = measure(client, QUICK if args.quick else CASES)
        load_after = os.getloadavg()
    compiled = compile_times()
    print(table(rows))
    print()
    print_compile_times(compiled)
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"on {os.cpu_count()} cores")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "compile": compiled,
                       "load": [load_before, load_after]}, f, indent=2)


if __name__ == "__main__":
    main()
