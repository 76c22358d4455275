"""Resources: setup before a block of tasks, cleanup once they all finished.

Inside a flow body ``with database("sales") as conn:`` records a *setup*
node; every task created in the block waits for it, and leaving the block
records a *cleanup* node that waits for every task in the block (through
result-free ``done-`` tasks, so no data moves) and always runs once the
setup succeeded, whether the block's tasks failed or not.

The setup runs on some worker and keeps what cleanup needs (the suspended
generator, or the manager instance and its resource) in a registry of that
worker process.  The cleanup task runs the cleanup there: directly when
Dask placed it on the same worker, otherwise through ``Client.run`` aimed at
that worker.  If that worker died the cleanup is reported as Crashed.

Outside a flow both forms are plain context managers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Generator
from typing import Any

from daskflow.build import Ref, current_builder
from daskflow.exceptions import FlowDefinitionError, ResourceError
from daskflow.specs import Call
from daskflow.states import State, StateType
from daskflow.task import Task
from daskflow.taskrun import _current_worker, _finish, context

_open: dict[Any, Callable[[], None]] = {}  # setup key -> finisher, in this process
_lock = threading.Lock()


Opener = Callable[..., tuple[Any, Callable[[], None]]]


class ResourceCall:
    """One use of a resource: a context manager in and out of flow bodies.

    ``opener(*args, **kwargs)`` opens it and returns ``(value, finisher)``.
    Inside a flow body the arguments may be task results: the setup is a task
    whose arguments they are, so it receives their values.
    """

    def __init__(self, name: str, opener: Opener, args: tuple = (),
                 kwargs: dict[str, Any] | None = None) -> None:
        self.name = name
        self._opener = opener
        self._args = args
        self._kwargs = kwargs or {}
        self._ref: Ref | None = None
        self._finish: Callable[[], None] | None = None

    def __enter__(self) -> Any:
        builder = current_builder()
        if builder is None:
            value, self._finish = self._opener(*self._args, **self._kwargs)
            return value
        setup = Task(functools.partial(_setup, self._opener), name=self.name)
        self._ref = builder.add(setup, self._args, self._kwargs, kind="setup")
        builder.open_block(self._ref)
        return self._ref

    def __exit__(self, *exc: Any) -> None:
        if self._ref is None:
            finish, self._finish = self._finish, None
            if finish is not None:
                finish()
            return
        builder = current_builder()
        if builder is None:  # pragma: no cover - a block cannot outlive its build
            raise FlowDefinitionError(f"resource {self.name!r} closed outside its flow body")
        cleanup = Task(_cleanup, name=f"{self.name}.cleanup")
        builder.close_block(cleanup, self._ref)
        self._ref = None


def _setup(opener: Opener, *args: Any, **kwargs: Any) -> Any:
    """The setup task: open the resource and keep its finisher in this process."""
    value, finish = opener(*args, **kwargs)
    with _lock:
        _open[context().key] = finish
    return value


def _cleanup(setup: State) -> None:  # pragma: no cover - replaced by run_cleanup
    raise AssertionError("cleanup nodes run through run_cleanup")


def run_cleanup(call: Call, setup: State, *members: State) -> State:
    """The cleanup task: finish the resource where it was set up."""
    if not setup.is_completed():
        return _finish(call, State(StateType.SKIPPED, name="NotSetUp",
                                   message=f"setup was {setup.name}; nothing to clean up"))
    setup_key = call.args[0]
    try:
        finish = _take(setup_key)
        if finish is not None:
            finish()
        else:
            _cleanup_remotely(setup_key, setup.worker)
        state = State(StateType.COMPLETED, result=None, attempts=1)
    except ResourceError as err:
        state = State(StateType.CRASHED, message=str(err), exception=err)
    except Exception as err:
        state = State(StateType.FAILED, message=f"{type(err).__name__}: {err}", exception=err)
    return _finish(call, state)


def _take(key: Any) -> Callable[[], None] | None:
    with _lock:
        return _open.pop(key, None)


async def _finish_here(key: Any) -> str:
    """Run a finisher of this process in a thread (for Client.run); '' if done."""
    finish = _take(key)
    if finish is None:
        return "not found"
    await asyncio.get_running_loop().run_in_executor(None, finish)
    return ""


def finish_run_now(run_id: str) -> list[str]:
    """Run, here, the cleanups of every resource a run set up in this process.

    Used when a run is interrupted: its cleanup tasks were cancelled with it.
    """
    with _lock:
        keys = [k for k in _open if run_id in str(k)]
        finishers = [_open.pop(k) for k in keys]
    errors = []
    for finish in finishers:
        try:
            finish()
        except Exception as err:  # keep going: every resource deserves its end
            errors.append(repr(err))
    return [str(k) for k in keys] + [f"error: {e}" for e in errors]


async def finish_run(run_id: str) -> list[str]:
    """``finish_run_now`` for ``Client.run``: in a thread, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, finish_run_now, run_id)


def _cleanup_remotely(key: Any, worker: str | None) -> None:
    worker_obj = _current_worker()
    if worker is None or worker_obj is None:
        raise ResourceError(f"resource {key!r} was set up in another process that is gone")
    from distributed import get_client

    try:
        answers = get_client().run(_finish_here, key, workers=[worker])
    except Exception as err:
        raise ResourceError(f"could not reach worker {worker} to clean up {key!r}: {err!r}") from err
    if answers.get(worker) != "":
        raise ResourceError(
            f"resource {key!r} was set up on worker {worker}, which no longer has it "
            "(the worker was restarted or lost); its cleanup could not run")


# -- the two decorator forms -----------------------------------------------------


def resource(fn: Callable[..., Generator[Any, None, None]]) -> Callable[..., ResourceCall]:
    """Make a generator function a resource: code after ``yield`` is the cleanup.

    >>> @resource
    ... def number():
    ...     yield 42
    >>> with number() as n:
    ...     n
    42
    """
    name = getattr(fn, "__name__", "resource")

    @functools.wraps(fn)
    def make(*args: Any, **kwargs: Any) -> ResourceCall:
        return ResourceCall(name, functools.partial(_open_generator, fn, name), args, kwargs)

    return make


def _open_generator(fn: Callable[..., Generator[Any, None, None]], name: str, *args: Any,
                    **kwargs: Any) -> tuple[Any, Callable[[], None]]:
    gen = fn(*args, **kwargs)
    value = next(gen)
    return value, functools.partial(_close_generator, gen, name)


def _close_generator(gen: Generator[Any, None, None], name: str) -> None:
    with contextlib.suppress(StopIteration):
        next(gen)
        raise FlowDefinitionError(f"resource {name!r} yielded more than once; yield exactly once")


def resource_manager(cls: type) -> Callable[..., ResourceCall]:
    """Prefect 1's class form: ``__init__(...)``, ``setup()``, ``cleanup(resource)``."""
    for method in ("setup", "cleanup"):
        if not callable(getattr(cls, method, None)):
            raise FlowDefinitionError(f"@resource_manager class {cls.__name__} needs a {method}() method")

    @functools.wraps(cls, updated=())
    def make(*args: Any, **kwargs: Any) -> ResourceCall:
        return ResourceCall(cls.__name__, functools.partial(_open_manager, cls), args, kwargs)

    return make


def _open_manager(cls: type, *args: Any, **kwargs: Any) -> tuple[Any, Callable[[], None]]:
    """Prefect 1's order: the manager is made with the (resolved) arguments,
    then ``setup()``; ``cleanup(resource)`` is the finisher."""
    manager = cls(*args, **kwargs)
    value = manager.setup()
    return value, functools.partial(manager.cleanup, value)
