"""What the compiler puts in a Dask graph: run info, task specs, calls, slots.

Every Dask task daskflow submits is ``run_task(call, *inputs)`` where
``call`` is a :class:`Call`: the task's :class:`TaskSpec` (its options, shared
by every call of the task in one run), its key, map index and an argument
template whose :class:`Slot` placeholders stand for upstream results.

A spec travels pickled **once**: ``TaskSpec.__reduce__`` returns the same
cloudpickled bytes every time (cached on the spec), and each process keeps
the unpickled spec in :data:`_spec_cache`, a small LRU bounded in entries and
bytes, keyed by a digest of those bytes.  Nothing in it is per-run data that
could grow: the run's parameters are not part of a spec (see
:class:`RunInfo`), so 300 runs leave the cache at its bound, not 300 copies.
"""

from __future__ import annotations

import collections
import hashlib
import pickle
import threading
from typing import Any

from daskflow.cache import settings_for

# A run's parameters travel inside its specs only while they are this small
# (pickled); larger ones travel once per run as a key of their own.
INLINE_PARAMETERS = 512


class RunInfo:
    """What every task of one flow run shares.

    ``owner`` is the id of the driver's ``Client`` (None in process): task
    states and log records are sent to it, and to no one else.  The run's
    parameters are inline when small, else in the key ``params_key``.
    """

    __slots__ = ("flow_name", "run_id", "owner", "parameters", "params_key", "limits", "dashboard", "results",
                 "log_prints")

    def __init__(self, flow_name: str, run_id: str, owner: str | None = None,
                 parameters: dict[str, Any] | None = None, params_key: str | None = None,
                 limits: tuple[tuple[str, int], ...] = (), dashboard: str | None = None,
                 results: tuple | None = None, log_prints: bool = False) -> None:
        self.flow_name = flow_name
        self.run_id = run_id
        self.owner = owner
        self.parameters = parameters
        self.params_key = params_key
        self.limits = limits  # ((tag, at most), ...): the run's tag concurrency limits
        self.dashboard = dashboard  # the cluster's dashboard link, if it has one
        # (flow's cache default, storage URL, refresh): None when nothing is stored
        self.results = results
        self.log_prints = log_prints  # the run's default for tasks without log_prints=

    def __reduce__(self) -> Any:
        return (RunInfo, (self.flow_name, self.run_id, self.owner, self.parameters,
                          self.params_key, self.limits, self.dashboard, self.results,
                          self.log_prints))


class TaskSpec:
    """The options of one task, shared by all its Dask tasks in a run."""

    __slots__ = ("task", "fn", "kind", "retries", "retry_delays", "retry_on", "trigger",
                 "skip_on_upstream_skip", "tags", "timeout", "run", "limits", "cache", "log_prints",
                 "_blob")

    def __init__(self, task: Any, kind: str, run: RunInfo) -> None:
        self.task = task
        self.fn = task.fn
        self.kind = kind
        self.retries = task.retries
        self.retry_delays = task.retry_delays
        self.retry_on = task.retry_on
        self.trigger = task.trigger
        self.skip_on_upstream_skip = task.skip_on_upstream_skip
        self.tags = task.tags
        self.timeout = task.timeout
        self.run = run
        self.limits = tuple(lim for lim in run.limits if lim[0] in task.tags)
        self.cache = settings_for(task, run.results) if run.results else None
        self.log_prints = task.log_prints if task.log_prints is not None else run.log_prints
        self._blob: tuple[bytes, bytes] | None = None

    def blob(self) -> tuple[bytes, bytes]:
        """(digest, bytes): the spec pickled once (cloudpickle, so local functions work)."""
        if self._blob is None:
            import cloudpickle

            data = cloudpickle.dumps((self.task, self.kind, self.run), protocol=5)
            self._blob = (hashlib.blake2b(data, digest_size=12).digest(), data)
        return self._blob

    def __reduce__(self) -> Any:
        return (_load_spec, self.blob())


class _SpecCache:
    """Unpickled specs by digest: an LRU bounded in entries and in bytes."""

    def __init__(self, max_entries: int = 2048, max_bytes: int = 32 * 2**20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.entries: collections.OrderedDict[bytes, tuple[TaskSpec, int]] = collections.OrderedDict()
        self.nbytes = 0
        self.lock = threading.Lock()

    def get(self, digest: bytes, data: bytes) -> TaskSpec:
        with self.lock:
            hit = self.entries.get(digest)
            if hit is not None:
                self.entries.move_to_end(digest)
                return hit[0]
        spec = TaskSpec(*pickle.loads(data))
        spec._blob = (digest, data)
        with self.lock:
            if digest not in self.entries:
                self.entries[digest] = (spec, len(data))
                self.nbytes += len(data)
            while self.entries and (len(self.entries) > self.max_entries
                                    or self.nbytes > self.max_bytes):
                _, (_, size) = self.entries.popitem(last=False)
                self.nbytes -= size
        return spec


_spec_cache = _SpecCache()


def _load_spec(digest: bytes, data: bytes) -> TaskSpec:
    """Unpickle a spec once per process: every task of a node ships the same bytes."""
    return _spec_cache.get(digest, data)


class Call:
    """One Dask task: its spec, node name, key, map index and argument template."""

    __slots__ = ("spec", "name", "key", "index", "args", "kwargs", "subst", "allowed", "ndata",
                 "cache")

    def __init__(self, spec: TaskSpec, name: str, key: Any, index: int | None, args: tuple,
                 kwargs: dict, subst: bool, allowed: frozenset[int], ndata: int = 0,
                 cache: str | None = None) -> None:
        self.spec = spec
        self.name = name
        self.key = key
        self.index = index
        self.args = args
        self.kwargs = kwargs
        self.subst = subst
        self.allowed = allowed
        self.ndata = ndata  # the last `ndata` inputs are scattered data, not states
        self.cache = cache  # the result's cache key, when the task stores its result

    def __reduce__(self) -> Any:
        if self.cache is None:
            return (Call, (self.spec, self.name, self.key, self.index, self.args, self.kwargs,
                           self.subst, self.allowed, self.ndata))
        return (Call, (self.spec, self.name, self.key, self.index, self.args, self.kwargs,
                       self.subst, self.allowed, self.ndata, self.cache))

    def __dask_tokenize__(self) -> Any:
        # Keys are unique per run and per task, so they identify a call; this
        # spares Client.get from tokenizing every call by pickling it.
        return ("daskflow.Call", self.key)

    @property
    def display_name(self) -> str:
        name = self.name
        return name if self.index is None else f"{name}[{self.index}]"


class Slot:
    """Placeholder for the value of upstream state number ``i``."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i

    def __repr__(self) -> str:
        return f"Slot({self.i})"


class SlotItem:
    """Placeholder for element ``j`` of the value of upstream state ``i``."""

    __slots__ = ("i", "j")

    def __init__(self, i: int, j: int) -> None:
        self.i, self.j = i, j


class DataSlot:
    """Placeholder for scattered data input number ``j`` (a value, not a state)."""

    __slots__ = ("j",)

    def __init__(self, j: int) -> None:
        self.j = j


class SlotList:
    """Placeholder for the list of values of a whole map: upstream states
    ``start`` to ``stop`` (two numbers, whatever the map's length)."""

    __slots__ = ("start", "stop")

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __reduce__(self) -> Any:
        return (SlotList, (self.start, self.stop))


def run_parameters(run: RunInfo) -> dict[str, Any]:
    """The run's parameters, for ``df.context().parameters``.

    Inline ones come with the spec; otherwise they are fetched once per
    process from the run's parameters key (which the driver holds while the
    run lasts); in-process runs always carry them inline.
    """
    if run.parameters is not None:
        return dict(run.parameters)
    if run.params_key is None:
        return {}
    with _params_lock:
        cached = _params.get(run.params_key)
    if cached is None:
        cached = _fetch_parameters(run.params_key)
        with _params_lock:
            _params[run.params_key] = cached
            while len(_params) > 8:
                _params.popitem(last=False)
    return dict(cached)


_params: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
_params_lock = threading.Lock()


def _fetch_parameters(key: str) -> dict[str, Any]:
    from distributed import get_worker
    from distributed.utils import sync

    worker = get_worker()
    if key in worker.data:
        params: dict[str, Any] = worker.data[key]  # type: ignore[assignment]
        return params
    # One request to the scheduler, which fetches it from the worker holding it.
    response = sync(worker.loop, worker.scheduler.gather, keys=[key], callback_timeout=60)
    if response.get("status") != "OK":
        raise RuntimeError(f"the parameters of this run ({key}) could not be fetched: {response}")
    params = response["data"][key]
    return params
