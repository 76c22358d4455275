"""The parts of a compiled Dask task: the task itself and its argument template.

A task's arguments are a *template*: its upstream refs become :class:`Slot`
placeholders for the upstream states it receives, and scattered constants
:class:`DataSlot` placeholders for the scattered data it receives after
them (filled on the worker by :func:`daskflow.worker.run.substitute`).
"""

from __future__ import annotations

import itertools
from typing import Any

from dask.task_spec import Task as DaskTask

from daskflow.core.walk import is_container, transform
from daskflow.define.build import Ref
from daskflow.wire import Call, DataSlot
from daskflow.worker.calls import CachedMap, Chunked, FusedMap, MapCall

_tokens = itertools.count()


def make_task(key: Any, func: Any, *args: Any) -> DaskTask:
    """A dask ``Task`` with a short token given up front.

    ``Client.get`` names a graph by a deterministic token of its keys and
    tasks, which by default hashes each task's function and arguments by
    pickling them (75 us a task here).  Our keys are unique per run and per
    task and are part of that token anyway, so a task's own token only has to
    be short and distinct (it is pickled with the task): a counter.
    """
    task = DaskTask(key, func, *args)
    task._token = f"{next(_tokens):x}"
    return task


def as_keys(keys: Any) -> list[Any]:
    """A node's keys as a list: [] if not emitted, a map's list, or [key]."""
    if keys is None:
        return []
    return keys if isinstance(keys, list) else [keys]


def calls_in(task: Any) -> list[Call]:
    """The calls one compiled Dask task runs (none for a helper task)."""
    func = getattr(task, "func", None)
    args: tuple = getattr(task, "args", ())
    if isinstance(func, (MapCall, FusedMap, CachedMap)):
        return _element_calls(func, args[0], args[1:])
    if isinstance(func, Chunked):  # (start, stop, nshared, columns, windows, *inputs)
        start, stop, _, columns = args[:4]
        return [call for j in range(stop - start)
                for call in _element_calls(func.each, start + j, [c[j] for c in columns])]
    if args and isinstance(args[0], Call):
        return [args[0]]
    if args and isinstance(args[0], tuple) and args[0] and isinstance(args[0][0], Call):
        return list(args[0])  # run_fused
    return []


def _element_calls(each: MapCall | FusedMap | CachedMap, i: int, elements: Any) -> list[Call]:
    """The calls of element ``i`` of a map (or of a fused chain of maps)."""
    if isinstance(each, FusedMap):
        return list(each.calls(i, tuple(elements))[0])
    return [each.call(i, elements[:each.width])]


def data_slot(key: Any, data: list[Any]) -> DataSlot:
    """The slot of scattered ``key`` among a task's ``data`` inputs (added once)."""
    if key not in data:
        data.append(key)
    return DataSlot(data.index(key))


def template(value: Any, slots: dict[int, Any], scattered: dict[int, Any] | None = None,
             data: list[Any] | None = None) -> tuple[Any, bool]:
    """Replace refs by slots and scattered constants by data slots; say if any were."""
    if type(value) is tuple and not scattered and not any(map(is_container, value)):
        # the common case, a flat tuple of arguments: no walk needed
        if not any(type(v) is Ref for v in value):
            return value, False
        return tuple(slots[v.node.index] if type(v) is Ref else v for v in value), True
    if data is None:
        data = []

    def place(v: Any) -> Any:
        if type(v) is Ref:
            return slots[v.node.index]
        if scattered and id(v) in scattered:
            return data_slot(scattered[id(v)], data)
        return v

    out = transform(value, place)
    return out, out is not value
