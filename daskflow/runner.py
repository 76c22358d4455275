"""Execute a compiled flow: the only module that talks to a ``Client``.

A run (:class:`Engine`) goes: resolve ``cluster=`` into a backend
(:func:`open_backend`), compile the first stage and submit it with **one**
``Client.get`` call (one ``update_graph`` on the scheduler), then, only if
the flow maps over results whose length is known at run time, wait for
those lengths (tiny integers, the only values pulled before the end) and
submit the next stages with the earlier keys as dependencies.  The same
stage loop drives both backends: :class:`DistributedBackend` and, for
``cluster="sync"``, :class:`SyncBackend` (``dask.get`` in this process).

Where states live: each task run's result-free state reaches the driver as
it ends, through the scheduler (:mod:`daskflow.events`); the run's
:class:`~daskflow.flowrun.FlowRun` shows them live.  At the end only the
flow's returned keys are gathered; nothing is asked of the workers.

The driver holds futures only for what it still needs: the graph's sinks
(every task leads to one, so they tell when the run is done), the keys that
deferred stages depend on, the flow's returned keys and the run's
parameters key.  Intermediate results are released by Dask as usual.

Every wait is bounded: the driver waits in slices, and between slices
checks that the run was not cancelled and that the scheduler still answers
(``daskflow.run.scheduler-timeout``); a closed connection fails the run at
once with ``ClusterError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import dask
from dask.task_spec import DataNode, Task

from daskflow import config, events
from daskflow.exceptions import ClusterError, FlowDefinitionError, FlowRunError
from daskflow.flowrun import FlowRun, flow_state
from daskflow.graph import Compiler, as_keys, new_token
from daskflow.specs import INLINE_PARAMETERS, RunInfo
from daskflow.states import State, StateType

logger = logging.getLogger("daskflow.run")


class RunCancelled(FlowRunError):
    """Raised inside the engine when ``FlowRun.cancel()`` was called."""


# -- backends ------------------------------------------------------------------


class SyncBackend:
    """Runs stages in this process with Dask's synchronous scheduler."""

    description = "sync (in-process)"
    dashboard: str | None = None
    owner = None

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.engine: Engine | None = None

    def submit(self, dsk: dict[Any, Task], keep: set[Any],
               resources: dict[Any, dict[str, float]] | None = None) -> None:
        if not dsk:
            return
        needed = set().union(*(t.dependencies for t in dsk.values())) - dsk.keys()
        graph: dict[Any, Any] = {k: DataNode(k, self.values[k]) for k in needed}
        graph.update(dsk)
        keys = list(dsk)
        check = self.engine.check if self.engine is not None else (lambda: None)

        def pretask(key: Any, dsk: Any, state: Any) -> None:
            check()

        from daskflow.taskrun import _fused

        _fused.check = check  # and between the tasks inside a fused one
        try:
            self.values.update(zip(keys, dask.get(graph, keys, callbacks=[
                (None, None, pretask, None, None)])))
        finally:
            _fused.check = None

    def wait_lengths(self, keys: list[Any]) -> dict[Any, tuple[int, str]]:
        return {k: self.values[k] for k in keys}

    def wait_all(self) -> None:
        pass

    def scatter(self, objects: list[Any], broadcast: bool) -> list[Any]:
        return []  # in process, nothing to move

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
        from daskflow.states import register_serialization

        register_serialization()
        _connected(client)
        self.client = client
        self.owner = client.id
        self.address = client.scheduler.address
        self.futures: dict[Any, Any] = {}
        self.scattered: list[Any] = []
        self.sinks: set[Any] = set()
        self.lost = False  # the scheduler is gone: talk to it no more
        self.description, self.dashboard = _describe_client(client)
        self.engine: Engine | None = None
        self.timeout = config.seconds_setting("run.scheduler-timeout")
        self._last_answer = time.monotonic()
        self._ping: Any = None
        self._no_workers_since: float | None = None
        self._said_no_workers = False
        events.attach(client)

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
        self.sinks -= deps
        self.sinks.update(k for k in dsk if k not in deps)
        want = self.sinks | keep
        if dsk:
            new = [k for k in want if k in dsk]
            annotation = None
            if resources and any(k in resources for k in dsk):
                from daskflow.taskrun import ResourcesByKey

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

        engine = self.engine
        if engine is None:
            return contextlib.nullcontext()
        return span(engine.name, f"run {engine.run_id}")

    def wait_lengths(self, keys: list[Any]) -> dict[Any, tuple[int, str]]:
        futures = [self.futures[k] for k in keys]
        self._wait(futures, "FIRST_COMPLETED")
        out = {}
        for fut in futures:
            if fut.done():
                self.sinks.discard(fut.key)
                out[fut.key] = _length_result(fut)
        return out

    def wait_all(self) -> None:
        self._wait(list(self.futures.values()), "ALL_COMPLETED")

    def _wait(self, futures: list[Any], return_when: str) -> None:
        """``distributed.wait`` in slices; between them, check cancel and the scheduler."""
        from distributed import wait

        pending = [f for f in futures if not f.done()]
        while pending:
            if self.engine is not None:
                self.engine.check()
            try:
                with self.client.as_current():
                    wait(pending, timeout=_slice(len(pending)), return_when=return_when)
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
            log = self.engine.log if self.engine is not None else logging.getLogger("daskflow")
            log.warning(
                "the Dask scheduler at %s has had no workers for %.0fs: the run's tasks wait "
                "for workers to join (start some, or cancel the run)", self.address, now - since)

    def gather(self, keys: list[Any]) -> dict[Any, State]:
        futs = {k: self.futures[k] for k in keys if k in self.futures}
        return self.client.gather(futs, errors="skip")

    def errors(self) -> dict[Any, BaseException]:
        return {k: f.exception() for k, f in self.futures.items() if f.status == "error"}

    def cancel(self, run_id: str) -> list[str]:
        """Cancel the run's futures, then end the resources it had set up."""
        from daskflow.resources import finish_run

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
    import cloudpickle

    from daskflow.graph import calls_in

    for task in dsk.values():
        for call in calls_in(task):
            culprit = _unpicklable_value(call, cloudpickle)
            if culprit is not None:
                return culprit
    return err


def _unpicklable_value(call: Any, cloudpickle: Any) -> BaseException | None:
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


# -- the engine ------------------------------------------------------------------


class Engine:
    """One flow run, from its build to its final state."""

    def __init__(self, name: str, params: dict[str, Any], builder: Any, returned: Any,
                 cluster: Any, scatter: bool = True, flow: Any = None,
                 limits: tuple[tuple[str, int], ...] = (), results: tuple | None = None,
                 plan: Any = None, fuse: bool | None = None) -> None:
        self.name = name
        self.flow = flow
        self.params = params
        self.builder = builder
        self.returned = returned
        self.returned_nodes = _returned_nodes(returned)
        self.cluster = cluster
        self.scatter = scatter
        self.limits = limits
        self.results, self.plan = results, plan
        self.fuse = fuse
        self.run_id = new_token()
        self.flow_run = FlowRun(name, self.run_id, params)
        self.compiler: Compiler | None = None
        self.log = flow_logger(name, self.run_id)

    # -- how it is started ---------------------------------------------------------
    def run(self) -> FlowRun:
        """Run in this thread; KeyboardInterrupt and cluster errors propagate."""
        self.execute()
        return self.flow_run

    def submit(self) -> FlowRun:
        """Run in a background thread and return the live FlowRun at once."""
        thread = threading.Thread(target=self._execute_quietly, daemon=True,
                                  name=f"daskflow-run-{self.name}-{self.run_id}")
        self.flow_run._thread = thread
        thread.start()
        return self.flow_run

    def _execute_quietly(self) -> None:
        try:
            self.execute()
        except BaseException:  # already recorded on the FlowRun by execute()
            pass

    def check(self) -> None:
        """Raise RunCancelled if the run was cancelled (called between waits)."""
        if self.flow_run._cancel.is_set():
            raise RunCancelled(f"flow run {self.name!r} ({self.run_id}) was cancelled")

    # -- the run ---------------------------------------------------------------------
    def execute(self) -> None:
        setup_logging()
        monitor = events.monitor(self.run_id)
        start = now()
        keeper = _RunLogs(self.run_id, self.flow_run.logs)
        logging.getLogger("daskflow").addHandler(keeper)
        try:
            with open_backend(self.cluster) as backend:
                backend.engine = self
                self.flow_run.cluster = backend.description
                self.flow_run.dashboard_link = backend.dashboard
                try:
                    self._run_on(backend, monitor, start)
                finally:
                    backend.release()
        except BaseException as err:
            if not self.flow_run._ended:
                self._end_without_value(StateType.CRASHED, err, monitor, start)
            raise
        finally:
            events.forget(self.run_id)
            from daskflow.hooks import run_flow_hooks

            try:
                run_flow_hooks(self.flow, self.flow_run)
            finally:
                logging.getLogger("daskflow").removeHandler(keeper)
                self.flow_run._settle()

    def _run_on(self, backend: Any, monitor: events.RunMonitor, start: float) -> None:
        run = self._run_info(backend)
        if self.limits and not isinstance(backend, SyncBackend):
            from daskflow import concurrency

            concurrency.register(backend.client, self.limits)
        if self.plan is not None:
            self.plan.check(self.builder.nodes, self.returned_nodes)
        compiler = self.compiler = Compiler(self.builder.nodes, run, token=self.run_id)
        compiler.plan = self.plan
        compiler.fuse = bool(config.get("optimization.fuse")) if self.fuse is None else self.fuse
        compiler.max_fused = int(config.get("optimization.max-fused"))
        compiler.keep_real = {n.index for n in self.returned_nodes}
        compiler.check_pickle = not isinstance(backend, SyncBackend)
        self.flow_run._live = lambda: self._labelled(
            monitor.snapshot(), lambda key: State(StateType.PENDING))
        from daskflow.progress import LiveGroups

        self.flow_run._progress = LiveGroups(compiler.state_keys, compiler.synthetic,
                                             monitor.changes, lambda key: _label(compiler, key))
        self.flow_run.state = State(StateType.RUNNING, start=start)
        self.log.info("run %s started on %s (%d nodes)", self.run_id, backend.description,
                      len(self.builder.nodes))
        try:
            if self.scatter:
                self._scatter(backend)
            self._stages(backend, run)
        except BaseException as err:
            self._interrupted(backend, err, monitor, start)
            if isinstance(err, RunCancelled):
                return
            raise
        returned_keys = [k for n in self.returned_nodes
                         for k in as_keys(compiler.keys.get(n.index))]
        gathered = backend.gather(returned_keys)
        self._assemble(monitor.snapshot(), gathered, backend.errors(), start)

    def _run_info(self, backend: Any) -> RunInfo:
        params = _context_parameters(self.params)
        prints = bool(config.get("logging.log-prints"))
        if backend.owner is None or len(pickle.dumps(params)) <= INLINE_PARAMETERS:
            return RunInfo(self.name, self.run_id, backend.owner, params, limits=self.limits,
                           dashboard=backend.dashboard, results=self.results,
                           log_prints=prints)
        self._params = (f"params-{self.name}-{self.run_id}", params)
        return RunInfo(self.name, self.run_id, backend.owner, None, self._params[0],
                       limits=self.limits, dashboard=backend.dashboard, results=self.results,
                       log_prints=prints)

    def _stages(self, backend: Any, run: RunInfo) -> None:
        """The stage loop, shared by both backends."""
        compiler = self.compiler
        assert compiler is not None
        returned_nodes = self.returned_nodes
        if run.params_key is not None:  # in worker memory before any task asks for it
            backend.scatter_named(run.params_key, self._params[1])

        def keep() -> set[Any]:
            kept = compiler.needed_later()
            for node in returned_nodes:
                kept.update(as_keys(compiler.keys.get(node.index)))
            return kept

        dsk = compiler.stage()
        backend.submit(dsk, keep(), compiler.resources)
        pending = [k for k in compiler.length_keys if k in dsk]
        while pending:
            for key, length in backend.wait_lengths(pending).items():
                compiler.set_length(key, length)
                pending.remove(key)
            dsk = compiler.stage()
            backend.submit(dsk, keep() | set(pending), compiler.resources)
            pending += [k for k in compiler.length_keys if k in dsk]
        backend.wait_all()

    def _scatter(self, backend: Any) -> None:
        """Scatter the large constants of the build and point the compiler at their keys."""
        from daskflow import scatter

        found = scatter.plan(self.builder.nodes, config.bytes_setting("scatter.threshold"))
        if not found:
            return
        keys = backend.scatter(found.objects, bool(config.get("scatter.broadcast")))
        if keys:
            assert self.compiler is not None
            self.compiler.scattered = found.keys_by_id(keys)
            self.log.debug("scattered %s", found.describe())

    def _interrupted(self, backend: Any, err: BaseException, monitor: events.RunMonitor,
                     start: float) -> None:
        """Cancel what runs, end the resources the run set up, record the end."""
        ended: list[str] = []
        try:
            ended = backend.cancel(self.run_id)
        except Exception as cleanup_error:  # never hide the real error behind this one
            self.log.warning("could not cancel run %s cleanly: %r", self.run_id, cleanup_error)
        if isinstance(err, RunCancelled):
            what, state_type = "cancelled", StateType.CANCELLED
        elif isinstance(err, ClusterError):
            what, state_type = "lost its scheduler", StateType.CRASHED
        elif isinstance(err, Exception):  # e.g. a definition error found while submitting
            what, state_type = f"failed with {type(err).__name__}", StateType.FAILED
        else:
            what, state_type = "interrupted", StateType.CANCELLED
        self.log.log(logging.ERROR if state_type is StateType.FAILED else logging.WARNING,
                     "run %s %s; its tasks were cancelled and %d open resource(s) cleaned up",
                     self.run_id, what, len(ended))
        self._end_without_value(state_type, err, monitor, start)

    def _end_without_value(self, state_type: StateType, err: BaseException,
                           monitor: events.RunMonitor, start: float) -> None:
        final = State(state_type, message=f"{type(err).__name__}: {err}", exception=err,
                      start=start)
        states = self._labelled(monitor.snapshot(), lambda key: State(StateType.CANCELLED))
        error = err if isinstance(err, Exception) else FlowRunError(final.message)
        self.flow_run._finish(final, states, None, error)

    def _labelled(self, raw: dict[Any, State], fill: Any) -> dict[str, State]:
        """States by task run name; ``fill(key)`` stands for a task without one."""
        compiler = self.compiler
        if compiler is None:
            return {}
        out: dict[str, State] = {}
        for key in list(compiler.state_keys):
            label = _label(compiler, key)
            state = raw.get(key) or compiler.synthetic.get(key) or fill(key)
            state.task_name = label
            state.map_index = key[1] if isinstance(key, tuple) else None
            out[label] = state
        return out

    def _assemble(self, raw: dict[Any, State], gathered: dict[Any, State],
                  errors: dict[Any, BaseException], start: float) -> None:
        compiler = self.compiler
        assert compiler is not None
        gathered = {k: s for k, s in gathered.items() if isinstance(s, State)}
        for key, state in gathered.items():  # a returned result that could not travel
            if state.is_failed() and not (raw.get(key) and raw[key].is_failed()):
                raw[key] = state.summary()
        crash = next(iter(errors.values()), None)
        missing: list[State] = []

        def crashed(key: Any) -> State:
            state = State(StateType.CRASHED, exception=crash,
                          message=f"no state was recorded: {crash!r}" if crash else
                          "no state was recorded (the worker running it was lost)")
            missing.append(state)
            return state

        states = self._labelled(raw, crashed)
        reference = [states[_label(compiler, k)]
                     for n in _reference_nodes(self.builder.nodes, self.returned_nodes)
                     for k in as_keys(compiler.keys.get(n.index))]
        final = flow_state(reference, missing, list(states.values()))
        final.start = start
        final.end = now()
        value, error = None, None
        if final.is_completed():
            value = _substitute(self.returned, compiler, gathered)
        else:
            error = final.exception
            if error is None:
                error = FlowRunError(f"flow run {self.name!r} {final.name}: {final.message}")
        self.flow_run._finish(final, states, value, error)
        self.log.log(logging.INFO if final.is_completed() else logging.ERROR, "%s",
                     self.flow_run.summary().splitlines()[0])


def _label(compiler: Compiler, key: Any) -> str:
    if isinstance(key, tuple):
        return f"{compiler.name_of(key[0])}[{key[1]}]"
    return compiler.name_of(key)


def _returned_nodes(returned: Any) -> list[Any]:
    from daskflow.build import Ref

    found: dict[int, Any] = {}

    def walk(v: Any) -> None:
        if isinstance(v, Ref):
            found[v.node.index] = v.node
        elif isinstance(v, (list, tuple, set, frozenset)):
            for x in v:
                walk(x)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)

    walk(returned)
    return list(found.values())


def _reference_nodes(nodes: list[Any], returned: list[Any]) -> list[Any]:
    """The nodes whose states decide the flow's state.

    The returned nodes if the flow returns refs; otherwise the terminal task
    nodes, where a terminal ``always_run`` task (a cleanup step) also brings
    in its upstream nodes, so that a cleanup that ran does not hide a failure.
    Resource setups and cleanups always count: a resource that failed to
    start or to end fails the run.
    """
    from daskflow import signals

    cleanups = [n for n in nodes if n.kind in ("setup", "cleanup")]
    if returned:
        return returned + cleanups
    stack = [n for n in nodes if n.downstream == 0 and n.kind in ("task", "cleanup")]
    seen: dict[int, Any] = {}
    while stack:
        node = stack.pop()
        if node.index in seen:
            continue
        seen[node.index] = node
        if node.task.trigger is signals.all_finished:
            stack.extend(node.upstream + node.wait_for)
    for node in cleanups:
        seen.setdefault(node.index, node)
    return sorted(seen.values(), key=lambda n: n.index)


def _substitute(value: Any, compiler: Compiler, gathered: dict[Any, State]) -> Any:
    from daskflow.build import Ref

    if isinstance(value, Ref):
        keys = compiler.keys[value.node.index]
        if isinstance(keys, list):
            return [gathered[k].result() for k in keys]
        return gathered[keys].result()
    if isinstance(value, (list, tuple, set, frozenset)):
        return type(value)(_substitute(v, compiler, gathered) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, compiler, gathered) for k, v in value.items()}
    return value


def _context_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters tasks see in ``df.context().parameters``; larger than
    ``daskflow.context.max-parameter-size``, a placeholder naming the size."""
    from dask.sizeof import sizeof
    from dask.utils import format_bytes

    limit = config.bytes_setting("context.max-parameter-size")
    out: dict[str, Any] = {}
    for k, v in params.items():
        size = sizeof(v)
        out[k] = v if size <= limit else f"<{type(v).__name__} of {format_bytes(size)}, not shipped>"
    return out


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
        with Client(cluster, set_as_default=False) as client, _owned(client) as backend:
            yield backend
    elif hasattr(cluster, "__daskflow_open__"):
        # A spec describes a cluster; each run opens a handle of its own, so a
        # spec (a flow's default, or one reused by the user) serves any number of runs.
        with cluster.__daskflow_open__() as client, _owned(client) as backend:
            yield backend
    elif isinstance(cluster, str):
        if not _looks_like_address(cluster):
            from daskflow.clusters import from_profile

            spec = from_profile(cluster)
        else:
            from daskflow.clusters import Address

            spec = Address(cluster)
        with spec.__daskflow_open__() as client, _owned(client) as backend:
            yield backend
    else:
        client = _default_client()
        if client is not None:
            yield DistributedBackend(client)
        else:
            with _temporary_local_cluster() as client, _owned(client) as backend:
                yield backend


@contextlib.contextmanager
def _owned(client: Any) -> Iterator[DistributedBackend]:
    """A backend on a client this run opened: unsubscribed before it closes."""
    backend = DistributedBackend(client)
    try:
        yield backend
    finally:
        if not backend.lost:
            events.detach(client)


def _default_client() -> Any:
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


@contextlib.contextmanager
def _temporary_local_cluster() -> Iterator[Any]:
    from daskflow.clusters import Local

    kwargs = {k.replace("-", "_"): v for k, v in config.get("local").items()
              if v is not None or k == "dashboard-address"}
    with Local(**kwargs) as client:
        yield client


_descriptions: weakref.WeakKeyDictionary[Any, tuple[Any, str, str | None]] = (
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


def _dashboard_hint(cluster: Any) -> str:
    """For a scheduler in this process without bokeh, how to get its dashboard."""
    if cluster is None or getattr(cluster, "scheduler", None) is None:
        return ""  # a remote scheduler: what it has is not known here
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return "; it needs bokeh>=3.1: pip install 'daskflow[dashboard]'"
    return ""


def _describe_client(client: Any) -> tuple[str, str | None]:
    """('<cluster class> at <address> (dashboard <link>)', the link), once per
    connection (a scheduler restarted on the same address has a new dashboard)."""
    conn = events.connection(client)
    known = _descriptions.get(client)
    if known is None or known[0] is not conn:
        cluster = getattr(client, "cluster", None)
        name = type(cluster).__name__ if cluster is not None else "scheduler"
        link = getattr(client, "dashboard_link", None)
        text = f"{name} at {client.scheduler.address}" + (
            f" (dashboard {link}{_dashboard_hint(cluster)})" if link else "")
        known = _descriptions[client] = (conn, text, link)
    return known[1], known[2]


# -- logs -----------------------------------------------------------------------


def _in_notebook() -> bool:
    """Whether this process is a Jupyter kernel."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


class _NotebookHandler(logging.Handler):
    """In a notebook, INFO and DEBUG lines go to the cell's stdout (Jupyter
    paints stderr as an error); WARNING and above stay on stderr.  The
    streams are looked up at each record: the kernel swaps them per cell."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # pragma: no cover - never break logging
            self.handleError(record)


def setup_logging() -> None:
    """Set daskflow's log level unless set already, and a console handler if none."""
    root = logging.getLogger("daskflow")
    if root.level == logging.NOTSET:
        root.setLevel(str(config.get("logging.level")).upper())
    if config.get("logging.console") and not root.hasHandlers():
        handler = _NotebookHandler() if _in_notebook() else logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(
            config.get("logging.format"), datefmt="%H:%M:%S",
            defaults={"daskflow_task": "daskflow"}))
        root.addHandler(handler)


class _RunLogs(logging.Handler):
    """Keeps one run's log records (driver's and tasks') on its FlowRun."""

    def __init__(self, run_id: str, into: Any) -> None:
        super().__init__()
        self.run_id, self.into = run_id, into

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "daskflow_run", None) != self.run_id:
            return
        try:
            self.into.append({"time": record.created, "level": record.levelname,
                              "task": getattr(record, "daskflow_task", None),
                              "message": record.getMessage()})
        except Exception:  # pragma: no cover - never break logging
            self.handleError(record)


def flow_logger(flow_name: str, run_id: str) -> logging.LoggerAdapter:
    return logging.LoggerAdapter(logger, {"daskflow_task": f"flow {flow_name}",
                                          "daskflow_run": run_id})


def now() -> float:
    return time.time()
