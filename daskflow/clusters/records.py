"""Records on disk of the clusters daskflow started, for ``daskflow clusters
list`` and ``daskflow clusters close``: one JSON file per cluster, with its
address and the processes and jobs it owns (pids with their start times, so
that a pid reused by an unrelated process is never signalled).

Each provider answers for its own kind (``ClusterSpec.record_status`` and
``ClusterSpec.close_record``); :func:`status` and :func:`close` are what
most of them answer: ask the scheduler's address, then the processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from daskflow import config
from daskflow.clusters.probe import probe
from daskflow.core.files import write_atomic
from daskflow.exceptions import ClusterError


def process_identity(pid: int) -> dict[str, Any]:
    """A pid with its start time: what ``clusters close`` checks before a kill,
    so that a pid reused by an unrelated process is never signalled."""
    import psutil

    return {"pid": pid, "create_time": psutil.Process(pid).create_time()}


def same_process(identity: dict[str, Any]) -> bool:
    """Whether ``identity`` (from :func:`process_identity`) still runs, as that
    very process (not a zombie, not a newer process with the same pid)."""
    import psutil

    try:
        proc = psutil.Process(int(identity["pid"]))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        created = proc.create_time()
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False
    recorded = identity.get("create_time")
    return recorded is not None and abs(created - float(recorded)) < 0.05


class Records:
    """One JSON file per started cluster, for ``daskflow clusters list/close``."""

    def directory(self) -> str:
        path = os.path.expanduser(str(config.get("lifecycle.state-dir")))
        os.makedirs(path, exist_ok=True)
        return path

    def write(self, handle: Any) -> None:
        record = {"id": handle.record_id, "name": handle.name, "kind": handle.spec.kind,
                  "address": handle.client.scheduler.address,
                  "driver": process_identity(os.getpid()), "driver_pid": os.getpid(),
                  "started": time.time(),
                  "dashboard": getattr(handle.client, "dashboard_link", None)}
        record.update(handle.spec.record_extra(handle))
        path = os.path.join(self.directory(), f"{handle.record_id}.json")
        write_atomic(path, json.dumps(record).encode())  # a reader never sees half a record

    def remove(self, record_id: str) -> None:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(self.directory(), f"{record_id}.json"))

    def all(self) -> list[dict[str, Any]]:
        out = []
        directory = self.directory()
        for fname in sorted(os.listdir(directory)):
            if fname.endswith(".json"):
                with contextlib.suppress(OSError, ValueError), open(os.path.join(directory, fname)) as f:
                    record = json.load(f)
                    record.setdefault("id", fname[:-5])
                    out.append(record)
        return out


records = Records()


def owned_processes(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The processes a record owns, each a pid with its start time.

    Records written before start times were kept list bare pids: those are
    never signalled (the pid may have been reused), only reported.
    """
    owned = list(record.get("processes", []))
    owned += [{"pid": pid, "create_time": None} for pid in record.get("worker_pids", [])]
    return owned


def driver_alive(record: dict[str, Any]) -> bool:
    driver = record.get("driver") or {"pid": record.get("driver_pid"), "create_time": None}
    return same_process(driver)


def reachable(address: str) -> bool:
    try:
        probe(address, 2.0)
    except ClusterError:
        return False
    return True


def status(record: dict[str, Any], gone: Callable[[dict[str, Any]], bool] | None = None) -> str:
    """``running``, ``orphaned`` or ``gone``.  ``gone(record)`` says whether the
    provider's own handle on the cluster (a DaskCluster, a gateway cluster,
    jobs) is gone; else the scheduler's address and the recorded processes do."""
    if gone is not None:
        if gone(record):
            return "gone"
        return "running" if driver_alive(record) else "orphaned"
    if reachable(record["address"]):
        return "running" if driver_alive(record) else "orphaned"
    return "running" if any(map(same_process, owned_processes(record))) else "gone"


def close(record: dict[str, Any], also: Callable[[dict[str, Any]], str | None] | None = None
          ) -> str:
    """End one recorded cluster: shut its scheduler down, then ``also(record)``
    (a provider's own step, e.g. cancelling jobs: what it did, or None), then
    stray processes; forget the record."""
    from distributed import Client

    how = "already gone"
    if reachable(record["address"]):
        with contextlib.suppress(Exception), Client(record["address"], timeout=10,
                                                    set_as_default=False) as client:
            client.shutdown()
            how = "scheduler shut down"
    done = also(record) if also is not None else None
    if done:
        how = f"{how}; {done}" if how != "already gone" else done
    skipped = []
    for proc in owned_processes(record):
        if proc.get("create_time") is None:
            skipped.append(str(proc["pid"]))
        elif same_process(proc):  # still that very process, not a reused pid
            with contextlib.suppress(OSError):
                os.kill(int(proc["pid"]), signal.SIGTERM)
                how = "processes terminated"
    if skipped:
        how += (f" (pids {', '.join(skipped)} left alone: the record has no start times "
                "to tell them from reused pids)")
    records.remove(record["id"])
    return how
