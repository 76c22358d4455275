"""A chaos soak: several drivers run flows on one adaptive LocalCluster while
its workers are SIGKILLed on a seeded schedule, beside raw Dask under the
same kills; then every invariant daskflow promises is checked.

    python benchmarks/soak.py [--seconds 300] [--seed 1] [--drivers 3] [--json out.json]

Flows (each driver runs them in turn until the time is up):

- ``mapped``: a map with a task that fails at random (seeded) and retries,
  then a sum: a Completed run's value must be right;
- ``opened``: a resource whose setup and cleanup write to a journal: every
  setup is cleaned up once, or its loss is visible in the setup's state;
- ``cached``: a cached chain on a local result store: right values, and no
  partial record left in the store;
- ``limited``: tasks tagged ``db`` under ``concurrency={"db": 2}``: never
  more than two at once, and a lone run after the chaos gets its slots.

Raw Dask runs ``client.map`` plus a sum of the same map in its own thread.
The test suite runs a short soak (``tests/driver/test_soak.py``); this
script's long form writes its figures to ``benchmarks/results/soak.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import tempfile
import threading
import time
from typing import Any

import daskflow as df

RETRIES = 3


# -- the flows (module level: the workers import this module) -----------------------


@df.task(retries=RETRIES, retry_delay=0.05)
def maybe_fail(i: int, seed: int) -> int:
    if random.Random(f"{seed}-{i}-{time.time_ns()}").random() < 0.1:
        raise ConnectionError(f"element {i}: a transient failure")
    time.sleep(0.01)
    return i * i


@df.task
def add(xs: list) -> int:
    return sum(xs)


@df.flow
def mapped(n: int, seed: int):
    return add(maybe_fail.map(range(n), seed=df.unmapped(seed)))


def _journal(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


@df.resource
def journal(path: str, run: str):
    _journal(path, f"open {run} {os.getpid()}")
    yield run
    _journal(path, f"close {run} {os.getpid()}")


@df.task
def use(handle: str, i: int) -> int:
    time.sleep(0.02)
    return i


@df.flow
def opened(path: str, run: str, n: int = 6):
    with journal(path, run) as handle:
        values = use.map(df.unmapped(handle), range(n))
    return add(values)


@df.task(cache=True)
def step(x: int, salt: str) -> int:
    time.sleep(0.01)
    return x + 1


@df.flow(cache=True)
def cached(salt: str, n: int = 5):
    x = 0
    for _ in range(n):
        x = step(x, salt)
    return x


@df.task(tags=["db"])
def query(i: int, path: str) -> int:
    start = time.time()
    time.sleep(0.05)
    with open(path, "a") as f:
        f.write(json.dumps([start, time.time()]) + "\n")
    return i


@df.flow
def limited(path: str, n: int = 6):
    return add(query.map(range(n), path=df.unmapped(path)))


def _square(i: int) -> int:
    time.sleep(0.01)
    return i * i


# -- the soak ---------------------------------------------------------------------------


class Soak:
    """One soak: a cluster, drivers, a killer, raw Dask beside them."""

    def __init__(self, seconds: float, seed: int, drivers: int, folder: str) -> None:
        self.seconds, self.seed, self.drivers, self.folder = seconds, seed, drivers, folder
        self.runs: list[tuple[str, Any, Any]] = []  # (kind, run, expected)
        self.raw = {"runs": 0, "completed": 0, "errors": []}
        self.kills: list[float] = []
        self.crashed: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self) -> dict:
        import dask
        from distributed import Client, LocalCluster

        store = os.path.join(self.folder, "store")
        settings = {"daskflow.results.storage": store,
                    "distributed.scheduler.locks.lease-timeout": "5s",
                    "distributed.scheduler.locks.lease-validation-interval": "1s",
                    "distributed.scheduler.allowed-failures": 10}
        with dask.config.set(settings), LocalCluster(
                n_workers=2, threads_per_worker=2, processes=True, dashboard_address=":0",
                silence_logs=50) as cluster, Client(cluster, set_as_default=False) as client:
            cluster.adapt(minimum=1, maximum=4, interval="500ms", wait_count=2)
            client.wait_for_workers(1, timeout=60)
            threads = [threading.Thread(target=self._driver, args=(cluster, i), daemon=True)
                       for i in range(self.drivers)]
            threads.append(threading.Thread(target=self._raw, args=(cluster,), daemon=True))
            killer = threading.Thread(target=self._killer, args=(client,), daemon=True)
            for t in threads:
                t.start()
            killer.start()
            time.sleep(self.seconds)
            self.stop.set()
            killer.join(30)
            for t in threads:
                t.join(180)
            hung = [t.name for t in threads if t.is_alive()]
            recovery = self._recovery(client)
        return self._check(store, hung, recovery)

    def _driver(self, cluster: Any, index: int) -> None:
        from distributed import Client

        rng = random.Random(self.seed * 100 + index)
        try:
            with Client(cluster, set_as_default=False) as client:
                count = 0
                while not self.stop.is_set():
                    count += 1
                    tag = f"d{index}-{count}"
                    kind = rng.choice(["mapped", "opened", "cached", "limited"])
                    run, expected = self._one(kind, tag, client, rng)
                    with self.lock:
                        self.runs.append((kind, run, expected))
        except Exception as err:  # a driver that dies is a broken invariant, never silence
            with self.lock:
                self.crashed.append(f"driver {index}: {type(err).__name__}: {err}"[:300])

    def _one(self, kind: str, tag: str, client: Any, rng: random.Random) -> tuple[Any, Any]:
        options = {"cluster": client, "progress": False}
        if kind == "mapped":
            n = rng.randint(20, 60)
            return mapped.run(n, self.seed, **options), sum(i * i for i in range(n))
        if kind == "opened":
            path = os.path.join(self.folder, "journal.txt")
            return opened.run(path, tag, **options), sum(range(6))
        if kind == "cached":
            return cached.run(f"salt-{rng.randint(0, 3)}", **options), 5
        path = os.path.join(self.folder, "limited.jsonl")
        return limited.run(path, **options, concurrency={"db": 2}), sum(range(6))

    def _raw(self, cluster: Any) -> None:
        from distributed import Client

        with Client(cluster, set_as_default=False) as client:
            while not self.stop.is_set():
                self.raw["runs"] += 1
                try:
                    futures = client.map(_square, range(40), pure=False)
                    total = client.submit(sum, futures).result(timeout=120)
                    if total == sum(i * i for i in range(40)):
                        self.raw["completed"] += 1
                except Exception as err:
                    self.raw["errors"].append(f"{type(err).__name__}: {err}"[:200])

    def _killer(self, client: Any) -> None:
        rng = random.Random(self.seed)
        while not self.stop.wait(rng.uniform(3, 6)):
            try:
                pids = client.run(os.getpid, nanny=False)
            except Exception:
                continue
            if len(pids) < 1:
                continue
            victim = rng.choice(sorted(pids))
            try:
                os.kill(pids[victim], signal.SIGKILL)
                self.kills.append(time.time())
            except ProcessLookupError:
                pass

    def _recovery(self, client: Any) -> float:
        """Seconds a lone tag-limited run takes once the chaos stopped."""
        path = os.path.join(self.folder, "after.jsonl")
        client.wait_for_workers(1, timeout=60)
        start = time.monotonic()
        run = limited.submit(path, cluster=client, progress=False, concurrency={"db": 2})
        if run.wait(60) is None:
            run.cancel(timeout=30)
            return float("inf")
        return time.monotonic() - start if run.state.is_completed() else float("inf")

    def _check(self, store: str, hung: list[str], recovery: float) -> dict:
        problems: list[str] = []
        counts: dict[str, dict[str, int]] = {}
        for kind, run, expected in self.runs:
            c = counts.setdefault(kind, {"runs": 0, "completed": 0, "failed": 0})
            c["runs"] += 1
            if not run.done():
                problems.append(f"{kind} run {run.run_id} never ended")
            elif run.state.is_completed():
                c["completed"] += 1
                if run.result() != expected:
                    problems.append(f"{kind} run {run.run_id}: {run.result()!r} != {expected!r}")
            else:
                c["failed"] += 1
                failed = [st for st in run.states.values() if st.is_failed()]
                if not failed or not all(st.message for st in failed):
                    problems.append(f"{kind} run {run.run_id} ended {run.state.name} without a "
                                    f"task that says why: {run.state.message}")
        problems += self._journal_problems()
        problems += _overlap_problems(os.path.join(self.folder, "limited.jsonl"), 2)
        problems += _store_problems(store)
        problems += self.crashed
        if hung:
            problems.append(f"threads still running: {hung}")
        if recovery > 4:  # a stale grant would hold the slot for the 5 s lease
            problems.append(f"a lone limited run after the chaos took {recovery:.1f}s")
        return {"seconds": self.seconds, "seed": self.seed, "drivers": self.drivers,
                "kills": len(self.kills), "daskflow": counts, "raw dask": {
                    k: v for k, v in self.raw.items() if k != "errors"},
                "raw dask errors": self.raw["errors"][:5], "recovery_s": recovery,
                "problems": problems}

    def _journal_problems(self) -> list[str]:
        """Every setup is cleaned up once, or its loss shows in its state; never
        more cleanups than setups."""
        path = os.path.join(self.folder, "journal.txt")
        books: dict[tuple[str, str], int] = {}
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    what, run, _pid = line.split()
                    books[what, run] = books.get((what, run), 0) + 1
        problems = []
        for kind, run, _ in self.runs:
            if kind != "opened" or not run.done():
                continue
            name = run.parameters["run"]
            opens, closes = books.get(("open", name), 0), books.get(("close", name), 0)
            setup = run.states.get("journal")
            lost = setup is not None and "lost" in setup.message
            # A setup lost with its worker is run again (a second opening), and a
            # cleanup whose state was lost too runs again for that opening.
            if closes > opens:
                problems.append(f"the resource of {name} was set up {opens} times and "
                                f"cleaned up {closes} times")
            elif run.state.is_completed() and closes == 0:
                problems.append(f"{name} completed but its resource was never cleaned up")
            elif opens > closes and not lost:
                problems.append(f"the resource of {name} was set up {opens} times, cleaned up "
                                f"{closes} times, and its state does not say a setup was lost")
        return problems


def _overlap_problems(path: str, limit: int) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        spans = [json.loads(line) for line in f if line.strip()]
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return [] if peak <= limit else [f"{peak} tasks tagged db ran at once (limit {limit})"]


def _store_problems(store: str) -> list[str]:
    import glob

    from daskflow.worker.store import records

    problems = []
    for path in glob.glob(os.path.join(store, "*", "*.json")):
        try:
            with open(path) as f:
                json.load(f)
        except ValueError:
            problems.append(f"an unreadable record in the store: {path}")
    for meta in records(store):
        data = os.path.join(os.path.dirname(meta["_path"]), meta["data"])
        if not os.path.exists(data) or os.path.getsize(data) != meta["size"]:
            problems.append(f"a partial record in the store: {meta['_path']}")
    return problems


def soak(seconds: float, seed: int = 1, drivers: int = 3) -> dict:
    with tempfile.TemporaryDirectory(prefix="daskflow-soak-") as folder:
        return Soak(seconds, seed, drivers, folder).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drivers", type=int, default=3)
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("daskflow").setLevel(logging.WARNING)
    figures = soak(args.seconds, args.seed, args.drivers)
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0 if not figures["problems"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
