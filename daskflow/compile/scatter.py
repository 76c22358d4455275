"""Lean graphs: find large constants in a build and scatter them once.

A flow body runs with real parameter values, so a large parameter shows up
as a constant argument of the task calls it is passed to.  Before the first
graph is submitted, :func:`plan` walks every node's constant arguments
(inside lists, tuples and dicts too, and each element of a mapped list) and
picks those whose size exceeds ``daskflow.scatter.threshold``.  The driver
scatters each picked object once (deduplicated by identity, and by content
for ``bytes``/``str``), and the compiler replaces it in the graph by a
dependency on the scattered key.  The driver holds the scattered futures
for the run only and releases them when it ends, however it ends.

Sizes come from ``dask.sizeof``; an object whose type dask cannot size is
measured by its pickled size (buffers counted without copying them); one
that cannot be pickled either is left in place with a debug log.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Collection, Iterator
from typing import Any

from dask.sizeof import sizeof
from dask.utils import format_bytes

from daskflow.core.walk import CONTAINERS, inside
from daskflow.define.build import Node, Ref

logger = logging.getLogger("daskflow.run")

_SCALARS = (int, float, bool, complex, type(None))
_SMALL = frozenset(_SCALARS)


def measure(obj: Any) -> int:
    """The size of an object in bytes, as well as it can be told cheaply."""
    t = type(obj)
    if t in _SCALARS:
        return 0
    if t in (str, bytes, bytearray, memoryview):
        return len(obj)
    if sizeof.dispatch(t) is sizeof.dispatch(object):
        sizes: list[int] = []
        try:
            data = pickle.dumps(obj, protocol=5,
                                buffer_callback=lambda b: sizes.append(b.raw().nbytes))
        except Exception as err:
            logger.debug("cannot size %s (%s); it stays in the graph", t.__name__, err)
            return 0
        return len(data) + sum(sizes)
    return int(sizeof(obj))


class ScatterPlan:
    """The objects to scatter, deduplicated, with what they were found as."""

    def __init__(self, known: Collection[int] = ()) -> None:
        self.known = known  # ids of objects scattered already (an earlier stage)
        self.objects: list[Any] = []
        self.sizes: list[int] = []
        self.labels: list[str] = []
        self._by_id: dict[int, int] = {}
        self._by_content: dict[Any, int] = {}

    def add(self, obj: Any, size: int, label: str) -> None:
        if id(obj) in self._by_id or id(obj) in self.known:
            return
        content = (type(obj), obj) if isinstance(obj, (bytes, str)) else None
        if content is not None and content in self._by_content:
            self._by_id[id(obj)] = self._by_content[content]
            return
        index = len(self.objects)
        self._by_id[id(obj)] = index
        if content is not None:
            self._by_content[content] = index
        self.objects.append(obj)
        self.sizes.append(size)
        self.labels.append(label)

    def keys_by_id(self, keys: list[Any]) -> dict[int, Any]:
        """Map ``id(obj)`` of every found object (duplicates too) to its scattered key."""
        return {oid: keys[i] for oid, i in self._by_id.items()}

    def describe(self) -> str:
        parts = [f"{label} {format_bytes(size)}" for label, size in zip(self.labels, self.sizes)]
        return f"{len(self.objects)} object(s), {format_bytes(sum(self.sizes))}: " + ", ".join(parts)

    def __bool__(self) -> bool:
        return bool(self.objects)


def plan(nodes: list[Node], threshold: int, known: Collection[int] = ()) -> ScatterPlan:
    """Find the constants larger than ``threshold`` bytes in the nodes'
    arguments (but those whose id is in ``known``, scattered already)."""
    found = ScatterPlan(known)
    for node in nodes:
        mapped = set(node.mapped or ())
        for pos, value in _arguments(node):
            where = f"{type(value).__name__} (argument {pos!r} of {node.name!r})"
            if pos in mapped and isinstance(value, list):
                if _SMALL.issuperset(map(type, value)):
                    continue  # a map's elements, e.g. numbers: none is large
                for item in value:
                    _visit(item, threshold, found, where)
            else:
                _visit(value, threshold, found, where)
    return found


def _arguments(node: Node) -> Iterator[tuple[int | str, Any]]:
    yield from enumerate(node.args)
    yield from node.kwargs.items()


def _visit(value: Any, threshold: int, found: ScatterPlan, where: str) -> None:
    """Scatter large leaves; a container goes whole only if no single item is large."""
    t = type(value)
    if t in _SCALARS or isinstance(value, Ref):
        return
    if t in CONTAINERS:
        items = list(value.values() if t is dict else value)
        if _holds_refs(value) or any(type(i) in CONTAINERS or measure(i) > threshold
                                     for i in items):
            for item in items:
                _visit(item, threshold, found, where)
            return
    size = measure(value)
    if size > threshold:
        found.add(value, size, where)


def _holds_refs(value: Any) -> bool:
    return any(type(v) is Ref for v in inside(value))
