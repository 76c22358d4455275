"""``df.clusters.Slurm``: a temporary cluster of Slurm jobs, thin over
``dask_jobqueue.SLURMCluster`` (``pip install 'daskflow[jobqueue]'``).

The scheduler runs in the driver's process (as dask-jobqueue does it); the
workers are batch jobs, all named after the handle (``daskflow-slurm-...``),
so that the end is a ``scancel --name``: on close (after dask-jobqueue's own
cancel, to catch a job submitted mid-way), and from ``daskflow clusters
close``.  A driver killed with SIGKILL takes its scheduler with it; its
workers then leave after ``death_timeout`` (default: the lease), and the
jobs' walltime bounds the rest.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
from typing import Any

from daskflow import config
from daskflow.clusters import records as record_files
from daskflow.clusters.base import ClusterSpec, Handle, close_client, need
from daskflow.exceptions import ClusterError


class Slurm(ClusterSpec):
    """``dask_jobqueue.SLURMCluster``; keyword arguments are its own.

    >>> import daskflow as df
    >>> spec = df.clusters.Slurm(cores=8, memory="16GB", walltime="01:00:00",
    ...                          queue="normal", account="proj42", jobs=4)

    ``jobs=N`` submits N jobs; ``adapt={"minimum_jobs": 0, "maximum_jobs": 20}``
    lets dask-jobqueue scale with the load.
    """

    kind = "slurm"

    def __init__(self, *, jobs: int | None = None, adapt: dict[str, Any] | None = None,
                 name: str | None = None, startup_timeout: float | str | None = None,
                 lease: float | str | None = None, **kwargs: Any) -> None:
        if jobs is not None and adapt is not None:
            raise ClusterError("Slurm(jobs=..., adapt=...): give one of them, not both")
        if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 0):
            raise ClusterError(f"Slurm(jobs={jobs!r}): a whole number >= 0, the batch jobs to submit")
        if adapt is not None and not isinstance(adapt, dict):
            raise ClusterError(f"Slurm(adapt={adapt!r}): a dict such as "
                               "{'minimum_jobs': 0, 'maximum_jobs': 10}")
        if "job_name" in kwargs:
            raise ClusterError("Slurm(job_name=...) is decided by daskflow: jobs are named after "
                               "the cluster (name=, or daskflow-slurm-...) so that they can be "
                               "cancelled by name")
        if "n_workers" in kwargs:
            raise ClusterError("Slurm(n_workers=...): say jobs=N (each job runs `processes` "
                               "workers)")
        _check_keywords(kwargs)
        super().__init__(name=name, startup_timeout=startup_timeout, lease=lease)
        self.jobs = jobs
        self.adapt = dict(adapt) if adapt is not None else None
        self.kwargs = dict(kwargs)

    def cluster_kwargs(self, name: str) -> dict[str, Any]:
        kwargs = {**self.kwargs, "job_name": name}
        scheduler_options = dict(kwargs.get("scheduler_options") or {})
        scheduler_options.setdefault("dashboard_address", ":0")  # never a port clash
        kwargs["scheduler_options"] = scheduler_options
        # Workers whose scheduler is gone (a driver killed with SIGKILL) leave
        # after this long, ending their jobs before the walltime does.
        kwargs.setdefault("death_timeout", config.seconds_setting("lifecycle.lease", self.lease))
        return kwargs

    def preflight(self) -> None:
        import_jobqueue()  # in the calling thread, which may be the main one

    def _create(self, handle: Handle) -> tuple[Any, Any]:
        dask_jobqueue = import_jobqueue()
        if shutil.which("sbatch") is None:
            raise ClusterError("Slurm: `sbatch` is not on PATH; run the flow on a Slurm login "
                               "node (or install Slurm's client commands)")
        from distributed import Client

        cluster = dask_jobqueue.SLURMCluster(**self.cluster_kwargs(handle.name))
        try:
            if self.jobs:
                cluster.scale(jobs=self.jobs)
            elif self.adapt is not None:
                cluster.adapt(**self.adapt)
            return Client(cluster, set_as_default=False), cluster
        except BaseException:
            self._destroy(handle, None, cluster)
            raise

    def _destroy(self, handle: Handle, client: Any, cluster: Any) -> None:
        try:
            if client is not None:
                close_client(client)
            if cluster is not None:
                cluster.close()
        finally:
            cancel_jobs([handle.name])  # any job dask-jobqueue did not know of yet

    def record_extra(self, handle: Handle) -> dict[str, Any]:
        return {"jobs": [handle.name]}

    @classmethod
    def record_status(cls, record: dict[str, Any]) -> str:
        """Gone once its jobs are gone and its scheduler does not answer."""
        return record_files.status(record, gone=lambda r: not live_jobs(r.get("jobs", []))
                                   and not record_files.reachable(r["address"]))

    @classmethod
    def close_record(cls, record: dict[str, Any]) -> str:
        """Shut its scheduler down, then cancel its jobs."""
        return record_files.close(record, also=lambda r: "jobs cancelled" if r.get("jobs")
                                  and cancel_jobs(r["jobs"]) else None)

    def describe(self) -> str:
        return "SLURMCluster"


def _check_keywords(kwargs: dict[str, Any]) -> None:
    """A misspelt SLURMCluster argument fails here, before any job is submitted."""
    import difflib
    import inspect

    try:
        import_jobqueue()
    except ClusterError:
        return  # said when the cluster starts, with the install hint
    from dask_jobqueue.core import Job, JobQueueCluster
    from dask_jobqueue.slurm import SLURMCluster, SLURMJob

    known: set[str] = {"scheduler_options", "dashboard_address"}
    for fn in (SLURMCluster.__init__, JobQueueCluster.__init__, SLURMJob.__init__, Job.__init__):
        known.update(p.name for p in inspect.signature(fn).parameters.values()
                     if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY)
    known -= {"self", "scheduler", "name", "job_name", "n_workers", "loop", "asynchronous"}
    for key in kwargs:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ClusterError(f"Slurm({key}=...): not an argument of dask_jobqueue.SLURMCluster "
                               f"or its jobs.{hint}")


def import_jobqueue() -> Any:
    """Import dask_jobqueue without letting it take over Ctrl-C.

    ``dask_jobqueue.runner`` replaces the process's SIGINT handler when
    imported (with one that calls ``sys.exit()``), which would turn every
    later Ctrl-C in the user's program into a silent exit.  Here the handler
    is put back at once, and off the main thread (where ``signal.signal``
    raises) the import is let through without it.  Pinned by
    test_dask_jobqueue_still_takes_sigint_on_import.
    """
    if "dask_jobqueue" in sys.modules:
        return need("dask_jobqueue", "jobqueue")
    with _lock:
        before = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            try:
                return need("dask_jobqueue", "jobqueue")
            finally:
                signal.signal(signal.SIGINT, before)
        original = signal.signal

        def keep_sigint(signum: Any, handler: Any) -> Any:
            if signum == signal.SIGINT and threading.current_thread() is not threading.main_thread():
                return before
            return original(signum, handler)

        signal.signal = keep_sigint  # type: ignore[assignment]
        try:
            return need("dask_jobqueue", "jobqueue")
        finally:
            signal.signal = original


_lock = threading.Lock()


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def live_jobs(names: list[str]) -> list[str]:
    """Ids of the queued or running Slurm jobs with these names."""
    if not names or shutil.which("squeue") is None:
        return []
    return _run("squeue", "-h", "-o", "%i", "--name", ",".join(names)).split()


def cancel_jobs(names: list[str]) -> bool:
    """``scancel`` every job with these names; whether there were any."""
    live = live_jobs(names)
    if live:
        _run("scancel", *live)
    return bool(live)
