"""The callables of compiled Dask tasks beyond ``run_task``: a map child, a
fused chain, a chunk of a map.

A map's children share one :class:`MapCall`, the function of their tasks
(``Task((base, i), map_call, i, *elements, *inputs)``), pickled once per
graph; a fused chain of maps shares one :class:`FusedMap`; a fused chain of
single calls is ``run_fused(calls, *inputs)``; a chunk of consecutive
elements of a map (or of a fused chain of maps) is one task of a
:class:`Chunked`.  Each call inside them runs through
:func:`daskflow.worker.run.run_call` with its own state, retries, hooks and
logs.
"""

from __future__ import annotations

import time
from typing import Any

from daskflow.core.states import Chunk, State
from daskflow.wire import Call, SlotItem, TaskSpec
from daskflow.worker.context import NOTHING, annotations_hidden, current_worker, still_wanted
from daskflow.worker.run import flat_inputs, run_cached, run_call

_EMPTY: frozenset[int] = frozenset()


class MapCall:
    """What every child of one map shares; it is the function of their tasks.

    A map child's :class:`~daskflow.wire.Call` differs from its siblings'
    only in its index and its element of each mapped constant.  Their Dask
    tasks are ``Task((base, i), map_call, i, *elements, *inputs)``: the
    shared part is pickled once per graph, so a child costs about what a raw
    Dask task does, and the child's ``Call`` is made on the worker.
    ``values`` are the argument positions filled from ``elements``;
    ``items`` are the positions of element ``i`` of a whole upstream result
    (``(position, slot)``).  A ``keyed`` map (a cached or persisted task)
    takes each child's cache key before its elements (computed on the
    driver, see :mod:`daskflow.compile.cachekeys`).
    """

    __slots__ = ("spec", "name", "base", "args", "kwargs", "subst", "allowed", "ndata",
                 "values", "items", "keyed", "width")

    def __init__(self, spec: TaskSpec, name: str, base: str, args: tuple, kwargs: dict,
                 subst: bool, allowed: frozenset[int], ndata: int, values: tuple,
                 items: tuple, keyed: bool = False) -> None:
        self.spec, self.name, self.base = spec, name, base
        self.args, self.kwargs, self.subst = args, kwargs, subst
        self.allowed, self.ndata = allowed, ndata
        self.values, self.items, self.keyed = values, items, keyed
        self.width = len(values) + keyed  # how many of a child's arguments are its own

    def __reduce__(self) -> Any:
        return (MapCall, (self.spec, self.name, self.base, self.args, self.kwargs, self.subst,
                          self.allowed, self.ndata, self.values, self.items, self.keyed))

    def __dask_tokenize__(self) -> Any:
        return ("daskflow.MapCall", self.base)

    def call(self, i: int, elements: tuple | list) -> Call:
        """The ``Call`` of child ``i``."""
        cache = None
        if self.keyed:
            cache, elements = elements[0], elements[1:]
        if self.values == (0,) and not self.items and len(self.args) == 1:
            args: tuple = (elements[0],)  # the common case: f.map(values)
            kwargs = self.kwargs
        else:
            a, kwargs = list(self.args), dict(self.kwargs) if self.kwargs else self.kwargs
            for pos, value in zip(self.values, elements):
                if type(pos) is int:
                    a[pos] = value
                else:
                    kwargs[pos] = value
            for pos, slot in self.items:
                if type(pos) is int:
                    a[pos] = SlotItem(slot, i)
                else:
                    kwargs[pos] = SlotItem(slot, i)
            args = tuple(a)
        return Call(self.spec, self.name, (self.base, i), i, args, kwargs, self.subst,
                    self.allowed, self.ndata, cache)

    def __call__(self, i: int, *rest: Any) -> State:
        return self.run(i, rest)

    def run(self, i: int, rest: tuple | list, inner: bool = False) -> State:
        """Run child ``i`` (``inner``: not the last task of its Dask task)."""
        n = self.width
        return run_call(self.call(i, rest[:n]), tuple(rest[n:]), inner)


class CachedMap:
    """The function of each child of a map whose results the driver found
    stored before the run: child ``i`` loads its result, whose cache key is
    its one element (``Task((base, i), cached_map, i, key)``)."""

    __slots__ = ("spec", "name", "base")
    width = 1

    def __init__(self, spec: TaskSpec, name: str, base: str) -> None:
        self.spec, self.name, self.base = spec, name, base

    def __reduce__(self) -> Any:
        return (CachedMap, (self.spec, self.name, self.base))

    def __dask_tokenize__(self) -> Any:
        return ("daskflow.CachedMap", self.base)

    def call(self, i: int, elements: tuple | list) -> Call:
        return Call(self.spec, self.name, (self.base, i), i, (), {}, False, _EMPTY, 0,
                    elements[0])

    def __call__(self, i: int, key: str) -> State:
        return self.run(i, (key,))

    def run(self, i: int, rest: tuple | list, inner: bool = False) -> State:
        return run_cached(self.call(i, rest), inner)


class FusedMap:
    """The function of one element of a fused chain of maps: child ``i`` of
    each map in turn (see :func:`run_fused`).  Its task's arguments are
    ``i``, the mapped constants of each map in order, then the inputs of the
    first."""

    __slots__ = ("maps",)

    def __init__(self, maps: tuple[MapCall, ...]) -> None:
        self.maps = maps

    def __reduce__(self) -> Any:
        return (FusedMap, (self.maps,))

    def __dask_tokenize__(self) -> Any:
        return ("daskflow.FusedMap", self.maps[-1].base)

    def calls(self, i: int, rest: tuple) -> tuple[tuple[Call, ...], tuple]:
        """The calls of element ``i`` and the inputs left for the first."""
        calls, at = [], 0
        for m in self.maps:
            n = m.width
            calls.append(m.call(i, rest[at:at + n]))
            at += n
        return tuple(calls), rest[at:]

    def __call__(self, i: int, *rest: Any) -> State:
        return self.run(i, rest)

    def run(self, i: int, rest: tuple | list, inner: bool = False) -> State:
        """Run element ``i`` of each map (``inner``: see :meth:`MapCall.run`)."""
        calls, inputs = self.calls(i, tuple(rest))
        return _run_fused(calls, inputs, inner)


def run_fused(calls: tuple[Call, ...], *inputs: Any) -> State:
    """Several tasks in one Dask task: each runs through :func:`run_call`
    (its own state, retries, hooks, logs), the next one receiving its state.
    The states of all but the last are sent as they end; between two tasks
    the run's cancellation is checked (:func:`check_wanted`)."""
    return _run_fused(calls, inputs, False)


def _run_fused(calls: tuple[Call, ...], inputs: tuple, inner: bool) -> State:
    state = run_call(calls[0], inputs, inner=True)
    for call in calls[1:-1]:
        check_wanted(call)
        state = run_call(call, (state,), inner=True)
    check_wanted(calls[-1])
    return run_call(calls[-1], (state,), inner)


class FusedTaskCancelled(Exception):
    """The run was cancelled while a fused task ran: the rest of its tasks never start."""


def check_wanted(call: Call) -> None:
    """Between the tasks of a fused one, stop if the run was cancelled.

    In process (``cluster="sync"``) the run carries its cancel check (it
    raises); on a worker, Dask no longer wants the fused task.
    """
    stop_if_cancelled(call.spec, repr(call.key))


def stop_if_cancelled(spec: TaskSpec, what: str) -> None:
    """Raise once the run was cancelled (see :func:`check_wanted`)."""
    check = spec.run.check
    if check is not None:
        check()
    elif not still_wanted():
        raise FusedTaskCancelled(f"{what} was cancelled; the tasks after it in its Dask task "
                                 "do not start")


CHECK_EVERY = 0.01  # seconds between two checks of a chunk's cancellation


def first_map(each: MapCall | FusedMap | CachedMap) -> MapCall | CachedMap:
    """The map whose elements a chunk runs first (the first of a fused chain)."""
    return each.maps[0] if isinstance(each, FusedMap) else each


class Chunked:
    """The function of the Dask task of a chunk: consecutive elements of one
    map (``each`` a :class:`MapCall`) or of a fused chain of maps (a
    :class:`FusedMap`), each run in turn as if it were a task of its own.

    Its task is ``Task(chunk_key, chunked, start, stop, nshared, columns,
    windows, *inputs)`` for elements ``start`` to ``stop - 1``: ``columns``
    hold the chunk's elements of each mapped constant (one sequence per
    column, in the order ``each`` takes them); ``inputs`` are ``nshared``
    upstream states every element takes (a chunk of a map taken whole is one
    :class:`~daskflow.core.states.Chunk`), then the states of the maps
    mapped over element-wise (for each such map, its elements ``start`` to
    ``stop - 1``: one chunk, or one state per element), then ``ndata``
    scattered inputs.  ``windows`` is None when each map mapped over gives
    exactly those elements; else, for each, ``(inputs, at)``: how many
    inputs it gives (chunks chunked otherwise, holding more elements) and
    where element ``start`` is among their states.  It returns the final
    states of its elements, a ``Chunk`` (which the slots of a downstream
    call count as one input per element, see
    :func:`daskflow.worker.run.run_call`).
    Between two elements the run's cancellation is checked (every 10 ms at most).
    """

    __slots__ = ("each", "ndata")

    def __init__(self, each: MapCall | FusedMap | CachedMap, ndata: int) -> None:
        self.each, self.ndata = each, ndata

    def __reduce__(self) -> Any:
        return (Chunked, (self.each, self.ndata))

    def __dask_tokenize__(self) -> Any:
        return ("daskflow.Chunked", self.each.__dask_tokenize__())

    def __call__(self, start: int, stop: int, nshared: int, columns: tuple,
                 windows: tuple[tuple[int, int], ...] | None, *inputs: Any) -> Chunk:
        end = len(inputs) - self.ndata
        shared, data = inputs[:nshared], inputs[end:]
        n = stop - start
        own = (flat_inputs(inputs[nshared:end]) if windows is None
               else _windowed(inputs[nshared:end], windows, n))
        states: list[State] = []
        # dask's annotations are hidden once for all the elements (each
        # attempt would hide them, see annotations_hidden)
        with annotations_hidden() if current_worker() is not None else NOTHING:
            self._run(start, n, columns, shared, own, data, states)
        return Chunk(states)

    def _run(self, start: int, n: int, columns: tuple, shared: tuple, own: tuple,
             data: tuple, states: list[State]) -> None:
        each = self.each
        head = first_map(each)
        checked = time.monotonic()
        for j in range(n):
            if j and time.monotonic() - checked > CHECK_EVERY:  # cancelled meanwhile?
                stop_if_cancelled(head.spec, f"element {start + j} of map {head.name!r}")
                checked = time.monotonic()
            rest = [col[j] for col in columns]
            rest += shared
            if own:
                rest += own[j::n]
            if data:
                rest += data
            # the states of all but the last element are sent as they end, in
            # batches (see daskflow.events.queue); the last one's with the chunk's finish
            states.append(each.run(start + j, rest, j < n - 1))


def _windowed(inputs: tuple, windows: tuple[tuple[int, int], ...], n: int) -> tuple:
    """The states of ``n`` elements from each map mapped over, in order,
    cut from the chunks that hold them (see :class:`Chunked`)."""
    out: list = []
    pos = 0
    for count, at in windows:
        out.extend(flat_inputs(inputs[pos:pos + count])[at:at + n])
        pos += count
    return tuple(out)
