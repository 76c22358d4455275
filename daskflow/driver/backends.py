"""Backends: where a run's stages go.

:class:`Backend` is what the engine asks of one; :class:`DistributedBackend`
runs stages on a ``distributed.Client`` (one ``Client.get`` per stage, waits
in bounded slices, a scheduler that stops answering is a ``ClusterError``)
and :class:`SyncBackend` runs them in this process with ``dask.get``
(``cluster="sync"``).  These are the only classes of the driver that talk
to a ``Client``; :mod:`.connect` opens the client for ``cluster=``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pickle
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import cloudpickle
import dask
from dask.task_spec import DataNode, Task

from daskflow import config
from daskflow.compile.tasks import calls_in
from daskflow.core.states import State
from daskflow.define.build import no_builder
from daskflow.driver.limits import register as register_limits
from daskflow.events import monitor
from daskflow.events.serialize import register_serialization
from daskflow.exceptions import ClusterError, FlowDefinitionError, FlowRunError, WaitTimeout
from daskflow.ui.report import dashboard_base
from daskflow.ui.web import PAGES
from daskflow.wire import ResourcesByKey
from daskflow.worker.cleanup import finish_run, finish_run_now


class Backend(Protocol):
    """What the engine asks of where a run goes."""

    description: str  # where it runs, for people: "LocalCluster at tcp://... (dashboard ...)"
    dashboard: str | None
    pages: str | None  # the root of daskflow's run pages on its dashboard, if mounted
    scheduler_id: str | None  # the Dask scheduler's id (the runs page of its dashboard)
    owner: str | None  # the client id task states are sent to; None in process
    in_process: bool  # tasks run in this process (nothing is pickled)
    target: Any  # a cluster= value that reaches it again: "sync" or the Client

    def bind(self, check: Callable[[], None], name: str, run_id: str, log: Any) -> None: ...
    def threads(self) -> int: ...
    def register_limits(self, limits: tuple[tuple[str, int], ...]) -> None: ...
    def scatter(self, objects: list[Any], broadcast: bool) -> list[Any]: ...
    def scatter_named(self, key: str, value: Any) -> None: ...
    def submit(self, dsk: dict[Any, Task], keep: set[Any],
               resources: dict[Any, dict[str, float]] | None = None) -> None: ...
    def wait_lengths(self, keys: list[Any],
                     deadline: float | None = None) -> dict[Any, tuple[int, str]]: ...
    def wait_all(self) -> None: ...
    def check_modules(self, tasks: Sequence[Any]) -> None: ...
    def wait_keys(self, keys: list[Any], timeout: float | None, first: bool) -> set[Any]: ...
    def as_completed(self, keys: list[Any], timeout: float | None) -> Iterator[Any]: ...
    def gather(self, keys: list[Any]) -> dict[Any, State]: ...
    def errors(self) -> dict[Any, BaseException]: ...
    def cancel(self, run_id: str) -> list[str]: ...
    def release(self) -> None: ...


def _never() -> None:
    """The cancel check of a backend that serves no run yet."""


class SyncBackend:
    """Runs stages in this process with Dask's synchronous scheduler."""

    description = "sync (in-process)"
    dashboard: str | None = None
    pages: str | None = None
    scheduler_id: str | None = None
    owner: str | None = None
    in_process = True
    target: Any = "sync"

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.check: Callable[[], None] = _never

    def bind(self, check: Callable[[], None], name: str, run_id: str, log: Any) -> None:
        self.check = check

    def threads(self) -> int:
        """Tasks run one at a time in process."""
        return 1

    def register_limits(self, limits: tuple[tuple[str, int], ...]) -> None:
        """Tasks run one at a time in process: every limit holds."""

    def submit(self, dsk: dict[Any, Task], keep: set[Any],
               resources: dict[Any, dict[str, float]] | None = None) -> None:
        if not dsk:
            return
        needed = set().union(*(t.dependencies for t in dsk.values())) - dsk.keys()
        graph: dict[Any, Any] = {k: DataNode(k, self.values[k]) for k in needed}
        graph.update(dsk)
        keys = list(dsk)
        check = self.check

        def pretask(key: Any, dsk: Any, state: Any) -> None:
            check()  # (and between the tasks inside a fused one: RunInfo.check)

        with no_builder():  # a task run at a wait is not part of the body's build
            self.values.update(zip(keys, dask.get(graph, keys, callbacks=[
                (None, None, pretask, None, None)])))

    def wait_lengths(self, keys: list[Any],
                     deadline: float | None = None) -> dict[Any, tuple[int, str]]:
        return {k: self.values[k] for k in keys}

    def wait_all(self) -> None:
        pass

    def check_modules(self, tasks: Sequence[Any]) -> None:
        """In process, every module is there."""

    def wait_keys(self, keys: list[Any], timeout: float | None, first: bool) -> set[Any]:
        return {k for k in keys if k in self.values}  # a stage ran whole when submitted

    def as_completed(self, keys: list[Any], timeout: float | None) -> Iterator[Any]:
        yield from keys

    def scatter(self, objects: list[Any], broadcast: bool) -> list[Any]:
        return []  # in process, nothing to move

    def scatter_named(self, key: str, value: Any) -> None:
        raise AssertionError("in process, parameters travel inline")

    def gather(self, keys: list[Any]) -> dict[Any, State]:
        return {k: self.values[k] for k in keys if k in self.values}

    def errors(self) -> dict[Any, BaseException]:
        return {}

    def cancel(self, run_id: str) -> list[str]:
        return finish_run_now(run_id)

    def release(self) -> None:
        self.values.clear()


class DistributedBackend:
    """Runs stages on a ``distributed.Client``."""

    in_process = False

    def __init__(self, client: Any) -> None:
        register_serialization()
        _connected(client)
        self.client = client
        self.target = client
        self.owner = client.id
        self.address = client.scheduler.address
        self.futures: dict[Any, Any] = {}
        self.scattered: list[Any] = []
        self.sinks: set[Any] = set()
        self.lost = False  # the scheduler is gone: talk to it no more
        self.description, self.dashboard, self.pages = _describe_client(client)
        self.scheduler_id = (client.scheduler_info() or {}).get("id")
        self.check: Callable[[], None] = _never
        self.span: tuple[str, str] | None = None  # (flow name, run id) of the run served
        self.log: Any = logging.getLogger("daskflow")
        self.timeout = config.seconds_setting("run.scheduler-timeout")
        self._last_answer = time.monotonic()
        self._ping: Any = None
        self._no_workers_since: float | None = None
        self._said_no_workers = False
        monitor.attach(client)

    def bind(self, check: Callable[[], None], name: str, run_id: str, log: Any) -> None:
        """Serve one run: ``check`` raises once it is cancelled (called between
        waits); its tasks are one span named after ``name`` and ``run_id``."""
        self.check, self.span, self.log = check, (name, run_id), log

    def threads(self) -> int:
        """The worker threads of the cluster now (0 while it has no workers)."""
        return sum(self.client.nthreads().values())

    def register_limits(self, limits: tuple[tuple[str, int], ...]) -> None:
        """The run's tag limits as semaphores on the scheduler, before it is submitted."""
        register_limits(self.client, limits)

    def scatter(self, objects: list[Any], broadcast: bool) -> list[Any]:
        """Scatter objects once for this run; their keys stay held until release()."""
        futures = self.client.scatter(objects, hash=False, broadcast=broadcast)
        self.scattered.extend(futures)
        return [f.key for f in futures]

    def scatter_named(self, key: str, value: Any) -> None:
        """Put one value in worker memory under ``key``, held until release()."""
        self.scattered.extend(self.client.scatter({key: value}, hash=False).values())

    def submit(self, dsk: dict[Any, Task], keep: set[Any],
               resources: dict[Any, dict[str, float]] | None = None) -> None:
        deps: set[Any] = set()
        for t in dsk.values():
            deps.update(t.dependencies)
        futures = self.futures
        # A sink that finished, and that nothing kept needs, has told its
        # state already: let Dask release its result (a flow body that loops
        # over waits would otherwise keep every earlier result in memory).
        self.sinks = {k for k in self.sinks - deps
                      if k in keep or k not in futures or futures[k].status != "finished"}
        self.sinks.update(k for k in dsk if k not in deps)
        want = self.sinks | keep
        if dsk:
            new = [k for k in want if k in dsk]
            annotation = None
            if resources and any(k in resources for k in dsk):
                annotation = ResourcesByKey({k: resources[k] for k in dsk if k in resources})
            try:
                with self._span():
                    futures = self.client.get(dsk, new, sync=False, resources=annotation)
            except (TypeError, pickle.PicklingError, AttributeError) as err:
                raise _unpicklable_argument(dsk, err) from err
            self.futures.update(zip(new, futures))
        for key in [k for k in self.futures if k not in want]:
            self.futures.pop(key).release()

    def _span(self) -> Any:
        """The run's tasks are one span on the scheduler, named after the flow and
        the run, so the dashboard's span views show flows."""
        from distributed import span

        if self.span is None:
            return contextlib.nullcontext()
        return span(self.span[0], f"run {self.span[1]}")

    def wait_lengths(self, keys: list[Any],
                     deadline: float | None = None) -> dict[Any, tuple[int, str]]:
        futures = [self.futures[k] for k in keys]
        self._wait(futures, "FIRST_COMPLETED", deadline)
        out = {}
        for fut in futures:
            if fut.done():
                self.sinks.discard(fut.key)
                out[fut.key] = _length_result(fut)
        return out

    def wait_all(self) -> None:
        self._wait(list(self.futures.values()), "ALL_COMPLETED")

    def check_modules(self, tasks: Sequence[Any]) -> None:
        """Raise FlowDefinitionError, before anything is submitted, if the
        workers cannot import a module that tasks are sent by reference from
        (a worker that cannot unpickle what it is sent leaves the cluster,
        and the run would wait for workers).  Asked once per module and
        connection (one ``Client.run``)."""
        known = _importable.setdefault(self.client, (monitor.connection(self.client), set()))
        if known[0] is not monitor.connection(self.client):
            known = _importable[self.client] = (monitor.connection(self.client), set())
        wanted = {}
        for task in tasks:
            module = task.module_needed()
            if module is not None and module not in known[1]:
                wanted.setdefault(module, task)
        if not wanted:
            return
        answers = self.client.run(import_errors, sorted(wanted), on_error="return")
        for worker, errors in answers.items():
            if isinstance(errors, BaseException):
                continue  # a worker that could not answer: it will say so itself
            for module, error in errors.items():
                raise FlowDefinitionError(
                    f"task {wanted[module].name!r} is defined in module {module!r}, which the "
                    f"workers cannot import (worker {worker}: {error}); install it where the "
                    f"workers run, put its folder on their PYTHONPATH, or send it with "
                    f"client.upload_file('{module.replace('.', '/')}.py'); nothing of the run "
                    "was submitted")
        known[1].update(wanted)

    def _held(self, keys: list[Any]) -> list[Any]:
        missing = [k for k in keys if k not in self.futures]
        if missing:
            raise FlowRunError(f"the results of {missing[:3]} were released (nothing in the "
                               "flow body referenced them any more); keep the task's "
                               "reference to wait for it")
        return [self.futures[k] for k in keys]

    def wait_keys(self, keys: list[Any], timeout: float | None, first: bool) -> set[Any]:
        """Wait (at most ``timeout`` seconds) until the keys, or the first of
        them, are done; the keys that are."""
        futures = self._held(keys)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait(futures, "FIRST_COMPLETED" if first else "ALL_COMPLETED", deadline)
        return {f.key for f in futures if f.done()}

    def as_completed(self, keys: list[Any], timeout: float | None) -> Iterator[Any]:
        """The keys as their tasks end; WaitTimeout after ``timeout`` seconds."""
        from distributed import as_completed

        deadline = None if timeout is None else time.monotonic() + timeout
        with self.client.as_current():
            done = as_completed(self._held(keys))
        last_check = time.monotonic()
        while not done.is_empty():
            batch = done.next_batch(block=False)
            if batch:
                yield from (f.key for f in batch)
                continue
            self.check()
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise WaitTimeout(f"{done.count()} of {len(keys)} task runs had not ended "
                                  f"after {timeout:g}s (they go on running)")
            if now - last_check >= 0.5:
                self.check_scheduler()
                last_check = now
            time.sleep(0.01)

    def _wait(self, futures: list[Any], return_when: str, deadline: float | None = None) -> None:
        """``distributed.wait`` in slices; between them, check cancel and the
        scheduler; until ``deadline`` (a ``time.monotonic()``) at most."""
        from distributed import wait

        pending = [f for f in futures if not f.done()]
        while pending:
            self.check()
            span = _slice(len(pending))
            if deadline is not None:
                span = min(span, deadline - time.monotonic())
                if span <= 0:
                    break
            try:
                with self.client.as_current():
                    wait(pending, timeout=span, return_when=return_when)
            except (TimeoutError, asyncio.TimeoutError):
                self.check_scheduler()
                pending = [f for f in pending if not f.done()]
                continue
            except Exception:  # e.g. FuturesCancelledError: the connection was lost
                self.check_scheduler(after_wait=True, futures=pending)
                raise
            break
        self.check_scheduler(after_wait=True, futures=futures)

    def check_scheduler(self, after_wait: bool = False, futures: Sequence[Any] = ()) -> None:
        """Raise ClusterError if the scheduler is gone or has stopped answering."""
        status = self.client.status
        lost = status != "running" or any(f.status == "cancelled" for f in futures)
        if lost:
            self.lost = True
            raise ClusterError(
                f"lost the connection to the Dask scheduler at {self.address} while the run "
                f"was waiting on it (client {status}); the scheduler died or the network "
                "failed. The run's tasks are gone with it")
        if after_wait:
            return
        now = time.monotonic()
        ping = self._ping
        if ping is not None and ping.done():
            self._ping = None
            if ping.exception() is None:
                self._last_answer = now
                self._count_workers(ping.result(), now)
            elif isinstance(ping.exception(), OSError):
                self.lost = True
                raise ClusterError(f"the Dask scheduler at {self.address} cannot be reached: "
                                   f"{ping.exception()!r}") from ping.exception()
        silent = now - self._last_answer
        if silent > self.timeout:
            self.lost = True
            raise ClusterError(
                f"the Dask scheduler at {self.address} has not answered for {silent:.0f}s "
                "(it is stopped, hung or overloaded); raise daskflow.run.scheduler-timeout "
                f"(now {self.timeout:g}s) if it is only slow")
        if self._ping is None and silent >= min(5.0, self.timeout / 3):
            self._ping = asyncio.run_coroutine_threadsafe(
                asyncio.wait_for(self.client.scheduler.identity(n_workers=0), self.timeout),
                self.client.loop.asyncio_loop)

    def _count_workers(self, identity: dict, now: float) -> None:
        """Say once when the scheduler has had no worker for longer than the
        scheduler timeout: the run waits for workers (an adaptive cluster at
        zero scales up; a shared scheduler whose workers all left does not)."""
        if identity.get("n_workers", 1):
            self._no_workers_since = None
            return
        since = self._no_workers_since = self._no_workers_since or now
        if now - since >= self.timeout and not self._said_no_workers:
            self._said_no_workers = True
            self.log.warning(
                "the Dask scheduler at %s has had no workers for %.0fs: the run's tasks wait "
                "for workers to join (start some, or cancel the run)", self.address, now - since)

    def gather(self, keys: list[Any]) -> dict[Any, State]:
        futs = {k: self.futures[k] for k in keys if k in self.futures}
        return self.client.gather(futs, errors="skip")

    def errors(self) -> dict[Any, BaseException]:
        return {k: f.exception() for k, f in self.futures.items() if f.status == "error"}

    def cancel(self, run_id: str) -> list[str]:
        """Cancel the run's futures, then end the resources it had set up."""
        if self.lost:
            return []
        # Releasing the run's futures cancels what nobody else wants.  (Not
        # Client.cancel: distributed asserts, and drops our connection, when a
        # cancelled key has a dependent that no client holds.)
        self.release()
        answers = self.client.run(finish_run, run_id, on_error="return")
        return [k for done in answers.values() if isinstance(done, list) for k in done]

    def release(self) -> None:
        for fut in [*self.futures.values(), *self.scattered]:
            with contextlib.suppress(Exception):  # a lost scheduler: nothing to release
                fut.release()
        self.futures.clear()
        self.scattered = []
        # A ping still under way is left to finish (it is bounded by its own
        # timeout): cancelling it mid-connect would leak its socket.


_importable: weakref.WeakKeyDictionary[Any, tuple[Any, set[str]]] = weakref.WeakKeyDictionary()


def import_errors(modules: list[str]) -> dict[str, str]:
    """On a worker (``Client.run``): the modules it cannot import, with why."""
    errors = {}
    for module in modules:
        try:
            importlib.import_module(module)
        except BaseException as err:  # noqa: BLE001 - a module's import may raise anything
            errors[module] = f"{type(err).__name__}: {err}"
    return errors


def _slice(pending: int) -> float:
    """How long one wait slice lasts: short for few futures, longer for many
    (each slice re-arms a waiter per future)."""
    return min(5.0, max(0.5, pending / 4000))


def _length_result(fut: Any) -> tuple[int, str]:
    try:
        return fut.result()
    except Exception as err:  # a crashed length task: the map cannot expand
        return -1, f"the length of the mapped result could not be computed: {err!r}"


def _unpicklable_argument(dsk: dict[Any, Task], err: BaseException) -> BaseException:
    """Name the task and argument that made a graph unpicklable (else ``err``)."""
    for task in dsk.values():
        for call in calls_in(task):
            culprit = _unpicklable_value(call)
            if culprit is not None:
                return culprit
    return err


def _unpicklable_value(call: Any) -> BaseException | None:
    """The error naming the first argument of ``call`` that cannot be pickled."""
    for pos, value in [*enumerate(call.args), *call.kwargs.items()]:
        try:
            cloudpickle.dumps(value)
        except Exception as bad:
            what = f"argument {pos}" if isinstance(pos, int) else f"argument {pos!r}"
            return FlowDefinitionError(
                f"task {call.display_name!r}: {what} (a {type(value).__name__}) cannot be "
                f"sent to the workers: {bad}. Create such an object inside the task (or "
                "in a resource) and pass something picklable instead")
    return None


_descriptions: weakref.WeakKeyDictionary[Any, tuple[Any, str, str | None, str | None]] = (
    weakref.WeakKeyDictionary())


def _connected(client: Any) -> None:
    """Wait (bounded by ``daskflow.connect-timeout``) for a client that is
    reconnecting to its scheduler; a closed client, or one that does not get
    back in time, is a ClusterError before anything of the run is started."""
    status = client.status
    address = getattr(client.scheduler, "address", None) or "(unknown)"
    if status == "connecting":
        timeout = config.seconds_setting("connect-timeout")
        deadline = time.monotonic() + timeout
        while client.status == "connecting" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = client.status
        if status == "connecting":
            raise ClusterError(
                f"the client has been reconnecting to the Dask scheduler at "
                f"{address} for over {timeout:g}s "
                "(daskflow.connect-timeout): the scheduler is down or unreachable; nothing "
                "of the run was started")
    if status != "running":
        raise ClusterError(
            f"the client of the Dask scheduler at {address} is {status}: "
            "it lost its scheduler for good or was closed; open a new Client (or pass "
            "cluster='ADDRESS' to let daskflow connect); nothing of the run was started")


def dashboard_hint(cluster: Any) -> str:
    """For a scheduler in this process without bokeh, how to get its dashboard."""
    if cluster is None or getattr(cluster, "scheduler", None) is None:
        return ""  # a remote scheduler: what it has is not known here
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return "; it needs bokeh>=3.1: pip install 'daskflow[dashboard]'"
    return ""


def _describe_client(client: Any) -> tuple[str, str | None, str | None]:
    """('<cluster class> at <address> (dashboard <link>)', the link, the root
    of daskflow's run pages on that dashboard or None), once per connection
    (a scheduler restarted on the same address has a new dashboard)."""
    conn = monitor.connection(client)
    known = _descriptions.get(client)
    if known is None or known[0] is not conn:
        cluster = getattr(client, "cluster", None)
        name = type(cluster).__name__ if cluster is not None else "scheduler"
        link = getattr(client, "dashboard_link", None)
        text = f"{name} at {client.scheduler.address}" + (
            f" (dashboard {link}{dashboard_hint(cluster)})" if link else "")
        pages = _pages(client, link)
        known = _descriptions[client] = (conn, text, link, pages)
    return known[1], known[2], known[3]


def _pages(client: Any, link: str | None) -> str | None:
    """The root of daskflow's run pages on the scheduler's dashboard, when its
    HTTP server mounts them (``distributed.scheduler.http.routes`` lists
    ``daskflow.dashboard``): asked of the scheduler once per connection."""
    base = dashboard_base(link)
    if base is None:
        return None
    try:
        mounted = client.run_on_scheduler(runs_pages_mounted)
    except Exception:  # a scheduler that refuses to run functions: no link
        return None
    return f"{base}/{PAGES}" if mounted else None


def runs_pages_mounted(dask_scheduler: Any) -> bool:
    """On a scheduler: whether its HTTP server serves daskflow's run pages.
    Reads tornado's ``Application.wildcard_router.rules`` (each rule's
    ``matcher.regex``), pinned by ``test_the_dashboard_of_a_local_cluster_shows_its_runs``."""
    app = getattr(dask_scheduler, "http_application", None)
    rules = getattr(getattr(app, "wildcard_router", None), "rules", [])
    return any(f"/{PAGES}" in getattr(getattr(r.matcher, "regex", None), "pattern", "")
               for r in rules)
