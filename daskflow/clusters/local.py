"""``df.clusters.Local``: a temporary ``distributed.LocalCluster``."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import multiprocessing
import os
import sys
from typing import Any

import dask

from daskflow import config
from daskflow.clusters.base import MAIN_GUARD_HINT, ClusterSpec, Handle, close_client
from daskflow.clusters.records import process_identity
from daskflow.exceptions import ClusterError


class Local(ClusterSpec):
    """A temporary LocalCluster; keyword arguments go to ``LocalCluster``.

    >>> import daskflow as df
    >>> with df.clusters.Local(n_workers=1, processes=False) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3

    Its worker processes end with the process that started them (distributed
    watches the parent), so even a driver killed with SIGKILL leaves nothing.
    """

    kind = "local"

    def __init__(self, *, name: str | None = None, startup_timeout: float | str | None = None,
                 lease: float | str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, startup_timeout=startup_timeout, lease=lease)
        _check_keywords(kwargs)
        for key in ("n_workers", "threads_per_worker"):
            value = kwargs.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
                raise ClusterError(
                    f"Local({key}={value!r}): {key} must be a whole number >= 0 "
                    f"(for example {key}=2), or left out for distributed's default")
        self.kwargs = dict(kwargs)

    def _create(self, handle: Handle) -> tuple[Any, Any]:
        from distributed import Client, LocalCluster

        kwargs = {"dashboard_address": ":0", **self.kwargs}
        if multiprocessing.current_process().daemon and kwargs.get("processes", True):
            kwargs["processes"] = False  # a daemonic Dask worker cannot have child processes
        if handle.shared and kwargs.get("processes") is False:
            kwargs.setdefault("protocol", "tcp://")  # reachable from other processes
        if kwargs.get("processes", True):  # worker processes leave Ctrl-C to the driver
            preload = kwargs.get("preload") or []
            kwargs["preload"] = [*([preload] if isinstance(preload, str) else preload),
                                 "daskflow.clusters.worker_setup"]
        with dask.config.set(dashboard_routes()):
            cluster = LocalCluster(name=handle.name, **kwargs)
        try:
            client = Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
        return client, cluster

    def preflight(self) -> None:
        _refuse_in_spawned_main(self.kwargs)
        if self.kwargs.get("processes", True) and script_from_stdin():
            raise ClusterError(
                "this script was read from standard input (python - <<EOF ...), and worker "
                "processes start by importing the script again, which they cannot: save it "
                "to a file, or pass cluster='sync' or df.clusters.Local(processes=False)")

    def _destroy(self, handle: Handle, client: Any, cluster: Any) -> None:
        if client is not None:
            close_client(client)
        if cluster is not None:
            # A worker busy in a task exits only when killed, and a nanny waits
            # 80% of its close timeout (5 s by default) before killing it.
            # Nothing else will run on this cluster: give them 1 s.
            with contextlib.suppress(Exception), _quiet_kill():
                cluster.sync(_close_workers, cluster, 1.0)
            cluster.close()

    def record_extra(self, handle: Handle) -> dict[str, Any]:
        pids = sorted(set(handle.client.run(os.getpid).values()) - {os.getpid()})
        return {"processes": [process_identity(pid) for pid in pids]}

    def describe(self) -> str:
        return "LocalCluster"


def _check_keywords(kwargs: dict[str, Any]) -> None:
    """A misspelt LocalCluster argument fails here, before anything starts.

    ``LocalCluster`` passes the keywords it does not know to its workers (and
    nannies), so those are accepted too; anything else would only fail in the
    workers' start, behind distributed's tracebacks.
    """
    import inspect

    from distributed import LocalCluster, Nanny, Worker
    from distributed.core import Server
    from distributed.deploy.spec import SpecCluster

    if "worker_class" in kwargs:
        return  # a worker class of its own takes keywords of its own
    known: set[str] = set()
    for cls in (LocalCluster, SpecCluster, Worker, Nanny, Server):
        known.update(name for name, p in inspect.signature(cls.__init__).parameters.items()
                     if name != "self" and p.kind is not p.VAR_KEYWORD)
    unknown = sorted(set(kwargs) - known)
    if unknown:
        hints = [f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                 for k in unknown for close in [difflib.get_close_matches(k, known, n=1)]]
        raise ClusterError(
            f"Local(): unknown keyword(s) {', '.join(hints)}; Local takes name=, "
            "startup_timeout=, lease= and the keywords of distributed.LocalCluster (and of "
            "its workers, e.g. n_workers=, threads_per_worker=, processes=, memory_limit=)")


@contextlib.contextmanager
def _quiet_kill() -> Any:
    """Hide distributed's "Worker process still alive after ... killing" while
    daskflow ends a cluster it started: killing a busy worker is the point."""
    import logging

    nanny = logging.getLogger("distributed.nanny")

    def still_alive(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Worker process still alive after")

    nanny.addFilter(still_alive)
    try:
        yield
    finally:
        nanny.removeFilter(still_alive)


async def _close_workers(cluster: Any, timeout: float) -> None:
    await asyncio.gather(*(w.close(timeout=timeout) for w in list(cluster.workers.values())),
                         return_exceptions=True)



ROUTES = "distributed.scheduler.http.routes"
PAGES_MODULE = "daskflow.dashboard"  # its `routes`: the runs pages (see that module)


def dashboard_routes() -> dict[str, Any]:
    """The scheduler's HTTP routes with daskflow's runs pages added (the
    setting ``daskflow.ui.dashboard``), for the scheduler about to start."""
    routes = list(dask.config.get(ROUTES, default=[]) or [])
    if config.get("ui.dashboard") and PAGES_MODULE not in routes:
        routes.append(PAGES_MODULE)
    return {ROUTES: routes}


def script_from_stdin() -> bool:
    """Whether this process runs a script read from standard input (``python -``)."""
    main = sys.modules.get("__main__")
    return getattr(main, "__file__", None) == "<stdin>"


def _refuse_in_spawned_main(kwargs: dict[str, Any]) -> None:
    """A new worker process re-imports the user's script while it boots: a
    flow run there, at module level, would start processes while booting.

    ``_inheriting`` is multiprocessing's own flag for exactly that moment (it
    is what its "bootstrapping phase" error checks); tested by
    test_script_without_main_guard_gets_one_clear_line.
    """
    if kwargs.get("processes", True) and getattr(multiprocessing.current_process(),
                                                 "_inheriting", False):
        # This process is a worker that cannot boot: one line, and exit; the
        # driver's own error says the same.
        raise SystemExit(f"daskflow: {MAIN_GUARD_HINT}")
