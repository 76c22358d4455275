"""The wrapper every task runs in on a worker: failure is data.

``run_task(call, *upstream_states)`` is the function in every Dask task that
daskflow submits.  It decides from the upstream states whether the task runs
(skip propagation, then the trigger), substitutes upstream results into the
arguments, runs the attempts (retries with delays, ``retry_on``, ``SKIP``,
``FAIL``, ``timeout``) inside a run context, and *returns* a
:class:`~daskflow.states.State` instead of raising.  A failing task therefore
never tears the Dask graph down, and downstream wrappers decide for
themselves.

Each finished task also leaves a result-free summary of its state in a
registry local to its worker process, keyed by run id.  The driver pops a
run's summaries with one ``Client.run`` call at the end, so reading
``run.states`` never moves task results.
"""

from __future__ import annotations

import collections
import contextvars
import ctypes
import logging
import pickle
import threading
import time
import traceback
from typing import Any

from daskflow import signals
from daskflow.exceptions import MissingContextError, TaskTimeoutError
from daskflow.states import _NO_RESULT, State, StateType

# -- what the compiler puts in the graph -------------------------------------


class RunInfo:
    """What every task of one flow run shares."""

    __slots__ = ("flow_name", "run_id", "parameters")

    def __reduce__(self) -> Any:
        return (RunInfo, (self.flow_name, self.run_id, self.parameters))

    def __init__(self, flow_name: str, run_id: str, parameters: dict[str, Any]) -> None:
        self.flow_name = flow_name
        self.run_id = run_id
        self.parameters = parameters


class TaskSpec:
    """The options of one task, shared by all its Dask tasks in a run."""

    __slots__ = ("task", "fn", "kind", "retries", "retry_delays", "retry_on", "trigger",
                 "skip_on_upstream_skip", "tags", "timeout", "run")

    def __init__(self, task: Any, kind: str, run: RunInfo) -> None:
        self.task = task
        self.fn = task.fn
        self.kind = kind
        self.retries = task.retries
        self.retry_delays = task.retry_delays
        self.retry_on = task.retry_on
        self.trigger = task.trigger
        self.skip_on_upstream_skip = task.skip_on_upstream_skip
        self.tags = task.tags
        self.timeout = task.timeout
        self.run = run

    def __reduce__(self) -> Any:
        return (_load_spec, (_spec_blob(self),))


_spec_cache: dict[bytes, TaskSpec] = {}
_blobs: dict[int, tuple[TaskSpec, bytes]] = {}


def _spec_blob(spec: TaskSpec) -> bytes:
    """The spec pickled once (cloudpickle, so local functions work too)."""
    cached = _blobs.get(id(spec))
    if cached is not None and cached[0] is spec:
        return cached[1]
    import cloudpickle

    blob = cloudpickle.dumps((spec.task, spec.kind, spec.run), protocol=5)
    if len(_blobs) > 4096:
        _blobs.clear()
    _blobs[id(spec)] = (spec, blob)
    return blob


def _load_spec(blob: bytes) -> TaskSpec:
    """Unpickle a spec once per process: every task of a node ships the same bytes."""
    spec = _spec_cache.get(blob)
    if spec is None:
        import pickle

        if len(_spec_cache) > 4096:
            _spec_cache.clear()
        spec = _spec_cache[blob] = TaskSpec(*pickle.loads(blob))
    return spec


class Call:
    """One Dask task: its spec, node name, key, map index and argument template."""

    __slots__ = ("spec", "name", "key", "index", "args", "kwargs", "subst", "allowed", "ndata")

    def __init__(self, spec: TaskSpec, name: str, key: Any, index: int | None, args: tuple,
                 kwargs: dict, subst: bool, allowed: frozenset[int], ndata: int = 0) -> None:
        self.spec = spec
        self.name = name
        self.key = key
        self.index = index
        self.args = args
        self.kwargs = kwargs
        self.subst = subst
        self.allowed = allowed
        self.ndata = ndata  # the last `ndata` inputs are scattered data, not states

    def __reduce__(self) -> Any:
        return (Call, (self.spec, self.name, self.key, self.index, self.args, self.kwargs,
                       self.subst, self.allowed, self.ndata))

    def __dask_tokenize__(self) -> Any:
        # Keys are unique per run and per task, so they identify a call; this
        # spares Client.get from tokenizing every call by pickling it.
        return ("daskflow.Call", self.key)

    @property
    def display_name(self) -> str:
        name = self.name
        return name if self.index is None else f"{name}[{self.index}]"


class Slot:
    """Placeholder for the value of upstream state number ``i``."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __repr__(self) -> str:
        return f"Slot({self.i})"


class SlotItem:
    """Placeholder for element ``j`` of the value of upstream state ``i``."""

    __slots__ = ("i", "j")

    def __init__(self, i: int, j: int) -> None:
        self.i, self.j = i, j


class DataSlot:
    """Placeholder for scattered data input number ``j`` (a value, not a state)."""

    __slots__ = ("j",)

    def __init__(self, j: int) -> None:
        self.j = j


class SlotList:
    """Placeholder for the list of values of a whole map."""

    __slots__ = ("items",)

    def __init__(self, items: tuple) -> None:
        self.items = items


def _value(state: State) -> Any:
    if state.type is StateType.COMPLETED or state.type is StateType.SKIPPED:
        result = state._result
        return None if result is _NO_RESULT else result
    return state.exception


def _subst(v: Any, states: tuple[State, ...], data: tuple = ()) -> Any:
    t = type(v)
    if t is Slot:
        return _value(states[v.i])
    if t is SlotItem:
        return _value(states[v.i])[v.j]
    if t is DataSlot:
        return data[v.j]
    if t is SlotList:
        return [_subst(s, states, data) for s in v.items]
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
    parameters = property(lambda self: dict(self._call.spec.run.parameters))
    tags = property(lambda self: self._call.spec.tags)
    key = property(lambda self: self._call.key, doc="The Dask key of this task.")

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

LOG_TOPIC = "daskflow-log"
_log_lock = threading.Lock()


class _ForwardHandler(logging.Handler):
    """Sends a worker's task log records to the driver as Dask events."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            worker = _current_worker()
            if worker is None:  # a thread of the worker process outside a task
                return
            msg = {k: v for k, v in record.__dict__.items()
                   if isinstance(v, (str, int, float, bool, type(None)))}
            msg["msg"] = record.getMessage()
            msg["args"] = None
            msg["name"] = "daskflow.task"
            worker.log_event(LOG_TOPIC, msg)
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
    extra = {"daskflow_task": f"{ctx.flow_name}/{ctx.task_run_name}",
             "daskflow_run": ctx.flow_run_id}
    return logging.LoggerAdapter(_task_logger(), extra)


def _current_worker() -> Any:
    from distributed.worker import thread_state

    if getattr(thread_state, "key", None) is None:
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


# -- the per-process registry of finished states -----------------------------

_states: dict[str, dict[Any, State]] = {}
_collected: collections.deque[str] = collections.deque(maxlen=1024)  # runs already popped
_touched: dict[str, float] = {}  # run id -> when one of its tasks last finished here


def _forget_abandoned(now: float) -> None:
    """Drop the states of runs with no activity here for ``daskflow.run.state-ttl``:
    their driver died before collecting them."""
    from daskflow import config

    ttl = config.seconds_setting("run.state-ttl")
    for run_id, last in list(_touched.items()):
        if now - last > ttl:
            _states.pop(run_id, None)
            _touched.pop(run_id, None)


def pop_run_states(run_id: str) -> dict[Any, State]:
    """Take the state summaries this process holds for a run (for Client.run).

    A task of an interrupted run may still finish afterwards; it must not
    leave a state behind for a run nobody will collect again.
    """
    _collected.append(run_id)
    _touched.pop(run_id, None)
    return _states.pop(run_id, {})


def _finish(call: Call, state: State) -> State:
    state.task_name = call.display_name
    state.map_index = call.index
    worker = _current_worker()
    if worker is not None:
        state.worker = worker.address
    run_states = _states.get(call.spec.run.run_id)
    if run_states is None:
        if call.spec.run.run_id in _collected:
            return state
        _forget_abandoned(time.time())
        run_states = _states.setdefault(call.spec.run.run_id, {})
    run_states[call.key] = state.summary()
    _touched[call.spec.run.run_id] = state.end or 0.0
    return state


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
        args = _subst(call.args, upstream, data)
        kwargs = _subst(call.kwargs, upstream, data)
    else:
        args, kwargs = call.args, call.kwargs
    return _finish(call, _attempts(call, args, kwargs, start))


def _attempts(call: Call, args: tuple, kwargs: dict, start: float) -> State:
    spec = call.spec
    attempt = 0
    while True:
        attempt += 1
        token = _context.set(TaskRunContext(call, attempt))
        try:
            if spec.timeout is None:
                result = spec.fn(*args, **kwargs)
            else:
                result = _with_timeout(spec, args, kwargs)
            return State(StateType.COMPLETED, result=result, attempts=attempt, start=start)
        except signals.SKIP as sig:
            return State(StateType.SKIPPED, message=sig.message, result=sig.result,
                         attempts=attempt, start=start)
        except signals.FAIL as sig:
            return _failed(sig, attempt, start, sig.message or "FAIL signal raised")
        except Exception as err:
            retryable = spec.retry_on is None or isinstance(err, spec.retry_on)
            if attempt > spec.retries or not retryable:
                return _failed(err, attempt, start, f"{type(err).__name__}: {err}")
            delay = spec.retry_delays[min(attempt - 1, len(spec.retry_delays) - 1)]
            _log_retry(call, attempt, err, delay)
        finally:
            _context.reset(token)
        _sleep(delay)


def _failed(err: BaseException, attempt: int, start: float, message: str) -> State:
    tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        pickle.dumps(err)
    except Exception:
        err = RuntimeError(f"{type(err).__name__}: {err} (the exception could not be pickled)")
    return State(StateType.FAILED, message=message, exception=err, traceback=tb,
                 attempts=attempt, start=start)


def _log_retry(call: Call, attempt: int, err: BaseException, delay: float) -> None:
    spec = call.spec
    logging.LoggerAdapter(_task_logger(), {
        "daskflow_task": f"{spec.run.flow_name}/{call.display_name}",
        "daskflow_run": spec.run.run_id,
    }).warning("attempt %d of %d failed with %s: %s; retrying in %gs",
               attempt, spec.retries + 1, type(err).__name__, err, delay)


def _sleep(delay: float) -> None:
    """Wait before a retry, giving the worker's thread slot to other tasks."""
    if delay <= 0:
        return
    seceded = False
    if _current_worker() is not None:
        from distributed import secede

        secede()
        seceded = True
    try:
        time.sleep(delay)
    finally:
        if seceded:
            from distributed import rejoin

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
        return -2, (f"cannot map over the result of {state.task_name!r}: "
                    f"{type(value).__name__} has no len()")


def done(state: State) -> State:
    """A result-free copy of a state: lets a task wait without moving data."""
    return state.summary()
