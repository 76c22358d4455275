"""The wrapper every task runs in on a worker: failure is data.

``run_task(call, *upstream_states)`` is the function in every Dask task that
daskflow submits.  It decides from the upstream states whether the task runs
(skip propagation, then the trigger), substitutes upstream results into the
arguments, runs the attempts (retries with delays, ``retry_on``, ``SKIP``,
``FAIL``, ``timeout``) inside a run context, and *returns* a
:class:`~daskflow.states.State` instead of raising.  A failing task therefore
never tears the Dask graph down, and downstream wrappers decide for
themselves.

Each finished task's result-free summary is sent to the run's driver as it
ends (:mod:`daskflow.events`), so reading ``run.states`` never moves task
results and nothing about a run stays in a worker process.

What a task's code raises never escapes the wrapper: ``SystemExit``,
``KeyboardInterrupt`` and ``GeneratorExit`` end the task Failed like any
exception (on a worker they would otherwise take the worker process down).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

from daskflow import concurrency, events, signals, states
from daskflow.exceptions import (
    CacheMissError,
    MissingContextError,
    RemoteTaskError,
    TaskTimeoutError,
)
from daskflow.hooks import call_hooks, task_hooks_for
from daskflow.specs import Call, DataSlot, Slot, SlotItem, SlotList, TaskSpec, run_parameters
from daskflow.states import _NO_RESULT, State, StateType


def _value(state: State) -> Any:
    if state.type is StateType.COMPLETED or state.type is StateType.SKIPPED:
        result = state._result
        return None if result is _NO_RESULT else result
    return state.exception


_SEQUENCES = (list, tuple, range, str, bytes)
_as_lists: dict[int, tuple[Any, list]] = {}  # id -> (collection, its items), a few at most
_as_lists_lock = threading.Lock()


def _item(value: Any, j: int) -> Any:
    """Element ``j`` of a mapped-over result, in iteration order: a set or a
    dict (its keys) has no ``[j]``, so it is listed once per process."""
    if isinstance(value, _SEQUENCES):
        return value[j]
    with _as_lists_lock:
        hit = _as_lists.get(id(value))
        if hit is None or hit[0] is not value:
            if len(_as_lists) >= 8:
                _as_lists.clear()
            hit = _as_lists[id(value)] = (value, list(value))
    return hit[1][j]


def _subst(v: Any, states: tuple[State, ...], data: tuple = ()) -> Any:
    t = type(v)
    if t is Slot:
        return _value(states[v.i])
    if t is SlotItem:
        return _item(_value(states[v.i]), v.j)
    if t is DataSlot:
        return data[v.j]
    if t is SlotList:
        return [_value(states[j]) for j in range(v.start, v.stop)]
    if t is list or t is tuple or t is set or t is frozenset:
        return t(_subst(x, states, data) for x in v)
    if t is dict:
        return {k: _subst(x, states, data) for k, x in v.items()}
    return v


# -- the run context -----------------------------------------------------------


class TaskRunContext:
    """What a running task can learn about itself: ``df.context()``."""

    __slots__ = ("_call", "attempt")

    def __init__(self, call: Call, attempt: int) -> None:
        self._call = call
        self.attempt = attempt

    task_name = property(lambda self: self._call.name, doc="The task's name in the flow.")
    task_run_name = property(lambda self: self._call.display_name, doc='"name" or "name[i]".')
    map_index = property(lambda self: self._call.index, doc="Index in a map, else None.")
    flow_name = property(lambda self: self._call.spec.run.flow_name)
    flow_run_id = property(lambda self: self._call.spec.run.run_id)
    parameters = property(lambda self: run_parameters(self._call.spec.run),
                          doc="The flow run's parameters.")
    tags = property(lambda self: self._call.spec.tags)
    key = property(lambda self: self._call.key, doc="The Dask key of this task.")
    dashboard_link = property(lambda self: self._call.spec.run.dashboard,
                              doc="The Dask dashboard of the run's cluster, if any.")

    def __repr__(self) -> str:
        return (f"<TaskRunContext {self.flow_name}/{self.task_run_name} "
                f"attempt={self.attempt} run={self.flow_run_id}>")


_context: contextvars.ContextVar[TaskRunContext | None] = contextvars.ContextVar(
    "daskflow_task_run", default=None
)


def context() -> TaskRunContext:
    """The context of the task running in this thread.

    Raises ``MissingContextError`` outside a running task.
    """
    ctx = _context.get()
    if ctx is None:
        raise MissingContextError(
            "df.context() was called outside a running task; call it inside the "
            "body of a @df.task while its flow runs"
        )
    return ctx


# -- logging ---------------------------------------------------------------------

_log_lock = threading.Lock()


class _ForwardHandler(logging.Handler):
    """Sends a worker's task log records to the run's driver (and only there)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            worker = _current_worker()
            ctx = _context.get()
            if worker is None or ctx is None:  # outside a task
                return
            msg = {k: v for k, v in record.__dict__.items()
                   if isinstance(v, (str, int, float, bool, type(None)))}
            msg["msg"] = record.getMessage()
            msg["args"] = None
            msg["name"] = "daskflow.task"
            events.emit(worker, ctx._call.spec.run, log_msg=msg)
        except Exception:  # pragma: no cover - logging must never break a task
            self.handleError(record)


def _task_logger() -> logging.Logger:
    """``daskflow.task`` in this process, or on a worker ``daskflow.worker``,
    which only forwards to the driver (the driver re-emits as ``daskflow.task``)."""
    if _current_worker() is None:
        return logging.getLogger("daskflow.task")
    logger = logging.getLogger("daskflow.worker")
    if not logger.handlers:
        with _log_lock:
            if not logger.handlers:
                from daskflow import config

                logger.setLevel(str(config.get("logging.level")).upper())
                logger.propagate = False
                logger.addHandler(_ForwardHandler())
    return logger


def get_run_logger() -> logging.LoggerAdapter:
    """A logger for the running task; its records reach the driver's terminal.

    >>> import daskflow as df
    >>> @df.task
    ... def hello():
    ...     df.get_run_logger().info("hello from a worker")
    """
    ctx = _context.get()
    if ctx is None:
        raise MissingContextError(
            "df.get_run_logger() was called outside a running task; use it inside "
            "a @df.task body, or logging.getLogger(...) elsewhere"
        )
    return _call_logger(ctx._call)


def _call_logger(call: Call) -> logging.LoggerAdapter:
    """The run logger of one task run, labelled ``flow/task[i]``."""
    spec = call.spec
    return logging.LoggerAdapter(_task_logger(), {
        "daskflow_task": f"{spec.run.flow_name}/{call.display_name}",
        "daskflow_run": spec.run.run_id,
    })


def task_logger(fallback: logging.Logger) -> Any:
    """The run logger inside a running task (its records reach the driver),
    else ``fallback``: for code that runs both in tasks and on the driver."""
    return get_run_logger() if _context.get() is not None else fallback


def _current_worker() -> Any:
    from distributed.worker import thread_state

    if getattr(thread_state, "key", None) is None:
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


# -- print() as log records ---------------------------------------------------------

_prints: contextvars.ContextVar[bool] = contextvars.ContextVar("daskflow_log_prints",
                                                                default=False)
_print_lock = threading.Lock()
_original_print: Any = None


def _hook_print() -> None:
    """Chain ``builtins.print`` once per process: inside a task with
    ``log_prints`` a print to stdout becomes an INFO record of the run
    logger; every other print (other threads, other tasks, ``file=``) goes
    to the print that was there before."""
    global _original_print
    import builtins

    if _original_print is not None:
        return
    with _print_lock:
        if _original_print is not None:
            return
        previous = builtins.print

        def print(*args: Any, sep: str | None = " ", end: str | None = "\n",
                  file: Any = None, flush: bool = False) -> None:
            if _prints.get() and (file is None or file is sys.stdout) and _context.get():
                text = ("" if sep is None else sep).join(map(str, args))
                get_run_logger().info("%s", text)
                return
            previous(*args, sep=sep, end=end, file=file, flush=flush)

        print.__wrapped__ = previous  # type: ignore[attr-defined]
        _original_print = previous
        builtins.print = print


# -- where a finished state goes ----------------------------------------------------


def _finish(call: Call, state: State) -> State:
    """Label a final state and send its summary to the run's driver."""
    state.task_name = call.display_name
    state.map_index = call.index
    run = call.spec.run
    worker = _current_worker() if run.owner is not None else None
    if worker is None:  # an in-process run (even one started inside a Dask task)
        events.local_state(run.run_id, call.key, state.summary())
        if call.spec.task.has_hooks:
            _state_hooks(call, state, task_hooks_for(call.spec.task, state), secede=False)
        return state
    state.worker = worker.address
    state._origin = (run, call.key)
    if not states._serialization_registered:
        states.register_serialization()
    events.emit(worker, run, state_msg=events.encode_state(call.key, state),
                at_transition=not getattr(_fused, "inner", False))
    if call.spec.task.has_hooks:
        _state_hooks(call, state, task_hooks_for(call.spec.task, state), secede=True)
    return state


_fused = threading.local()  # .inner: this thread runs a task inside a fused one, not its last


class MapCall:
    """What every child of one map shares; it is the function of their tasks.

    A map child's :class:`~daskflow.specs.Call` differs from its siblings'
    only in its index and its element of each mapped constant.  Their Dask
    tasks are ``Task((base, i), map_call, i, *elements, *inputs)``: the
    shared part is pickled once per graph, so a child costs about what a raw
    Dask task does, and the child's ``Call`` is made on the worker.
    ``values`` are the argument positions filled from ``elements``;
    ``items`` are the positions of element ``i`` of a whole upstream result
    (``(position, slot)``).
    """

    __slots__ = ("spec", "name", "base", "args", "kwargs", "subst", "allowed", "ndata",
                 "values", "items")

    def __init__(self, spec: TaskSpec, name: str, base: str, args: tuple, kwargs: dict,
                 subst: bool, allowed: frozenset[int], ndata: int, values: tuple,
                 items: tuple) -> None:
        self.spec, self.name, self.base = spec, name, base
        self.args, self.kwargs, self.subst = args, kwargs, subst
        self.allowed, self.ndata = allowed, ndata
        self.values, self.items = values, items

    def __reduce__(self) -> Any:
        return (MapCall, (self.spec, self.name, self.base, self.args, self.kwargs, self.subst,
                          self.allowed, self.ndata, self.values, self.items))

    def __dask_tokenize__(self) -> Any:
        return ("daskflow.MapCall", self.base)

    def call(self, i: int, elements: tuple | list) -> Call:
        """The ``Call`` of child ``i``."""
        if self.values == (0,) and not self.items and len(self.args) == 1:
            args: tuple = (elements[0],)  # the common case: f.map(values)
            kwargs = self.kwargs
        else:
            a, kwargs = list(self.args), dict(self.kwargs) if self.kwargs else self.kwargs
            for pos, value in zip(self.values, elements):
                if type(pos) is int:
                    a[pos] = value
                else:
                    kwargs[pos] = value
            for pos, slot in self.items:
                if type(pos) is int:
                    a[pos] = SlotItem(slot, i)
                else:
                    kwargs[pos] = SlotItem(slot, i)
            args = tuple(a)
        return Call(self.spec, self.name, (self.base, i), i, args, kwargs, self.subst,
                    self.allowed, self.ndata)

    def __call__(self, i: int, *rest: Any) -> State:
        n = len(self.values)
        return run_task(self.call(i, rest[:n]), *rest[n:])


class FusedMap:
    """The function of one element of a fused chain of maps: child ``i`` of
    each map in turn (see :func:`run_fused`).  Its task's arguments are
    ``i``, the mapped constants of each map in order, then the inputs of the
    first."""

    __slots__ = ("maps",)

    def __init__(self, maps: tuple[MapCall, ...]) -> None:
        self.maps = maps

    def __reduce__(self) -> Any:
        return (FusedMap, (self.maps,))

    def __dask_tokenize__(self) -> Any:
        return ("daskflow.FusedMap", self.maps[-1].base)

    def calls(self, i: int, rest: tuple) -> tuple[tuple[Call, ...], tuple]:
        """The calls of element ``i`` and the inputs left for the first."""
        calls, at = [], 0
        for m in self.maps:
            n = len(m.values)
            calls.append(m.call(i, rest[at:at + n]))
            at += n
        return tuple(calls), rest[at:]

    def __call__(self, i: int, *rest: Any) -> State:
        calls, inputs = self.calls(i, rest)
        return run_fused(calls, *inputs)


def run_fused(calls: tuple[Call, ...], *inputs: Any) -> State:
    """Several tasks in one Dask task: each runs through :func:`run_task`
    (its own state, retries, hooks, logs), the next one receiving its state.
    The states of all but the last are sent as they end."""
    _fused.inner = True
    try:
        state = run_task(calls[0], *inputs)
        for call in calls[1:-1]:
            _check_wanted(calls[-1].key)
            state = run_task(call, state)
    finally:
        _fused.inner = False
    _check_wanted(calls[-1].key)
    return run_task(calls[-1], state)


class FusedTaskCancelled(Exception):
    """The run was cancelled while a fused task ran: the rest of its tasks never start."""


def _check_wanted(key: Any) -> None:
    """Between the tasks of a fused one, stop if the run was cancelled.

    In process (``cluster="sync"``) the runner installs its cancel check as
    ``_fused.check`` (it raises); on a worker the fused task's own key tells:
    the driver released it, so the worker marked it cancelled.
    """
    check = getattr(_fused, "check", None)
    if check is not None:
        check()
    elif _cancelled_on_worker(key):
        raise FusedTaskCancelled(f"{key!r} was cancelled; its remaining tasks do not start")


def _cancelled_on_worker(key: Any) -> bool:
    """Whether this worker has marked the task ``key`` cancelled.

    distributed has no public API for "is my task still wanted": this reads
    ``Worker.state.tasks[key].state`` (the worker state machine's own
    record), isolated here and checked by
    ``test_a_cancelled_fused_task_stops_between_its_tasks``.
    """
    worker = _current_worker()
    if worker is None:
        return False
    ts = worker.state.tasks.get(key)
    return ts is None or ts.state in ("cancelled", "released", "forgotten")


def _state_hooks(call: Call, state: State, chosen: tuple, secede: bool) -> None:
    """Call ``chosen`` hooks for ``state`` in the task's context; with ``secede``
    its thread is given back to Dask meanwhile."""
    if not chosen:
        return
    token = _context.set(TaskRunContext(call, max(state.attempts, 1)))
    try:
        with _seceded(secede):
            call_hooks(chosen, call.spec.task, state, get_run_logger(),
                             f"task {call.display_name!r}")
    finally:
        _context.reset(token)


# -- deciding and running -------------------------------------------------------

_SUCCESS_TRIGGERS = (signals.all_successful, signals.any_successful)
_FAILURE_TRIGGERS = (signals.any_failed, signals.all_failed)


def _decide(call: Call, upstream: tuple[State, ...]) -> State | None:
    """The state of a task that must not run, or None to run it."""
    spec = call.spec
    considered = upstream if not call.allowed else tuple(
        s for i, s in enumerate(upstream) if i not in call.allowed)
    if spec.skip_on_upstream_skip:
        for s in considered:
            if s.type is StateType.SKIPPED:
                return State(StateType.SKIPPED, name="UpstreamSkipped",
                             message=f"upstream task {s.task_name!r} was skipped")
    trigger = spec.trigger
    try:
        if trigger(considered):
            return None
    except Exception as err:
        return State(StateType.FAILED, name="TriggerFailed", exception=err,
                     message=f"trigger {getattr(trigger, '__name__', trigger)} raised {err!r}")
    failed = next((s for s in considered if s.is_failed()), None)
    if trigger in _FAILURE_TRIGGERS or (failed is None and trigger not in _SUCCESS_TRIGGERS):
        return State(StateType.SKIPPED, name="NotTriggered",
                     message=f"trigger {trigger.__name__} was not met")
    cause = f"upstream task {failed.task_name!r} failed" if failed else "no upstream task succeeded"
    return State(StateType.FAILED, name="TriggerFailed", message=cause,
                 exception=failed.exception if failed else None)


def run_task(call: Call, *upstream: State) -> State:
    """Run one task call on a worker and return its state (never raises)."""
    start = time.time()
    data: tuple = ()
    if call.ndata:
        data, upstream = upstream[-call.ndata:], upstream[:-call.ndata]
    if upstream:
        decided = _decide(call, upstream)
        if decided is not None:
            decided.start = start
            return _finish(call, decided)
    if call.subst:
        try:
            args = _subst(call.args, upstream, data)
            kwargs = _subst(call.kwargs, upstream, data)
        except Exception as err:  # e.g. element i of an upstream result that has no [i]
            return _finish(call, _failed(err, 0, start, f"could not build the arguments of "
                                         f"{call.display_name!r}: {type(err).__name__}: {err}"))
    else:
        args, kwargs = call.args, call.kwargs
    if call.spec.cache is not None:
        return _finish(call, _through_cache(call, args, kwargs, start))
    return _finish(call, _attempts(call, args, kwargs, start))


def run_cached(call: Call) -> State:
    """A task whose stored result the driver found before the run: load it here."""
    from daskflow import cache

    start = time.time()
    settings = call.spec.cache
    assert settings is not None and call.cache is not None
    token = _context.set(TaskRunContext(call, 0))
    try:
        value = cache.load(settings, call.cache, call.display_name)
    finally:
        _context.reset(token)
    if value is cache.MISS:
        err = CacheMissError(
            f"the stored result of {call.display_name!r} ({call.cache}) was there when the "
            "run started but cannot be read now (removed or expired meanwhile); run the "
            "flow again to recompute it")
        return _finish(call, State(StateType.FAILED, exception=err, message=str(err),
                                   start=start))
    return _finish(call, State(StateType.COMPLETED, name="Cached", result=value, start=start,
                               message=f"reused the stored result {call.cache}"))


def _through_cache(call: Call, args: tuple, kwargs: dict, start: float) -> State:
    """Reuse the stored result of a cached task, or run it and store the result."""
    from daskflow import cache

    settings = call.spec.cache
    assert settings is not None
    task = call.spec.task
    token = _context.set(TaskRunContext(call, 1))
    try:
        key = call.cache
        if task.cache_key is not None:
            try:
                key = cache.custom_key(task, _context.get(), args, kwargs)
            except Exception as err:
                return _failed(err, 0, start, f"cache_key of {call.display_name!r} raised "
                                              f"{type(err).__name__}: {err}")
        if key is not None and settings.mode == "cache" and not settings.refresh:
            value = cache.load(settings, key, call.display_name)
            if value is not cache.MISS:
                return State(StateType.COMPLETED, name="Cached", result=value, start=start,
                             message=f"reused the stored result {key}")
    finally:
        _context.reset(token)
    state = _attempts(call, args, kwargs, start)
    if key is not None and state.type is StateType.COMPLETED:
        token = _context.set(TaskRunContext(call, state.attempts))
        try:
            version = task.cache_version or cache.code_version(task.fn)
            cache.store(settings, key, state._result, call.display_name,
                        call.spec.run.flow_name, version)
        finally:
            _context.reset(token)
    return state


# Raised by a task's code, these must not reach Dask: a worker thread that
# raises them takes its worker process down (and Dask retries the task on
# the next worker, until KilledWorker).
_PROCESS_EXITS = (SystemExit, KeyboardInterrupt, GeneratorExit)


def _attempts(call: Call, args: tuple, kwargs: dict, start: float) -> State:
    """Run the attempts; a retried task's state keeps each attempt's (start, end)."""
    marks: list[float] = []  # start of each attempt, and the end of each retried one
    state = _attempt_loop(call, args, kwargs, start, marks)
    if len(marks) > 1:
        end = state.end if state.end is not None else time.time()
        state.tries = tuple(zip(marks[::2], [*marks[1::2], end]))
    return state


def _attempt_loop(call: Call, args: tuple, kwargs: dict, start: float,
                  marks: list[float]) -> State:
    spec = call.spec
    attempt = 0
    while True:
        attempt += 1
        marks.append(time.time())
        token = _context.set(TaskRunContext(call, attempt))
        try:
            prints = _prints.set(True) if spec.log_prints else None
            try:
                if spec.log_prints:
                    _hook_print()
                if spec.limits and _current_worker() is not None:
                    with concurrency.slots(spec.limits, get_run_logger()):
                        result = _call(spec, args, kwargs)
                else:
                    result = _call(spec, args, kwargs)
            finally:
                if prints is not None:
                    _prints.reset(prints)
            return State(StateType.COMPLETED, result=result, attempts=attempt, start=start)
        except signals.SKIP as sig:
            return State(StateType.SKIPPED, message=sig.message, result=sig.result,
                         attempts=attempt, start=start)
        except signals.FAIL as sig:
            return _failed(sig, attempt, start, sig.message or "FAIL signal raised", call)
        except _PROCESS_EXITS as err:
            if isinstance(err, KeyboardInterrupt) and _current_worker() is None:
                raise  # in process this is the user's Ctrl-C: it interrupts the run
            return _failed(err, attempt, start,
                           f"the task raised {type(err).__name__}({_args(err)}); it ends the "
                           "task, never the worker process", call)
        except Exception as err:
            retryable = spec.retry_on is None or isinstance(err, spec.retry_on)
            if attempt > spec.retries or not retryable:
                return _failed(err, attempt, start, f"{type(err).__name__}: {err}", call)
            marks.append(time.time())
            delay = spec.retry_delays[min(attempt - 1, len(spec.retry_delays) - 1)]
            _log_retry(call, attempt, err, delay)
            if spec.task.on_retry:
                retrying = State(StateType.PENDING, name="AwaitingRetry", exception=err,
                                 message=f"attempt {attempt} failed with {type(err).__name__}: "
                                         f"{err}; retrying in {delay:g}s",
                                 attempts=attempt, start=start)
                retrying.task_name, retrying.map_index = call.display_name, call.index
                _state_hooks(call, retrying, spec.task.on_retry, secede=False)
        finally:
            _context.reset(token)
        _sleep(delay)


def _call(spec: TaskSpec, args: tuple, kwargs: dict) -> Any:
    if spec.timeout is None:
        return spec.fn(*args, **kwargs)
    return _with_timeout(spec, args, kwargs)


def _failed(err: BaseException, attempt: int, start: float, message: str,
            call: Call | None = None) -> State:
    """A Failed state whose exception can travel: one that does not survive
    pickling and unpickling is replaced by a RemoteTaskError describing it.
    The failure is one ERROR line of the run's log (its traceback is in the state)."""
    if call is not None:
        _call_logger(call).error("failed%s: %s", f" after {attempt} attempts" if attempt > 1 else "",
                             message)
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    if _current_worker() is not None and events.dump_exception(err) is None:
        err = RemoteTaskError(type(err).__name__, str(err), tb)
    return State(StateType.FAILED, message=message, exception=err, traceback=tb,
                 attempts=attempt, start=start)


def _args(err: BaseException) -> str:
    return ", ".join(map(repr, err.args))


def _log_retry(call: Call, attempt: int, err: BaseException, delay: float) -> None:
    _call_logger(call).warning("attempt %d of %d failed with %s: %s; retrying in %gs",
                           attempt, call.spec.retries + 1, type(err).__name__, err, delay)


def _sleep(delay: float) -> None:
    """Wait before a retry, giving the worker's thread slot to other tasks."""
    if delay <= 0:
        return
    with _seceded(_current_worker() is not None):
        time.sleep(delay)


@contextlib.contextmanager
def _seceded(active: bool) -> Iterator[None]:
    """While inside (when ``active``, on a worker), this thread's slot serves other tasks."""
    if not active:
        yield
        return
    from distributed import rejoin, secede

    secede()
    try:
        yield
    finally:
        rejoin()


def _with_timeout(spec: TaskSpec, args: tuple, kwargs: dict) -> Any:
    """Run ``spec.fn`` and interrupt it with TaskTimeoutError after ``spec.timeout``.

    The interruption is raised asynchronously in the running thread (as
    Prefect does for sync tasks); code blocked inside one C call is
    interrupted when that call returns.
    """
    tid = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(tid), ctypes.py_object(TaskTimeoutError))

    timer = threading.Timer(spec.timeout, fire)
    timer.daemon = True
    timer.start()
    try:
        try:
            result = spec.fn(*args, **kwargs)
        finally:
            with lock:
                state["done"] = True
            timer.cancel()
    except TaskTimeoutError:
        raise TaskTimeoutError(
            f"task {getattr(spec.fn, '__name__', 'task')!r} did not finish within its "
            f"timeout of {spec.timeout}s"
        ) from None
    finally:
        timer.join()
    if state["fired"]:  # fired after the function returned: drop the pending exception
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(tid), None)
    return result


# -- annotations -------------------------------------------------------------------


class ResourcesByKey:
    """The ``resources`` annotation of a graph, evaluated per key on the scheduler."""

    def __init__(self, by_key: dict[Any, dict[str, float]]) -> None:
        self.by_key = by_key

    def __call__(self, key: Any) -> dict[str, float]:
        return self.by_key.get(key, {})


# -- small internal tasks -------------------------------------------------------


def length_of(state: State) -> tuple[int, str]:
    """How many elements a mapped-over result has; ``(-1, why)`` if it cannot be mapped."""
    if state.type is not StateType.COMPLETED:
        return -1, f"upstream task {state.task_name!r} is {state.name}"
    value = state._result
    try:
        return len(value), ""
    except TypeError:
        return -2, (f"cannot map over the result of {state.task_name!r}: an object of type "
                    f"{type(value).__name__} is not a collection (it has no len()); return a "
                    "list, tuple, set or dict from that task")


def done(state: State) -> State:
    """A result-free copy of a state: lets a task wait without moving data."""
    return state.summary()
