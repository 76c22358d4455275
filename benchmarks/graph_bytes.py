"""Graph bytes per task: what the client sends and what the scheduler keeps.

Raw Dask futures (``client.map(inc, xs)`` then ``client.submit(total, futs)``),
a raw ``dask.task_spec.Task`` graph given to ``client.get`` and daskflow's
W1 (map + sum) and W4 (three chained maps + sum, fused by default) on one
LocalCluster.  Each graph is sent, then cancelled once the scheduler has all
its tasks (nothing needs to run to measure it).  *Sent* is the size of each
serialized graph the client sends, read from distributed's own large-graph warning with its threshold set
to 0 (the public way to get the figure).  *Stored* is the memory of the tasks'
run specs on the scheduler, measured by a scheduler plugin as each graph
arrives: a deep ``sys.getsizeof`` walk (an object's own size, not dask's
estimates) that counts a shared object once and leaves out functions, classes
and modules.  Also printed: whether distributed would warn about a large
graph (default threshold 10 MB) and how long it took until the scheduler had
every task (building, compiling, sending, the scheduler's update_graph).

    python benchmarks/graph_bytes.py [--n 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
import types
import warnings

import dask

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402

_UNITS = {"B": 1, "kiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_SKIP = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType,
         types.MethodType, types.CodeType)


def deep_size(objects) -> int:
    """Bytes held by ``objects`` and what they refer to, each object once."""
    seen: set[int] = set()
    total = 0
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SKIP):
            continue
        seen.add(id(obj))
        if type(obj).__module__ == "builtins":
            total += sys.getsizeof(obj)
        else:  # the object itself; dask's Task.__sizeof__ estimates more than that
            total += object.__sizeof__(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif not isinstance(obj, (str, bytes, int, float, bool)):
            for cls in type(obj).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if name != "__weakref__" and hasattr(obj, name):
                        stack.append(getattr(obj, name))
            if hasattr(obj, "__dict__"):
                stack.append(obj.__dict__)
    return total


def install_probe(dask_scheduler, name):
    """A scheduler plugin recording the run-spec bytes of each new graph."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Probe(SchedulerPlugin):
        def __init__(self):
            self.sizes = []

        def update_graph(self, scheduler, *, tasks=(), **kwargs):
            specs = [scheduler.tasks[k].run_spec for k in tasks if k in scheduler.tasks]
            self.sizes.append((len(specs), deep_size(specs)))

    dask_scheduler.add_plugin(Probe(), name=name)


def read_probe(dask_scheduler, name):
    plugin = dask_scheduler.plugins[name]
    sizes, plugin.sizes = plugin.sizes, []
    return sizes


def sent(caught) -> list[int]:
    """Graph sizes from distributed's 'Sending large graph of size X' warnings."""
    out = []
    for w in caught:
        m = re.search(r"large graph of size ([\d.]+) (\w+)", str(w.message))
        if m:
            out.append(int(float(m.group(1)) * _UNITS[m.group(2)]))
    return out


def raw_futures(client, n):
    futs = client.map(workloads.inc, range(n), pure=False)
    last = client.submit(workloads.total, futs, pure=False)
    return lambda: client.cancel([*futs, last])


def raw_tasks(client, n):
    from dask.task_spec import List, Task, TaskRef

    name = f"inc-{dask.base.tokenize(n, time.time())}"
    dsk = {(name, i): Task((name, i), workloads.inc, i) for i in range(n)}
    dsk["total-" + name] = Task("total-" + name, workloads.total,
                                List(*(TaskRef((name, i)) for i in range(n))))
    fut = client.get(dsk, "total-" + name, sync=False)
    return lambda: client.cancel(fut)


def flow(fn, **options):
    def send(client, n):
        run = fn.submit(n, cluster=client, progress=False, **options)
        return lambda: run.cancel(timeout=120)
    return send


SYSTEMS = {  # label: (submit and return a canceller, tasks per element, Dask tasks per element)
    "dask futures (W1)": (raw_futures, 1, 1),
    "dask Task graph (W1)": (raw_tasks, 1, 1),
    "daskflow W1": (flow(workloads.w1_flow), 1, 1),
    "daskflow W1 unfused": (flow(workloads.w1_flow, fuse=False), 1, 1),
    "daskflow W4 (fused: N+1 Dask tasks)": (flow(workloads.w4_flow), 3, 1),
    "daskflow W4 unfused": (flow(workloads.w4_flow, fuse=False), 3, 3),
}


def measure(client, n):
    """Each system's graphs for N, sent then cancelled once the scheduler has them."""
    from dask.utils import parse_bytes

    limit = parse_bytes(dask.config.get("distributed.admin.large-graph-warning-threshold"))
    rows = []
    for label, (send, per, dask_per) in SYSTEMS.items():
        tasks = per * n + 1
        with warnings.catch_warnings(record=True) as caught, dask.config.set(
                {"distributed.admin.large-graph-warning-threshold": "0B"}):
            warnings.simplefilter("always")
            start = time.perf_counter()
            cancel = send(client, n)
            stored: list = []
            deadline = time.monotonic() + 300
            while sum(k for k, _ in stored) < dask_per * n + 1:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{label}: the scheduler did not get all the tasks")
                stored += client.run_on_scheduler(read_probe, name="graph-bytes")
                time.sleep(0.05)
            elapsed = time.perf_counter() - start
            cancel()
        sizes = sent(caught)
        client.run_on_scheduler(read_probe, name="graph-bytes")  # what cancelling sent
        nbytes = sum(sizes)
        kept = sum(s for _, s in stored)
        rows.append({"system": label, "n": n, "tasks": tasks, "graphs": len(sizes),
                     "sent_bytes": nbytes, "sent_per_task": nbytes / tasks,
                     "stored_bytes": kept, "stored_per_task": kept / tasks,
                     "largest_graph": max(sizes, default=0),
                     "large_graph_warning": max(sizes, default=0) > limit,
                     "to_scheduler_s": elapsed})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="map length (repeatable)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    ns = args.n or [10_000, 100_000]

    from distributed import Client, LocalCluster

    logging.getLogger("daskflow").setLevel(logging.WARNING)
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        client.run_on_scheduler(install_probe, name="graph-bytes")
        for n in ns:
            rows.extend(measure(client, n))
    print("Bytes per task of the flow (W1: N+1 tasks, W4: 3N+1).\n")
    print("| system | N | graphs | sent B/task | stored B/task | >10 MB warning | "
          "until on the scheduler, s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['n']} | {r['graphs']} | {r['sent_per_task']:.0f} | "
              f"{r['stored_per_task']:.0f} | {'yes' if r['large_graph_warning'] else 'no'} | "
              f"{r['to_scheduler_s']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
