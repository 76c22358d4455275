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
        # The setup's function is the opener itself: where it runs, the
        # worker keeps the finisher it returns (a node of kind "setup").
        setup = Task(self._opener, name=self.name)
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
        cleanup = Task(self._opener, name=f"{self.name}.cleanup")
        builder.close_block(cleanup, self._ref)
        self._ref = None


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
