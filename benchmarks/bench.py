"""`make bench`: daskflow, raw Dask futures, dask.delayed, Prefect 3 with
prefect-dask's DaskTaskRunner and Prefect 3 with its thread pool, side by side.

Each system runs against a LocalCluster of 2 workers x 1 thread started before
timing (Prefect's thread pool runs in its own process with 2 threads).  The
Dask-native systems share one process and one cluster and alternate; Prefect
runs in its own virtualenv (benchmarks/.prefect-venv, never a dependency of
daskflow) against a local Prefect server that prefect_side.py starts and
stops.  Workloads: EMPTY (a flow without tasks), W1 (a map of a trivial
task, then a sum), W2 (a chain of 200) and W4 (three maps chained element-wise,
then a sum: 3N+1 tasks; Dask-native systems only).  A case whose projection
from a smaller N exceeds the budget is skipped and marked so, except W1 at
N=100,000, which always runs 3 times.  Writes benchmarks/results/{bench.md,bench.json,
ms_per_task.png,w3.png} and prints the table.

    python benchmarks/bench.py [--budget 240] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
PREFECT_PY = os.path.join(HERE, ".prefect-venv", "bin", "python")
sys.path.insert(0, HERE)

import workloads  # noqa: E402

# (workload, N, runs); W1 at 100k always gets its 3 runs, whatever the budget
DASK_CASES = [("empty", 0, 10), ("w1", 100, 5), ("w1", 1000, 5), ("w1", 5000, 3),
              ("w1", 20000, 2), ("w1", 100000, 3), ("w2", 200, 5), ("w4", 5000, 3)]
OVER_BUDGET = {("w1", 100000)}
PREFECT_CASES = [("empty", 0, 5), ("w1", 100, 3), ("w1", 1000, 2), ("w1", 5000, 1),
                 ("w2", 200, 2)]
QUICK_DASK = [("empty", 0, 5), ("w1", 100, 3), ("w1", 1000, 3), ("w2", 200, 3), ("w4", 1000, 3)]
QUICK_PREFECT = [("empty", 0, 2), ("w1", 100, 2), ("w2", 200, 1)]
ONLY_DASK_NATIVE = {"dask.delayed": {20000, 100000}}  # daskflow and raw futures only there


def dask_side(cases, budget):
    import logging

    from distributed import Client, LocalCluster

    logging.getLogger("daskflow").setLevel(logging.WARNING)
    systems = {"daskflow": {**workloads.SYSTEMS["daskflow"],
                            "empty": lambda c, n: workloads.empty_flow(cluster=c)},
               "dask futures": {**workloads.SYSTEMS["dask futures"],
                                "empty": lambda c, n: c.submit(workloads.noop, pure=False).result()},
               "dask.delayed": {**workloads.SYSTEMS["dask.delayed"],
                                "empty": lambda c, n: __import__("dask").delayed(
                                    workloads.noop, pure=False)().compute(scheduler=c)}}
    rows, per_task = [], {}
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        for fns in systems.values():
            for w in ("w1", "w2", "w4"):
                fns[w](client, 50)
            fns["empty"](client, 0)
        for workload, n, reps in cases:
            active = {}
            for name in systems:
                est = per_task.get((name, workload))
                if n in ONLY_DASK_NATIVE.get(name, ()):
                    rows.append(_row(workload, n, name, [], "not run (daskflow and raw futures only)"))
                elif ((workload, n) not in OVER_BUDGET and est is not None
                      and est * n * reps > budget and est * n > budget):
                    rows.append(_row(workload, n, name, [],
                                     f"skipped: projected {est * n:.0f} s > {budget:.0f} s budget"))
                else:
                    active[name] = []
            for rep in range(reps):
                for name in active:
                    start = time.perf_counter()
                    value = systems[name][workload](client, n)
                    active[name].append(time.perf_counter() - start)
                    if workload != "empty":
                        assert value == workloads.EXPECTED[workload](n), (name, value)
                if ((workload, n) not in OVER_BUDGET
                        and max(statistics.median(t) for t in active.values()) * (rep + 2) > budget):
                    break
            for name, ts in active.items():
                per_task[(name, workload)] = statistics.median(ts) / max(n, 1)
                rows.append(_row(workload, n, name, ts, ""))
    return rows


def _row(workload, n, system, times, note):
    return {"workload": workload, "n": n, "system": system, "times": times,
            "median_s": statistics.median(times) if times else None, "note": note}


def prefect_side(cases, budget):
    out = subprocess.run([PREFECT_PY, os.path.join(HERE, "prefect_side.py"), "--cases",
                          json.dumps(cases), "--budget", str(budget)],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"prefect side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["rows"]


def w3_side(reps, mb):
    """The 200 MB case: each variant in a fresh process of its own."""
    rows = []
    dask_variants = ["dask scatter", "dask in-graph", "daskflow"]
    for v in dask_variants:
        for _ in range(reps):
            out = subprocess.run([sys.executable, os.path.join(HERE, "large_input.py"), "--child",
                                  v, "--mb", str(mb)], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for v in ["prefect + DaskTaskRunner", "prefect threads"]:
        for _ in range(reps):
            out = subprocess.run([PREFECT_PY, os.path.join(HERE, "prefect_side.py"), "--cases",
                                  "[]", "--w3-only", v, "--w3-mb", str(mb)],
                                 capture_output=True, text=True, timeout=1800)
            if out.returncode != 0:
                raise RuntimeError(f"prefect W3 failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])["w3"][0]
            rows.append({"variant": v, "seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"],
                         "warnings": None})
    return rows


def summarise(rows):
    base = {(r["workload"], r["n"]): r["median_s"] for r in rows
            if r["system"] == "dask futures" and r["median_s"]}
    lines = ["| workload | N | system | median s (min-max) | ms/task | vs raw futures | note |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        tasks = max({"w1": r["n"] + 1, "w4": 3 * r["n"] + 1}.get(r["workload"], r["n"]), 1)
        if r["median_s"] is None:
            lines.append(f"| {r['workload'].upper()} | {r['n']} | {r['system']} | - | - | - | {r['note']} |")
            continue
        ratio = r["median_s"] / base[(r["workload"], r["n"])] if (r["workload"], r["n"]) in base else None
        r["ms_per_task"] = 1000 * r["median_s"] / tasks
        r["vs_futures"] = ratio
        ts = r["times"]
        lines.append(f"| {r['workload'].upper()} | {r['n']} | {r['system']} | {r['median_s']:.3f} "
                     f"({min(ts):.3f}-{max(ts):.3f}) | {r['ms_per_task']:.2f} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} | {r['note'] or f'{len(ts)} runs'} |")
    return "\n".join(lines)


def summarise_w3(rows):
    by = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    base_t = statistics.median(r["seconds"] for r in by["dask scatter"])
    base_m = statistics.median(r["peak_rss_mb"] for r in by["dask scatter"])
    lines = ["| W3: 200 MB array to 8 tasks | median s | vs dask scatter | client peak RSS MB | vs dask scatter | warnings |",
             "|---|---|---|---|---|---|"]
    out = []
    for v, rs in by.items():
        t = statistics.median(r["seconds"] for r in rs)
        m = statistics.median(r["peak_rss_mb"] for r in rs)
        w = rs[0]["warnings"]
        out.append({"variant": v, "median_s": t, "peak_rss_mb": m})
        lines.append(f"| {v} | {t:.2f} | {t / base_t:.2f}x | {m:.0f} | {m / base_m:.2f}x | "
                     f"{'not counted' if w is None else w} |")
    return "\n".join(lines), out


def plot(rows, w3):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system in dict.fromkeys(r["system"] for r in rows):
        pts = sorted((r["n"], r["ms_per_task"]) for r in rows
                     if r["system"] == system and r["workload"] == "w1" and r.get("ms_per_task"))
        if pts:
            ax.plot(*zip(*pts), marker="o", label=system)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (tasks in the map)")
    ax.set_ylabel("ms per task (W1: map + sum)")
    ax.set_title("Per-task cost, LocalCluster 2 workers x 1 thread")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "ms_per_task.png"), dpi=110)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
    names = [r["variant"] for r in w3]
    a1.barh(names, [r["median_s"] for r in w3])
    a1.set_xlabel("seconds")
    a2.barh(names, [r["peak_rss_mb"] for r in w3])
    a2.set_xlabel("client peak RSS (MB)")
    a2.set_yticks([])
    fig.suptitle("W3: a 200 MB array given to 8 tasks")
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "w3.png"), dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=240.0, help="seconds per case")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--w3-reps", type=int, default=3)
    args = parser.parse_args(argv)
    os.makedirs(RESULTS, exist_ok=True)
    started = time.time()
    load = {"before": os.getloadavg()}
    rows = dask_side(QUICK_DASK if args.quick else DASK_CASES, args.budget)
    load["after dask"] = os.getloadavg()
    rows += prefect_side(QUICK_PREFECT if args.quick else PREFECT_CASES, args.budget)
    load["after prefect"] = os.getloadavg()
    w3_rows = w3_side(1 if args.quick else args.w3_reps, 200)
    load["after w3"] = os.getloadavg()
    order = {"empty": 0, "w1": 1, "w2": 2, "w4": 3}
    rows.sort(key=lambda r: (order[r["workload"]], r["n"]))
    table = summarise(rows)
    w3_table, w3_summary = summarise_w3(w3_rows)
    plot(rows, w3_summary)
    loads = ", ".join(f"{k} {v[0]:.2f}" for k, v in load.items())
    head = (f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}; load average (1 min) {loads}; "
            f"total {time.time() - started:.0f} s; budget {args.budget:.0f} s per case.")
    md = f"{head}\n\n{table}\n\n{w3_table}\n\n![ms per task](ms_per_task.png)\n\n![W3](w3.png)\n"
    with open(os.path.join(RESULTS, "bench.md"), "w") as f:
        f.write(md)
    with open(os.path.join(RESULTS, "bench.json"), "w") as f:
        json.dump({"rows": rows, "w3": w3_rows, "load": load, "machine": head}, f, indent=2)
    print(md)


if __name__ == "__main__":
    main()
