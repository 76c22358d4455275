"""The engine: one flow run, from its build to its final state.

A run (:class:`Engine`) goes: resolve ``cluster=`` into a backend
(:func:`daskflow.driver.connect.open_backend`), compile the first stage and submit it with **one**
``Client.get`` call (one ``update_graph`` on the scheduler), then, only if
the flow maps over results whose length is known at run time, wait for
those lengths (tiny integers, the only values pulled before the end) and
submit the next stages with the earlier keys as dependencies.  The same
stage loop drives every :class:`~daskflow.driver.backends.Backend`: the
distributed one and, for ``cluster="sync"``, ``dask.get`` in this process.

Where states live: each task run's result-free state reaches the driver as
it ends, through the scheduler (:mod:`daskflow.events`); the run's
:class:`~daskflow.driver.flowrun.FlowRun` shows them live; the engine
changes the FlowRun only through its :class:`~daskflow.driver.flowrun.RunControl`.  At the end only the
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

import logging
import threading
import time
from typing import Any

import cloudpickle
from dask.sizeof import sizeof
from dask.utils import format_bytes

from daskflow import config
from daskflow.compile import scatter
from daskflow.compile.cachekeys import KeyPlan
from daskflow.compile.graph import Compiler, new_token
from daskflow.compile.tasks import as_keys
from daskflow.core import signals
from daskflow.core.hooks import run_flow_hooks
from daskflow.core.states import State, StateType
from daskflow.core.walk import transform
from daskflow.define.build import Ref, refs_in
from daskflow.driver.backends import Backend
from daskflow.driver.connect import open_backend
from daskflow.driver.flowrun import FlowRun, RunControl, flow_state
from daskflow.driver.live import LiveGroups
from daskflow.driver.logs import RunLogs, flow_logger, setup_logging
from daskflow.events import monitor
from daskflow.events.monitor import RunMonitor
from daskflow.exceptions import ClusterError, FlowRunError
from daskflow.wire import INLINE_PARAMETERS, RunInfo, RunResults


class RunCancelled(FlowRunError):
    """Raised inside the engine when ``FlowRun.cancel()`` was called."""


class Engine:
    """One flow run, from its build to its final state."""

    def __init__(self, name: str, params: dict[str, Any], builder: Any, returned: Any,
                 cluster: Any, scatter: bool = True, flow: Any = None,
                 limits: tuple[tuple[str, int], ...] = (), results: RunResults | None = None,
                 plan: KeyPlan | None = None, fuse: bool | None = None) -> None:
        self.name = name
        self.flow = flow
        self.params = params
        self.builder = builder
        self.returned = returned
        self.returned_nodes = returned_nodes(returned)
        self.cluster = cluster
        self.scatter = scatter
        self.limits = limits
        self.results, self.plan = results, plan
        self.fuse = fuse
        self.run_id = new_token()
        self.flow_run = FlowRun(name, self.run_id, params)
        self.control = RunControl(self.flow_run)
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
        self.control.in_thread(thread)
        thread.start()
        return self.flow_run

    def _execute_quietly(self) -> None:
        try:
            self.execute()
        except BaseException:  # already recorded on the FlowRun by execute()
            pass

    def check(self) -> None:
        """Raise RunCancelled if the run was cancelled (called between waits)."""
        if self.control.cancel_requested():
            raise RunCancelled(f"flow run {self.name!r} ({self.run_id}) was cancelled")

    # -- the run ---------------------------------------------------------------------
    def execute(self) -> None:
        setup_logging()
        states = monitor.monitor(self.run_id)
        start = time.time()
        keeper = RunLogs(self.run_id, self.flow_run.logs)
        logging.getLogger("daskflow").addHandler(keeper)
        try:
            with open_backend(self.cluster) as backend:
                backend.bind(self.check, self.name, self.run_id, self.log)
                self.control.on_cluster(backend.description, backend.dashboard)
                try:
                    self._run_on(backend, states, start)
                finally:
                    backend.release()
        except BaseException as err:
            if not self.control.ended():
                self._end_without_value(StateType.CRASHED, err, states, start)
            raise
        finally:
            monitor.forget(self.run_id)
            try:
                run_flow_hooks(self.flow, self.flow_run)
            finally:
                logging.getLogger("daskflow").removeHandler(keeper)
                self.control.settle()

    def _run_on(self, backend: Backend, states: RunMonitor, start: float) -> None:
        run = self._run_info(backend)
        if self.limits:
            backend.register_limits(self.limits)
        if self.plan is not None:
            self.plan.check(self.builder.nodes, self.returned_nodes)
        compiler = self.compiler = Compiler(self.builder.nodes, run, token=self.run_id)
        compiler.plan = self.plan
        compiler.fuse = bool(config.get("optimization.fuse")) if self.fuse is None else self.fuse
        compiler.max_fused = int(config.get("optimization.max-fused"))
        compiler.keep_real = {n.index for n in self.returned_nodes}
        compiler.check_pickle = not backend.in_process
        states.label = lambda key: _label(compiler, key)
        self.control.running(
            start, live=lambda: self._labelled(states.snapshot(),
                                               lambda key: State(StateType.PENDING)),
            groups=LiveGroups(compiler.state_keys, compiler.synthetic, states.changes,
                              lambda key: _label(compiler, key)))
        self.log.info("run %s started on %s (%d nodes)", self.run_id, backend.description,
                      len(self.builder.nodes))
        try:
            if self.scatter:
                self._scatter(backend)
            self._stages(backend, run)
        except BaseException as err:
            self._interrupted(backend, err, states, start)
            if isinstance(err, RunCancelled):
                return
            raise
        returned_keys = [k for n in self.returned_nodes
                         for k in as_keys(compiler.keys.get(n.index))]
        gathered = backend.gather(returned_keys)
        self._assemble(states.snapshot(), gathered, backend.errors(), start)

    def _run_info(self, backend: Backend) -> RunInfo:
        params = _context_parameters(self.params)
        prints = bool(config.get("logging.log-prints"))
        internals = bool(config.get("logging.traceback-internals"))
        if not backend.in_process:
            params = self._travelling(params)
        if backend.owner is None or len(cloudpickle.dumps(params)) <= INLINE_PARAMETERS:
            run = RunInfo(self.name, self.run_id, backend.owner, params, limits=self.limits,
                          dashboard=backend.dashboard, results=self.results,
                          log_prints=prints, internals=internals)
            if backend.in_process:  # checked between the tasks of a fused one
                run.check = self.check
            return run
        self._params = (f"params-{self.name}-{self.run_id}", params)
        return RunInfo(self.name, self.run_id, backend.owner, None, self._params[0],
                       limits=self.limits, dashboard=backend.dashboard, results=self.results,
                       log_prints=prints, internals=internals)

    def _travelling(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters as they travel for ``df.context().parameters``: one
        that cannot be pickled (a lock, a connection) stands as a placeholder
        there, with a warning; a task given it fails before the run starts,
        naming the task and the argument."""
        out = dict(params)
        for name, value in params.items():
            try:
                cloudpickle.dumps(value)
            except Exception as err:
                out[name] = f"<{type(value).__name__}, cannot be sent to the workers>"
                self.log.warning("parameter %r of flow %r (a %s) cannot be pickled (%s): "
                                 "df.context().parameters shows a placeholder for it, and a "
                                 "task given it cannot run on a cluster; create such an object "
                                 "inside a task or a resource", name, self.name,
                                 type(value).__name__, err)
        return out

    def _stages(self, backend: Backend, run: RunInfo) -> None:
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

    def _scatter(self, backend: Backend) -> None:
        """Scatter the large constants of the build and point the compiler at their keys."""
        found = scatter.plan(self.builder.nodes, config.bytes_setting("scatter.threshold"))
        if not found:
            return
        keys = backend.scatter(found.objects, bool(config.get("scatter.broadcast")))
        if keys:
            assert self.compiler is not None
            self.compiler.scattered = found.keys_by_id(keys)
            self.log.debug("scattered %s", found.describe())

    def _interrupted(self, backend: Backend, err: BaseException, states: RunMonitor,
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
        self._end_without_value(state_type, err, states, start)

    def _end_without_value(self, state_type: StateType, err: BaseException,
                           states: RunMonitor, start: float) -> None:
        final = State(state_type, message=f"{type(err).__name__}: {err}", exception=err,
                      start=start)
        labelled = self._labelled(states.snapshot(), lambda key: State(StateType.CANCELLED))
        error = err if isinstance(err, Exception) else FlowRunError(final.message)
        self.control.finish(final, labelled, None, error)

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
        final.end = time.time()
        value, error = None, None
        if final.is_completed():
            value = _substitute(self.returned, compiler, gathered)
        else:
            error = final.exception
            if error is None:
                error = FlowRunError(f"flow run {self.name!r} {final.name}: {final.message}")
        self.control.finish(final, states, value, error)
        self.log.log(logging.INFO if final.is_completed() else logging.ERROR, "%s",
                     self.flow_run.summary().splitlines()[0])


def _label(compiler: Compiler, key: Any) -> str:
    if isinstance(key, tuple):
        return f"{compiler.name_of(key[0])}[{key[1]}]"
    return compiler.name_of(key)


def returned_nodes(returned: Any) -> list[Any]:
    """The nodes whose results a flow body returned (anywhere inside its value)."""
    return list(refs_in(returned).values())


def _reference_nodes(nodes: list[Any], returned: list[Any]) -> list[Any]:
    """The nodes whose states decide the flow's state.

    The returned nodes if the flow returns refs; otherwise the terminal task
    nodes, where a terminal ``always_run`` task (a cleanup step) also brings
    in its upstream nodes, so that a cleanup that ran does not hide a failure.
    Resource setups and cleanups always count: a resource that failed to
    start or to end fails the run.
    """
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
    """The flow body's return value with each ref replaced by its task's result."""
    def result(v: Any) -> Any:
        if type(v) is not Ref:
            return v
        keys = compiler.keys[v.node.index]
        if isinstance(keys, list):
            return [gathered[k].result() for k in keys]
        return gathered[keys].result()

    return transform(value, result)


def _context_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters tasks see in ``df.context().parameters``; larger than
    ``daskflow.context.max-parameter-size``, a placeholder naming the size."""
    limit = config.bytes_setting("context.max-parameter-size")
    out: dict[str, Any] = {}
    for k, v in params.items():
        size = sizeof(v)
        out[k] = v if size <= limit else f"<{type(v).__name__} of {format_bytes(size)}, not shipped>"
    return out
