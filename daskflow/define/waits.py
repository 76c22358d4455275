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

from daskflow.define.build import Element, Node, Ref, Waiter, waiter_of
from daskflow.exceptions import FlowDefinitionError

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
    items = _items(refs, "wait", timeout)
    if not items:
        return DoneAndNotDone(set(), set())
    ended = _waiter(items, "wait").wait([_target(i) for i in items], timeout, False)
    done = {i for i in items if _id(i) in ended}
    return DoneAndNotDone(done, set(items) - done)


def as_completed(refs: Any, timeout: float | None = None) -> Iterator[Any]:
    """Yield the references in ``refs`` as they end (a map's elements one by
    one); raise :class:`~daskflow.WaitTimeout` if ``timeout`` seconds pass
    before all have."""
    items = _items(refs, "as_completed", timeout)
    if not items:
        return
    by_id = {_id(i): i for i in items}
    for ended in _waiter(items, "as_completed").as_completed(
            [_target(i) for i in items], timeout):
        yield by_id[ended]


def _items(refs: Any, what: str, timeout: float | None = None) -> list[Waitable]:
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
            out.extend(Element(item, i) for i in range(_length(item, timeout)))
        elif isinstance(item, (Ref, Element)):
            out.append(item)
        else:
            raise FlowDefinitionError(
                f"df.{what}() got {type(item).__name__} {item!r:.60}: it waits on the "
                "results of task calls in a flow body")
    return list(dict.fromkeys(out))


def _length(ref: Ref, timeout: float | None) -> int:
    """A map's length; one known only at run time is found by waiting for the
    length only (not for the elements)."""
    if ref.node.length is not None:
        return ref.node.length
    return waiter_of(ref, "as_completed").length(ref.node, timeout)


def _waiter(items: list[Waitable], what: str) -> Waiter:
    return waiter_of(items[0], what)


def _target(item: Waitable) -> tuple[Node, int | None]:
    return (item.node, item.index) if isinstance(item, Element) else (item.node, None)


def _id(item: Waitable) -> tuple[int, int | None]:
    return (item.node.index, item.index if isinstance(item, Element) else None)
