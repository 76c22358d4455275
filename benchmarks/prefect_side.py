"""The Prefect 3 side of `make bench`; runs in benchmarks/.prefect-venv.

Starts one local Prefect server (its own PREFECT_HOME in a temporary
directory), exports PREFECT_API_URL *before* the Dask cluster starts (so
workers talk to that one server instead of each starting an ephemeral one),
then times the workloads with prefect-dask's DaskTaskRunner on a LocalCluster
(2 workers x 1 thread) and with Prefect's default ThreadPoolTaskRunner.
Prints one JSON document on its last line.

    benchmarks/.prefect-venv/bin/python benchmarks/prefect_side.py --cases '[["w1", 100, 3]]'
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": home, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    log = open(os.path.join(home, "server.log"), "ab")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log,
                            start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited; see {home}/server.log")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("prefect server did not answer /api/health within 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def flows(runner_factory):
    import numpy as np  # noqa: F401 - W3 arrays
    from prefect import flow, task

    @task
    def inc(x):
        return x + 1

    @task
    def total(xs):
        return sum(xs)

    @task
    def col_sum(arr, i):
        return float(arr[:, i].sum())

    @flow(task_runner=runner_factory())
    def w1(n: int):
        return total.submit(inc.map(range(n))).result()

    @flow(task_runner=runner_factory())
    def w2(n: int):
        x = inc.submit(0)
        for _ in range(n - 1):
            x = inc.submit(x)
        return x.result()

    @flow(task_runner=runner_factory())
    def w3(arr):
        return total.submit([col_sum.submit(arr, i) for i in range(8)]).result()

    @flow(task_runner=runner_factory())
    def empty(n: int = 0):
        return None

    return {"w1": w1, "w2": w2, "w3": w3, "empty": empty}


EXPECTED = {"w1": lambda n: sum(range(1, n + 1)), "w2": lambda n: n, "empty": lambda n: None}


def measure(systems, cases, budget):
    """Time each case; skip one whose projection from a smaller N exceeds the budget."""
    rows = []
    per_task: dict[tuple[str, str], float] = {}
    for fs in systems.values():
        for workload in {c[0] for c in cases}:
            fs[workload](10 if workload != "empty" else 0)  # warm-up, untimed
    for workload, n, reps in cases:
        for name, fs in systems.items():
            est = per_task.get((name, workload))
            if est is not None and est * n > budget:
                rows.append({"workload": workload, "n": n, "system": name, "times": [],
                             "median_s": None,
                             "note": f"skipped: projected {est * n:.0f} s > {budget:.0f} s budget"})
                continue
            ts: list[float] = []
            for _ in range(reps):
                start = time.perf_counter()
                value = fs[workload](n)
                ts.append(time.perf_counter() - start)
                assert value == EXPECTED[workload](n), (name, value)
                if ts[0] * reps > budget:
                    break  # the budget allows one repetition only
            per_task[(name, workload)] = statistics.median(ts) / max(n, 1)
            rows.append({"workload": workload, "n": n, "system": name, "times": ts,
                         "median_s": statistics.median(ts), "note": ""})
    return rows


def run_w3(systems, mb, reps):
    import numpy as np

    rows_per = mb * 1_000_000 // 8000
    out = []
    for name, fs in systems.items():
        for _ in range(reps):
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            start = time.perf_counter()
            arr = np.ones((rows_per, 1000))
            assert fs["w3"](arr) == 8 * rows_per
            elapsed = time.perf_counter() - start
            del arr
            out.append({"system": name, "seconds": elapsed,
                        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                        "rss_before_mb": rss0 / 1024})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", required=True, help="JSON list of [workload, n, reps]")
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--w3-mb", type=int, default=0)
    parser.add_argument("--w3-only", help="run only W3 for this system")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="prefect-bench-")
    server, url = start_server(home)
    os.environ["PREFECT_API_URL"] = url
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "10")
    try:
        import warnings

        warnings.simplefilter("ignore")
        from distributed import LocalCluster
        from prefect.task_runners import ThreadPoolTaskRunner
        from prefect_dask import DaskTaskRunner

        with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
            address = cluster.scheduler_address
            systems = {
                "prefect + DaskTaskRunner": flows(lambda: DaskTaskRunner(address=address)),
                "prefect threads": flows(lambda: ThreadPoolTaskRunner(max_workers=2)),
            }
            if args.w3_only:
                systems = {args.w3_only: systems[args.w3_only]}
                result = {"w3": run_w3(systems, args.w3_mb, 1)}
            else:
                result = {"rows": measure(systems, json.loads(args.cases), args.budget)}
        print(json.dumps(result))
    finally:
        stop_server(server)
        import shutil

        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
