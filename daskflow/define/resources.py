"""Resources, the build side: setup before a block of tasks, cleanup after.

Inside a flow body ``with database("sales") as conn:`` records a *setup*
node; every task created in the block waits for it, and leaving the block
records a *cleanup* node that waits for every task in the block (through
result-free ``done-`` tasks, so no data moves) and always runs once the
setup succeeded, whether the block's tasks failed or not.

A setup node's function is the resource's *opener*: called with the
resolved arguments it returns ``(value, finisher)``.  Where the setup runs,
the worker keeps the finisher and the cleanup task calls it there (see
:mod:`daskflow.worker.cleanup`).

Outside a flow both forms are plain context managers.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Generator
from typing import Any

from daskflow.define.build import Ref, current_builder
from daskflow.define.task import Task
from daskflow.exceptions import FlowDefinitionError

Opener = Callable[..., tuple[Any, Callable[[], None]]]


class ResourceCall:
    """One use of a resource: a context manager in and out of flow bodies.

    ``opener(*args, **kwargs)`` opens it and returns ``(value, finisher)``.
    Inside a flow body the arguments may be task results: the setup is a task
    whose arguments they are, so it receives their values.
    """

    def __init__(self, name: str, opener: Opener, args: tuple = (),
                 kwargs: dict[str, Any] | None = None, per_worker: bool = False) -> None:
        self.name = name
        self._opener = opener
        self._per_worker = per_worker
        self._args = args
        self._kwargs = kwargs or {}
        self._ref: Ref | None = None
        self._finish: Callable[[], None] | None = None

    def __enter__(self) -> Any:
        builder = current_builder()
        if builder is None:
            value, self._finish = self._opener(*self._args, **self._kwargs)
            return value
        # The setup's function is the opener itself: where it runs, the
        # worker keeps the finisher it returns (a node of kind "setup").  A
        # per-worker resource's setup only says how to open it.
        setup = Task(self._setup_fn(), name=self.name)
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
        # A cleanup node runs the finisher kept by its setup; the task only
        # names it (its function is never called).
        cleanup = Task(self._setup_fn(), name=f"{self.name}.cleanup")
        builder.close_block(cleanup, self._ref)
        self._ref = None

    def _setup_fn(self) -> Opener:
        return PerWorkerOpener(self.name, self._opener) if self._per_worker else self._opener


class PerWorker:
    """How to open a per-worker resource: what its setup task returns.  Each
    worker that runs a task given it opens the resource once
    (:mod:`daskflow.worker.per_worker`)."""

    __slots__ = ("name", "opener", "args", "kwargs", "key")

    def __init__(self, name: str, opener: Opener, args: tuple, kwargs: dict[str, Any]) -> None:
        self.name, self.opener, self.args, self.kwargs = name, opener, args, kwargs
        self.key: Any = None  # the setup task's key, stamped where it ran

    def __reduce__(self) -> Any:
        return (_rebuild_token, (self.name, self.opener, self.args, self.kwargs, self.key))

    def __repr__(self) -> str:
        return f"<per-worker resource {self.name!r}>"


def _rebuild_token(name: str, opener: Opener, args: tuple, kwargs: dict[str, Any],
                   key: Any) -> PerWorker:
    token = PerWorker(name, opener, args, kwargs)
    token.key = key
    return token


class PerWorkerOpener:
    """The setup function of a per-worker resource: returns its token, no finisher."""

    __slots__ = ("name", "opener")  # no __dict__ for the Task to copy as its own
    per_worker = True

    def __init__(self, name: str, opener: Opener) -> None:
        self.name, self.opener = name, opener

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[PerWorker, None]:
        return PerWorker(self.name, self.opener, args, kwargs), None


# -- the two decorator forms -----------------------------------------------------


def resource(fn: Callable[..., Generator[Any, None, None]] | None = None, /, *,
             per_worker: bool = False) -> Any:
    """Make a generator function a resource: code after ``yield`` is the cleanup.

    ``@df.resource`` sets it up once, on the worker that runs the setup; a
    value that cannot be pickled (a connection) stays there and the tasks
    that take it run there.  ``@df.resource(per_worker=True)`` sets it up
    once in each worker process that runs a task given it, and cleans each
    of them up when the block's tasks are done.

    >>> @resource
    ... def number():
    ...     yield 42
    >>> with number() as n:
    ...     n
    42
    """
    if fn is None:
        return functools.partial(resource, per_worker=per_worker)
    if not callable(fn):
        raise FlowDefinitionError(f"@df.resource needs a generator function, got {fn!r}")
    name = getattr(fn, "__name__", "resource")

    @functools.wraps(fn)
    def make(*args: Any, **kwargs: Any) -> ResourceCall:
        return ResourceCall(name, functools.partial(_open_generator, fn, name), args, kwargs,
                            per_worker=bool(per_worker))

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


def resource_manager(cls: type | None = None, /, *, per_worker: bool = False) -> Any:
    """Prefect 1's class form: ``__init__(...)``, ``setup()``, ``cleanup(resource)``
    (``per_worker=True`` as for :func:`resource`)."""
    if cls is None:
        return functools.partial(resource_manager, per_worker=per_worker)
    for method in ("setup", "cleanup"):
        if not callable(getattr(cls, method, None)):
            raise FlowDefinitionError(f"@resource_manager class {cls.__name__} needs a {method}() method")

    @functools.wraps(cls, updated=())
    def make(*args: Any, **kwargs: Any) -> ResourceCall:
        return ResourceCall(cls.__name__, functools.partial(_open_manager, cls), args, kwargs,
                            per_worker=bool(per_worker))

    return make


def _open_manager(cls: type, *args: Any, **kwargs: Any) -> tuple[Any, Callable[[], None]]:
    """Prefect 1's order: the manager is made with the (resolved) arguments,
    then ``setup()``; ``cleanup(resource)`` is the finisher."""
    manager = cls(*args, **kwargs)
    value = manager.setup()
    return value, functools.partial(manager.cleanup, value)
