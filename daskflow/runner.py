"""Execute a compiled flow: the only module that talks to a ``Client``.

A run goes: resolve ``cluster=`` into a backend (:func:`open_backend`),
compile the first stage and submit it with **one** ``Client.get`` call
(one ``update_graph`` on the scheduler), then, only if the flow maps over
results whose length is known at run time, wait for those lengths (tiny
integers, the only values pulled before the end) and submit the next stages
with the earlier keys as dependencies.

The driver holds futures only for what it still needs: the graph's sinks
(every task leads to one, so they tell when the run is done), the keys that
deferred stages depend on, and the flow's returned keys.  Intermediate
results are released by Dask as usual.

At the end one ``Client.run`` pops the result-free state summaries from the
workers' registries, the returned keys are gathered, and every future is
released.  ``cluster="sync"`` runs the same stages with ``dask.get`` in this
process.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import weakref
from collections.abc import Iterator
from typing import Any

import dask
from dask._task_spec import DataNode, Task

from daskflow import config
from daskflow.exceptions import ClusterError
from daskflow.graph import Compiler
from daskflow.states import State
from daskflow.taskrun import LOG_TOPIC, pop_run_states

logger = logging.getLogger("daskflow.run")


# -- backends ------------------------------------------------------------------


class SyncBackend:
    """Runs stages in this process with Dask's synchronous scheduler."""

    description = "sync (in-process)"

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}

    def run_stages(self, compiler: Compiler, keep: Any) -> None:
        while True:
            dsk = compiler.stage()
            if not dsk:
                break
            needed = set().union(*(t.dependencies for t in dsk.values())) - dsk.keys()
            graph: dict[Any, Any] = {k: DataNode(k, self.values[k]) for k in needed}
            graph.update(dsk)
            keys = list(dsk)
            self.values.update(zip(keys, dask.get(graph, keys)))
            for key in compiler.length_keys:
                if key in dsk:
                    compiler.set_length(key, self.values[key])
            if compiler.finished:
                break

    def scatter(self, objects: list[Any], broadcast: bool) -> list[Any]:
        return []  # in process, nothing to move

    def pop_states(self, run_id: str) -> dict[Any, State]:
        return pop_run_states(run_id)

    def gather(self, keys: list[Any]) -> dict[Any, State]:
        return {k: self.values[k] for k in keys if k in self.values}

    def errors(self) -> dict[Any, BaseException]:
        return {}

    def cancel(self, run_id: str) -> list[str]:
        from daskflow.resources import finish_run_now

        return finish_run_now(run_id)

    def release(self) -> None:
        self.values.clear()


class DistributedBackend:
    """Runs stages on a ``distributed.Client``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.futures: dict[Any, Any] = {}
        self.scattered: list[Any] = []
        self.sinks: set[Any] = set()
        self.description = _describe_client(client)
        _subscribe_logs(client)

    def scatter(self, objects: list[Any], broadcast: bool) -> list[Any]:
        """Scatter objects once for this run; their keys stay held until release()."""
        self.scattered = self.client.scatter(objects, hash=False, broadcast=broadcast)
        return [f.key for f in self.scattered]

    def submit(self, dsk: dict[Any, Task], keep: set[Any],
               resources: dict[Any, dict[str, float]] | None = None) -> None:
        deps: set[Any] = set()
        for t in dsk.values():
            deps.update(t.dependencies)
        self.sinks -= deps
        self.sinks.update(k for k in dsk if k not in deps)
        want = self.sinks | keep
        if dsk:
            new = [k for k in want if k in dsk]
            annotation = None
            if resources and any(k in resources for k in dsk):
                from daskflow.taskrun import ResourcesByKey

                annotation = ResourcesByKey({k: resources[k] for k in dsk if k in resources})
            self.futures.update(zip(new, self.client.get(dsk, new, sync=False,
                                                         resources=annotation)))
        for key in [k for k in self.futures if k not in want]:
            self.futures.pop(key).release()

    def wait(self, futures: list[Any], return_when: str = "ALL_COMPLETED") -> Any:
        """``distributed.wait`` through this backend's client, not the default one."""
        from distributed.client import _wait

        return self.client.sync(_wait, futures, timeout=None, return_when=return_when)

    def run_stages(self, compiler: Compiler, keep: Any) -> None:
        dsk = compiler.stage()
        self.submit(dsk, keep(), compiler.resources)
        pending = {k: self.futures[k] for k in compiler.length_keys if k in dsk}
        while pending:
            done, _ = self.wait(list(pending.values()), return_when="FIRST_COMPLETED")
            for fut in done:
                pending.pop(fut.key)
                self.sinks.discard(fut.key)
                compiler.set_length(fut.key, _length_result(fut))
            dsk = compiler.stage()
            self.submit(dsk, keep() | set(pending), compiler.resources)
            pending.update({k: self.futures[k] for k in compiler.length_keys if k in dsk})
        self.wait(list(self.futures.values()))

    def pop_states(self, run_id: str) -> dict[Any, State]:
        merged: dict[Any, State] = {}
        for states in self.client.run(pop_run_states, run_id).values():
            for key, state in states.items():
                old = merged.get(key)
                if old is None or (state.end or 0) >= (old.end or 0):
                    merged[key] = state
        return merged

    def gather(self, keys: list[Any]) -> dict[Any, State]:
        futs = {k: self.futures[k] for k in keys if k in self.futures}
        return self.client.gather(futs, errors="skip")

    def errors(self) -> dict[Any, BaseException]:
        return {k: f.exception() for k, f in self.futures.items() if f.status == "error"}

    def cancel(self, run_id: str) -> list[str]:
        """Cancel the run's futures, then end the resources it had set up."""
        from daskflow.resources import finish_run

        if self.futures:
            self.client.cancel(list(self.futures.values()))
        return [k for done in self.client.run(finish_run, run_id).values() for k in done]

    def release(self) -> None:
        for fut in [*self.futures.values(), *self.scattered]:
            fut.release()
        self.futures.clear()
        self.scattered = []


def _length_result(fut: Any) -> tuple[int, str]:
    try:
        return fut.result()
    except Exception as err:  # a crashed length task: the map cannot expand
        return -1, f"the length of the mapped result could not be computed: {err!r}"


# -- cluster= ------------------------------------------------------------------


def check_cluster(cluster: Any) -> None:
    """Reject a ``cluster=`` value that can never work, before anything starts."""
    if cluster is None or isinstance(cluster, str) or hasattr(cluster, "__daskflow_open__"):
        return
    try:
        from distributed import Client
        from distributed.deploy import Cluster
    except ImportError as err:  # pragma: no cover - distributed is a dependency
        raise ClusterError("cluster= needs distributed: pip install 'dask[distributed]'") from err
    if isinstance(cluster, (Client, Cluster)):
        return
    raise ClusterError(
        f"cluster={cluster!r} is not something daskflow can run on: pass None (a "
        "temporary LocalCluster), 'sync', a scheduler address such as "
        "'tcp://10.0.0.5:8786', a distributed.Client or Cluster, or a "
        "df.clusters spec"
    )


def _looks_like_address(text: str) -> bool:
    return "://" in text or (":" in text and text.rsplit(":", 1)[1].isdigit())


@contextlib.contextmanager
def open_backend(cluster: Any) -> Iterator[Any]:
    """Yield a backend for ``cluster=``; close only what this call started."""
    check_cluster(cluster)
    if cluster == "sync":
        yield SyncBackend()
        return
    from distributed import Client
    from distributed.deploy import Cluster

    if isinstance(cluster, Client):
        yield DistributedBackend(cluster)
    elif isinstance(cluster, Cluster):
        with Client(cluster, set_as_default=False) as client:
            yield DistributedBackend(client)
    elif hasattr(cluster, "__daskflow_open__"):
        with cluster.__daskflow_open__() as client:
            yield DistributedBackend(client)
    elif isinstance(cluster, str):
        if not _looks_like_address(cluster):
            from daskflow.clusters import from_profile

            with from_profile(cluster).__daskflow_open__() as client:
                yield DistributedBackend(client)
        else:
            from daskflow.clusters import Address

            with Address(cluster) as client:
                yield DistributedBackend(client)
    else:
        client = _default_client()
        if client is not None:
            yield DistributedBackend(client)
        else:
            with _temporary_local_cluster() as client:
                yield DistributedBackend(client)


def _default_client() -> Any:
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def probe(address: str, timeout: float) -> None:
    """Fail fast, with the address in the message, if nothing listens there."""
    import socket

    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    scheme, loc = parse_address(address)
    if scheme not in ("tcp", "tls"):
        return
    host, port = parse_host_port(loc)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise ClusterError(
            f"could not connect to the Dask scheduler at {address!r}: {err}; check that "
            "it is running and reachable from here") from None


@contextlib.contextmanager
def _temporary_local_cluster() -> Iterator[Any]:
    from daskflow.clusters import Local

    kwargs = {k.replace("-", "_"): v for k, v in config.get("local").items()
              if v is not None or k == "dashboard-address"}
    with Local(**kwargs) as client:
        yield client


def _describe_client(client: Any) -> str:
    cluster = getattr(client, "cluster", None)
    name = type(cluster).__name__ if cluster is not None else "scheduler"
    link = getattr(client, "dashboard_link", None)
    return f"{name} at {client.scheduler.address}" + (f" (dashboard {link})" if link else "")


# -- logs -----------------------------------------------------------------------

_subscribed: weakref.WeakSet = weakref.WeakSet()


def _on_log_event(event: tuple[float, dict]) -> None:
    _, msg = event
    logging.getLogger("daskflow.task").handle(logging.makeLogRecord(msg))


def _subscribe_logs(client: Any) -> None:
    """Re-emit task log records forwarded by workers on the driver, once per client."""
    if client not in _subscribed and not getattr(client, "asynchronous", False):
        client.subscribe_topic(LOG_TOPIC, _on_log_event)
        _subscribed.add(client)


def setup_logging() -> None:
    """Set daskflow's log level unless set already, and a console handler if none."""
    root = logging.getLogger("daskflow")
    if root.level == logging.NOTSET:
        root.setLevel(str(config.get("logging.level")).upper())
    if config.get("logging.console") and not root.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            config.get("logging.format"), datefmt="%H:%M:%S",
            defaults={"daskflow_task": "daskflow"}))
        root.addHandler(handler)


def flow_logger(flow_name: str, run_id: str) -> logging.LoggerAdapter:
    return logging.LoggerAdapter(logger, {"daskflow_task": f"flow {flow_name}",
                                          "daskflow_run": run_id})


def now() -> float:
    return time.time()
