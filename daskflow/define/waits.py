"""Waiting on many task results in a flow body: ``df.wait`` and ``df.as_completed``.

These are Prefect 3's ``wait`` and ``as_completed`` over the lazy references
of a flow body (:class:`~daskflow.define.build.Ref`).  A map's reference
stands for its elements: each one is an :class:`Element` with the same
``result()``, ``wait()`` and ``state`` as a reference.  The waiting itself
is the run's (:class:`~daskflow.define.build.Waiter`); nothing here talks
to a scheduler.

>>> import daskflow as df
>>> @df.task
... def square(x):
...     return x * x
>>> @df.flow
... def squares():
...     return sorted(e.result() for e in df.as_completed(square.map([1, 2, 3])))
>>> squares(cluster="sync")
[1, 4, 9]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from daskflow.define.build import Node, Ref, Waiter, waiter_of
from daskflow.exceptions import FlowDefinitionError


class Element:
    """Element ``index`` of a map in a flow body: wait for it, read its state.

    It cannot be passed to another task: pass the map's reference (or map
    over it) instead.
    """

    __slots__ = ("node", "index")

    def __init__(self, node: Node, index: int) -> None:
        self.node, self.index = node, index

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """Wait for this element and return its value (see ``Ref.result``)."""
        return waiter_of(self, "result").result((self.node, self.index), timeout,
                                                raise_on_failure)

    def wait(self, timeout: float | None = None) -> Any:
        """Wait for this element and return its final state (None after ``timeout``)."""
        return waiter_of(self, "wait").final_state((self.node, self.index), timeout)

    @property
    def state(self) -> Any:
        """This element's state now."""
        return waiter_of(self, "state").current_state((self.node, self.index))

    def __eq__(self, other: Any) -> bool:
        return (isinstance(other, Element) and other.node is self.node
                and other.index == self.index)

    def __hash__(self) -> int:
        return hash((id(self.node), self.index))

    def __repr__(self) -> str:
        return f"<Element {self.node.name}[{self.index}]>"


Waitable = Ref | Element


class DoneAndNotDone(NamedTuple):
    """What ``df.wait`` found: the references that ended, and the others."""

    done: set[Any]
    not_done: set[Any]


def wait(refs: Any, timeout: float | None = None) -> DoneAndNotDone:
    """Wait until every reference in ``refs`` has ended, or ``timeout`` seconds.

    ``refs`` is a reference, an element or an iterable of them; a map's
    reference counts as its elements.  Returns ``(done, not_done)``.
    """
    items = _items(refs, "wait")
    if not items:
        return DoneAndNotDone(set(), set())
    ended = _waiter(items, "wait").wait([_target(i) for i in items], timeout, False)
    done = {i for i in items if _id(i) in ended}
    return DoneAndNotDone(done, set(items) - done)


def as_completed(refs: Any, timeout: float | None = None) -> Iterator[Any]:
    """Yield the references in ``refs`` as they end (a map's elements one by
    one); raise :class:`~daskflow.WaitTimeout` if ``timeout`` seconds pass
    before all have."""
    items = _items(refs, "as_completed")
    if not items:
        return
    by_id = {_id(i): i for i in items}
    for ended in _waiter(items, "as_completed").as_completed(
            [_target(i) for i in items], timeout):
        yield by_id[ended]


def _items(refs: Any, what: str) -> list[Waitable]:
    """The references to wait on, a map's reference as its elements."""
    if isinstance(refs, (Ref, Element)):
        refs = [refs]
    elif not isinstance(refs, Iterable) or isinstance(refs, (str, bytes)):
        raise FlowDefinitionError(
            f"df.{what}() takes references to task results (a task call's return value "
            f"in a flow body) or an iterable of them, got {type(refs).__name__}")
    out: list[Waitable] = []
    for item in refs:
        if isinstance(item, Ref) and item.node.mapped is not None:
            waiter_of(item, what)  # a clear error outside a running body
            out.extend(Element(item.node, i) for i in range(_length(item)))
        elif isinstance(item, (Ref, Element)):
            out.append(item)
        else:
            raise FlowDefinitionError(
                f"df.{what}() got {type(item).__name__} {item!r:.60}: it waits on the "
                "results of task calls in a flow body")
    return list(dict.fromkeys(out))


def _length(ref: Ref) -> int:
    """A map's length; one known only at run time is found by waiting for it."""
    if ref.node.length is not None:
        return ref.node.length
    return len(waiter_of(ref, "as_completed").final_state((ref.node, None), None))


def _waiter(items: list[Waitable], what: str) -> Waiter:
    return waiter_of(items[0], what)


def _target(item: Waitable) -> tuple[Node, int | None]:
    return (item.node, item.index) if isinstance(item, Element) else (item.node, None)


def _id(item: Waitable) -> tuple[int, int | None]:
    return (item.node.index, item.index if isinstance(item, Element) else None)
