"""What a running task knows about itself, and what it may touch of its worker.

``df.context()`` and ``df.get_run_logger()`` read the task run's context (a
contextvar set by the attempt loop); log records of a task on a worker go to
the run's driver only.  Every contextvar of the worker side lives here, with
the few questions a task asks its worker: which worker runs me
(:func:`current_worker`), does Dask still want my task (:func:`still_wanted`),
and give my thread back while I wait (:func:`seceded`).

``print()`` inside a task with ``log_prints`` becomes an INFO record of the
run's logger: ``builtins.print`` is wrapped only while such a task runs, in
any thread, and restored when the last one ends (a guest library leaves the
interpreter as it found it).
"""

from __future__ import annotations

import builtins
import collections
import contextlib
import contextvars
import functools
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

from daskflow import config
from daskflow.events import queue
from daskflow.exceptions import MissingContextError
from daskflow.wire import Call, RunInfo


class TaskRunContext:
    """What a running task can learn about itself: ``df.context()``."""

    __slots__ = ("call", "attempt")

    def __init__(self, call: Call, attempt: int) -> None:
        self.call = call
        self.attempt = attempt

    task_name = property(lambda self: self.call.name, doc="The task's name in the flow.")
    task_run_name = property(lambda self: self.call.label,
                             doc='Its task_run_name, else "name" or "name[i]".')
    name = task_run_name  # Prefect's task_run.name
    run_count = property(lambda self: self.attempt, doc="Prefect's name of the attempt.")
    map_index = property(lambda self: self.call.index, doc="Index in a map, else None.")
    flow_name = property(lambda self: self.call.spec.run.flow_name)
    flow_run_id = property(lambda self: self.call.spec.run.run_id)
    parameters = property(lambda self: run_parameters(self.call.spec.run),
                          doc="The flow run's parameters.")
    tags = property(lambda self: self.call.spec.tags)
    key = property(lambda self: self.call.key, doc="The Dask key of this task.")
    dashboard_link = property(lambda self: self.call.spec.run.dashboard,
                              doc="The Dask dashboard of the run's cluster, if any.")

    def __repr__(self) -> str:
        return (f"<TaskRunContext {self.flow_name}/{self.task_run_name} "
                f"attempt={self.attempt} run={self.flow_run_id}>")


_current: contextvars.ContextVar[TaskRunContext | None] = contextvars.ContextVar(
    "daskflow_task_run", default=None
)


class running(TaskRunContext):  # noqa: N801 - used as a function: `with running(call, attempt):`
    """The context of ``call``'s attempt, current while inside.  (A class, not
    a generator: an exception leaving it keeps its traceback as it was; the
    context itself, one object per attempt.)"""

    __slots__ = ("token",)

    def __enter__(self) -> TaskRunContext:
        self.token = _current.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.reset(self.token)


def current_context() -> TaskRunContext | None:
    """The context of the task running in this thread, or None."""
    return _current.get()


def context() -> TaskRunContext:
    """The context of the task running in this thread.

    Raises ``MissingContextError`` outside a running task.
    """
    ctx = _current.get()
    if ctx is None:
        raise MissingContextError(
            "df.context() was called outside a running task; call it inside the "
            "body of a @df.task while its flow runs"
        )
    return ctx


# -- the worker ---------------------------------------------------------------------


loop_worker: contextvars.ContextVar[Any] = contextvars.ContextVar("daskflow_loop_worker",
                                                                  default=None)
"""The worker of an async task's coroutine, which runs on daskflow's loop thread
(:mod:`daskflow.worker.coroutines`), not in a worker thread."""


def current_worker() -> Any:
    """The ``distributed`` worker running this thread's task (or this async
    task's coroutine), else None."""
    thread_state, get_worker = _distributed()
    if getattr(thread_state, "key", None) is None:  # not in a Dask task: current_dask_key()
        return loop_worker.get()
    try:
        return get_worker()
    except ValueError:
        return None


def current_dask_key() -> Any:
    """The key of the Dask task this thread runs on a worker (None elsewhere)."""
    return getattr(_distributed()[0], "key", None)


@functools.cache
def _distributed() -> tuple[Any, Any]:
    """distributed's ``thread_state`` and ``get_worker``, imported on first use
    (``import daskflow`` does not import distributed) and only then: a task
    asks for them several times per call."""
    from distributed import get_worker
    from distributed.worker import thread_state

    return thread_state, get_worker


def still_wanted() -> bool:
    """Whether Dask still wants the task this thread runs (False once its run
    was cancelled: the driver released it and the worker dropped it).  True
    outside a worker.

    distributed has no public API for this: it reads
    ``Worker.state.tasks[key].state`` (the worker state machine's own
    record), isolated here and pinned by
    ``test_a_cancelled_fused_task_stops_between_its_tasks``.
    """
    key = current_dask_key()
    worker = current_worker() if key is not None else None
    if worker is None:
        return True
    ts = worker.state.tasks.get(key)
    return ts is not None and ts.state not in ("cancelled", "released", "forgotten")


@contextlib.contextmanager
def seceded(active: bool) -> Iterator[None]:
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


def annotations_hidden() -> Any:
    """While inside, dask sees no annotations.

    A worker runs each task under the annotations it was submitted with, and
    every task of a run carries the run's ``span`` (so the dashboard shows
    runs).  Dask work built inside a task would inherit it, and
    ``dask.dataframe`` warns on any annotation ("Annotations will be ignored
    when using query-planning"), which fails the task under ``-W error``.
    dask keeps annotations in a private ``ContextVar``
    (``dask.base._annotations``); hiding them is one ``set``/``reset`` of it,
    isolated here and pinned by ``test_dask_still_keeps_annotations_in_a_contextvar``.
    Hidden already (a chunk of a map hides them once for its elements), it
    does nothing.
    """
    var = _dask_base()._annotations
    return NOTHING if var.get() is None else _Hidden(var)


NOTHING = contextlib.nullcontext()  # a context that does nothing (reentrant: shared)


@functools.cache
def _dask_base() -> Any:
    """``dask.base``, imported on first use (once: a task asks per attempt)."""
    from dask import base

    return base


class _Hidden:
    __slots__ = ("var", "token")

    def __init__(self, var: Any) -> None:
        self.var = var

    def __enter__(self) -> None:
        self.token = self.var.set(None)

    def __exit__(self, *exc: Any) -> None:
        self.var.reset(self.token)


# -- logging ---------------------------------------------------------------------

_log_lock = threading.Lock()


_formatter = logging.Formatter()


class _ForwardHandler(logging.Handler):
    """Sends a worker's task log records to the run's driver (and only there)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            worker = current_worker()
            ctx = _current.get()
            if worker is None or ctx is None:  # outside a task
                return
            msg = {k: v for k, v in record.__dict__.items()
                   if isinstance(v, (str, int, float, bool, type(None)))}
            msg["msg"] = record.getMessage()
            msg["args"] = None
            if record.exc_info and not record.exc_text:  # exc_info=True: its text travels
                msg["exc_text"] = _formatter.formatException(record.exc_info)
            msg["name"] = "daskflow.task"
            queue.emit(worker, ctx.call.spec.run, log_msg=msg)
        except Exception:  # pragma: no cover - logging must never break a task
            self.handleError(record)


def _task_logger() -> logging.Logger:
    """``daskflow.task`` in this process, or on a worker ``daskflow.worker``,
    which only forwards to the driver (the driver re-emits as ``daskflow.task``)."""
    if current_worker() is None:
        return logging.getLogger("daskflow.task")
    logger = logging.getLogger("daskflow.worker")
    if not logger.handlers:
        with _log_lock:
            if not logger.handlers:
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
    ctx = _current.get()
    if ctx is None:
        raise MissingContextError(
            "df.get_run_logger() was called outside a running task; use it inside "
            "a @df.task body, or logging.getLogger(...) elsewhere"
        )
    return call_logger(ctx.call)


def call_logger(call: Call) -> logging.LoggerAdapter:
    """The run logger of one task run, labelled ``flow/task[i]``."""
    spec = call.spec
    return logging.LoggerAdapter(_task_logger(), {
        "daskflow_task": f"{spec.run.flow_name}/{call.label}",
        "daskflow_run": spec.run.run_id,
    })


def task_logger(fallback: logging.Logger) -> Any:
    """The run logger inside a running task (its records reach the driver),
    else ``fallback``: for code that runs both in tasks and on the driver."""
    return get_run_logger() if _current.get() is not None else fallback


# -- print() as log records ---------------------------------------------------------

_prints: contextvars.ContextVar[bool] = contextvars.ContextVar("daskflow_log_prints",
                                                                default=False)
_print_lock = threading.Lock()
_print_users = 0  # tasks with log_prints running now, in any thread
_installed: tuple[Any, Any] | None = None  # (the print before ours, ours)


def _wrap_print(previous: Any) -> Any:
    def print(*args: Any, sep: str | None = " ", end: str | None = "\n",
              file: Any = None, flush: bool = False) -> None:
        if (_prints.get() and (file is None or file is sys.stdout or file is sys.stderr)
                and _current.get()):  # Prefect 3 logs both streams' prints
            text = ("" if sep is None else sep).join(map(str, args))
            get_run_logger().info("%s", text)
            return
        previous(*args, sep=sep, end=end, file=file, flush=flush)

    print.__wrapped__ = previous  # type: ignore[attr-defined]
    return print


@contextlib.contextmanager
def prints_logged() -> Iterator[None]:
    """While inside, a ``print()`` to stdout or stderr in this task becomes an
    INFO record of the run logger (as Prefect 3's ``log_prints``); every other
    print (other threads, other tasks, another ``file=``) goes to the print
    that was there before.  ``builtins.print``
    is put back when the last task inside this ends (unless something else
    wrapped it meanwhile: then ours stays in its chain, passing through)."""
    global _print_users, _installed
    with _print_lock:
        if _print_users == 0:
            previous = builtins.print
            _installed = (previous, _wrap_print(previous))
            builtins.print = _installed[1]
        _print_users += 1
    token = _prints.set(True)
    try:
        yield
    finally:
        _prints.reset(token)
        with _print_lock:
            _print_users -= 1
            if _print_users == 0 and _installed is not None:
                if builtins.print is _installed[1]:
                    builtins.print = _installed[0]
                _installed = None


# -- the run's parameters --------------------------------------------------------------

_params: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
_params_lock = threading.Lock()


def run_parameters(run: RunInfo) -> dict[str, Any]:
    """The run's parameters, for ``df.context().parameters``.

    Inline ones come with the spec; otherwise they are fetched once per
    process from the run's parameters key (which the driver holds while the
    run lasts); in-process runs always carry them inline.
    """
    if run.parameters is not None:
        return dict(run.parameters)
    if run.params_key is None:
        return {}
    with _params_lock:
        cached = _params.get(run.params_key)
    if cached is None:
        cached = _fetch_parameters(run.params_key)
        with _params_lock:
            _params[run.params_key] = cached
            while len(_params) > 8:
                _params.popitem(last=False)
    return dict(cached)


def _fetch_parameters(key: str) -> dict[str, Any]:
    from distributed import get_worker
    from distributed.utils import sync

    worker = get_worker()
    if key in worker.data:
        params: dict[str, Any] = worker.data[key]  # type: ignore[assignment]
        return params
    # One request to the scheduler, which fetches it from the worker holding it.
    response = sync(worker.loop, worker.scheduler.gather, keys=[key], callback_timeout=60)
    if response.get("status") != "OK":
        raise RuntimeError(f"the parameters of this run ({key}) could not be fetched: {response}")
    params = response["data"][key]
    return params
