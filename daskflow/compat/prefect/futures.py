"""Prefect 3's futures over daskflow's references.

``task.submit(...)`` gives a daskflow reference, which already is Prefect's
future (``result()``, ``wait()``, ``state``).  ``task.map(...)`` gives a
:class:`PrefectFutureList`: the map's one reference (so that passing it to
another task keeps the data on the cluster), iterable as its elements.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import daskflow as df
from daskflow.define.build import Element, Ref


class PrefectFutureList:
    """The futures of a ``.map``: ``result()`` is the list of values,
    ``wait()`` waits for all; iterating (or indexing) gives each element's
    future (``result()``, ``wait()``, ``state``).  Passed to a task of this
    module, it is the whole list of results, moved on the cluster only."""

    __slots__ = ("ref", "_elements")

    def __init__(self, ref: Any) -> None:
        self.ref = ref
        self._elements: list[Any] | None = None

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[Any]:
        return self.ref.result(timeout, raise_on_failure)

    def wait(self, timeout: float | None = None) -> None:
        self.ref.wait(timeout)

    @property
    def state(self) -> Any:
        return self.ref.state

    def elements(self) -> list[Any]:
        """Each element's future, in order (the map is submitted if it was not)."""
        if self._elements is None:
            done, not_done = df.wait(self.ref, timeout=0)
            self._elements = sorted([*done, *not_done], key=lambda e: e.index)
        return self._elements

    def __iter__(self) -> Iterator[Any]:
        return iter(self.elements())

    def __len__(self) -> int:
        return len(self.elements())

    def __getitem__(self, index: Any) -> Any:
        return self.elements()[index]

    def __repr__(self) -> str:
        return f"<PrefectFutureList of {self.ref!r}>"


def unwrap(value: Any) -> Any:
    """``value`` with every PrefectFutureList (top level, or in a list, tuple
    or dict) replaced by its reference, for daskflow to build with."""
    if isinstance(value, PrefectFutureList):
        return value.ref
    if type(value) in (list, tuple) and any(isinstance(v, PrefectFutureList) for v in value):
        return type(value)(unwrap(v) for v in value)
    if type(value) is dict and any(isinstance(v, PrefectFutureList) for v in value.values()):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def resolve(value: Any) -> Any:
    """The values of the futures in ``value`` (top level, or in a list, tuple
    or dict): what a nested Prefect 3 flow returns to its caller."""
    if isinstance(value, (PrefectFutureList, Ref, Element)):
        return value.result()
    if type(value) in (list, tuple):
        return type(value)(resolve(v) for v in value)
    if type(value) is dict:
        return {k: resolve(v) for k, v in value.items()}
    return value


def wait(futures: Any, timeout: float | None = None) -> Any:
    """Prefect 3's ``wait(futures, timeout)``: ``(done, not_done)``."""
    return df.wait(unwrap(_listed(futures)), timeout)


def as_completed(futures: Any, timeout: float | None = None) -> Iterator[Any]:
    """Prefect 3's ``as_completed(futures, timeout)``: each future as it ends."""
    return df.as_completed(unwrap(_listed(futures)), timeout)


def _listed(futures: Any) -> Any:
    if isinstance(futures, PrefectFutureList):
        return [futures.ref]
    if isinstance(futures, (list, tuple, set)):
        return [f.ref if isinstance(f, PrefectFutureList) else f for f in futures]
    return futures
