"""The inputs of one child of an irregular map: one whose elements hold task
results, scattered data or Dask graph nodes, so each child has inputs of its
own beyond those all its siblings share (see
:meth:`daskflow.compile.graph.Compiler.inputs`)."""

from __future__ import annotations

from typing import Any

from dask.task_spec import GraphNode

from daskflow.compile.tasks import data_slot
from daskflow.core.walk import inside, is_container, transform
from daskflow.define.build import Node, Ref
from daskflow.wire import Slot, SlotItem, SlotList


def per_child(x: Any, scattered: dict[int, Any]) -> bool:
    """Whether element ``x`` of a mapped list needs inputs of its own: a ref,
    scattered data or a Dask graph node, itself or anywhere inside it."""
    for v in inside(x) if is_container(x) else (x,):
        if type(v) is Ref or isinstance(v, GraphNode) or (scattered and id(v) in scattered):
            return True
    return False


class ChildInputs:
    """The inputs of one child of a map beyond those all its siblings share.

    ``extra`` are the keys of its own upstream tasks (the shared ``offset``
    ones come first): child ``i`` of a map it maps over, and every task
    result found anywhere inside its elements (``[[a, b], [a, b]]``), each
    placed once.  ``data`` are its scattered inputs; ``allowed`` the input
    slots that may have failed (``df.allow_failure``).
    """

    __slots__ = ("compiler", "keys", "scattered", "may_fail", "offset", "extra", "width", "data",
                 "slots", "allowed")

    def __init__(self, compiler: Any, node: Node, offset: int, slots: dict[int, Any],
                 data: list[Any]) -> None:
        self.compiler = compiler
        self.keys = compiler.keys
        self.scattered = compiler.scattered
        self.may_fail = node.allowed
        self.offset = offset
        self.extra: list[Any] = []
        self.width = 0  # states the extra keys hold (a chunk holds one per element)
        self.data = list(data)
        self.slots = dict(slots)  # a shared upstream inside an element: its shared slot
        self.allowed: set[int] = set()

    def arg(self, value: Any, i: int) -> tuple[Any, bool]:
        """Argument ``i`` of mapped ``value``, and whether it holds placeholders."""
        if isinstance(value, Ref):
            src = value.node
            if src.mapped is not None:  # map over a map: child i depends on child i
                layout = self.compiler.chunks.of.get(src.index)
                if layout is not None:  # child i is in a chunk
                    key, at, n = layout.chunk(i, width=True)
                    return Slot(self._add([key], n, src.index) + at), True
                return Slot(self._add([self.keys[src.index][i]], 1, src.index)), True
            return SlotItem(self.slots[src.index].i, i), True  # element i of a task's result
        item = value[i]
        out = transform(item, self._place)
        return out, out is not item

    def _place(self, v: Any) -> Any:
        if type(v) is Ref:
            slot = self.slots.get(v.node.index)
            if slot is None:
                keys, n = self.compiler.inputs(v.node.index)
                start = self._add(keys, n, v.node.index)
                whole = isinstance(self.keys[v.node.index], list)
                slot = SlotList(start, start + n) if whole else Slot(start)
                self.slots[v.node.index] = slot
            return slot
        if self.scattered and id(v) in self.scattered:
            return data_slot(self.scattered[id(v)], self.data)
        return v

    def _add(self, keys: list[Any], n: int, index: int) -> int:
        """Add ``keys`` (of node ``index``, holding ``n`` states) to the
        inputs; their first slot."""
        start = self.offset + self.width
        self.extra.extend(keys)
        self.width += n
        if index in self.may_fail:
            self.allowed.update(range(start, start + n))
        return start
