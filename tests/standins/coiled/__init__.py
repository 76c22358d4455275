"""A STAND-IN for the ``coiled`` package, for tests only.

The Coiled service cannot run here, so this package imitates it at the
``coiled.Cluster`` boundary, as faithfully as the tests need:

- a "control plane" in the directory ``$DASKFLOW_COILED_STANDIN_DIR`` keeps
  one JSON record per cluster name;
- each cluster is a real ``dask scheduler`` and real ``dask worker``
  processes, started in their own session so that, like cloud machines, they
  outlive the driver that asked for them;
- ``Cluster(name=...)`` reuses a running cluster of that name;
- ``close()`` shuts the cluster down only if ``shutdown_on_close`` (True by
  default, as in coiled), ``shutdown()`` always does;
- ``idle_timeout`` is the scheduler's own ``--idle-timeout``;
  ``no_client_timeout`` ends the cluster once no client has been connected
  for that long (a scheduler preload, ``_server.py``);
- importing it sets ``distributed.scheduler.no-workers-timeout`` in dask's
  global config, as importing the real coiled does.

Put ``tests/standins`` on ``sys.path`` to use it; nothing else imports it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import dask.config
from dask.utils import parse_timedelta

dask.config.set({"distributed.scheduler.no-workers-timeout": "10 minutes"})  # like coiled

STANDIN = True
_popens: dict[str, list[subprocess.Popen]] = {}  # processes this process launched, to reap


def _plane() -> str:
    path = os.environ.get("DASKFLOW_COILED_STANDIN_DIR")
    if not path:
        raise RuntimeError("the coiled stand-in needs DASKFLOW_COILED_STANDIN_DIR")
    os.makedirs(path, exist_ok=True)
    return path


def _record_path(name: str) -> str:
    return os.path.join(_plane(), f"{name}.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def list_clusters() -> dict[str, dict]:
    out = {}
    for fname in os.listdir(_plane()):
        if fname.endswith(".json"):
            with open(os.path.join(_plane(), fname)) as f:
                rec = json.load(f)
            if _alive(rec["scheduler_pid"]):
                out[rec["name"]] = rec
            else:
                os.remove(os.path.join(_plane(), fname))
    return out


def delete_cluster(name: str) -> None:
    rec = list_clusters().get(name)
    if rec is None:
        return
    for pid in [*rec["worker_pids"], rec["scheduler_pid"]]:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 20
    while any(_alive(p) for p in [*rec["worker_pids"], rec["scheduler_pid"]]):
        if time.time() > deadline:
            for pid in [*rec["worker_pids"], rec["scheduler_pid"]]:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            break
        time.sleep(0.05)
    for proc in _popens.pop(name, []):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    try:
        os.remove(_record_path(name))
    except OSError:
        pass


def _seconds(value) -> float | None:
    return None if value is None else float(parse_timedelta(value, default="s"))


def _launch(name: str, n_workers: int, idle_timeout, no_client_timeout) -> dict:
    sfile = os.path.join(_plane(), f"{name}.scheduler-file")
    log = open(os.path.join(_plane(), f"{name}.log"), "ab")
    env = {**os.environ}
    here = os.path.dirname(os.path.abspath(__file__))
    if no_client_timeout is not None:
        env["COILED_STANDIN_NO_CLIENT_TIMEOUT"] = str(_seconds(no_client_timeout))
    cmd = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
           "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file", sfile,
           "--preload", os.path.join(here, "_server.py")]
    if idle_timeout is not None:
        cmd += ["--idle-timeout", f"{_seconds(idle_timeout)}s"]
    sched = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 60
    while not os.path.exists(sfile):
        if time.time() > deadline or sched.poll() is not None:
            raise RuntimeError(f"stand-in scheduler for {name} did not start")
        time.sleep(0.05)
    with open(sfile) as f:
        address = json.load(f)["address"]
    workers = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                                 "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                env=env, stdout=log, stderr=log, start_new_session=True)
               for _ in range(n_workers)]
    log.close()
    _popens[name] = [sched, *workers]
    rec = {"name": name, "address": address, "scheduler_pid": sched.pid,
           "worker_pids": [w.pid for w in workers], "idle_timeout": idle_timeout,
           "no_client_timeout": no_client_timeout}
    with open(_record_path(name), "w") as f:
        json.dump(rec, f)
    return rec


class Cluster:
    """The stand-in of ``coiled.Cluster``: reuse by name, close vs shutdown."""

    def __init__(self, name: str | None = None, n_workers: int = 1, *,
                 shutdown_on_close: bool | None = None, idle_timeout="20 minutes",
                 no_client_timeout=None, **kwargs) -> None:
        self.name = name or f"coiled-{uuid.uuid4().hex[:8]}"
        existing = list_clusters().get(self.name)
        self.reused = existing is not None
        if existing is None:
            existing = _launch(self.name, n_workers, idle_timeout, no_client_timeout)
        self.scheduler_address = existing["address"]
        self.shutdown_on_close = True if shutdown_on_close is None else shutdown_on_close
        self.kwargs = kwargs
        from distributed import Client
        from distributed.core import Status

        self.status = Status.running  # what distributed.Client(cluster) checks

        with Client(self.scheduler_address, set_as_default=False) as c:
            c.wait_for_workers(n_workers, timeout=60)

    @property
    def dashboard_link(self) -> str:
        return f"stand-in cluster {self.name}"

    def close(self) -> None:
        if self.shutdown_on_close:
            self.shutdown()

    def shutdown(self) -> None:
        from distributed.core import Status

        delete_cluster(self.name)
        self.status = Status.closed

    def __await__(self):  # Client(cluster) awaits the cluster to make sure it started
        async def started():
            return self

        return started().__await__()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
