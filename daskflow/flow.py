"""Flows: a function whose body is built once into task nodes, then run.

``flow.run(**params, cluster=...)`` validates the parameters against the
function's signature and type hints, builds the body (no task runs), and
hands the nodes to the engine (:mod:`daskflow.driver.engine`).  A flow
called inside another flow's body is built into the same graph, its task
names prefixed with its own name.  This is the facade users touch: it
defines nothing of how a run goes.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import difflib
import functools
import inspect
import sys
import threading
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from daskflow import serve as schedule
from daskflow.core.hooks import Hooks, bound, check_hooks
from daskflow.core.options import check_limits, check_options
from daskflow.core.params import coerce
from daskflow.core.retrying import check_run_name, format_run_name
from daskflow.define.build import (
    Builder,
    Ref,
    WaitOutsideRun,
    check_built,
    current_builder,
    refs_in,
)
from daskflow.driver import attempts
from daskflow.driver.connect import check_cluster
from daskflow.driver.engine import Engine
from daskflow.driver.flowrun import FlowRun
from daskflow.driver.history import record_failed_start
from daskflow.driver.limits import resolve as resolve_limits
from daskflow.driver.outcome import returned_nodes
from daskflow.exceptions import DaskflowError, FlowDefinitionError, ParameterError, RunNameError
from daskflow.ui import progress as live
from daskflow.ui.visualize import to_graphviz

R = TypeVar("R")

# Keyword arguments of flow.run/submit/__call__ that are run options, not parameters.
RUN_OPTIONS = ("cluster", "scatter", "concurrency", "refresh_cache", "progress", "fuse")


class Flow(Generic[R]):
    """A workflow: its body calls tasks, and each run compiles to a Dask graph.

    Parameters
    ----------
    fn : callable
        The flow body; its parameters are the flow's parameters.
    name : str, optional
        Defaults to the function's name.
    cluster : optional
        The default ``cluster=`` of its runs (see :mod:`daskflow.driver.connect`).
    scatter : bool
        Scatter large parameters and constants before submitting (default True).
    concurrency : dict, optional
        Tag concurrency limits of its runs, e.g. ``{"db": 2}``: at most two
        tasks tagged ``db`` run at once on the cluster (see
        :mod:`daskflow.worker.slots`).
    cache : bool, optional
        The default ``cache=`` of its tasks (a task's own option wins).
    result_storage : str, optional
        Where its tasks' results are stored (an fsspec URL; default the
        setting ``daskflow.results.storage``).
    fuse : bool, optional
        Fuse linear chains and element-wise map chains into one Dask task
        each (default: the setting ``daskflow.optimization.fuse``, on).
    on_completion, on_failure, on_crashed, on_cancellation, on_running : list of callables, optional
        Flow hooks, each called as ``hook(flow, run)`` on the driver when a
        run ends in that state (``on_running``: as it starts), see
        :mod:`daskflow.core.hooks`; each is also a decorator adding one
        (``@my_flow.on_failure``).
    flow_run_name : str or callable, optional
        The run's name: a template formatted with the parameters
        (``"etl-{day}"``) or a function returning a str (called with no
        argument, or with the parameters as a dict); ``run.run_name``.
    retries : int
        Run the flow again, up to this many times, when a run ends Failed;
        a new attempt reuses the results of the tasks that completed (see
        :mod:`daskflow.driver.attempts`).
    retry_delay : float or list of float
        Seconds before each new attempt (``retry_delay_seconds=``: Prefect's name).
    timeout : float, optional
        Seconds a run may take: then its tasks are cancelled, its resources
        cleaned up, and it ends Failed, named TimedOut, with
        ``FlowTimeoutError`` (``timeout_seconds=``: Prefect's name).
    validate_parameters : bool
        Check the parameters against their type hints, coercing as Prefect
        does with pydantic installed (default True; see :mod:`daskflow.core.params`).

    Examples
    --------
    >>> import daskflow as df
    >>> @df.task
    ... def double(x):
    ...     return 2 * x
    >>> @df.flow
    ... def doubles(xs: list = [1, 2, 3]):
    ...     return double.map(xs)
    >>> doubles(cluster="sync")
    [2, 4, 6]
    """

    # Whether only what the body returns decides the run's state (Prefect 3's
    # rule: a body that returns plain values is Completed); by default a body
    # returning no reference is decided by its terminal tasks.
    state_from_returned = False

    # the hook options: tuples of hooks, each also a decorator (``@my_flow.on_failure``)
    on_completion: Hooks
    on_failure: Hooks
    on_crashed: Hooks
    on_cancellation: Hooks
    on_running: Hooks

    def __init__(self, fn: Callable[..., R], *, name: str | None = None,
                 cluster: Any = None, scatter: bool = True, concurrency: Any = None,
                 cache: bool | None = None, result_storage: str | None = None,
                 fuse: bool | None = None, on_completion: Any = None, on_failure: Any = None,
                 on_crashed: Any = None, on_cancellation: Any = None, on_running: Any = None,
                 flow_run_name: Any = None, retries: int = 0, retry_delay: Any = 0.0,
                 timeout: Any = None, validate_parameters: bool = True,
                 retry_delay_seconds: Any = None, timeout_seconds: Any = None) -> None:
        if not callable(fn):
            raise FlowDefinitionError(f"@flow needs a function, got {fn!r}")
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "flow"))
        self.signature = _check_signature(self.name, fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        check_cluster(cluster)
        self.cluster = cluster
        self.scatter = bool(scatter)
        self.concurrency = check_limits(f"flow {self.name!r}", concurrency)
        self.cache = None if cache is None else bool(cache)
        self.result_storage = result_storage
        self.fuse = None if fuse is None else bool(fuse)
        given = {"on_completion": on_completion, "on_failure": on_failure,
                 "on_crashed": on_crashed, "on_cancellation": on_cancellation,
                 "on_running": on_running}
        for option, hooks in given.items():  # each also a decorator: @my_flow.on_failure
            setattr(self, option, bound(self, option, check_hooks("flow", self.name, option,
                                                                  hooks)))
        self.flow_run_name = check_run_name(f"flow {self.name!r}", "flow_run_name",
                                            flow_run_name, self.signature)
        self.retries, self.retry_delay, self.timeout = attempts.check(
            f"flow {self.name!r}", retries, (retry_delay, retry_delay_seconds),
            (timeout, timeout_seconds))
        self.validate_parameters = bool(validate_parameters)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def with_options(self, **options: Any) -> Flow[R]:
        """A copy of this flow with some options changed (Prefect 3's), e.g.
        ``etl.with_options(name="etl-test", retries=2, cluster="sync")``."""
        current = self._options()
        check_options(f"{self.name}.with_options()", options, _FLOW_OPTIONS)
        for prefects, ours in (("retry_delay_seconds", "retry_delay"),
                               ("timeout_seconds", "timeout")):
            if prefects in options:
                current.pop(ours)
        return Flow(self.fn, **{**current, **options})

    def _options(self) -> dict[str, Any]:
        hooks = ("on_completion", "on_failure", "on_crashed", "on_cancellation", "on_running")
        return {"name": self.name, "cluster": self.cluster, "scatter": self.scatter,
                "concurrency": self.concurrency or None, "cache": self.cache,
                "result_storage": self.result_storage, "fuse": self.fuse,
                **{h: list(getattr(self, h)) for h in hooks},
                "flow_run_name": self.flow_run_name, "retries": self.retries,
                "retry_delay": list(self.retry_delay), "timeout": self.timeout,
                "validate_parameters": self.validate_parameters}

    # -- parameters and build --------------------------------------------------
    def bind(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Check a call's parameters against the signature and type hints;
        return them by name, defaults applied.

        As in Prefect, the names are the function's parameters: a ``*args``
        parameter holds the tuple of extra positional values and a
        ``**kwargs`` one the dict of extra keywords.  This is the run's
        ``parameters``; :meth:`as_call` turns it back into a call.
        """
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as err:
            raise ParameterError(self._bind_error(err, kwargs)) from None
        bound.apply_defaults()
        return self._check_values(dict(bound.arguments))

    def as_call(self, parameters: Mapping[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """The positional and keyword arguments of a call with these ``parameters``
        (names to values, as :meth:`bind` returns them and ``run.parameters``,
        ``daskflow run --param`` and ``serve(parameters=)`` take them).

        The ``*args`` parameter's name takes a list or tuple of the extra
        positional values (earlier positional parameters then take their
        defaults unless given); the ``**kwargs`` parameter's name takes a dict
        of extra keywords, and any other name the function does not have is
        one more of them (or, with no ``**kwargs``, an unknown parameter for
        :meth:`bind` to refuse).

        >>> import daskflow as df
        >>> f = df.flow(lambda a, /, *rest, b=2, **more: None, name="f")
        >>> f.as_call({"a": 1, "rest": [5, 6], "c": 3})
        ((1, 5, 6), {'c': 3})
        """
        given = dict(parameters)
        arguments: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for p in self.signature.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                extra = dict(self._variadic(p, given.pop(p.name, {})))
            elif p.kind is p.VAR_POSITIONAL:
                arguments[p.name] = tuple(self._variadic(p, given.pop(p.name, ())))
            elif p.name in given:
                arguments[p.name] = given.pop(p.name)
            elif p.default is not p.empty and p.kind is not p.KEYWORD_ONLY:
                arguments[p.name] = p.default  # so that later positional values keep their place
        clash = sorted(set(given) & set(extra))
        if clash:
            raise ParameterError(f"flow {self.name!r}: {clash} given twice, by name and "
                                 "inside the dict of extra keywords")
        bound = inspect.BoundArguments(self.signature, collections.OrderedDict(arguments))
        return bound.args, {**bound.kwargs, **extra, **given}

    def _variadic(self, p: inspect.Parameter, value: Any) -> Any:
        """The value given by name for ``*args`` (a list or tuple) or ``**kwargs`` (a dict)."""
        if p.kind is p.VAR_POSITIONAL and isinstance(value, (list, tuple)):
            return value
        if p.kind is p.VAR_KEYWORD and isinstance(value, dict) and all(
                isinstance(k, str) for k in value):
            return value
        if p.kind is p.VAR_POSITIONAL:
            what = f"*{p.name}) holds its extra positional values: give a list, e.g. [1, 2]"
        else:
            what = (f"**{p.name}) holds its extra keyword values: give a dict with str keys, "
                    "or give each one by its own name")
        raise ParameterError(f"parameter {p.name!r} of flow {self.name!r} ({what}; got "
                             f"{type(value).__name__} {value!r:.60}")

    def _check_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters checked against their type hints and coerced (see
        :mod:`daskflow.core.params`; PEP 484: ``*args: int`` types each extra
        positional value, ``**kwargs: int`` each extra keyword's), and no run
        option among the extra keywords (``flow.run`` takes those names itself)."""
        hints = _hints(self.fn) if self.validate_parameters else {}
        out = dict(params)
        for pname, value in params.items():
            kind = self.signature.parameters[pname].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                _refuse_run_options(self.name, pname, value)
            hint = hints.get(pname)
            if hint is None:
                continue
            if kind is inspect.Parameter.VAR_POSITIONAL:
                out[pname] = tuple(self._coerce(v, hint, f"value {i} of *{pname}")
                                   for i, v in enumerate(value))
            elif kind is inspect.Parameter.VAR_KEYWORD:
                out[pname] = {k: self._coerce(v, hint, f"parameter {k!r} (in **{pname})")
                              for k, v in value.items()}
            else:
                out[pname] = self._coerce(value, hint, f"parameter {pname!r}")
        return out

    def _coerce(self, value: Any, hint: Any, what: str) -> Any:
        if isinstance(value, Ref):
            return value
        return coerce(value, hint, f"{what} of flow {self.name!r}", deep=not refs_in(value))

    def _bind_error(self, err: TypeError, kwargs: dict[str, Any]) -> str:
        """What is wrong with a call's parameters: every unknown one (with a
        did-you-mean among the parameters and the run options) and Python's
        own complaint (a missing one, say)."""
        params = self.signature.parameters
        names = ", ".join(params) or "none"
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [] if takes_any else [k for k in kwargs if k not in params]
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(params), n=1)
            option = difflib.get_close_matches(key, RUN_OPTIONS, n=1)
            hint = (f" (did you mean {close[0]!r}?)" if close else
                    f" (did you mean the run option {option[0]}=?)" if option else "")
            hints.append(f"{key!r}{hint}")
        said = f"unknown parameter(s) {', '.join(hints)}" if hints else ""
        if not hints or "unexpected keyword" not in str(err):
            said = f"{said}; {err}" if said else str(err)
        return f"flow {self.name!r}: {said}; its parameters are: {names}"

    def build(self, params: dict[str, Any]) -> tuple[Builder, Any]:
        """Run the body once with a builder active and no run; return it and the
        body's return value.  A body that waits for a value stops there
        (:class:`~daskflow.define.build.WaitOutsideRun`)."""
        with Builder(self.name) as builder:
            returned = self._body(params, builder)
        check_built(builder.nodes)
        return builder, returned

    def _body(self, params: dict[str, Any], builder: Builder) -> Any:
        """Run the body with ``builder`` active; its return value."""
        builder.enter_flow(self)
        returned = self._invoke(params)
        builder.exit_flow()
        return returned

    def _invoke(self, params: dict[str, Any]) -> Any:
        """Call the function with ``params`` from :meth:`bind`: ``*args`` and
        positional-only parameters positionally, the rest by keyword."""
        bound = inspect.BoundArguments(self.signature, collections.OrderedDict(params))
        if self.is_async:  # built here, to its end, on an event loop of its own
            return _drive(self.fn(*bound.args, **bound.kwargs))
        return self.fn(*bound.args, **bound.kwargs)

    async def _nested_async(self, builder: Builder, params: dict[str, Any]) -> Any:
        """An async flow awaited in another async flow's body: built into its graph."""
        bound = inspect.BoundArguments(self.signature, collections.OrderedDict(params))
        builder.enter_flow(self)
        try:
            with builder.nested(self.name):
                return await self.fn(*bound.args, **bound.kwargs)  # type: ignore[misc]
        finally:
            builder.exit_flow()

    async def _call_async(self, args: tuple, kwargs: dict[str, Any]) -> Any:
        """``await flow(...)``: the run goes on in a thread; this event loop is free."""
        run = await asyncio.to_thread(functools.partial(self.run, *args, **kwargs))
        return run.result()

    # -- running ------------------------------------------------------------------
    def __call__(self, *args: Any, cluster: Any = None, scatter: bool | None = None,
                 concurrency: Any = None, refresh_cache: bool = False, progress: Any = None,
                 fuse: bool | None = None, **kwargs: Any) -> Any:
        builder = current_builder()
        if builder is not None:
            if (cluster is not None or concurrency is not None or refresh_cache or progress
                    or fuse is not None):
                raise FlowDefinitionError(
                    f"flow {self.name!r} is called inside another flow, so it shares that "
                    "flow's cluster, limits and cache; remove cluster=, concurrency= and "
                    "refresh_cache= from the nested call")
            params = self.bind(*args, **kwargs)
            if self.is_async and _caller_is_async():
                return self._nested_async(builder, params)
            builder.enter_flow(self)
            try:
                with builder.nested(self.name):
                    return self._invoke(params)
            finally:
                builder.exit_flow()
        options = dict(cluster=cluster, scatter=scatter, concurrency=concurrency,
                       refresh_cache=refresh_cache, progress=progress, fuse=fuse)
        if self.is_async and _caller_is_async():  # `await flow(...)`
            return self._call_async(args, {**options, **kwargs})
        return self.run(*args, **options, **kwargs).result()

    def run(self, *args: Any, cluster: Any = None, scatter: bool | None = None,
            concurrency: Any = None, refresh_cache: bool = False, progress: Any = None,
            fuse: bool | None = None, **kwargs: Any) -> FlowRun:
        """Run the flow and return its finished :class:`FlowRun`; never raises
        for task errors (a cluster that cannot be used, a lost scheduler, or
        Ctrl-C do raise).

        ``cluster=`` says where (see :mod:`daskflow.driver.connect`);
        ``scatter=False`` keeps large constants in the graph for this run;
        ``concurrency={"tag": n}`` adds tag concurrency limits (over the flow's);
        ``refresh_cache=True`` recomputes cached tasks and overwrites their results;
        ``progress=False`` hides the live progress (see :mod:`daskflow.ui.progress`);
        ``fuse=False`` keeps one Dask task per task run.
        """
        mode = live.wanted(progress)
        resume = attempts.private_store(self)  # None: no retries, or cache=True
        cluster = attempts.SharedCluster.wrap(self, cluster)  # one for all attempts
        first = self._engine("run", args, kwargs, cluster, scatter, concurrency, refresh_cache,
                             fuse, resume)  # bad parameters raise here, before anything

        def make(attempt: int, run: FlowRun | None) -> Engine:
            return first if attempt == 1 else self._engine(
                "run", args, kwargs, cluster, scatter, concurrency, refresh_cache, fuse, resume,
                run)

        def go(engine: Engine) -> FlowRun:
            trackers: list[Any] = []
            engine.on_start = lambda run: trackers.append(live.follow(run, mode))
            try:
                return engine.run()
            finally:
                for tracker in trackers:
                    if tracker is not None:
                        tracker.stop()

        return attempts.run(self, make, go, resume)

    def submit(self, *args: Any, cluster: Any = None, scatter: bool | None = None,
               concurrency: Any = None, refresh_cache: bool = False, progress: Any = None,
               fuse: bool | None = None, **kwargs: Any) -> FlowRun:
        """Start the flow and return its live :class:`FlowRun` at once.

        The run goes on in a background thread; ``run.wait()``,
        ``run.done()``, ``run.result()`` and ``run.cancel()`` follow it and
        ``run.states`` / ``run.state`` show where it is.  Parameters are
        checked and the body is built (up to its first wait for a value)
        before this returns, so those errors raise here; the rest of the
        body runs in that thread, and so do the next attempts of a flow with
        ``retries`` (in the same FlowRun: ``run.attempt``).
        """
        resume = attempts.private_store(self)
        cluster = attempts.SharedCluster.wrap(self, cluster)  # one for all attempts
        engine = self._engine("submit", args, kwargs, cluster, scatter, concurrency,
                              refresh_cache, fuse, resume)
        if self.retries:
            def make(attempt: int, run: FlowRun | None) -> Engine:
                return self._engine("submit", args, kwargs, cluster, scatter, concurrency,
                                    refresh_cache, fuse, resume, run)

            engine.last_attempt = functools.partial(attempts.ends, False)
            engine.then = lambda: attempts.carry_on(self, make, Engine.run, resume,
                                                    engine.flow_run, cluster)
        run = engine.submit()
        live.follow(run, live.wanted(progress))  # its thread ends with the run
        return run

    def _engine(self, how: str, args: tuple, kwargs: dict, cluster: Any,
                scatter: bool | None, concurrency: Any = None,
                refresh_cache: bool = False, fuse: bool | None = None,
                resume: str | None = None, previous: FlowRun | None = None) -> Engine:
        if current_builder() is not None:
            raise FlowDefinitionError(
                f"{self.name}.{how}() was called inside a flow body; call {self.name}(...) "
                "to nest it instead")
        cluster = self.cluster if cluster is None else cluster
        try:
            check_cluster(cluster)
            limits = check_limits(f"this run of flow {self.name!r}", concurrency)
            params = self.bind(*args, **kwargs)
            run_name = self._run_name(params)
        except DaskflowError as err:  # the run never started: its record says why
            record_failed_start(self.name, err)
            # the message says it all: daskflow's checking frames would only push
            # the caller's line up the screen
            raise err.with_traceback(None) from None
        engine = Engine(self.name, params, functools.partial(self._body, params), cluster,
                        self.scatter if scatter is None else scatter, flow=self,
                        limits=resolve_limits(self.concurrency, limits),
                        cache=(self.cache, self.result_storage, bool(refresh_cache)),
                        fuse=self.fuse if fuse is None else bool(fuse), flow_run=previous)
        engine.flow_run.run_name, engine.timeout = run_name, self.timeout
        engine.resume = resume
        return engine

    def _run_name(self, params: dict[str, Any]) -> str | None:
        """The run's ``flow_run_name``, formatted before anything starts."""
        if self.flow_run_name is None:
            return None
        try:
            return format_run_name(self.flow_run_name, params)
        except RunNameError:
            raise
        except Exception as err:
            raise RunNameError(f"flow_run_name {self.flow_run_name!r} of flow {self.name!r} "
                               f"could not be formatted: {type(err).__name__}: {err}") from None

    def serve(self, *, cron: str | None = None, interval: Any = None,
              parameters: dict[str, Any] | None = None, cluster: Any = None, tz: Any = None,
              catchup: str = "none", overlap: str = "skip", limit: int | None = None,
              state_dir: str | None = None, grace: float = 60.0,
              clock: Any = None) -> list[FlowRun]:
        """Run the flow on a schedule until interrupted, or until ``limit`` runs
        started (then wait for them); return the runs.

        Give ``cron="0 * * * *"`` (five fields, in ``tz``: a zone name, by
        default this machine's) or ``interval=`` (seconds, a timedelta or
        ``"10m"``; the first run starts at once).  ``parameters`` are the
        flow's by name (as ``run.parameters`` holds them, see :meth:`as_call`),
        checked now.  A cluster the server starts (a spec, a profile,
        the temporary default) is started once, kept between runs and closed
        on exit.  ``catchup`` ("none", "latest", "all") says what to do with
        fires missed while the process slept (a fire late by more than
        ``grace`` seconds is missed); ``overlap`` ("skip", "queue", "allow")
        what to do with a fire while a run is still going.  The last fire is
        kept in ``state_dir`` (setting ``daskflow.serve.state-dir``), where a
        lock also refuses a second server of this flow.  ``clock`` (an object
        with ``now()`` returning an aware datetime, and ``sleep(seconds)``)
        stands in for the wall clock in tests.

        Runs happen only while this process lives: see docs/automation.md for a
        systemd timer or crontab line running ``daskflow run`` instead.
        """
        if current_builder() is not None:
            raise FlowDefinitionError(f"{self.name}.serve() was called inside a flow body")
        return schedule.serve(self, cron=cron, interval=interval, parameters=parameters,
                     cluster=cluster, tz=tz, catchup=catchup, overlap=overlap, limit=limit,
                     state_dir=state_dir, grace=grace, clock=clock)

    def visualize(self, *args: Any, filename: str | None = None, format: str | None = None,
                  **kwargs: Any) -> Any:
        """The flow's task graph as a ``graphviz.Digraph`` (rendered to ``filename`` if given).

        A body that waits for a task's value (``ref.result()``) is drawn up to
        its first wait, with a note there: what follows depends on the value.
        """
        params = self.bind(*args, **kwargs)
        stopped = None
        with Builder(self.name) as builder:
            try:
                returned = self._body(params, builder)
            except WaitOutsideRun as stop:
                returned, stopped = None, stop.node
        return to_graphviz(self.name, builder.nodes, returned_nodes(returned),
                           filename=filename, format=format, stopped_at=stopped)

    def __repr__(self) -> str:
        return f"<Flow {self.name}>"


_FLOW_OPTIONS = [p for p in inspect.signature(Flow.__init__).parameters if p not in ("self", "fn")]


def flow(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a flow: ``@flow`` or ``@flow(name=..., cluster=...)``."""
    check_options("@flow", options, _FLOW_OPTIONS)
    if fn is None:
        return lambda f: Flow(f, **options)
    return Flow(fn, **options)


# -- signatures and type hints ----------------------------------------------------------


def _check_signature(name: str, fn: Callable[..., Any]) -> inspect.Signature:
    """The signature of a flow body, refused at decoration when daskflow
    cannot call it as written (never a run with silently wrong values)."""
    if inspect.isasyncgenfunction(fn):
        raise FlowDefinitionError(
            f"flow {name!r} is an async generator function (async def with yield), so "
            "awaiting it would not run its body; return the results instead of yielding them")
    if inspect.isgeneratorfunction(fn):
        raise FlowDefinitionError(
            f"flow {name!r} is a generator function (it uses yield), so calling it would "
            "not run its body; return the results instead of yielding them")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise FlowDefinitionError(f"flow {name!r}: Python cannot read the signature of "
                                  f"{fn!r} ({err}); wrap it in a def") from None
    for reserved in RUN_OPTIONS:
        if reserved in signature.parameters:
            raise FlowDefinitionError(
                f"flow {name!r} has a parameter named {reserved!r}, which daskflow "
                f"reserves for the run option {reserved}=; rename it"
            )
    return signature


# -- async flow bodies ---------------------------------------------------------------


def _caller_is_async(depth: int = 2) -> bool:
    """Whether the code calling the flow is a coroutine (``async def``, or a
    Jupyter cell that uses ``await``), which awaits what the call returns."""
    frame = sys._getframe(depth)
    return bool(frame.f_code.co_flags & inspect.CO_COROUTINE)


def _drive(coro: Any) -> Any:
    """Run an async flow body to its end from sync code: on an event loop of
    its own in this thread, or, when this thread runs a loop already
    (Jupyter's), in a thread of its own while this one waits."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    context = contextvars.copy_context()  # the body's builder, in that thread too
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["value"] = context.run(asyncio.run, coro)
        except BaseException as err:  # raised again in the caller's thread
            out["error"] = err

    thread = threading.Thread(target=body, name="daskflow-async-body", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _refuse_run_options(name: str, pname: str, extra: dict[str, Any]) -> None:
    """A run option among a flow's extra keywords: a run would take it as the option."""
    taken = [k for k in extra if k in RUN_OPTIONS]
    if taken:
        raise ParameterError(
            f"flow {name!r}: {', '.join(map(repr, taken))} cannot be an extra keyword "
            f"parameter (in **{pname}): daskflow takes {', '.join(taken)}= as a run option "
            f"of flow.run; rename it (the run options are {', '.join(RUN_OPTIONS)})")



def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: skip checking
        return {}
