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

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle
from dask.sizeof import sizeof
from dask.utils import format_bytes

from daskflow import config
from daskflow.clusters.address import Address
from daskflow.clusters.base import ClusterSpec
from daskflow.compile import scatter
from daskflow.compile.cachekeys import KeyPlan
from daskflow.compile.graph import Compiler, new_token
from daskflow.compile.tasks import as_keys
from daskflow.core.hooks import run_flow_hooks
from daskflow.core.states import State, StateType
from daskflow.define.build import Builder, check_built, no_builder
from daskflow.driver.backends import Backend
from daskflow.driver.connect import open_backend
from daskflow.driver.flowrun import FlowRun, RunControl, flow_state
from daskflow.driver.history import Recorder
from daskflow.driver.live import LiveGroups
from daskflow.driver.logs import RunLogs, flow_logger, setup_logging
from daskflow.driver.outcome import (
    group,
    label,
    labelled,
    reference_nodes,
    returned_nodes,
    substitute,
)
from daskflow.driver.waits import BodyWaits, RunInterrupted
from daskflow.events import monitor
from daskflow.events.monitor import RunMonitor
from daskflow.exceptions import ClusterError, FlowRunError, FlowTimeoutError
from daskflow.ui.web import PAGES
from daskflow.wire import INLINE_PARAMETERS, RunInfo, RunResults, store_mode

# A flow's cache options for a run: (the flow's cache=, its result_storage=, refresh_cache=)
CacheOptions = tuple[bool | None, str | None, bool]


class RunCancelled(FlowRunError):
    """Raised inside the engine when ``FlowRun.cancel()`` was called."""


class RunTimedOut(RunCancelled, FlowTimeoutError):
    """Raised inside the engine once the flow's ``timeout`` passed: the run is
    cancelled, and ends Failed (TimedOut) with this error."""

    shown_as = "FlowTimeoutError"  # in the run's state message: the public name


class Engine:
    """One flow run, from its build to its final state.

    The flow body runs in :meth:`execute`, with a builder whose waits
    (``ref.result()`` and friends, :mod:`daskflow.driver.waits`) call
    :meth:`flush`: the first one opens the backend, and each submits what
    the body built since the last one.  A body that never waits is
    submitted once, when it returns, exactly as a static graph.
    """

    def __init__(self, name: str, params: dict[str, Any], body: Callable[[Builder], Any],
                 cluster: Any, scatter: bool = True, flow: Any = None,
                 limits: Mapping[str, int] | None = None, cache: CacheOptions | None = None,
                 fuse: bool | None = None, flow_run: FlowRun | None = None) -> None:
        self.name = name
        self.flow = flow
        self.params = params
        self.run_id = new_token()
        self.builder = Builder(name, self.run_id)
        self.body = body
        self.returned: Any = None
        self.returned_nodes: list[Any] = []
        self.cluster = cluster
        self.scatter = scatter
        self.limit_table = dict(limits or {})  # tag -> limit, for the tags used so far
        self.limits: tuple[tuple[str, int], ...] = ()
        self._tags: set[str] = set()  # the limited tags the run's tasks carry so far
        self.cache = cache
        self.results: RunResults | None = None
        self.plan: KeyPlan | None = None
        self.fuse = fuse
        # a retried flow's next attempt goes on in the FlowRun of the first
        self.flow_run = flow_run or FlowRun(name, self.run_id, params)
        self.control = RunControl(self.flow_run)
        self.compiler: Compiler | None = None
        self.backend: Backend | None = None
        self.log = flow_logger(name, self.run_id)
        self.on_start: Callable[[FlowRun], Any] | None = None  # called as the run starts
        self.started = False  # the backend was asked for: errors now end the run
        self.states: RunMonitor | None = None
        self.start = 0.0
        self._stack: contextlib.ExitStack | None = None
        self._flushed = 0  # builder.nodes[:_flushed] were prepared and handed to the compiler
        self._pending: list[Any] = []  # length keys not waited for yet
        self._ready = threading.Event()  # the body reached its first wait or its end
        self._early: BaseException | None = None  # what stopped the build before the run
        self.timeout: float | None = None  # the flow's timeout= (seconds)
        self.resume: str | None = None  # a retried flow's store of its attempts' results
        self._timed_out = False
        # whether this run ends its FlowRun (its hooks fire, it settles): not an
        # attempt of a flow that is retried (see daskflow.driver.attempts)
        self.last_attempt: Callable[[FlowRun], bool] = lambda run: True
        self.then: Callable[[], Any] | None = None  # after a submitted run, in its thread

    # -- how it is started ---------------------------------------------------------
    def run(self) -> FlowRun:
        """Run in this thread; KeyboardInterrupt and cluster errors propagate."""
        self.execute()
        return self.flow_run

    def submit(self) -> FlowRun:
        """Run in a background thread; return the live FlowRun once the body
        has been built up to its first wait (its errors until there raise here)."""
        # the body runs in the caller's context (a Client.as_current(), say)
        context = contextvars.copy_context()
        thread = threading.Thread(target=context.run, args=(self._execute_quietly,),
                                  daemon=True, name=f"daskflow-run-{self.name}-{self.run_id}")
        self.control.in_thread(thread)
        thread.start()
        try:
            while not self._ready.wait(0.1) and thread.is_alive():
                pass
        except BaseException:  # Ctrl-C while the body builds: stop it at its next step
            self.control.request_cancel()
            raise
        if self._early is not None:
            thread.join()
            raise self._early
        return self.flow_run

    def _execute_quietly(self) -> None:
        try:
            self.execute()
        except BaseException:  # recorded on the FlowRun, or raised by submit()
            pass
        if self.then is not None and self._early is None:
            try:
                self.then()
            except BaseException:  # recorded on the FlowRun
                pass

    def check(self) -> None:
        """Raise RunCancelled if the run was cancelled (called between waits)."""
        if self._timed_out:
            raise RunTimedOut(f"flow run {self.name!r} ({self.run_id}) did not finish within "
                              f"its timeout of {self.timeout:g}s")
        if self.control.cancel_requested():
            raise RunCancelled(f"flow run {self.name!r} ({self.run_id}) was cancelled")

    def _time_out(self) -> None:
        """The flow's timeout passed: the run stops at its next check (its
        FlowRun is not cancelled: a retried flow's next attempt goes on in it)."""
        self._timed_out = True

    # -- the run ---------------------------------------------------------------------
    def execute(self) -> None:
        setup_logging()
        states = self.states = monitor.monitor(self.run_id, self.flow_run.artifacts)
        self.start = time.time()
        keeper = RunLogs(self.run_id, self.flow_run.logs)
        logging.getLogger("daskflow").addHandler(keeper)
        recorder = Recorder.for_run(self.flow_run)
        if recorder is not None:
            recorder.start()
        timer = threading.Timer(self.timeout, self._time_out) if self.timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            with contextlib.ExitStack() as stack:
                self._stack = stack
                self._body_then_rest()
        except BaseException as err:
            if not self.started:
                self._early = err  # the build failed: nothing of the run started
                raise
            if not self.control.ended():  # e.g. the cluster could not start
                kind = StateType.CANCELLED if isinstance(err, RunCancelled) else StateType.CRASHED
                timed_out = isinstance(err, RunTimedOut)
                self._end_without_value(StateType.FAILED if timed_out else kind, err, states,
                                        self.start, "TimedOut" if timed_out else None)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._ready.set()
            if self.backend is not None and _temporary(self.cluster):
                self.control.cluster_closed()
            monitor.forget(self.run_id)
            last = self.last_attempt(self.flow_run)
            try:
                if self.started and last:
                    run_flow_hooks(self.flow, self.flow_run)
            finally:
                if recorder is not None:
                    recorder.end(self._early)
                logging.getLogger("daskflow").removeHandler(keeper)
                if self.started and last:
                    self.control.settle()

    def _body_then_rest(self) -> None:
        """Build the body (its waits run stages), then run what is left.

        Once the run has started, an exception the body's own code raised
        (a task's error it did not catch, say) ends the run Failed with it;
        what the run still had going is cancelled and its resources cleaned
        up.  An error of the run itself (a lost scheduler, a graph that could
        not be submitted) is raised, as in a run without waits.
        """
        builder = self.builder
        waits = builder.waiter = BodyWaits(self)
        own = False  # the body's own error, not one of its waits'
        try:
            try:
                with builder:
                    returned = self.body(builder)
            except RunInterrupted as stop:  # a wait found the run cancelled or broken
                raise stop.cause from None
            except Exception:
                own = waits.broken is None
                raise
            if waits.broken is not None:  # the body caught it, but the run is gone
                raise waits.broken
            self.returned, self.returned_nodes = returned, returned_nodes(returned)
            self.flush(last=True)
            self._finish()
        except BaseException as err:
            if self.backend is None:
                raise
            self._interrupted(self.backend, err, self.states, self.start)
            if isinstance(err, RunCancelled) or own:
                return
            raise

    def _open(self) -> None:
        """Start the run: open the backend and the compiler (at the first wait,
        or once a body that never waits has returned)."""
        self.started = True
        self._ready.set()
        if self.on_start is not None:
            self.on_start(self.flow_run)
        self.check()
        assert self._stack is not None
        backend = self._stack.enter_context(open_backend(self.cluster))
        backend.bind(self.check, self.name, self.run_id, self.log)
        self._stack.callback(backend.release)
        self.control.on_cluster(backend.description, backend.dashboard,
                                run_page(backend.pages, self.run_id), backend.scheduler_id)
        self.backend = backend
        run = self._run_info(backend)
        compiler = self.compiler = Compiler(self.builder.nodes, run, token=self.run_id)
        compiler.plan = self.plan
        compiler.fuse = bool(config.get("optimization.fuse")) if self.fuse is None else self.fuse
        compiler.max_fused = int(config.get("optimization.max-fused"))
        compiler.check_pickle = not backend.in_process
        compiler.chunks.count_threads = backend.threads
        states = self.states
        assert states is not None
        states.label = lambda key: label(compiler, key)
        self.control.running(
            self.start, live=lambda: labelled(self.compiler, states.snapshot(),
                                                    lambda key: State(StateType.PENDING)),
            groups=LiveGroups(compiler.state_keys, compiler.synthetic, states.changes,
                              states.states, lambda key: group(compiler, key)))
        page = self.flow_run.page_link
        named = f" {self.flow_run.run_name!r}" if self.flow_run.run_name else ""
        self.log.info("run %s%s started on %s (%d nodes)%s", self.run_id, named,
                      backend.description, len(self.builder.nodes),
                      f"; its page: {page}" if page else "")
        run_flow_hooks(self.flow, self.flow_run)  # on_running
        if run.params_key is not None:  # in worker memory before any task asks for it
            backend.scatter_named(run.params_key, self._params[1])

    # -- stages ------------------------------------------------------------------------
    def flush(self, until: Sequence[Any] = (), last: bool = False,
              timeout: float | None = None) -> None:
        """Submit what the body built since the last flush (one submission),
        then the stages the nodes in ``until`` need (maps whose length is
        known only at run time; for ``timeout`` seconds at most); ``last``:
        the body has returned, submit everything.  Called from the body's
        waits, but nothing here is part of its build (a cluster spec, which
        is a resource inside a flow body, opens as a cluster)."""
        with no_builder():
            self._flush(until, last, timeout)

    def _flush(self, until: Sequence[Any], last: bool, timeout: float | None) -> None:
        if self.started:
            self.check()
        new = self.builder.nodes[self._flushed:]
        compiler = self.compiler
        if (compiler is not None and not new and not last
                and all(n.index in compiler.keys and n.index not in compiler.chunks.partial
                        for n in until)):
            return  # nothing to submit: a wait on what is submitted already
        held = self._held(last)
        if new or not self.started:
            self._prepare(new, held)
            self._flushed += len(new)
        if not self.started:
            self._open()
        backend, compiler = self.backend, self.compiler
        assert backend is not None and compiler is not None
        if new:
            backend.check_modules([node.task for node in new])
            self._register_limits(backend, new)
            if self.scatter:
                self._scatter(backend, new)
        compiler.keep_real = held
        dsk = self._stage()
        backend.submit(dsk, self._keep(held), compiler.resources)
        pending = self._pending
        pending += [k for k in compiler.length_keys if k in dsk]
        keys = compiler.keys
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending and (last or any(n.index not in keys or n.index in compiler.chunks.partial
                                       for n in until)):
            if deadline is not None and time.monotonic() >= deadline:
                return
            for key, length in backend.wait_lengths(pending, deadline).items():
                compiler.set_length(key, length)
                pending.remove(key)
            dsk = self._stage()
            backend.submit(dsk, self._keep(held) | set(pending), compiler.resources)
            pending += [k for k in compiler.length_keys if k in dsk]

    def _stage(self) -> dict[Any, Any]:
        """The compiler's next stage; how it chunked maps goes to the run's log."""
        compiler = self.compiler
        assert compiler is not None
        dsk = compiler.stage()
        for note in compiler.chunks.notes:
            self.log.info("%s", note)
        compiler.chunks.notes.clear()
        return dsk

    def _held(self, last: bool) -> set[int]:
        """The nodes whose results may still be asked for: those the body holds a
        reference to, and the members of its open resource blocks (their
        cleanup, built later, waits for them); once it returned, what it returned."""
        returned = {n.index for n in self.returned_nodes}
        if last:
            return returned
        return self.builder.referenced() | self.builder.open_blocks() | returned

    def _prepare(self, new: list[Any], held: set[int]) -> None:
        """Check the new nodes and compute their cache keys, before they are
        submitted (on the first flush: before anything starts); ``held``: the
        nodes whose results may still be asked for (never left out as unneeded)."""
        check_built(new)
        cache = self.cache
        if cache is None:
            return
        flow_cache, storage, refresh = cache
        if self.plan is None:
            flow_cache = "resume" if self.resume else flow_cache
            if not any(store_mode(node.task, flow_cache, node.kind) for node in new):
                return
            # read the storage settings only when a task stores its result
            self.results = RunResults.of_flow(flow_cache, storage, bool(refresh), self.resume)
            self.plan = KeyPlan()
            if self.compiler is not None:
                self.compiler.plan = self.plan
                self.compiler.run.results = self.results
            for node in self.builder.nodes[:self._flushed]:  # keys chain through them
                self.plan.node(node, self.results.for_task(node.task, node.kind))
        for node in new:
            self.plan.node(node, self.results.for_task(node.task, node.kind))
        self.plan.check(new, [n for n in new if n.index in held])

    def _register_limits(self, backend: Backend, new: list[Any]) -> None:
        """Register the limits of the tags the new nodes bring (before they are
        submitted); their tasks read them from the run's ``RunInfo``."""
        table = self.limit_table
        if not table:
            return
        self._tags.update(tag for node in new for tag in node.task.tags if tag in table)
        limits = tuple((tag, n) for tag, n in sorted(table.items()) if tag in self._tags)
        if limits != self.limits:
            assert self.compiler is not None
            self.limits = self.compiler.run.limits = limits
            backend.register_limits(limits)

    def _keep(self, held: set[int]) -> set[Any]:
        """The keys whose futures the driver holds after a submission: those
        deferred nodes depend on and those of the nodes in ``held``."""
        compiler = self.compiler
        assert compiler is not None
        kept = compiler.needed_later()
        keys = compiler.keys
        for index in held:
            kept.update(compiler.dask_keys(as_keys(keys.get(index))))
        return kept

    def _finish(self) -> None:
        """Wait for every task, gather the returned results, record the end."""
        backend, compiler, states = self.backend, self.compiler, self.states
        assert backend is not None and compiler is not None and states is not None
        backend.wait_all()
        returned_keys = [k for n in self.returned_nodes
                         for k in as_keys(compiler.keys.get(n.index))]
        values = backend.gather(compiler.dask_keys(returned_keys))
        gathered = {k: compiler.pick(k, values) for k in returned_keys}
        self._assemble(states.snapshot(), gathered, backend.errors(), self.start)

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

    def _scatter(self, backend: Backend, nodes: list[Any]) -> None:
        """Scatter the large constants of new nodes (not those scattered by an
        earlier stage) and point the compiler at their keys."""
        assert self.compiler is not None
        scattered = self.compiler.scattered
        found = scatter.plan(nodes, config.bytes_setting("scatter.threshold"), scattered)
        if not found:
            return
        keys = backend.scatter(found.objects, bool(config.get("scatter.broadcast")))
        if keys:
            scattered.update(found.keys_by_id(keys))
            self.log.debug("scattered %s", found.describe())

    def _interrupted(self, backend: Backend, err: BaseException, states: RunMonitor,
                     start: float) -> None:
        """Cancel what runs, end the resources the run set up, record the end."""
        ended: list[str] = []
        try:
            ended = backend.cancel(self.run_id)
        except Exception as cleanup_error:  # never hide the real error behind this one
            self.log.warning("could not cancel run %s cleanly: %r", self.run_id, cleanup_error)
        self._cleaned_up(ended)
        name = None
        if isinstance(err, RunTimedOut):
            what, state_type, name = "timed out", StateType.FAILED, "TimedOut"
        elif isinstance(err, RunCancelled):
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
        self._end_without_value(state_type, err, states, start, name)

    def _cleaned_up(self, ended: list[str]) -> None:
        """The cleanup tasks whose resources the interruption ended (through
        ``finish_run`` on the workers) say so, instead of Cancelled."""
        compiler = self.compiler
        if compiler is None or not ended:
            return
        keys = compiler.keys
        for node in self.builder.nodes:
            if node.kind != "cleanup" or node.index not in keys:
                continue
            setup = str(keys.get(node.upstream[0].index))
            if any(setup in e for e in ended):
                compiler.synthetic[keys[node.index]] = State(
                    StateType.COMPLETED, name="CleanedUp",
                    message="its resource was cleaned up when the run was interrupted")

    def _end_without_value(self, state_type: StateType, err: BaseException,
                           states: RunMonitor, start: float, name: str | None = None) -> None:
        shown = getattr(err, "shown_as", type(err).__name__)
        final = State(state_type, name=name, message=f"{shown}: {err}",
                      exception=err, start=start)
        named = labelled(self.compiler, states.snapshot(), lambda key: State(StateType.CANCELLED))
        error = err if isinstance(err, Exception) else FlowRunError(final.message)
        self.control.finish(final, named, None, error)

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

        states = labelled(self.compiler, raw, crashed)
        self.flow_run.chunked = compiler.chunked()
        reference = [states[label(compiler, k)]
                     for n in reference_nodes(self.builder.nodes, self.returned_nodes,
                                               getattr(self.flow, "state_from_returned", False))
                     for k in as_keys(compiler.keys.get(n.index))]
        final = flow_state(reference, missing, list(states.values()))
        final.start = start
        final.end = time.time()
        value, error = None, None
        if final.is_completed():
            value = substitute(self.returned, compiler, gathered)
        else:
            error = final.exception
            if error is None:
                error = FlowRunError(f"flow run {self.name!r} {final.name}: {final.message}")
        self.control.finish(final, states, value, error)
        self.log.log(logging.INFO if final.is_completed() else logging.ERROR, "%s",
                     self.flow_run.headline())


def run_page(pages: str | None, run_id: str) -> str | None:
    """The run's web page: at ``daskflow ui`` when the setting
    ``daskflow.ui.url`` names one, else on its scheduler's dashboard when that
    serves the runs pages (``pages``, their root), else None."""
    url = config.get("ui.url")
    if url:
        return f"{str(url).rstrip('/')}/{PAGES}/{run_id}"
    return f"{pages}/{run_id}" if pages else None


def _temporary(cluster: Any) -> bool:
    """Whether ``cluster=`` starts a cluster that closes with the run (the
    default, or a spec of one), not one that is reached (an address)."""
    return cluster is None or (isinstance(cluster, ClusterSpec)
                               and not isinstance(cluster, Address))


def _context_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters tasks see in ``df.context().parameters``; larger than
    ``daskflow.context.max-parameter-size``, a placeholder naming the size."""
    limit = config.bytes_setting("context.max-parameter-size")
    out: dict[str, Any] = {}
    for k, v in params.items():
        size = sizeof(v)
        out[k] = v if size <= limit else f"<{type(v).__name__} of {format_bytes(size)}, not shipped>"
    return out
