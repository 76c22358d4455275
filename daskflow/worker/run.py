"""The wrapper every task runs in on a worker: failure is data.

``run_task(call, *upstream_states)`` is the function of every Dask task that
daskflow submits (a map child's and a fused task's run it too, see
:mod:`daskflow.worker.calls`).  It decides from the upstream states whether the task runs
(skip propagation, then the trigger), substitutes upstream results into the
arguments, runs the attempts (retries with delays, ``retry_on``, ``SKIP``,
``FAIL``, ``timeout``) inside a run context, and *returns* a
:class:`~daskflow.core.states.State` instead of raising.  A failing task therefore
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

import ctypes
import os
import threading
import time
import traceback
from typing import Any

import cloudpickle

from daskflow.core import signals
from daskflow.core.fingerprint import code_version, custom_key
from daskflow.core.hooks import call_hooks, task_hooks_for
from daskflow.core.states import NO_RESULT, Chunk, State, StateType
from daskflow.core.walk import WHOLE, transform
from daskflow.define.resources import PerWorker
from daskflow.events import monitor, queue, serialize
from daskflow.events.codec import dump_exception, encode_state
from daskflow.exceptions import (
    CacheMissError,
    MappingError,
    RemoteTaskError,
    TaskTimeoutError,
)
from daskflow.wire import READS, Call, DataSlot, Slot, SlotItem, SlotList, TaskSpec
from daskflow.worker import coroutines, finishers, per_worker, slots, staging, store
from daskflow.worker.context import (
    NOTHING,
    annotations_hidden,
    call_logger,
    current_dask_key,
    current_worker,
    get_run_logger,
    prints_logged,
    running,
    seceded,
    still_wanted,
)
from daskflow.worker.shaping import name_run, retry_decision, running_hooks


def _value(state: State) -> Any:
    if state.type is StateType.COMPLETED or state.type is StateType.SKIPPED:
        result = state._result
        return None if result is NO_RESULT else result
    return state.exception


COMPLETED = StateType.COMPLETED
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


def substitute(template: Any, states: tuple[State, ...], data: tuple = ()) -> Any:
    """An argument template with its slots filled from the upstream states
    (and scattered ``data``).  Its containers are new ones: a task that
    changes a list it was given never changes its siblings' (the children of
    a map share one template)."""
    def fill(v: Any) -> Any:
        t = type(v)
        if t is Slot:
            return _value(states[v.i])
        if t is SlotItem:
            return _item(_value(states[v.i]), v.j)
        if t is DataSlot:
            return data[v.j]
        if t is SlotList:  # a whole map: its completed elements' results at once
            return [s._result if s.type is COMPLETED and s._result is not NO_RESULT
                    else _value(s) for s in states[v.start:v.stop]]
        return v

    return transform(template, fill, copy_all=True)


# -- where a finished state goes ----------------------------------------------------


def finish(call: Call, state: State, inner: bool = False) -> State:
    """Label a final state and send its summary to the run's driver.

    ``inner``: the task runs inside a fused one and is not its last, so its
    state is sent on the worker's next event-loop turn (the fused task's own
    ``task-finished`` carries only the last one's).
    """
    state.task_name = call.display_name
    state.map_index = call.index
    state.run_name = call.run_name
    run = call.spec.run
    worker = current_worker() if run.owner is not None else None
    if worker is None:  # an in-process run (even one started inside a Dask task)
        monitor.local_state(run.run_id, call.key, state.summary())
        if call.spec.task.has_hooks:
            _state_hooks(call, state, task_hooks_for(call.spec.task, state), secede=False)
        return state
    state.worker = worker.address
    state._origin, state._key = run, call.key
    if not serialize.registered():
        serialize.register_serialization()
    live = call.spec.kind == "setup" and state.is_completed() and not _travels(state._result)
    queue.emit(worker, run, state_msg=encode_state(call.key, state, live=live,
                                                   dask_key=current_dask_key()),
               at_transition=not inner)
    if call.spec.task.has_hooks:
        chosen = task_hooks_for(call.spec.task, state)
        if chosen:
            with seceded(True):  # hooks and their record hold no worker thread
                if _first_end(call):
                    _state_hooks(call, state, chosen, secede=False)
    return state


HOOKED = "daskflow-hooks-ran"  # scheduler task metadata: these end hooks ran


def _first_end(call: Call) -> bool:
    """Whether this is the task run's first end in its run, so its end hooks
    run: a task Dask runs again after its result was lost with its worker
    ends again, and its hooks must not fire twice.  The record is the
    metadata of the running Dask task (a fused task holds several task
    runs) on the scheduler, which forgets it with that task.  If the
    scheduler cannot be asked, the hooks run."""
    from distributed import get_client, get_worker

    try:
        dask_key = get_worker().get_current_task()
        client = get_client()
        if client.get_metadata([dask_key, HOOKED, call.key], default=False):
            call_logger(call).info("ran again after its result was lost; its hooks ran for "
                                   "its first run and do not run again")
            return False
        client.set_metadata([dask_key, HOOKED, call.key], True)
    except Exception as err:  # never lose a hook for want of the record
        call_logger(call).debug("could not check whether its hooks ran: %r", err)
    return True


def _state_hooks(call: Call, state: State, chosen: tuple, secede: bool) -> None:
    """Call ``chosen`` hooks for ``state`` in the task's context; with ``secede``
    its thread is given back to Dask meanwhile."""
    if not chosen:
        return
    with running(call, max(state.attempts, 1)), seceded(secede):
        call_hooks(chosen, call.spec.task, state, get_run_logger(),
                   f"task {call.display_name!r}")


# -- deciding and running -------------------------------------------------------

_SUCCESS_TRIGGERS = (signals.all_successful, signals.any_successful)
_FAILURE_TRIGGERS = (signals.any_failed, signals.all_failed)


def decide(call: Call, upstream: tuple[State, ...]) -> State | None:
    """The state of a task that must not run, or None to run it."""
    spec = call.spec
    considered = upstream if not call.allowed else tuple(
        s for i, s in enumerate(upstream) if i not in call.allowed)
    if spec.skip_on_upstream_skip:
        types = list(map(signals.state_type, considered))  # (in C: a sum over a big map)
        if StateType.SKIPPED in types:
            s = considered[types.index(StateType.SKIPPED)]
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
    return run_call(call, upstream)


def run_call(call: Call, upstream: tuple, inner: bool = False) -> State:
    """:func:`run_task` with its inputs as a tuple (``inner``: see :func:`finish`).

    An input that is a :class:`~daskflow.core.states.Chunk` is the result of
    a chunk of a map (the states of its elements): it stands for one input
    per element, which the call's slots count.
    """
    start = time.time()
    for u in upstream:
        if type(u) is Chunk:
            upstream = flat_inputs(upstream)
            break
    data: tuple = ()
    if call.ndata:
        data, upstream = upstream[-call.ndata:], upstream[:-call.ndata]
    if upstream:
        decided = decide(call, upstream)
        if decided is not None:
            decided.start = start
            return finish(call, decided, inner)
    if call.subst:
        try:
            args = substitute(call.args, upstream, data)
            kwargs = substitute(call.kwargs, upstream, data)
        except Exception as err:  # e.g. element i of an upstream result that has no [i]
            return finish(call, _failed(err, 0, start, f"could not build the arguments of "
                                        f"{call.display_name!r}: {type(err).__name__}: {err}"),
                          inner)
    else:
        args, kwargs = call.args, call.kwargs
    name_run(call, args, kwargs)
    if call.spec.cache is not None:
        return finish(call, _through_cache(call, args, kwargs, start), inner)
    return finish(call, _attempts(call, args, kwargs, start), inner)


def flat_inputs(inputs: tuple) -> tuple:
    """Inputs with each chunk's tuple of element states spread in place."""
    out: list = []
    for u in inputs:
        if type(u) is Chunk:
            out.extend(u)
        else:
            out.append(u)
    return tuple(out)


def run_cached(call: Call, inner: bool = False) -> State:
    """A task whose stored result the driver found before the run: load it here
    (``inner``: see :func:`finish`)."""
    start = time.time()
    settings = call.spec.cache
    assert settings is not None and call.cache is not None
    with running(call, 0):
        value = store.load(settings, call.cache, call.display_name)
    if value is store.MISS:
        err = CacheMissError(
            f"the stored result of {call.display_name!r} ({call.cache}) was there when the "
            "run started but cannot be read now (removed or expired meanwhile); run the "
            "flow again to recompute it")
        return finish(call, State(StateType.FAILED, exception=err, message=str(err),
                                  start=start), inner)
    return finish(call, State(StateType.COMPLETED, name="Cached", result=value, start=start,
                              message=f"reused the stored result {call.cache}"), inner)


def _through_cache(call: Call, args: tuple, kwargs: dict, start: float) -> State:
    """Reuse the stored result of a cached task, or run it and store the result."""
    settings = call.spec.cache
    assert settings is not None
    task = call.spec.task
    with running(call, 1) as ctx:
        key = call.cache
        if task.cache_key is not None:
            try:
                key = custom_key(task, ctx, args, kwargs)
            except Exception as err:
                return _failed(err, 0, start, f"cache_key of {call.display_name!r} raised "
                                              f"{type(err).__name__}: {err}")
        if key is not None and settings.mode in READS and not settings.refresh:
            value = store.load(settings, key, call.display_name)
            if value is not store.MISS:
                return State(StateType.COMPLETED, name="Cached", result=value, start=start,
                             message=f"reused the stored result {key}")
    state = _attempts(call, args, kwargs, start)
    if key is not None and state.type is StateType.COMPLETED:
        with running(call, state.attempts):
            version = task.cache_version or code_version(task.fn)
            if call.spec.txn is not None:  # a transaction's member: staged until it commits
                staging.stage(settings, call.spec.txn, key, state._result, call.display_name,
                              call.spec.run.flow_name, version)
            else:
                store.store(settings, key, state._result, call.display_name,
                            call.spec.run.flow_name, version)
    return state


# Raised by a task's code, these must not reach Dask: a worker thread that
# raises them takes its worker process down (and Dask retries the task on
# the next worker, until KilledWorker).
_PROCESS_EXITS = (SystemExit, KeyboardInterrupt, GeneratorExit)


def _attempts(call: Call, args: tuple, kwargs: dict, start: float) -> State:
    """Run the attempts; a retried task's state keeps each attempt's (start, end)."""
    marks: list[float] = []  # start of each attempt, and the end of each retried one
    running_hooks(call, start)
    state = _attempt_loop(call, args, kwargs, start, marks)
    if len(marks) > 1:
        end = state.end if state.end is not None else time.time()
        state.tries = tuple(zip(marks[::2], [*marks[1::2], end]))
    return state


def _attempt_loop(call: Call, args: tuple, kwargs: dict, start: float,
                  marks: list[float]) -> State:
    attempt = 0
    while True:
        attempt += 1
        marks.append(time.time())
        with running(call, attempt):  # what is logged here reaches the run's driver
            try:
                result = _attempt(call, args, kwargs)
                return State(StateType.COMPLETED, result=result, attempts=attempt, start=start)
            except signals.SKIP as sig:
                return State(StateType.SKIPPED, message=sig.message, result=sig.result,
                             attempts=attempt, start=start)
            except signals.FAIL as sig:
                return _failed(sig, attempt, start, sig.message or "FAIL signal raised", call)
            except _PROCESS_EXITS as err:
                if isinstance(err, KeyboardInterrupt) and current_worker() is None:
                    raise  # in process this is the user's Ctrl-C: it interrupts the run
                return _failed(err, attempt, start,
                               f"the task raised {type(err).__name__}({_args(err)}); it ends "
                               "the task, never the worker process", call)
            except Exception as err:
                delay = retry_decision(call, attempt, err, _retry_delay(call, attempt, err),
                                       start)
                if delay is None:
                    return _failed(err, attempt, start, f"{type(err).__name__}: {err}", call)
                marks.append(time.time())
                _retrying(call, attempt, err, delay, start)
        _sleep(delay)


def _retry_delay(call: Call, attempt: int, err: Exception) -> float | None:
    """The delay before the next attempt after ``err``, or None: no retry
    (nor once the run was cancelled: Dask no longer wants the task)."""
    spec = call.spec
    retryable = spec.retry_on is None or isinstance(err, spec.retry_on)
    if attempt > spec.retries or not retryable or isinstance(err, slots.SlotWaitCancelled):
        return None
    if not still_wanted():
        return None
    return spec.retry_delays[min(attempt - 1, len(spec.retry_delays) - 1)]


def _retrying(call: Call, attempt: int, err: Exception, delay: float, start: float) -> None:
    """Log a retry and call the task's ``on_retry`` hooks."""
    spec = call.spec
    _log_retry(call, attempt, err, delay)
    if spec.task.on_retry:
        retrying = State(StateType.PENDING, name="AwaitingRetry", exception=err,
                         message=f"attempt {attempt} failed with {type(err).__name__}: "
                                 f"{err}; retrying in {delay:g}s",
                         attempts=attempt, start=start)
        retrying.task_name, retrying.map_index = call.display_name, call.index
        _state_hooks(call, retrying, spec.task.on_retry, secede=False)


def _attempt(call: Call, args: tuple, kwargs: dict) -> Any:
    """One attempt in the task's context: its tag slots held, its prints logged."""
    spec = call.spec
    on_worker = current_worker() is not None
    with prints_logged() if spec.log_prints else NOTHING, \
            annotations_hidden() if on_worker else NOTHING:
        if spec.limits and on_worker:
            with slots.held(spec.limits, get_run_logger()):
                return _call(call, args, kwargs)
        return _call(call, args, kwargs)


def _call(call: Call, args: tuple, kwargs: dict) -> Any:
    spec = call.spec
    args, kwargs = per_worker.resolve(args, kwargs, call)
    if spec.is_async:  # on a loop shared by the process's async tasks
        value = coroutines.run(call, args, kwargs)
    elif spec.timeout is None:
        value = spec.fn(*args, **kwargs)
    else:
        value = _with_timeout(spec, args, kwargs)
    if spec.kind == "setup":  # a resource's opener: keep its finisher in this process
        value, finisher = value
        if type(value) is PerWorker:  # opened by each worker that uses it
            value.key = call.key
        else:
            finishers.keep(call.key, finisher)
    return value


def _travels(value: Any) -> bool:
    """Whether a resource's value can be pickled; one that cannot (a database
    connection, a client) stays in this worker, and the scheduler runs the
    tasks that take it here (:class:`daskflow.events.plugins.RunEvents`)."""
    try:
        cloudpickle.dumps(value)
    except Exception:
        return False
    return True


def _failed(err: BaseException, attempt: int, start: float, message: str,
            call: Call | None = None) -> State:
    """A Failed state whose exception can travel: one that does not survive
    pickling and unpickling is replaced by a RemoteTaskError describing it.
    The failure is one ERROR line of the run's log (its traceback is in the state)."""
    if call is not None:
        call_logger(call).error("failed%s: %s", f" after {attempt} attempts" if attempt > 1 else "",
                             message)
    tb = user_traceback(err, call.spec.run.internals if call is not None else False)
    if current_worker() is not None and dump_exception(err) is None:
        err = RemoteTaskError(type(err).__name__, str(err), tb)
    return State(StateType.FAILED, message=message, exception=err, traceback=tb,
                 attempts=attempt, start=start)


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def user_traceback(err: BaseException, internals: bool = False) -> str:
    """The traceback of a task's error as its author wants it: from the task's
    own code on, without daskflow's frames (``internals``, the run's setting
    ``daskflow.logging.traceback-internals``, keeps them)."""
    exc = traceback.TracebackException.from_exception(err)
    if not internals:
        seen: set[int] = set()
        todo = [exc]
        while todo:  # the exception and the ones it was raised from
            e = todo.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            e.stack = traceback.StackSummary.from_list(
                [f for f in e.stack if not f.filename.startswith(_PACKAGE)])
            todo += [c for c in (e.__cause__, e.__context__) if c is not None]
    return "".join(exc.format())


def _args(err: BaseException) -> str:
    return ", ".join(map(repr, err.args))


def _log_retry(call: Call, attempt: int, err: BaseException, delay: float) -> None:
    call_logger(call).warning("attempt %d of %d failed with %s: %s; retrying in %gs",
                           attempt, call.spec.retries + 1, type(err).__name__, err, delay)


def _sleep(delay: float) -> None:
    """Wait before a retry, giving the worker's thread slot to other tasks."""
    if delay <= 0:
        return
    with seceded(current_worker() is not None):
        time.sleep(delay)


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


# -- small internal tasks -------------------------------------------------------


def length_of(state: State) -> tuple[int, str]:
    """How many elements a mapped-over result has; ``(-1, why)`` if it cannot be mapped."""
    if state.type is not StateType.COMPLETED:
        return -1, f"upstream task {state.task_name!r} is {state.name}"
    value = state._result
    if isinstance(value, WHOLE):  # static in .map at build time: never split at run time
        return -2, (f"cannot map over the result of {state.task_name!r}: it is a "
                    f"{type(value).__name__}, which .map gives whole to every call instead of "
                    "mapping over (as Prefect 3 does); return a list from that task, or pass "
                    "its result in df.unmapped() to give it whole")
    try:
        return len(value), ""
    except TypeError:
        return -2, (f"cannot map over the result of {state.task_name!r}: an object of type "
                    f"{type(value).__name__} is not a collection (it has no len()); return a "
                    "list, tuple, set or dict from that task, or pass its result in "
                    "df.unmapped() to give it whole")


def done(state: Any) -> Any:
    """A result-free copy of a state (of each state of a chunk): lets a task
    wait without moving data."""
    if type(state) is Chunk:
        return Chunk(s.summary() for s in state)
    return state.summary()


def run_unmappable(call: Call, *upstream: Any) -> Any:
    """The task of a map that could not expand: upstream failure, or a MappingError."""
    why = call.args[0]
    state = decide(call, flat_inputs(upstream)) if upstream else None
    if state is None:
        state = State(StateType.FAILED, name="MappingFailed", message=why,
                      exception=MappingError(why))
    return finish(call, state)
