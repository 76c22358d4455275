"""``async def`` tasks: their coroutines share one event loop per process.

distributed can run a coroutine function as a task itself: the worker awaits
it on its own event loop (``Worker.execute``, ``TaskState.run_spec.is_coro``).
daskflow does not use that path, for two reasons read in distributed's
source: an async task still counts as one of the worker's ``nthreads``
executing tasks (``WorkerState._ensure_computing``), so 200 of them on 2
threads run 2 at a time; and daskflow's wrapper around a task (cache reads
and writes, hooks, the scheduler's metadata, tag slots) blocks, which must
never happen on the worker's event loop (its heartbeats and transfers).

So the wrapper stays where a sync task's runs, in the worker's thread
(:mod:`daskflow.worker.run`), and only the coroutine goes elsewhere: to an
event loop of daskflow's own, in one daemon thread per process, shared by
every async task there, so that hundreds of them interleave on one thread.
While its coroutine runs, the task's thread secedes from the worker's pool
(its slot serves the next task, as ``worker_client`` does); past
:data:`MAX_SECEDED` waiting tasks in a process, a task keeps its slot, so
that Dask's own limit applies again and the process never holds more than
that many waiting threads.

The coroutine sees the task's context (``df.context()``, the run logger,
``log_prints``, its worker): the contextvars of the task's thread are set
in the coroutine's own context.  A ``timeout`` cancels the coroutine; so
does the run's cancellation.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import threading
from collections.abc import Callable
from typing import Any

from daskflow.exceptions import TaskTimeoutError
from daskflow.wire import Call
from daskflow.worker.context import current_worker, loop_worker, seceded, still_wanted

MAX_SECEDED = 512  # async tasks per process that wait without holding a worker thread
_seceding = threading.BoundedSemaphore(MAX_SECEDED)
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_lock = threading.Lock()
_POLL = 0.25  # seconds between two checks that the run still wants the task


class AsyncTaskCancelled(Exception):
    """The run was cancelled while an async task's coroutine ran: it was cancelled too."""


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` makes a coroutine to run (an ``async def``)."""
    return inspect.iscoroutinefunction(fn)


def event_loop() -> asyncio.AbstractEventLoop:
    """This process's loop for async tasks, started on first use (and again
    in a forked child, where the thread does not exist)."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(target=_loop.run_forever, daemon=True,
                                       name="daskflow-async-tasks")
            _thread.start()
        return _loop


def run(call: Call, args: tuple, kwargs: dict) -> Any:
    """Run ``call``'s coroutine function on the shared loop and return its value
    (raise its exception), the task's thread given back to Dask meanwhile."""
    spec = call.spec
    worker = current_worker()
    token = loop_worker.set(worker)  # the coroutine's thread is not a worker thread
    try:
        context = contextvars.copy_context()
    finally:
        loop_worker.reset(token)
    future = asyncio.run_coroutine_threadsafe(
        _in_context(context, spec.fn, args, kwargs, spec.timeout, call.display_name),
        event_loop())
    secede = worker is not None and _seceding.acquire(blocking=False)
    try:
        with seceded(secede):
            return _result(future, call)
    finally:
        if secede:
            _seceding.release()


def _result(future: concurrent.futures.Future, call: Call) -> Any:
    """Wait for the coroutine; cancel it if the run is cancelled meanwhile.
    (Not ``future.result(timeout)`` in a loop: its ``TimeoutError`` is also
    the class of a task's own timeout, ``TaskTimeoutError``.)"""
    while not concurrent.futures.wait([future], _POLL).done:
        try:
            _check_wanted(call)
        except BaseException:
            future.cancel()
            raise
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        raise AsyncTaskCancelled(f"the coroutine of {call.display_name!r} was "
                                 "cancelled") from None


def _check_wanted(call: Call) -> None:
    check = call.spec.run.check  # in process: raises once the run is cancelled
    if check is not None:
        check()
    elif not still_wanted():
        raise AsyncTaskCancelled(f"the run was cancelled; the coroutine of "
                                 f"{call.display_name!r} was cancelled")


async def _in_context(context: contextvars.Context, fn: Callable[..., Any], args: tuple,
                      kwargs: dict, timeout: float | None, name: str) -> Any:
    for var, value in context.items():  # the task's context, in this coroutine's own
        var.set(value)
    if timeout is None:
        return await fn(*args, **kwargs)
    task = asyncio.ensure_future(fn(*args, **kwargs))
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise TaskTimeoutError(f"task {name!r} did not finish within its timeout of "
                               f"{timeout}s; its coroutine was cancelled")
    return task.result()
