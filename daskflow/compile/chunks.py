"""Chunked maps: consecutive elements of a map run in one Dask task.

Every element keeps its own task run (state, retries, hooks, logs, cache
key): it runs through :class:`daskflow.worker.calls.Chunked`, which calls
each element as if it were a task of its own.  Only the Dask task is shared,
so the scheduler's cost per task is paid once per chunk.

The element keys ``(base, i)`` stay the names of the task runs (states,
labels, waits); the Dask keys are the chunks', ``(f"chunk-{base}", j)``.
A :class:`Layout` translates one into the other.  A chunk's result is the
tuple of its elements' final states, which the slots of a downstream call
count as one input per element.

How large a chunk is (:func:`chunk_size`): a map given ``chunk=N`` uses N;
a map over a chunked map element by element uses its chunks (the two line
up, element ``i`` of one feeding element ``i`` of the other).  Otherwise
a map of fewer than :data:`AUTO_MIN` elements is not chunked; a larger one
runs a *pilot* first: :data:`PILOT_CHUNKS` chunks of :data:`PILOT_SIZE`
elements whose measured time per element sets the size of the rest
(elements of 100 ms or more keep one Dask task each; smaller ones are
grouped so a chunk runs about :data:`TARGET` seconds, with at least
:data:`PER_THREAD` chunks for each worker thread).  The measurement is
remembered for the task in this process (weakly, as long as the task
exists), so the next runs of the flow skip the pilot and are again one
submission.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any

from dask.task_spec import Task as DaskTask
from dask.task_spec import TaskRef

from daskflow.compile.tasks import make_task
from daskflow.core.states import Chunk, State
from daskflow.worker.calls import CachedMap, Chunked, FusedMap, MapCall, first_map

AUTO_MIN = 128  # maps shorter than this are not chunked unless asked (chunk=N)
PILOT_CHUNKS = 2  # at least; one per worker thread when there are more
PILOT_SIZE = 4  # elements in each pilot chunk
HEAVY = 0.1  # seconds: elements this long keep one Dask task each
LOAD = 1e-3  # seconds to read one stored result, taken for sizing the chunks of loads
TARGET = 0.05  # seconds of work per chunk: the scheduler's ~1-2 ms per task is amortized
PER_THREAD = 4  # chunks per worker thread at least, so that work balances


_measured: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_measured_lock = threading.Lock()


def remember(task: Any, seconds: float) -> None:
    """Keep a pilot's time per element of ``task`` for its next maps."""
    with _measured_lock:
        _measured[task] = seconds


def recalled(task: Any) -> float | None:
    """The time per element a pilot measured for ``task`` in this process."""
    with _measured_lock:
        return _measured.get(task)


class Layout:
    """Where the elements of a chunked map run: elements ``[0, first)`` in
    chunks of ``head`` (the pilot), the rest in chunks of ``size`` (None
    until the pilot measured it)."""

    __slots__ = ("base", "name", "n", "first", "head", "size", "why")

    def __init__(self, base: str, n: int, size: int | None, first: int = 0, head: int = 1,
                 why: str = "") -> None:
        self.base, self.name, self.n = base, f"chunk-{base}", n
        self.first, self.head, self.size = first, head, size
        self.why = why  # how the size was chosen, for the run's log and report

    def like(self, base: str, why: str) -> Layout:
        """The same chunks for another map of the same length (element-wise)."""
        return Layout(base, self.n, self.size, self.first, self.head, why)

    def _pilot_chunks(self) -> int:
        """How many chunks the pilot's elements ``[0, first)`` make."""
        return -(-self.first // self.head)

    def spans(self, pilot: bool = False) -> list[tuple[int, int, int]]:
        """``(chunk number, start, stop)`` of the pilot's chunks, or of the rest."""
        if pilot:
            return [(j, s, min(s + self.head, self.first))
                    for j, s in enumerate(range(0, self.first, self.head))]
        assert self.size is not None
        j0 = self._pilot_chunks()
        return [(j0 + j, s, min(s + self.size, self.n))
                for j, s in enumerate(range(self.first, self.n, self.size))]

    def known_spans(self) -> list[tuple[int, int, int]]:
        """The pilot's spans, then the rest's once their size is known."""
        return self.spans(pilot=True) + (self.spans() if self.size is not None else [])

    def chunk(self, i: int, width: bool = False) -> tuple:
        """The Dask key of element ``i``'s chunk and ``i``'s place in it (with
        ``width``: also how many elements the chunk holds)."""
        if i < self.first:
            j, at = divmod(i, self.head)
            stop = min(i - at + self.head, self.first)
        else:
            assert self.size is not None
            off, at = divmod(i - self.first, self.size)
            j = self._pilot_chunks() + off
            stop = min(i - at + self.size, self.n)
        key = (self.name, j)
        return (key, at, stop - (i - at)) if width else (key, at)

    def lines_up(self, other: Layout) -> bool:
        """Whether chunk ``j`` of ``other`` holds the elements chunk ``j`` of this one does."""
        return (self.n, self.first, self.head, self.size) == (
            other.n, other.first, other.head, other.size)

    def covering(self, start: int, stop: int) -> tuple[list[Any], int]:
        """The Dask keys of the chunks holding elements ``[start, stop)``, and
        where element ``start`` is among their states."""
        first, at = self.chunk(start)
        last, _ = self.chunk(stop - 1)
        return [(self.name, j) for j in range(first[1], last[1] + 1)], at

    def keys(self) -> list[Any]:
        """Every chunk's Dask key known so far, in element order."""
        return [(self.name, j) for j, _, _ in self.known_spans()]

    def all_spans(self) -> list[list[int]]:
        """``[start, stop)`` of every chunk known so far, in element order."""
        return [[start, stop] for _, start, stop in self.known_spans()]

    def describe(self) -> str:
        chunks = len(self.keys())
        return f"{self.n} elements in {chunks} Dask tasks ({self.why})"


class ChunkJob:
    """The chunks of one map (or of a fused chain of maps) to emit: the
    pilot's first, the rest once their size is known.

    ``columns`` are the mapped constants (each a sequence over all
    elements); ``own`` for each map mapped over element-wise, its
    :class:`Layout` or its element keys; ``shared`` and ``data`` the inputs
    every chunk takes.  A chunk of a map whose chunks line up with these
    takes its one chunk; otherwise (two maps mapped over, chunked
    differently) the chunks holding its elements, with a *window* saying
    where they are (see :class:`~daskflow.worker.calls.Chunked`).
    """

    __slots__ = ("layouts", "chunked", "columns", "own", "shared", "data", "then", "task")

    def __init__(self, layouts: list[Layout], each: MapCall | FusedMap | CachedMap,
                 columns: list[Any],
                 own: list[Any], shared: tuple, data: tuple) -> None:
        self.layouts = layouts
        self.chunked = Chunked(each, len(data))
        self.columns = [c if isinstance(c, (list, tuple, range)) else list(c) for c in columns]
        self.own, self.shared, self.data = own, shared, data
        self.then: list[ChunkJob] = []  # jobs emitted with this one (sized by its pilot)
        self.task = first_map(each).spec.task  # whose time per element the pilot measures

    @property
    def layout(self) -> Layout:
        return self.layouts[-1]

    def emit(self, dsk: dict[Any, DaskTask], pilot: bool = False) -> None:
        """Add the tasks of the pilot's chunks, or of the rest."""
        layout = self.layout
        nshared = len(self.shared)
        aligned = all(type(src) is not Layout or src.lines_up(layout) for src in self.own)
        for j, start, stop in layout.spans(pilot):
            key = (layout.name, j)
            own: list[Any] = []
            windows: list[tuple[int, int]] | None = None if aligned else []
            for src in self.own:
                if type(src) is not Layout:
                    keys, at = src[start:stop], 0
                elif aligned:
                    keys, at = [(src.name, j)], 0
                else:
                    keys, at = src.covering(start, stop)
                own.extend(TaskRef(k) for k in keys)
                if windows is not None:
                    windows.append((len(keys), at))
            columns = tuple(c[start:stop] for c in self.columns)
            dsk[key] = make_task(key, self.chunked, start, stop, nshared, columns,
                                 None if windows is None else tuple(windows), *self.shared, *own,
                                 *self.data)
        for job in self.then:
            job.emit(dsk, pilot)

    def measured(self, seconds: float, threads: int, loads: bool = False) -> None:
        """The pilot measured ``seconds`` per element (``loads``: of elements
        that read their stored results): size the rest."""
        layout = self.layout
        if seconds < 0:
            size, why = 1, "its pilot did not run: one Dask task per element"
        else:
            if loads:  # its elements only read stored results: sized as a stored map's
                seconds = max(seconds, LOAD)
            else:
                remember(self.task, seconds)
            size = chunk_size(seconds, layout.n - layout.first, threads)
            why = sized("pilot read stored results only; sized as loads of" if loads
                        else "pilot measured", seconds, size)
        for each in self.layouts:
            each.size, each.why = size, why


def sized(how: str, seconds: float, size: int) -> str:
    """Why a map has the chunks it has, for the run's log and report."""
    return (f"{how} {_duration(seconds)} per element: "
            + ("one Dask task each" if size == 1 else f"chunks of {size}"))


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def chunk_size(seconds: float, elements: int, threads: int) -> int:
    """Elements per chunk for elements that take ``seconds`` each."""
    if seconds >= HEAVY:
        return 1
    by_time = math.ceil(TARGET / max(seconds, 1e-6))
    by_balance = math.ceil(elements / (PER_THREAD * max(threads, 1)))
    return max(1, min(by_time, by_balance))


def pilot_layout(base: str, n: int, threads: int) -> Layout:
    """The layout of an auto-chunked map before its pilot ran."""
    chunks = max(PILOT_CHUNKS, threads)
    return Layout(base, n, None, first=min(n, chunks * PILOT_SIZE), head=PILOT_SIZE)


def seconds_per_element(*chunks: Any) -> tuple[float, str]:
    """The pilot's task: the time per element of its fastest chunk, as
    ``(seconds, "")`` (the shape the driver reads lengths in); ``(-1, why)``
    when no element completed.  A chunk's first element is left out when
    there are others: on a fresh worker it pays for imports and first
    connections (to a result store, say), which the rest do not.  Elements
    that read a stored result instead of running are left out too; when
    there are only those, their time is given with ``"loads"`` (it sizes
    this run's chunks, and is not remembered as the task's)."""
    timed = [s for chunk in chunks for s in chunk if isinstance(s, State)
             and s.start is not None and s.end is not None]
    ran = [s for s in timed if s.name != "Cached"]
    if ran or not timed:
        return _fastest(chunks, "Cached"), ""
    return _fastest(chunks, None), "loads"


def _fastest(chunks: tuple, leave_out: str | None) -> float:
    """The time per element of the fastest chunk, without states named ``leave_out``."""
    best = math.inf
    for chunk in chunks:
        spans = sorted((s.start, s.end) for s in chunk if isinstance(s, State)
                       and s.start is not None and s.end is not None and s.name != leave_out)
        if len(spans) > 1:
            best = min(best, (spans[-1][1] - spans[0][1]) / (len(spans) - 1))
        elif spans:
            best = min(best, spans[0][1] - spans[0][0])
    return -1 if best is math.inf else best


def dask_key(key: Any, layouts: dict[str, Layout]) -> tuple[Any, int | None]:
    """The Dask key holding task run ``key``'s state, and its place in a chunk
    (``(None, None)`` for an element whose chunk waits for the map's pilot)."""
    if type(key) is tuple:
        layout = layouts.get(key[0])
        if layout is not None:
            if layout.size is None and key[1] >= layout.first:
                return None, None
            return layout.chunk(key[1])
    return key, None


def dask_keys(keys: list[Any], layouts: dict[str, Layout]) -> list[Any]:
    """The Dask keys holding the states of ``keys``, each once, in order
    (none yet for elements whose chunks wait for their map's pilot)."""
    if not layouts:
        return keys
    out = dict.fromkeys(dask_key(k, layouts)[0] for k in keys)
    out.pop(None, None)
    return list(out)


def pick(key: Any, values: dict[Any, Any], layouts: dict[str, Layout]) -> Any:
    """Task run ``key``'s state among gathered Dask ``values`` (None if absent)."""
    dkey, at = dask_key(key, layouts)
    value = values.get(dkey)
    if at is None or type(value) is not Chunk:
        return value
    return value[at]


class Chunker:
    """The chunked maps of one run: their layouts, their pilots, and how
    each was sized (``notes``, for the run's log).  The compiler asks it
    how to lay out a map (:meth:`choose`) and hands it the chunk jobs to
    emit (:meth:`start`); the engine reads ``partial`` (maps waiting for
    their pilot, which nothing else may use yet) and ``notes``."""

    def __init__(self) -> None:
        # the cluster's worker threads (they size chunks), asked for only when
        # a map is chunked by measurement (a call to the scheduler)
        self.count_threads: Any = lambda: 1
        self.threads: int | None = None
        self.layouts: dict[str, Layout] = {}  # by key base
        self.of: dict[int, Layout] = {}  # the same by node index
        self.partial: set[int] = set()  # chunked maps waiting for their pilot
        self.pilots: dict[str, tuple[ChunkJob, str]] = {}  # pilot key -> job, its map's name
        self._ended: list[tuple[ChunkJob, str]] = []  # jobs whose pilot ended
        self.notes: list[str] = []  # how maps were chunked, for the run's log

    def dask_key(self, key: Any) -> Any:
        """The Dask key that holds task run ``key``'s state (None while its
        chunk waits for a pilot)."""
        return dask_key(key, self.layouts)[0]

    def dask_keys(self, keys: list[Any]) -> list[Any]:
        return dask_keys(keys, self.layouts)

    def pick(self, key: Any, values: dict[Any, Any]) -> Any:
        return pick(key, values, self.layouts)

    def thread_count(self) -> int:
        if self.threads is None:
            self.threads = self.count_threads()
        return self.threads

    def add(self, index: int, layout: Layout) -> None:
        """Node ``index`` (a map) runs in ``layout``'s chunks."""
        self.layouts[layout.base] = self.of[index] = layout
        if layout.size is None:  # until its pilot ran, nothing else may use it
            self.partial.add(index)

    def choose(self, base: str, n: int, chunk: int | None, task: Any,
               loads: bool = False) -> Layout | None:
        """How a map of ``n`` elements of ``task`` is chunked, or None (a Dask
        task per element): ``chunk`` if given, else by size and measurement
        (``loads``: the map only loads its stored results, each taken to
        take :data:`LOAD`)."""
        if chunk is not None:
            return Layout(base, n, chunk, why=f"chunk={chunk}") if chunk > 1 else None
        if n < AUTO_MIN:
            return None
        seconds, how = LOAD, "loads its stored results, taken as"
        if not loads:
            measured, how = recalled(task), "an earlier pilot measured"
            if measured is None:
                return pilot_layout(base, n, self.thread_count())
            seconds = measured
        size = chunk_size(seconds, n, self.thread_count())
        return Layout(base, n, size, why=sized(how, seconds, size)) if size > 1 else None

    def start(self, job: ChunkJob, name: str, dsk: dict[Any, DaskTask]) -> str | None:
        """Emit the chunks of map ``name``; if their size is not known yet, its
        pilot's, and a task that measures them, whose key is returned (the
        engine reads it like a map's length, then calls :meth:`ended`)."""
        layout = job.layout
        if layout.size is not None:
            if layout.first:  # the chunks of a map that ran a pilot, lined up with its
                job.emit(dsk, pilot=True)
            job.emit(dsk)
            self._note(name, layout)
            return None
        job.emit(dsk, pilot=True)
        key = f"pilot-{layout.base}"
        dsk[key] = make_task(key, seconds_per_element, *(TaskRef(k) for k in layout.keys()))
        self.pilots[key] = (job, name)
        return key

    def ended(self, key: str, value: tuple[float, str]) -> bool:
        """Whether ``key`` is a pilot's task; if so, size its map's chunks."""
        pilot = self.pilots.pop(key, None)
        if pilot is None:
            return False
        pilot[0].measured(value[0], self.thread_count(), value[1] == "loads")
        self._ended.append(pilot)
        return True

    def emit_measured(self, dsk: dict[Any, DaskTask]) -> set[int]:
        """Emit the rest of the chunks of the maps whose pilot ended; the
        nodes whose chunks are all known now."""
        if not self._ended:
            return set()
        for job, name in self._ended:
            job.emit(dsk)
            self._note(name, job.layout)
        self._ended = []
        sized = {i for i in self.partial if self.of[i].size is not None}
        self.partial -= sized
        return sized

    def _note(self, name: str, layout: Layout) -> None:
        """Say in the run's log how map ``name`` was chunked."""
        self.notes.append(f"map {name!r}: {layout.describe()}")
